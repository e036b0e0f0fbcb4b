//! Certificate chains up to an attestation CA's root: the part every x5c-based format shares.
//! An attestation chain is not a TLS chain (no names, no key usages a WebPKI verifier would
//! insist on), so this checks what attestation needs: each certificate signed by the next and
//! valid now, the top one signed by a trusted root.

use std::collections::HashSet;
use std::sync::Mutex;

use x509_parser::certificate::Validity;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::AttestError;

/// Intermediates remembered as verified against a root (signature only; validity is
/// checked on every use). Attestation CAs have few; the bound only guards memory.
const VERIFIED_CACHE: usize = 64;

/// The roots one format trusts, and the longest chain it accepts below them.
pub(super) struct Anchors {
    roots: Vec<Root>,
    max_chain: usize,
    /// Whether the leaf's issuer may be an end entity: Android's attestation key signs the
    /// leaf under a certificate marked `CA:FALSE` (its chains are not RFC 5280 chains).
    leaf_issuer_may_be_end_entity: bool,
    /// Intermediates (DER) that complete a chain the client sent short: a maker's CAs that
    /// devices do not carry. Not anchors: each is checked like a certificate the client sent.
    intermediates: Vec<Vec<u8>>,
    /// SHA-256 of certificates whose signature by a root has been verified.
    verified: Mutex<HashSet<[u8; 32]>>,
}

/// A trust anchor: a name and a key (a root re-issued with the same key is the same anchor).
struct Root {
    /// The subject Name, DER, as an issuer name must match it.
    subject: Vec<u8>,
    /// The subject for messages.
    name: String,
    validity: Validity,
    /// SubjectPublicKeyInfo, DER.
    spki: Vec<u8>,
}

impl Root {
    fn parse(der: &[u8]) -> Result<Self, AttestError> {
        let Ok(([], cert)) = X509Certificate::from_der(der) else {
            return Err(AttestError::Anchor(
                "a trusted attestation root is not a DER certificate".into(),
            ));
        };
        Ok(Self {
            subject: cert.subject().as_raw().to_vec(),
            name: cert.subject().to_string(),
            validity: cert.validity().clone(),
            spki: cert.public_key().raw.to_vec(),
        })
    }
}

impl Anchors {
    pub(super) fn new(max_chain: usize) -> Self {
        Self {
            roots: Vec::new(),
            max_chain,
            leaf_issuer_may_be_end_entity: false,
            intermediates: Vec::new(),
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Accepts a leaf signed by a certificate that is not a CA's (Android's attestation key).
    pub(super) fn leaf_issuer_may_be_end_entity(mut self) -> Self {
        self.leaf_issuer_may_be_end_entity = true;
        self
    }

    /// Completes short chains with these intermediates (DER); none of them unless all parse.
    pub(super) fn completed_by(mut self, ders: &[Vec<u8>]) -> Result<Self, AttestError> {
        for der in ders {
            if !matches!(X509Certificate::from_der(der), Ok(([], _))) {
                return Err(AttestError::Anchor(
                    "a shipped attestation intermediate is not a DER certificate".into(),
                ));
            }
        }
        self.intermediates.extend_from_slice(ders);
        Ok(self)
    }

    /// Trusts more roots (DER); none of them unless all parse, so a caller adding one
    /// file's roots at a time can say which file is wrong.
    pub(super) fn trust(&mut self, ders: &[Vec<u8>]) -> Result<(), AttestError> {
        let roots = ders
            .iter()
            .map(|d| Root::parse(d))
            .collect::<Result<Vec<_>, _>>()?;
        self.roots.extend(roots);
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.roots.len()
    }

    /// Verifies `ders` (leaf first) up to a trust anchor, completed by our intermediates
    /// where it stops short of one, every certificate valid at `now`; returns them parsed,
    /// leaf first, without a root the client appended.
    pub(super) fn verify<'a>(
        &'a self,
        ders: &'a [Vec<u8>],
        now: ASN1Time,
    ) -> Result<Vec<X509Certificate<'a>>, AttestError> {
        let mut certs = ders
            .iter()
            .enumerate()
            .map(|(i, der)| match X509Certificate::from_der(der) {
                Ok(([], cert)) => Ok(cert),
                _ => Err(AttestError::Chain(format!(
                    "x5c[{i}] is not a DER certificate"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A client that also sends the root gains nothing by it: the anchor is ours, and a
        // copy of it (perhaps an older issue of the same key) is not checked again.
        if certs.len() > 1 && certs.last().is_some_and(|top| self.is_anchor(top)) {
            certs.pop();
        }
        if certs.is_empty() {
            return Err(AttestError::Chain("`x5c` is empty".into()));
        }
        while let Some(top) = certs.last()
            && !self
                .roots
                .iter()
                .any(|r| r.subject == top.issuer().as_raw())
            && certs.len() < self.max_chain
        {
            let issuer = top.issuer().as_raw();
            let Some(next) = self.intermediates.iter().find_map(|der| {
                X509Certificate::from_der(der)
                    .ok()
                    .map(|(_, c)| c)
                    .filter(|c| c.subject().as_raw() == issuer)
            }) else {
                break;
            };
            certs.push(next);
        }
        if certs.len() > self.max_chain {
            return Err(AttestError::Chain(format!(
                "{} certificates, more than the {} accepted",
                certs.len(),
                self.max_chain
            )));
        }
        for (i, cert) in certs.iter().enumerate() {
            valid_at(
                cert.validity(),
                now,
                &format!("x5c[{i}] ({})", cert.subject()),
            )?;
        }
        for (i, pair) in certs.windows(2).enumerate() {
            let (child, parent) = (&pair[0], &pair[1]);
            let ca_required = i > 0 || !self.leaf_issuer_may_be_end_entity;
            if child.issuer().as_raw() != parent.subject().as_raw()
                || (ca_required && !parent.is_ca())
            {
                return Err(AttestError::Chain(format!(
                    "x5c[{i}] ({}) is not issued by x5c[{}] ({})",
                    child.subject(),
                    i + 1,
                    parent.subject()
                )));
            }
            child
                .verify_signature(Some(parent.public_key()))
                .map_err(|_| {
                    AttestError::Chain(format!("the signature on x5c[{i}] does not verify"))
                })?;
        }
        let top_index = certs.len() - 1;
        let top = &certs[top_index];
        self.anchored(top, top.as_raw(), now).map_err(|why| {
            AttestError::Chain(format!("x5c[{top_index}] ({}): {why}", top.subject()))
        })?;
        Ok(certs)
    }

    /// A self-signed certificate with a trusted root's name and key.
    fn is_anchor(&self, cert: &X509Certificate<'_>) -> bool {
        let subject = cert.subject().as_raw();
        cert.issuer().as_raw() == subject
            && self
                .roots
                .iter()
                .any(|r| r.subject == subject && r.spki == cert.public_key().raw)
    }

    /// Whether a trusted root (valid now) signed `cert`.
    fn anchored(
        &self,
        cert: &X509Certificate<'_>,
        der: &[u8],
        now: ASN1Time,
    ) -> Result<(), String> {
        let digest = crate::encoding::sha256(der);
        let issuer = cert.issuer().as_raw();
        let mut named = false;
        for root in &self.roots {
            if root.subject != issuer {
                continue;
            }
            named = true;
            valid_at(&root.validity, now, &format!("the root {}", root.name))
                .map_err(|e| e.to_string())?;
            let cached = self
                .verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&digest);
            if cached {
                return Ok(());
            }
            let Ok(([], key)) = SubjectPublicKeyInfo::from_der(&root.spki) else {
                continue;
            };
            if cert.verify_signature(Some(&key)).is_ok() {
                let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if verified.len() >= VERIFIED_CACHE {
                    verified.clear();
                }
                verified.insert(digest);
                return Ok(());
            }
        }
        Err(if named {
            "its signature does not verify with the trusted root of that name".into()
        } else {
            format!(
                "its issuer ({}) is not a trusted attestation root",
                cert.issuer()
            )
        })
    }
}

fn valid_at(v: &Validity, now: ASN1Time, what: &str) -> Result<(), AttestError> {
    if now < v.not_before {
        return Err(AttestError::Chain(format!(
            "{what} is not valid before {}",
            v.not_before
        )));
    }
    if now > v.not_after {
        return Err(AttestError::Chain(format!(
            "{what} expired at {}",
            v.not_after
        )));
    }
    Ok(())
}

/// `now` as x509-parser compares it.
pub(super) fn asn1_now(now: time::OffsetDateTime) -> Result<ASN1Time, AttestError> {
    ASN1Time::from_timestamp(now.unix_timestamp())
        .map_err(|_| AttestError::Chain("the current time is out of range".into()))
}

/// The `x5c` member of a statement: a non-empty array of byte strings.
pub(super) fn x5c(object: &super::AttestationObject) -> Result<Vec<Vec<u8>>, AttestError> {
    use ciborium::Value;
    match object.member("x5c") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::Bytes(b) => Ok(b.clone()),
                _ => Err(AttestError::Malformed(
                    "an `x5c` entry is not a byte string".into(),
                )),
            })
            .collect(),
        Some(Value::Array(_)) => Err(AttestError::Chain("`x5c` is empty".into())),
        Some(_) => Err(AttestError::Malformed("`x5c` is not an array".into())),
        None => Err(AttestError::Malformed("`attStmt` has no `x5c`".into())),
    }
}
