//! JSON Web Signatures as RFC 8555 §6.2 allows them: flattened JSON serialization only, one
//! signature, everything in the protected header, the key named by `jwk` or `kid`, and only
//! the asymmetric algorithms ACME clients use. Parsing decides nothing about accounts or nonces;
//! it hands the service a typed header and a way to verify.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// Algorithms accepted, as the `algorithms` member of a badSignatureAlgorithm problem lists them.
pub const ALGORITHMS: &[&str] = &["ES256", "ES384", "RS256", "EdDSA"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("request body is not a flattened JWS: {0}")]
    Malformed(String),
    #[error("JWS algorithm `{0}` is not supported")]
    UnsupportedAlgorithm(String),
    #[error("the account key is not acceptable: {0}")]
    BadKey(String),
    #[error("JWS signature does not verify")]
    BadSignature,
}

/// The signing algorithm of a JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Es384,
    Rs256,
    EdDsa,
}

impl Alg {
    fn parse(s: &str) -> Result<Self, JwsError> {
        match s {
            "ES256" => Ok(Self::Es256),
            "ES384" => Ok(Self::Es384),
            "RS256" => Ok(Self::Rs256),
            "EdDSA" => Ok(Self::EdDsa),
            // `none`, the MACs (HS*) and everything else.
            other => Err(JwsError::UnsupportedAlgorithm(other.to_owned())),
        }
    }
}

/// A public key as a JWK (RFC 7517), validated when parsed: coordinates on the right curve
/// length, RSA moduli of an acceptable size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawJwk", into = "RawJwk")]
pub enum Jwk {
    P256 { x: Vec<u8>, y: Vec<u8> },
    P384 { x: Vec<u8>, y: Vec<u8> },
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ed25519 { x: Vec<u8> },
}

/// Smallest RSA account key accepted.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

/// The JSON members of the key types we accept; other members (`use`, `kid`, ...) are ignored.
#[derive(Serialize, Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
}

impl TryFrom<RawJwk> for Jwk {
    type Error = String;

    fn try_from(raw: RawJwk) -> Result<Self, String> {
        let field = |name: &str, v: Option<String>| -> Result<Vec<u8>, String> {
            let v = v.ok_or_else(|| format!("JWK member `{name}` is missing"))?;
            URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|_| format!("JWK member `{name}` is not unpadded base64url"))
        };
        let sized = |name: &str, v: Option<String>, len: usize| -> Result<Vec<u8>, String> {
            let bytes = field(name, v)?;
            if bytes.len() == len {
                Ok(bytes)
            } else {
                Err(format!("JWK member `{name}` must be {len} bytes"))
            }
        };
        match (raw.kty.as_str(), raw.crv.as_deref()) {
            ("EC", Some("P-256")) => Ok(Self::P256 {
                x: sized("x", raw.x, 32)?,
                y: sized("y", raw.y, 32)?,
            }),
            ("EC", Some("P-384")) => Ok(Self::P384 {
                x: sized("x", raw.x, 48)?,
                y: sized("y", raw.y, 48)?,
            }),
            ("OKP", Some("Ed25519")) => Ok(Self::Ed25519 {
                x: sized("x", raw.x, 32)?,
            }),
            ("RSA", None) => {
                let n = field("n", raw.n)?;
                let e = field("e", raw.e)?;
                let n = strip_leading_zeros(&n);
                let bits = (n.len() * 8)
                    .saturating_sub(n.first().map_or(8, |b| b.leading_zeros() as usize));
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(format!(
                        "RSA key of {bits} bits (accepted: {MIN_RSA_BITS} to {MAX_RSA_BITS})"
                    ));
                }
                let e = strip_leading_zeros(&e);
                if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) {
                    return Err("RSA public exponent is not a small odd number".into());
                }
                Ok(Self::Rsa {
                    n: n.to_vec(),
                    e: e.to_vec(),
                })
            }
            (kty, crv) => Err(format!(
                "unsupported key type {kty}{} (EC P-256/P-384, RSA, OKP Ed25519)",
                crv.map(|c| format!("/{c}")).unwrap_or_default()
            )),
        }
    }
}

impl From<Jwk> for RawJwk {
    fn from(jwk: Jwk) -> Self {
        let b64 = |v: &[u8]| Some(URL_SAFE_NO_PAD.encode(v));
        let (kty, crv, x, y, n, e) = match &jwk {
            Jwk::P256 { x, y } => ("EC", Some("P-256"), b64(x), b64(y), None, None),
            Jwk::P384 { x, y } => ("EC", Some("P-384"), b64(x), b64(y), None, None),
            Jwk::Ed25519 { x } => ("OKP", Some("Ed25519"), b64(x), None, None, None),
            Jwk::Rsa { n, e } => ("RSA", None, None, None, b64(n), b64(e)),
        };
        Self {
            kty: kty.into(),
            crv: crv.map(Into::into),
            x,
            y,
            n,
            e,
        }
    }
}

fn strip_leading_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[first..]
}

impl Jwk {
    /// RFC 7638 thumbprint (SHA-256 over the required members in lexicographic order),
    /// base64url: the account key's identity and the second half of a key authorization.
    pub fn thumbprint(&self) -> String {
        let b64 = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        // Every value is base64url or a fixed name: no JSON escaping can be needed.
        let canonical = match self {
            Self::P256 { x, y } => {
                format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    b64(x),
                    b64(y)
                )
            }
            Self::P384 { x, y } => {
                format!(
                    r#"{{"crv":"P-384","kty":"EC","x":"{}","y":"{}"}}"#,
                    b64(x),
                    b64(y)
                )
            }
            Self::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n)),
            Self::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
        };
        b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// Whether a certificate's subject public key is this key (revocation by certificate key).
    pub fn is_key_of(&self, spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> bool {
        use x509_parser::public_key::PublicKey;
        match (self, spki.parsed()) {
            (Self::P256 { x, y } | Self::P384 { x, y }, Ok(PublicKey::EC(point))) => {
                point.data() == [&[4u8][..], x, y].concat()
            }
            (Self::Rsa { n, e }, Ok(PublicKey::RSA(rsa))) => {
                strip_leading_zeros(rsa.modulus) == n.as_slice()
                    && strip_leading_zeros(rsa.exponent) == e.as_slice()
            }
            (Self::Ed25519 { x }, _) => {
                spki.algorithm.algorithm.to_id_string() == "1.3.101.112"
                    && spki.subject_public_key.data.as_ref() == x.as_slice()
            }
            _ => false,
        }
    }

    /// Verifies `sig` over `msg` with this key under `alg`.
    pub fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> Result<(), JwsError> {
        let point = |x: &[u8], y: &[u8]| [&[4u8][..], x, y].concat();
        let ok = match (alg, self) {
            (Alg::Es256, Self::P256 { x, y }) => {
                let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point(x, y));
                es256_readings(sig).any(|s| key.verify(msg, &s).is_ok())
            }
            (Alg::Es384, Self::P384 { x, y }) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point(x, y))
                    .verify(msg, sig)
                    .is_ok()
            }
            (Alg::Rs256, Self::Rsa { n, e }) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            (Alg::EdDsa, Self::Ed25519 { x }) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(msg, sig)
                .is_ok(),
            (alg, _) => {
                return Err(JwsError::Malformed(format!(
                    "algorithm {alg:?} does not fit the key type"
                )));
            }
        };
        if ok {
            Ok(())
        } else {
            Err(JwsError::BadSignature)
        }
    }
}

/// The readings of an ES256 signature to try. A well-formed one is 64 bytes (r ‖ s). Apple's
/// clients write r and s as minimal integers, dropping every leading zero byte, so any length
/// down to 2 can occur; the split is then ambiguous and each left-padded reading is tried (a
/// wrong one simply fails to verify): at most 32, none for more than 64 bytes.
fn es256_readings(sig: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let len = sig.len();
    // r takes 1 to 32 bytes and leaves s 1 to 32; an empty range when nothing fits.
    let r_lens = len.saturating_sub(32).max(1)..=len.saturating_sub(1).min(32);
    r_lens.filter(move |_| len <= 64).map(move |r_len| {
        let (r, s) = sig.split_at(r_len);
        let mut out = vec![0u8; 64];
        out[32 - r.len()..32].copy_from_slice(r);
        out[64 - s.len()..].copy_from_slice(s);
        out
    })
}

/// How the request names its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A new key: only newAccount and revocation by certificate key may use this.
    Jwk(Jwk),
    /// The account URL.
    Kid(String),
}

/// The protected header, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub nonce: Option<String>,
    pub url: String,
    pub key: KeyRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flattened {
    protected: String,
    payload: String,
    signature: String,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    nonce: Option<String>,
    url: Option<String>,
    jwk: Option<serde_json::Value>,
    kid: Option<String>,
    /// Extensions we would have to understand; none are defined for ACME, so any is refused.
    crit: Option<serde_json::Value>,
    /// RFC 7797 unencoded payloads are not allowed in ACME.
    b64: Option<serde_json::Value>,
}

/// A parsed, not yet verified, JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    pub header: Header,
    /// `protected.payload`, as signed.
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    /// Decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
}

impl Jws {
    pub fn parse(body: &[u8]) -> Result<Self, JwsError> {
        let malformed = |m: &str| JwsError::Malformed(m.to_owned());
        let outer: Flattened = serde_json::from_slice(body).map_err(|e| {
            JwsError::Malformed(format!(
                "{e} (expected exactly `protected`, `payload` and `signature`)"
            ))
        })?;
        let header_json = URL_SAFE_NO_PAD
            .decode(&outer.protected)
            .map_err(|_| malformed("`protected` is not unpadded base64url"))?;
        let raw: RawHeader = serde_json::from_slice(&header_json)
            .map_err(|e| JwsError::Malformed(format!("protected header: {e}")))?;
        let alg = Alg::parse(&raw.alg)?;
        if raw.crit.is_some() || raw.b64.is_some() {
            return Err(malformed(
                "`crit` and `b64` are not allowed in ACME requests",
            ));
        }
        let url = raw
            .url
            .ok_or_else(|| malformed("protected header has no `url`"))?;
        let key = match (raw.jwk, raw.kid) {
            (Some(jwk), None) => KeyRef::Jwk(
                serde_json::from_value(jwk).map_err(|e| JwsError::BadKey(e.to_string()))?,
            ),
            (None, Some(kid)) => KeyRef::Kid(kid),
            _ => {
                return Err(malformed(
                    "the protected header needs exactly one of `jwk` and `kid`",
                ));
            }
        };
        let payload = URL_SAFE_NO_PAD
            .decode(&outer.payload)
            .map_err(|_| malformed("`payload` is not unpadded base64url"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(&outer.signature)
            .map_err(|_| malformed("`signature` is not unpadded base64url"))?;
        Ok(Self {
            header: Header {
                alg,
                nonce: raw.nonce,
                url,
                key,
            },
            signing_input: format!("{}.{}", outer.protected, outer.payload).into_bytes(),
            signature,
            payload,
        })
    }

    pub fn verify(&self, key: &Jwk) -> Result<(), JwsError> {
        key.verify(self.header.alg, &self.signing_input, &self.signature)
    }

    /// True for POST-as-GET (RFC 8555 §6.3): an empty payload.
    pub fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }

    /// The payload as a JSON request object.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, JwsError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| JwsError::Malformed(format!("payload: {e}")))
    }
}

/// An External Account Binding (RFC 8555 §7.3.4): a JWS by an operator-issued MAC key over
/// the new account's key.
#[derive(Debug, Clone)]
pub struct Binding {
    pub kid: String,
    pub url: String,
    alg: &'static ring::hmac::Algorithm,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    /// The key the binding vouches for.
    pub jwk: Jwk,
}

impl Binding {
    pub fn parse(value: &serde_json::Value) -> Result<Self, JwsError> {
        let malformed = |m: &str| JwsError::Malformed(format!("externalAccountBinding: {m}"));
        let outer: Flattened =
            serde_json::from_value(value.clone()).map_err(|_| malformed("not a flattened JWS"))?;
        #[derive(Deserialize)]
        struct EabHeader {
            alg: String,
            kid: String,
            url: String,
            nonce: Option<serde_json::Value>,
        }
        let header: EabHeader = URL_SAFE_NO_PAD
            .decode(&outer.protected)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| malformed("protected header needs `alg`, `kid` and `url`"))?;
        if header.nonce.is_some() {
            return Err(malformed("must not carry a nonce"));
        }
        let alg = match header.alg.as_str() {
            "HS256" => &ring::hmac::HMAC_SHA256,
            "HS384" => &ring::hmac::HMAC_SHA384,
            "HS512" => &ring::hmac::HMAC_SHA512,
            other => return Err(JwsError::UnsupportedAlgorithm(other.to_owned())),
        };
        let jwk = URL_SAFE_NO_PAD
            .decode(&outer.payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| malformed("payload is not the account's JWK"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(&outer.signature)
            .map_err(|_| malformed("signature is not base64url"))?;
        Ok(Self {
            kid: header.kid,
            url: header.url,
            alg,
            signing_input: format!("{}.{}", outer.protected, outer.payload).into_bytes(),
            signature,
            jwk,
        })
    }

    /// Verifies the MAC in constant time (ring's `hmac::verify`).
    pub fn verify(&self, mac_key: &[u8]) -> Result<(), JwsError> {
        let key = ring::hmac::Key::new(*self.alg, mac_key);
        ring::hmac::verify(&key, &self.signing_input, &self.signature)
            .map_err(|_| JwsError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_es256_signatures_are_read_every_padded_way() {
        let sig: Vec<u8> = (1..=63).collect();
        let readings: Vec<_> = es256_readings(&sig).collect();
        // r of 31 or 32 bytes (s of 32 or 31).
        assert_eq!(readings.len(), 2);
        assert!(readings.iter().all(|r| r.len() == 64));
        assert_eq!(readings[0][0], 0);
        assert_eq!(readings[1][32], 0);
        assert_eq!(es256_readings(&[1; 64]).count(), 1);
        // 61 bytes: r of 29 to 32.
        assert_eq!(es256_readings(&[1; 61]).count(), 4);
        // The shortest: one byte each.
        assert_eq!(es256_readings(&[1; 2]).collect::<Vec<_>>().len(), 1);
        // 33 bytes: every split from 1 + 32 to 32 + 1.
        assert_eq!(es256_readings(&[1; 33]).count(), 32);
        for nothing in [&[][..], &[1], &[1; 65]] {
            assert_eq!(
                es256_readings(nothing).count(),
                0,
                "{} bytes",
                nothing.len()
            );
        }
    }

    use ring::rand::SystemRandom;
    use ring::signature::{self as sig, KeyPair};

    fn ec_jwk(pair: &sig::EcdsaKeyPair, p384: bool) -> Jwk {
        let point = pair.public_key().as_ref();
        let half = (point.len() - 1) / 2;
        let (x, y) = (point[1..=half].to_vec(), point[half + 1..].to_vec());
        if p384 {
            Jwk::P384 { x, y }
        } else {
            Jwk::P256 { x, y }
        }
    }

    #[test]
    fn every_accepted_algorithm_verifies_and_rejects_a_changed_message() {
        let rng = SystemRandom::new();
        let msg = b"protected.payload";
        let mut cases: Vec<(Alg, Jwk, Vec<u8>)> = Vec::new();
        for (alg, ring_alg, p384) in [
            (Alg::Es256, &sig::ECDSA_P256_SHA256_FIXED_SIGNING, false),
            (Alg::Es384, &sig::ECDSA_P384_SHA384_FIXED_SIGNING, true),
        ] {
            let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(ring_alg, &rng).unwrap();
            let pair = sig::EcdsaKeyPair::from_pkcs8(ring_alg, pkcs8.as_ref(), &rng).unwrap();
            let s = pair.sign(&rng, msg).unwrap().as_ref().to_vec();
            cases.push((alg, ec_jwk(&pair, p384), s));
        }
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = ed.public_key().as_ref().to_vec();
        cases.push((
            Alg::EdDsa,
            Jwk::Ed25519 { x },
            ed.sign(msg).as_ref().to_vec(),
        ));
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pkey = openssl::pkey::PKey::from_rsa(rsa.clone()).unwrap();
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
        let rs = signer.sign_oneshot_to_vec(msg).unwrap();
        let jwk = Jwk::Rsa {
            n: rsa.n().to_vec(),
            e: rsa.e().to_vec(),
        };
        cases.push((Alg::Rs256, jwk, rs));

        for (alg, jwk, s) in &cases {
            assert_eq!(jwk.verify(*alg, msg, s), Ok(()), "{alg:?}");
            assert_eq!(
                jwk.verify(*alg, b"protected.payloaD", s),
                Err(JwsError::BadSignature)
            );
            // The JWK survives a JSON round trip unchanged.
            let back: Jwk = serde_json::from_value(serde_json::to_value(jwk).unwrap()).unwrap();
            assert_eq!(&back, jwk);
        }
        // A key used with another key type's algorithm is refused, not tried.
        let (_, p256, s) = &cases[0];
        assert!(matches!(
            p256.verify(Alg::Rs256, msg, s),
            Err(JwsError::Malformed(_))
        ));
    }

    #[test]
    fn apple_style_short_es256_signatures_verify() {
        // Apple drops leading zero bytes of r and s; about 1 signature in 128 has one.
        let rng = SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let jwk = ec_jwk(&pair, false);
        let (mut short_r, mut short_s) = (false, false);
        for i in 0..20_000u32 {
            let msg = i.to_be_bytes();
            let full = pair.sign(&rng, &msg).unwrap().as_ref().to_vec();
            let (r, s) = full.split_at(32);
            if r[0] != 0 && s[0] != 0 {
                continue;
            }
            let strip = |v: &[u8]| v[v.iter().position(|b| *b != 0).unwrap_or(v.len())..].to_vec();
            let apple = [strip(r), strip(s)].concat();
            assert_eq!(
                jwk.verify(Alg::Es256, &msg, &apple),
                Ok(()),
                "{}",
                hex::encode(&full)
            );
            short_r |= r[0] == 0;
            short_s |= s[0] == 0;
            if short_r && short_s {
                return;
            }
        }
        panic!("no short r and s in 20000 signatures (odds below 1e-30)");
    }

    /// A valid ES256 signature whose r is 31 bytes and s `s_len` bytes, both minimal, with
    /// its key. Such lengths are too rare to wait for (61 bytes: about 1 in 4 million), so the
    /// signature is built: a nonce k whose r = x(kG) has a leading zero byte (1 in 256), an s
    /// of the wanted length, and the private key d = (s·k − z) / r mod n that makes them sign
    /// z = SHA-256(msg), since s = k⁻¹(z + r·d).
    fn short_signature(msg: &[u8], s_len: usize) -> (Jwk, Vec<u8>) {
        use openssl::bn::{BigNum, BigNumContext, MsbOption};
        use openssl::ec::{EcGroup, EcPoint};
        let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let mut n = BigNum::new().unwrap();
        group.order(&mut n, &mut ctx).unwrap();
        let affine = |p: &EcPoint, ctx: &mut BigNumContext| {
            let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
            p.affine_coordinates(&group, &mut x, &mut y, ctx).unwrap();
            (x, y)
        };
        let (k, r) = loop {
            let mut k = BigNum::new().unwrap();
            n.rand_range(&mut k).unwrap();
            let mut point = EcPoint::new(&group).unwrap();
            point.mul_generator2(&group, &k, &mut ctx).unwrap();
            let (x, _) = affine(&point, &mut ctx);
            let mut r = BigNum::new().unwrap();
            r.nnmod(&x, &n, &mut ctx).unwrap();
            if r.num_bytes() == 31 {
                break (k, r);
            }
        };
        let mut s = BigNum::new().unwrap();
        s.rand(s_len as i32 * 8, MsbOption::ONE, false).unwrap();
        let z =
            BigNum::from_slice(ring::digest::digest(&ring::digest::SHA256, msg).as_ref()).unwrap();
        let (mut sk, mut t, mut r_inv, mut d) = (
            BigNum::new().unwrap(),
            BigNum::new().unwrap(),
            BigNum::new().unwrap(),
            BigNum::new().unwrap(),
        );
        sk.mod_mul(&s, &k, &n, &mut ctx).unwrap();
        t.mod_sub(&sk, &z, &n, &mut ctx).unwrap();
        r_inv.mod_inverse(&r, &n, &mut ctx).unwrap();
        d.mod_mul(&t, &r_inv, &n, &mut ctx).unwrap();
        let mut public = EcPoint::new(&group).unwrap();
        public.mul_generator2(&group, &d, &mut ctx).unwrap();
        let (x, y) = affine(&public, &mut ctx);
        let jwk = Jwk::P256 {
            x: x.to_vec_padded(32).unwrap(),
            y: y.to_vec_padded(32).unwrap(),
        };
        (jwk, [r.to_vec(), s.to_vec()].concat())
    }

    #[test]
    fn es256_signatures_of_61_and_60_bytes_verify() {
        let msg = b"protected.payload";
        for (s_len, total) in [(30, 61), (29, 60), (1, 32)] {
            let (jwk, sig) = short_signature(msg, s_len);
            assert_eq!(sig.len(), total);
            assert_eq!(jwk.verify(Alg::Es256, msg, &sig), Ok(()), "{total} bytes");
            assert_eq!(
                jwk.verify(Alg::Es256, b"protected.payloaD", &sig),
                Err(JwsError::BadSignature),
                "{total} bytes"
            );
        }
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk: Jwk = serde_json::from_str(
            r#"{"kty":"RSA","e":"AQAB","alg":"RS256","kid":"2011-04-29","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}"#,
        )
        .unwrap();
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn weak_and_unknown_keys_are_refused() {
        let small = r#"{"kty":"RSA","e":"AQAB","n":"AQAB"}"#;
        assert!(serde_json::from_str::<Jwk>(small).is_err());
        let oct = r#"{"kty":"oct","k":"AAAA"}"#;
        assert!(serde_json::from_str::<Jwk>(oct).is_err());
        let short = r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#;
        assert!(serde_json::from_str::<Jwk>(short).is_err());
    }
}
