//! PKCS#10 certificate requests from untrusted clients: parsed, self-signature verified, key
//! strength checked. Nothing here decides what the certificate will contain (that is policy).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// Smallest RSA modulus accepted from a device.
pub const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("not a PKCS#10 request: {0}")]
    Malformed(String),
    #[error("trailing bytes after the request")]
    TrailingData,
    #[error("the request's signature does not verify with its own key")]
    BadSignature,
    #[error("RSA key of {0} bits is too weak (at least {MIN_RSA_BITS})")]
    WeakKey(usize),
    #[error("unsupported public key: {0}")]
    UnsupportedKey(String),
    #[error("invalid subjectAltName: {0}")]
    BadSan(String),
}

/// The subject key of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKey {
    Rsa { bits: usize },
    EcP256,
    EcP384,
    Ed25519,
}

impl SubjectKey {
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa { .. })
    }
}

/// Subject attributes the policy knows how to pass through.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub enum Attr {
    CommonName,
    Organization,
    OrganizationalUnit,
    Country,
    State,
    Locality,
    SerialNumber,
    Other(String),
}

impl Attr {
    fn from_oid(oid: &x509_parser::der_parser::Oid) -> Self {
        match oid.to_id_string().as_str() {
            "2.5.4.3" => Self::CommonName,
            "2.5.4.10" => Self::Organization,
            "2.5.4.11" => Self::OrganizationalUnit,
            "2.5.4.6" => Self::Country,
            "2.5.4.8" => Self::State,
            "2.5.4.7" => Self::Locality,
            "2.5.4.5" => Self::SerialNumber,
            other => Self::Other(other.to_owned()),
        }
    }

    /// From the name `label` writes (or a dotted OID), as an MDM states a subject.
    pub fn from_label(label: &str) -> Option<Self> {
        Some(match label {
            "CN" => Self::CommonName,
            "O" => Self::Organization,
            "OU" => Self::OrganizationalUnit,
            "C" => Self::Country,
            "ST" => Self::State,
            "L" => Self::Locality,
            "serialNumber" => Self::SerialNumber,
            oid if oid.split('.').all(|arc| arc.parse::<u32>().is_ok()) && oid.contains('.') => {
                let known = x509_parser::der_parser::Oid::from_str(oid).ok()?;
                Self::from_oid(&known)
            }
            _ => return None,
        })
    }

    /// The RFC 4514 short name, for display.
    pub fn label(&self) -> &str {
        match self {
            Self::CommonName => "CN",
            Self::Organization => "O",
            Self::OrganizationalUnit => "OU",
            Self::Country => "C",
            Self::State => "ST",
            Self::Locality => "L",
            Self::SerialNumber => "serialNumber",
            Self::Other(oid) => oid,
        }
    }
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub enum San {
    Dns(String),
    Ip(IpAddr),
    Email(String),
    Uri(String),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(v) => write!(f, "DNS:{v}"),
            Self::Ip(v) => write!(f, "IP:{v}"),
            Self::Email(v) => write!(f, "email:{v}"),
            Self::Uri(v) => write!(f, "URI:{v}"),
        }
    }
}

impl From<Attr> for String {
    fn from(attr: Attr) -> Self {
        attr.label().to_owned()
    }
}

impl TryFrom<String> for Attr {
    type Error = CsrError;

    fn try_from(label: String) -> Result<Self, CsrError> {
        Attr::from_label(&label)
            .ok_or_else(|| CsrError::Malformed(format!("unknown subject attribute {label:?}")))
    }
}

impl FromStr for San {
    type Err = CsrError;

    /// The form `Display` writes: `DNS:name`, `IP:address`, `email:address`, `URI:uri`.
    fn from_str(text: &str) -> Result<Self, CsrError> {
        let (kind, value) = text
            .split_once(':')
            .ok_or_else(|| CsrError::BadSan(format!("{text:?} is not KIND:VALUE")))?;
        Ok(match kind {
            "DNS" => Self::Dns(checked_ia5(value)?),
            "email" => Self::Email(checked_ia5(value)?),
            "URI" => Self::Uri(checked_ia5(value)?),
            "IP" => Self::Ip(
                value
                    .parse()
                    .map_err(|_| CsrError::BadSan(format!("{value:?} is not an IP address")))?,
            ),
            _ => {
                return Err(CsrError::BadSan(format!(
                    "{kind:?} is not one of DNS, IP, email, URI"
                )));
            }
        })
    }
}

impl From<San> for String {
    fn from(san: San) -> Self {
        san.to_string()
    }
}

impl TryFrom<String> for San {
    type Error = CsrError;

    fn try_from(text: String) -> Result<Self, CsrError> {
        text.parse()
    }
}

/// What the party that vouches for a request (the MDM through a one-time challenge or the
/// validation webhook, or the certificate a renewal replaces) says the certificate names.
/// The request itself is never trusted to name its device: a stated subject or SAN list is
/// what the certificate gets, and a request asking for anything else is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Names {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sans: Option<Vec<San>>,
}

/// A subject's attributes, in the order written.
pub type Subject = Vec<(Attr, String)>;

/// Parses `CN=a,O=b` as written (no escaped commas); keys are `Attr` labels or dotted OIDs.
pub fn parse_subject(text: &str) -> Result<Subject, CsrError> {
    split_subject(text)?
        .into_iter()
        .map(|(k, v)| {
            let attr = Attr::from_label(k)
                .ok_or_else(|| CsrError::Malformed(format!("unknown subject attribute {k:?}")))?;
            Ok((attr, v.to_owned()))
        })
        .collect()
}

/// Splits `K=V,K=V` into trimmed, non-empty pairs, in the order written.
pub fn split_subject(text: &str) -> Result<Vec<(&str, &str)>, CsrError> {
    text.split(',')
        .map(|part| {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                CsrError::Malformed(format!("subject part `{part}` is not KEY=VALUE"))
            })?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return Err(CsrError::Malformed(format!(
                    "subject part `{part}` is empty"
                )));
            }
            Ok((k, v))
        })
        .collect()
}

/// The subject and subjectAltNames a certificate names, read as a request's are (a renewal
/// keeps them).
pub fn names_of_certificate(der: &[u8]) -> Result<(Subject, Vec<San>), CsrError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    let subject = subject_of(cert.subject())?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            sans.extend(convert_san(name)?);
        }
    }
    Ok((subject, sans))
}

fn subject_of(name: &x509_parser::x509::X509Name<'_>) -> Result<Subject, CsrError> {
    name.iter_attributes()
        .map(|attr| {
            let value = attr
                .as_str()
                .map_err(|_| CsrError::Malformed("subject attribute is not a string".into()))?;
            Ok((Attr::from_oid(attr.attr_type()), value.to_owned()))
        })
        .collect()
}

/// A verified certification request.
#[derive(Debug, Clone)]
pub struct Csr {
    pub spki: rcgen::SubjectPublicKeyInfo,
    pub key: SubjectKey,
    pub subject: Vec<(Attr, String)>,
    pub sans: Vec<San>,
    /// PKCS#9 challengePassword (SCEP carries its challenge here). A secret: never log it.
    pub challenge: Option<crate::secret::Secret>,
}

impl Csr {
    pub fn from_pem(pem: &str) -> Result<Self, CsrError> {
        let der = rustls_pemfile::read_one_from_slice(pem.as_bytes())
            .ok()
            .flatten()
            .and_then(|(item, _)| match item {
                rustls_pemfile::Item::Csr(der) => Some(der.to_vec()),
                _ => None,
            })
            .ok_or_else(|| CsrError::Malformed("no CERTIFICATE REQUEST PEM block".into()))?;
        Self::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        let (rest, req) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::TrailingData);
        }
        let info = &req.certification_request_info;
        let spki_info = &info.subject_pki;
        let key = SubjectKey::of(spki_info)?;
        req.verify_signature().map_err(|_| CsrError::BadSignature)?;
        let spki = rcgen::SubjectPublicKeyInfo::from_der(spki_info.raw)
            .map_err(|e| CsrError::UnsupportedKey(e.to_string()))?;

        let subject = subject_of(&info.subject)?;

        let mut sans = Vec::new();
        for ext in req.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let Some(san) = convert_san(name)? {
                        sans.push(san);
                    }
                }
            }
        }
        let challenge = info
            .iter_attributes()
            .find_map(|a| match a.parsed_attribute() {
                ParsedCriAttribute::ChallengePassword(c) => {
                    Some(crate::secret::Secret::new(c.0.clone()))
                }
                _ => None,
            });
        Ok(Self {
            spki,
            key,
            subject,
            sans,
            challenge,
        })
    }

    /// A request rebuilt from what was kept of a verified one (its signature and challenge
    /// are gone; possession of the key was checked when it was received).
    pub fn from_parts(spki_der: &[u8], subject: Subject, sans: Vec<San>) -> Result<Self, CsrError> {
        let (rest, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::TrailingData);
        }
        Ok(Self {
            key: SubjectKey::of(&parsed)?,
            spki: rcgen::SubjectPublicKeyInfo::from_der(spki_der)
                .map_err(|e| CsrError::UnsupportedKey(e.to_string()))?,
            subject,
            sans,
            challenge: None,
        })
    }

    pub fn common_name(&self) -> Option<&str> {
        self.subject
            .iter()
            .find(|(a, _)| *a == Attr::CommonName)
            .map(|(_, v)| v.as_str())
    }
}

impl SubjectKey {
    /// The kind of key a SubjectPublicKeyInfo holds, refusing weak and unsupported ones.
    pub fn of(spki: &x509_parser::x509::SubjectPublicKeyInfo) -> Result<Self, CsrError> {
        let alg = &spki.algorithm.algorithm;
        if *alg == oid_registry::OID_PKCS1_RSAENCRYPTION {
            match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => {
                    let bits = rsa.key_size();
                    if bits < MIN_RSA_BITS {
                        Err(CsrError::WeakKey(bits))
                    } else if bits > MAX_RSA_BITS {
                        Err(CsrError::UnsupportedKey(format!("RSA-{bits}")))
                    } else {
                        Ok(SubjectKey::Rsa { bits })
                    }
                }
                _ => Err(CsrError::Malformed("bad RSA public key".into())),
            }
        } else if *alg == oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == oid_registry::OID_EC_P256 => Ok(SubjectKey::EcP256),
                Some(c) if c == oid_registry::OID_NIST_EC_P384 => Ok(SubjectKey::EcP384),
                Some(c) => Err(CsrError::UnsupportedKey(format!("EC curve {c}"))),
                None => Err(CsrError::UnsupportedKey(
                    "EC key without named curve".into(),
                )),
            }
        } else if *alg == oid_registry::OID_SIG_ED25519 {
            Ok(SubjectKey::Ed25519)
        } else {
            Err(CsrError::UnsupportedKey(alg.to_id_string()))
        }
    }
}

fn convert_san(name: &GeneralName) -> Result<Option<San>, CsrError> {
    Ok(Some(match name {
        GeneralName::DNSName(v) => San::Dns(checked_ia5(v)?),
        GeneralName::RFC822Name(v) => San::Email(checked_ia5(v)?),
        GeneralName::URI(v) => San::Uri(checked_ia5(v)?),
        GeneralName::IPAddress(bytes) => San::Ip(match bytes.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("length checked")),
            16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("length checked")),
            n => return Err(CsrError::BadSan(format!("IP address of {n} octets"))),
        }),
        // Other name forms are not carried over from requests.
        _ => return Ok(None),
    }))
}

fn checked_ia5(v: &str) -> Result<String, CsrError> {
    if v.is_empty() || !v.is_ascii() || v.chars().any(|c| c.is_ascii_control()) {
        return Err(CsrError::BadSan(format!(
            "{v:?} is not a printable IA5String"
        )));
    }
    Ok(v.to_owned())
}
