//! Records are CBOR in every backend: one encoding, so that a record moved between backends
//! (`enrollca store migrate`) is the same bytes on both sides.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

/// Decodes a record read from `table` (named in the error when it does not decode).
pub(crate) fn decode<T: DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Corrupt {
        tree: table,
        message: e.to_string(),
    })
}
