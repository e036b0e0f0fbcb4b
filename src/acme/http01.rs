//! The http-01 validator (RFC 8555 §8.3): fetch the key authorization from the identifier on
//! the configured port, with bounded time, redirects and body size.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::error::{AcmeError, ProblemType};
use super::model::{Identifier, IdentifierType};
use super::targets::Targets;
use super::validation::{NOT_PERMITTED, lookup};

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 5;
/// A key authorization is under 200 bytes; anything much larger is not one.
const MAX_BODY: usize = 8 * 1024;

pub struct Http01 {
    client: reqwest::Client,
    port: u16,
    targets: Arc<Targets>,
}

impl Http01 {
    /// A validator for one profile: it connects only where `targets` permits.
    pub fn new(port: u16, targets: Arc<Targets>) -> anyhow::Result<Self> {
        let allowed = Arc::clone(&targets);
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let url = attempt.url();
                // Names are checked when resolved; an address in the URL is never resolved.
                let literal = url
                    .host_str()
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                    .and_then(|h| h.parse::<IpAddr>().ok());
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if !matches!(url.scheme(), "http" | "https") {
                    attempt.error("redirect to a scheme other than http(s)")
                } else if !matches!(url.port_or_known_default(), Some(80 | 443)) {
                    // RFC 8555 §8.3: redirects go to ports 80 and 443 only.
                    attempt.error("redirect to a port other than 80 or 443")
                } else if literal.is_some_and(|ip| !allowed.permits(ip)) {
                    attempt.error(NOT_PERMITTED)
                } else {
                    attempt.follow()
                }
            }))
            .dns_resolver(Arc::new(Resolver(Arc::clone(&targets))))
            // Each validation is for another name, usually a host never asked again: an idle
            // connection kept for reuse would only hold a socket open on both sides.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("enrollca/", env!("CARGO_PKG_VERSION"), " http-01"))
            .build()?;
        Ok(Self {
            client,
            port,
            targets,
        })
    }

    /// Succeeds when the identifier serves `key_authorization` for `token`.
    pub async fn validate(
        &self,
        identifier: &Identifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), AcmeError> {
        let host = match identifier.kind {
            IdentifierType::Dns => identifier.value.clone(),
            IdentifierType::Ip => match identifier.value.parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
                _ => identifier.value.clone(),
            },
            // Profiles never offer http-01 for devices; config validation sees to it.
            IdentifierType::PermanentIdentifier => {
                return Err(AcmeError::malformed(
                    "a permanent identifier cannot be validated by http-01",
                ));
            }
        };
        let url = format!(
            "http://{host}:{}/.well-known/acme-challenge/{token}",
            self.port
        );
        // The client learns that the fetch failed, not why: the reason (refused, timed out,
        // an internal address, a redirect's status) would make this a scanner of the
        // network the validator sits in. The log has it.
        let failed = |why: &dyn std::fmt::Display| {
            tracing::info!(%url, %why, "http-01 fetch failed");
            let detail = if why.to_string().contains(NOT_PERMITTED) {
                NOT_PERMITTED
            } else {
                "could not fetch the key authorization"
            };
            AcmeError::new(ProblemType::Connection, format!("{url}: {detail}"))
        };
        if let Ok(ip) = identifier.value.parse::<IpAddr>()
            && !self.targets.permits(ip)
        {
            return Err(AcmeError::new(
                ProblemType::Connection,
                format!("{url}: {NOT_PERMITTED}"),
            ));
        }
        let mut response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| failed(&without_url(e)))?;
        if !response.status().is_success() {
            return Err(AcmeError::unauthorized(format!(
                "{url} did not answer with the key authorization (HTTP {})",
                response.status().as_u16()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(&without_url(e)))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(AcmeError::unauthorized(format!(
                    "{url} answered more than {MAX_BODY} bytes"
                )));
            }
        }
        // §8.3: whitespace at the end of the body is ignored.
        let trimmed = body.trim_ascii_end();
        if trimmed == key_authorization.as_bytes() {
            Ok(())
        } else {
            Err(AcmeError::new(
                ProblemType::IncorrectResponse,
                format!("{url} did not serve the expected key authorization"),
            ))
        }
    }
}

/// reqwest's message repeats the URL; the problem names it once.
fn without_url(e: reqwest::Error) -> String {
    crate::error::Chain(&e.without_url()).to_string()
}

/// reqwest's resolver hook, answered by the validators' `lookup` for one profile's targets:
/// the first request's name and every redirect's.
struct Resolver(Arc<Targets>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let targets = Arc::clone(&self.0);
        Box::pin(async move {
            let addrs = lookup(&host, &targets).await?;
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
