//! The ACME server's decisions: who is asking (JWS + nonce + account), what they may have
//! (profile policy) and what changes (stored documents). Bytes and JSON shapes are the
//! handlers' business; everything here works on verified requests and typed resources.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use time::OffsetDateTime;

use super::error::{AcmeError, ProblemType};
use super::in_flight::InFlight;
use super::jws::{Jwk, Jws, KeyRef};
use super::model::{Account, AccountStatus, Identifier, IdentifierType};
use super::nonce::{Nonces, Redeem};
use super::validation::Validators;
use crate::acme::settings::AcmeProfile;
use crate::attest::Verifier;
use crate::ca::Ca;
use crate::inventory::Gate;
use crate::policy::Template;
use crate::rate::{Limiter, Rate};
use crate::store::{Backing, Doc, DocKey, Store, Stored};

/// A profile as the service uses it: its configuration, certificate template and, for
/// device-attest-01 profiles, how devices are known to be ours.
pub struct Profile {
    pub name: String,
    pub config: AcmeProfile,
    pub template: Arc<Template>,
    pub inventory: Gate,
}

impl Profile {
    /// Whether policy lets this profile issue for `id` (already normalised).
    pub fn allows(&self, id: &Identifier) -> Result<(), AcmeError> {
        if !self.config.challenges.iter().any(|c| c.validates(id)) {
            let what = match id.wildcard_base() {
                Some(_) => "wildcard names (only dns-01 does)".to_owned(),
                None => format!("{} identifiers", id.kind.name()),
            };
            return Err(AcmeError::new(
                ProblemType::UnsupportedIdentifier,
                format!(
                    "profile `{}` offers no challenge that validates {what}",
                    self.name
                ),
            ));
        }
        let allowed = match id.kind {
            IdentifierType::PermanentIdentifier => true,
            IdentifierType::Dns => {
                // `*.x` covers the names under `x`: allowed where `x` is.
                let name = id.wildcard_base().unwrap_or(&id.value);
                self.config.dns_names.iter().any(|base| {
                    let base = base.trim_end_matches('.').to_ascii_lowercase();
                    name == base || name.ends_with(&format!(".{base}"))
                })
            }
            IdentifierType::Ip => self
                .config
                .ip_addresses
                .iter()
                .any(|ip| ip.to_string() == id.value),
        };
        if allowed {
            Ok(())
        } else {
            Err(AcmeError::new(
                ProblemType::RejectedIdentifier,
                format!("profile `{}` does not issue for {id}", self.name),
            ))
        }
    }
}

/// A POSTed JWS with the profile whose URL it was sent to and that URL: what every
/// resource after the directory receives.
pub struct Signed {
    pub profile: Arc<Profile>,
    pub jws: Jws,
    pub url: String,
}

/// Who signed a request.
pub enum Signer {
    Account(Stored<Account>),
    /// A key not (necessarily) bound to an account: newAccount, revocation by certificate key.
    Key(Jwk),
}

/// Which key reference a resource takes (RFC 8555 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    Kid,
    Jwk,
    Either,
}

pub struct AcmeService {
    pub(super) ca: Arc<Ca>,
    pub(super) backing: Backing,
    pub(super) profiles: BTreeMap<String, Arc<Profile>>,
    pub(super) nonces: Nonces,
    pub(super) validators: Arc<Validators>,
    /// Attestation formats and trust anchors for device-attest-01.
    pub(super) attestation: Arc<Verifier>,
    /// Authorizations being validated.
    pub(super) validating: InFlight,
    /// Orders being finalized.
    pub(super) finalizing: InFlight,
    /// Public base URL of the HTTPS listener, without a trailing slash.
    pub(super) base: String,
    /// New orders, by account.
    pub(super) orders: Limiter<String>,
}

impl AcmeService {
    pub fn new(
        ca: Arc<Ca>,
        backing: Backing,
        profiles: impl IntoIterator<Item = Profile>,
        validators: Validators,
        attestation: Verifier,
        base: String,
        order_rate: Rate,
    ) -> Self {
        Self {
            ca,
            backing,
            profiles: profiles
                .into_iter()
                .map(|p| (p.name.clone(), Arc::new(p)))
                .collect(),
            nonces: Nonces::default(),
            validators: Arc::new(validators),
            attestation: Arc::new(attestation),
            validating: InFlight::default(),
            finalizing: InFlight::default(),
            base,
            orders: Limiter::new(order_rate),
        }
    }

    /// Nonces other than this process's own (a cluster's, `Nonces::shared`).
    pub fn with_nonces(self, nonces: Nonces) -> Self {
        Self { nonces, ..self }
    }

    pub fn profile(&self, name: &str) -> Result<&Arc<Profile>, AcmeError> {
        self.profiles
            .get(name)
            .ok_or_else(|| AcmeError::not_found(&format!("ACME profile `{name}`")))
    }

    /// Whether a validation of this authorization is running (its challenge is `processing`).
    pub fn is_validating(&self, authz: &str) -> bool {
        self.validating.contains(authz)
    }

    pub fn nonce(&self) -> String {
        self.nonces.issue()
    }

    /// `https://host/acme/<profile>/<path>`: every URL the server hands out.
    pub fn url(&self, profile: &str, path: &str) -> String {
        format!("{}/acme/{profile}/{path}", self.base)
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        &self.backing.store
    }

    pub fn now(&self) -> OffsetDateTime {
        self.backing.clock.now()
    }

    /// Checks a request's envelope and signature: the URL it was signed for, its nonce, its
    /// key (and account). Every check is a rejection when it fails; none is skipped.
    pub async fn authenticate(&self, req: &Signed, key_use: KeyUse) -> Result<Signer, AcmeError> {
        Ok(self.authenticate_reading(req, key_use, None).await?.0)
    }

    /// `authenticate`, reading `resource` (the order or authorization the request is about)
    /// with the nonce and the account: one round trip to a shared store. The document is
    /// returned only once every check has passed.
    async fn authenticate_reading(
        &self,
        req: &Signed,
        key_use: KeyUse,
        resource: Option<DocKey>,
    ) -> Result<(Signer, Option<Doc>), AcmeError> {
        let (profile, jws, request_url) = (&*req.profile, &req.jws, req.url.as_str());
        if jws.header.url != request_url {
            return Err(AcmeError::unauthorized(format!(
                "the JWS `url` is {}, but the request went to {request_url}",
                jws.header.url
            )));
        }
        let Some(nonce) = &jws.header.nonce else {
            return Err(AcmeError::new(
                ProblemType::BadNonce,
                "the JWS has no nonce",
            ));
        };
        match (&jws.header.key, key_use) {
            (KeyRef::Jwk(jwk), KeyUse::Jwk | KeyUse::Either) => {
                let mut docs = self
                    .use_nonce_reading(nonce, resource.into_iter().collect())
                    .await?;
                jws.verify(jwk)?;
                Ok((Signer::Key(jwk.clone()), docs.pop().flatten()))
            }
            (KeyRef::Kid(kid), KeyUse::Kid | KeyUse::Either) => {
                let (account, doc) = self.account_by_kid(profile, kid, nonce, resource).await?;
                if account.value.status != AccountStatus::Valid {
                    return Err(AcmeError::unauthorized(format!(
                        "the account is {:?}",
                        account.value.status
                    )));
                }
                jws.verify(&account.value.key)?;
                Ok((Signer::Account(account), doc))
            }
            (KeyRef::Jwk(_), KeyUse::Kid) => Err(AcmeError::malformed(
                "this resource needs `kid` (the account URL), not `jwk`",
            )),
            (KeyRef::Kid(_), KeyUse::Jwk) => Err(AcmeError::malformed(
                "this resource needs `jwk` (the new key), not `kid`",
            )),
        }
    }

    /// Uses a request's nonce up and reads `reads`: one round trip to a shared store, which
    /// refuses a nonce any node used before. One document (or `None`) per key, in order.
    async fn use_nonce_reading(
        &self,
        nonce: &str,
        reads: Vec<DocKey>,
    ) -> Result<Vec<Option<Doc>>, AcmeError> {
        let bad_nonce = || {
            AcmeError::new(
                ProblemType::BadNonce,
                "the nonce is unknown, used or expired; retry with the one in Replay-Nonce",
            )
        };
        match self.nonces.redeem(nonce) {
            Redeem::Refused => Err(bad_nonce()),
            Redeem::Used => {
                let mut docs = Vec::with_capacity(reads.len());
                for key in &reads {
                    docs.push(self.store().doc(key).await?);
                }
                Ok(docs)
            }
            Redeem::Shared(used) => {
                let outcome = self.store().use_nonce(Some(&used), &reads).await?;
                self.nonces.learn(outcome.epoch);
                match outcome.fresh {
                    true => Ok(outcome.docs),
                    false => Err(bad_nonce()),
                }
            }
        }
    }

    /// Like `authenticate`, for resources only an account may use.
    pub async fn account_signer(&self, req: &Signed) -> Result<Stored<Account>, AcmeError> {
        Ok(self.account_signer_reading(req, None).await?.0)
    }

    /// `account_signer` that also reads `resource`, as `authenticate_reading` does.
    pub(super) async fn account_signer_reading(
        &self,
        req: &Signed,
        resource: Option<DocKey>,
    ) -> Result<(Stored<Account>, Option<Doc>), AcmeError> {
        match self
            .authenticate_reading(req, KeyUse::Kid, resource)
            .await?
        {
            (Signer::Account(a), doc) => Ok((a, doc)),
            (Signer::Key(_), _) => unreachable!("KeyUse::Kid yields an account"),
        }
    }

    /// The account `kid` names and `resource`, read with the request's nonce used up (the
    /// nonce is used even when there is no such account).
    async fn account_by_kid(
        &self,
        profile: &Profile,
        kid: &str,
        nonce: &str,
        resource: Option<DocKey>,
    ) -> Result<(Stored<Account>, Option<Doc>), AcmeError> {
        let missing = || {
            AcmeError::new(
                ProblemType::AccountDoesNotExist,
                format!("no account {kid} in profile `{}`", profile.name),
            )
        };
        let prefix = self.url(&profile.name, "account/");
        let Some(id) = kid.strip_prefix(&prefix) else {
            self.use_nonce_reading(nonce, Vec::new()).await?;
            return Err(missing());
        };
        let reads = std::iter::once(super::repo::ACCOUNTS.key(id))
            .chain(resource)
            .collect();
        let mut docs = self.use_nonce_reading(nonce, reads).await?.into_iter();
        let account = docs
            .next()
            .flatten()
            .ok_or_else(missing)?
            .decode::<Account>()?;
        if account.value.profile != profile.name {
            return Err(missing());
        }
        Ok((account, docs.next().flatten()))
    }
}

/// A random identifier or token: 16 bytes (128 bits), unguessable.
pub(super) fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}
