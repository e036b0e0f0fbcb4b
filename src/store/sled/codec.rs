//! How keys and values are laid out in the trees.

use super::*;
pub(super) use crate::store::codec::{decode, encode};

/// Document key: the kind's tag byte, then the id.
pub(super) fn doc_key(key: &DocKey) -> Vec<u8> {
    [&[key.kind.tag()][..], key.id.as_bytes()].concat()
}

pub(super) fn decode_version(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

pub(super) fn decode_doc(bytes: &[u8]) -> Result<Doc, StoreError> {
    let version = decode_version(bytes).ok_or_else(|| StoreError::Corrupt {
        tree: "docs",
        message: "document shorter than its version".into(),
    })?;
    Ok(Doc {
        value: bytes[8..].to_vec(),
        version,
    })
}

/// Index key: length-prefixed owner, then the serial, so prefixes never collide.
pub(super) fn index_key(owner: &str, serial: &[u8]) -> Vec<u8> {
    let owner = owner.as_bytes();
    let len = u16::try_from(owner.len()).expect("owner ids are at most 128 bytes");
    [&len.to_be_bytes()[..], owner, serial].concat()
}

pub(super) fn decode_seq(key: &[u8]) -> Result<Seq, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Corrupt {
        tree: "events",
        message: "event key is not 8 bytes".into(),
    })?;
    Ok(Seq::from_be_bytes(bytes))
}

pub(super) fn backend(e: sled::Error) -> StoreError {
    StoreError::backend("sled", cause(e))
}
