//! Accounts (RFC 8555 §7.3): creation with optional External Account Binding, lookup by
//! key, update, deactivation and key rollover.

use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use super::client_identifiers::{self, ClientIdentifier, MintRefusal};
use super::error::{AcmeError, ProblemType};
use super::jws::{Binding, Jwk, Jws, KeyRef};
use super::model::{Account, AccountStatus, EabKey};
use super::service::{AcmeService, KeyUse, Profile, Signed, Signer, random_id};

use super::repo::{ACCOUNT_CERTS, ACCOUNT_KEYS, ACCOUNT_ORDERS, ACCOUNTS, EAB_KEYS};
use crate::acme::settings::PermanentIdentifier;
use crate::store::{DocWrite, Store, StoreError, Stored};

/// Most contacts an account may list.
const MAX_CONTACTS: usize = 10;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewAccount {
    #[serde(default)]
    contact: Vec<String>,
    #[serde(default)]
    terms_of_service_agreed: bool,
    #[serde(default)]
    only_return_existing: bool,
    external_account_binding: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AccountUpdate {
    contact: Option<Vec<String>>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyChange {
    account: String,
    old_key: Jwk,
}

/// What an attempt to create an account came to, short of a refusal.
enum Created {
    New(Account),
    /// The key already has an account: routine (a client registering again), not an error.
    KeyTaken,
}

/// A freshly minted EAB key, shown once.
pub struct NewEabKey {
    pub kid: String,
    pub hmac_key: Vec<u8>,
}

impl AcmeService {
    /// The daily sweep's part for accounts: abandoned ones go (see `purge_abandoned`).
    pub async fn purge_abandoned_accounts(&self) -> Result<usize, StoreError> {
        purge_abandoned(self.store().as_ref(), self.now()).await
    }

    /// newAccount: returns the account and whether it was created now.
    pub async fn new_account(&self, req: &Signed) -> Result<(Account, bool), AcmeError> {
        let (profile, jws, url) = (&*req.profile, &req.jws, req.url.as_str());
        let Signer::Key(jwk) = self.authenticate(req, KeyUse::Jwk).await? else {
            unreachable!("KeyUse::Jwk yields a key")
        };
        let req: NewAccount = jws.json()?;
        if req.only_return_existing {
            return match self.account_by_key(profile, &jwk).await? {
                Some(existing) => Ok((existing.value, false)),
                None => Err(AcmeError::new(
                    ProblemType::AccountDoesNotExist,
                    "no account has this key",
                )),
            };
        }
        // Most keys are new (a device makes one per enrolment), so creation is tried first,
        // sparing each a store read. A key that has an account gets that account whatever
        // else the request says (§7.3.1); its creation is refused, at the latest by the
        // store's check that the key is unused, and the refusal is answered with it.
        let refusal = match self.create_account(profile, &jwk, url, req).await {
            Ok(Created::New(account)) => return Ok((account, true)),
            Ok(Created::KeyTaken) => None,
            Err(refusal) => Some(refusal),
        };
        match (self.account_by_key(profile, &jwk).await?, refusal) {
            (Some(existing), _) => Ok((existing.value, false)),
            (None, Some(refusal)) => Err(refusal),
            (None, None) => Err(AcmeError::internal(
                "the account key's index changed underfoot",
            )),
        }
    }

    /// Creates an account for a key that has none; nothing is written if any check fails.
    async fn create_account(
        &self,
        profile: &Profile,
        jwk: &Jwk,
        url: &str,
        req: NewAccount,
    ) -> Result<Created, AcmeError> {
        if profile.config.terms_of_service.is_some() && !req.terms_of_service_agreed {
            return Err(AcmeError::malformed(
                "this profile requires agreeing to its terms of service (termsOfServiceAgreed)",
            ));
        }
        check_contacts(&req.contact)?;
        let id = random_id(16);
        let (eab_kid, binding) = match (
            &req.external_account_binding,
            profile.config.external_account_required,
        ) {
            (None, true) => {
                return Err(AcmeError::new(
                    ProblemType::ExternalAccountRequired,
                    format!(
                        "profile `{}` requires an external account binding",
                        profile.name
                    ),
                ));
            }
            (None, false) => (None, None),
            (Some(binding), _) => {
                let (kid, write) = self.bind(profile, binding, jwk, url, &id).await?;
                (Some(kid), Some(write))
            }
        };
        let account = Account {
            id: id.clone(),
            profile: profile.name.clone(),
            key: jwk.clone(),
            status: AccountStatus::Valid,
            contact: req.contact,
            eab_kid,
            created_at: self.now(),
            certificates_listed: true,
        };
        // The account before what names it: its key's index, the binding it used.
        let mut writes = vec![
            ACCOUNTS.create(&id, &account),
            ACCOUNT_KEYS.create(&key_id(&profile.name, jwk), &id),
        ];
        writes.extend(binding);
        match self.store().write_docs(writes).await {
            Ok(()) => {
                tracing::info!(account = %id, profile = %profile.name, "ACME account created");
                Ok(Created::New(account))
            }
            // The key has an account (made earlier, or concurrently): the caller answers it.
            Err(StoreError::Conflict { kind, .. }) if kind == ACCOUNT_KEYS.kind() => {
                Ok(Created::KeyTaken)
            }
            Err(StoreError::Conflict { .. }) => Err(AcmeError::unauthorized(
                "the external account key was used concurrently",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks an External Account Binding and returns the write that uses its key up.
    async fn bind(
        &self,
        profile: &Profile,
        value: &serde_json::Value,
        jwk: &Jwk,
        url: &str,
        account: &str,
    ) -> Result<(String, DocWrite), AcmeError> {
        let binding = Binding::parse(value)?;
        if binding.url != url {
            return Err(AcmeError::unauthorized(
                "the external account binding was signed for another URL",
            ));
        }
        let refused = || AcmeError::unauthorized("the external account binding does not verify");
        let stored = EAB_KEYS
            .get(self.store().as_ref(), &binding.kid)
            .await?
            .ok_or_else(refused)?;
        if stored.value.profile != profile.name {
            return Err(refused());
        }
        binding
            .verify(&stored.value.hmac_key)
            .map_err(|_| refused())?;
        if stored.value.account.is_some() {
            return Err(AcmeError::unauthorized(
                "the external account key is already bound to an account",
            ));
        }
        if binding.jwk != *jwk {
            return Err(AcmeError::unauthorized(
                "the external account binding vouches for a different key",
            ));
        }
        let mut used = stored.value;
        used.account = Some(account.to_owned());
        let write = EAB_KEYS.replace(&binding.kid, stored.version, &used);
        Ok((binding.kid, write))
    }

    async fn account_by_key(
        &self,
        profile: &Profile,
        jwk: &Jwk,
    ) -> Result<Option<Stored<Account>>, AcmeError> {
        let store = self.store().as_ref();
        let Some(id) = ACCOUNT_KEYS.get(store, &key_id(&profile.name, jwk)).await? else {
            return Ok(None);
        };
        Ok(ACCOUNTS.get(store, &id.value).await?)
    }

    /// POST to the account URL: read (POST-as-GET), update contacts, or deactivate.
    pub async fn update_account(&self, req: &Signed, id: &str) -> Result<Account, AcmeError> {
        let jws = &req.jws;
        let account = self.account_signer(req).await?;
        if account.value.id != id {
            return Err(AcmeError::unauthorized("an account may only manage itself"));
        }
        if jws.is_post_as_get() {
            return Ok(account.value);
        }
        let req: AccountUpdate = jws.json()?;
        let mut next = account.value.clone();
        match req.status.as_deref() {
            None | Some("valid") => {}
            Some("deactivated") => next.status = AccountStatus::Deactivated,
            Some(other) => {
                return Err(AcmeError::malformed(format!(
                    "an account cannot be set to `{other}`"
                )));
            }
        }
        if let Some(contact) = req.contact {
            check_contacts(&contact)?;
            next.contact = contact;
        }
        if next == account.value {
            return Ok(next);
        }
        self.store()
            .write_docs(vec![ACCOUNTS.replace(id, account.version, &next)])
            .await
            .map_err(conflict_is_retryable)?;
        if next.status == AccountStatus::Deactivated {
            tracing::info!(account = %id, "ACME account deactivated");
        }
        Ok(next)
    }

    /// keyChange (RFC 8555 §7.3.5): the inner JWS, signed by the new key, names the account
    /// and its old key; the swap of key and index is one write.
    pub async fn key_change(&self, req: &Signed) -> Result<Account, AcmeError> {
        let (profile, jws, url) = (&*req.profile, &req.jws, req.url.as_str());
        let account = self.account_signer(req).await?;
        let inner = Jws::parse(&jws.payload)?;
        let KeyRef::Jwk(new_key) = &inner.header.key else {
            return Err(AcmeError::malformed(
                "the inner JWS must carry the new key as `jwk`",
            ));
        };
        if inner.header.url != url {
            return Err(AcmeError::malformed(
                "the inner JWS `url` must equal the outer one",
            ));
        }
        inner.verify(new_key)?;
        let req: KeyChange = inner.json()?;
        if req.account != self.url(&profile.name, &format!("account/{}", account.value.id)) {
            return Err(AcmeError::unauthorized(
                "the inner JWS names another account",
            ));
        }
        if req.old_key != account.value.key {
            return Err(AcmeError::unauthorized(
                "`oldKey` is not the account's current key",
            ));
        }
        if let Some(holder) = self.account_by_key(profile, new_key).await? {
            let location = self.url(&profile.name, &format!("account/{}", holder.value.id));
            return Err(AcmeError::key_in_use(location));
        }
        let old_index = key_id(&profile.name, &account.value.key);
        let old_version = ACCOUNT_KEYS
            .get(self.store().as_ref(), &old_index)
            .await?
            .map(|d| d.version)
            .ok_or_else(|| AcmeError::internal("account key index is missing"))?;
        let mut next = account.value.clone();
        next.key = new_key.clone();
        let writes = vec![
            ACCOUNTS.replace(&next.id, account.version, &next),
            ACCOUNT_KEYS.delete(&old_index, old_version),
            ACCOUNT_KEYS.create(&key_id(&profile.name, new_key), &next.id),
        ];
        self.store()
            .write_docs(writes)
            .await
            .map_err(conflict_is_retryable)?;
        tracing::info!(account = %next.id, "ACME account key changed");
        Ok(next)
    }

    /// Mints a one-time ClientIdentifier for a registered device (admin API): the value, shown
    /// once, and what it stands for.
    pub async fn mint_client_identifier(
        &self,
        profile: &str,
        device: &crate::store::DeviceId,
        ttl: std::time::Duration,
    ) -> Result<(String, ClientIdentifier), MintRefusal> {
        let profile = self.profile(profile).map_err(|_| MintRefusal::NoProfile)?;
        if profile.config.permanent_identifier != PermanentIdentifier::ClientIdentifier {
            return Err(MintRefusal::NotTaken(profile.name.clone()));
        }
        if ttl < std::time::Duration::from_secs(1) || ttl > client_identifiers::MAX_TTL {
            return Err(MintRefusal::Ttl);
        }
        let registered = crate::inventory::device(self.store().as_ref(), device).await?;
        if registered.is_none() {
            return Err(MintRefusal::Unregistered(device.clone()));
        }
        let now = crate::clock::whole_seconds(self.now());
        let record = ClientIdentifier {
            device: device.clone(),
            profile: profile.name.clone(),
            expires_at: now + ttl,
        };
        let (value, write) = client_identifiers::mint(&record);
        self.store().write_docs(vec![write]).await?;
        tracing::info!(device = %device, profile = %profile.name, "ClientIdentifier minted");
        Ok((value, record))
    }

    /// Mints an External Account Binding key for `profile` (admin API).
    pub async fn mint_eab_key(&self, profile: &str) -> Result<NewEabKey, AcmeError> {
        let profile = self.profile(profile)?;
        let kid = random_id(16);
        let mut hmac_key = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut hmac_key);
        let record = EabKey {
            profile: profile.name.clone(),
            hmac_key: hmac_key.clone(),
            created_at: self.now(),
            account: None,
        };
        self.store()
            .write_docs(vec![EAB_KEYS.create(&kid, &record)])
            .await?;
        tracing::info!(kid = %kid, profile = %profile.name, "EAB key minted");
        Ok(NewEabKey { kid, hmac_key })
    }
}

/// Key index id: keys are unique per profile (each profile is its own directory).
fn key_id(profile: &str, jwk: &Jwk) -> String {
    format!("{profile}/{}", jwk.thumbprint())
}

/// An account that was never issued a certificate and has no order left is deleted this
/// long after its creation: newAccount is unauthenticated, so what it stores must not stay
/// for ever. Longer than an order's lifetime and retention together, so an account that is
/// still ordering keeps its orders and thereby itself.
const ABANDONED_AFTER: Duration = Duration::days(30);

/// Deletes abandoned accounts (see `ABANDONED_AFTER`) with their key's index entry; returns
/// how many went. Accounts bound with an external account key are kept (an operator vouched
/// for them), and so is one that changes meanwhile.
pub(crate) async fn purge_abandoned(
    store: &dyn Store,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let cutoff = now - ABANDONED_AFTER;
    let mut pages = ACCOUNTS.pages(store);
    let mut purged = 0;
    while let Some(page) = pages.next().await? {
        for (id, account) in page {
            let Ok(Stored {
                value: account,
                version,
            }) = account
            else {
                continue;
            };
            if !account.certificates_listed
                || account.eab_kid.is_some()
                || account.created_at > cutoff
            {
                continue;
            }
            let prefix = format!("{id}/");
            if !ACCOUNT_CERTS
                .page(store, &prefix, None, 1)
                .await?
                .is_empty()
                || !ACCOUNT_ORDERS
                    .page(store, &prefix, None, 1)
                    .await?
                    .is_empty()
            {
                continue;
            }
            let index = key_id(&account.profile, &account.key);
            let mut writes = vec![ACCOUNTS.delete(&id, version)];
            if let Some(doc) = ACCOUNT_KEYS.get(store, &index).await? {
                writes.insert(0, ACCOUNT_KEYS.delete(&index, doc.version));
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

/// A concurrent change to the same resource: the client should simply try again.
pub(super) fn conflict_is_retryable(e: StoreError) -> AcmeError {
    match e {
        StoreError::Conflict { .. } => {
            AcmeError::malformed("the resource changed concurrently; retry the request")
        }
        other => other.into(),
    }
}

/// RFC 8555 §7.3: `mailto:` with one plain address, nothing else.
fn check_contacts(contacts: &[String]) -> Result<(), AcmeError> {
    if contacts.len() > MAX_CONTACTS {
        return Err(AcmeError::new(
            ProblemType::InvalidContact,
            format!("at most {MAX_CONTACTS} contacts"),
        ));
    }
    for c in contacts {
        let Some(addr) = c.strip_prefix("mailto:") else {
            return Err(AcmeError::new(
                ProblemType::UnsupportedContact,
                format!("contact `{c}`: only mailto: is supported"),
            ));
        };
        let valid = addr.len() <= 254
            && !addr.contains(['?', ',', ' ', '<', '>'])
            && addr.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.contains('@')
            });
        if !valid {
            return Err(AcmeError::new(
                ProblemType::InvalidContact,
                format!("contact `{c}` is not a single email address"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn account(id: &str, age: Duration, now: OffsetDateTime) -> Account {
        Account {
            id: id.into(),
            profile: "p".into(),
            // Distinct per id, 32 bytes as an Ed25519 key must be.
            key: Jwk::Ed25519 {
                x: format!("{id:>32}").into_bytes(),
            },
            status: AccountStatus::Valid,
            contact: Vec::new(),
            eab_kid: None,
            created_at: now - age,
            certificates_listed: true,
        }
    }

    #[tokio::test]
    async fn only_old_accounts_without_certificates_orders_or_binding_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let old = ABANDONED_AFTER + Duration::days(1);
        let accounts = [
            account("idle", old, now),
            account("recent", ABANDONED_AFTER - Duration::days(1), now),
            account("certified", old, now),
            account("ordering", old, now),
            Account {
                eab_kid: Some("kid".into()),
                ..account("bound", old, now)
            },
            Account {
                certificates_listed: false,
                ..account("legacy", old, now)
            },
        ];
        for a in &accounts {
            let writes = vec![
                ACCOUNTS.create(&a.id, a),
                ACCOUNT_KEYS.create(&key_id("p", &a.key), &a.id),
            ];
            store.write_docs(writes).await.unwrap();
        }
        let marks = vec![
            ACCOUNT_CERTS.create("certified/0A1B", &()),
            ACCOUNT_ORDERS.create("ordering/o1", &()),
            // A neighbour whose id starts with another account's: not that account's entry.
            ACCOUNT_CERTS.create("idlex/0C", &()),
        ];
        store.write_docs(marks).await.unwrap();

        assert_eq!(purge_abandoned(&store, now).await.unwrap(), 1);
        for a in &accounts {
            let kept = ACCOUNTS.get(&store, &a.id).await.unwrap().is_some();
            let indexed = ACCOUNT_KEYS
                .get(&store, &key_id("p", &a.key))
                .await
                .unwrap()
                .is_some();
            assert_eq!(kept, a.id != "idle", "account {}", a.id);
            assert_eq!(indexed, kept, "key index of {}", a.id);
        }
        assert_eq!(purge_abandoned(&store, now).await.unwrap(), 0);
    }

    /// An account written before `certificates_listed` existed reads as unlisted.
    #[test]
    fn accounts_stored_without_the_flag_are_not_listed() {
        let now = OffsetDateTime::now_utc();
        let mut value = serde_json::to_value(account("a", Duration::ZERO, now)).unwrap();
        value.as_object_mut().unwrap().remove("certificates_listed");
        let mut cbor = Vec::new();
        ciborium::into_writer(&value, &mut cbor).unwrap();
        let doc = crate::store::Doc {
            value: cbor,
            version: 1,
        };
        assert!(!doc.decode::<Account>().unwrap().value.certificates_listed);
    }
}
