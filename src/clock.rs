//! Time as a dependency: code asks its clock, so tests can move time instead of waiting.

use time::OffsetDateTime;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;

    /// Now, in the whole seconds certificates, CRLs and OCSP answers carry, so that a record
    /// says exactly what the signed artefact says.
    fn now_seconds(&self) -> OffsetDateTime {
        whole_seconds(self.now())
    }
}

/// `t` without its fraction of a second.
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t - time::Duration::nanoseconds(i64::from(t.nanosecond()))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn whole_seconds_drops_only_the_fraction() {
        let t = datetime!(2026-12-05 03:59:59.999_999_999 UTC);
        assert_eq!(whole_seconds(t), datetime!(2026-12-05 03:59:59 UTC));
        assert_eq!(whole_seconds(whole_seconds(t)), whole_seconds(t));
    }
}
