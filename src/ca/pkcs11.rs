//! CA keys held in a PKCS#11 token (an HSM; SoftHSM2 in the tests): the key never leaves the
//! token, enrollca asks it to sign. A key is named by an RFC 7512-style URI,
//! `pkcs11:token=<token label>;object=<key label>`, stored where a file key's path would be.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::pkey::PKey;

use super::keys::{KeyError, KeySpec};

pub const URI_SCHEME: &str = "pkcs11:";

/// Where the token library is and how to log in; shared by every token key of the process
/// (a PKCS#11 library is initialised once).
pub struct Pkcs11Access {
    module: PathBuf,
    pin: crate::secret::Secret,
    context: OnceLock<Result<Arc<Pkcs11>, String>>,
}

impl std::fmt::Debug for Pkcs11Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Access")
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Access {
    pub fn new(module: PathBuf, pin: crate::secret::Secret) -> Self {
        Self {
            module,
            pin,
            context: OnceLock::new(),
        }
    }

    fn context(&self) -> Result<Arc<Pkcs11>, KeyError> {
        self.context
            .get_or_init(|| {
                let ctx = Pkcs11::new(&self.module)
                    .map_err(|e| format!("loading {}: {e}", self.module.display()))?;
                ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                    .map_err(|e| format!("initialising {}: {e}", self.module.display()))?;
                Ok(Arc::new(ctx))
            })
            .clone()
            .map_err(KeyError::Token)
    }
}

/// A private key in a token, with a logged-in session to use it.
pub struct TokenKey {
    /// PKCS#11 sessions are not to be used from two threads at once.
    session: Mutex<Session>,
    key: ObjectHandle,
    pub(super) spec: KeySpec,
    /// The public key, SubjectPublicKeyInfo DER.
    pub(super) spki_der: Vec<u8>,
    uri: String,
}

/// The token and object labels a URI names.
fn parse_uri(uri: &str) -> Result<(String, String), KeyError> {
    let bad = || {
        KeyError::Token(format!(
            "`{uri}` is not a key URI like pkcs11:token=<label>;object=<label>"
        ))
    };
    let rest = uri.strip_prefix(URI_SCHEME).ok_or_else(bad)?;
    let (mut token, mut object) = (None, None);
    for part in rest.split(';') {
        match part.split_once('=') {
            Some(("token", v)) => token = Some(v.to_owned()),
            Some(("object", v)) => object = Some(v.to_owned()),
            _ => return Err(bad()),
        }
    }
    Ok((token.ok_or_else(bad)?, object.ok_or_else(bad)?))
}

impl TokenKey {
    /// Logs in to the token the URI names and finds the key pair labelled `object`.
    pub fn open(uri: &str, access: &Pkcs11Access) -> Result<Self, KeyError> {
        let (token, object) = parse_uri(uri)?;
        let ctx = access.context()?;
        let err = |what: &str, e: cryptoki::error::Error| KeyError::Token(format!("{what}: {e}"));
        let slot = ctx
            .get_slots_with_token()
            .map_err(|e| err("listing tokens", e))?
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .is_ok_and(|t| t.label().trim_end() == token)
            })
            .ok_or_else(|| KeyError::Token(format!("no PKCS#11 token labelled `{token}`")))?;
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| err("opening a session", e))?;
        let pin = AuthPin::new(access.pin.expose().into());
        // Login is per token, not per session: another key's session may have done it.
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(cryptoki::error::Error::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(KeyError::Token(format!(
                    "logging in to token `{token}`: wrong PIN"
                )));
            }
            Err(e) => return Err(err(&format!("logging in to token `{token}`"), e)),
        }
        let find = |class, what: &str| {
            session
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::Label(object.as_bytes().to_vec()),
                ])
                .map_err(|e| err("searching the token", e))?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    KeyError::Token(format!(
                        "token `{token}` holds no {what} labelled `{object}`"
                    ))
                })
        };
        let key = find(ObjectClass::PRIVATE_KEY, "private key")?;
        let public = find(ObjectClass::PUBLIC_KEY, "public key")?;
        let attrs = session
            .get_attributes(
                public,
                &[
                    AttributeType::EcParams,
                    AttributeType::EcPoint,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                ],
            )
            .map_err(|e| err("reading the public key", e))?;
        let (spec, spki_der) = public_key(&attrs)?;
        Ok(Self {
            session: Mutex::new(session),
            key,
            spec,
            spki_der,
            uri: uri.to_owned(),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Signs `msg` as X.509 wants it: ECDSA signatures DER-encoded, RSA PKCS#1 v1.5 SHA-256.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let token = |e: cryptoki::error::Error| KeyError::Token(format!("signing: {e}"));
        let ssl = |e: openssl::error::ErrorStack| KeyError::Token(format!("signing: {e}"));
        match self.spec {
            KeySpec::EcP256 | KeySpec::EcP384 => {
                let digest = match self.spec {
                    KeySpec::EcP384 => openssl::sha::sha384(msg).to_vec(),
                    _ => openssl::sha::sha256(msg).to_vec(),
                };
                // CKM_ECDSA gives r || s; X.509 wants ECDSA-Sig-Value.
                let raw = session
                    .sign(&Mechanism::Ecdsa, self.key, &digest)
                    .map_err(token)?;
                let (r, s) = raw.split_at(raw.len() / 2);
                let sig = openssl::ecdsa::EcdsaSig::from_private_components(
                    BigNum::from_slice(r).map_err(ssl)?,
                    BigNum::from_slice(s).map_err(ssl)?,
                )
                .map_err(ssl)?;
                sig.to_der().map_err(ssl)
            }
            _ => session
                .sign(&Mechanism::Sha256RsaPkcs, self.key, msg)
                .map_err(token),
        }
    }
}

/// The key type and SubjectPublicKeyInfo of a token's public key object.
fn public_key(attrs: &[Attribute]) -> Result<(KeySpec, Vec<u8>), KeyError> {
    let ssl = |e: openssl::error::ErrorStack| KeyError::Token(format!("public key: {e}"));
    let (mut params, mut point, mut modulus, mut exponent) = (None, None, None, None);
    for a in attrs {
        match a {
            Attribute::EcParams(v) => params = Some(v.clone()),
            Attribute::EcPoint(v) => point = Some(v.clone()),
            Attribute::Modulus(v) => modulus = Some(v.clone()),
            Attribute::PublicExponent(v) => exponent = Some(v.clone()),
            _ => {}
        }
    }
    if let (Some(n), Some(e)) = (modulus, exponent) {
        let rsa = openssl::rsa::Rsa::from_public_components(
            BigNum::from_slice(&n).map_err(ssl)?,
            BigNum::from_slice(&e).map_err(ssl)?,
        )
        .map_err(ssl)?;
        let spec = KeySpec::rsa(rsa.size() * 8)?;
        let der = PKey::from_rsa(rsa)
            .map_err(ssl)?
            .public_key_to_der()
            .map_err(ssl)?;
        return Ok((spec, der));
    }
    let (Some(params), Some(point)) = (params, point) else {
        return Err(KeyError::Unsupported(
            "neither an EC nor an RSA public key".into(),
        ));
    };
    let curve = <der::asn1::ObjectIdentifier as der::Decode>::from_der(&params)
        .map_err(|e| KeyError::Token(format!("EC parameters: {e}")))?;
    let (spec, nid) = match curve.to_string().as_str() {
        "1.2.840.10045.3.1.7" => (KeySpec::EcP256, openssl::nid::Nid::X9_62_PRIME256V1),
        "1.3.132.0.34" => (KeySpec::EcP384, openssl::nid::Nid::SECP384R1),
        other => return Err(KeyError::Unsupported(format!("EC curve {other}"))),
    };
    // CKA_EC_POINT is the point wrapped in an OCTET STRING (some tokens leave it bare).
    let point = <der::asn1::OctetString as der::Decode>::from_der(&point)
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or(point);
    let group = EcGroup::from_curve_name(nid).map_err(ssl)?;
    let mut ctx = openssl::bn::BigNumContext::new().map_err(ssl)?;
    let point = EcPoint::from_bytes(&group, &point, &mut ctx).map_err(ssl)?;
    let key = EcKey::from_public_key(&group, &point).map_err(ssl)?;
    let der = PKey::from_ec_key(key)
        .map_err(ssl)?
        .public_key_to_der()
        .map_err(ssl)?;
    Ok((spec, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_a_token_and_an_object() {
        assert_eq!(
            parse_uri("pkcs11:token=enrollca;object=acme-1").unwrap(),
            ("enrollca".into(), "acme-1".into())
        );
        for bad in [
            "pkcs11:token=a",
            "pkcs11:object=b",
            "file:x",
            "pkcs11:token=a;pin=1;object=b",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }
}
