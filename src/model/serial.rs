//! Certificate serial numbers (RFC 5280 §4.1.2.2: positive, at most 20 octets).

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Octets in a generated serial. The top bit is cleared (positive INTEGER) and the top octet is
/// never zero (so the DER encoding is exactly this long): 127 bits of entropy minus a sliver.
const LEN: usize = 16;

/// A certificate serial number: the big-endian magnitude of a positive INTEGER, without
/// leading zero octets.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Serial(Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SerialError {
    #[error("serial must be 1 to 40 hexadecimal digits (optionally colon-separated)")]
    Syntax,
    #[error("serial must be positive and at most 20 octets")]
    Range,
}

impl Serial {
    /// A fresh random serial from the OS CSPRNG.
    pub fn random() -> Self {
        let mut bytes = [0u8; LEN];
        loop {
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            bytes[0] &= 0x7f;
            if bytes[0] != 0 {
                return Self(bytes.to_vec());
            }
        }
    }

    /// From the magnitude octets of a parsed certificate's serial.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SerialError> {
        let start = bytes
            .iter()
            .position(|&b| b != 0)
            .ok_or(SerialError::Range)?;
        let magnitude = &bytes[start..];
        // 20 octets of DER content: a set top bit would need a 21st (the sign octet).
        if magnitude.len() > 20 || (magnitude.len() == 20 && magnitude[0] & 0x80 != 0) {
            return Err(SerialError::Range);
        }
        Ok(Self(magnitude.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    /// Lower-case hex, as the API and `openssl x509 -serial` (modulo case) show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = SerialError;
    fn from_str(s: &str) -> Result<Self, SerialError> {
        let digits: String = s.chars().filter(|&c| c != ':').collect();
        if digits.is_empty() || digits.len() > 42 {
            return Err(SerialError::Syntax);
        }
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = hex::decode(padded).map_err(|_| SerialError::Syntax)?;
        Self::from_bytes(&bytes)
    }
}

impl TryFrom<String> for Serial {
    type Error = SerialError;
    fn try_from(s: String) -> Result<Self, SerialError> {
        s.parse()
    }
}

impl From<Serial> for String {
    fn from(s: Serial) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn random_serials_are_positive_fixed_length_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let s = Serial::random();
            assert_eq!(s.as_bytes().len(), LEN);
            assert!(s.as_bytes()[0] & 0x80 == 0 && s.as_bytes()[0] != 0);
            assert!(seen.insert(s));
        }
    }

    #[test]
    fn parses_hex_forms() {
        let s: Serial = "0A:bc:01".parse().unwrap();
        assert_eq!(s.as_bytes(), &[0x0a, 0xbc, 0x01]);
        assert_eq!(s.to_string(), "0abc01");
        assert_eq!("abc01".parse::<Serial>().unwrap(), s);
        assert_eq!("00".parse::<Serial>(), Err(SerialError::Range));
        assert_eq!("xyz".parse::<Serial>(), Err(SerialError::Syntax));
        assert_eq!("".parse::<Serial>(), Err(SerialError::Syntax));
        assert_eq!(Serial::from_bytes(&[0x80; 20]), Err(SerialError::Range));
        assert!(Serial::from_bytes(&[0x7f; 20]).is_ok());
    }
}
