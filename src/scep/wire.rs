//! SCEP on the wire (RFC 8894 §3): opening a pkiMessage (BER accepted, signature verified,
//! envelope decrypted) and building CertRep replies (DER). Protocol only: no policy here.
//!
//! OpenSSL normalises BER to DER (its decoder is BER-tolerant, its encoder writes DER) and
//! verifies the signerInfo; the typed `cms`/`der` structures give access to the SCEP
//! attributes and build the replies; RustCrypto's CBC ciphers cover single DES, which
//! OpenSSL 3 only opens with its legacy provider.

use cbc::cipher::block_padding::Pkcs7 as Pkcs7Padding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{EncryptedContentInfo, EnvelopedData, RecipientInfo};
use cms::signed_data::{
    EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5911::{
    ID_CONTENT_TYPE, ID_DATA, ID_ENVELOPED_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA,
};
use const_oid::db::rfc5912::RSA_ENCRYPTION;
use der::asn1::{OctetString, PrintableStringRef, SetOfVec, UintRef, Utf8StringRef};
use der::{
    Any, AnyRef, Decode, Encode, EncodeValue, Length, Sequence, Tag, TagNumber, Tagged, Writer,
};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use rand::RngCore;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::attr::{Attribute, Attributes};

use super::message::{Cipher, Digest, FailInfo, MessageType, PkiStatus, oid};

/// What can be wrong with a message before it is decrypted: answered with HTTP 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a PKCS#7 pkiMessage: {0}")]
    Malformed(String),
    #[error("the pkiMessage signature does not verify")]
    BadSignature,
    #[error("the pkiMessage lacks the {0} attribute")]
    MissingAttribute(&'static str),
    #[error("unknown SCEP messageType `{0}`")]
    UnknownMessageType(String),
    #[error("unsupported digest algorithm {0}")]
    UnsupportedDigest(String),
    #[error("unsupported content-encryption algorithm {0}")]
    UnsupportedCipher(String),
    #[error("the pkcsPKIEnvelope cannot be decrypted with this CA's key")]
    Decrypt,
    #[error("cannot build the reply: {0}")]
    Encode(String),
}

fn malformed(e: impl std::fmt::Display) -> WireError {
    WireError::Malformed(e.to_string())
}

/// A pkiMessage whose signature verified; its envelope (if any) is still sealed.
pub struct SignedMessage {
    pub message_type: MessageType,
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
    /// Replies only.
    pub recipient_nonce: Option<Vec<u8>>,
    pub pki_status: Option<PkiStatus>,
    pub fail_info: Option<FailInfo>,
    pub digest: Digest,
    /// The certificate that signed the request: self-signed for PKCSReq, an issued one for
    /// renewals. Replies are encrypted to its key.
    pub signer: X509,
    /// `signer` as DER: read with x509-parser, not OpenSSL's slower provider decoders.
    pub signer_der: Vec<u8>,
    pub envelope: Vec<u8>,
}

/// Opens the signed layer of a pkiMessage (a request, or a CertRep for a client).
pub fn open(body: &[u8]) -> Result<SignedMessage, WireError> {
    let p7 = Pkcs7::from_der(body).map_err(|_| malformed("undecodable"))?;
    let no_certs = Stack::<X509>::new().map_err(malformed)?;
    let store = X509StoreBuilder::new().map_err(malformed)?.build();
    let mut envelope = Vec::new();
    // NOVERIFY: the signer is usually self-signed; what matters here is that the message was
    // signed by the key in the certificate it carries (policy decides what that key may get).
    p7.verify(
        &no_certs,
        &store,
        None,
        Some(&mut envelope),
        Pkcs7Flags::NOVERIFY,
    )
    .map_err(|_| WireError::BadSignature)?;
    let signers = p7
        .signers(&no_certs, Pkcs7Flags::empty())
        .map_err(|_| WireError::BadSignature)?;
    let signer = signers
        .iter()
        .next()
        .ok_or(WireError::BadSignature)?
        .to_owned();
    let signer_der = signer.to_der().map_err(malformed)?;

    // As for the envelope: DER as sent, else OpenSSL's DER re-encoding of BER.
    let (digest_alg, attrs) = match signer_attributes(body) {
        Ok(found) => found,
        Err(_) => signer_attributes(&p7.to_der().map_err(malformed)?)?,
    };
    let digest = Digest::from_oid(&digest_alg.oid)
        .ok_or_else(|| WireError::UnsupportedDigest(digest_alg.oid.to_string()))?;
    let value = |id: ObjectIdentifier, name: &'static str| -> Result<&[u8], WireError> {
        attrs
            .iter()
            .find(|a| a.oid == id)
            .and_then(|a| a.values.iter().next())
            .map(Any::value)
            .ok_or(WireError::MissingAttribute(name))
    };
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(malformed);
    let code = text(value(oid::MESSAGE_TYPE, "messageType")?)?;
    let message_type = MessageType::from_code(&code).ok_or(WireError::UnknownMessageType(code))?;
    let transaction_id = text(value(oid::TRANSACTION_ID, "transactionID")?)?;
    if transaction_id.is_empty() || transaction_id.len() > 256 {
        return Err(malformed("transactionID must be 1 to 256 characters"));
    }
    let sender_nonce = value(oid::SENDER_NONCE, "senderNonce")?.to_vec();
    let recipient_nonce = value(oid::RECIPIENT_NONCE, "recipientNonce")
        .ok()
        .map(<[u8]>::to_vec);
    let pki_status = match value(oid::PKI_STATUS, "pkiStatus") {
        Ok(code) => {
            Some(PkiStatus::from_code(&text(code)?).ok_or_else(|| malformed("unknown pkiStatus"))?)
        }
        Err(_) => None,
    };
    let fail_info = match value(oid::FAIL_INFO, "failInfo") {
        Ok(code) => {
            Some(FailInfo::from_code(&text(code)?).ok_or_else(|| malformed("unknown failInfo"))?)
        }
        Err(_) => None,
    };
    Ok(SignedMessage {
        message_type,
        transaction_id,
        sender_nonce,
        recipient_nonce,
        pki_status,
        fail_info,
        digest,
        signer,
        signer_der,
        envelope,
    })
}

/// The first signerInfo's digest algorithm and signed attributes. Only these are decoded:
/// certificates and the signer identifier stay opaque, because clients' throw-away signer
/// certificates break RFC 5280 limits (certmonger uses 32-octet serials) that the strict
/// certificate types enforce, and OpenSSL has already matched and verified the signer.
fn signer_attributes(der: &[u8]) -> Result<(AlgorithmIdentifierOwned, Attributes), WireError> {
    let info = ContentInfo::from_der(der).map_err(malformed)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(malformed("not SignedData"));
    }
    // SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo,
    //   certificates [0] OPTIONAL, crls [1] OPTIONAL, signerInfos SET OF SignerInfo }
    let fields: Vec<AnyRef> = info.content.decode_as().map_err(malformed)?;
    let signer_infos = fields
        .last()
        .filter(|f| f.tag() == Tag::Set)
        .ok_or_else(|| malformed("no signerInfos"))?;
    let signer_infos: Vec<AnyRef> = AnyRef::new(Tag::Sequence, signer_infos.value())
        .and_then(|s| s.decode_as())
        .map_err(malformed)?;
    // SignerInfo ::= SEQUENCE { version, sid, digestAlgorithm, signedAttrs [0] IMPLICIT, … }
    let si: Vec<AnyRef> = signer_infos
        .first()
        .ok_or_else(|| malformed("no signerInfo"))?
        .decode_as()
        .map_err(malformed)?;
    let digest_alg: AlgorithmIdentifierOwned = si
        .get(2)
        .ok_or_else(|| malformed("signerInfo without digestAlgorithm"))?
        .decode_as()
        .map_err(malformed)?;
    let signed_attrs_tag = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N0,
    };
    let attrs = si
        .get(3)
        .filter(|a| a.tag() == signed_attrs_tag)
        .ok_or(WireError::MissingAttribute("signedAttrs"))?;
    let attrs: Attributes = AnyRef::new(Tag::Set, attrs.value())
        .and_then(|a| a.decode_as())
        .map_err(malformed)?;
    Ok((digest_alg, attrs))
}

/// Decrypts a pkcsPKIEnvelope addressed to `key`. Every way it can fail gives the same error
/// after the same work, so the RSA padding check is no oracle.
pub fn decrypt(envelope: &[u8], key: &PKey<Private>) -> Result<(Vec<u8>, Cipher), WireError> {
    let ed = enveloped_data(envelope)?;
    let alg = &ed.encrypted_content.content_enc_alg;
    let cipher = Cipher::from_oid(&alg.oid)
        .ok_or_else(|| WireError::UnsupportedCipher(alg.oid.to_string()))?;
    let iv = alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<OctetString>().ok())
        .filter(|iv| iv.as_bytes().len() == cipher.iv_len())
        .ok_or_else(|| malformed("content-encryption IV missing or of the wrong length"))?;
    let ciphertext = ed
        .encrypted_content
        .encrypted_content
        .as_ref()
        .ok_or_else(|| malformed("no encrypted content"))?;
    let enc_key = ed
        .recip_infos
        .0
        .iter()
        .find_map(|ri| match ri {
            RecipientInfo::Ktri(k) => Some(k.enc_key.as_bytes()),
            _ => None,
        })
        .ok_or_else(|| malformed("no key-transport recipient"))?;

    let mut content_key = rsa_decrypt(key, enc_key).filter(|k| k.len() == cipher.key_len());
    let valid_key = content_key.is_some();
    let content_key = content_key.get_or_insert_with(|| random(cipher.key_len()));
    let plain = cbc_decrypt(cipher, content_key, iv.as_bytes(), ciphertext.as_bytes());
    match plain {
        Some(p) if valid_key => Ok((p, cipher)),
        _ => Err(WireError::Decrypt),
    }
}

/// The EnvelopedData of a pkcsPKIEnvelope. Most clients send DER; BER (indefinite lengths,
/// constructed strings) is read from OpenSSL's DER re-encoding.
fn enveloped_data(envelope: &[u8]) -> Result<EnvelopedData, WireError> {
    let parse = |der: &[u8]| -> Result<EnvelopedData, WireError> {
        let info = ContentInfo::from_der(der).map_err(malformed)?;
        if info.content_type != ID_ENVELOPED_DATA {
            return Err(malformed("pkcsPKIEnvelope is not EnvelopedData"));
        }
        info.content.decode_as().map_err(malformed)
    };
    parse(envelope).or_else(|_| {
        let der = Pkcs7::from_der(envelope)
            .and_then(|p| p.to_der())
            .map_err(|_| malformed("undecodable pkcsPKIEnvelope"))?;
        parse(&der)
    })
}

fn rsa_decrypt(key: &PKey<Private>, data: &[u8]) -> Option<Vec<u8>> {
    let mut d = openssl::encrypt::Decrypter::new(key).ok()?;
    d.set_rsa_padding(Padding::PKCS1).ok()?;
    let mut out = vec![0; d.decrypt_len(data).ok()?];
    let n = d.decrypt(data, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    rand::rngs::OsRng.fill_bytes(&mut v);
    v
}

fn cbc_decrypt(cipher: Cipher, key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    fn run<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>>
    where
        cbc::Decryptor<C>: KeyIvInit + BlockDecryptMut,
        C: cbc::cipher::BlockDecryptMut + cbc::cipher::BlockCipher,
    {
        cbc::Decryptor::<C>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7Padding>(data)
            .ok()
    }
    match cipher {
        Cipher::Des => run::<des::Des>(key, iv, data),
        Cipher::Des3 => run::<des::TdesEde3>(key, iv, data),
        Cipher::Aes128 => run::<aes::Aes128>(key, iv, data),
        Cipher::Aes192 => run::<aes::Aes192>(key, iv, data),
        Cipher::Aes256 => run::<aes::Aes256>(key, iv, data),
    }
}

fn cbc_encrypt(cipher: Cipher, key: &[u8], iv: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Vec<u8>
    where
        cbc::Encryptor<C>: KeyIvInit + BlockEncryptMut,
        C: cbc::cipher::BlockEncryptMut + cbc::cipher::BlockCipher,
    {
        cbc::Encryptor::<C>::new_from_slices(key, iv)
            .expect("key and IV lengths come from the cipher")
            .encrypt_padded_vec_mut::<Pkcs7Padding>(data)
    }
    match cipher {
        Cipher::Des => run::<des::Des>(key, iv, data),
        Cipher::Des3 => run::<des::TdesEde3>(key, iv, data),
        Cipher::Aes128 => run::<aes::Aes128>(key, iv, data),
        Cipher::Aes192 => run::<aes::Aes192>(key, iv, data),
        Cipher::Aes256 => run::<aes::Aes256>(key, iv, data),
    }
}

/// The CA identity that signs replies.
pub struct MessageSigner<'a> {
    pub cert_der: &'a [u8],
    pub key: &'a PKey<Private>,
}

/// What a successful CertRep carries.
pub enum Payload {
    /// Certificates, the issued (or asked-for) one first, then its chain.
    Certs(Vec<Vec<u8>>),
    /// A CRL (GetCRL), DER.
    Crl(Vec<u8>),
}

/// What the CertRep says.
pub enum Outcome<'a> {
    /// Success: the payload, in a degenerate SignedData encrypted to `recipient`.
    Success {
        payload: &'a Payload,
        recipient: &'a X509,
        cipher: Cipher,
    },
    Failure(FailInfo),
    Pending,
}

/// Builds a signed CertRep answering `req`: fresh senderNonce, the request's senderNonce as
/// recipientNonce, its transactionID and digest; signature algorithm `rsaEncryption`.
pub fn cert_rep(
    signer: &MessageSigner,
    req: &SignedMessage,
    outcome: Outcome,
) -> Result<Vec<u8>, WireError> {
    let (status, fail, content) = match outcome {
        Outcome::Success {
            payload,
            recipient,
            cipher,
        } => {
            let inner = match payload {
                Payload::Certs(certs) => degenerate(certs)?,
                Payload::Crl(crl) => degenerate_crl(crl)?,
            };
            (
                PkiStatus::Success,
                None,
                Some(envelope(&inner, recipient, cipher.for_reply())?),
            )
        }
        Outcome::Failure(info) => (PkiStatus::Failure, Some(info), None),
        Outcome::Pending => (PkiStatus::Pending, None, None),
    };
    let mut attrs = vec![
        attribute(oid::MESSAGE_TYPE, printable(MessageType::CertRep.code())?)?,
        attribute(oid::PKI_STATUS, printable(status.code())?)?,
        attribute(oid::TRANSACTION_ID, printable(&req.transaction_id)?)?,
        attribute(oid::SENDER_NONCE, octets(&random(16))?)?,
        attribute(oid::RECIPIENT_NONCE, octets(&req.sender_nonce)?)?,
    ];
    if let Some(info) = fail {
        attrs.push(attribute(oid::FAIL_INFO, printable(info.code())?)?);
    }
    signed_message(
        signer,
        req.digest,
        attrs,
        content.as_deref().unwrap_or_default(),
    )
}

/// A request as a client builds it (the project's own test client and load generator).
pub struct NewRequest<'a> {
    pub message_type: MessageType,
    pub transaction_id: &'a str,
    pub digest: Digest,
    pub cipher: Cipher,
    /// The CA certificate the content is encrypted to.
    pub ca: &'a X509,
    /// The message's content: a CSR (PKCSReq, RenewalReq), IssuerAndSerialNumber (GetCert)…
    pub content: &'a [u8],
}

/// Builds a signed, encrypted request; returns it with its senderNonce.
pub fn request(signer: &MessageSigner, r: &NewRequest) -> Result<(Vec<u8>, Vec<u8>), WireError> {
    let nonce = random(16);
    let attrs = vec![
        attribute(oid::MESSAGE_TYPE, printable(r.message_type.code())?)?,
        attribute(oid::TRANSACTION_ID, printable(r.transaction_id)?)?,
        attribute(oid::SENDER_NONCE, octets(&nonce)?)?,
    ];
    let envelope = envelope(r.content, r.ca, r.cipher)?;
    Ok((signed_message(signer, r.digest, attrs, &envelope)?, nonce))
}

/// SignedData over `content` with the SCEP attributes plus contentType and messageDigest,
/// signed by `signer` (signature algorithm `rsaEncryption`, as strongSwan requires).
fn signed_message(
    signer: &MessageSigner,
    digest_alg: Digest,
    mut attrs: Vec<Attribute>,
    content: &[u8],
) -> Result<Vec<u8>, WireError> {
    let enc = |e: der::Error| WireError::Encode(e.to_string());
    let digest = openssl::hash::hash(digest_alg.openssl(), content)
        .map_err(|e| WireError::Encode(e.to_string()))?;
    attrs.push(attribute(
        ID_CONTENT_TYPE,
        Any::encode_from(&ID_DATA).map_err(enc)?,
    )?);
    attrs.push(attribute(ID_MESSAGE_DIGEST, octets(&digest)?)?);
    let attrs: SetOfVec<Attribute> = attrs.try_into().map_err(enc)?;
    let mut signer_ctx = openssl::sign::Signer::new(digest_alg.openssl(), signer.key)
        .map_err(|e| WireError::Encode(e.to_string()))?;
    signer_ctx
        .set_rsa_padding(Padding::PKCS1)
        .map_err(|e| WireError::Encode(e.to_string()))?;
    let signature = signer_ctx
        .sign_oneshot_to_vec(&attrs.to_der().map_err(enc)?)
        .map_err(|e| WireError::Encode(e.to_string()))?;

    let signer_cert = Certificate::from_der(signer.cert_der).map_err(enc)?;
    let digest_alg = AlgorithmIdentifierOwned {
        oid: digest_alg.oid(),
        parameters: None,
    };
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(&signer_cert)),
        digest_alg: digest_alg.clone(),
        signed_attrs: Some(attrs),
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        signature: OctetString::new(signature).map_err(enc)?,
        unsigned_attrs: None,
    };
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: vec![digest_alg].try_into().map_err(enc)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            // Present even when empty (FAILURE, PENDING): OpenSSL's PKCS7_verify, which
            // certmonger uses, refuses a SignedData without content.
            econtent: Some(octets(content)?),
        },
        certificates: Some(cms::signed_data::CertificateSet(
            vec![cms::cert::CertificateChoices::Certificate(signer_cert)]
                .try_into()
                .map_err(enc)?,
        )),
        crls: None,
        signer_infos: SignerInfos(vec![signer_info].try_into().map_err(enc)?),
    };
    content_info(ID_SIGNED_DATA, &sd)
}

/// The GetNextCACert response (RFC 8894 §4.7): the next CA's certificates as a certs-only
/// SignedData, itself the content of a SignedData signed by the current CA.
pub fn next_ca(signer: &MessageSigner, certs: &[Vec<u8>]) -> Result<Vec<u8>, WireError> {
    signed_message(signer, Digest::Sha256, Vec::new(), &degenerate(certs)?)
}

/// A certs-only ("degenerate") SignedData, as GetCACert and CertRep carry them.
pub fn degenerate(certs: &[Vec<u8>]) -> Result<Vec<u8>, WireError> {
    let certs = certs
        .iter()
        .map(|c| Certificate::from_der(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WireError::Encode(e.to_string()))?;
    content_info(ID_SIGNED_DATA, &Degenerate(&certs))
}

/// A SignedData with no signers and no certificates whose `crls` hold one CRL (GetCRL).
pub fn degenerate_crl(crl: &[u8]) -> Result<Vec<u8>, WireError> {
    use cms::revocation::{RevocationInfoChoice, RevocationInfoChoices};
    let enc = |e: der::Error| WireError::Encode(e.to_string());
    let list = x509_cert::crl::CertificateList::from_der(crl).map_err(enc)?;
    let crls = SetOfVec::try_from(vec![RevocationInfoChoice::Crl(list)]).map_err(enc)?;
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: None,
        crls: Some(RevocationInfoChoices(crls)),
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    content_info(ID_SIGNED_DATA, &sd)
}

/// Encrypts `content` to `recipient`'s RSA key in an EnvelopedData (key transport).
fn envelope(content: &[u8], recipient: &X509, cipher: Cipher) -> Result<Vec<u8>, WireError> {
    let enc = |e: der::Error| WireError::Encode(e.to_string());
    let ssl = |e: openssl::error::ErrorStack| WireError::Encode(e.to_string());
    let (key, iv) = (random(cipher.key_len()), random(cipher.iv_len()));
    let ciphertext = cbc_encrypt(cipher, &key, &iv, content);
    let public = recipient.public_key().map_err(ssl)?;
    if public.rsa().is_err() {
        return Err(WireError::Encode(
            "the requester's certificate has no RSA key to encrypt to".into(),
        ));
    }
    let mut e = openssl::encrypt::Encrypter::new(&public).map_err(ssl)?;
    e.set_rsa_padding(Padding::PKCS1).map_err(ssl)?;
    let mut enc_key = vec![0; e.encrypt_len(&key).map_err(ssl)?];
    let n = e.encrypt(&key, &mut enc_key).map_err(ssl)?;
    enc_key.truncate(n);

    let issuer = recipient.issuer_name().to_der().map_err(ssl)?;
    let serial = recipient
        .serial_number()
        .to_bn()
        .map(|b| b.to_vec())
        .map_err(ssl)?;
    let ktri = RequesterKtri {
        version: CmsVersion::V0,
        rid: RequesterId {
            issuer: AnyRef::from_der(&issuer).map_err(enc)?,
            serial_number: UintRef::new(&serial).map_err(enc)?,
        },
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        enc_key: OctetString::new(enc_key).map_err(enc)?,
    }
    .to_der()
    .map_err(enc)?;
    let ed = RequesterEnvelope {
        version: CmsVersion::V0,
        recip_infos: AnyRef::new(Tag::Set, &ktri).map_err(enc)?,
        encrypted_content: EncryptedContentInfo {
            content_type: ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: cipher.oid(),
                parameters: Some(octets(&iv)?),
            },
            encrypted_content: Some(OctetString::new(ciphertext).map_err(enc)?),
        },
    };
    content_info(ID_ENVELOPED_DATA, &ed)
}

/// EnvelopedData addressed to a requester (one key-transport recipient). Its own types
/// because the requester's throw-away certificate may carry a serial longer than RFC 5280's
/// 20 octets (certmonger: 32), which the strict `IssuerAndSerialNumber` refuses.
#[derive(Sequence)]
struct RequesterEnvelope<'a> {
    version: CmsVersion,
    /// SET OF RecipientInfo holding one encoded [`RequesterKtri`].
    recip_infos: AnyRef<'a>,
    encrypted_content: EncryptedContentInfo,
}

#[derive(Sequence)]
struct RequesterKtri<'a> {
    version: CmsVersion,
    rid: RequesterId<'a>,
    key_enc_alg: AlgorithmIdentifierOwned,
    enc_key: OctetString,
}

/// IssuerAndSerialNumber with the issuer Name as encoded and any serial length.
#[derive(Sequence)]
struct RequesterId<'a> {
    issuer: AnyRef<'a>,
    serial_number: UintRef<'a>,
}

fn issuer_and_serial(cert: &Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    }
}

fn content_info(
    content_type: ObjectIdentifier,
    content: &(impl EncodeValue + Tagged),
) -> Result<Vec<u8>, WireError> {
    let enc = |e: der::Error| WireError::Encode(e.to_string());
    ContentInfo {
        content_type,
        content: Any::encode_from(content).map_err(enc)?,
    }
    .to_der()
    .map_err(enc)
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, WireError> {
    Ok(Attribute {
        oid,
        values: vec![value]
            .try_into()
            .map_err(|e: der::Error| WireError::Encode(e.to_string()))?,
    })
}

fn octets(bytes: &[u8]) -> Result<Any, WireError> {
    OctetString::new(bytes)
        .and_then(|o| Any::encode_from(&o))
        .map_err(|e| WireError::Encode(e.to_string()))
}

/// PrintableString where the text allows it (RFC 8894 says PrintableString), else UTF8String:
/// a transactionID is echoed as the client wrote it.
fn printable(s: &str) -> Result<Any, WireError> {
    match PrintableStringRef::new(s) {
        Ok(p) => Any::encode_from(&p),
        Err(_) => Utf8StringRef::new(s).and_then(|u| Any::encode_from(&u)),
    }
    .map_err(|e| WireError::Encode(e.to_string()))
}

/// Certs-only SignedData whose `certificates` keep the given order (issued certificate first:
/// clients take the first one). DER would sort a SET OF, hence this hand-ordered value.
struct Degenerate<'a>(&'a [Certificate]);

struct OrderedCerts<'a>(&'a [Certificate]);

impl EncodeValue for OrderedCerts<'_> {
    fn value_len(&self) -> der::Result<Length> {
        self.0
            .iter()
            .try_fold(Length::ZERO, |acc, c| acc + c.encoded_len()?)
    }

    fn encode_value(&self, w: &mut impl Writer) -> der::Result<()> {
        self.0.iter().try_for_each(|c| c.encode(w))
    }
}

impl Tagged for OrderedCerts<'_> {
    fn tag(&self) -> Tag {
        // certificates [0] IMPLICIT CertificateSet
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        }
    }
}

impl Degenerate<'_> {
    fn fields(
        &self,
    ) -> (
        CmsVersion,
        SetOfVec<AlgorithmIdentifierOwned>,
        EncapsulatedContentInfo,
        OrderedCerts<'_>,
        SetOfVec<SignerInfo>,
    ) {
        (
            CmsVersion::V1,
            SetOfVec::new(),
            EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: None,
            },
            OrderedCerts(self.0),
            SetOfVec::new(),
        )
    }
}

impl EncodeValue for Degenerate<'_> {
    fn value_len(&self) -> der::Result<Length> {
        let (v, d, e, c, s) = self.fields();
        v.encoded_len()?
            + d.encoded_len()?
            + e.encoded_len()?
            + c.encoded_len()?
            + s.encoded_len()?
    }

    fn encode_value(&self, w: &mut impl Writer) -> der::Result<()> {
        let (v, d, e, c, s) = self.fields();
        v.encode(w)?;
        d.encode(w)?;
        e.encode(w)?;
        c.encode(w)?;
        s.encode(w)
    }
}

impl Tagged for Degenerate<'_> {
    fn tag(&self) -> Tag {
        Tag::Sequence
    }
}
