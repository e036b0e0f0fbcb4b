//! Whose fault a failure is, in one vocabulary.
//!
//! Every module keeps its own error enum, in its own terms (docs/error-handling.md). Each says
//! which [`Kind`] a variant is, and each wire mapping (ACME problem documents, SCEP CertReps,
//! API problem documents) answers by kind unless it has something more specific to say. A
//! failure of ours keeps its cause as a `#[source]`, and the mapping logs the whole chain.

use std::fmt;
use std::sync::Arc;

/// The shared kinds. Only the last two are ours: a client is never told that a store or a
/// key failing was its mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is wrong and will stay wrong if repeated.
    BadInput,
    /// What the request names does not exist.
    NotFound,
    /// The state changed under the request, or already is what the request would make it.
    Conflict,
    /// We cannot answer now; the same request may succeed later (HTTP 503).
    Unavailable,
    /// We failed (HTTP 500).
    Internal,
}

impl Kind {
    /// Whether the failure is ours rather than the client's.
    pub fn is_ours(self) -> bool {
        matches!(self, Self::Unavailable | Self::Internal)
    }
}

/// Seconds a client is asked to wait (`Retry-After`) when we are [`Kind::Unavailable`].
pub(crate) const RETRY_UNAVAILABLE_SECS: u64 = 5;

/// What every protocol tells a client about a failure of ours that may pass: to retry, and
/// nothing of why (that goes to the log).
pub(crate) const UNAVAILABLE_DETAIL: &str =
    "the server cannot complete the request now; retry later";

/// What every protocol tells a client about a failure of ours.
pub(crate) const INTERNAL_DETAIL: &str = "the server could not complete the request; see its log";

/// The cause of a failure of ours, shareable: one store failure answers every request of the
/// batch it failed.
pub(crate) type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Any error, or the message of a broken invariant of ours, as a [`Cause`].
pub(crate) fn cause(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Cause {
    Arc::from(e.into())
}

/// An error followed by its causes, `outer: inner: innermost`, for one log line.
pub(crate) struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the store")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_names_every_cause_once() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(Chain(&e).to_string(), "reading the store: disk on fire");
    }

    #[test]
    fn only_unavailable_and_internal_are_ours() {
        let ours: Vec<Kind> = [
            Kind::BadInput,
            Kind::NotFound,
            Kind::Conflict,
            Kind::Unavailable,
            Kind::Internal,
        ]
        .into_iter()
        .filter(|k| k.is_ours())
        .collect();
        assert_eq!(ours, [Kind::Unavailable, Kind::Internal]);
    }
}
