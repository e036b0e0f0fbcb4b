//! Orders, authorizations and challenges (RFC 8555 §7.4–7.5), finalization, certificate
//! download and revocation (§7.6).

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use super::accounts::conflict_is_retryable;
use super::client_identifiers;
use super::error::{AcmeError, ProblemType, Subproblem};
use super::model::{
    Account, Authorization, AuthzStatus, Challenge, ChallengeStatus, ChallengeType, DeviceProof,
    Identifier, IdentifierType, Order, OrderState, OrderStatus,
};
use super::service::{AcmeService, KeyUse, Profile, Signed, Signer, random_id};
use crate::acme::settings::PermanentIdentifier;
use crate::attest::{AttestError, Expected, KeyType, freshness_nonce};
use crate::ca::{IssueError, IssueRequest, Serial};
use crate::csr::{Csr, San};
use crate::inventory::NotAdmitted;
use crate::policy::DeviceIdentity;
use crate::revocation::RevocationReason;
use crate::store::{CertRecord, Collection, DeviceId, Protocol, Store, StoreError, Stored};

use super::repo::{ACCOUNT_CERTS, ACCOUNT_ORDERS, AUTHZS, CLIENT_IDENTIFIERS, ORDERS};

/// How long an order (and its authorizations) may take to complete.
const ORDER_LIFETIME: Duration = Duration::hours(24);
/// Most identifiers in one order.
const MAX_IDENTIFIERS: usize = 100;
/// Orders per page of an account's order list.
pub const ORDERS_PAGE: usize = 100;
/// How long an order is kept once it has expired (clients may still read a finished order;
/// its certificate stays downloadable by serial whatever happens to the order).
const RETENTION: Duration = Duration::days(7);
/// How long a challenge response waits for its validation to settle before answering
/// `processing` (validation itself may take up to the validator's 10 s timeout).
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    identifiers: Vec<Identifier>,
    not_before: Option<String>,
    not_after: Option<String>,
}

#[derive(Deserialize)]
struct Finalize {
    csr: String,
}

#[derive(Deserialize)]
struct Revoke {
    certificate: String,
    reason: Option<u8>,
}

/// A device's answer to device-attest-01: the attestation object, or why it has none.
#[derive(Deserialize)]
struct AttestationAnswer {
    #[serde(rename = "attObj")]
    att_obj: Option<String>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AuthzUpdate {
    status: String,
}

/// How a device order named its device.
enum Admitted {
    /// By its serial number or UDID.
    ByHardware(DeviceId),
    /// By a one-time ClientIdentifier (its store key), standing for a device registered with
    /// these serial number and UDID.
    ByClientIdentifier {
        device: DeviceId,
        key: String,
        hardware_ids: Vec<String>,
    },
}

/// An order with the statuses of its authorizations, as a client sees it now.
pub struct OrderView {
    pub order: Order,
    pub status: OrderStatus,
}

impl AcmeService {
    /// The periodic sweep's part for ACME: expired orders go (see `purge_expired`), and
    /// expired ClientIdentifiers. Returns how many orders went.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        client_identifiers::purge_expired(self.store().as_ref(), self.now()).await?;
        purge_expired(self.store().as_ref(), self.now()).await
    }

    pub async fn new_order(&self, req: &Signed) -> Result<OrderView, AcmeError> {
        let (profile, jws) = (&*req.profile, &req.jws);
        let account = self.account_signer(req).await?.value;
        self.orders
            .check(account.id.clone())
            .map_err(|wait| AcmeError::rate_limited("new orders for this account", wait))?;
        let req: NewOrder = jws.json()?;
        if req.not_before.is_some() || req.not_after.is_some() {
            return Err(AcmeError::malformed(
                "notBefore and notAfter are not supported; the profile sets the validity",
            ));
        }
        if req.identifiers.is_empty() || req.identifiers.len() > MAX_IDENTIFIERS {
            return Err(AcmeError::malformed(format!(
                "an order names 1 to {MAX_IDENTIFIERS} identifiers"
            )));
        }
        let identifiers = self.check_identifiers(profile, &req.identifiers)?;
        let named = if profile.config.attests() {
            Some(self.admit_device(profile, &account, &identifiers).await?)
        } else {
            None
        };
        let (device, client_identifier, hardware_ids) = match named {
            None => (None, None, Vec::new()),
            Some(Admitted::ByHardware(device)) => (Some(device), None, Vec::new()),
            Some(Admitted::ByClientIdentifier {
                device,
                key,
                hardware_ids,
            }) => (Some(device), Some(key), hardware_ids),
        };
        let now = self.now();
        let expires = crate::clock::whole_seconds(now + ORDER_LIFETIME);
        let order_id = random_id(16);
        let authzs: Vec<Authorization> = identifiers
            .iter()
            .map(|identifier| {
                let base = identifier.wildcard_base();
                Authorization {
                    id: random_id(16),
                    account: account.id.clone(),
                    order: order_id.clone(),
                    identifier: base.map_or_else(|| identifier.clone(), Identifier::dns),
                    wildcard: base.is_some(),
                    status: AuthzStatus::Pending,
                    expires,
                    challenges: profile
                        .config
                        .challenges
                        .iter()
                        .filter(|kind| kind.validates(identifier))
                        .map(|kind| Challenge {
                            kind: *kind,
                            token: random_id(32),
                            status: ChallengeStatus::Pending,
                            validated: None,
                            error: None,
                        })
                        .collect(),
                    proof: None,
                    hardware_ids: hardware_ids.clone(),
                }
            })
            .collect();
        let order = Order {
            id: order_id.clone(),
            account: account.id.clone(),
            identifiers,
            authorizations: authzs.iter().map(|a| a.id.clone()).collect(),
            created_at: now,
            expires,
            state: OrderState::Open,
            device,
            client_identifier,
        };
        let mut writes: Vec<_> = authzs.iter().map(|a| AUTHZS.create(&a.id, a)).collect();
        writes.push(ORDERS.create(&order_id, &order));
        writes.push(ACCOUNT_ORDERS.create(&format!("{}/{}", account.id, order_id), &()));
        self.store().write_docs(writes).await?;
        Ok(OrderView {
            order,
            status: OrderStatus::Pending,
        })
    }

    /// A device order names one device, and the profile's inventory must know it: a genuine
    /// device is not necessarily one of ours. By serial number or UDID, or by a one-time
    /// ClientIdentifier the MDM minted for it, as the profile says.
    async fn admit_device(
        &self,
        profile: &Profile,
        account: &Account,
        identifiers: &[Identifier],
    ) -> Result<Admitted, AcmeError> {
        let [identifier] = identifiers else {
            return Err(AcmeError::malformed(
                "a device order names exactly one permanent-identifier",
            ));
        };
        let value = identifier.value.as_str();
        let store = self.store().as_ref();
        if profile.config.permanent_identifier == PermanentIdentifier::ClientIdentifier {
            let minted = match client_identifiers::usable(store, value, &profile.name, self.now())
                .await?
            {
                Ok(minted) => minted,
                Err(unusable) => {
                    tracing::info!(profile = %profile.name, reason = %unusable, "ClientIdentifier refused");
                    return Err(AcmeError::new(
                        ProblemType::RejectedIdentifier,
                        unusable.to_string(),
                    ));
                }
            };
            let device = minted.value.device;
            let registered = crate::inventory::device(store, &device).await?;
            let hardware_ids: Vec<String> = registered
                .iter()
                .flat_map(|d| d.serial.iter().chain(&d.udid).cloned())
                .collect();
            if hardware_ids.is_empty() {
                return Err(AcmeError::new(
                    ProblemType::RejectedIdentifier,
                    format!("the ClientIdentifier's device {device} is no longer registered"),
                ));
            }
            return Ok(Admitted::ByClientIdentifier {
                device,
                key: client_identifiers::key_of(value),
                hardware_ids,
            });
        }
        match profile
            .inventory
            .admit(&profile.name, &account.id, value)
            .await
        {
            Ok(device) => Ok(Admitted::ByHardware(device)),
            Err(NotAdmitted::Store(e)) => Err(e.into()),
            Err(refusal) => {
                tracing::info!(profile = %profile.name, identifier = %value,
                    reason = %refusal, "device refused");
                // A ClientIdentifier sent to a profile that names devices by serial number.
                let minted = CLIENT_IDENTIFIERS
                    .get(store, &client_identifiers::key_of(value))
                    .await?;
                let detail = match minted {
                    Some(_) => format!(
                        "profile `{}` names devices by serial number or UDID, not by ClientIdentifier",
                        profile.name
                    ),
                    None => format!("{value} is not a device this organisation manages"),
                };
                Err(AcmeError::new(ProblemType::RejectedIdentifier, detail))
            }
        }
    }

    /// Normalised, deduplicated and sorted identifiers, or a rejection naming each bad one.
    fn check_identifiers(
        &self,
        profile: &Profile,
        requested: &[Identifier],
    ) -> Result<Vec<Identifier>, AcmeError> {
        let mut ok = BTreeSet::new();
        let mut subproblems = Vec::new();
        for id in requested {
            match id
                .normalised()
                .map_err(|e| AcmeError::new(ProblemType::RejectedIdentifier, e))
                .and_then(|n| profile.allows(&n).map(|()| n))
            {
                Ok(n) => {
                    ok.insert(n);
                }
                Err(e) => subproblems.push(Subproblem {
                    kind: e.kind,
                    detail: e.detail,
                    identifier: id.clone(),
                }),
            }
        }
        if subproblems.is_empty() {
            return Ok(ok.into_iter().collect());
        }
        let mut err = AcmeError::new(
            ProblemType::RejectedIdentifier,
            format!(
                "{} of the order's identifiers cannot be issued by profile `{}`",
                subproblems.len(),
                profile.name
            ),
        );
        err.subproblems = subproblems;
        Err(err)
    }

    /// An order read by its owner.
    pub async fn order(&self, req: &Signed, id: &str) -> Result<OrderView, AcmeError> {
        let account = self.account_signer(req).await?.value;
        let order = self.owned_order(&account, id).await?;
        self.view(order.value).await
    }

    async fn owned_order(&self, account: &Account, id: &str) -> Result<Stored<Order>, AcmeError> {
        self.owned(account, (&ORDERS, "order"), id, |o: &Order| &o.account)
            .await
    }

    async fn owned_authz(
        &self,
        account: &Account,
        id: &str,
    ) -> Result<Stored<Authorization>, AcmeError> {
        self.owned(
            account,
            (&AUTHZS, "authorization"),
            id,
            |a: &Authorization| &a.account,
        )
        .await
    }

    /// A resource of `account`'s; another account's is `unauthorized`, a missing one 404.
    async fn owned<T: serde::de::DeserializeOwned>(
        &self,
        account: &Account,
        (collection, what): (&Collection<T>, &str),
        id: &str,
        owner: fn(&T) -> &String,
    ) -> Result<Stored<T>, AcmeError> {
        let doc = collection
            .get(self.store().as_ref(), id)
            .await?
            .ok_or_else(|| AcmeError::not_found(what))?;
        if *owner(&doc.value) != account.id {
            return Err(AcmeError::unauthorized(format!(
                "the {what} belongs to another account"
            )));
        }
        Ok(doc)
    }

    async fn view(&self, order: Order) -> Result<OrderView, AcmeError> {
        let now = self.now();
        let mut statuses = Vec::with_capacity(order.authorizations.len());
        for id in &order.authorizations {
            let authz = AUTHZS
                .get(self.store().as_ref(), id)
                .await?
                .ok_or_else(|| {
                    AcmeError::internal(format!("order {} lost authz {id}", order.id))
                })?;
            statuses.push(authz.value.status_at(now));
        }
        let status = order.status(&statuses, self.finalizing.contains(&order.id), now);
        Ok(OrderView { order, status })
    }

    /// The account's orders, a page after `cursor` (an order id).
    pub async fn account_orders(
        &self,
        req: &Signed,
        account_id: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), AcmeError> {
        let account = self.account_signer(req).await?.value;
        if account.id != account_id {
            return Err(AcmeError::unauthorized(
                "an account may only list its own orders",
            ));
        }
        let prefix = format!("{account_id}/");
        let after = cursor.map(|c| format!("{prefix}{c}"));
        let page = ACCOUNT_ORDERS
            .page(
                self.store().as_ref(),
                &prefix,
                after.as_deref(),
                ORDERS_PAGE + 1,
            )
            .await?;
        let mut ids: Vec<String> = page
            .into_iter()
            .map(|(key, _)| key[prefix.len()..].to_owned())
            .collect();
        let next = (ids.len() > ORDERS_PAGE).then(|| {
            ids.truncate(ORDERS_PAGE);
            ids.last().cloned().unwrap_or_default()
        });
        Ok((ids, next))
    }

    /// POST to an authorization: read it, or deactivate it.
    pub async fn authorization(&self, req: &Signed, id: &str) -> Result<Authorization, AcmeError> {
        let jws = &req.jws;
        let account = self.account_signer(req).await?.value;
        let authz = self.owned_authz(&account, id).await?;
        if jws.is_post_as_get() {
            return Ok(authz.value);
        }
        let req: AuthzUpdate = jws.json()?;
        if req.status != "deactivated" {
            return Err(AcmeError::malformed(
                "an authorization can only be deactivated",
            ));
        }
        let now = self.now();
        if !matches!(
            authz.value.status_at(now),
            AuthzStatus::Pending | AuthzStatus::Valid
        ) {
            return Err(AcmeError::malformed(format!(
                "the authorization is {:?} and cannot be deactivated",
                authz.value.status_at(now)
            )));
        }
        let mut next = authz.value;
        next.status = AuthzStatus::Deactivated;
        self.store()
            .write_docs(vec![AUTHZS.replace(id, authz.version, &next)])
            .await
            .map_err(conflict_is_retryable)?;
        Ok(next)
    }

    /// POST to a challenge: an empty object asks the server to validate it (once); an empty
    /// payload reads it. Validation runs in the background; clients poll.
    pub async fn challenge(
        &self,
        req: &Signed,
        authz_id: &str,
        kind: &str,
    ) -> Result<(Authorization, ChallengeType), AcmeError> {
        let jws = &req.jws;
        let account = self.account_signer(req).await?.value;
        let kind = ChallengeType::parse(kind).ok_or_else(|| AcmeError::not_found("challenge"))?;
        let authz = self.owned_authz(&account, authz_id).await?;
        let challenge = authz
            .value
            .challenge(kind)
            .ok_or_else(|| AcmeError::not_found("challenge"))?;
        if jws.is_post_as_get() {
            return Ok((authz.value, kind));
        }
        if kind == ChallengeType::DeviceAttest01 {
            let answer: AttestationAnswer = jws.json()?;
            return self
                .attest(&req.profile, authz, answer)
                .await
                .map(|a| (a, kind));
        }
        let _: serde_json::Map<String, serde_json::Value> = jws.json()?;
        let now = self.now();
        if challenge.status != ChallengeStatus::Pending
            || authz.value.status_at(now) != AuthzStatus::Pending
        {
            // Already answered (or no longer answerable): report, do not start again.
            return Ok((authz.value, kind));
        }
        let Some(running) = self.validating.start(authz_id) else {
            // Another request started it; this one reports it.
            return Ok((authz.value, kind));
        };
        let token = challenge.token.clone();
        let key_authorization = format!("{token}.{}", account.key.thumbprint());
        let identifier = authz.value.identifier.clone();
        let (validators, store, clock) = (
            Arc::clone(&self.validators),
            Arc::clone(self.store()),
            Arc::clone(&self.backing.clock),
        );
        let authz_id = authz_id.to_owned();
        let profile = req.profile.name.clone();
        // Spawned, so a client that hangs up does not cancel it.
        let validation = tokio::spawn(async move {
            let outcome = validators
                .validate(&profile, kind, &identifier, &token, &key_authorization)
                .await
                .map(|()| None);
            if let Err(e) = &outcome {
                tracing::info!(authz = %authz_id, %identifier, problem = %e, "challenge failed");
            }
            let now = clock.now();
            let settled = record_outcome(&*store, &authz_id, kind, outcome, now)
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(authz = %authz_id, error = %e, "could not record a validation");
                    None
                });
            drop(running);
            settled
        });
        // Most validations take milliseconds: answering with the outcome spares the client a
        // poll (as step-ca does). A slower one goes on and the client polls for it.
        match tokio::time::timeout(SETTLE_WAIT, validation).await {
            Ok(Ok(Some(settled))) => Ok((settled, kind)),
            _ => Ok((authz.value, kind)),
        }
    }

    /// device-attest-01 (draft-ietf-acme-device-attest §5): the answer carries the evidence,
    /// so it is judged at once. Success stores the proof (the attested key and facts, or, on a
    /// profile that does not require attestation, that the ClientIdentifier alone vouched)
    /// on the authorization; any failure leaves it invalid and is reported as the problem.
    async fn attest(
        &self,
        profile: &Profile,
        authz: Stored<Authorization>,
        answer: AttestationAnswer,
    ) -> Result<Authorization, AcmeError> {
        let now = self.now();
        let kind = ChallengeType::DeviceAttest01;
        let challenge = authz
            .value
            .challenge(kind)
            .ok_or_else(|| AcmeError::not_found("challenge"))?;
        if challenge.status != ChallengeStatus::Pending
            || authz.value.status_at(now) != AuthzStatus::Pending
        {
            return Ok(authz.value);
        }
        let Some(running) = self.validating.start(&authz.value.id) else {
            return Ok(authz.value);
        };
        // What the attested serial number or UDID must be: the ordered one, or one of those
        // registered for the device a ClientIdentifier stands for.
        let identifiers = match authz.value.hardware_ids.as_slice() {
            [] => vec![authz.value.identifier.value.clone()],
            registered => registered.to_vec(),
        };
        let outcome = match answer {
            AttestationAnswer {
                att_obj: Some(att_obj),
                ..
            } => {
                let (verifier, token, key_types) = (
                    Arc::clone(&self.attestation),
                    challenge.token.clone(),
                    profile.config.attestation_key_types.clone(),
                );
                let identifiers = identifiers.clone();
                // Two P-384 verifications and CBOR/X.509 parsing: off the reactor.
                tokio::task::spawn_blocking(move || {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(att_obj.trim_end_matches('='))
                        .map_err(|_| AttestError::Malformed("`attObj` is not base64url".into()))?;
                    verifier.verify(
                        &bytes,
                        &Expected {
                            nonce: freshness_nonce(&token),
                            identifiers: &identifiers
                                .iter()
                                .map(String::as_str)
                                .collect::<Vec<_>>(),
                            key_types: &key_types,
                            now,
                        },
                    )
                })
                .await
                .map_err(|e| AcmeError::internal(format!("attestation task failed: {e}")))?
            }
            AttestationAnswer { error: Some(e), .. } => {
                Err(AttestError::NotSupplied(format!("the device reported {e}")))
            }
            AttestationAnswer { .. } => Err(AttestError::NotSupplied(
                "the answer has no `attObj`".into(),
            )),
        };
        let outcome = match outcome {
            Ok(attestation) => Ok(DeviceProof::Attested(attestation)),
            // A device that cannot attest, on a profile that lets its one-time
            // ClientIdentifier (bound to a registered device) vouch for it instead.
            Err(AttestError::NotSupplied(why))
                if !profile.config.require_attestation && !authz.value.hardware_ids.is_empty() =>
            {
                tracing::info!(authz = %authz.value.id, %why,
                    "no attestation; the ClientIdentifier vouches for the device");
                Ok(DeviceProof::Unattested {
                    permanent_identifier: identifiers[0].clone(),
                })
            }
            Err(e) => {
                tracing::info!(authz = %authz.value.id, identifier = %authz.value.identifier,
                    problem = %e, "attestation refused");
                Err(AcmeError::from(e))
            }
        };
        let written = record_outcome(
            &**self.store(),
            &authz.value.id,
            kind,
            outcome.clone().map(Some),
            now,
        )
        .await;
        drop(running);
        let written = written?;
        outcome?;
        written.ok_or_else(|| AcmeError::malformed("the authorization changed meanwhile"))
    }

    /// finalize: the CSR must name exactly the order's identifiers; the certificate and the
    /// order's completion are one write.
    pub async fn finalize(&self, req: &Signed, id: &str) -> Result<OrderView, AcmeError> {
        let (profile, jws) = (&*req.profile, &req.jws);
        let account = self.account_signer(req).await?.value;
        let order = self.owned_order(&account, id).await?;
        let view = self.view(order.value.clone()).await?;
        if view.status != OrderStatus::Ready {
            return Err(AcmeError::new(
                ProblemType::OrderNotReady,
                format!("the order is {:?}, not ready", view.status).to_lowercase(),
            ));
        }
        let req: Finalize = jws.json()?;
        let der = URL_SAFE_NO_PAD
            .decode(req.csr.trim_end_matches('='))
            .map_err(|_| AcmeError::new(ProblemType::BadCsr, "`csr` is not base64url"))?;
        let csr = Csr::from_der(&der)?;
        let identity = match order.value.identifiers.as_slice() {
            [id] if id.kind == IdentifierType::PermanentIdentifier => {
                Some(self.check_device_csr(&csr, &order.value, profile).await?)
            }
            identifiers => {
                check_csr_names(&csr, identifiers)?;
                None
            }
        };

        let Some(running) = self.finalizing.start(id) else {
            return Err(AcmeError::new(
                ProblemType::OrderNotReady,
                "the order is already being finalized",
            ));
        };
        let ready_version = order.version;
        // A ClientIdentifier is used up with the certificate, in the same write.
        let use_up = match &order.value.client_identifier {
            None => None,
            Some(key) => {
                let doc = CLIENT_IDENTIFIERS
                    .get(self.store().as_ref(), key)
                    .await?
                    .ok_or_else(|| {
                        AcmeError::new(
                            ProblemType::RejectedIdentifier,
                            "the order's ClientIdentifier was used by another order",
                        )
                    })?;
                Some(client_identifiers::use_up(key, doc.version))
            }
        };
        let done = order.value.clone();
        let order_id = id.to_owned();
        let account_id = account.id.clone();
        let issued = self
            .ca
            .issue(IssueRequest {
                device: order.value.device.clone(),
                account: Some(account.id.clone()),
                completes: Some(Box::new(move |record: &CertRecord| {
                    let mut valid = done.clone();
                    valid.state = OrderState::Valid {
                        certificate: record.serial.clone(),
                    };
                    let mut writes = vec![
                        ORDERS.replace(&order_id, ready_version, &valid),
                        ACCOUNT_CERTS.create(&format!("{account_id}/{}", record.serial), &()),
                    ];
                    writes.extend(use_up.clone());
                    writes
                })),
                identity,
                ..IssueRequest::new(
                    csr,
                    profile.template.clone(),
                    profile.config.issuer,
                    Protocol::Acme,
                )
            })
            .await;
        let outcome = match issued {
            Ok(issued) => {
                let mut valid = order.value;
                valid.state = OrderState::Valid {
                    certificate: issued.record.serial,
                };
                Ok(OrderView {
                    order: valid,
                    status: OrderStatus::Valid,
                })
            }
            // Another order used the ClientIdentifier first.
            Err(IssueError::Store(StoreError::Conflict { kind, .. }))
                if kind == CLIENT_IDENTIFIERS.kind() =>
            {
                Err(AcmeError::new(
                    ProblemType::RejectedIdentifier,
                    "the order's ClientIdentifier was used by another order",
                ))
            }
            // Another finalization won the race for the order.
            Err(IssueError::Store(StoreError::Conflict { .. })) => Err(AcmeError::new(
                ProblemType::OrderNotReady,
                "the order was finalized concurrently",
            )),
            Err(e) => {
                let problem = match &e {
                    IssueError::Policy(p) => AcmeError::new(ProblemType::BadCsr, p.to_string()),
                    other => AcmeError::internal(other),
                };
                let mut failed = order.value;
                failed.state = OrderState::Invalid {
                    error: problem.clone(),
                };
                self.store()
                    .write_docs(vec![ORDERS.replace(id, ready_version, &failed)])
                    .await?;
                Err(problem)
            }
        };
        drop(running);
        outcome
    }

    /// A device order's CSR asks for no names: the device is named by the PermanentIdentifier
    /// the certificate gets from the order. Its key must be the attested one or, for a device
    /// that could not attest, at least of a type the profile accepts.
    async fn check_device_csr(
        &self,
        csr: &Csr,
        order: &Order,
        profile: &Profile,
    ) -> Result<DeviceIdentity, AcmeError> {
        let [authz_id] = order.authorizations.as_slice() else {
            return Err(AcmeError::internal(format!(
                "device order {} has {} authorizations",
                order.id,
                order.authorizations.len()
            )));
        };
        let authz = AUTHZS
            .get(self.store().as_ref(), authz_id)
            .await?
            .ok_or_else(|| {
                AcmeError::internal(format!("order {} lost authz {authz_id}", order.id))
            })?;
        if let Some(san) = csr.sans.first() {
            return Err(AcmeError::new(
                ProblemType::BadCsr,
                format!(
                    "the CSR asks for {san}; a device certificate is named by its permanent identifier only"
                ),
            ));
        }
        let attestation = match authz.value.proof {
            None => {
                return Err(AcmeError::internal(format!(
                    "valid authz {authz_id} has no proof"
                )));
            }
            Some(DeviceProof::Unattested {
                permanent_identifier,
            }) => {
                let key_types = &profile.config.attestation_key_types;
                if !KeyType::of(csr.key).is_some_and(|k| key_types.contains(&k)) {
                    return Err(AcmeError::new(
                        ProblemType::BadCsr,
                        format!(
                            "the CSR's key is not one of the profile's key types {key_types:?}"
                        ),
                    ));
                }
                return Ok(DeviceIdentity {
                    permanent_identifier,
                    facts: None,
                });
            }
            Some(DeviceProof::Attested(attestation)) => attestation,
        };
        if rcgen::PublicKeyData::subject_public_key_info(&csr.spki) != attestation.spki {
            return Err(AcmeError::new(
                ProblemType::BadCsr,
                "the CSR's key is not the key the device attested",
            ));
        }
        // A ClientIdentifier only stood for the device: the certificate names the device by
        // the attested serial number (or UDID) it was checked against, never by that value.
        let permanent_identifier = match authz.value.hardware_ids.as_slice() {
            [] => authz.value.identifier.value,
            registered => {
                let attested = |v: &Option<String>| {
                    v.clone()
                        .filter(|v| registered.iter().any(|r| r.eq_ignore_ascii_case(v)))
                };
                attested(&attestation.facts.serial)
                    .or_else(|| attested(&attestation.facts.udid))
                    .ok_or_else(|| {
                        AcmeError::internal(format!("authz {authz_id} attested another device"))
                    })?
            }
        };
        Ok(DeviceIdentity {
            permanent_identifier,
            facts: Some(attestation.facts),
        })
    }

    /// The certificate chain (PEM, leaf first) for its account, and whether an alternate
    /// chain exists. The alternate (after a root rotation) adds the cross certificate that
    /// leads to the other root.
    pub async fn certificate(
        &self,
        req: &Signed,
        serial: &str,
        alternate: bool,
    ) -> Result<(String, bool), AcmeError> {
        let account = self.account_signer(req).await?.value;
        let serial: Serial = serial
            .parse()
            .map_err(|_| AcmeError::not_found("certificate"))?;
        let record = self
            .store()
            .certificate(&serial)
            .await?
            .filter(|r| r.protocol == Protocol::Acme)
            .ok_or_else(|| AcmeError::not_found("certificate"))?;
        if record.account.as_deref() != Some(account.id.as_str()) {
            return Err(AcmeError::unauthorized(
                "the certificate belongs to another account",
            ));
        }
        let issuers = self.ca.issuers();
        let issuer = issuers.get(&record.issuer).ok_or_else(|| {
            AcmeError::internal(format!("issuer {} is not loaded", record.issuer))
        })?;
        let trust = self.ca.trust();
        let cross = trust.cross_above(issuer.top());
        if alternate && cross.is_none() {
            return Err(AcmeError::not_found("alternate chain"));
        }
        let chain = std::iter::once(record.der.as_slice())
            .chain(issuer.chain())
            .chain(cross.filter(|_| alternate))
            .map(|der| crate::encoding::to_pem("CERTIFICATE", der))
            .collect();
        Ok((chain, cross.is_some() && !alternate))
    }

    /// revokeCert (RFC 8555 §7.6): by the account that ordered the certificate, or by a JWS
    /// signed with the certificate's own key.
    pub async fn revoke(&self, req: &Signed) -> Result<(), AcmeError> {
        let jws = &req.jws;
        let signer = self.authenticate(req, KeyUse::Either).await?;
        let req: Revoke = jws.json()?;
        let der = URL_SAFE_NO_PAD
            .decode(req.certificate.trim_end_matches('='))
            .map_err(|_| AcmeError::malformed("`certificate` is not base64url DER"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| AcmeError::malformed("`certificate` is not an X.509 certificate"))?;
        let unknown = || AcmeError::not_found("certificate issued by this CA");
        let serial = Serial::from_bytes(cert.raw_serial()).map_err(|_| unknown())?;
        let record = self
            .store()
            .certificate(&serial)
            .await?
            .filter(|r| r.der == der)
            .ok_or_else(unknown)?;
        let allowed = match &signer {
            Signer::Account(a) => record.account.as_deref() == Some(a.value.id.as_str()),
            Signer::Key(jwk) => jwk.is_key_of(cert.public_key()),
        };
        if !allowed {
            return Err(AcmeError::unauthorized(
                "only the ordering account or the certificate's key may revoke it",
            ));
        }
        let reason = match req.reason {
            None => RevocationReason::Unspecified,
            Some(code) => RevocationReason::from_code(code)
                .filter(|r| {
                    !matches!(
                        r,
                        RevocationReason::CaCompromise
                            | RevocationReason::CertificateHold
                            | RevocationReason::AaCompromise
                    )
                })
                .ok_or_else(|| {
                    AcmeError::new(
                        ProblemType::BadRevocationReason,
                        format!("reason code {code} is not accepted (0, 1, 3, 4, 5, 9)"),
                    )
                })?,
        };
        match self.ca.revoke(&serial, reason, self.now()).await {
            Ok(_) => {
                tracing::info!(%serial, reason = %reason, "revoked over ACME");
                Ok(())
            }
            Err(StoreError::AlreadyRevoked(_)) => Err(AcmeError::new(
                ProblemType::AlreadyRevoked,
                format!("certificate {serial} is already revoked"),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// The names a CSR asks for (subjectAltNames and the common name) must be exactly the order's.
fn check_csr_names(csr: &Csr, identifiers: &[Identifier]) -> Result<(), AcmeError> {
    let mut asked = BTreeSet::new();
    for san in &csr.sans {
        match san {
            San::Dns(name) => asked.insert(Identifier::dns(name)),
            San::Ip(ip) => asked.insert(Identifier::ip(*ip)),
            other => {
                return Err(AcmeError::new(
                    ProblemType::BadCsr,
                    format!("the CSR asks for {other}, which an order cannot authorize"),
                ));
            }
        };
    }
    if let Some(cn) = csr.common_name() {
        let id = match cn.parse() {
            Ok(ip) => Identifier::ip(ip),
            Err(_) => Identifier::dns(cn),
        };
        if !identifiers.contains(&id) {
            return Err(AcmeError::new(
                ProblemType::BadCsr,
                format!("the CSR's common name `{cn}` is not one of the order's identifiers"),
            ));
        }
        asked.insert(id);
    }
    let ordered: BTreeSet<Identifier> = identifiers.iter().cloned().collect();
    if asked != ordered {
        let list = |s: &BTreeSet<Identifier>| {
            s.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(AcmeError::new(
            ProblemType::BadCsr,
            format!(
                "the CSR names [{}] but the order is for [{}]",
                list(&asked),
                list(&ordered)
            ),
        ));
    }
    Ok(())
}

/// Deletes orders that expired more than `RETENTION` before `now`, with their authorizations
/// and their place in the account's order list; returns how many orders went. An order that
/// changes meanwhile is left for the next sweep.
pub async fn purge_expired(store: &dyn Store, now: OffsetDateTime) -> Result<usize, StoreError> {
    let cutoff = now - RETENTION;
    let mut pages = ORDERS.pages(store);
    let mut purged = 0;
    while let Some(page) = pages.next().await? {
        for (id, order) in page {
            let Ok(Stored {
                value: order,
                version,
            }) = order
            else {
                continue;
            };
            if order.expires > cutoff {
                continue;
            }
            let index = format!("{}/{id}", order.account);
            // What refers to a document goes before it: the index, the order, its authzs.
            let mut writes = vec![
                // Index entries are written once, never updated.
                ACCOUNT_ORDERS.delete(&index, 1),
                ORDERS.delete(&id, version),
            ];
            for authz in &order.authorizations {
                if let Some(doc) = AUTHZS.get(store, authz).await? {
                    writes.push(AUTHZS.delete(authz, doc.version));
                }
            }
            match store.write_docs(writes).await {
                Ok(()) => purged += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(purged)
}

/// Writes a validation's result into its authorization, if it is still waiting for it.
/// Returns the authorization as written, or `None` when it was no longer waiting.
async fn record_outcome(
    store: &dyn Store,
    authz_id: &str,
    kind: ChallengeType,
    outcome: Result<Option<DeviceProof>, AcmeError>,
    now: OffsetDateTime,
) -> Result<Option<Authorization>, StoreError> {
    let valid = outcome.is_ok();
    AUTHZS
        .update(store, authz_id, |current| {
            let Some(current) = current.filter(|a| a.status_at(now) == AuthzStatus::Pending) else {
                return Ok(None);
            };
            let mut next = current.clone();
            for c in next.challenges.iter_mut().filter(|c| c.kind == kind) {
                c.status = if valid {
                    ChallengeStatus::Valid
                } else {
                    ChallengeStatus::Invalid
                };
                c.validated = valid.then_some(now);
                c.error = outcome.clone().err();
            }
            next.status = if valid {
                AuthzStatus::Valid
            } else {
                AuthzStatus::Invalid
            };
            next.proof = outcome.clone().ok().flatten();
            Ok(Some(next))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::model::IdentifierType;
    use crate::store::SledStore;

    fn order(id: &str, expires: OffsetDateTime) -> (Order, Authorization) {
        let identifier = Identifier {
            kind: IdentifierType::Dns,
            value: format!("{id}.localhost"),
        };
        let authz = Authorization {
            id: format!("z-{id}"),
            account: "acct".into(),
            order: id.into(),
            identifier: identifier.clone(),
            wildcard: false,
            status: AuthzStatus::Pending,
            expires,
            challenges: Vec::new(),
            proof: None,
            hardware_ids: Vec::new(),
        };
        let order = Order {
            id: id.into(),
            account: "acct".into(),
            identifiers: vec![identifier],
            authorizations: vec![authz.id.clone()],
            created_at: expires - ORDER_LIFETIME,
            expires,
            state: OrderState::Open,
            device: None,
            client_identifier: None,
        };
        (order, authz)
    }

    #[tokio::test]
    async fn expired_orders_go_with_their_authorizations_and_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        for (id, expires) in [
            ("old", now - Duration::days(8)),
            ("recent", now - Duration::days(1)),
        ] {
            let (o, a) = order(id, expires);
            let writes = vec![
                ORDERS.create(id, &o),
                AUTHZS.create(&a.id, &a),
                ACCOUNT_ORDERS.create(&format!("acct/{id}"), &()),
            ];
            store.write_docs(writes).await.unwrap();
        }
        assert_eq!(purge_expired(&store, now).await.unwrap(), 1);
        let gone = |key: crate::store::DocKey| {
            let store = &store;
            async move { store.doc(&key).await.unwrap().is_none() }
        };
        assert!(gone(ORDERS.key("old")).await);
        assert!(gone(AUTHZS.key("z-old")).await);
        assert!(gone(ACCOUNT_ORDERS.key("acct/old")).await);
        assert!(!gone(ORDERS.key("recent")).await, "kept within retention");
        assert!(!gone(AUTHZS.key("z-recent")).await);
        assert_eq!(purge_expired(&store, now).await.unwrap(), 0);
    }
}
