//! ACME load generator: complete order flows against any RFC 8555 server (a new account, an
//! order, its challenge, finalize, download). Either http-01 for a fresh name, answered by an
//! in-process responder, or, with `--attestation-ca`, a device enrolment: a
//! permanent-identifier order answered by device-attest-01 with a synthetic attestation of a
//! fresh device key in the `--format` asked for (Apple-style by default; `android-key`,
//! `step`, `tpm` attest with a test CA `--make-attestation-ca` saved before the server started). A flow counts only when the downloaded certificate
//! certifies the key of the CSR (and, for http-01, names the ordered identifier). Used by
//! `benches/acme_vs_pebble.sh` and `benches/device_enrolment.sh`.
//!
//! The generator shares the machine with the server, so it does as little as it can while
//! the clock runs: keys and CSRs are made before, certificates are checked after, and each
//! worker keeps one keep-alive HTTPS connection, as a device or certbot does.

/// The server's allocator: the generator shares the cores with the server it measures, and
/// glibc's malloc took 8% of its CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use clap::Parser;
use enrollca::attest::freshness_nonce;
use enrollca_loadgen::{Report, cpu_seconds};
use enrollca_testkit::acme::{AccountKey, Http01Responder};
use enrollca_testkit::android::{AndroidLeaf, TestAndroidCa};
use enrollca_testkit::attestation::{Leaf, TestAttestationCa};
use enrollca_testkit::tpm::{TestTpmCa, TpmLeaf};
use enrollca_testkit::yubikey::{TestYubicoCa, YubiKeyLeaf, serial_der};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

/// Failures after which no further flows are started.
const MAX_FAILURES: usize = 20;

#[derive(Parser)]
#[command(about = "ACME http-01 order-flow load generator")]
struct Args {
    /// Directory URL, e.g. https://127.0.0.1:8443/acme/default/directory
    #[arg(long, required_unless_present = "make_attestation_ca")]
    directory: Option<String>,
    /// PEM file of the roots that sign the server's TLS certificate.
    #[arg(long, required_unless_present = "make_attestation_ca")]
    ca_file: Option<std::path::PathBuf>,
    /// Port to answer http-01 on (127.0.0.1), where the server's validator connects.
    #[arg(long, required_unless_present = "attestation_ca")]
    http01_port: Option<u16>,
    /// Enrol devices instead: attest with the test CA in this directory (`root.pem`,
    /// `intermediate.pem`, `intermediate.key`; the server must trust the root).
    #[arg(long, conflicts_with = "http01_port")]
    attestation_ca: Option<std::path::PathBuf>,
    /// The attestation format devices answer in.
    #[arg(long, value_enum, default_value = "apple")]
    format: Format,
    /// Generate a test CA for `--format` (android-key, step, tpm) into `--attestation-ca`
    /// and exit: the server is then configured to trust its `root.pem`.
    #[arg(long, requires = "attestation_ca")]
    make_attestation_ca: bool,
    /// Device serial numbers are `<prefix><N, 6 digits>` (the server's inventory must hold them).
    #[arg(long, default_value = "BENCH")]
    device_prefix: String,
    /// Names are `o<N>-<run>.<suffix>`.
    #[arg(long, default_value = "bench.localhost")]
    suffix: String,
    #[arg(long, default_value_t = 500)]
    orders: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Pause between polls of a pending order.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// Longest wait for one answer: a server that stops answering shows up as failures,
    /// not as a hung benchmark.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// PID of the server, to report its CPU time per order.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value = "server")]
    label: String,
}

// One thread: the generator needs well under a core, and a second worker only adds
// cross-thread wake-ups (futex, context switches) that take CPU from the server it measures.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.make_attestation_ca {
        let dir = args.attestation_ca.as_deref().context("--attestation-ca")?;
        return AttestCa::make(args.format, dir);
    }
    let (directory, ca_file) = (
        args.directory.as_deref().context("--directory")?,
        args.ca_file.as_deref().context("--ca-file")?,
    );
    let target = Arc::new(Target::new(directory, ca_file, args.timeout)?);
    let mut setup = Conn::new(target.clone());
    let dir: Value =
        serde_json::from_slice(&setup.send(Method::GET, directory, None).await?.ok()?.body)
            .context("the directory is not JSON")?;
    let mode = match (&args.attestation_ca, args.http01_port) {
        (Some(dir), _) => Mode::Attest(Box::new(AttestCa::load(args.format, dir)?)),
        (None, Some(port)) => Mode::Http01(
            Http01Responder::start(port)
                .await
                .with_context(|| format!("http-01 responder on 127.0.0.1:{port}"))?,
        ),
        (None, None) => bail!("give --http01-port or --attestation-ca"),
    };
    let run = format!("{:08x}", rand::random::<u32>());
    let inputs = (0..args.orders)
        .map(|i| {
            let name = match mode {
                Mode::Http01(_) => format!("o{i}-{run}.{}", args.suffix),
                Mode::Attest(_) => format!("{}{i:06}", args.device_prefix),
            };
            Input::new(name, &mode)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ctx = Arc::new(Ctx {
        dir,
        mode,
        poll: args.poll,
        inputs,
        next: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
    });

    let cpu_before = args.server_pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (ctx, target) = (ctx.clone(), target.clone());
            tokio::spawn(async move { ctx.work(Conn::new(target)).await })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(args.orders);
    for w in workers {
        outcomes.extend(w.await?);
    }
    let wall = started.elapsed();
    let cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    if ctx.failures.load(Ordering::Relaxed) >= MAX_FAILURES {
        eprintln!("{}: {MAX_FAILURES} failures, stopped early", args.label);
    }

    // Checked after the clock stopped: what the server handed out, not how fast we parse.
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut latencies = Vec::with_capacity(outcomes.len());
    let mut first_error = None;
    for (i, result, latency) in outcomes {
        latencies.push(latency);
        match result.and_then(|chain| ctx.inputs[i].check(&chain, &ctx.mode)) {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let report = Report {
        label: &args.label,
        concurrency: args.concurrency,
        unit: match ctx.mode {
            Mode::Http01(_) => "order",
            Mode::Attest(_) => "enrolment",
        },
        ok,
        failed,
        notes: Vec::new(),
        wall,
        latencies,
        server_cpu: cpu,
    };
    println!("{}", report.line());
    if let Some(e) = first_error {
        eprintln!("{}: first failure: {e:#}", args.label);
    }
    Ok(())
}

/// The server: where to connect and how to check its TLS certificate.
struct Target {
    tls: tokio_rustls::TlsConnector,
    /// `https://host:port`, which every URL of the server starts with.
    origin: String,
    authority: String,
    name: ServerName<'static>,
    timeout: Duration,
}

impl Target {
    fn new(directory: &str, ca_file: &std::path::Path, timeout: Duration) -> anyhow::Result<Self> {
        let uri: hyper::Uri = directory.parse().context("--directory is not a URL")?;
        if uri.scheme_str() != Some("https") {
            bail!("--directory must be an https URL");
        }
        let authority = uri.authority().context("--directory has no host")?;
        let pem =
            std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            origin: format!("https://{authority}"),
            authority: authority.to_string(),
            name: ServerName::try_from(authority.host().to_owned())?,
            timeout,
        })
    }
}

/// One worker's keep-alive HTTPS connection, opened again if the server closed it.
struct Conn {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

struct Reply {
    status: u16,
    nonce: Option<String>,
    location: Option<String>,
    body: Bytes,
}

impl Reply {
    fn ok(self) -> anyhow::Result<Self> {
        if self.status >= 300 {
            bail!(
                "HTTP {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            );
        }
        Ok(self)
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("reply is not JSON")
    }
}

impl Conn {
    fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    async fn send(
        &mut self,
        method: Method,
        url: &str,
        jws: Option<String>,
    ) -> anyhow::Result<Reply> {
        let path = url
            .strip_prefix(&self.target.origin)
            .with_context(|| format!("{url} is not on {}", self.target.origin))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(if path.is_empty() { "/" } else { path })
            .header(header::HOST, &self.target.authority);
        if jws.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/jose+json");
        }
        let req = req.body(Full::new(Bytes::from(jws.unwrap_or_default())))?;
        let timeout = self.target.timeout;
        tokio::time::timeout(timeout, async {
            let resp = self.ready().await?.send_request(req).await?;
            let header = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (status, nonce) = (resp.status().as_u16(), header("replay-nonce"));
            let location = header("location");
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(Reply {
                status,
                nonce,
                location,
                body,
            })
        })
        .await
        .with_context(|| format!("{url}: no answer in {timeout:?}"))?
    }

    async fn ready(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_err()
        {
            self.sender = None;
        }
        if self.sender.is_none() {
            let t = &self.target;
            let tcp = tokio::net::TcpStream::connect(&t.authority).await?;
            tcp.set_nodelay(true)?;
            let tls = t.tls.connect(t.name.clone(), tcp).await?;
            let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(driver);
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("connected above"))
    }
}

/// What one flow needs that does not depend on the server's answers, made before the clock
/// starts.
struct Input {
    /// The DNS name ordered, or the device's serial number.
    name: String,
    account: AccountKey,
    /// The certificate's key (the device key, for an enrolment).
    key: rcgen::KeyPair,
    csr: String,
}

impl Input {
    fn new(name: String, mode: &Mode) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let mut subject = rcgen::DistinguishedName::new();
        let sans = match mode {
            Mode::Http01(_) => vec![name.clone()],
            // A device CSR names no identifier (the order's PermanentIdentifier does), only
            // the serial as its common name, as Apple's payload asks.
            Mode::Attest(_) => {
                subject.push(rcgen::DnType::CommonName, name.as_str());
                Vec::new()
            }
        };
        let mut params = rcgen::CertificateParams::new(sans)?;
        params.distinguished_name = subject;
        let csr = URL_SAFE_NO_PAD.encode(params.serialize_request(&key)?.der());
        Ok(Self {
            name,
            account: AccountKey::generate(),
            key,
            csr,
        })
    }

    /// The downloaded chain's first certificate certifies the CSR's key (and names the
    /// ordered name, for http-01).
    fn check(&self, chain: &[u8], mode: &Mode) -> anyhow::Result<()> {
        let der = certifies(chain, self.key.public_key_raw())?;
        match mode {
            Mode::Http01(_) => names(&der, &self.name),
            Mode::Attest(_) => Ok(()),
        }
    }
}

struct Ctx {
    dir: Value,
    mode: Mode,
    poll: Duration,
    inputs: Vec<Input>,
    /// The next input to run.
    next: AtomicUsize,
    failures: AtomicUsize,
}

/// How challenges are answered.
enum Mode {
    Http01(Http01Responder),
    /// device-attest-01, with attestations signed by this test CA.
    Attest(Box<AttestCa>),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Apple,
    AndroidKey,
    Step,
    Tpm,
}

/// A test attestation CA of one format.
enum AttestCa {
    Apple(TestAttestationCa),
    Android(TestAndroidCa),
    Step(TestYubicoCa),
    Tpm(TestTpmCa),
}

impl AttestCa {
    /// Generates one into `dir` (Apple's is made with openssl by the benchmark).
    fn make(format: Format, dir: &std::path::Path) -> anyhow::Result<()> {
        match format {
            Format::Apple => bail!("the apple test CA is made with openssl (benches/lib.sh)"),
            Format::AndroidKey => TestAndroidCa::generate("Bench")?.save(dir),
            Format::Step => TestYubicoCa::generate("Bench")?.save(dir),
            Format::Tpm => TestTpmCa::generate("Bench")?.save(dir),
        }
    }

    fn load(format: Format, dir: &std::path::Path) -> anyhow::Result<Self> {
        Ok(match format {
            Format::Apple => Self::Apple(TestAttestationCa::load(dir)?),
            Format::AndroidKey => Self::Android(TestAndroidCa::load(dir)?),
            Format::Step => Self::Step(TestYubicoCa::load(dir)?),
            Format::Tpm => Self::Tpm(TestTpmCa::load(dir)?),
        })
    }

    /// The attestation object a device with `serial` sends for a challenge.
    fn attest(
        &self,
        key: &rcgen::KeyPair,
        serial: &str,
        token: &str,
        key_authorization: &str,
    ) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Self::Apple(ca) => ca.attest(
                key,
                &Leaf {
                    nonce: Some(freshness_nonce(token)),
                    serial: Some(serial.to_owned()),
                    ..Leaf::default()
                },
            )?,
            Self::Android(ca) => ca.attest(
                key,
                &AndroidLeaf {
                    challenge: freshness_nonce(token).to_vec(),
                    serial: Some(serial.to_owned()),
                    ..AndroidLeaf::default()
                },
            )?,
            Self::Step(ca) => ca.attest(
                key,
                &YubiKeyLeaf {
                    serial: Some(serial_der(
                        serial.parse().context("a YubiKey serial is a number")?,
                    )),
                    ..YubiKeyLeaf::default()
                },
                key_authorization,
            )?,
            Self::Tpm(ca) => ca.attest(
                key,
                &TpmLeaf {
                    permanent_identifier: Some(serial.to_owned()),
                    ..TpmLeaf::default()
                },
                key_authorization,
            )?,
        })
    }
}

/// One account's conversation: its key, its account URL and the nonce to use next.
struct Session<'a> {
    ctx: &'a Ctx,
    conn: &'a mut Conn,
    key: &'a AccountKey,
    kid: Option<String>,
    nonce: Option<String>,
}

/// A flow's outcome: its input's index, the chain downloaded, its latency.
type Outcome = (usize, anyhow::Result<Bytes>, Duration);

impl Ctx {
    fn url(&self, name: &str) -> anyhow::Result<&str> {
        self.dir[name].as_str().context("directory lacks a URL")
    }

    /// Runs flows one after another on one connection until none is left.
    async fn work(&self, mut conn: Conn) -> Vec<Outcome> {
        let mut done = Vec::new();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.inputs.len() || self.failures.load(Ordering::Relaxed) >= MAX_FAILURES {
                return done;
            }
            let t = Instant::now();
            let input = &self.inputs[i];
            let result = match &self.mode {
                Mode::Http01(answers) => self.flow(&mut conn, input, answers).await,
                Mode::Attest(ca) => self.enrol(&mut conn, input, ca).await,
            };
            if result.is_err() {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            done.push((i, result, t.elapsed()));
        }
    }

    /// A session with a new account.
    async fn account<'a>(
        &'a self,
        conn: &'a mut Conn,
        input: &'a Input,
    ) -> anyhow::Result<Session<'a>> {
        let mut s = Session {
            ctx: self,
            conn,
            key: &input.account,
            kid: None,
            nonce: None,
        };
        let acct = s
            .post(
                self.url("newAccount")?,
                Some(json!({"termsOfServiceAgreed": true})),
            )
            .await?;
        s.kid = Some(acct.location.context("newAccount gave no Location")?);
        Ok(s)
    }

    /// A device enrolment, as a device performs it: its hardware key attested for the
    /// challenge, then a CSR with that key.
    async fn enrol(&self, conn: &mut Conn, input: &Input, ca: &AttestCa) -> anyhow::Result<Bytes> {
        let mut s = self.account(conn, input).await?;
        let ids = json!({"identifiers": [{"type": "permanent-identifier", "value": input.name}]});
        let order = s.post(self.url("newOrder")?, Some(ids)).await?.json()?;
        let authz_url = order["authorizations"][0]
            .as_str()
            .context("no authorization")?;
        let authz = s.post(authz_url, None).await?.json()?;
        let challenge = &authz["challenges"][0];
        if challenge["type"] != "device-attest-01" {
            bail!("no device-attest-01 challenge");
        }
        let token = challenge["token"].as_str().context("no token")?;
        let attestation = ca.attest(
            &input.key,
            &input.name,
            token,
            &s.key.key_authorization(token),
        )?;
        let att_obj = URL_SAFE_NO_PAD.encode(attestation);
        let answered = s
            .post(
                challenge["url"].as_str().context("no challenge URL")?,
                Some(json!({"attObj": att_obj})),
            )
            .await?
            .json()?;
        if answered["status"] != "valid" {
            bail!("challenge is {} after attestation", answered["status"]);
        }
        let finalize = order["finalize"].as_str().context("no finalize URL")?;
        let order = s
            .post(finalize, Some(json!({"csr": input.csr})))
            .await?
            .json()?;
        let cert_url = order["certificate"]
            .as_str()
            .context("finalized order has no certificate")?;
        Ok(s.post(cert_url, None).await?.body)
    }

    async fn flow(
        &self,
        conn: &mut Conn,
        input: &Input,
        answers: &Http01Responder,
    ) -> anyhow::Result<Bytes> {
        let mut s = self.account(conn, input).await?;

        let ids = json!({"identifiers": [{"type": "dns", "value": input.name}]});
        let order = s.post(self.url("newOrder")?, Some(ids)).await?;
        let order_url = order
            .location
            .clone()
            .context("newOrder gave no Location")?;
        let order = order.json()?;
        let authz_url = order["authorizations"][0]
            .as_str()
            .context("no authorization")?;
        let authz = s.post(authz_url, None).await?.json()?;
        let challenge = authz["challenges"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "http-01"))
            .context("no http-01 challenge")?;
        let token = challenge["token"].as_str().context("no token")?.to_owned();
        answers.serve(&token, s.key.key_authorization(&token));
        let answered = s
            .post(
                challenge["url"].as_str().context("no challenge URL")?,
                Some(json!({})),
            )
            .await
            .and_then(|a| a.json());
        // As lego does: a challenge valid in the answer makes its authorization, the order's
        // only one, valid, so the order is ready without a poll.
        let polled = match answered {
            Ok(c) if c["status"] == "valid" => Ok(None),
            Ok(_) => s.poll(&order_url, &["pending"]).await.map(Some),
            Err(e) => Err(e),
        };
        answers.forget(&token);
        let order = match polled? {
            None => order,
            Some(o) if o["status"] == "ready" => o,
            Some(o) => bail!("order {order_url} is {} after validation", o["status"]),
        };

        let finalize = order["finalize"].as_str().context("no finalize URL")?;
        let order = s
            .post(finalize, Some(json!({"csr": input.csr})))
            .await?
            .json()?;
        let order = if order["status"] == "valid" {
            order
        } else {
            s.poll(&order_url, &["ready", "processing"]).await?
        };
        let cert_url = order["certificate"]
            .as_str()
            .context("valid order has no certificate")?;
        Ok(s.post(cert_url, None).await?.body)
    }
}

impl Session<'_> {
    async fn nonce(&mut self) -> anyhow::Result<String> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let url = self.ctx.url("newNonce")?;
        self.conn
            .send(Method::HEAD, url, None)
            .await?
            .nonce
            .context("newNonce gave no nonce")
    }

    /// Signs and sends; one retry on badNonce (servers may reject nonces at will).
    async fn post(&mut self, url: &str, payload: Option<Value>) -> anyhow::Result<Reply> {
        for _ in 0..2 {
            let nonce = self.nonce().await?;
            let header = self.key.header(url, &nonce, self.kid.as_deref());
            let body = self.key.jws(&header, payload.as_ref()).to_string();
            let reply = self.conn.send(Method::POST, url, Some(body)).await?;
            self.nonce = reply.nonce.clone();
            if reply.status < 300 {
                return Ok(reply);
            }
            let problem = String::from_utf8_lossy(&reply.body).into_owned();
            if !problem.contains("badNonce") {
                bail!("{url}: HTTP {}: {problem}", reply.status);
            }
        }
        bail!("{url}: badNonce twice")
    }

    /// POST-as-GET until the status leaves `while_in`.
    async fn poll(&mut self, url: &str, while_in: &[&str]) -> anyhow::Result<Value> {
        let timeout = self.conn.target.timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let body = self.post(url, None).await?.json()?;
            let status = body["status"].as_str().unwrap_or_default();
            if !while_in.contains(&status) {
                return Ok(body);
            }
            if Instant::now() > deadline {
                bail!("{url} stayed {status} for {timeout:?}");
            }
            tokio::time::sleep(self.ctx.poll).await;
        }
    }
}

/// The chain's first certificate, DER, if it certifies `public_key` (raw point).
fn certifies(pem_chain: &[u8], public_key: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_chain).context("no PEM certificate")?;
    let cert = pem.parse_x509().context("unparsable certificate")?;
    if cert.public_key().subject_public_key.data.as_ref() != public_key {
        bail!("the certificate does not certify the CSR's key");
    }
    Ok(pem.contents)
}

/// The certificate (DER) names `name` among its DNS names.
fn names(der: &[u8], name: &str) -> anyhow::Result<()> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("unparsable certificate")?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value.general_names.iter().any(
                |n| matches!(n, x509_parser::extensions::GeneralName::DNSName(d) if *d == name),
            )
        })
        .unwrap_or(false);
    if !names {
        bail!("the certificate does not name {name}");
    }
    Ok(())
}
