//! Issuance throughput of `Ca::issue` (sign + durable sled write) for the RSA and ECDSA
//! issuers, beside `openssl speed` for the same key types in the same run, on all cores.
//!
//! `cargo bench --bench issue` (ENROLLCA_BENCH_SECS sets the duration per case, default 5).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use enrollca::app::open_ca;
use enrollca::ca::{IssueRequest, KeyFamily, KeySpec};
use enrollca::config::Config;
use enrollca::csr::Csr;
use enrollca::datadir::DataDir;
use enrollca::init::{InitOptions, Source, init};
use enrollca::metrics::Metrics;
use enrollca::policy::Template;
use enrollca::store::{Protocol, SledStore, Store};

fn main() {
    let secs: u64 = std::env::var("ENROLLCA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ours = runtime.block_on(measure(Duration::from_secs(secs)));
    let speed = openssl_speed(secs, cores);

    println!("\nissuance on {cores} cores, {secs} s per case");
    println!(
        "{:<28} {:>14} {:>22} {:>8}",
        "issuer", "ca::issue /s", "openssl speed sign/s", "ratio"
    );
    for (label, rate, openssl) in [
        ("RSA-2048 (sha256WithRSA)", ours.0, speed.0),
        ("ECDSA P-256 (ecdsa-sha256)", ours.1, speed.1),
    ] {
        println!(
            "{label:<28} {rate:>14.0} {openssl:>22.0} {:>8.2}",
            rate / openssl
        );
    }
}

async fn measure(duration: Duration) -> (f64, f64) {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path().join("data"));
    let opts = InitOptions {
        root: Source::Generate(KeySpec::EcP256),
        rsa_issuer: Source::Generate(KeySpec::Rsa2048),
        ecdsa_issuer: Source::Generate(KeySpec::EcP256),
        ..InitOptions::default()
    };
    init(&data, opts).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&data.db()).unwrap());
    let ca = Arc::new(
        open_ca(
            &data,
            &Config::default(),
            &enrollca::ca::KeyAccess::default(),
            enrollca::store::Backing::system(store),
            Arc::new(Metrics::default()),
        )
        .await
        .unwrap(),
    );
    let template = Arc::new(Template::device(
        Duration::from_secs(86_400 * 365),
        Duration::from_secs(300),
    ));
    let key = rcgen::KeyPair::generate().unwrap();
    let req = rcgen::CertificateParams::new(vec!["device.example".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let csr = Csr::from_der(req.der()).unwrap();

    let mut rates = Vec::new();
    for family in [KeyFamily::Rsa, KeyFamily::Ecdsa] {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        // Enough requests in flight to keep every core signing while others wait on a flush.
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (ca, template, csr, done, stop) = (
                    ca.clone(),
                    template.clone(),
                    csr.clone(),
                    done.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let req = IssueRequest::new(
                            csr.clone(),
                            template.clone(),
                            family,
                            Protocol::Admin,
                        );
                        ca.issue(req).await.expect("issuance failed");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        rates.push(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64());
    }
    (rates[0], rates[1])
}

/// `openssl speed -multi CORES rsa2048 ecdsap256`: signatures per second on all cores.
fn openssl_speed(secs: u64, cores: usize) -> (f64, f64) {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            &secs.to_string(),
            "-multi",
            &cores.to_string(),
            "rsa2048",
            "ecdsap256",
        ])
        .output()
        .expect("running openssl speed");
    let text = String::from_utf8_lossy(&out.stdout);
    // Summary lines: "rsa 2048 bits 0.000404s 0.000012s 2475.1 83640.3" and
    // "256 bits ecdsa (nistp256) 0.0000s 0.0001s 41213.0 13329.3": sign/s is the
    // second-to-last column.
    let sign_rate = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols[cols.len() - 2].parse().unwrap()
    };
    (
        sign_rate("rsa 2048 bits"),
        sign_rate("256 bits ecdsa (nistp256)"),
    )
}
