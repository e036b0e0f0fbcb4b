//! The dns-01 validator (RFC 8555 §8.4): a TXT record at `_acme-challenge.<name>` must hold
//! base64url(SHA-256(key authorization)). Asked of the configured DNS server, or the system's.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{ResolveError, TokioResolver};

use super::error::{AcmeError, ProblemType};
use super::model::{Identifier, IdentifierType};
use super::validation::is_localhost;

/// Per query attempt; two attempts, so a validation gives up within 10 s like the others.
const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Dns01 {
    resolver: TokioResolver,
}

impl Dns01 {
    /// `server`: the DNS server to ask; none: the system's configuration.
    pub(crate) fn new(server: Option<SocketAddr>) -> anyhow::Result<Self> {
        let provider = TokioConnectionProvider::default();
        let mut builder = match server {
            Some(addr) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    provider,
                )
            }
            None => TokioResolver::builder(provider).map_err(|e| {
                anyhow::anyhow!("dns-01: reading the system's DNS configuration: {e}")
            })?,
        };
        let opts = builder.options_mut();
        opts.timeout = TIMEOUT;
        opts.attempts = 2;
        // A client that fixes its record and retries must be seen at once: no caching.
        opts.cache_size = 0;
        // The name asked is absolute: no search domains.
        opts.ndots = 0;
        Ok(Self {
            resolver: builder.build(),
        })
    }

    /// Succeeds when one of the TXT records at `_acme-challenge.<name>` is the digest of
    /// `key_authorization`.
    pub(crate) async fn validate(
        &self,
        identifier: &Identifier,
        key_authorization: &str,
    ) -> Result<(), AcmeError> {
        if identifier.kind != IdentifierType::Dns {
            return Err(AcmeError::malformed(format!(
                "dns-01 proves DNS names, not {}",
                identifier.kind.name()
            )));
        }
        let name = format!("_acme-challenge.{}.", identifier.value);
        if is_localhost(&identifier.value) {
            return Err(AcmeError::new(
                ProblemType::IncorrectResponse,
                format!("no TXT record at {name}: names under localhost are not in DNS (RFC 6761)"),
            ));
        }
        let expected = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            key_authorization.as_bytes(),
        ));
        let lookup = match self.resolver.txt_lookup(name.as_str()).await {
            Ok(lookup) => lookup,
            // The name or its TXT records do not exist: the client's record is missing. Any
            // other answer (SERVFAIL, REFUSED, no answer) is a failure of DNS itself.
            Err(e) if absent(&e) => {
                return Err(AcmeError::new(
                    ProblemType::IncorrectResponse,
                    format!("no TXT record at {name}"),
                ));
            }
            Err(e) => {
                return Err(AcmeError::new(
                    ProblemType::Dns,
                    format!("looking up TXT {name}: {e}"),
                ));
            }
        };
        // A record split into several strings counts as their concatenation (RFC 7208 §3.3).
        let found = lookup
            .iter()
            .any(|txt| txt.txt_data().concat() == expected.as_bytes());
        if found {
            Ok(())
        } else {
            Err(AcmeError::new(
                ProblemType::IncorrectResponse,
                format!(
                    "{} TXT record(s) at {name}, none of them the digest of this challenge's key \
                     authorization",
                    lookup.iter().count()
                ),
            ))
        }
    }
}

fn absent(e: &ResolveError) -> bool {
    matches!(
        e.proto().map(ProtoError::kind),
        Some(ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NoError | ResponseCode::NXDomain,
            ..
        })
    )
}
