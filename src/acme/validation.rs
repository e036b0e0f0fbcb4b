//! Challenge validation: which validator proves which challenge type, and how validators find
//! an identifier's addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::dns01::Dns01;
use super::error::{AcmeError, ProblemType};
use super::http01::Http01;
use super::model::{ChallengeType, Identifier};
use super::settings::AcmeSettings;
use super::targets::Targets;
use super::tls_alpn01::TlsAlpn01;

/// The validators of the challenge types that the server checks by asking the network
/// (device-attest-01 carries its evidence in the answer instead).
pub struct Validators {
    /// By profile name: each profile reaches only the addresses it permits.
    reaching: BTreeMap<String, Reaching>,
    /// Only when a profile offers dns-01: a host without DNS configuration can still serve
    /// the others. It asks the configured resolver, never the client's host.
    dns01: Option<Dns01>,
}

/// The validators that connect to the client's host, for one profile.
struct Reaching {
    http01: Http01,
    tls_alpn01: TlsAlpn01,
}

impl Validators {
    pub fn new(config: &AcmeSettings) -> anyhow::Result<Self> {
        let offers_dns01 = config
            .profiles
            .values()
            .any(|p| p.challenges.contains(&ChallengeType::Dns01));
        let mut reaching = BTreeMap::new();
        for (name, profile) in &config.profiles {
            let targets = Arc::new(Targets::new(profile.internal_targets.clone()));
            reaching.insert(
                name.clone(),
                Reaching {
                    http01: Http01::new(config.http01_port, Arc::clone(&targets))?,
                    tls_alpn01: TlsAlpn01::new(config.tls_alpn01_port, targets)?,
                },
            );
        }
        Ok(Self {
            reaching,
            dns01: offers_dns01
                .then(|| Dns01::new(config.dns01_resolver))
                .transpose()?,
        })
    }

    /// Succeeds when the identifier answers `token` as `kind` requires, for `profile`.
    pub async fn validate(
        &self,
        profile: &str,
        kind: ChallengeType,
        identifier: &Identifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), AcmeError> {
        let reaching = || {
            self.reaching
                .get(profile)
                .ok_or_else(|| AcmeError::internal(format!("no validators for profile {profile}")))
        };
        match kind {
            ChallengeType::Http01 => {
                reaching()?
                    .http01
                    .validate(identifier, token, key_authorization)
                    .await
            }
            ChallengeType::TlsAlpn01 => {
                reaching()?
                    .tls_alpn01
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

/// The addresses of `host` that `targets` permits. Names under `localhost` are the loopback
/// addresses without asking DNS (RFC 6761 §6.3); everything else goes to the system resolver.
/// A host with addresses but none permitted is an error that says only that.
pub(super) async fn lookup(host: &str, targets: &Targets) -> std::io::Result<Vec<IpAddr>> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let all = if is_localhost(&host) {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        vec![ip]
    } else {
        tokio::net::lookup_host((host.as_str(), 0))
            .await?
            .map(|a| a.ip())
            .collect()
    };
    let permitted: Vec<IpAddr> = all
        .iter()
        .copied()
        .filter(|ip| targets.permits(*ip))
        .collect();
    if permitted.is_empty() && !all.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            NOT_PERMITTED,
        ));
    }
    Ok(permitted)
}

/// What a client is told when its host resolves only to addresses the profile may not reach.
pub(super) const NOT_PERMITTED: &str =
    "the host resolves only to internal addresses, which this profile does not validate";

/// Whether `name` (lower case, no trailing dot) is `localhost` or under it: loopback by
/// definition, never in DNS (RFC 6761 §6.3).
pub(super) fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}
