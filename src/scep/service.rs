//! SCEP enrolment policy: who may get a certificate, and the one place SCEP outcomes become
//! CertRep statuses and failInfo codes.

mod approval;

use std::sync::Arc;

use base64::Engine;

use super::message::{Cipher, FailInfo, MessageType};
use super::pending::Approval;
use super::wire::{self, MessageSigner, Outcome, Payload, SignedMessage, WireError};
use crate::ca::Serial;
use crate::ca::{Ca, IssueError, IssueRequest, Issuer, IssuerId, KeyFamily};
use crate::csr::Names;
use crate::csr::{Csr, CsrError};
use crate::error::{Cause, Kind};
use crate::metrics::Metrics;
use crate::policy::{PolicyError, Template, Vouched};
use crate::revocation::Crls;
use crate::secret::Secret;
use crate::store::{
    Backing, CertRecord, ChallengeHash, ChallengeRecord, DeviceId, Protocol, Standing, StoreError,
};
use crate::validator::{Validator, ValidatorError};

pub use approval::DecisionError;

/// Capabilities advertised by GetCACaps: only what this server does (plus `GetNextCACert`
/// while a next RSA issuer is staged).
const CAPS: &[&str] = &[
    "POSTPKIOperation",
    "SHA-1",
    "SHA-256",
    "SHA-384",
    "SHA-512",
    "AES",
    "DES3",
    "SCEPStandard",
    "Renewal",
];

#[derive(Debug, thiserror::Error)]
pub enum ScepError {
    /// The message could not be opened: HTTP 400 with the reason.
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("no active RSA issuer to act as the SCEP CA")]
    NoIssuer,
    #[error("no next SCEP CA is staged")]
    NoNextIssuer,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Issue(IssueError),
    /// Our side failed after the request was understood: HTTP 500, details in the log.
    #[error("internal error")]
    Internal(#[source] Cause),
}

impl ScepError {
    pub(crate) fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(crate::error::cause(cause))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::Wire(_) => Kind::BadInput,
            Self::NoIssuer => Kind::Unavailable,
            Self::NoNextIssuer => Kind::NotFound,
            Self::Store(e) => e.kind(),
            Self::Issue(e) => e.kind(),
            Self::Internal(_) => Kind::Internal,
        }
    }
}

pub struct ScepService {
    /// Where devices reach it (`listen.public_url` + `/scep`), for the payloads that point
    /// them here.
    url: String,
    ca: Arc<Ca>,
    backing: Backing,
    crls: Arc<Crls>,
    metrics: Arc<Metrics>,
    template: Arc<Template>,
    admission: Admission,
}

/// Who may enrol, and how (the `[scep]` settings).
pub struct Admission {
    pub approval: Approval,
    /// The static challenge: membership of the fleet, not a device.
    pub challenge: Option<Secret>,
    pub webhook: Option<Validator>,
    /// Whether requests encrypted with single DES are served (micromdm's scepclient sends
    /// nothing else); replies are never single DES either way.
    pub allow_single_des: bool,
}

/// What an accepted challenge grants. The static challenge grants no device and no names:
/// it proves only that the client knows a secret shared by the whole fleet.
struct Grant {
    /// The one-time challenge to use up with the issuance (none for the static challenge).
    consume: Option<ChallengeHash>,
    /// The device a one-time challenge was minted for, or the webhook named, and the names
    /// either stated.
    vouched: Vouched,
}

/// Why a decrypted request is refused, before it becomes a failInfo.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("bad CSR: {0}")]
    Csr(#[from] CsrError),
    #[error("wrong or missing challenge password")]
    Challenge,
    #[error("the request is signed with a key other than the CSR's")]
    SignerKey,
    #[error("renewal signed by a certificate this CA did not issue, or that is revoked or expired")]
    NotRenewable,
    #[error("the challenge is for device {granted}, the signing certificate for {held}")]
    DeviceMismatch { granted: DeviceId, held: DeviceId },
    #[error(transparent)]
    Webhook(#[from] ValidatorError),
    #[error("no certificate of this CA matches the requested issuer and serial")]
    UnknownCert,
    #[error("an operator rejected the enrolment")]
    Rejected,
    #[error("message type {0:?} is not supported yet")]
    Unsupported(MessageType),
    #[error("single DES is refused here (scep.allow_single_des = false)")]
    SingleDes,
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Our side failed: not the client's doing, answered over HTTP (500, or 503 when it
    /// may pass), never as a failInfo.
    #[error(transparent)]
    Ours(#[from] ScepError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Self::Ours(e.into())
    }
}

impl Refusal {
    fn fail_info(&self) -> FailInfo {
        match self {
            Self::Csr(CsrError::WeakKey(_) | CsrError::UnsupportedKey(_)) | Self::SingleDes => {
                FailInfo::BadAlg
            }
            Self::Csr(CsrError::BadSignature) | Self::SignerKey => FailInfo::BadMessageCheck,
            Self::UnknownCert => FailInfo::BadCertId,
            Self::Csr(_)
            | Self::Challenge
            | Self::Rejected
            | Self::NotRenewable
            | Self::DeviceMismatch { .. }
            | Self::Webhook(_)
            | Self::Unsupported(_)
            | Self::Policy(_)
            // Ours never reaches a CertRep: pki_operation answers over HTTP first.
            | Self::Ours(_) => FailInfo::BadRequest,
        }
    }
}

/// GetCACert's answer (RFC 8894 §4.2.1).
pub enum CaCerts {
    /// A self-signed SCEP CA: its certificate (DER), `application/x-x509-ca-cert`.
    Alone(Vec<u8>),
    /// A SCEP CA under a root: a certs-only SignedData holding it first and every certificate
    /// above it, `application/x-x509-ca-ra-cert`.
    Chain(Vec<u8>),
}

impl CaCerts {
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Alone(_) => "application/x-x509-ca-cert",
            Self::Chain(_) => "application/x-x509-ca-ra-cert",
        }
    }

    pub fn into_body(self) -> Vec<u8> {
        match self {
            Self::Alone(der) | Self::Chain(der) => der,
        }
    }
}

impl ScepService {
    pub fn new(
        url: String,
        (ca, backing): (Arc<Ca>, Backing),
        crls: Arc<Crls>,
        metrics: Arc<Metrics>,
        template: Arc<Template>,
        admission: Admission,
    ) -> Self {
        Self {
            url,
            ca,
            backing,
            crls,
            metrics,
            template,
            admission,
        }
    }

    pub fn caps(&self) -> String {
        let next = self
            .ca
            .issuers()
            .next(KeyFamily::Rsa)
            .map(|_| "GetNextCACert");
        CAPS.iter()
            .copied()
            .chain(next)
            .map(|c| format!("{c}\n"))
            .collect()
    }

    /// GetCACert's answer: the active RSA issuer, which decrypts and signs, with what a
    /// client needs above it.
    pub fn ca_certs(&self) -> Result<CaCerts, ScepError> {
        let issuers = self.ca.issuers();
        let rsa = issuers.active(KeyFamily::Rsa).ok_or(ScepError::NoIssuer)?;
        let mut chain = self.chain_of(rsa);
        if chain.len() == 1 {
            return Ok(CaCerts::Alone(chain.remove(0)));
        }
        wire::degenerate(&chain)
            .map(CaCerts::Chain)
            .map_err(ScepError::internal)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Mints a one-time challenge stating what the certificate will say (and, if given,
    /// whose it is); only its hash is stored. Returns the challenge and its record.
    pub async fn mint_challenge(
        &self,
        device: Option<DeviceId>,
        names: Names,
        ttl: std::time::Duration,
    ) -> Result<(String, ChallengeRecord), StoreError> {
        let mut secret = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let now = self.backing.clock.now_seconds();
        let record = ChallengeRecord {
            device,
            names,
            created_at: now,
            expires_at: now + ttl,
        };
        self.backing
            .store
            .put_challenge(ChallengeHash::of(challenge.as_bytes()), record.clone())
            .await?;
        tracing::info!(device = record.device.as_ref().map(|d| d.as_str()),
            expires_at = %record.expires_at, "one-time SCEP challenge minted");
        Ok((challenge, record))
    }

    /// Apple's `CAFingerprint`: SHA-1 of the root at the top of GetCACert's answer, which is
    /// what a device compares it with (the SCEP CA itself when it is self-signed).
    pub fn ca_fingerprint(&self) -> Result<[u8; 20], ScepError> {
        let issuers = self.ca.issuers();
        let rsa = issuers.active(KeyFamily::Rsa).ok_or(ScepError::NoIssuer)?;
        let chain = self.chain_of(rsa);
        let root = chain.last().expect("a chain holds at least its CA");
        Ok(openssl::sha::sha1(root))
    }

    /// The staged next SCEP CA (GetNextCACert): its certificate and the certificates above it
    /// in a certs-only SignedData, signed by the current CA so clients can trust it before it
    /// takes over.
    pub fn next_ca_cert(&self) -> Result<Vec<u8>, ScepError> {
        let issuers = self.ca.issuers();
        let active = issuers.active(KeyFamily::Rsa).ok_or(ScepError::NoIssuer)?;
        let next = issuers
            .next(KeyFamily::Rsa)
            .ok_or(ScepError::NoNextIssuer)?;
        let signer = MessageSigner {
            cert_der: active.cert_der(),
            key: active.key().pkey().map_err(ScepError::internal)?,
        };
        wire::next_ca(&signer, &self.chain_of(next)).map_err(ScepError::internal)
    }

    /// A SCEP CA certificate and every certificate above it up to its root, then the cross
    /// certificate a client trusting another root needs (RFC 8894 §4.2.1.2): what GetCACert
    /// serves and what follows the issued certificate in a CertRep.
    fn chain_of(&self, ca: &Issuer) -> Vec<Vec<u8>> {
        let above = self.ca.trust().above(ca.top());
        ca.chain()
            .map(<[u8]>::to_vec)
            .chain(above.iter().cloned())
            .collect()
    }

    /// An issued certificate as a CertRep carries it: first, then its SCEP CA's chain.
    fn with_chain(&self, leaf: Vec<u8>, issuer: &IssuerId) -> Result<Vec<Vec<u8>>, Refusal> {
        let issuers = self.ca.issuers();
        let issuer = issuers
            .get(issuer)
            .ok_or_else(|| ScepError::internal(format!("issuer {issuer} is not loaded")))?;
        Ok(std::iter::once(leaf).chain(self.chain_of(issuer)).collect())
    }

    /// Handles a PKIOperation; every refusal of a decrypted request is a signed FAILURE.
    /// The request may be encrypted to any RSA issuer still in service (a client that fetched
    /// the CA certificate just before a rotation); the reply is signed by that one.
    pub async fn pki_operation(&self, body: Vec<u8>) -> Result<Vec<u8>, ScepError> {
        let issuers = self.ca.issuers();
        let active = issuers
            .active(KeyFamily::Rsa)
            .ok_or(ScepError::NoIssuer)?
            .clone();
        let mut candidates: Vec<_> = issuers
            .iter()
            .filter(|i| {
                i.family() == KeyFamily::Rsa && i.state() != crate::store::IssuerState::Retired
            })
            .cloned()
            .collect();
        // The active issuer first: nearly every request is encrypted to it.
        candidates.sort_by_key(|i| i.id() != active.id());
        let opened = tokio::task::spawn_blocking(move || -> Result<_, WireError> {
            let req = wire::open(&body)?;
            let mut first_error = None;
            for issuer in candidates {
                // Token keys cannot decrypt here (checked at start for the active one).
                let Ok(pkey) = issuer.key().pkey() else {
                    continue;
                };
                match wire::decrypt(&req.envelope, pkey) {
                    Ok((content, cipher)) => return Ok((req, content, cipher, issuer)),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            Err(first_error.unwrap_or_else(|| {
                WireError::Malformed("no SCEP CA key can decrypt requests".into())
            }))
        })
        .await
        .map_err(ScepError::internal)?;
        let (req, content, cipher, rsa) =
            opened.inspect_err(|_| self.metrics.observe_scep_refusal("unreadable"))?;
        self.metrics.observe_scep_cipher(cipher.name());
        tracing::info!(transaction = %req.transaction_id, message_type = ?req.message_type, ?cipher, digest = ?req.digest, "SCEP request");

        let handled = if cipher == Cipher::Des && !self.admission.allow_single_des {
            Err(Refusal::SingleDes)
        } else {
            self.handle(&req, &content).await
        };
        let outcome = match handled {
            Ok(answer) => Ok(answer),
            Err(Refusal::Ours(e)) => return Err(e),
            Err(refusal) => {
                let info = refusal.fail_info();
                tracing::info!(transaction = %req.transaction_id, reason = %refusal, fail_info = info.name(), "SCEP request refused");
                self.metrics.observe_scep_refusal(info.name());
                Err(info)
            }
        };
        tokio::task::spawn_blocking(move || {
            let signer = MessageSigner {
                cert_der: rsa.cert_der(),
                key: rsa
                    .key()
                    .pkey()
                    .map_err(|e| WireError::Encode(e.to_string()))?,
            };
            let outcome = match &outcome {
                Ok(Some(payload)) => Outcome::Success {
                    payload,
                    recipient: &req.signer,
                    cipher,
                },
                Ok(None) => Outcome::Pending,
                Err(info) => Outcome::Failure(*info),
            };
            wire::cert_rep(&signer, &req, outcome)
        })
        .await
        .map_err(ScepError::internal)?
        .map_err(ScepError::internal)
    }

    /// Returns what to send (`None`: PENDING) or why not.
    async fn handle(
        &self,
        req: &SignedMessage,
        content: &[u8],
    ) -> Result<Option<Payload>, Refusal> {
        let payload = match req.message_type {
            MessageType::PkcsReq => return self.enrol(req, content).await,
            MessageType::CertPoll => return self.poll(req).await,
            MessageType::RenewalReq => Payload::Certs(self.renew(req, content).await?),
            MessageType::GetCert => Payload::Certs(self.get_cert(content).await?),
            MessageType::GetCrl => Payload::Crl(self.get_crl(content).await?),
            other => return Err(Refusal::Unsupported(other)),
        };
        Ok(Some(payload))
    }

    /// GetCRL: the current CRL of the issuer named in IssuerAndSerialNumber (any of ours,
    /// retiring ones included: their certificates still need revocation status).
    async fn get_crl(&self, content: &[u8]) -> Result<Vec<u8>, Refusal> {
        use der::{Decode, Encode};
        let wanted = cms::cert::IssuerAndSerialNumber::from_der(content)
            .map_err(|_| Refusal::UnknownCert)?;
        let wanted_name = wanted.issuer.to_der().map_err(|_| Refusal::UnknownCert)?;
        let issuers = self.ca.issuers();
        let issuer = issuers
            .iter()
            .find(|i| {
                x509_cert::Certificate::from_der(i.cert_der())
                    .ok()
                    .and_then(|c| c.tbs_certificate.subject.to_der().ok())
                    .is_some_and(|subject| subject == wanted_name)
            })
            .ok_or(Refusal::UnknownCert)?;
        let crl = self
            .crls
            .get(issuer.id())
            .await
            .map_err(ScepError::internal)?;
        Ok(crl.der.clone())
    }

    /// GetCert: the certificate named by IssuerAndSerialNumber, if this CA issued it.
    async fn get_cert(&self, content: &[u8]) -> Result<Vec<Vec<u8>>, Refusal> {
        use der::Decode;
        let wanted = cms::cert::IssuerAndSerialNumber::from_der(content)
            .map_err(|_| Refusal::UnknownCert)?;
        let serial = Serial::from_bytes(wanted.serial_number.as_bytes())
            .map_err(|_| Refusal::UnknownCert)?;
        let record = self
            .backing
            .store
            .certificate(&serial)
            .await?
            .ok_or(Refusal::UnknownCert)?;
        let cert =
            x509_cert::Certificate::from_der(&record.der).map_err(|_| Refusal::UnknownCert)?;
        if cert.tbs_certificate.issuer != wanted.issuer {
            return Err(Refusal::UnknownCert);
        }
        Ok(vec![record.der])
    }

    /// RenewalReq: signed with a still-good certificate we issued (its key proves the device);
    /// the CSR may carry a new key. The replacement goes to the same device, with the same
    /// subject and SANs, linked to the old.
    async fn renew(&self, req: &SignedMessage, content: &[u8]) -> Result<Vec<Vec<u8>>, Refusal> {
        let csr = Csr::from_der(content)?;
        let old = self
            .previous_certificate(req)
            .await?
            .ok_or(Refusal::NotRenewable)?;
        let vouched = vouched_by_renewal(&old)?;
        self.issue(csr, vouched, Some(old.serial), None).await
    }

    async fn enrol(&self, req: &SignedMessage, content: &[u8]) -> Result<Option<Payload>, Refusal> {
        let csr = Csr::from_der(content)?;
        // A PKCSReq is signed with a throw-away certificate for the requested key: proof of
        // possession of that key.
        let signer_key = x509_parser::parse_x509_certificate(&req.signer_der)
            .ok()
            .and_then(|(_, cert)| {
                rcgen::SubjectPublicKeyInfo::from_der(cert.public_key().raw).ok()
            });
        if signer_key.as_ref() != Some(&csr.spki) {
            return Err(Refusal::SignerKey);
        }
        // Only then the challenge: it may cost a store read or a call to the validator.
        let presented = csr.challenge.as_ref().ok_or(Refusal::Challenge)?;
        let grant = self
            .check_challenge(req, content, &csr, presented.expose())
            .await?;
        // certmonger renews this way: a PKCSReq signed with the certificate it holds. The device
        // and names come from the challenge or webhook, else from that certificate; never from
        // the request.
        let previous = self.previous_certificate(req).await?;
        let vouched = match &previous {
            None => grant.vouched,
            Some(old) => {
                let mut vouched = vouched_by_renewal(old)?;
                if let Some(granted) = grant.vouched.device {
                    match &vouched.device {
                        Some(held) if *held != granted => {
                            return Err(Refusal::DeviceMismatch {
                                granted,
                                held: held.clone(),
                            });
                        }
                        _ => vouched.device = Some(granted),
                    }
                }
                if grant.vouched.names != Names::default() {
                    vouched.names = grant.vouched.names;
                }
                vouched
            }
        };
        if self.admission.approval == Approval::Manual && previous.is_none() {
            return self.hold(req, &csr, vouched, grant.consume).await;
        }
        let certs = self
            .issue(csr, vouched, previous.map(|old| old.serial), grant.consume)
            .await?;
        Ok(Some(Payload::Certs(certs)))
    }

    /// The static challenge, a live one-time challenge (checked here so a bad one costs no
    /// signature; used up atomically with the certificate's record), or the webhook's yes.
    async fn check_challenge(
        &self,
        req: &SignedMessage,
        content: &[u8],
        csr: &Csr,
        presented: &str,
    ) -> Result<Grant, Refusal> {
        if self
            .admission
            .challenge
            .as_ref()
            .is_some_and(|c| c.matches(presented.as_bytes()))
        {
            return Ok(Grant {
                consume: None,
                vouched: Vouched::default(),
            });
        }
        let hash = ChallengeHash::of(presented.as_bytes());
        let now = self.backing.clock.now();
        match self.backing.store.challenge(&hash).await {
            Ok(Some(c)) if c.is_live(now) => {
                return Ok(Grant {
                    consume: Some(hash),
                    vouched: Vouched {
                        device: c.device,
                        names: c.names,
                    },
                });
            }
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(webhook) = &self.admission.webhook else {
            return Err(Refusal::Challenge);
        };
        let details = Details {
            transaction_id: &req.transaction_id,
            message_type: "PKCSReq",
            challenge: presented,
            csr: crate::encoding::to_pem("CERTIFICATE REQUEST", content),
            common_name: csr.common_name(),
            sans: csr.sans.iter().map(ToString::to_string).collect(),
        };
        Ok(Grant {
            consume: None,
            vouched: webhook.approve(&details).await?,
        })
    }

    async fn issue(
        &self,
        csr: Csr,
        vouched: Vouched,
        replaces: Option<Serial>,
        consume: Option<ChallengeHash>,
    ) -> Result<Vec<Vec<u8>>, Refusal> {
        let issued = self
            .ca
            .issue(IssueRequest {
                consume,
                ..self.request(csr, vouched, replaces)
            })
            .await
            .map_err(|e| match e {
                IssueError::Policy(p) => Refusal::Policy(p),
                // Used by a concurrent request between our check and the write.
                IssueError::Store(StoreError::ChallengeUnavailable) => Refusal::Challenge,
                other => ScepError::Issue(other).into(),
            })?;
        self.with_chain(issued.record.der, &issued.record.issuer)
    }

    /// An issuance of a SCEP certificate: the device template, the RSA issuer line (the SCEP
    /// CA signs what it answers for).
    fn request(&self, csr: Csr, vouched: Vouched, replaces: Option<Serial>) -> IssueRequest {
        IssueRequest {
            device: vouched.device,
            names: vouched.names,
            replaces,
            ..IssueRequest::new(csr, self.template.clone(), KeyFamily::Rsa, Protocol::Scep)
        }
    }

    /// The still-good certificate of ours that signed this request, when a client renews by
    /// signing its PKCSReq with the certificate it holds (certmonger does). Being byte for byte
    /// the certificate we recorded is proof enough that we issued it. A store that cannot
    /// answer is our failure, never reported to the device as its own.
    async fn previous_certificate(
        &self,
        req: &SignedMessage,
    ) -> Result<Option<CertRecord>, Refusal> {
        let Some(serial) = req
            .signer
            .serial_number()
            .to_bn()
            .ok()
            .and_then(|n| Serial::from_bytes(&n.to_vec()).ok())
        else {
            return Ok(None);
        };
        let Some(record) = self.backing.store.certificate(&serial).await? else {
            return Ok(None);
        };
        let now = self.backing.clock.now();
        let good = record.standing(now) == Standing::Good;
        Ok((good && req.signer_der == record.der).then_some(record))
    }
}

/// A renewal is vouched for by the certificate it replaces: its device, subject and SANs.
fn vouched_by_renewal(old: &CertRecord) -> Result<Vouched, Refusal> {
    let (subject, sans) =
        crate::csr::names_of_certificate(&old.der).map_err(ScepError::internal)?;
    Ok(Vouched {
        device: old.device.clone(),
        names: Names {
            subject: Some(subject),
            sans: Some(sans),
        },
    })
}

/// What the SCEP validation webhook is told about a request.
#[derive(Debug, serde::Serialize)]
struct Details<'a> {
    pub transaction_id: &'a str,
    pub message_type: &'static str,
    /// The challenge password the device presented (the validator's to judge).
    pub challenge: &'a str,
    /// The PKCS#10 request, PEM.
    pub csr: String,
    pub common_name: Option<&'a str>,
    pub sans: Vec<String>,
}
