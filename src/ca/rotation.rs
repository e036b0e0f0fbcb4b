//! Issuing CA rotation without re-enrolling the fleet: `prepare` stages the next issuer of a
//! line (generated under the root, or imported), `activate` makes it the one that issues and
//! the previous one `retiring` (it still signs CRLs and OCSP for what it issued), `retire`
//! ends a retiring issuer once nothing it issued is still valid. Each step is one atomic
//! store write with its events; the server's issuer set is then swapped whole, so requests
//! in flight finish with the set they started with and nothing restarts.

use std::sync::Arc;

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::hierarchy::{self, Made};
use super::keys::{CaKey, KeyAccess, KeySpec};
use super::{Ca, CaError, Issuer, IssuerId, IssuerSet, Serial, presence, shared_trust};
use crate::datadir::DataDir;
use crate::durable;
use crate::encoding::to_pem;
use crate::error::{Cause, cause};
use crate::model::KeyFamily;
use crate::store::{
    Backing, CertQuery, EventKind, IssuerChange, IssuerRecord, IssuerState, Standing, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("a next {family} issuer is already staged ({id}); activate it first")]
    AlreadyStaged { family: KeyFamily, id: IssuerId },
    #[error("no next {0} issuer is staged; run `enrollca ca rotate prepare` first")]
    NothingStaged(KeyFamily),
    #[error("no issuer {0}")]
    UnknownIssuer(IssuerId),
    #[error("issuer {id} is {state:?}; only a retiring issuer can be retired")]
    NotRetiring { id: IssuerId, state: IssuerState },
    #[error(
        "issuer {id} still has {count} valid certificate(s); revoke them or wait until they expire"
    )]
    StillValid { id: IssuerId, count: usize },
    #[error(
        "the root key is not in the data directory; sign the next issuer offline and import it (--cert, --key)"
    )]
    RootKeyOffline,
    #[error(
        "the root key in this node's data directory is an older root's (another node rotated the root); prepare issuers on that node, and take ca/root.key here offline"
    )]
    RootSupersededHere,
    #[error("the imported issuer: {0}")]
    BadImport(String),
    #[error("another rotation step changed the issuers meanwhile; look again and retry")]
    Concurrent,
    #[error(
        "the key of the staged issuer {id} is not on every node yet ({}); copy ca/issuers/{id}.key to them (they load it within 2 s) and activate again",
        nodes.join(", ")
    )]
    NotOnEveryNode { id: IssuerId, nodes: Vec<String> },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(StoreError),
    /// Writing or reading the data directory failed, or a task running it did.
    #[error("the CA files could not be updated")]
    Io(#[source] Cause),
}

impl From<StoreError> for RotationError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IssuerChanged(_) => Self::Concurrent,
            e => Self::Store(e),
        }
    }
}

/// Where the next issuer's key comes from, when it is not generated here.
pub enum Import {
    /// Made elsewhere and signed offline by the root: certificate and key, PEM.
    Files { cert_pem: Vec<u8>, key_pem: Vec<u8> },
    /// A key pair already in a PKCS#11 token (`pkcs11:token=…;object=…`): its certificate
    /// is made here, signed by the root; the key stays in the token.
    Token(String),
}

pub struct Rotation {
    ca: Arc<Ca>,
    dir: DataDir,
    keys: KeyAccess,
    public_url: String,
    /// One rotation step at a time in this process (the store's expectations catch others).
    step: tokio::sync::Mutex<()>,
}

impl Rotation {
    pub fn new(ca: Arc<Ca>, dir: DataDir, keys: KeyAccess, public_url: String) -> Self {
        Self {
            ca,
            dir,
            keys,
            public_url,
            step: tokio::sync::Mutex::new(()),
        }
    }

    /// Stages the next issuer of `family`: generated under the root (same key type as the
    /// active one) or imported.
    pub async fn prepare(
        &self,
        family: KeyFamily,
        import: Option<Import>,
    ) -> Result<IssuerRecord, RotationError> {
        let _step = self.step.lock().await;
        let current = self.ca.issuers();
        if let Some(next) = current.next(family) {
            return Err(RotationError::AlreadyStaged {
                family,
                id: next.id().clone(),
            });
        }
        let active = current
            .active(family)
            .ok_or(RotationError::NothingStaged(family))?
            .clone();
        let (Made { cert_der, key }, intermediates) = match import {
            Some(Import::Files { cert_pem, key_pem }) => {
                self.imported(&cert_pem, &key_pem, family)?
            }
            generated_or_token => {
                let key = match generated_or_token {
                    Some(Import::Token(uri)) => {
                        let key = self
                            .keys
                            .load(&uri, self.dir.path())
                            .map_err(CaError::from)?;
                        if key.family() != family {
                            return Err(RotationError::BadImport(format!(
                                "{uri} is a {} key, not {family}",
                                key.family()
                            )));
                        }
                        key
                    }
                    _ => CaKey::generate(active.key().spec()).map_err(CaError::from)?,
                };
                let (root_der, root_key) = self.current_root()?;
                let (cn, org) = next_names(active.cert_der());
                let now = self.ca.clock().now();
                let made = tokio::task::spawn_blocking(move || {
                    hierarchy::issuing_ca(&root_der, &root_key, key, &cn, &org, now)
                })
                .await
                .map_err(|e| RotationError::Io(cause(e)))??;
                (made, Vec::new())
            }
        };
        let id = IssuerId::for_spki(&key.spki_der());
        // A token key stays in the token: the record names it by its URI.
        let key_file = match key.token_uri() {
            Some(uri) => uri.to_owned(),
            None => {
                let file = DataDir::issuer_key_rel(&id);
                key.save(&self.dir.path().join(&file), self.keys.passphrase.as_ref())
                    .map_err(CaError::from)?;
                file
            }
        };
        durable::write(
            &self.dir.issuer_cert(&id),
            to_pem("CERTIFICATE", &cert_der).as_bytes(),
            0o644,
        )
        .map_err(|e| RotationError::Io(cause(e)))?;
        let record = IssuerRecord {
            id,
            family,
            state: IssuerState::Next,
            cert_der,
            intermediates: intermediates.into_iter().map(Into::into).collect(),
            key_file,
            created_at: self.now(),
        };
        self.commit(vec![change(&record, None, EventKind::IssuerStaged)?])
            .await?;
        tracing::info!(issuer = %record.id, %family, "next issuer staged");
        Ok(record)
    }

    /// The staged issuer of `family` takes over issuance; the active one becomes retiring.
    /// Returns (activated, retiring).
    pub async fn activate(
        &self,
        family: KeyFamily,
    ) -> Result<(IssuerRecord, IssuerRecord), RotationError> {
        let _step = self.step.lock().await;
        let records = self.ca.store().issuers().await?;
        let find = |state| {
            records
                .iter()
                .find(|r| r.family == family && r.state == state)
                .cloned()
        };
        let next = find(IssuerState::Next).ok_or(RotationError::NothingStaged(family))?;
        let active = find(IssuerState::Active).ok_or(RotationError::NothingStaged(family))?;
        self.every_node_holds(&next.id).await?;
        let activated = IssuerRecord {
            state: IssuerState::Active,
            ..next
        };
        let retiring = IssuerRecord {
            state: IssuerState::Retiring,
            ..active
        };
        self.commit(vec![
            change(
                &activated,
                Some(IssuerState::Next),
                EventKind::IssuerActivated,
            )?,
            change(
                &retiring,
                Some(IssuerState::Active),
                EventKind::IssuerRetiring,
            )?,
        ])
        .await?;
        tracing::info!(issuer = %activated.id, previous = %retiring.id, %family, "issuer activated");
        Ok((activated, retiring))
    }

    /// Waits (up to `presence::SETTLE`) until this node and every other node heard from
    /// lately hold the staged issuer's key; refuses, naming those that do not.
    async fn every_node_holds(&self, id: &IssuerId) -> Result<(), RotationError> {
        if self.ca.issuers().get(id).is_none() {
            return Err(RotationError::NotOnEveryNode {
                id: id.clone(),
                nodes: vec!["this node".into()],
            });
        }
        let backing = Backing {
            store: self.ca.store().clone(),
            clock: self.ca.clock().clone(),
        };
        let deadline = tokio::time::Instant::now() + presence::SETTLE;
        loop {
            let nodes = presence::lacking(&backing, id).await?;
            if nodes.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RotationError::NotOnEveryNode {
                    id: id.clone(),
                    nodes,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// A retiring issuer with nothing valid left becomes retired.
    pub async fn retire(&self, id: &IssuerId) -> Result<IssuerRecord, RotationError> {
        let _step = self.step.lock().await;
        let records = self.ca.store().issuers().await?;
        let record = records
            .into_iter()
            .find(|r| &r.id == id)
            .ok_or_else(|| RotationError::UnknownIssuer(id.clone()))?;
        if record.state != IssuerState::Retiring {
            return Err(RotationError::NotRetiring {
                id: id.clone(),
                state: record.state,
            });
        }
        let valid = self
            .ca
            .store()
            .all_certificates(CertQuery {
                issuer: Some(id.clone()),
                status: Some(Standing::Good),
                now: Some(self.now()),
                ..CertQuery::default()
            })
            .await?;
        if !valid.is_empty() {
            return Err(RotationError::StillValid {
                id: id.clone(),
                count: valid.len(),
            });
        }
        let retired = IssuerRecord {
            state: IssuerState::Retired,
            ..record
        };
        self.commit(vec![change(
            &retired,
            Some(IssuerState::Retiring),
            EventKind::IssuerRetired,
        )?])
        .await?;
        tracing::info!(issuer = %id, "issuer retired");
        Ok(retired)
    }

    /// Root rotation: a new root, and cross certificates both ways, so devices that trust
    /// either root validate certificates under both. The new root signs the issuers
    /// prepared from now on; the old root's key moves aside (`ca/retired-root-<id>.key`) for
    /// the operator to take offline. Returns the new root.
    pub async fn rotate_root(&self, spec: Option<KeySpec>) -> Result<Vec<u8>, RotationError> {
        let _step = self.step.lock().await;
        let (old_root, old_key) = self.current_root()?;
        let trust = self.ca.trust();
        let spec = spec.unwrap_or_else(|| old_key.spec());
        let old_id = IssuerId::for_spki(&old_key.spki_der());
        let (cn, org) = next_names(&old_root);
        let now = self.ca.clock().now();
        let (new_root, cross) = tokio::task::spawn_blocking(move || -> Result<_, CaError> {
            let new = hierarchy::root(spec, &cn, &org, now)?;
            let new_under_old = hierarchy::cross(&new.cert_der, &old_root, &old_key, now)?;
            let old_under_new = hierarchy::cross(&old_root, &new.cert_der, &new.key, now)?;
            Ok((new, [new_under_old, old_under_new]))
        })
        .await
        .map_err(|e| RotationError::Io(cause(e)))??;

        // Each step durable before the next, and every state in between consistent: the
        // root key (`ca/root.key`) always has its certificate in `ca/roots.pem`. The new
        // roots list keeps the old root, so it is written first; the key is swapped last, by
        // one atomic rename. A crash in between leaves the old root in charge and the staged
        // key beside it, which `recover_root_rotation` completes at the next start.
        let io = |e: std::io::Error| RotationError::Io(cause(e));
        let staged_key = self.dir.staged_root_key();
        let _ = std::fs::remove_file(&staged_key);
        new_root
            .key
            .save(&staged_key, self.keys.passphrase.as_ref())
            .map_err(CaError::from)?;
        let next = trust.with_root(new_root.cert_der.clone(), cross);
        durable::write(&self.dir.cross(), next.cross_pem().as_bytes(), 0o644).map_err(io)?;
        durable::write(&self.dir.roots(), next.roots_pem().as_bytes(), 0o644).map_err(io)?;
        self.dir.complete_root_rotation(&old_id).map_err(io)?;
        self.ca.set_trust(next);
        tracing::info!(root = %crate::encoding::fingerprint(&new_root.cert_der), "root rotated; cross certificates issued both ways");
        // The other nodes learn it from the store; if that write fails, this node's next
        // `follow_trust` writes it (the data directory has it).
        if let Err(e) = self.follow_trust().await {
            tracing::warn!(error = %crate::error::Chain(&e), "the other nodes do not know the new root yet; retrying");
        }
        Ok(new_root.cert_der)
    }

    /// Merges the roots this node serves with those the store knows (another node's root
    /// rotation), keeping both and the data directory up to date.
    pub async fn follow_trust(&self) -> Result<(), shared_trust::SyncError> {
        let current = self.ca.trust();
        if let Some(next) =
            shared_trust::sync(&self.dir, self.ca.store().as_ref(), &current).await?
        {
            tracing::info!(
                roots = next.roots().len(),
                "serving the roots another node rotated to"
            );
            self.ca.set_trust(next);
        }
        Ok(())
    }

    /// Writes the step, then swaps in the issuer set the store now describes.
    async fn commit(&self, changes: Vec<IssuerChange>) -> Result<(), RotationError> {
        self.ca.store().change_issuers(changes, self.now()).await?;
        self.reload().await
    }

    /// Swaps in the issuer set the store describes (after a step here, or one another node
    /// of the cluster took), with each issuer's key from this node's data directory or token.
    pub async fn reload(&self) -> Result<(), RotationError> {
        let records = self.ca.store().issuers().await?;
        let (dir, keys, url) = (self.dir.clone(), self.keys.clone(), self.public_url.clone());
        // Key files are read and decrypted: off the reactor.
        let set = tokio::task::spawn_blocking(move || -> Result<IssuerSet, CaError> {
            let issuers = records
                .iter()
                .map(|r| Issuer::load(r, dir.path(), &keys, &url))
                .collect::<Result<Vec<_>, _>>()?;
            IssuerSet::new(issuers)
        })
        .await
        .map_err(|e| RotationError::Io(cause(e)))??;
        self.ca.replace_issuers(set);
        Ok(())
    }

    /// The root that signs new issuers (the one whose key is `ca/root.key`) and its key.
    fn current_root(&self) -> Result<(Vec<u8>, CaKey), RotationError> {
        let path = self.dir.root_key();
        if !path.exists() {
            return Err(RotationError::RootKeyOffline);
        }
        let key = CaKey::load(&path, self.keys.passphrase.as_ref()).map_err(CaError::from)?;
        let trust = self.ca.trust();
        let position = trust
            .roots()
            .iter()
            .position(|r| {
                X509Certificate::from_der(r)
                    .is_ok_and(|(_, c)| c.public_key().raw == key.spki_der().as_slice())
            })
            .ok_or_else(|| {
                RotationError::Io(cause("no root in ca/roots.pem matches ca/root.key"))
            })?;
        // Roots are listed oldest first. Another node rotated the root: this node's key is
        // the old root's, which must not sign new issuers.
        if position + 1 != trust.roots().len() {
            return Err(RotationError::RootSupersededHere);
        }
        Ok((trust.roots()[position].clone(), key))
    }

    /// A next issuer signed offline by one of our roots, directly or through the intermediates
    /// that follow it in `cert_pem`; returns it with those intermediates.
    fn imported(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        family: KeyFamily,
    ) -> Result<(Made, Vec<Vec<u8>>), RotationError> {
        let bad = |m: String| RotationError::BadImport(m);
        let trust = self.ca.trust();
        let mut certs = crate::encoding::pem_certs(cert_pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate".into()));
        }
        let cert_der = certs.remove(0);
        // A bundle may end with the root itself: it is not an intermediate.
        certs.retain(|c| !trust.roots.contains(c));
        let key = CaKey::from_pem(key_pem, self.keys.passphrase.as_ref(), "the imported key")
            .map_err(|e| bad(e.to_string()))?;
        if key.family() != family {
            return Err(bad(format!("a {} key for the {family} line", key.family())));
        }
        let checks: Vec<_> = trust
            .roots
            .iter()
            .map(|root| hierarchy::check_path(&cert_der, &certs, root))
            .collect();
        if !checks.iter().any(Result::is_ok) {
            let why = checks
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_else(|| "no root".to_owned());
            return Err(bad(why));
        }
        let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| bad(e.to_string()))?;
        if cert.public_key().raw != key.spki_der().as_slice() {
            return Err(bad("the key does not match the certificate".into()));
        }
        Ok((Made { cert_der, key }, certs))
    }

    fn now(&self) -> OffsetDateTime {
        self.ca.clock().now()
    }
}

fn change(
    record: &IssuerRecord,
    was: Option<IssuerState>,
    event: EventKind,
) -> Result<IssuerChange, RotationError> {
    let (_, cert) = X509Certificate::from_der(&record.cert_der)
        .map_err(|e| CaError::BadCaCert(e.to_string()))?;
    let serial = Serial::from_bytes(cert.raw_serial())
        .map_err(|e| CaError::BadCaCert(format!("serial: {e}")))?;
    Ok(IssuerChange {
        record: record.clone(),
        was,
        event,
        serial,
    })
}

/// The next issuer's names: the current one's organization, its common name with a new
/// random suffix (so two generations are told apart in every trust store and log).
fn next_names(current_der: &[u8]) -> (String, String) {
    let parsed = X509Certificate::from_der(current_der).ok();
    let attr =
        |f: fn(&X509Certificate<'_>) -> Option<String>| parsed.as_ref().and_then(|(_, c)| f(c));
    let cn = attr(|c| {
        c.subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()
            .map(str::to_owned)
    })
    .unwrap_or_else(|| "enrollca Issuing CA".into());
    let org = attr(|c| {
        c.subject()
            .iter_organization()
            .next()?
            .as_str()
            .ok()
            .map(str::to_owned)
    })
    .unwrap_or_else(|| "enrollca".into());
    let base = match cn.rsplit_once(' ') {
        Some((base, suffix))
            if suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            base
        }
        _ => cn.as_str(),
    };
    (
        format!("{base} {:06x}", rand::random::<u32>() & 0xff_ffff),
        org,
    )
}

/// Finishes a root rotation that a crash interrupted (see `Rotation::rotate_root`): a staged
/// key whose root `ca/roots.pem` lists becomes the root key; one whose root it does not list
/// belongs to a rotation that never happened and is removed.
pub fn recover_root_rotation(dir: &DataDir, keys: &KeyAccess) -> anyhow::Result<()> {
    let staged = dir.staged_root_key();
    if !staged.exists() {
        return Ok(());
    }
    let key = CaKey::load(&staged, keys.passphrase.as_ref())?;
    let listed = dir.read_roots()?.iter().any(|r| {
        X509Certificate::from_der(r).is_ok_and(|(_, c)| c.public_key().raw == key.spki_der())
    });
    if !listed {
        std::fs::remove_file(&staged)?;
        durable::sync_parent(&staged)?;
        tracing::warn!("removed the key of a root rotation that did not complete");
        return Ok(());
    }
    let current = CaKey::load(&dir.root_key(), keys.passphrase.as_ref())?;
    dir.complete_root_rotation(&IssuerId::for_spki(&current.spki_der()))?;
    tracing::warn!("completed a root rotation that a crash interrupted");
    Ok(())
}
