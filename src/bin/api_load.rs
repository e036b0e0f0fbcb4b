//! Load generator for what the MDM asks most: `POST /api/v1/validate` (is this client
//! certificate good?) and OCSP without a nonce, over the certificates `enrollca-seed` wrote.
//! A request counts only when the answer says `good`. Used by `benches/mdm_scale.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use enrollca::loadgen::{Report, cpu_seconds};
use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspRequest, OcspResponse, OcspResponseStatus};
use openssl::x509::X509;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "validate / OCSP load generator")]
struct Args {
    /// Base URL of the plain HTTP listener, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// `validate` or `ocsp`.
    #[arg(long, value_parser = ["validate", "ocsp"])]
    mode: String,
    /// The certificates to ask about (PEM) and their issuer (`<file>.issuer.pem` beside it).
    #[arg(long)]
    certs: std::path::PathBuf,
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long)]
    server_pid: Option<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = std::env::var("ENROLLCA_TOKEN").context("set ENROLLCA_TOKEN")?;
    let pem = std::fs::read(&args.certs)?;
    let certs = X509::stack_from_pem(&pem)?;
    let issuer = X509::from_pem(&std::fs::read(args.certs.with_extension("issuer.pem"))?)?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificates in {}",
        args.certs.display()
    );
    // Bodies are built up front: the run measures the server.
    let bodies: Vec<Vec<u8>> = certs
        .iter()
        .map(|c| -> anyhow::Result<Vec<u8>> {
            Ok(match args.mode.as_str() {
                "validate" => serde_json::to_vec(&serde_json::json!({
                    "certificate": String::from_utf8(c.to_pem()?)?
                }))?,
                _ => {
                    let mut req = OcspRequest::new()?;
                    req.add_id(OcspCertId::from_cert(MessageDigest::sha1(), c, &issuer)?)?;
                    req.to_der()?
                }
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let (url, content_type) = match args.mode.as_str() {
        "validate" => (format!("{}/api/v1/validate", args.url), "application/json"),
        _ => (format!("{}/ocsp", args.url), "application/ocsp-request"),
    };
    let ocsp = args.mode == "ocsp";
    let bodies = Arc::new(bodies);
    let (certs, issuer) = (Arc::new(certs), Arc::new(issuer));

    let cpu_before = args.server_pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let permit = gate.clone().acquire_owned().await?;
        let (http, url, token, bodies) = (http.clone(), url.clone(), token.clone(), bodies.clone());
        let (certs, issuer) = (certs.clone(), issuer.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let resp = http
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", content_type)
                .body(bodies[i % bodies.len()].clone())
                .send()
                .await;
            let good = match resp {
                Ok(r) if r.status() == 200 => match r.bytes().await {
                    Ok(b) if ocsp => ocsp_good(&b, &certs[i % certs.len()], &issuer),
                    Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                        .is_ok_and(|v| v["status"] == "good"),
                    Err(_) => false,
                },
                _ => false,
            };
            (good, t.elapsed())
        }));
    }
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::with_capacity(tasks.len()));
    for t in tasks {
        let (good, latency) = t.await?;
        latencies.push(latency);
        if good {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    let wall = started.elapsed();
    let server_cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    let report = Report {
        label: &args.mode,
        concurrency: args.concurrency,
        unit: "answer",
        ok,
        failed,
        notes: Vec::new(),
        wall,
        latencies,
        server_cpu,
    };
    println!("{}", report.line());
    Ok(())
}

/// A successful OCSP response that says `good` for `cert`. Its signature is checked by
/// openssl in the tests; here only the answer counts.
fn ocsp_good(der: &[u8], cert: &X509, issuer: &X509) -> bool {
    let Ok(resp) = OcspResponse::from_der(der) else {
        return false;
    };
    if resp.status() != OcspResponseStatus::SUCCESSFUL {
        return false;
    }
    let (Ok(basic), Ok(id)) = (
        resp.basic(),
        OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer),
    ) else {
        return false;
    };
    basic
        .find_status(&id)
        .is_some_and(|s| s.status == OcspCertStatus::GOOD)
}
