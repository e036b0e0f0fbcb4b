//! Certificate templates: what a request may put into a certificate. Protocols hand the
//! parsed request here; the result is all `ca::issue` needs besides the issuer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::csr::{Attr, Csr, Names, San};
use crate::model::{DeviceFacts, DeviceId};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the request names no subject: it needs a common name or a subjectAltName")]
    NoSubject,
    #[error("subjectAltName {0} is not allowed by the profile")]
    SanNotAllowed(String),
    #[error("subject attribute {0} must be a PrintableString")]
    BadAttribute(String),
    #[error("the request's subject is not the one stated for this enrolment")]
    SubjectNotStated,
    #[error("the request's subjectAltNames are not the ones stated for this enrolment")]
    SansNotStated,
    #[error("the request's common name must be the device id {0}")]
    CommonNameNotDevice(DeviceId),
}

/// Whom a certificate is for, as the party that vouched for the request said it: the device
/// (recorded with the certificate) and the names it states.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vouched {
    pub device: Option<DeviceId>,
    pub names: Names,
}

/// The same items in any order: a client may order its request differently from the MDM.
fn same_items<T: Ord + Clone>(a: &[T], b: &[T]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// Extended key usages a template may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eku {
    ClientAuth,
    ServerAuth,
}

/// Which subjectAltName forms a profile copies from requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanKinds {
    pub dns: bool,
    pub ip: bool,
    pub email: bool,
    pub uri: bool,
}

/// A subjectAltName form, as configuration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SanKind {
    Dns,
    Ip,
    Email,
    Uri,
}

impl std::str::FromStr for SanKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dns" => Ok(Self::Dns),
            "ip" => Ok(Self::Ip),
            "email" => Ok(Self::Email),
            "uri" => Ok(Self::Uri),
            other => Err(format!("{other:?} is not one of dns, ip, email, uri")),
        }
    }
}

impl SanKinds {
    /// Exactly the listed forms.
    pub fn only(kinds: &[SanKind]) -> Self {
        Self {
            dns: kinds.contains(&SanKind::Dns),
            ip: kinds.contains(&SanKind::Ip),
            email: kinds.contains(&SanKind::Email),
            uri: kinds.contains(&SanKind::Uri),
        }
    }

    fn allows(&self, san: &San) -> bool {
        match san {
            San::Dns(_) => self.dns,
            San::Ip(_) => self.ip,
            San::Email(_) => self.email,
            San::Uri(_) => self.uri,
        }
    }
}

/// A certificate template (one per profile).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub lifetime: Duration,
    pub backdate: Duration,
    /// Subject attributes copied from the request; others are dropped.
    pub subject_attrs: Vec<Attr>,
    pub sans: SanKinds,
    pub eku: Vec<Eku>,
    /// For attested devices: the attested serial number becomes the subject's serialNumber.
    pub subject_serial: bool,
    /// When the device is known, the common name is its id: a request naming another is
    /// refused, one naming none gets it. Relying parties (RADIUS, VPNs) match on the CN.
    pub cn_is_device: bool,
}

impl Template {
    /// The device identity template: client authentication, subject and names from the request.
    pub fn device(lifetime: Duration, backdate: Duration) -> Self {
        Self {
            name: "device".into(),
            lifetime,
            backdate,
            subject_attrs: vec![
                Attr::CommonName,
                Attr::SerialNumber,
                Attr::OrganizationalUnit,
                Attr::Organization,
                Attr::Locality,
                Attr::State,
                Attr::Country,
            ],
            sans: SanKinds {
                dns: true,
                ip: true,
                email: true,
                uri: true,
            },
            eku: vec![Eku::ClientAuth],
            subject_serial: false,
            cn_is_device: false,
        }
    }

    /// The SCEP template: a device identity whose names come from whoever vouched for the
    /// request (see `Names`); of the request's own SANs only the kinds `sans` allows.
    pub fn scep(lifetime: Duration, backdate: Duration, sans: SanKinds) -> Self {
        Self {
            name: "scep".into(),
            sans,
            cn_is_device: true,
            ..Self::device(lifetime, backdate)
        }
    }

    /// The attested device template (device-attest-01): the subject from the request (but
    /// never its serialNumber, which only the attestation may vouch for), no names from the
    /// request; the PermanentIdentifier comes from the order.
    pub fn attested(
        name: &str,
        lifetime: Duration,
        backdate: Duration,
        subject_serial: bool,
    ) -> Self {
        let mut t = Self::device(lifetime, backdate);
        t.name = name.to_owned();
        t.subject_attrs.retain(|a| *a != Attr::SerialNumber);
        t.sans = SanKinds {
            dns: false,
            ip: false,
            email: false,
            uri: false,
        };
        t.subject_serial = subject_serial;
        t
    }

    /// The ACME server template: names only (as SANs, the common name if the request has
    /// one), server and client authentication.
    pub fn server(name: &str, lifetime: Duration, backdate: Duration) -> Self {
        Self {
            name: name.to_owned(),
            lifetime,
            backdate,
            subject_attrs: vec![Attr::CommonName],
            sans: SanKinds {
                dns: true,
                ip: true,
                email: false,
                uri: false,
            },
            eku: vec![Eku::ServerAuth, Eku::ClientAuth],
            subject_serial: false,
            cn_is_device: false,
        }
    }

    /// Filters the request through the template, adding what an attestation proved and
    /// holding it to what was stated for it. A SAN the template forbids, or a name other than
    /// the stated one, is an error, not silently replaced: the client asked for something it
    /// will not get.
    pub fn apply(
        &self,
        csr: &Csr,
        identity: Option<&DeviceIdentity>,
        device: Option<&DeviceId>,
        stated: &Names,
    ) -> Result<Contents, PolicyError> {
        let mut subject = match &stated.subject {
            // An empty request subject takes the stated one.
            Some(names) if csr.subject.is_empty() || same_items(&csr.subject, names) => {
                names.clone()
            }
            Some(_) => return Err(PolicyError::SubjectNotStated),
            // The request's order is kept: some clients compare the subject they asked for.
            None => {
                let mut subject: Vec<(Attr, String)> = csr
                    .subject
                    .iter()
                    .filter(|(a, _)| self.subject_attrs.contains(a))
                    .cloned()
                    .collect();
                if let (true, Some(device)) = (self.cn_is_device, device) {
                    match csr.common_name() {
                        Some(cn) if cn == device.as_str() => {}
                        Some(_) => return Err(PolicyError::CommonNameNotDevice(device.clone())),
                        None => subject.insert(0, (Attr::CommonName, device.as_str().to_owned())),
                    }
                }
                subject
            }
        };
        let sans = match &stated.sans {
            Some(names) if csr.sans.is_empty() || same_items(&csr.sans, names) => names.clone(),
            Some(_) => return Err(PolicyError::SansNotStated),
            None => {
                if let Some(bad) = csr.sans.iter().find(|s| !self.sans.allows(s)) {
                    return Err(PolicyError::SanNotAllowed(bad.to_string()));
                }
                csr.sans.clone()
            }
        };
        // Only an attestation vouches for a serialNumber attribute.
        let attested_serial = identity
            .and_then(|i| i.facts.as_ref())
            .and_then(|f| f.serial.as_ref());
        if let (true, Some(serial)) = (self.subject_serial, attested_serial) {
            subject.push((Attr::SerialNumber, serial.clone()));
        }
        let permanent_identifier = identity.map(|i| i.permanent_identifier.clone());
        let has_cn = subject.iter().any(|(a, _)| *a == Attr::CommonName);
        if !has_cn && sans.is_empty() && permanent_identifier.is_none() {
            return Err(PolicyError::NoSubject);
        }
        Ok(Contents {
            subject,
            sans,
            permanent_identifier,
        })
    }
}

/// The device a device-attest-01 certificate is for, carried into the certificate and its
/// record.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceIdentity {
    /// Its serial number or UDID, certified as a PermanentIdentifier.
    pub permanent_identifier: String,
    /// What its attestation proved; `None` when the device could not attest and its one-time
    /// ClientIdentifier alone vouched for it.
    pub facts: Option<DeviceFacts>,
}

/// What the certificate will say about its subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents {
    pub subject: Vec<(Attr, String)>,
    pub sans: Vec<San>,
    /// A PermanentIdentifier otherName SAN (RFC 4043), for attested devices.
    pub permanent_identifier: Option<String>,
}

impl Contents {
    /// RFC 4514-style rendering (most specific first), for records and logs.
    pub fn subject_string(&self) -> String {
        subject_string(&self.subject)
    }
}

/// `CN=a,O=b`: the form `ca::csr::parse_subject` reads.
pub fn subject_string(subject: &[(Attr, String)]) -> String {
    subject
        .iter()
        .map(|(a, v)| format!("{}={}", a.label(), v))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::csr::parse_subject;

    fn csr(subject: &str, sans: &[&str]) -> Csr {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (attr, value) in parse_subject(subject).unwrap_or_default() {
            let ty = match attr {
                Attr::CommonName => rcgen::DnType::CommonName,
                Attr::Organization => rcgen::DnType::OrganizationName,
                _ => unreachable!("only CN and O in these tests"),
            };
            params.distinguished_name.push(ty, value);
        }
        Csr::from_der(params.serialize_request(&key).unwrap().der()).unwrap()
    }

    fn scep() -> Template {
        Template::scep(
            Duration::from_secs(3600),
            Duration::ZERO,
            SanKinds::only(&[]),
        )
    }

    fn device(id: &str) -> DeviceId {
        id.parse().unwrap()
    }

    #[test]
    fn a_known_device_is_the_common_name() {
        let t = scep();
        let dev = device("dev-42");
        let none = Names::default();
        assert_eq!(
            t.apply(&csr("CN=dev-42,O=Acme", &[]), None, Some(&dev), &none)
                .unwrap()
                .subject_string(),
            "CN=dev-42,O=Acme"
        );
        assert_eq!(
            t.apply(&csr("O=Acme", &[]), None, Some(&dev), &none)
                .unwrap()
                .subject_string(),
            "CN=dev-42,O=Acme",
            "a request without a CN gets the device's"
        );
        assert_eq!(
            t.apply(&csr("CN=victim", &[]), None, Some(&dev), &none),
            Err(PolicyError::CommonNameNotDevice(dev.clone()))
        );
        // Without a known device the CN is the request's (the static challenge).
        assert_eq!(
            t.apply(&csr("CN=anything", &[]), None, None, &none)
                .unwrap()
                .subject_string(),
            "CN=anything"
        );
        // The operator's template does not tie the CN to the device.
        let admin = Template::device(Duration::from_secs(3600), Duration::ZERO);
        assert!(
            admin
                .apply(&csr("CN=other", &[]), None, Some(&dev), &none)
                .is_ok()
        );
    }

    #[test]
    fn stated_names_are_what_the_certificate_gets() {
        let t = scep();
        let stated = Names {
            subject: Some(parse_subject("CN=dev-43,O=Example").unwrap()),
            sans: Some(vec!["DNS:dev-43.example".parse().unwrap()]),
        };
        let dev = device("dev-43");
        for request in [
            csr("", &[]),
            csr("O=Example,CN=dev-43", &["dev-43.example"]),
        ] {
            let c = t.apply(&request, None, Some(&dev), &stated).unwrap();
            assert_eq!(c.subject_string(), "CN=dev-43,O=Example");
            assert_eq!(c.sans, stated.sans.clone().unwrap());
        }
        assert_eq!(
            t.apply(&csr("CN=dev-43", &[]), None, Some(&dev), &stated),
            Err(PolicyError::SubjectNotStated)
        );
        assert_eq!(
            t.apply(&csr("", &["other.example"]), None, Some(&dev), &stated),
            Err(PolicyError::SansNotStated)
        );
        // Stated SANs need no SAN kind from the template; unstated ones do.
        assert_eq!(
            t.apply(&csr("CN=x", &["x.example"]), None, None, &Names::default()),
            Err(PolicyError::SanNotAllowed("DNS:x.example".into()))
        );
    }

    #[test]
    fn names_round_trip_through_serde() {
        let names = Names {
            subject: Some(parse_subject("CN=a,O=b,2.5.4.5=S1").unwrap()),
            sans: Some(vec![
                "DNS:a.example".parse().unwrap(),
                "IP:192.0.2.1".parse().unwrap(),
                "email:a@example.com".parse().unwrap(),
                "URI:urn:x".parse().unwrap(),
            ]),
        };
        let json = serde_json::to_string(&names).unwrap();
        assert_eq!(serde_json::from_str::<Names>(&json).unwrap(), names);
        assert!(serde_json::from_str::<Names>(r#"{"sans":["FTP:x"]}"#).is_err());
        assert!(serde_json::from_str::<Names>(r#"{"subject":[["XX","v"]]}"#).is_err());
    }
}
