//! CA private keys: generation, storage (0600, optionally encrypted PKCS#8) and signing.
//!
//! Signing goes through OpenSSL rather than ring: RSA private-key operations dominate SCEP
//! enrolment cost and OpenSSL's are the fastest available; the same type will front PKCS#11
//! keys later. rcgen sees the key through its `SigningKey` trait.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::symm::Cipher;
use serde::{Deserialize, Serialize};

use crate::model::KeyFamily;

/// Key types a CA may hold. SCEP needs RSA (devices encrypt to the CA's key); ACME and the
/// root may use ECDSA.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySpec {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
}

impl KeySpec {
    /// The RSA spec a key of `bits` is held to; weaker than 2048 bits is refused.
    pub fn rsa(bits: u32) -> Result<Self, KeyError> {
        match bits {
            b if b >= 4096 => Ok(Self::Rsa4096),
            b if b >= 3072 => Ok(Self::Rsa3072),
            b if b >= 2048 => Ok(Self::Rsa2048),
            b => Err(KeyError::Unsupported(format!(
                "RSA-{b} (at least 2048 bits)"
            ))),
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => KeyFamily::Rsa,
            Self::EcP256 | Self::EcP384 => KeyFamily::Ecdsa,
        }
    }
}

impl std::str::FromStr for KeySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "rsa2048" | "rsa-2048" => Self::Rsa2048,
            "rsa3072" | "rsa-3072" => Self::Rsa3072,
            "rsa4096" | "rsa-4096" => Self::Rsa4096,
            "p256" | "ec-p256" => Self::EcP256,
            "p384" | "ec-p384" => Self::EcP384,
            _ => {
                return Err(format!(
                    "unknown key type `{s}` (rsa2048, rsa3072, rsa4096, p256, p384)"
                ));
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: the key is encrypted; set ENROLLCA_CA_PASSPHRASE or ca.passphrase_file")]
    PassphraseRequired(String),
    #[error("{0}: wrong passphrase (or the key file is corrupt)")]
    WrongPassphrase(String),
    #[error("{path}: permissions {mode:04o} are too open for a CA key; run chmod 600")]
    TooOpen { path: String, mode: u32 },
    #[error("{0}: not a PEM private key")]
    Malformed(String),
    #[error("unsupported key: {0}")]
    Unsupported(String),
    #[error("key generation failed: {0}")]
    Generate(openssl::error::ErrorStack),
    #[error("PKCS#11: {0}")]
    Token(String),
    #[error("{0} is held in a PKCS#11 token: {1}")]
    InToken(String, &'static str),
}

/// Where a CA key lives.
enum Backing {
    /// In memory, from a (0600, optionally encrypted) file.
    File(PKey<Private>),
    /// In a PKCS#11 token: only the token signs.
    Token(super::pkcs11::TokenKey),
}

/// A CA signing key.
pub struct CaKey {
    backing: Backing,
    spki: rcgen::SubjectPublicKeyInfo,
    alg: &'static rcgen::SignatureAlgorithm,
    digest: MessageDigest,
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaKey({:?})", self.alg)
    }
}

impl CaKey {
    pub fn generate(spec: KeySpec) -> Result<Self, KeyError> {
        let pkey = match spec {
            KeySpec::Rsa2048 => rsa(2048),
            KeySpec::Rsa3072 => rsa(3072),
            KeySpec::Rsa4096 => rsa(4096),
            KeySpec::EcP256 => ec(Nid::X9_62_PRIME256V1),
            KeySpec::EcP384 => ec(Nid::SECP384R1),
        }
        .map_err(KeyError::Generate)?;
        Self::from_pkey(pkey)
    }

    fn from_pkey(pkey: PKey<Private>) -> Result<Self, KeyError> {
        let (alg, digest) = match pkey.id() {
            Id::RSA => {
                KeySpec::rsa(pkey.bits())?;
                (&rcgen::PKCS_RSA_SHA256, MessageDigest::sha256())
            }
            Id::EC => {
                let nid = pkey.ec_key().ok().and_then(|k| k.group().curve_name());
                match nid {
                    Some(Nid::X9_62_PRIME256V1) => {
                        (&rcgen::PKCS_ECDSA_P256_SHA256, MessageDigest::sha256())
                    }
                    Some(Nid::SECP384R1) => {
                        (&rcgen::PKCS_ECDSA_P384_SHA384, MessageDigest::sha384())
                    }
                    other => return Err(KeyError::Unsupported(format!("EC curve {other:?}"))),
                }
            }
            other => return Err(KeyError::Unsupported(format!("{other:?}"))),
        };
        let spki_der = pkey
            .public_key_to_der()
            .map_err(|e| KeyError::Unsupported(e.to_string()))?;
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&spki_der)
            .map_err(|e| KeyError::Unsupported(e.to_string()))?;
        Ok(Self {
            backing: Backing::File(pkey),
            spki,
            alg,
            digest,
        })
    }

    /// The key a `pkcs11:` URI names, in its token.
    pub fn from_token(uri: &str, access: &super::pkcs11::Pkcs11Access) -> Result<Self, KeyError> {
        let key = super::pkcs11::TokenKey::open(uri, access)?;
        let (alg, digest) = match key.spec {
            KeySpec::EcP256 => (&rcgen::PKCS_ECDSA_P256_SHA256, MessageDigest::sha256()),
            KeySpec::EcP384 => (&rcgen::PKCS_ECDSA_P384_SHA384, MessageDigest::sha384()),
            _ => (&rcgen::PKCS_RSA_SHA256, MessageDigest::sha256()),
        };
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&key.spki_der)
            .map_err(|e| KeyError::Unsupported(e.to_string()))?;
        Ok(Self {
            backing: Backing::Token(key),
            spki,
            alg,
            digest,
        })
    }

    /// The key type, so a successor can be made alike.
    pub fn spec(&self) -> KeySpec {
        match &self.backing {
            Backing::Token(t) => t.spec,
            Backing::File(pkey) => match (pkey.id(), pkey.bits()) {
                // from_pkey admits no RSA key under 2048 bits.
                (Id::RSA, b) => KeySpec::rsa(b).unwrap_or(KeySpec::Rsa2048),
                _ if self.alg == &rcgen::PKCS_ECDSA_P384_SHA384 => KeySpec::EcP384,
                _ => KeySpec::EcP256,
            },
        }
    }

    pub fn family(&self) -> KeyFamily {
        self.spec().family()
    }

    /// The `pkcs11:` URI of a token key; `None` for a file key.
    pub fn token_uri(&self) -> Option<&str> {
        match &self.backing {
            Backing::Token(t) => Some(t.uri()),
            Backing::File(_) => None,
        }
    }

    /// The AlgorithmIdentifier of its signatures (`sign` hashes as this names), for
    /// structures signed outside rcgen (OCSP responses).
    pub fn signature_algorithm(&self) -> spki::AlgorithmIdentifierOwned {
        use const_oid::db::rfc5912::{
            ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, SHA_256_WITH_RSA_ENCRYPTION,
        };
        let (oid, parameters) = if self.alg == &rcgen::PKCS_RSA_SHA256 {
            (SHA_256_WITH_RSA_ENCRYPTION, Some(der::Any::null()))
        } else if self.alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            (ECDSA_WITH_SHA_384, None)
        } else {
            (ECDSA_WITH_SHA_256, None)
        };
        spki::AlgorithmIdentifierOwned { oid, parameters }
    }

    /// The OpenSSL key, for protocol code that must decrypt (SCEP envelopes) or sign CMS, and
    /// for cross-certifying roots. Token keys have none.
    pub fn pkey(&self) -> Result<&PKey<Private>, KeyError> {
        match &self.backing {
            Backing::File(pkey) => Ok(pkey),
            Backing::Token(t) => Err(KeyError::InToken(
                t.uri().to_owned(),
                "SCEP decryption and root cross-certification need a file key",
            )),
        }
    }

    /// Parses a PEM private key (PKCS#8, encrypted PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(
        pem: &[u8],
        passphrase: Option<&Passphrase>,
        origin: &str,
    ) -> Result<Self, KeyError> {
        let text = String::from_utf8_lossy(pem);
        let encrypted =
            text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED");
        let pkey = match (encrypted, passphrase) {
            (true, None) => return Err(KeyError::PassphraseRequired(origin.into())),
            (true, Some(pass)) => PKey::private_key_from_pem_passphrase(pem, pass.as_bytes())
                .map_err(|_| KeyError::WrongPassphrase(origin.into()))?,
            (false, _) => {
                PKey::private_key_from_pem(pem).map_err(|_| KeyError::Malformed(origin.into()))?
            }
        };
        Self::from_pkey(pkey)
    }

    /// PKCS#8 PEM; encrypted (PBES2, AES-256-CBC) when a passphrase is given.
    pub fn to_pem(&self, passphrase: Option<&Passphrase>) -> Result<Vec<u8>, KeyError> {
        let pkey = self.pkey()?;
        Ok(match passphrase {
            Some(pass) => {
                pkey.private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), pass.as_bytes())
            }
            None => pkey.private_key_to_pem_pkcs8(),
        }
        .expect("PKCS#8 encoding of a valid key cannot fail"))
    }

    /// Loads a key file, refusing files readable by group or others.
    pub fn load(path: &Path, passphrase: Option<&Passphrase>) -> Result<Self, KeyError> {
        let origin = path.display().to_string();
        let io = |source| KeyError::Io {
            path: origin.clone(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen { path: origin, mode });
        }
        let pem = std::fs::read(path).map_err(io)?;
        Self::from_pem(&pem, passphrase, &origin)
    }

    /// Writes the key to a new file created with mode 0600; never overwrites.
    pub fn save(&self, path: &Path, passphrase: Option<&Passphrase>) -> Result<(), KeyError> {
        crate::durable::create_private(path, &self.to_pem(passphrase)?).map_err(|source| {
            KeyError::Io {
                path: path.display().to_string(),
                source,
            }
        })
    }

    pub fn spki_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(self)
    }
}

fn rsa(bits: u32) -> Result<PKey<Private>, openssl::error::ErrorStack> {
    PKey::from_rsa(Rsa::generate(bits)?)
}

fn ec(nid: Nid) -> Result<PKey<Private>, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(nid)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        self.spki.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let pkey = match &self.backing {
            Backing::File(pkey) => pkey,
            Backing::Token(t) => {
                return t.sign(msg).map_err(|e| {
                    tracing::error!(error = %e, "token signing failed");
                    rcgen::Error::RingUnspecified
                });
            }
        };
        let mut signer =
            Signer::new(self.digest, pkey).map_err(|_| rcgen::Error::RingUnspecified)?;
        signer
            .update(msg)
            .map_err(|_| rcgen::Error::RingUnspecified)?;
        signer
            .sign_to_vec()
            .map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// What unlocks CA keys: the passphrase of file keys; the PKCS#11 module and PIN of token
/// keys (key files named `pkcs11:…`).
#[derive(Clone, Default)]
pub struct KeyAccess {
    pub passphrase: Option<Passphrase>,
    pub pkcs11: Option<std::sync::Arc<super::pkcs11::Pkcs11Access>>,
}

impl KeyAccess {
    /// The key `key_file` names: a `pkcs11:` URI, or a path relative to `data_dir`.
    pub fn load(&self, key_file: &str, data_dir: &Path) -> Result<CaKey, KeyError> {
        if key_file.starts_with(super::pkcs11::URI_SCHEME) {
            let access = self.pkcs11.as_deref().ok_or_else(|| {
                KeyError::Token(format!(
                    "{key_file} is in a token but ca.pkcs11_module is not set"
                ))
            })?;
            return CaKey::from_token(key_file, access);
        }
        CaKey::load(&data_dir.join(key_file), self.passphrase.as_ref())
    }
}

/// A CA key passphrase. Taken from `ENROLLCA_CA_PASSPHRASE` or a file, never from argv;
/// never printed.
#[derive(Clone)]
pub struct Passphrase(String);

impl Passphrase {
    pub fn new(s: String) -> Option<Self> {
        let s = s.trim_end_matches(['\r', '\n']).to_owned();
        (!s.is_empty()).then_some(Self(s))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The CA key passphrase: `ENROLLCA_CA_PASSPHRASE`, else the file `ca.passphrase_file` names.
pub fn passphrase(file: Option<&Path>) -> anyhow::Result<Option<Passphrase>> {
    if let Ok(p) = std::env::var("ENROLLCA_CA_PASSPHRASE") {
        return Ok(Passphrase::new(p));
    }
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("passphrase file {}: {e}", path.display()))?;
            Ok(Passphrase::new(text))
        }
        None => Ok(None),
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_keys_are_0600_and_encrypted_with_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let pass = Passphrase::new("correct horse".into()).unwrap();
        let key = CaKey::generate(KeySpec::EcP256).unwrap();
        key.save(&path, Some(&pass)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

        let loaded = CaKey::load(&path, Some(&pass)).unwrap();
        assert_eq!(loaded.spki_der(), key.spki_der());
        let wrong = Passphrase::new("wrong".into()).unwrap();
        assert!(matches!(
            CaKey::load(&path, Some(&wrong)),
            Err(KeyError::WrongPassphrase(_))
        ));
        assert!(matches!(
            CaKey::load(&path, None),
            Err(KeyError::PassphraseRequired(_))
        ));
        // Never overwrites.
        assert!(key.save(&path, None).is_err());
    }

    #[test]
    fn group_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        CaKey::generate(KeySpec::EcP256)
            .unwrap()
            .save(&path, None)
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = CaKey::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("too open"), "{err}");
    }

    #[test]
    fn rsa_below_2048_is_unsupported() {
        let pkey = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        let pem = pkey.private_key_to_pem_pkcs8().unwrap();
        assert!(matches!(
            CaKey::from_pem(&pem, None, "t"),
            Err(KeyError::Unsupported(_))
        ));
    }
}
