//! Load generator for what the MDM asks most: `POST /api/v1/validate` (is this client
//! certificate good?) and OCSP without a nonce, over the certificates `enrollca-seed` wrote.
//! A request counts only when the answer says `good`. Used by `benches/mdm_scale.sh`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use enrollca_loadgen::{Report, cpu_seconds};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspRequest, OcspResponse, OcspResponseStatus};
use openssl::x509::X509;

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
    let bodies: Vec<bytes::Bytes> = certs
        .iter()
        .map(|c| -> anyhow::Result<bytes::Bytes> {
            Ok(match args.mode.as_str() {
                "validate" => serde_json::to_vec(&serde_json::json!({
                    "certificate": String::from_utf8(c.to_pem()?)?
                }))?,
                _ => {
                    let mut req = OcspRequest::new()?;
                    req.add_id(OcspCertId::from_cert(MessageDigest::sha1(), c, &issuer)?)?;
                    req.to_der()?
                }
            }
            .into())
        })
        .collect::<anyhow::Result<_>>()?;
    let base: hyper::Uri = args.url.parse()?;
    let authority = base.authority().context("--url needs host:port")?.clone();
    let (path, content_type) = match args.mode.as_str() {
        "validate" => ("/api/v1/validate", "application/json"),
        _ => ("/ocsp", "application/ocsp-request"),
    };
    let auth = format!("Bearer {token}");
    let ocsp = args.mode == "ocsp";
    let bodies = Arc::new(bodies);
    let (certs, issuer) = (Arc::new(certs), Arc::new(issuer));

    let cpu_before = args.server_pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    // One worker per connection, each sending its next request when the last is answered:
    // the generator spends its CPU on requests, not on tasks and a shared queue.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (authority, auth, bodies) = (authority.clone(), auth.clone(), bodies.clone());
            let (certs, issuer, next) = (certs.clone(), issuer.clone(), next.clone());
            let requests = args.requests;
            tokio::spawn(async move {
                // A keep-alive HTTP/1.1 connection of its own, as an MDM's client keeps one.
                let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
                stream.set_nodelay(true)?;
                let (mut conn, driver) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(driver);
                let (mut ok, mut failed, mut latencies) = (0usize, 0usize, Vec::new());
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let t = Instant::now();
                    let req = hyper::Request::post(path)
                        .header(hyper::header::HOST, authority.as_str())
                        .header(hyper::header::AUTHORIZATION, auth.as_str())
                        .header(hyper::header::CONTENT_TYPE, content_type)
                        .body(Full::new(bodies[i % bodies.len()].clone()))?;
                    let good = match conn.send_request(req).await {
                        Ok(r) if r.status() == 200 => match r.into_body().collect().await {
                            Ok(b) if ocsp => {
                                ocsp_good(&b.to_bytes(), &certs[i % certs.len()], &issuer)
                            }
                            Ok(b) => serde_json::from_slice::<serde_json::Value>(&b.to_bytes())
                                .is_ok_and(|v| v["status"] == "good"),
                            Err(_) => false,
                        },
                        Ok(_) => false,
                        // The connection is gone: nothing more can be sent on it.
                        Err(e) => return Err(e.into()),
                    };
                    latencies.push(t.elapsed());
                    if good {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                anyhow::Ok((ok, failed, latencies))
            })
        })
        .collect();
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::with_capacity(args.requests));
    for w in workers {
        let (o, f, l) = w.await??;
        ok += o;
        failed += f;
        latencies.extend(l);
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
