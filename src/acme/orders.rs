//! Orders (RFC 8555 §7.4): creation with the device gate, reading, an account's list, and
//! the retention sweep. Authorizations and challenges are in `challenges`; finalization,
//! certificate download and revocation in `finalize`.

mod challenges;
mod finalize;

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
pub(crate) const ORDERS_PAGE: usize = 100;
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
        self.nonces.purge().await?;
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
        let (_, order) = self.signed_order(req, id).await?;
        self.view(order.value).await
    }

    /// The account that signed `req` and its order `id`.
    async fn signed_order(
        &self,
        req: &Signed,
        id: &str,
    ) -> Result<(Account, Stored<Order>), AcmeError> {
        self.signed_resource(req, (&ORDERS, "order"), id, |o: &Order| &o.account)
            .await
    }

    /// The account that signed `req` and its authorization `id`.
    async fn signed_authz(
        &self,
        req: &Signed,
        id: &str,
    ) -> Result<(Account, Stored<Authorization>), AcmeError> {
        self.signed_resource(req, (&AUTHZS, "authorization"), id, |a: &Authorization| {
            &a.account
        })
        .await
    }

    /// The account that signed `req` and the resource of the account's it is about, read
    /// with the nonce in one round trip; another account's is `unauthorized`, a missing one 404.
    async fn signed_resource<T: serde::de::DeserializeOwned>(
        &self,
        req: &Signed,
        (collection, what): (&Collection<T>, &str),
        id: &str,
        owner: fn(&T) -> &String,
    ) -> Result<(Account, Stored<T>), AcmeError> {
        let (account, doc) = self
            .account_signer_reading(req, Some(collection.key(id)))
            .await?;
        let doc = doc
            .ok_or_else(|| AcmeError::not_found(what))?
            .decode::<T>()?;
        if *owner(&doc.value) != account.value.id {
            return Err(AcmeError::unauthorized(format!(
                "the {what} belongs to another account"
            )));
        }
        Ok((account.value, doc))
    }

    async fn view(&self, order: Order) -> Result<OrderView, AcmeError> {
        let authzs = self.order_authzs(&order).await?;
        Ok(self.view_of(order, &authzs))
    }

    /// The order's authorizations as they are now, in the order's order.
    async fn order_authzs(&self, order: &Order) -> Result<Vec<Authorization>, AcmeError> {
        let mut authzs = Vec::with_capacity(order.authorizations.len());
        for id in &order.authorizations {
            let authz = AUTHZS
                .get(self.store().as_ref(), id)
                .await?
                .ok_or_else(|| {
                    AcmeError::internal(format!("order {} lost authz {id}", order.id))
                })?;
            authzs.push(authz.value);
        }
        Ok(authzs)
    }

    /// The order's status, given its authorizations (`order_authzs`).
    fn view_of(&self, order: Order, authzs: &[Authorization]) -> OrderView {
        let now = self.now();
        let statuses: Vec<_> = authzs.iter().map(|a| a.status_at(now)).collect();
        let status = order.status(&statuses, self.finalizing.contains(&order.id), now);
        OrderView { order, status }
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
}

/// Deletes orders that expired more than `RETENTION` before `now`, with their authorizations
/// and their place in the account's order list; returns how many orders went. An order that
/// changes meanwhile is left for the next sweep.
pub(crate) async fn purge_expired(
    store: &dyn Store,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
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
