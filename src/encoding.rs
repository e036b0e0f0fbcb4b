//! Encodings shared by every layer: the SHA-256 values hashes are stored and compared as,
//! the fingerprints operators compare, and PEM.

/// SHA-256, as the fixed-size value hashes are stored and compared as.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Hex SHA-256 fingerprint with colons, as operators compare them.
pub fn fingerprint(der: &[u8]) -> String {
    sha256(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Every CERTIFICATE block of a PEM file, in DER.
pub fn pem_certs(pem: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    rustls_pemfile::certs(&mut &pem[..])
        .map(|c| c.map(|c| c.to_vec()).map_err(anyhow::Error::from))
        .collect()
}

/// DER as one PEM block of `label`, 64 columns.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// RFC 4043 PermanentIdentifier, the otherName a device certificate names its device by
/// (and a TPM's AIK certificate may).
#[derive(der::Sequence)]
pub(crate) struct PermanentIdentifier<'a> {
    #[asn1(optional = "true")]
    pub(crate) identifier_value: Option<der::asn1::Utf8StringRef<'a>>,
    #[asn1(optional = "true")]
    pub(crate) assigner: Option<der::asn1::ObjectIdentifier>,
}

impl PermanentIdentifier<'_> {
    /// id-on-permanentIdentifier.
    pub(crate) const OID: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.3");
}
