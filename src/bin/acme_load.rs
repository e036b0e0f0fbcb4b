//! ACME load generator: complete order flows against any RFC 8555 server (a new account, an
//! order, its challenge, finalize, download). Either http-01 for a fresh name, answered by an
//! in-process responder, or, with `--attestation-ca`, a device enrolment: a
//! permanent-identifier order answered by device-attest-01 with a synthetic Apple-style
//! attestation of a fresh device key. A flow counts only when the downloaded certificate
//! certifies the key of the CSR (and, for http-01, names the ordered identifier). Used by
//! `benches/acme_vs_pebble.sh` and `benches/device_enrolment.sh`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use enrollca::acme::client::{AccountKey, Http01Responder};
use enrollca::attest::freshness_nonce;
use enrollca::attest::synthetic::{Leaf, TestAttestationCa};
use enrollca::loadgen::{Report, cpu_seconds};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// Failures after which no further flows are started.
const MAX_FAILURES: usize = 20;

#[derive(Parser)]
#[command(about = "ACME http-01 order-flow load generator")]
struct Args {
    /// Directory URL, e.g. https://127.0.0.1:8443/acme/default/directory
    #[arg(long)]
    directory: String,
    /// PEM file of the roots that sign the server's TLS certificate.
    #[arg(long)]
    ca_file: std::path::PathBuf,
    /// Port to answer http-01 on (127.0.0.1), where the server's validator connects.
    #[arg(long, required_unless_present = "attestation_ca")]
    http01_port: Option<u16>,
    /// Enrol devices instead: attest with the test CA in this directory (`root.pem`,
    /// `intermediate.pem`, `intermediate.key`; the server must trust the root).
    #[arg(long, conflicts_with = "http01_port")]
    attestation_ca: Option<std::path::PathBuf>,
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
    /// PID of the server, to report its CPU time per order.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value = "server")]
    label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let roots = std::fs::read(&args.ca_file)
        .with_context(|| format!("reading {}", args.ca_file.display()))?;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&roots)?)
        .pool_max_idle_per_host(args.concurrency * 2)
        // A server that stops answering shows up as failures, not as a hung benchmark.
        .timeout(Duration::from_secs(30))
        .build()?;
    let dir: Value = http.get(&args.directory).send().await?.json().await?;
    let mode = match (&args.attestation_ca, args.http01_port) {
        (Some(dir), _) => Mode::Attest(Box::new(TestAttestationCa::load(dir)?)),
        (None, Some(port)) => Mode::Http01(
            Http01Responder::start(port)
                .await
                .with_context(|| format!("http-01 responder on 127.0.0.1:{port}"))?,
        ),
        (None, None) => bail!("give --http01-port or --attestation-ca"),
    };
    let run = format!("{:08x}", rand::random::<u32>());
    let ctx = Arc::new(Ctx {
        http,
        dir,
        mode,
        poll: args.poll,
        failures: AtomicUsize::new(0),
    });

    let cpu_before = args.server_pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.orders);
    for i in 0..args.orders {
        let permit = gate.clone().acquire_owned().await?;
        // A server that stopped answering would otherwise take the whole run's length in
        // timeouts; what was launched is still counted.
        if ctx.failures.load(Ordering::Relaxed) >= MAX_FAILURES {
            eprintln!("{}: {MAX_FAILURES} failures, stopping early", args.label);
            break;
        }
        let ctx = ctx.clone();
        let name = match ctx.mode {
            Mode::Http01(_) => format!("o{i}-{run}.{}", args.suffix),
            Mode::Attest(_) => format!("{}{i:06}", args.device_prefix),
        };
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let result = match &ctx.mode {
                Mode::Http01(answers) => ctx.flow(&name, answers).await,
                Mode::Attest(ca) => ctx.enrol(&name, ca).await,
            };
            if result.is_err() {
                ctx.failures.fetch_add(1, Ordering::Relaxed);
            }
            (result, t.elapsed())
        }));
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for t in tasks {
        let (result, latency) = t.await?;
        latencies.push(latency);
        match result {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let wall = started.elapsed();
    let cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
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

struct Ctx {
    http: reqwest::Client,
    dir: Value,
    mode: Mode,
    poll: Duration,
    failures: AtomicUsize,
}

/// How challenges are answered.
enum Mode {
    Http01(Http01Responder),
    /// device-attest-01, with attestations signed by this test CA.
    Attest(Box<TestAttestationCa>),
}

/// One account's conversation: its key, its account URL and the nonce to use next.
struct Session<'a> {
    ctx: &'a Ctx,
    key: AccountKey,
    kid: Option<String>,
    nonce: Option<String>,
}

struct Reply {
    location: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("reply is not JSON")
    }
}

impl Ctx {
    fn url(&self, name: &str) -> anyhow::Result<&str> {
        self.dir[name].as_str().context("directory lacks a URL")
    }

    /// A session with a new account.
    async fn account(&self) -> anyhow::Result<Session<'_>> {
        let mut s = Session {
            ctx: self,
            key: AccountKey::generate(),
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

    /// A device enrolment, as an Apple device performs it: its Secure Enclave key attested
    /// for the challenge, then a CSR with that key.
    async fn enrol(&self, serial: &str, ca: &TestAttestationCa) -> anyhow::Result<()> {
        let mut s = self.account().await?;
        let ids = json!({"identifiers": [{"type": "permanent-identifier", "value": serial}]});
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
        let device_key = rcgen::KeyPair::generate()?;
        let leaf = Leaf {
            nonce: Some(freshness_nonce(token)),
            serial: Some(serial.to_owned()),
            ..Leaf::default()
        };
        let att_obj = URL_SAFE_NO_PAD.encode(ca.attest(&device_key, &leaf)?);
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
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, serial);
        let csr = URL_SAFE_NO_PAD.encode(params.serialize_request(&device_key)?.der());
        let finalize = order["finalize"].as_str().context("no finalize URL")?;
        let order = s.post(finalize, Some(json!({"csr": csr}))).await?.json()?;
        let cert_url = order["certificate"]
            .as_str()
            .context("finalized order has no certificate")?;
        let chain = s.post(cert_url, None).await?;
        certifies(&chain.body, device_key.public_key_raw()).map(drop)
    }

    async fn flow(&self, name: &str, answers: &Http01Responder) -> anyhow::Result<()> {
        let mut s = self.account().await?;

        let ids = json!({"identifiers": [{"type": "dns", "value": name}]});
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
        s.post(
            challenge["url"].as_str().context("no challenge URL")?,
            Some(json!({})),
        )
        .await?;
        let order = s.poll(&order_url, &["pending"]).await;
        answers.forget(&token);
        let order = order?;
        if order["status"] != "ready" {
            bail!("order {order_url} is {} after validation", order["status"]);
        }

        let cert_key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&cert_key)?;
        let finalize = order["finalize"].as_str().context("no finalize URL")?;
        let csr_b64 = URL_SAFE_NO_PAD.encode(csr.der());
        let order = s
            .post(finalize, Some(json!({"csr": csr_b64})))
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
        let chain = s.post(cert_url, None).await?;
        verify(&chain.body, name, cert_key.public_key_raw())
    }
}

impl Session<'_> {
    async fn nonce(&mut self) -> anyhow::Result<String> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let resp = self.ctx.http.head(self.ctx.url("newNonce")?).send().await?;
        Ok(resp
            .headers()
            .get("replay-nonce")
            .context("newNonce gave no nonce")?
            .to_str()?
            .to_owned())
    }

    /// Signs and sends; one retry on badNonce (servers may reject nonces at will).
    async fn post(&mut self, url: &str, payload: Option<Value>) -> anyhow::Result<Reply> {
        for _ in 0..2 {
            let nonce = self.nonce().await?;
            let header = self.key.header(url, &nonce, self.kid.as_deref());
            let body = self.key.jws(&header, payload.as_ref());
            let resp = self
                .ctx
                .http
                .post(url)
                .header("content-type", "application/jose+json")
                .body(body.to_string())
                .send()
                .await?;
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            self.nonce = header("replay-nonce");
            let location = header("location");
            let body = resp.bytes().await?.to_vec();
            if status < 300 {
                return Ok(Reply { location, body });
            }
            let problem = String::from_utf8_lossy(&body).into_owned();
            if !problem.contains("badNonce") {
                bail!("{url}: HTTP {status}: {problem}");
            }
        }
        bail!("{url}: badNonce twice")
    }

    /// POST-as-GET until the status leaves `while_in`.
    async fn poll(&mut self, url: &str, while_in: &[&str]) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = self.post(url, None).await?.json()?;
            let status = body["status"].as_str().unwrap_or_default();
            if !while_in.contains(&status) {
                return Ok(body);
            }
            if Instant::now() > deadline {
                bail!("{url} stayed {status} for 30 s");
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

/// The chain's first certificate names `name` and certifies `public_key` (raw point).
fn verify(pem_chain: &[u8], name: &str, public_key: &[u8]) -> anyhow::Result<()> {
    let der = certifies(pem_chain, public_key)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).context("unparsable certificate")?;
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
