//! One issuing CA: certificate, key, and what every certificate it signs points back to.

use std::fmt;
use std::path::Path;

use der::Encode;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::CaError;
use super::keys::{CaKey, KeyAccess};
use crate::model::{IssuerId, KeyFamily};
use crate::store::{IssuerRecord, IssuerState};

/// An issuing CA loaded for use. Whether it may mint is decided by the issuer set, which only
/// hands out the active one as an [`super::ActiveIssuer`].
pub struct Issuer {
    id: IssuerId,
    state: IssuerState,
    cert_der: Vec<u8>,
    /// The CA certificates between this one and its root, nearest first.
    intermediates: Vec<Vec<u8>>,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    signer: rcgen::Issuer<'static, CaKey>,
    /// Extensions every certificate from this issuer carries, encoded once.
    pub(super) crl_url: String,
    pub(super) aia: rcgen::CustomExtension,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Builds an issuer from its certificate and key, checking that they belong together.
    pub fn new(
        cert_der: Vec<u8>,
        key: CaKey,
        state: IssuerState,
        public_url: &str,
    ) -> Result<Self, CaError> {
        let (_, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| CaError::BadCaCert(format!("unparsable: {e}")))?;
        if cert.public_key().raw != key.spki_der().as_slice() {
            return Err(CaError::BadCaCert(
                "the key does not match the certificate".into(),
            ));
        }
        if !cert.is_ca() {
            return Err(CaError::BadCaCert(
                "not a CA certificate (basicConstraints)".into(),
            ));
        }
        let subject = cert.subject().to_string();
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        let id = IssuerId::for_spki(cert.public_key().raw);
        let signer = rcgen::Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(|e| CaError::BadCaCert(e.to_string()))?;
        let crl_url = format!("{public_url}/crl/{id}.crl");
        let aia = aia_extension(
            &format!("{public_url}/ocsp"),
            &format!("{public_url}/ca/{id}.crt"),
        )?;
        Ok(Self {
            id,
            state,
            cert_der,
            intermediates: Vec::new(),
            subject,
            not_before,
            not_after,
            signer,
            crl_url,
            aia,
        })
    }

    /// Loads the issuer a store record describes (key file relative to `data_dir`, or a
    /// `pkcs11:` URI).
    pub fn load(
        record: &IssuerRecord,
        data_dir: &Path,
        keys: &KeyAccess,
        public_url: &str,
    ) -> Result<Self, CaError> {
        let key = keys.load(&record.key_file, data_dir)?;
        let mut issuer = Self::new(record.cert_der.clone(), key, record.state, public_url)?;
        issuer.intermediates = record.intermediates.iter().map(|c| c.to_vec()).collect();
        if issuer.id != record.id || issuer.family() != record.family {
            return Err(CaError::BadCaCert(format!(
                "issuer record {} does not describe its certificate",
                record.id
            )));
        }
        Ok(issuer)
    }

    pub fn id(&self) -> &IssuerId {
        &self.id
    }

    pub fn state(&self) -> IssuerState {
        self.state
    }

    pub fn family(&self) -> KeyFamily {
        self.key().family()
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// This CA's certificate, then the intermediates above it: what follows a certificate it
    /// issued in a chain (the root, and any cross certificate, come from `Trust::above`).
    pub fn chain(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.cert_der.as_slice())
            .chain(self.intermediates.iter().map(Vec::as_slice))
    }

    /// The top of `chain`: the certificate a root signed.
    pub fn top(&self) -> &[u8] {
        self.intermediates.last().unwrap_or(&self.cert_der)
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    pub fn key(&self) -> &CaKey {
        self.signer.key()
    }

    pub(super) fn signer(&self) -> &rcgen::Issuer<'static, CaKey> {
        &self.signer
    }

    /// Signs a CRL for this issuer's certificates (any state: a retiring issuer still must).
    /// CPU work: call it off the reactor.
    pub fn sign_crl(
        &self,
        params: &rcgen::CertificateRevocationListParams,
    ) -> Result<Vec<u8>, CaError> {
        Ok(params.signed_by(&self.signer)?.der().to_vec())
    }
}

/// Authority Information Access (RFC 5280 §4.2.2.1): where to ask OCSP and fetch the issuer.
fn aia_extension(ocsp_url: &str, ca_issuers_url: &str) -> Result<rcgen::CustomExtension, CaError> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};

    let uri = |url: &str| {
        der::asn1::Ia5String::new(url)
            .map(GeneralName::UniformResourceIdentifier)
            .map_err(|e| CaError::BadUrl(format!("{url}: {e}")))
    };
    let aia = AuthorityInfoAccessSyntax(vec![
        AccessDescription {
            access_method: const_oid::db::rfc5280::ID_AD_OCSP,
            access_location: uri(ocsp_url)?,
        },
        AccessDescription {
            access_method: const_oid::db::rfc5280::ID_AD_CA_ISSUERS,
            access_location: uri(ca_issuers_url)?,
        },
    ]);
    let content = aia.to_der().map_err(|e| CaError::BadUrl(e.to_string()))?;
    Ok(rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        content,
    ))
}
