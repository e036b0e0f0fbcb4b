//! `Ca::issue` under load, in-process: 10,000 concurrent issuances.

use std::collections::HashSet;
use std::sync::Arc;

use enrollca::app::open_ca;
use enrollca::ca::{Ca, IssueRequest, KeyFamily, KeySpec, Serial};
use enrollca::config::Config;
use enrollca::csr::Csr;
use enrollca::datadir::DataDir;
use enrollca::init::{InitOptions, Source, init};
use enrollca::metrics::Metrics;
use enrollca::policy::Template;
use enrollca::store::{CertQuery, Protocol, SledStore, Store};
use x509_parser::prelude::{FromDer, X509Certificate};

async fn ca_in(dir: &std::path::Path) -> (Arc<Ca>, Arc<dyn Store>) {
    let data = DataDir::new(dir.join("data"));
    let opts = InitOptions {
        root: Source::Generate(KeySpec::EcP256),
        ..InitOptions::default()
    };
    init(&data, opts).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&data.db()).unwrap());
    let ca = open_ca(
        &data,
        &Config::default(),
        &enrollca::ca::KeyAccess::default(),
        enrollca::store::Backing::system(store.clone()),
        Arc::new(Metrics::default()),
    )
    .await
    .unwrap();
    (Arc::new(ca), store)
}

fn csrs(n: usize) -> Vec<Csr> {
    (0..n)
        .map(|i| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params =
                rcgen::CertificateParams::new(vec![format!("device-{i}.example")]).unwrap();
            let der = params.serialize_request(&key).unwrap();
            Csr::from_der(der.der()).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_issuances_get_distinct_durable_serials() {
    const N: usize = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let (ca, store) = ca_in(tmp.path()).await;
    let template = Arc::new(Template::device(
        std::time::Duration::from_secs(86_400),
        std::time::Duration::ZERO,
    ));
    let csrs = Arc::new(csrs(16));

    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (ca, template, csrs) = (ca.clone(), template.clone(), csrs.clone());
            tokio::spawn(async move {
                let family = if i % 4 == 0 {
                    KeyFamily::Rsa
                } else {
                    KeyFamily::Ecdsa
                };
                let req = IssueRequest {
                    device: Some(format!("device-{}", i % 100).parse().unwrap()),
                    ..IssueRequest::new(
                        csrs[i % csrs.len()].clone(),
                        template,
                        family,
                        Protocol::Admin,
                    )
                };
                ca.issue(req).await.unwrap().record
            })
        })
        .collect();
    let mut serials = HashSet::new();
    for t in tasks {
        let rec = t.await.unwrap();
        // The DER says the serial the record says.
        let (_, cert) = X509Certificate::from_der(&rec.der).unwrap();
        assert_eq!(Serial::from_bytes(cert.raw_serial()).unwrap(), rec.serial);
        assert!(rec.serial.as_bytes().len() * 8 >= 64);
        assert!(serials.insert(rec.serial), "duplicate serial");
    }
    assert_eq!(serials.len(), N);

    for serial in &serials {
        assert!(
            store.certificate(serial).await.unwrap().is_some(),
            "{serial} not readable"
        );
    }
    let mut listed = 0;
    let mut after = None;
    loop {
        let page = store
            .certificates(CertQuery {
                after,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        listed += page.items.len();
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(listed, N);
    let mut seq = 0;
    loop {
        let events = store.events(seq, 1000).await.unwrap();
        if events.is_empty() {
            break;
        }
        for e in events {
            assert_eq!(e.seq, seq + 1, "gap in the event feed");
            seq = e.seq;
        }
    }
    assert_eq!(seq as usize, N);
}

#[tokio::test]
async fn validity_is_clamped_to_the_issuer() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, _) = ca_in(tmp.path()).await;
    // Longer than the issuing CA lives (10 years).
    let template = Arc::new(Template::device(
        std::time::Duration::from_secs(50 * 365 * 86_400),
        std::time::Duration::from_secs(300),
    ));
    let issued = ca
        .issue(IssueRequest::new(
            csrs(1).remove(0),
            template,
            KeyFamily::Ecdsa,
            Protocol::Admin,
        ))
        .await
        .unwrap();
    let issuers = ca.issuers();
    let issuer = issuers.active(KeyFamily::Ecdsa).unwrap();
    assert_eq!(issued.record.not_after, issuer.not_after());
    let (_, cert) = X509Certificate::from_der(&issued.record.der).unwrap();
    assert_eq!(cert.validity().not_after.to_datetime(), issuer.not_after());
    assert_eq!(
        cert.validity().not_before.to_datetime(),
        issued.record.not_before
    );
}
