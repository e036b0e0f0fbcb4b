//! SCEP load generator: full PKCSReq enrolments against any SCEP server, each request distinct,
//! validly signed and encrypted, so the server must decrypt, verify and sign every one.
//! Only verified successes count: the reply's signature checks against the CA, its status is
//! SUCCESS, and the certificate inside decrypts with the device key and certifies that key.
//! Used by `benches/scep_vs_micromdm.sh`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use enrollca::scep::message::{Cipher, Digest, MessageType, PkiStatus};
use enrollca::scep::wire::{self, NewRequest};
use enrollca_loadgen::{Report, cpu_seconds};
use enrollca_testkit::scep::Identity;
use openssl::x509::X509;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "SCEP PKCSReq load generator")]
struct Args {
    /// SCEP endpoint, e.g. http://127.0.0.1:8080/scep
    #[arg(long)]
    url: String,
    #[arg(long)]
    challenge: String,
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Device keys to rotate through (RSA-2048 each).
    #[arg(long, default_value_t = 32)]
    identities: usize,
    /// Content cipher of the requests: aes (AES-256) or des3.
    #[arg(long, default_value = "aes", value_parser = ["aes", "des3"])]
    cipher: String,
    /// PID of the server, to report its CPU time per enrolment.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label for the result line.
    #[arg(long, default_value = "server")]
    label: String,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    latency: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let ca = fetch_ca(&http, &args.url).await?;
    let cipher = if args.cipher == "des3" {
        Cipher::Des3
    } else {
        Cipher::Aes256
    };

    let identities: Arc<Vec<Identity>> = Arc::new(
        (0..args.identities.max(1))
            .map(|_| Identity::generate().map_err(anyhow::Error::msg))
            .collect::<Result<_, _>>()?,
    );
    let requests = build_requests(&identities, &ca, &args.challenge, args.requests, cipher)?;

    let cpu_before = args.server_pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(requests.len());
    for body in requests {
        let permit = gate.clone().acquire_owned().await?;
        let (http, url) = (http.clone(), format!("{}?operation=PKIOperation", args.url));
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let resp = http
                .post(url)
                .header("content-type", "application/x-pki-message")
                .body(body)
                .send()
                .await;
            match resp {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    Reply {
                        status,
                        body,
                        latency: t.elapsed(),
                    }
                }
                Err(_) => Reply {
                    status: 0,
                    body: Vec::new(),
                    latency: t.elapsed(),
                },
            }
        }));
    }
    let mut replies = Vec::with_capacity(tasks.len());
    for t in tasks {
        replies.push(t.await?);
    }
    let wall = started.elapsed();
    let cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };

    // Verification happens after the clock stops, so it does not slow the load.
    let mut serials = HashSet::new();
    let (mut ok, mut failed, mut duplicates) = (0usize, 0usize, 0usize);
    for (i, reply) in replies.iter().enumerate() {
        match verify(reply, &ca, &identities[i % identities.len()]) {
            Some(serial) => {
                ok += 1;
                if !serials.insert(serial) {
                    duplicates += 1;
                }
            }
            None => failed += 1,
        }
    }
    let latencies: Vec<Duration> = replies.iter().map(|r| r.latency).collect();
    let report = Report {
        label: &args.label,
        concurrency: args.concurrency,
        unit: "enrolment",
        ok,
        failed,
        notes: vec![format!("{duplicates} duplicate serials")],
        wall,
        latencies,
        server_cpu: cpu,
    };
    println!("{}", report.line());
    Ok(())
}

/// GetCACert's SCEP CA, the one requests are encrypted to.
async fn fetch_ca(http: &reqwest::Client, url: &str) -> anyhow::Result<X509> {
    let resp = http
        .get(format!("{url}?operation=GetCACert"))
        .send()
        .await?;
    let body = resp.bytes().await?;
    enrollca_testkit::scep::ca_of_getcacert(&body).map_err(anyhow::Error::msg)
}

fn build_requests(
    identities: &[Identity],
    ca: &X509,
    challenge: &str,
    n: usize,
    cipher: Cipher,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let run = rand::random::<u32>();
    (0..n)
        .map(|i| {
            let id = &identities[i % identities.len()];
            let csr = id
                .csr(&format!("load-{run:08x}-{i}"), Some(challenge))
                .map_err(anyhow::Error::msg)?;
            let transaction_id = format!("{run:08x}{i:08}");
            let req = NewRequest {
                message_type: MessageType::PkcsReq,
                transaction_id: &transaction_id,
                digest: Digest::Sha256,
                cipher,
                ca,
                content: &csr,
            };
            Ok(wire::request(&id.signer(), &req)?.0)
        })
        .collect()
}

/// The serial of the verified certificate, or None.
fn verify(reply: &Reply, ca: &X509, id: &Identity) -> Option<Vec<u8>> {
    if reply.status != 200 {
        return None;
    }
    let msg = wire::open(&reply.body).ok()?;
    if msg.pki_status != Some(PkiStatus::Success)
        || msg.signer.to_der().ok()? != ca.to_der().ok()?
    {
        return None;
    }
    let (inner, _) = wire::decrypt(&msg.envelope, &id.key).ok()?;
    let p7 = openssl::pkcs7::Pkcs7::from_der(&inner).ok()?;
    let certs = p7.signed()?.certificates()?;
    let cert = certs.iter().next()?;
    if !cert.public_key().ok()?.public_eq(&id.key) {
        return None;
    }
    Some(cert.serial_number().to_bn().ok()?.to_vec())
}
