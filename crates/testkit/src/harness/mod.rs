//! Test harness: runs the real `enrollca` binary on 127.0.0.1 and drives it over HTTP.

pub mod acme;
pub mod device;
pub mod front;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `enrollca` binary cargo built for this test run. Cargo builds a package's binaries
/// before its integration tests and puts them in the profile directory, one level above the
/// test executables (`target/<profile>/deps/<test>-<hash>`).
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    let profile = if deps.ends_with("deps") {
        deps.parent().expect("the profile directory")
    } else {
        deps
    };
    let bin = profile.join("enrollca");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test` in the enrollca package",
        bin.display()
    );
    bin
}

/// `enrollca ARGS` with `envs`, to completion.
/// `enrollca ARGS` with `envs`, to completion; killed after a minute so a command that
/// should have failed (but serves instead) cannot hang the suite.
pub fn enrollca(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("ENROLLCA_CA_PASSPHRASE")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running enrollca");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collecting enrollca output")
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

/// The SHA-256 fingerprint openssl prints for a PEM certificate (`AA:BB:…`).
pub fn openssl_fingerprint(pem: &Path) -> String {
    let out = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            pem.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().rsplit('=').next().unwrap().to_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A data directory made by `enrollca init` with fast key types.
pub fn init_dir(parent: &Path, extra: &[&str], envs: &[(&str, &str)]) -> PathBuf {
    let data = parent.join("data");
    let mut args = vec![
        "init",
        "--data",
        data.to_str().unwrap(),
        "--root-key-type",
        "p256",
    ];
    args.extend_from_slice(extra);
    let out = enrollca(&args, envs);
    assert!(out.status.success(), "init failed: {}", stderr(&out));
    data
}

pub struct Server {
    running: Running,
    pub data: PathBuf,
    pub http: String,
    pub https: String,
    pub token: String,
    pub banner: String,
    pub client: reqwest::Client,
}

/// How the server under test runs.
enum Running {
    /// The real binary (`enrollca serve`), as a deployment runs it.
    Process {
        child: Child,
        /// What it wrote to stderr so far, read by a thread so the pipe never fills.
        log: std::sync::Arc<std::sync::Mutex<String>>,
        log_reader: Option<std::thread::JoinHandle<()>>,
    },
    /// `enrollca::app::run` on a thread of this process, on a clock the test moves.
    InProcess {
        shutdown: tokio_util::sync::CancellationToken,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

/// A clock a test moves instead of sleeping until something expires.
pub struct TestClock(std::sync::Mutex<time::OffsetDateTime>);

impl TestClock {
    pub fn starting_now() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::Mutex::new(time::OffsetDateTime::now_utc())))
    }

    pub fn advance(&self, by: time::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl enrollca::clock::Clock for TestClock {
    fn now(&self) -> time::OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

impl Server {
    /// Serves the initialised data directory `data` from this process (`app::run`) on
    /// ephemeral loopback ports, reading the time from `clock`. Clients still reach it over
    /// HTTP(S) only; what needs the binary itself (signals, exit codes, its log) uses `start`.
    pub fn in_process(data: &Path, clock: std::sync::Arc<TestClock>) -> Self {
        let dir = enrollca::datadir::DataDir::new(data);
        let config_file = Some(dir.config()).filter(|p| p.is_file());
        let config = enrollca::config::Config::load(config_file.as_deref(), std::iter::empty())
            .expect("the data directory's configuration loads");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (ready, addrs) = mpsc::channel();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
                let listeners = enrollca::app::Listeners {
                    http: bind().await,
                    https: bind().await,
                };
                let http = listeners.http.local_addr().unwrap();
                let https = listeners.https.local_addr().unwrap();
                ready.send((http, https)).unwrap();
                enrollca::app::run(&dir, config, listeners, clock, stop)
                    .await
                    .expect("the in-process server runs");
            });
        });
        let (http, https) = addrs
            .recv_timeout(Duration::from_secs(60))
            .expect("the in-process server binds");
        let (http, https) = (format!("http://{http}"), format!("https://{https}"));
        // Ready when it answers.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("{http}/healthz")])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the in-process server did not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let token = std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            running: Running::InProcess {
                shutdown,
                thread: Some(thread),
            },
            data: data.to_owned(),
            client: trusting_roots_of(&http),
            http,
            https,
            token,
            banner: String::new(),
        }
    }

    /// Starts `enrollca serve --data DATA` on ephemeral loopback ports.
    pub fn start(data: &Path, envs: &[(&str, &str)]) -> Self {
        Self::try_start(data, envs).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Starts the server, or returns what it printed on stderr when it exits instead.
    pub fn try_start(data: &Path, envs: &[(&str, &str)]) -> Result<Self, String> {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--data", data.to_str().unwrap()]);
        Self::spawn(cmd, data, envs)
    }

    /// `enrollca serve` with no arguments, run from `cwd`: the newcomer's command.
    pub fn start_default(cwd: &Path) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .current_dir(cwd)
            .env_remove("ENROLLCA_DATA");
        Self::spawn(cmd, &cwd.join("enrollca-data"), &[])
            .unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    fn spawn(mut cmd: Command, data: &Path, envs: &[(&str, &str)]) -> Result<Self, String> {
        cmd.env_remove("ENROLLCA_CA_PASSPHRASE");
        cmd.env("ENROLLCA_LISTEN_HTTP", "127.0.0.1:0")
            .env("ENROLLCA_LISTEN_HTTPS", "127.0.0.1:0")
            .env("ENROLLCA_LOG_LEVEL", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = String::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if line.contains("admin token") {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "{}\n{banner}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        let addr = |scheme: &str| {
            let marker = format!("{scheme}://");
            let line = banner
                .lines()
                .find(|l| l.trim_start().starts_with(scheme) && l.contains(&marker))
                .unwrap();
            let start = line.find(&marker).unwrap();
            line[start..].split_whitespace().next().unwrap().to_owned()
        };
        let (http, https) = (addr("http"), addr("https"));
        let client = trusting_roots_of(&http);
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = log.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let token = std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        Ok(Self {
            running: Running::Process {
                child,
                log,
                log_reader: Some(log_reader),
            },
            data: data.to_owned(),
            http,
            https,
            token,
            banner,
            client,
        })
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.running {
            Running::Process { child, .. } => child,
            Running::InProcess { .. } => panic!("the server runs in this process"),
        }
    }

    pub fn pid(&self) -> u32 {
        match &self.running {
            Running::Process { child, .. } => child.id(),
            Running::InProcess { .. } => panic!("the server runs in this process"),
        }
    }

    /// SIGTERM, then wait for the exit status; returns it with everything logged.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let child = self.child();
        run("kill", &["-TERM", &child.id().to_string()]);
        let status = child.wait().unwrap();
        let Running::Process {
            log, log_reader, ..
        } = &mut self.running
        else {
            unreachable!()
        };
        if let Some(reader) = log_reader.take() {
            reader.join().unwrap();
        }
        let log = log.lock().unwrap().clone();
        (status, log)
    }

    /// What the server has logged so far (after a moment for the reader to catch up).
    pub fn log_so_far(&self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        match &self.running {
            Running::Process { log, .. } => log.lock().unwrap().clone(),
            Running::InProcess { .. } => panic!("the server runs in this process"),
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let child = self.child();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The roots the server publishes at `/roots.pem`.
    pub async fn roots_pem(&self) -> String {
        reqwest::get(self.url("/roots.pem"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Where a client reaches `path`: the API and ACME over HTTPS, the rest over plain HTTP.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("/api/") || path.starts_with("/acme/") {
            format!("{}{path}", self.https)
        } else {
            format!("{}{path}", self.http)
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(&self.token)
    }

    /// GET an admin API path and parse the JSON answer.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    /// GET a path and read the answer's body as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).send().await.unwrap().text().await.unwrap()
    }

    /// The whole event feed, page by page.
    pub async fn events(&self) -> Vec<serde_json::Value> {
        let mut out: Vec<serde_json::Value> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e["seq"].as_u64().unwrap());
            let page = self
                .get_json(&format!("/api/v1/events?after={after}&limit=1000"))
                .await;
            let page = page["events"].as_array().unwrap().clone();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// The kinds (`issued`, `revoked`, ...) of the whole event feed, in order.
    pub async fn event_kinds(&self) -> Vec<String> {
        self.events()
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self) -> String {
        let resp = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// Mints a one-time SCEP challenge through the API with `body`; returns the secret.
    pub async fn mint_challenge(&self, body: serde_json::Value) -> String {
        let resp = self
            .post("/api/v1/scep/challenges")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let minted: serde_json::Value = resp.json().await.unwrap();
        minted["challenge"].as_str().unwrap().to_owned()
    }

    /// What SCEP GetCACert serves, as a client bootstraps from it, in a PEM bundle in `dir`
    /// (the SCEP CA first): a lone self-signed CA (`application/x-x509-ca-cert`), or the CA
    /// with every certificate above it in a certs-only PKCS#7 (`application/x-x509-ca-ra-cert`),
    /// unpacked by openssl.
    pub async fn scep_ca_certs(&self, dir: &Path) -> PathBuf {
        let resp = reqwest::get(self.url("/scep?operation=GetCACert"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let body = resp.bytes().await.unwrap();
        std::fs::create_dir_all(dir).unwrap();
        assert!(
            [
                "application/x-x509-ca-cert",
                "application/x-x509-ca-ra-cert"
            ]
            .contains(&kind.as_str()),
            "GetCACert answered {kind}"
        );
        std::fs::write(dir.join("getcacert"), &body).unwrap();
        getcacert_pem(dir, &dir.join("getcacert"))
    }

    /// Issues through `POST /api/v1/certificates` for a fresh openssl key of type `key`
    /// (`ec:P-256`, `rsa:2048`) from the `family` issuer; returns the serial and the chain
    /// (leaf first) as files DIR/CN-i.pem.
    pub async fn issue(
        &self,
        dir: &Path,
        cn: &str,
        key: &str,
        family: &str,
    ) -> (String, Vec<PathBuf>) {
        let (_, csr) = openssl_csr(dir, cn, key, &format!("/CN={cn}"), None);
        let resp = self
            .post("/api/v1/certificates")
            .json(&serde_json::json!({"csr": csr, "issuer": family}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let body: serde_json::Value = resp.json().await.unwrap();
        let chain = split_pem(dir, cn, body["chain_pem"].as_str().unwrap());
        (
            body["certificate"]["serial"].as_str().unwrap().to_owned(),
            chain,
        )
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(&self.token)
    }

    /// `cli` that must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// `cli` that must fail, saying `why` on stderr.
    pub fn cli_refused(&self, args: &[&str], why: &str) {
        let out = self.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }

    /// `enrollca ARGS --data DATA --url HTTP` against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data", self.data.to_str().unwrap(), "--url", &self.https]);
        enrollca(&all, &[])
    }

    /// `cli` with the listen addresses this server was given (tests bind ephemeral ports;
    /// a deployment's config names its own), so URLs it prints are this server's.
    pub fn cli_listening(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data", self.data.to_str().unwrap(), "--url", &self.https]);
        let http = self.http.trim_start_matches("http://");
        let https = self.https.trim_start_matches("https://");
        enrollca(
            &all,
            &[
                ("ENROLLCA_LISTEN_HTTP", http),
                ("ENROLLCA_LISTEN_HTTPS", https),
            ],
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Process { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::InProcess { shutdown, thread } => {
                shutdown.cancel();
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// A client that trusts the roots the server publishes at `/roots.pem`, fetched over plain
/// HTTP as an MDM's operator would (curl: an independent client).
fn trusting_roots_of(http: &str) -> reqwest::Client {
    let out = run("curl", &["-sSf", &format!("{http}/roots.pem")]);
    assert!(out.status.success(), "GET /roots.pem: {}", stderr(&out));
    let mut builder = reqwest::Client::builder();
    for cert in reqwest::Certificate::from_pem_bundle(&out.stdout).unwrap() {
        builder = builder.add_root_certificate(cert);
    }
    builder.build().unwrap()
}

/// A DER certificate converted by openssl to DIR/NAME.pem (failing the test if it is not one).
pub fn der_to_pem(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
    let der_path = dir.join(format!("{name}.der"));
    std::fs::write(&der_path, der).unwrap();
    let pem_path = dir.join(format!("{name}.pem"));
    let out = run(
        "openssl",
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            der_path.to_str().unwrap(),
            "-out",
            pem_path.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{name} is not a DER certificate: {}",
        stderr(&out)
    );
    pem_path
}

/// A GetCACert answer saved at `body` as a PEM bundle in `dir`, in the order served (the SCEP
/// CA first): openssl unpacks a certs-only PKCS#7 (a DER SET OF decoder would sort it), a
/// lone certificate is converted.
fn getcacert_pem(dir: &Path, body: &Path) -> PathBuf {
    let pem = dir.join("scep-ca.pem");
    let (body_s, pem_s) = (body.to_str().unwrap(), pem.to_str().unwrap());
    let unpacked = run(
        "openssl",
        &[
            "pkcs7",
            "-inform",
            "DER",
            "-print_certs",
            "-in",
            body_s,
            "-out",
            pem_s,
        ],
    );
    if unpacked.status.success() {
        pem
    } else {
        der_to_pem(dir, "scep-ca", &std::fs::read(body).unwrap())
    }
}

/// SHA-256 (hex) of the SCEP CA certificate GetCACert serves now (fetched with curl): the
/// pin micromdm scepclient needs to pick the CA it encrypts to out of a chain, as an Apple
/// device pins its root with `CAFingerprint`.
pub fn scep_ca_fingerprint(server: &Server) -> String {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("getcacert");
    let out = run(
        "curl",
        &[
            "-sSf",
            "-o",
            body.to_str().unwrap(),
            &server.url("/scep?operation=GetCACert"),
        ],
    );
    assert!(out.status.success(), "GetCACert: {}", stderr(&out));
    let ca = split_pem(
        dir.path(),
        "served",
        &std::fs::read_to_string(getcacert_pem(dir.path(), &body)).unwrap(),
    )
    .remove(0);
    openssl_fingerprint(&ca).replace(':', "").to_lowercase()
}

/// Runs micromdm scepclient against the server, pinned to its SCEP CA; an empty `challenge`
/// leaves the flag out.
pub fn scepclient(server: &Server, dir: &Path, cn: &str, challenge: &str) -> Output {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new("scepclient");
    cmd.args(["-server-url", &server.url("/scep")])
        .args(["-ca-fingerprint", &scep_ca_fingerprint(server)]);
    if !challenge.is_empty() {
        cmd.args(["-challenge", challenge]);
    }
    cmd.args(["-private-key", dir.join("key.pem").to_str().unwrap()])
        .args([
            "-certificate",
            dir.join("cert.pem").to_str().unwrap(),
            "-cn",
            cn,
        ]);
    cmd.output().unwrap()
}

/// strongSwan as a device uses it: `pki --scepca` learns the CA from GetCACert, then
/// `pki --scep` enrols a new RSA key of `bits` for `dn` with `challenge`, AES-encrypted.
/// Returns its output (the certificate, DER, on stdout) and the key's path.
pub fn strongswan_enrol(
    server: &Server,
    dir: &Path,
    dn: &str,
    challenge: &str,
    bits: u32,
) -> (Output, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let out = run(
        "pki",
        &[
            "--scepca",
            "--url",
            &server.url("/scep"),
            "--caout",
            dir.join("ca.der").to_str().unwrap(),
            "--force",
        ],
    );
    assert!(out.status.success(), "pki --scepca: {}", stderr(&out));
    let key = dir.join("key.pem");
    let made = run(
        "openssl",
        &["genrsa", "-out", key.to_str().unwrap(), &bits.to_string()],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let (root, ca) = (dir.join("ca.der"), dir.join("ca-1.der"));
    let out = run(
        "pki",
        &[
            "--scep",
            "--url",
            &server.url("/scep"),
            "--in",
            key.to_str().unwrap(),
            "--dn",
            dn,
            "--password",
            challenge,
            "--cacert-enc",
            ca.to_str().unwrap(),
            "--cacert-sig",
            ca.to_str().unwrap(),
            "--cacert",
            root.to_str().unwrap(),
            "--cipher",
            "aes",
            "--digest",
            "sha256",
            "--outform",
            "der",
        ],
    );
    (out, key)
}

/// A port nothing listens on right now (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// openssl's reading: `cert` (PEM) certifies the public half of the private key in `key`.
pub fn assert_certifies_key(cert: &Path, key: &Path) {
    let cert_pub = run(
        "openssl",
        &["x509", "-noout", "-pubkey", "-in", cert.to_str().unwrap()],
    );
    let key_pub = run(
        "openssl",
        &["pkey", "-pubout", "-in", key.to_str().unwrap()],
    );
    assert!(cert_pub.status.success() && key_pub.status.success());
    assert_eq!(
        stdout(&cert_pub),
        stdout(&key_pub),
        "{} does not certify the key in {}",
        cert.display(),
        key.display()
    );
}

/// The serial number of a PEM certificate, lowercase hex as the API prints it.
pub fn serial_of(cert: &Path) -> String {
    let s = stdout(&run(
        "openssl",
        &["x509", "-noout", "-serial", "-in", cert.to_str().unwrap()],
    ));
    s.trim().trim_start_matches("serial=").to_lowercase()
}

/// A key and CSR made by openssl. `key` is `ec:P-256`, `ec:P-384` or `rsa:2048`.
pub fn openssl_csr(
    dir: &Path,
    name: &str,
    key: &str,
    subject: &str,
    san: Option<&str>,
) -> (PathBuf, String) {
    let key_path = dir.join(format!("{name}.key"));
    let csr_path = dir.join(format!("{name}.csr"));
    let mut args: Vec<String> = vec!["req".into(), "-new".into(), "-nodes".into()];
    match key.split_once(':').unwrap() {
        ("ec", curve) => {
            args.extend([
                "-newkey".into(),
                "ec".into(),
                "-pkeyopt".into(),
                format!("ec_paramgen_curve:{curve}"),
            ]);
        }
        ("rsa", bits) => args.extend(["-newkey".into(), format!("rsa:{bits}")]),
        _ => panic!("key type {key}"),
    }
    args.extend([
        "-keyout".into(),
        key_path.display().to_string(),
        "-out".into(),
        csr_path.display().to_string(),
    ]);
    args.extend(["-subj".into(), subject.into()]);
    if let Some(san) = san {
        args.extend(["-addext".into(), format!("subjectAltName={san}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("openssl", &args);
    assert!(out.status.success(), "openssl req: {}", stderr(&out));
    (key_path, std::fs::read_to_string(csr_path).unwrap())
}

/// A stranger's CA, made by openssl: a fresh P-256 key and a self-signed certificate for
/// `subject`, as `<dir>/<name>.key` and `<dir>/<name>.pem` (returned in that order).
pub fn openssl_self_signed(dir: &Path, name: &str, subject: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pem")),
    );
    let out = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-subj",
            subject,
            "-days",
            "2",
        ],
    );
    assert!(out.status.success(), "openssl req -x509: {}", stderr(&out));
    (key, cert)
}

/// `openssl verify` (an independent verifier) of `leaf` through `intermediate` to `roots`, for
/// TLS client authentication; fails the test with openssl's words.
pub fn assert_chain_verifies(roots: &str, intermediate: &str, leaf: &str) {
    assert_chain_verifies_for("sslclient", roots, intermediate, leaf);
}

/// openssl verifies `leaf` for TLS client use with nothing but what GetCACert served
/// (`scep_ca_certs`) as its trust: what an enrolled device and its peers can rely on.
pub fn assert_verifies_with_getcacert(getcacert: &Path, leaf: &Path) {
    let bundle = getcacert.to_str().unwrap();
    assert_chain_verifies(bundle, bundle, leaf.to_str().unwrap());
}

/// `assert_chain_verifies` for another openssl `-purpose` (e.g. `sslserver`).
pub fn assert_chain_verifies_for(purpose: &str, roots: &str, intermediate: &str, leaf: &str) {
    let out = run(
        "openssl",
        &[
            "verify",
            "-purpose",
            purpose,
            "-CAfile",
            roots,
            "-untrusted",
            intermediate,
            leaf,
        ],
    );
    assert!(
        out.status.success(),
        "openssl verify {leaf}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Splits a PEM bundle into its certificates, each written to DIR/NAME-i.pem.
pub fn split_pem(dir: &Path, name: &str, bundle: &str) -> Vec<PathBuf> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .enumerate()
        .map(|(i, pem)| {
            let p = dir.join(format!("{name}-{i}.pem"));
            std::fs::write(&p, pem.trim_start()).unwrap();
            p
        })
        .collect()
}

/// `openssl ocsp ARGS`'s stdout, after openssl verified the response's signature; fails the
/// test with openssl's words otherwise.
pub fn openssl_verified_ocsp(args: &[&str]) -> String {
    let out = run("openssl", &[&["ocsp"], args].concat());
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(se.contains("Response verify OK"), "{so}{se}");
    so
}

/// openssl's text form of a DER CRL, after it verified the CRL's signature against `cafile`
/// (roots and the issuing CA); fails the test with openssl's words otherwise.
pub fn openssl_verified_crl(der: &Path, cafile: &Path) -> String {
    let out = run(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            der.to_str().unwrap(),
            "-CAfile",
            cafile.to_str().unwrap(),
            "-noout",
            "-text",
        ],
    );
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success() && all.contains("verify OK"), "{all}");
    all
}

/// A webhook receiver on `port`: keeps every event it is sent, checking each signature.
pub async fn webhook_receiver(
    port: u16,
    secret: &'static str,
) -> std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> {
    use axum::http::{HeaderMap, StatusCode};
    let got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
                let sig = headers["x-enrollca-signature"].to_str().unwrap();
                let tag = hex::decode(sig.strip_prefix("sha256=").unwrap()).unwrap();
                if ring::hmac::verify(&key, &body, &tag).is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                let delivery: serde_json::Value = serde_json::from_slice(&body).unwrap();
                keep.lock()
                    .unwrap()
                    .extend(delivery["events"].as_array().unwrap().clone());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    got
}
