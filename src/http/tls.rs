//! The HTTPS listener's certificate: configured files, or one generated under our own root
//! for localhost and loopback (renewed at start-up when it nears expiry).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::settings::Tls;
use crate::ca::hierarchy;
use crate::ca::{CaKey, Passphrase};
use crate::datadir::DataDir;
use crate::encoding::to_pem;

const RENEW_BEFORE: time::Duration = time::Duration::days(30);

pub fn server_config(
    tls: &Tls,
    dir: &DataDir,
    pass: Option<&Passphrase>,
    issuer_fallback: (&[u8], &CaKey),
) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_path, key_path) = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            ensure_generated(dir, pass, issuer_fallback)?;
            (dir.tls_cert(), dir.tls_key())
        }
    };
    let certs = read_certs(&cert_path)?;
    let key = rustls_pemfile::private_key(
        &mut &std::fs::read(&key_path)
            .with_context(|| format!("tls.key {}", key_path.display()))?[..],
    )
    .with_context(|| format!("tls.key {}: not PEM", key_path.display()))?
    .with_context(|| format!("tls.key {}: no private key", key_path.display()))?;
    build(certs, key)
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("tls.cert {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls.cert {}: not PEM", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls.cert {}: no certificate",
        path.display()
    );
    Ok(certs)
}

/// Issues the loopback certificate with the root key when we hold it, else with the ECDSA
/// issuer (`issuer_fallback`), so a data directory with an offline root still serves HTTPS.
fn ensure_generated(
    dir: &DataDir,
    pass: Option<&Passphrase>,
    issuer_fallback: (&[u8], &CaKey),
) -> anyhow::Result<()> {
    if let Ok(certs) = read_certs(&dir.tls_cert())
        && let Ok((_, cert)) = X509Certificate::from_der(&certs[0])
        && cert.validity().not_after.to_datetime() - OffsetDateTime::now_utc() > RENEW_BEFORE
        && dir.tls_key().is_file()
    {
        return Ok(());
    }
    let root_key = if dir.root_key().is_file() {
        Some(CaKey::load(&dir.root_key(), pass)?)
    } else {
        None
    };
    let roots = dir.read_roots()?;
    let (parent_der, parent_key, chain_extra): (&[u8], &CaKey, Option<&[u8]>) = match &root_key {
        Some(k) => (&roots[0], k, None),
        None => (
            issuer_fallback.0,
            issuer_fallback.1,
            Some(issuer_fallback.0),
        ),
    };
    let ips = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let made = hierarchy::tls_server(
        parent_der,
        parent_key,
        &["localhost"],
        &ips,
        OffsetDateTime::now_utc(),
    )?;
    let mut pem = to_pem("CERTIFICATE", &made.cert_der);
    if let Some(extra) = chain_extra {
        pem.push_str(&to_pem("CERTIFICATE", extra));
    }
    for path in [dir.tls_cert(), dir.tls_key()] {
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    made.key.save(&dir.tls_key(), None)?;
    crate::durable::write(&dir.tls_cert(), pem.as_bytes(), 0o644)?;
    Ok(())
}
