//! Prometheus metrics served at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ca::{IssueError, Issued};
use crate::store::Protocol;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    issued: Family<IssuedLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    scep_refused: Family<RefusalLabels, Counter>,
    issue_seconds: Histograms<ProtocolLabels>,
    http_seconds: Histograms<HttpLabels>,
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
        let scep_refused = Family::<RefusalLabels, Counter>::default();
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
        Self {
            registry,
            issued,
            failed,
            scep_refused,
            issue_seconds,
            http_seconds,
        }
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
    pub fn observe_issuance(
        &self,
        protocol: Protocol,
        result: &Result<Issued, IssueError>,
        elapsed: Duration,
    ) {
        let protocol = protocol_label(protocol);
        match result {
            Ok(issued) => {
                self.issued
                    .get_or_create(&IssuedLabels {
                        protocol,
                        issuer: issued.record.issuer.to_string(),
                    })
                    .inc();
                self.issue_seconds
                    .get_or_create(&ProtocolLabels { protocol })
                    .observe(elapsed.as_secs_f64());
            }
            Err(e) => {
                self.failed
                    .get_or_create(&FailedLabels {
                        protocol,
                        reason: e.reason(),
                    })
                    .inc();
            }
        }
    }

    pub fn observe_scep_refusal(&self, reason: &'static str) {
        self.scep_refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    pub fn observe_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_seconds
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
