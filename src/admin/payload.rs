//! Apple configuration profile payloads an MDM embeds to point devices at enrollca:
//! `com.apple.security.acme` (Managed Device Attestation) and `com.apple.security.scep`.
//! Written with the `plist` crate as XML property lists.

use plist::{Dictionary, Value};

/// A subject as Apple payloads write it: `[[["CN", "value"]], [["O", "value"]]]`.
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
pub fn parse_subject(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(crate::ca::csr::split_subject(text)?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The keys every payload carries.
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

pub struct AcmePayload<'a> {
    pub directory_url: &'a str,
    pub client_identifier: &'a str,
    /// 256 or 384 (P-256 or P-384 in the Secure Enclave).
    pub key_size: u32,
    pub subject: &'a [(String, String)],
}

/// `com.apple.security.acme`: a hardware-bound, attested ECC key, client authentication.
pub fn acme(p: &AcmePayload<'_>) -> Dictionary {
    let mut d = payload("com.apple.security.acme", "ACME device identity (enrollca)");
    d.insert("DirectoryURL".into(), p.directory_url.into());
    d.insert("ClientIdentifier".into(), p.client_identifier.into());
    d.insert("KeyType".into(), "ECSECPrimeRandom".into());
    d.insert("KeySize".into(), p.key_size.into());
    d.insert("HardwareBound".into(), true.into());
    d.insert("Attest".into(), true.into());
    d.insert("Subject".into(), subject(p.subject));
    d.insert(
        "ExtendedKeyUsage".into(),
        Value::Array(vec!["1.3.6.1.5.5.7.3.2".into()]),
    );
    // 1: signing (digitalSignature); the key signs TLS client handshakes.
    d.insert("UsageFlags".into(), 1.into());
    d
}

pub struct ScepPayload<'a> {
    pub url: &'a str,
    pub challenge: Option<&'a str>,
    pub key_size: u32,
    pub subject: &'a [(String, String)],
    /// SHA-1 of the root of what GetCACert serves (what Apple devices compare with).
    pub ca_fingerprint: Vec<u8>,
}

/// `com.apple.security.scep`: an RSA key, signing and encryption.
pub fn scep(p: &ScepPayload<'_>) -> Dictionary {
    let mut content = Dictionary::new();
    content.insert("URL".into(), p.url.into());
    content.insert("Name".into(), "enrollca".into());
    content.insert("Subject".into(), subject(p.subject));
    if let Some(c) = p.challenge {
        content.insert("Challenge".into(), c.into());
    }
    content.insert("Keysize".into(), p.key_size.into());
    content.insert("Key Type".into(), "RSA".into());
    // 1 signing + 4 encryption.
    content.insert("Key Usage".into(), 5.into());
    content.insert(
        "CAFingerprint".into(),
        Value::Data(p.ca_fingerprint.clone()),
    );
    content.insert("Retries".into(), 3.into());
    content.insert("RetryDelay".into(), 10.into());
    let mut d = payload("com.apple.security.scep", "SCEP device identity (enrollca)");
    d.insert("PayloadContent".into(), Value::Dictionary(content));
    d
}

/// The payload as an XML property list.
pub fn to_xml(d: Dictionary) -> anyhow::Result<String> {
    let mut out = Vec::new();
    Value::Dictionary(d).to_writer_xml(&mut out)?;
    Ok(String::from_utf8(out)?)
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
}
