//! The vocabulary every layer shares: serial numbers, issuer and device ids, key families,
//! revocation reasons, certificate records and their events, issuer states, attested facts.
//! It depends on nothing else in the crate.

mod cert;
mod device;
mod issuer;
mod reason;
mod serial;

pub use cert::{CertRecord, CertStatus, Event, EventKind, IssuerState, Protocol, Seq, Standing};
pub use device::{DeviceFacts, DeviceId};
pub use issuer::{IssuerId, KeyFamily};
pub use reason::RevocationReason;
pub use serial::{Serial, SerialError};
