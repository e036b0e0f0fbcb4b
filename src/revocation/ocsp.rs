//! OCSP responder (RFC 6960, with the RFC 5019 profile for GET and caching), for every issuer
//! enrollca holds, at the URL each certificate's AIA names. Responses are signed by the
//! issuer itself. A request without a nonce gets a pre-signed response from a cache keyed by
//! the certificate's current status (so a revocation is visible at once) and re-signed after
//! half its validity; a request with a nonce gets a freshly signed response echoing it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use time::OffsetDateTime;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::serial_number::SerialNumber;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use super::RevocationReason;
use crate::ca::{Ca, Issuer, IssuerId, Serial};
use crate::error::{Cause, Kind, cause};
use crate::store::{Backing, CertState, CertStatus as Status, StoreError};

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
/// Most certificates asked about in one request.
const MAX_REQUESTS: usize = 8;
/// RFC 8954: nonces of 1 to 32 octets.
const MAX_NONCE: usize = 32;
/// Bytes of signed responses kept (about 60k certificates); the least useful are evicted
/// and signed again when next asked for.
const CACHE_BYTES: u64 = 32 << 20;

/// What a request gets back: an OCSPResponse (DER), and how long it may be cached.
pub struct Answer {
    pub der: Vec<u8>,
    /// For `Cache-Control: max-age` on nonce-less GETs; `None` when not cacheable.
    pub max_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum OcspError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing the response failed")]
    Sign(#[source] Cause),
}

fn signing(e: impl std::error::Error + Send + Sync + 'static) -> OcspError {
    OcspError::Sign(cause(e))
}

/// An issuer as OCSP requests name it: hashes of its subject and key.
struct IssuerHashes {
    id: IssuerId,
    /// (hash algorithm, issuerNameHash, issuerKeyHash)
    forms: Vec<(ObjectIdentifier, Vec<u8>, Vec<u8>)>,
    /// SHA-1 of the issuer's key: the responder id (byKey).
    key_sha1: Vec<u8>,
}

/// A cached, signed SingleResponse answer for one certificate in one status.
struct Cached {
    der: Vec<u8>,
    refresh_at: OffsetDateTime,
    next_update: OffsetDateTime,
}

/// The key a cached response is valid under: the certificate and its status now.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    issuer: IssuerId,
    serial: Vec<u8>,
    status: KeyStatus,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum KeyStatus {
    Good,
    /// At this time (Unix seconds).
    Revoked(i64),
    /// Not a certificate we recorded. Cached briefly: a client asking again and again about
    /// one serial costs one signature per `UNKNOWN_REFRESH`, not one per request.
    Unknown,
}

/// How long an `unknown` answer is served from the cache before it is signed again.
const UNKNOWN_REFRESH: Duration = Duration::from_secs(300);

pub struct Ocsp {
    ca: Arc<Ca>,
    backing: Backing,
    /// thisUpdate to nextUpdate.
    validity: Duration,
    issuers: Mutex<HashMap<IssuerId, Arc<IssuerHashes>>>,
    cache: quick_cache::sync::Cache<CacheKey, Arc<Cached>, ResponseWeight>,
}

/// A cached response weighs its DER and its key, with their allocations.
#[derive(Clone)]
struct ResponseWeight;

impl quick_cache::Weighter<CacheKey, Arc<Cached>> for ResponseWeight {
    fn weight(&self, key: &CacheKey, cached: &Arc<Cached>) -> u64 {
        (cached.der.len() + key.serial.len() + std::mem::size_of::<Cached>() + 128) as u64
    }
}

impl Ocsp {
    pub fn new((ca, backing): (Arc<Ca>, Backing), validity: Duration) -> Self {
        Self {
            ca,
            backing,
            validity,
            issuers: Mutex::default(),
            cache: quick_cache::sync::Cache::with_weighter(60_000, CACHE_BYTES, ResponseWeight),
        }
    }

    /// Answers one DER OCSPRequest. Requests that cannot be parsed get `malformedRequest`,
    /// requests about certificates of another CA `unauthorized` (RFC 6960 §2.3).
    pub async fn respond(&self, request: &[u8]) -> Result<Answer, OcspError> {
        let Some(Parsed { ids, nonce }) = parse(request) else {
            return Ok(status_only(OcspResponse::malformed_request()));
        };
        let issuers = self.ca.issuers();
        let mut targets = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(hashes) = self.issuer_for(&issuers, &id) else {
                return Ok(status_only(OcspResponse::unauthorized()));
            };
            targets.push((id, hashes));
        }
        // Responses are signed by the certificates' issuer, so one response covers one issuer.
        let first = targets[0].1.id.clone();
        if targets.iter().any(|(_, h)| h.id != first) {
            return Ok(status_only(OcspResponse::malformed_request()));
        }
        let issuer = issuers
            .get(&first)
            .cloned()
            .expect("issuer_for only finds loaded issuers");
        let now = self.backing.clock.now_seconds();

        let mut records = Vec::with_capacity(targets.len());
        for (cert_id, hashes) in &targets {
            let record = match Serial::from_bytes(cert_id.serial_number.as_bytes()) {
                Ok(serial) => self.backing.store.certificate_state(&serial).await?,
                Err(_) => None,
            };
            records.push((cert_id.clone(), record.filter(|r| r.issuer == hashes.id)));
        }

        // The common case, cacheable: one certificate, no nonce.
        if let ([(cert_id, record)], None) = (records.as_slice(), &nonce) {
            let key = CacheKey {
                issuer: first.clone(),
                serial: cert_id.serial_number.as_bytes().to_vec(),
                status: match record.as_ref().map(|r| r.status) {
                    Some(Status::Good) => KeyStatus::Good,
                    Some(Status::Revoked { at, .. }) => KeyStatus::Revoked(at.unix_timestamp()),
                    None => KeyStatus::Unknown,
                },
            };
            if let Some(hit) = self.cached(&key, now) {
                return Ok(Answer {
                    der: hit.der.clone(),
                    max_age: Some(max_age(hit.next_update, now)),
                });
            }
            let (der, next_update) = self
                .sign(&issuer, &targets[0].1, &records, None, now)
                .await?;
            let refresh = match key.status {
                KeyStatus::Unknown => UNKNOWN_REFRESH.min(self.validity / 2),
                _ => self.validity / 2,
            };
            self.remember(
                key,
                Cached {
                    der: der.clone(),
                    refresh_at: now + refresh,
                    next_update,
                },
            );
            return Ok(Answer {
                der,
                max_age: Some(max_age(next_update, now)),
            });
        }
        let (der, _) = self
            .sign(&issuer, &targets[0].1, &records, nonce, now)
            .await?;
        Ok(Answer { der, max_age: None })
    }

    /// The loaded issuer a CertID names, by name and key hash (SHA-1 or SHA-256).
    fn issuer_for(&self, issuers: &crate::ca::IssuerSet, id: &CertId) -> Option<Arc<IssuerHashes>> {
        let alg = id.hash_algorithm.oid;
        let (name, key) = (
            id.issuer_name_hash.as_bytes(),
            id.issuer_key_hash.as_bytes(),
        );
        issuers.iter().find_map(|issuer| {
            let hashes = self.hashes(issuer)?;
            hashes
                .forms
                .iter()
                .any(|(a, n, k)| *a == alg && n == name && k == key)
                .then_some(hashes)
        })
    }

    fn hashes(&self, issuer: &Issuer) -> Option<Arc<IssuerHashes>> {
        let mut known = self.issuers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = known.get(issuer.id()) {
            return Some(h.clone());
        }
        let (_, cert) = x509_parser::parse_x509_certificate(issuer.cert_der()).ok()?;
        let name = cert.subject().as_raw();
        let key = cert.public_key().subject_public_key.data.as_ref();
        let digest = |alg, bytes: &[u8]| ring::digest::digest(alg, bytes).as_ref().to_vec();
        let sha1 = &ring::digest::SHA1_FOR_LEGACY_USE_ONLY;
        let sha256 = &ring::digest::SHA256;
        let h = Arc::new(IssuerHashes {
            id: issuer.id().clone(),
            forms: vec![
                (SHA1, digest(sha1, name), digest(sha1, key)),
                (SHA256, digest(sha256, name), digest(sha256, key)),
            ],
            key_sha1: digest(sha1, key),
        });
        known.insert(issuer.id().clone(), h.clone());
        Some(h)
    }

    fn cached(&self, key: &CacheKey, now: OffsetDateTime) -> Option<Arc<Cached>> {
        self.cache.get(key).filter(|c| c.refresh_at > now)
    }

    fn remember(&self, key: CacheKey, value: Cached) {
        self.cache.insert(key, Arc::new(value));
    }

    /// Builds and signs a BasicOCSPResponse on the blocking pool; returns the OCSPResponse
    /// DER and nextUpdate.
    async fn sign(
        &self,
        issuer: &Arc<Issuer>,
        hashes: &IssuerHashes,
        records: &[(CertId, Option<CertState>)],
        nonce: Option<Vec<u8>>,
        now: OffsetDateTime,
    ) -> Result<(Vec<u8>, OffsetDateTime), OcspError> {
        let next_update = now + self.validity;
        let responses = records
            .iter()
            .map(|(id, record)| single(id, record.as_ref(), now, next_update))
            .collect::<Result<Vec<_>, _>>()
            .map_err(signing)?;
        let extensions = nonce
            .map(|n| -> Result<_, der::Error> {
                Ok(vec![x509_cert::ext::Extension {
                    extn_id: NONCE,
                    critical: false,
                    extn_value: OctetString::new(OctetString::new(n)?.to_der()?)?,
                }])
            })
            .transpose()
            .map_err(signing)?;
        let tbs = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(
                OctetString::new(hashes.key_sha1.clone()).map_err(signing)?,
            ),
            produced_at: generalized(now).map_err(signing)?,
            responses,
            response_extensions: extensions,
        };
        let issuer = issuer.clone();
        let der = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, OcspError> {
            let tbs_der = tbs.to_der().map_err(signing)?;
            let key = issuer.key();
            let signature = rcgen::SigningKey::sign(key, &tbs_der).map_err(signing)?;
            let basic = BasicOcspResponse {
                tbs_response_data: tbs,
                signature_algorithm: key.signature_algorithm(),
                signature: BitString::from_bytes(&signature).map_err(signing)?,
                certs: None,
            };
            OcspResponse::successful(basic)
                .and_then(|r| r.to_der())
                .map_err(signing)
        })
        .await
        .map_err(signing)??;
        Ok((der, next_update))
    }
}

/// Longest serial number a certificate may have.
const MAX_SERIAL_OCTETS: usize = 20;

/// What a request asks: which certificates, and its nonce if it has one.
pub struct Parsed {
    pub ids: Vec<CertId>,
    pub nonce: Option<Vec<u8>>,
}

/// Parses a DER OCSPRequest; `None` when it is malformed (including 0 or more than
/// `MAX_REQUESTS` certificates, or a nonce that is empty or longer than 32 octets).
pub fn parse(request: &[u8]) -> Option<Parsed> {
    let req = OcspRequest::from_der(request).ok()?;
    let list = req.tbs_request.request_list;
    if list.is_empty() || list.len() > MAX_REQUESTS {
        return None;
    }
    // RFC 5280 §4.1.2.2: at most 20 octets. A longer one names no certificate and could not
    // be written into a response.
    if list
        .iter()
        .any(|r| r.req_cert.serial_number.as_bytes().len() > MAX_SERIAL_OCTETS)
    {
        return None;
    }
    let nonce = match &req.tbs_request.request_extensions {
        None => None,
        Some(exts) => request_nonce(exts).ok()?,
    };
    Some(Parsed {
        ids: list.into_iter().map(|r| r.req_cert).collect(),
        nonce,
    })
}

/// The nonce among a request's extensions: absent, or 1..=32 octets.
fn request_nonce(exts: &x509_cert::ext::Extensions) -> Result<Option<Vec<u8>>, ()> {
    let Some(ext) = exts.iter().find(|e| e.extn_id == NONCE) else {
        return Ok(None);
    };
    // RFC 6960 wraps the nonce in an OCTET STRING inside extnValue; some clients do not.
    let value = ext.extn_value.as_bytes();
    let nonce = OctetString::from_der(value)
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or_else(|_| value.to_vec());
    if nonce.is_empty() || nonce.len() > MAX_NONCE {
        return Err(());
    }
    Ok(Some(nonce))
}

fn single(
    id: &CertId,
    record: Option<&CertState>,
    now: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<SingleResponse, der::Error> {
    let cert_status = match record.map(|r| r.status) {
        None => CertStatus::Unknown(Null),
        Some(Status::Good) => CertStatus::Good(Null),
        Some(Status::Revoked { at, reason }) => CertStatus::Revoked(RevokedInfo {
            revocation_time: generalized(at)?,
            revocation_reason: Some(crl_reason(reason)),
        }),
    };
    Ok(SingleResponse {
        cert_id: CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: id.hash_algorithm.oid,
                parameters: id.hash_algorithm.parameters.clone(),
            },
            issuer_name_hash: id.issuer_name_hash.clone(),
            issuer_key_hash: id.issuer_key_hash.clone(),
            serial_number: SerialNumber::new(id.serial_number.as_bytes())?,
        },
        cert_status,
        this_update: generalized(now)?,
        next_update: Some(generalized(next_update)?),
        single_extensions: None,
    })
}

fn crl_reason(r: RevocationReason) -> CrlReason {
    match r {
        RevocationReason::Unspecified => CrlReason::Unspecified,
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::CaCompromise => CrlReason::CaCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::CertificateHold => CrlReason::CertificateHold,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => CrlReason::AaCompromise,
    }
}

fn generalized(t: OffsetDateTime) -> Result<OcspGeneralizedTime, der::Error> {
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| der::ErrorKind::DateTime)?;
    Ok(OcspGeneralizedTime(GeneralizedTime::from_unix_duration(
        Duration::from_secs(secs),
    )?))
}

fn max_age(next_update: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::from_secs(u64::try_from((next_update - now).whole_seconds()).unwrap_or(0))
}

impl OcspError {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Store(e) => e.kind(),
            Self::Sign(_) => Kind::Internal,
        }
    }

    /// What an OCSP client is told when we failed (RFC 6960 §2.3): `tryLater` when the store
    /// cannot answer now, else `internalError`; either way it tries another responder or
    /// later.
    pub fn to_response(&self) -> Vec<u8> {
        let status = match self.kind() {
            Kind::Unavailable => OcspResponse::try_later(),
            _ => OcspResponse::internal_error(),
        };
        status_only(status).der
    }
}

/// An unsigned OCSPResponse carrying only an error status.
fn status_only(r: OcspResponse) -> Answer {
    Answer {
        der: r.to_der().expect("a status-only response encodes"),
        max_age: None,
    }
}
