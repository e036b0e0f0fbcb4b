//! `Ca::issue`: the only code that mints end-entity certificates.

use std::sync::Arc;
use std::time::Instant;

use rcgen::{
    CertificateParams, CrlDistributionPoint, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::{ActiveIssuer, Ca, IssuerId, KeyFamily, Serial};
use crate::csr::Names;
use crate::csr::{Attr, Csr, San};
use crate::error::{Cause, Kind, cause};
use crate::policy::{Contents, DeviceIdentity, Eku, PolicyError, Template};
use crate::store::{
    CertRecord, CertStatus, ChallengeHash, DeviceId, DocWrite, Linked, Protocol, StoreError,
};

/// Serial collisions are retried this often; with 127 random bits one retry is already
/// astronomically unlikely, so running out means something is broken.
const SERIAL_ATTEMPTS: usize = 3;

/// Builds the documents that commit together with a certificate's record.
pub(crate) type Completion = Box<dyn Fn(&CertRecord) -> Vec<DocWrite> + Send + Sync>;

pub struct IssueRequest {
    pub csr: Csr,
    pub template: Arc<Template>,
    pub family: KeyFamily,
    pub device: Option<DeviceId>,
    pub protocol: Protocol,
    pub replaces: Option<crate::ca::Serial>,
    /// The ACME account ordering it.
    pub account: Option<String>,
    /// A one-time challenge this issuance uses up, in the same atomic write as the record.
    pub consume: Option<ChallengeHash>,
    /// Documents written in that same write, built once the record exists (an ACME order
    /// that becomes valid and names its certificate).
    pub completes: Option<Completion>,
    /// The device a device-attest-01 certificate names, and what its attestation proved.
    pub identity: Option<DeviceIdentity>,
    /// The subject and SANs whoever vouched for the request stated (`csr::Names`).
    pub names: Names,
}

impl IssueRequest {
    /// A request linked to nothing: no device, renewal, account, challenge, completion or
    /// attestation, nothing stated. Callers set what applies with `IssueRequest { …, ..IssueRequest::new(…) }`.
    pub fn new(csr: Csr, template: Arc<Template>, family: KeyFamily, protocol: Protocol) -> Self {
        Self {
            csr,
            template,
            family,
            device: None,
            protocol,
            replaces: None,
            account: None,
            consume: None,
            completes: None,
            identity: None,
            names: Names::default(),
        }
    }
}

/// A certificate that is on disk and may be handed out.
#[derive(Debug, Clone)]
pub struct Issued {
    pub record: CertRecord,
    /// The certificates above the leaf, issuing CA first (the root is not included).
    pub chain: Vec<Vec<u8>>,
}

impl Issued {
    /// The issued certificate, then its chain: the order clients expect.
    pub fn certificates(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.record.der.as_slice()).chain(self.chain.iter().map(Vec::as_slice))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("no active {0} issuer")]
    NoIssuer(KeyFamily),
    #[error("issuer {0} has expired")]
    IssuerExpired(IssuerId),
    /// Building or signing the certificate failed; `context` says at what.
    #[error("signing failed: {context}")]
    Sign {
        context: &'static str,
        #[source]
        source: Cause,
    },
    #[error("could not draw a unique serial")]
    SerialsExhausted,
    #[error("shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IssueError {
    fn sign(context: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Sign {
            context,
            source: cause(e),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::Policy(_) => Kind::BadInput,
            // Rotation will put an issuer back; until then, nothing can be signed.
            Self::NoIssuer(_) | Self::IssuerExpired(_) => Kind::Unavailable,
            Self::Sign { .. } | Self::SerialsExhausted => Kind::Internal,
            Self::ShuttingDown => Kind::Unavailable,
            Self::Store(e) => e.kind(),
        }
    }

    /// Label for the failures-by-reason metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Policy(_) => "policy",
            Self::NoIssuer(_) => "no_issuer",
            Self::IssuerExpired(_) => "issuer_expired",
            Self::Sign { .. } | Self::SerialsExhausted | Self::ShuttingDown => "sign",
            Self::Store(_) => "store",
        }
    }
}

/// What the store commits with `record`.
fn linked(req: &IssueRequest, record: &CertRecord) -> Linked {
    Linked {
        consume: req.consume,
        docs: req
            .completes
            .as_ref()
            .map(|f| f(record))
            .unwrap_or_default(),
    }
}

impl Ca {
    /// Signs a certificate for `req` with the active issuer of its family and records it.
    /// Returns only after the certificate, its indexes and its event are durable.
    pub async fn issue(&self, req: IssueRequest) -> Result<Issued, IssueError> {
        let started = Instant::now();
        let protocol = req.protocol;
        let result = self.issue_inner(req).await;
        self.metrics.observe_issuance(
            protocol,
            result
                .as_ref()
                .map(|issued| &issued.record.issuer)
                .map_err(IssueError::reason),
            started.elapsed(),
        );
        result
    }

    async fn issue_inner(&self, req: IssueRequest) -> Result<Issued, IssueError> {
        let issuers = self.issuers();
        let issuer = issuers
            .active(req.family)
            .ok_or(IssueError::NoIssuer(req.family))?
            .clone();
        let contents = req.template.apply(
            &req.csr,
            req.identity.as_ref(),
            req.device.as_ref(),
            &req.names,
        )?;
        // Certificates carry whole seconds; the record says exactly what the certificate says.
        let now = self.clock.now_seconds();
        let not_before = (now - req.template.backdate).max(issuer.not_before());
        let not_after = (now + req.template.lifetime).min(issuer.not_after());
        if not_after <= now {
            return Err(IssueError::IssuerExpired(issuer.id().clone()));
        }
        let req = Arc::new(req);
        let contents = Arc::new(contents);
        for _ in 0..SERIAL_ATTEMPTS {
            let serial = Serial::random();
            let der = self
                .sign(&issuer, &req, &contents, &serial, not_before, not_after)
                .await?;
            let record = CertRecord {
                serial,
                issuer: issuer.id().clone(),
                subject: contents.subject_string(),
                sans: contents
                    .sans
                    .iter()
                    .map(San::to_string)
                    .chain(
                        contents
                            .permanent_identifier
                            .iter()
                            .map(|v| format!("permanentIdentifier:{v}")),
                    )
                    .collect(),
                device: req.device.clone(),
                not_before,
                not_after,
                issued_at: now,
                protocol: req.protocol,
                profile: req.template.name.clone(),
                replaces: req.replaces.clone(),
                account: req.account.clone(),
                attested: req.identity.as_ref().and_then(|i| i.facts.clone()),
                status: CertStatus::Good,
                der,
            };
            match self
                .store
                .insert_certificate(record.clone(), linked(&req, &record))
                .await
            {
                Ok(_) => {
                    tracing::info!(serial = %record.serial, issuer = %record.issuer,
                        device = record.device.as_ref().map(DeviceId::as_str), "issued");
                    return Ok(Issued {
                        record,
                        chain: issuer.chain().map(<[u8]>::to_vec).collect(),
                    });
                }
                Err(StoreError::DuplicateSerial(s)) => {
                    tracing::warn!(serial = %s, "serial collision, drawing a new one");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IssueError::SerialsExhausted)
    }

    /// Builds and signs the certificate on the blocking pool (at most two jobs per core: see `Ca::signing`).
    async fn sign(
        &self,
        issuer: &ActiveIssuer,
        req: &Arc<IssueRequest>,
        contents: &Arc<Contents>,
        serial: &Serial,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Vec<u8>, IssueError> {
        let permit = self
            .signing
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| IssueError::ShuttingDown)?;
        let (issuer, req, contents, serial) = (
            issuer.clone(),
            req.clone(),
            contents.clone(),
            serial.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let params = params(&issuer, &req, &contents, &serial, not_before, not_after)?;
            let cert = params
                .signed_by(&req.csr.spki, issuer.signer())
                .map_err(|e| IssueError::sign("signing", e))?;
            Ok(cert.der().to_vec())
        })
        .await
        .map_err(|e| IssueError::sign("the signing task", e))?
    }
}

fn params(
    issuer: &ActiveIssuer,
    req: &IssueRequest,
    contents: &Contents,
    serial: &Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, IssueError> {
    let mut p = CertificateParams::default();
    p.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    p.not_before = not_before;
    p.not_after = not_after;
    p.distinguished_name = distinguished_name(&contents.subject)?;
    p.subject_alt_names = contents
        .sans
        .iter()
        .map(san_type)
        .collect::<Result<_, _>>()?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if req.csr.key.is_rsa() {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    p.extended_key_usages = req
        .template
        .eku
        .iter()
        .map(|e| match e {
            Eku::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
            Eku::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
        })
        .collect();
    p.use_authority_key_identifier_extension = true;
    p.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec![issuer.crl_url.clone()],
    }];
    p.custom_extensions = vec![issuer.aia.clone()];
    if let Some(id) = &contents.permanent_identifier {
        // rcgen's otherName carries only a UTF8String; PermanentIdentifier is a SEQUENCE.
        debug_assert!(contents.sans.is_empty(), "attested templates copy no SANs");
        let mut ext = rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            permanent_identifier_san(id)?,
        );
        // RFC 5280 §4.2.1.6: critical when the subject is empty.
        ext.set_criticality(contents.subject.is_empty());
        p.custom_extensions.push(ext);
    }
    Ok(p)
}

/// A subjectAltName extension value holding one PermanentIdentifier otherName.
fn permanent_identifier_san(value: &str) -> Result<Vec<u8>, IssueError> {
    use der::Encode;
    use x509_cert::ext::pkix::name::{GeneralName, OtherName};
    let encoding = |e: der::Error| IssueError::sign("encoding the PermanentIdentifier", e);
    // `assigner` is left out, as other ACME servers do.
    let id = crate::encoding::PermanentIdentifier {
        identifier_value: Some(der::asn1::Utf8StringRef::new(value).map_err(encoding)?),
        assigner: None,
    };
    let other = OtherName {
        type_id: crate::encoding::PermanentIdentifier::OID,
        value: der::Any::encode_from(&id).map_err(encoding)?,
    };
    x509_cert::ext::pkix::SubjectAltName(vec![GeneralName::OtherName(other)])
        .to_der()
        .map_err(encoding)
}

pub(super) fn distinguished_name(
    attrs: &[(Attr, String)],
) -> Result<DistinguishedName, IssueError> {
    let mut dn = DistinguishedName::new();
    for (attr, value) in attrs {
        let ty = match attr {
            Attr::CommonName => DnType::CommonName,
            Attr::Organization => DnType::OrganizationName,
            Attr::OrganizationalUnit => DnType::OrganizationalUnitName,
            Attr::Country => DnType::CountryName,
            Attr::State => DnType::StateOrProvinceName,
            Attr::Locality => DnType::LocalityName,
            Attr::SerialNumber => DnType::CustomDnType(vec![2, 5, 4, 5]),
            Attr::Other(_) => continue,
        };
        // Country and serialNumber are PrintableString by definition (RFC 5280 appendix A).
        let value = match attr {
            Attr::Country | Attr::SerialNumber => {
                rcgen::string::PrintableString::try_from(value.as_str())
                    .map(DnValue::PrintableString)
                    .map_err(|_| PolicyError::BadAttribute(attr.label().to_owned()))?
            }
            _ => DnValue::Utf8String(value.clone()),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

fn san_type(san: &San) -> Result<SanType, IssueError> {
    let ia5 = |v: &str| {
        rcgen::string::Ia5String::try_from(v).map_err(|e| IssueError::sign("a subjectAltName", e))
    };
    Ok(match san {
        San::Dns(v) => SanType::DnsName(ia5(v)?),
        San::Email(v) => SanType::Rfc822Name(ia5(v)?),
        San::Uri(v) => SanType::URI(ia5(v)?),
        San::Ip(ip) => SanType::IpAddress(*ip),
    })
}
