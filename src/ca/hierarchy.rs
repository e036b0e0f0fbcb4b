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

/// A self-signed root, valid from a day before `now`.
pub fn root(
    spec: KeySpec,
    common_name: &str,
    organization: &str,
    now: OffsetDateTime,
) -> Result<Made, CaError> {
    let key = CaKey::generate(spec)?;
    let mut p = base(common_name, organization, None, ROOT_LIFETIME, now);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key)?;
    Ok(Made {
        cert_der: cert.der().to_vec(),
        key,
    })
}

/// An issuing CA for `key` (freshly generated, or held in a token) under `parent`. RSA
/// issuers also decrypt SCEP envelopes and sign CMS replies, so they carry keyEncipherment
/// and digitalSignature as SCEP clients require.
pub fn issuing_ca(
    parent_cert_der: &[u8],
    parent_key: &CaKey,
    key: CaKey,
    common_name: &str,
    organization: &str,
    now: OffsetDateTime,
) -> Result<Made, CaError> {
    let spec = key.spec();
    let parent = rcgen::Issuer::from_ca_cert_der(&parent_cert_der.into(), parent_key)?;
    let mut p = base(
        common_name,
        organization,
        Some(parent_not_after(parent_cert_der)?),
        ISSUER_LIFETIME,
        now,
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

/// A cross certificate: `subject`'s name and key, certified by `issuer` (a root), so that
/// clients trusting only `issuer` reach `subject` (root rotation). Built with OpenSSL so the
/// subject name is copied byte for byte, whoever made that root.
pub fn cross(
    subject_der: &[u8],
    issuer_der: &[u8],
    issuer_key: &CaKey,
    now: OffsetDateTime,
) -> Result<Vec<u8>, CaError> {
    use openssl::asn1::{Asn1Integer, Asn1Time};
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::x509::X509;
    use openssl::x509::extension::{
        AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
    };
    let ssl = |e: openssl::error::ErrorStack| CaError::BadCaCert(e.to_string());
    let subject = X509::from_der(subject_der).map_err(ssl)?;
    let issuer = X509::from_der(issuer_der).map_err(ssl)?;
    let mut b = X509::builder().map_err(ssl)?;
    b.set_version(2).map_err(ssl)?;
    let serial = BigNum::from_slice(Serial::random().as_bytes()).map_err(ssl)?;
    let serial = Asn1Integer::from_bn(&serial).map_err(ssl)?;
    b.set_serial_number(&serial).map_err(ssl)?;
    b.set_subject_name(subject.subject_name()).map_err(ssl)?;
    b.set_issuer_name(issuer.subject_name()).map_err(ssl)?;
    let key = subject.public_key().map_err(ssl)?;
    b.set_pubkey(&key).map_err(ssl)?;
    let not_after = parent_not_after(subject_der)?.min(parent_not_after(issuer_der)?);
    let not_before = Asn1Time::from_unix((now - DAY).unix_timestamp()).map_err(ssl)?;
    let not_after = Asn1Time::from_unix(not_after.unix_timestamp()).map_err(ssl)?;
    b.set_not_before(&not_before).map_err(ssl)?;
    b.set_not_after(&not_after).map_err(ssl)?;
    b.append_extension(
        BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .map_err(ssl)?,
    )
    .map_err(ssl)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .map_err(ssl)?,
    )
    .map_err(ssl)?;
    // The subject's own key identifier, as its certificates' AKIs name it (a recomputed one
    // could use another hash and break path building).
    let ski = match subject.subject_key_id() {
        Some(id) => {
            let hex: Vec<String> = id.as_slice().iter().map(|b| format!("{b:02X}")).collect();
            #[allow(deprecated)]
            openssl::x509::X509Extension::new_nid(
                None,
                None,
                openssl::nid::Nid::SUBJECT_KEY_IDENTIFIER,
                &hex.join(":"),
            )
            .map_err(ssl)?
        }
        None => SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(Some(&issuer), None))
            .map_err(ssl)?,
    };
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&issuer), None))
        .map_err(ssl)?;
    b.append_extension(ski).map_err(ssl)?;
    b.append_extension(aki).map_err(ssl)?;
    let digest = match issuer_key.spec() {
        KeySpec::EcP384 => MessageDigest::sha384(),
        _ => MessageDigest::sha256(),
    };
    b.sign(issuer_key.pkey()?, digest).map_err(ssl)?;
    b.build().to_der().map_err(ssl)
}

/// A TLS server certificate for `dns_names` and `ips` (P-256 key).
pub fn tls_server(
    parent_cert_der: &[u8],
    parent_key: &CaKey,
    dns_names: &[&str],
    ips: &[IpAddr],
    now: OffsetDateTime,
) -> Result<Made, CaError> {
    let key = CaKey::generate(KeySpec::EcP256)?;
    let parent = rcgen::Issuer::from_ca_cert_der(&parent_cert_der.into(), parent_key)?;
    let cn = dns_names.first().copied().unwrap_or("enrollca");
    let mut p = base(
        cn,
        "enrollca",
        Some(parent_not_after(parent_cert_der)?),
        TLS_LIFETIME,
        now,
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
    now: OffsetDateTime,
) -> CertificateParams {
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

/// Checks that `ca_der`, with the `intermediates` above it in order, leads to `root_der`:
/// each is a CA certificate signed by the next, the last signed by the root. Why not, if not.
pub fn check_path(ca_der: &[u8], intermediates: &[Vec<u8>], root_der: &[u8]) -> Result<(), String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
        X509Certificate::from_der(der)
            .map(|(_, c)| c)
            .map_err(|e| format!("unparsable certificate: {e}"))
    }
    let path: Vec<&[u8]> = std::iter::once(ca_der)
        .chain(intermediates.iter().map(Vec::as_slice))
        .collect();
    let root = parse(root_der)?;
    for (i, der) in path.iter().enumerate() {
        let cert = parse(der)?;
        let name = if i == 0 {
            "the issuing CA certificate".to_owned()
        } else {
            format!("intermediate {}", cert.subject())
        };
        if !cert.is_ca() {
            return Err(format!("{name} is not a CA"));
        }
        let (parent, what) = match path.get(i + 1) {
            Some(next) => (parse(next)?, "the next certificate of its chain"),
            None => (root.clone(), "the root"),
        };
        cert.verify_signature(Some(parent.public_key()))
            .map_err(|_| format!("{name} was not signed by {what}"))?;
    }
    Ok(())
}
