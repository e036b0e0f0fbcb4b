//! SCEP message vocabulary (RFC 8894 §3.2.1): every code on the wire is an enum here.

use const_oid::ObjectIdentifier;

/// SCEP attribute OIDs (id-VeriSign 2.16.840.1.113733.1.9.x).
pub mod oid {
    use const_oid::ObjectIdentifier as O;
    pub const MESSAGE_TYPE: O = O::new_unwrap("2.16.840.1.113733.1.9.2");
    pub const PKI_STATUS: O = O::new_unwrap("2.16.840.1.113733.1.9.3");
    pub const FAIL_INFO: O = O::new_unwrap("2.16.840.1.113733.1.9.4");
    pub const SENDER_NONCE: O = O::new_unwrap("2.16.840.1.113733.1.9.5");
    pub const RECIPIENT_NONCE: O = O::new_unwrap("2.16.840.1.113733.1.9.6");
    pub const TRANSACTION_ID: O = O::new_unwrap("2.16.840.1.113733.1.9.7");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    CertRep,
    RenewalReq,
    PkcsReq,
    CertPoll,
    GetCert,
    GetCrl,
}

impl MessageType {
    pub fn code(self) -> &'static str {
        match self {
            Self::CertRep => "3",
            Self::RenewalReq => "17",
            Self::PkcsReq => "19",
            Self::CertPoll => "20",
            Self::GetCert => "21",
            Self::GetCrl => "22",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::CertRep,
            Self::RenewalReq,
            Self::PkcsReq,
            Self::CertPoll,
            Self::GetCert,
            Self::GetCrl,
        ]
        .into_iter()
        .find(|t| t.code() == code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiStatus {
    Success,
    Failure,
    Pending,
}

impl PkiStatus {
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Success, Self::Failure, Self::Pending]
            .into_iter()
            .find(|s| s.code() == code)
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Success => "0",
            Self::Failure => "2",
            Self::Pending => "3",
        }
    }
}

/// Why a decrypted request was refused (carried in a signed CertRep FAILURE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    BadAlg,
    BadMessageCheck,
    BadRequest,
    BadTime,
    BadCertId,
}

impl FailInfo {
    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::BadAlg,
            Self::BadMessageCheck,
            Self::BadRequest,
            Self::BadTime,
            Self::BadCertId,
        ]
        .into_iter()
        .find(|f| f.code() == code)
    }

    /// The RFC 8894 name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadAlg => "badAlg",
            Self::BadMessageCheck => "badMessageCheck",
            Self::BadRequest => "badRequest",
            Self::BadTime => "badTime",
            Self::BadCertId => "badCertId",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::BadAlg => "0",
            Self::BadMessageCheck => "1",
            Self::BadRequest => "2",
            Self::BadTime => "3",
            Self::BadCertId => "4",
        }
    }
}

/// Digest of the signerInfo. SHA-1 is accepted from old clients and answered in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256, ID_SHA_384, ID_SHA_512};
        match *oid {
            ID_SHA_1 => Some(Self::Sha1),
            ID_SHA_256 => Some(Self::Sha256),
            ID_SHA_384 => Some(Self::Sha384),
            ID_SHA_512 => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn oid(self) -> ObjectIdentifier {
        use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256, ID_SHA_384, ID_SHA_512};
        match self {
            Self::Sha1 => ID_SHA_1,
            Self::Sha256 => ID_SHA_256,
            Self::Sha384 => ID_SHA_384,
            Self::Sha512 => ID_SHA_512,
        }
    }

    pub fn openssl(self) -> openssl::hash::MessageDigest {
        use openssl::hash::MessageDigest as M;
        match self {
            Self::Sha1 => M::sha1(),
            Self::Sha256 => M::sha256(),
            Self::Sha384 => M::sha384(),
            Self::Sha512 => M::sha512(),
        }
    }
}

/// Content-encryption algorithm of a pkcsPKIEnvelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Des,
    Des3,
    Aes128,
    Aes192,
    Aes256,
}

impl Cipher {
    /// A metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Des => "des",
            Self::Des3 => "des3",
            Self::Aes128 => "aes128",
            Self::Aes192 => "aes192",
            Self::Aes256 => "aes256",
        }
    }

    const DES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.7");
    const DES3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.3.7");
    const AES128: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");
    const AES192: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.22");
    const AES256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        [
            Self::Des,
            Self::Des3,
            Self::Aes128,
            Self::Aes192,
            Self::Aes256,
        ]
        .into_iter()
        .find(|c| c.oid() == *oid)
    }

    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Des => Self::DES,
            Self::Des3 => Self::DES3,
            Self::Aes128 => Self::AES128,
            Self::Aes192 => Self::AES192,
            Self::Aes256 => Self::AES256,
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            Self::Des => 8,
            Self::Des3 | Self::Aes192 => 24,
            Self::Aes128 => 16,
            Self::Aes256 => 32,
        }
    }

    pub fn iv_len(self) -> usize {
        match self {
            Self::Des | Self::Des3 => 8,
            _ => 16,
        }
    }

    /// The cipher a reply uses: the request's, except single DES, which OpenSSL 3 clients
    /// cannot open (interop rule): those get 3DES.
    pub fn for_reply(self) -> Self {
        match self {
            Self::Des => Self::Des3,
            other => other,
        }
    }
}
