//! Certificates for the CA hierarchy itself (root, issuing CAs) and the listener's TLS
//! certificate. These are made by operators at init and rotation, not by devices, so they
//! are not recorded as issued certificates.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::keys::{CaKey, KeySpec};
use super::{CaError, Serial};

const DAY: Duration = Duration::from_secs(86_400);
pub const ROOT_LIFETIME: Duration = Duration::from_secs(20 * 365 * 86_400);
pub const ISSUER_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
pub const TLS_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// A freshly made certificate and its key.
pub struct Made {
    pub cert_der: Vec<u8>,
    pub key: CaKey,
}

/// A self-signed root.
pub fn root(spec: KeySpec, common_name: &str, organization: &str) -> Result<Made, CaError> {
    let key = CaKey::generate(spec)?;
    let mut p = base(common_name, organization, None, ROOT_LIFETIME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key)?;
    Ok(Made {
        cert_der: cert.der().to_vec(),
        key,
    })
}

/// An issuing CA under `parent`. RSA issuers also decrypt SCEP envelopes and sign CMS
/// replies, so they carry keyEncipherment and digitalSignature as SCEP clients require.
pub fn issuing_ca(
    parent_cert_der: &[u8],
    parent_key: &CaKey,
    spec: KeySpec,
    common_name: &str,
    organization: &str,
) -> Result<Made, CaError> {
    let key = CaKey::generate(spec)?;
    let parent = rcgen::Issuer::from_ca_cert_der(&parent_cert_der.into(), parent_key)?;
    let mut p = base(
        common_name,
        organization,
        Some(parent_not_after(parent_cert_der)?),
        ISSUER_LIFETIME,
    );
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    if spec.family() == super::KeyFamily::Rsa {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &parent)?;
    Ok(Made {
        cert_der: cert.der().to_vec(),
        key,
    })
}

/// A TLS server certificate for `dns_names` and `ips` (P-256 key).
pub fn tls_server(
    parent_cert_der: &[u8],
    parent_key: &CaKey,
    dns_names: &[&str],
    ips: &[IpAddr],
) -> Result<Made, CaError> {
    let key = CaKey::generate(KeySpec::EcP256)?;
    let parent = rcgen::Issuer::from_ca_cert_der(&parent_cert_der.into(), parent_key)?;
    let cn = dns_names.first().copied().unwrap_or("enrollca");
    let mut p = base(
        cn,
        "enrollca",
        Some(parent_not_after(parent_cert_der)?),
        TLS_LIFETIME,
    );
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    for name in dns_names {
        p.subject_alt_names
            .push(SanType::DnsName((*name).try_into()?));
    }
    p.subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let cert = p.signed_by(&key, &parent)?;
    Ok(Made {
        cert_der: cert.der().to_vec(),
        key,
    })
}

fn base(
    common_name: &str,
    organization: &str,
    cap: Option<OffsetDateTime>,
    lifetime: Duration,
) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::default();
    p.serial_number = Some(SerialNumber::from_slice(Serial::random().as_bytes()));
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.distinguished_name
        .push(DnType::OrganizationName, organization);
    p.not_before = now - DAY;
    let not_after = now + lifetime;
    p.not_after = cap.map_or(not_after, |cap| not_after.min(cap));
    p
}

fn parent_not_after(der: &[u8]) -> Result<OffsetDateTime, CaError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| CaError::BadCaCert(e.to_string()))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// Hex SHA-256 fingerprint with colons, as operators compare them.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
