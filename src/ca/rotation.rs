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
use super::keys::{CaKey, KeyFamily, Passphrase};
use super::{Ca, CaError, Issuer, IssuerId, IssuerSet, Serial};
use crate::datadir::{DataDir, to_pem};
use crate::store::{
    CertQuery, EventKind, IssuerChange, IssuerRecord, IssuerState, StatusFilter, StoreError,
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
    #[error("the imported issuer: {0}")]
    BadImport(String),
    #[error("another rotation step changed the issuers meanwhile; look again and retry")]
    Concurrent,
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(StoreError),
    #[error("{0}")]
    Io(String),
}

impl From<StoreError> for RotationError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IssuerChanged(_) => Self::Concurrent,
            e => Self::Store(e),
        }
    }
}

/// A next issuer made elsewhere (signed offline by the root): certificate and key, PEM.
pub struct Import {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

pub struct Rotation {
    ca: Arc<Ca>,
    dir: DataDir,
    passphrase: Option<Passphrase>,
    public_url: String,
    /// One rotation step at a time in this process (the store's expectations catch others).
    step: tokio::sync::Mutex<()>,
}

impl Rotation {
    pub fn new(
        ca: Arc<Ca>,
        dir: DataDir,
        passphrase: Option<Passphrase>,
        public_url: String,
    ) -> Self {
        Self {
            ca,
            dir,
            passphrase,
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
        let root_der = self
            .dir
            .read_roots()
            .map_err(|e| RotationError::Io(e.to_string()))?
            .remove(0);
        let Made { cert_der, key } = match import {
            Some(import) => self.imported(import, family, &root_der)?,
            None => {
                let root_key = self.root_key()?;
                let spec = active.key().spec();
                let (cn, org) = next_names(active.cert_der());
                tokio::task::spawn_blocking(move || {
                    hierarchy::issuing_ca(&root_der, &root_key, spec, &cn, &org)
                })
                .await
                .map_err(|e| RotationError::Io(e.to_string()))??
            }
        };
        let id = IssuerId::for_spki(&key.spki_der());
        let key_file = DataDir::issuer_key_rel(&id);
        key.save(&self.dir.path().join(&key_file), self.passphrase.as_ref())
            .map_err(CaError::from)?;
        std::fs::write(self.dir.issuer_cert(&id), to_pem("CERTIFICATE", &cert_der))
            .map_err(|e| RotationError::Io(e.to_string()))?;
        let record = IssuerRecord {
            id,
            family,
            state: IssuerState::Next,
            cert_der,
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
                status: Some(StatusFilter::Good),
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

    /// Writes the step, then swaps in the issuer set the store now describes.
    async fn commit(&self, changes: Vec<IssuerChange>) -> Result<(), RotationError> {
        self.ca.store().change_issuers(changes, self.now()).await?;
        let records = self.ca.store().issuers().await?;
        let (dir, pass, url) = (
            self.dir.clone(),
            self.passphrase.clone(),
            self.public_url.clone(),
        );
        // Key files are read and decrypted: off the reactor.
        let set = tokio::task::spawn_blocking(move || -> Result<IssuerSet, CaError> {
            let issuers = records
                .iter()
                .map(|r| Issuer::load(r, dir.path(), pass.as_ref(), &url))
                .collect::<Result<Vec<_>, _>>()?;
            IssuerSet::new(issuers)
        })
        .await
        .map_err(|e| RotationError::Io(e.to_string()))??;
        self.ca.replace_issuers(set);
        Ok(())
    }

    fn root_key(&self) -> Result<CaKey, RotationError> {
        let path = self.dir.root_key();
        if !path.exists() {
            return Err(RotationError::RootKeyOffline);
        }
        Ok(CaKey::load(&path, self.passphrase.as_ref()).map_err(CaError::from)?)
    }

    fn imported(
        &self,
        import: Import,
        family: KeyFamily,
        root_der: &[u8],
    ) -> Result<Made, RotationError> {
        let bad = |m: String| RotationError::BadImport(m);
        let mut certs =
            crate::datadir::pem_certs(&import.cert_pem).map_err(|e| bad(e.to_string()))?;
        if certs.len() != 1 {
            return Err(bad(format!("{} certificates, expected one", certs.len())));
        }
        let cert_der = certs.remove(0);
        let key = CaKey::from_pem(
            &import.key_pem,
            self.passphrase.as_ref(),
            "the imported key",
        )
        .map_err(|e| bad(e.to_string()))?;
        if key.family() != family {
            return Err(bad(format!("a {} key for the {family} line", key.family())));
        }
        crate::admin::init::check_issued_by(&cert_der, root_der).map_err(|e| bad(e.to_string()))?;
        let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| bad(e.to_string()))?;
        if cert.public_key().raw != key.spki_der().as_slice() {
            return Err(bad("the key does not match the certificate".into()));
        }
        Ok(Made { cert_der, key })
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
