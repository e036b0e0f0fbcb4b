//! Fills a data directory's store with certificates for the scale benchmark
//! (`benches/mdm_scale.sh`): COUNT real certificates from the ECDSA issuer, through
//! `Ca::issue` like any issuance, the first REVOKED of them revoked; writes SAMPLES good
//! certificates (PEM, one per line-separated block) for the load generator. Run it while no
//! server uses the data directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use enrollca::app::open_ca;
use enrollca::ca::passphrase;
use enrollca::ca::{IssueRequest, KeyAccess, KeyFamily};
use enrollca::csr::Csr;
use enrollca::datadir::DataDir;
use enrollca::encoding::to_pem;
use enrollca::metrics::Metrics;
use enrollca::policy::Template;
use enrollca::revocation::RevocationReason;
use enrollca::store::{Backing, DeviceId, Protocol, SledStore, Store};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "Seed a data directory with certificates for the scale benchmark")]
struct Args {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    count: usize,
    #[arg(long, default_value_t = 100_000)]
    revoked: usize,
    /// Where to write good certificates for the load generator.
    #[arg(long)]
    samples: PathBuf,
    #[arg(long, default_value_t = 1000)]
    sample_count: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.revoked + args.sample_count <= args.count,
        "too few certificates"
    );
    let dir = DataDir::new(&args.data);
    let config = enrollca::admin::dir_config(&dir)?;
    let keys = KeyAccess {
        passphrase: passphrase(config.ca.passphrase_file.as_deref())?,
        pkcs11: None,
    };
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.db()).context("opening the store")?);
    let ca = Arc::new(
        open_ca(
            &dir,
            &config,
            &keys,
            Backing::system(store.clone()),
            Arc::new(Metrics::default()),
        )
        .await?,
    );
    let template = Arc::new(Template::device(
        config.issuance.lifetime,
        config.issuance.backdate,
    ));
    // A few keys serve every certificate: what is measured is the store, not key generation.
    let csrs: Arc<Vec<Csr>> = Arc::new(
        (0..16)
            .map(|i| {
                let key = rcgen::KeyPair::generate()?;
                let params = rcgen::CertificateParams::new(vec![format!("seed-{i}.example")])?;
                Ok(Csr::from_der(params.serialize_request(&key)?.der())?)
            })
            .collect::<anyhow::Result<_>>()?,
    );

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let permit = gate.clone().acquire_owned().await?;
        let (ca, template, csrs) = (ca.clone(), template.clone(), csrs.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let issued = ca
                .issue(IssueRequest {
                    device: DeviceId::try_from(format!("seed-device-{i}")).ok(),
                    ..IssueRequest::new(
                        csrs[i % csrs.len()].clone(),
                        template,
                        KeyFamily::Ecdsa,
                        Protocol::Admin,
                    )
                })
                .await?;
            Ok::<_, anyhow::Error>(issued)
        }));
        if i % 100_000 == 99_999 {
            eprintln!("{} issued in {:.0?}", i + 1, started.elapsed());
        }
    }
    let mut issued = Vec::with_capacity(args.count);
    for t in tasks {
        issued.push(t.await??);
    }
    eprintln!("{} certificates in {:.1?}", issued.len(), started.elapsed());

    let started = Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let mut revocations = Vec::with_capacity(args.revoked);
    for rec in issued.iter().take(args.revoked) {
        let permit = gate.clone().acquire_owned().await?;
        let (ca, serial) = (ca.clone(), rec.record.serial.clone());
        revocations.push(tokio::spawn(async move {
            let _permit = permit;
            ca.revoke(&serial, RevocationReason::Superseded, now).await
        }));
    }
    for r in revocations {
        r.await??;
    }
    eprintln!("{} revoked in {:.1?}", args.revoked, started.elapsed());

    let samples: String = issued
        .iter()
        .skip(args.revoked)
        .take(args.sample_count)
        .map(|i| to_pem("CERTIFICATE", &i.record.der))
        .collect();
    std::fs::write(&args.samples, samples)?;
    let issuer = issued.first().context("nothing issued")?.chain[0].clone();
    std::fs::write(
        args.samples.with_extension("issuer.pem"),
        to_pem("CERTIFICATE", &issuer),
    )?;
    store.flush().await?;
    Ok(())
}
