//! Certificate templates: what a request may put into a certificate. Protocols hand the
//! parsed request here; the result is all `ca::issue` needs besides the issuer.

use std::time::Duration;

use crate::attest::DeviceFacts;
use crate::ca::csr::{Attr, Csr, San};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the request names no subject: it needs a common name or a subjectAltName")]
    NoSubject,
    #[error("subjectAltName {0} is not allowed by the profile")]
    SanNotAllowed(String),
    #[error("subject attribute {0} must be a PrintableString")]
    BadAttribute(String),
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

impl SanKinds {
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
        }
    }

    /// Filters the request through the template, adding what an attestation proved. A SAN
    /// the template forbids is an error, not silently dropped: the client asked for something
    /// it will not get.
    pub fn apply(&self, csr: &Csr, attested: Option<&Attested>) -> Result<Contents, PolicyError> {
        // The request's order is kept: some clients compare the subject they asked for.
        let mut subject: Vec<(Attr, String)> = csr
            .subject
            .iter()
            .filter(|(a, _)| self.subject_attrs.contains(a))
            .cloned()
            .collect();
        if let Some(bad) = csr.sans.iter().find(|s| !self.sans.allows(s)) {
            return Err(PolicyError::SanNotAllowed(bad.to_string()));
        }
        let sans = csr.sans.clone();
        if let Some(serial) = attested.and_then(|a| a.facts.serial.as_ref()) {
            if self.subject_serial {
                subject.push((Attr::SerialNumber, serial.clone()));
            }
        }
        let permanent_identifier = attested.map(|a| a.permanent_identifier.clone());
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

/// What device attestation proved, carried into the certificate and its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Attested {
    /// The order's identifier (serial number or UDID), certified as a PermanentIdentifier.
    pub permanent_identifier: String,
    pub facts: DeviceFacts,
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
        self.subject
            .iter()
            .map(|(a, v)| format!("{}={}", a.label(), v))
            .collect::<Vec<_>>()
            .join(",")
    }
}
