//! What an MDM sends a device to point it at enrollca, in Apple's two forms: a configuration
//! profile payload (`com.apple.security.acme`, `com.apple.security.scep`, XML property lists)
//! and a declarative device management credential (`com.apple.credential.acme` / `.scep`, a
//! JSON document the device fetches through a `com.apple.asset.credential.*` declaration).
//! Both carry the same keys; only the wrapping differs.

use base64::Engine;
use plist::{Dictionary, Value};

/// A subject as Apple writes it: `[[["CN", "value"]], [["O", "value"]]]`.
fn subject(attrs: &[(String, String)]) -> Value {
    Value::Array(
        attrs
            .iter()
            .map(|(k, v)| {
                Value::Array(vec![Value::Array(vec![
                    Value::String(k.clone()),
                    Value::String(v.clone()),
                ])])
            })
            .collect(),
    )
}

/// Parses `CN=a,O=b` (RFC 4514 order as written; no escaped commas). Apple payloads take any
/// attribute, so keys are kept as written.
pub(crate) fn parse_subject(text: &str) -> Result<Vec<(String, String)>, crate::csr::CsrError> {
    Ok(crate::csr::split_subject(text)?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The keys every profile payload carries.
fn payload(kind: &str, display: &str) -> Dictionary {
    let uuid = uuid::Uuid::new_v4().to_string().to_uppercase();
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), kind.into());
    d.insert("PayloadVersion".into(), 1.into());
    d.insert(
        "PayloadIdentifier".into(),
        format!("{kind}.enrollca.{uuid}").into(),
    );
    d.insert("PayloadUUID".into(), uuid.into());
    d.insert("PayloadDisplayName".into(), display.into());
    d
}

/// ACME with Managed Device Attestation: a hardware-bound, attested ECC key, client
/// authentication.
pub(crate) struct Acme<'a> {
    pub directory_url: &'a str,
    pub client_identifier: &'a str,
    /// 256 or 384 (P-256 or P-384 in the Secure Enclave).
    pub key_size: u32,
    pub subject: &'a [(String, String)],
}

impl Acme<'_> {
    pub(crate) const CREDENTIAL_TYPE: &'static str = "com.apple.credential.acme";

    fn keys(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("DirectoryURL".into(), self.directory_url.into());
        d.insert("ClientIdentifier".into(), self.client_identifier.into());
        d.insert("KeyType".into(), "ECSECPrimeRandom".into());
        d.insert("KeySize".into(), self.key_size.into());
        d.insert("HardwareBound".into(), true.into());
        d.insert("Attest".into(), true.into());
        d.insert("Subject".into(), subject(self.subject));
        d.insert(
            "ExtendedKeyUsage".into(),
            Value::Array(vec!["1.3.6.1.5.5.7.3.2".into()]),
        );
        // 1: signing (digitalSignature); the key signs TLS client handshakes.
        d.insert("UsageFlags".into(), 1.into());
        d
    }

    /// `com.apple.security.acme`.
    pub(crate) fn profile_payload(&self) -> Dictionary {
        let mut d = payload("com.apple.security.acme", "ACME device identity (enrollca)");
        d.extend(self.keys());
        d
    }

    /// `com.apple.credential.acme`.
    pub(crate) fn credential(&self) -> Credential {
        Credential::new(Self::CREDENTIAL_TYPE, &self.keys())
    }
}

/// SCEP: an RSA key, signing and encryption.
pub(crate) struct Scep<'a> {
    pub url: &'a str,
    pub challenge: Option<&'a str>,
    pub key_size: u32,
    pub subject: &'a [(String, String)],
    /// SHA-1 of the root of what GetCACert serves (what Apple devices compare with).
    pub ca_fingerprint: Vec<u8>,
}

impl Scep<'_> {
    pub(crate) const CREDENTIAL_TYPE: &'static str = "com.apple.credential.scep";

    fn keys(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("URL".into(), self.url.into());
        d.insert("Name".into(), "enrollca".into());
        d.insert("Subject".into(), subject(self.subject));
        if let Some(c) = self.challenge {
            d.insert("Challenge".into(), c.into());
        }
        d.insert("Keysize".into(), self.key_size.into());
        d.insert("Key Type".into(), "RSA".into());
        // 1 signing + 4 encryption.
        d.insert("Key Usage".into(), 5.into());
        d.insert(
            "CAFingerprint".into(),
            Value::Data(self.ca_fingerprint.clone()),
        );
        d.insert("Retries".into(), 3.into());
        d.insert("RetryDelay".into(), 10.into());
        d
    }

    /// `com.apple.security.scep`.
    pub(crate) fn profile_payload(&self) -> Dictionary {
        let mut d = payload("com.apple.security.scep", "SCEP device identity (enrollca)");
        d.insert("PayloadContent".into(), Value::Dictionary(self.keys()));
        d
    }

    /// `com.apple.credential.scep`.
    pub(crate) fn credential(&self) -> Credential {
        Credential::new(Self::CREDENTIAL_TYPE, &self.keys())
    }
}

/// A profile payload as an XML property list.
pub(crate) fn to_xml(d: Dictionary) -> Result<String, plist::Error> {
    let mut out = Vec::new();
    Value::Dictionary(d).to_writer_xml(&mut out)?;
    Ok(String::from_utf8(out).expect("plist writes UTF-8 XML"))
}

/// A declarative credential: the JSON document the device downloads, and its type. The
/// document's bytes are fixed once made (keys sorted, compact), so its SHA-256 and size,
/// which the asset declaration states and the device checks, hold wherever it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credential {
    pub credential_type: &'static str,
    pub document: String,
}

impl Credential {
    fn new(credential_type: &'static str, keys: &Dictionary) -> Self {
        let json = to_json(&Value::Dictionary(keys.clone()));
        Self {
            credential_type,
            document: serde_json::to_string(&json).expect("a JSON value serialises"),
        }
    }

    /// The asset declaration (`com.apple.asset.credential.acme` / `.scep`) that makes the
    /// device fetch the document from `data_url`, with MDM authentication so that only the
    /// device it is for gets it (it may hold a one-time secret).
    pub(crate) fn declaration(&self, identifier: &str, data_url: &str) -> serde_json::Value {
        let kind = self
            .credential_type
            .strip_prefix("com.apple.credential.")
            .expect("credential types are com.apple.credential.*");
        let hash = hex::encode(crate::encoding::sha256(self.document.as_bytes()));
        serde_json::json!({
            "Type": format!("com.apple.asset.credential.{kind}"),
            "Identifier": identifier,
            "ServerToken": hash,
            "Payload": {
                "Reference": {
                    "DataURL": data_url,
                    "ContentType": "application/json",
                    "Size": self.document.len(),
                    "Hash-SHA-256": hash,
                },
                "Authentication": {"Type": "MDM"},
            },
        })
    }
}

/// A property list value as JSON, the way Apple's declarative documents write them: `<data>`
/// as base64, dates as RFC 3339.
fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Dictionary(d) => J::Object(d.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Value::Boolean(b) => J::Bool(*b),
        Value::Data(bytes) => J::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        Value::Date(date) => J::String(date.to_xml_format()),
        Value::Real(r) => serde_json::Number::from_f64(*r).map_or(J::Null, J::Number),
        Value::Integer(i) => match (i.as_signed(), i.as_unsigned()) {
            (Some(n), _) => J::from(n),
            (None, Some(n)) => J::from(n),
            (None, None) => J::Null,
        },
        Value::String(s) => J::String(s.clone()),
        Value::Uid(uid) => J::from(uid.get()),
        _ => J::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_in_order_and_refuse_junk() {
        assert_eq!(
            parse_subject("CN=dev 1, O=Acme").unwrap(),
            vec![("CN".into(), "dev 1".into()), ("O".into(), "Acme".into())]
        );
        assert!(parse_subject("CN").is_err());
        assert!(parse_subject("CN=").is_err());
    }

    #[test]
    fn a_credential_document_is_the_same_bytes_every_time_and_its_declaration_states_them() {
        let subject = [("CN".to_owned(), "mdm-7".to_owned())];
        let scep = Scep {
            url: "http://ca.example/scep",
            challenge: Some("one-time"),
            key_size: 2048,
            subject: &subject,
            ca_fingerprint: vec![0xAB; 20],
        };
        let credential = scep.credential();
        assert_eq!(credential, scep.credential(), "byte-stable");
        let doc: serde_json::Value = serde_json::from_str(&credential.document).unwrap();
        assert_eq!(doc["CAFingerprint"], "q6urq6urq6urq6urq6urq6urq6s=");
        assert_eq!(doc["Key Type"], "RSA");
        assert_eq!(doc["Subject"], serde_json::json!([[["CN", "mdm-7"]]]));
        assert!(!credential.document.contains('\n'), "compact");
        let declaration = credential.declaration("com.enrollca.scep", "https://mdm.example/a");
        let reference = &declaration["Payload"]["Reference"];
        assert_eq!(reference["Size"], credential.document.len());
        assert_eq!(
            reference["Hash-SHA-256"],
            hex::encode(crate::encoding::sha256(credential.document.as_bytes()))
        );
        assert_eq!(declaration["Type"], "com.apple.asset.credential.scep");
    }
}
