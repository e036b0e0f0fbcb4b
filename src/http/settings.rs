//! What the `[tls]` and `[limits]` configuration sections say.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// TLS server certificate for the HTTPS listener. Without both files a certificate for
/// `localhost`/`127.0.0.1` issued by the enrollca root is generated in the data directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// What one client may hold of the server: connections and their time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A new connection's first request (TLS handshake included), and every later request's
    /// headers, must arrive within this.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest a request may take, from its headers to its answer's (body upload included):
    /// 503 after it. Above the longest wait a request may ask for (event feed, 60 s).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections open at once, both listeners together; more wait in the listen backlog.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_streams: u32,
    /// On SIGTERM, how long in-flight requests may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Requests a second one client address may make, sustained, of those that cost the CA
    /// before anyone is authenticated (SCEP PKIOperation: an RSA decryption; ACME
    /// newAccount: a durable write); 0 turns the limit off.
    pub client_rate: f64,
    /// How many of them it may make at once.
    pub client_burst: u32,
    /// SCEP PKIOperations one client address may have in flight (private-key work, and a
    /// validation webhook call); 0: no bound.
    pub client_concurrency: usize,
    /// New ACME orders a second per account, sustained (each is a durable write); 0: off.
    pub account_order_rate: f64,
    pub account_order_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(90),
            max_connections: 4096,
            http2_max_streams: 100,
            shutdown_timeout: Duration::from_secs(10),
            client_rate: 20.0,
            client_burst: 200,
            client_concurrency: 8,
            account_order_rate: 10.0,
            account_order_burst: 100,
        }
    }
}
