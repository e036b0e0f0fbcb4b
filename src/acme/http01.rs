//! The http-01 validator (RFC 8555 §8.3): fetch the key authorization from the identifier on
//! the configured port, with bounded time, redirects and body size.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::error::{AcmeError, ProblemType};
use super::model::{Identifier, IdentifierType};
use super::validation::lookup;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 5;
/// A key authorization is under 200 bytes; anything much larger is not one.
const MAX_BODY: usize = 8 * 1024;

pub struct Http01 {
    client: reqwest::Client,
    port: u16,
}

impl Http01 {
    pub fn new(port: u16) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if !matches!(attempt.url().scheme(), "http" | "https") {
                    attempt.error("redirect to a scheme other than http(s)")
                } else {
                    attempt.follow()
                }
            }))
            .dns_resolver(Arc::new(LocalhostAware))
            // Each validation is for another name, usually a host never asked again: an idle
            // connection kept for reuse would only hold a socket open on both sides.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("enrollca/", env!("CARGO_PKG_VERSION"), " http-01"))
            .build()?;
        Ok(Self { client, port })
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
        let connection = |e: &dyn std::fmt::Display| {
            AcmeError::new(ProblemType::Connection, format!("fetching {url}: {e}"))
        };
        let mut response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| connection(&without_url(e)))?;
        if !response.status().is_success() {
            return Err(AcmeError::unauthorized(format!(
                "{url} answered HTTP {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| connection(&without_url(e)))?
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
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// reqwest's resolver hook, answered by the validators' `lookup`.
struct LocalhostAware;

impl Resolve for LocalhostAware {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = lookup(&host).await?;
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
