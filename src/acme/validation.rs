//! Challenge validation: which validator proves which challenge type, and how validators find
//! an identifier's addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::dns01::Dns01;
use super::error::{AcmeError, ProblemType};
use super::http01::Http01;
use super::model::{ChallengeType, Identifier};
use super::tls_alpn01::TlsAlpn01;
use crate::config;

/// The validators of the challenge types that the server checks by asking the network
/// (device-attest-01 carries its evidence in the answer instead).
pub struct Validators {
    http01: Http01,
    tls_alpn01: TlsAlpn01,
    /// Only when a profile offers dns-01: a host without DNS configuration can still serve
    /// the others.
    dns01: Option<Dns01>,
}

impl Validators {
    pub fn new(config: &config::Acme) -> anyhow::Result<Self> {
        let offers_dns01 = config
            .profiles
            .values()
            .any(|p| p.challenges.contains(&ChallengeType::Dns01));
        Ok(Self {
            http01: Http01::new(config.http01_port)?,
            tls_alpn01: TlsAlpn01::new(config.tls_alpn01_port)?,
            dns01: offers_dns01
                .then(|| Dns01::new(config.dns01_resolver))
                .transpose()?,
        })
    }

    /// Succeeds when the identifier answers `token` as `kind` requires.
    pub async fn validate(
        &self,
        kind: ChallengeType,
        identifier: &Identifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), AcmeError> {
        match kind {
            ChallengeType::Http01 => {
                self.http01
                    .validate(identifier, token, key_authorization)
                    .await
            }
            ChallengeType::TlsAlpn01 => {
                self.tls_alpn01
                    .validate(identifier, key_authorization)
                    .await
            }
            ChallengeType::Dns01 => match &self.dns01 {
                Some(dns01) => dns01.validate(identifier, key_authorization).await,
                None => Err(AcmeError::new(
                    ProblemType::ServerInternal,
                    "dns-01 is not configured on this server",
                )),
            },
            ChallengeType::DeviceAttest01 => Err(AcmeError::malformed(
                "device-attest-01 is answered with {\"attObj\": base64url(CBOR)}",
            )),
        }
    }
}

/// The addresses of `host`. Names under `localhost` are the loopback addresses without asking
/// DNS (RFC 6761 §6.3); everything else goes to the system resolver.
pub(super) async fn lookup(host: &str) -> std::io::Result<Vec<IpAddr>> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if is_localhost(&host) {
        return Ok(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
    Ok(addrs.map(|a| a.ip()).collect())
}

/// Whether `name` (lower case, no trailing dot) is `localhost` or under it: loopback by
/// definition, never in DNS (RFC 6761 §6.3).
pub(super) fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}
