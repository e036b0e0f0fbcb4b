//! Prometheus metrics served at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::{IssuerId, Protocol};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuedLabels {
    protocol: &'static str,
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    protocol: &'static str,
    reason: &'static str,
}

/// A reason from a fixed set: SCEP refusals, connections closed by the server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// The route template (or `unmatched`): never the raw path.
    route: String,
    /// One of a fixed set: a client may send any token as its method.
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CipherLabels {
    cipher: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    issued: Family<IssuedLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    scep_refused: Family<ReasonLabels, Counter>,
    issue_seconds: Histograms<ProtocolLabels>,
    http_seconds: Histograms<HttpLabels>,
    scep_ciphers: Family<CipherLabels, Counter>,
    connections_open: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
}

fn latency() -> Histogram {
    // 0.25 ms … ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("enrollca");
        let issued = Family::<IssuedLabels, Counter>::default();
        let failed = Family::<FailedLabels, Counter>::default();
        let scep_refused = Family::<ReasonLabels, Counter>::default();
        let issue_seconds: Histograms<ProtocolLabels> = Family::new_with_constructor(latency);
        let http_seconds: Histograms<HttpLabels> = Family::new_with_constructor(latency);
        registry.register("certificates_issued", "Certificates issued", issued.clone());
        registry.register(
            "issuance_failures",
            "Issuance attempts that failed, by reason",
            failed.clone(),
        );
        registry.register(
            "scep_refusals",
            "SCEP requests refused: by failInfo, or `unreadable` for messages answered with HTTP 400",
            scep_refused.clone(),
        );
        registry.register(
            "issuance_duration_seconds",
            "Time to sign and durably record a certificate",
            issue_seconds.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by route, method and status",
            http_seconds.clone(),
        );
        let scep_ciphers = Family::<CipherLabels, Counter>::default();
        registry.register(
            "scep_requests_by_cipher",
            "SCEP requests opened, by the content cipher the client chose (`des` is single DES)",
            scep_ciphers.clone(),
        );
        let connections_open = Gauge::default();
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_connections_open",
            "HTTP and HTTPS connections open now",
            connections_open.clone(),
        );
        registry.register(
            "http_connections_closed_by_server",
            "Connections the server closed: `idle`, or `header_timeout` (no complete request in time)",
            connections_closed.clone(),
        );
        Self {
            registry,
            issued,
            failed,
            scep_refused,
            issue_seconds,
            http_seconds,
            scep_ciphers,
            connections_open,
            connections_closed,
        }
    }
}

/// An open connection, for the gauge.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Methods we route are labelled by name; anything else is `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn protocol_label(p: Protocol) -> &'static str {
    match p {
        Protocol::Scep => "scep",
        Protocol::Acme => "acme",
        Protocol::Admin => "admin",
    }
}

impl Metrics {
    /// An issuance: by which issuer it was signed, or why it failed (a short label).
    pub fn observe_issuance(
        &self,
        protocol: Protocol,
        outcome: Result<&IssuerId, &'static str>,
        elapsed: Duration,
    ) {
        let protocol = protocol_label(protocol);
        match outcome {
            Ok(issuer) => {
                self.issued
                    .get_or_create(&IssuedLabels {
                        protocol,
                        issuer: issuer.to_string(),
                    })
                    .inc();
                self.issue_seconds
                    .get_or_create(&ProtocolLabels { protocol })
                    .observe(elapsed.as_secs_f64());
            }
            Err(reason) => {
                self.failed
                    .get_or_create(&FailedLabels { protocol, reason })
                    .inc();
            }
        }
    }

    pub fn observe_scep_cipher(&self, cipher: &'static str) {
        self.scep_ciphers
            .get_or_create(&CipherLabels { cipher })
            .inc();
    }

    pub fn observe_scep_refusal(&self, reason: &'static str) {
        self.scep_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn observe_http(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: u16,
        elapsed: Duration,
    ) {
        self.http_seconds
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method_label(method),
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a connection open until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    pub fn observe_connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
