//! Secrets from configuration and requests (challenges, PINs, webhook keys): never printed,
//! compared in constant time.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string: never printed by `Debug`, compared in constant time.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality (length is not hidden, content is).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_not_debug_printed() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
    }
}
