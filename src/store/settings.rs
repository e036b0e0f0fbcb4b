//! Which store a node uses, and opening it: sled in the data directory (one process, the
//! embedded default) or a PostgreSQL database that several nodes share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{DocCache, PgStore, PgTarget, SledStore, Store, StoreError};
use crate::error::cause;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Sled,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub backend: BackendKind,
    /// `postgres://user[:password]@host[:port]/database[?options]` (a secret: it may hold
    /// the password).
    pub url: Option<Secret>,
    /// The database password, when it is not in the URL (a mounted secret).
    pub password_file: Option<PathBuf>,
    /// Connections each node keeps to the database.
    pub pool_size: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: BackendKind::Sled,
            url: None,
            password_file: None,
            pool_size: 16,
        }
    }
}

/// Largest `store.pool_size`: PostgreSQL's default `max_connections` is 100 for every node.
pub const MAX_POOL: usize = 256;

impl StoreSettings {
    /// The start-up check: the key at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match self.backend {
            BackendKind::Sled => {
                if self.url.is_some() {
                    return Err(("store.url", "is set, but store.backend is sled".into()));
                }
            }
            BackendKind::Postgres => {
                let url = self
                    .url
                    .as_ref()
                    .ok_or(("store.url", "store.backend = \"postgres\" needs it".into()))?;
                // Neither the driver's message nor ours repeats the URL: no password leaks.
                PgTarget::parse(url.expose())
                    .map_err(|e| ("store.url", format!("not a usable PostgreSQL URL: {e}")))?;
            }
        }
        if !(1..=MAX_POOL).contains(&self.pool_size) {
            return Err(("store.pool_size", format!("must be 1 to {MAX_POOL}")));
        }
        Ok(())
    }

    /// The connection settings: the URL, with the password from its file when one is named.
    fn postgres(&self) -> Result<PgTarget, StoreError> {
        let invalid = |why: String| StoreError::backend("PostgreSQL settings", cause(why));
        let url = self
            .url
            .as_ref()
            .ok_or_else(|| invalid("store.url is not set".into()))?;
        let mut target =
            PgTarget::parse(url.expose()).map_err(|e| invalid(format!("store.url: {e}")))?;
        if let Some(file) = &self.password_file {
            let password = std::fs::read_to_string(file)
                .map_err(|e| invalid(format!("store.password_file {}: {e}", file.display())))?;
            target
                .config
                .password(password.trim_end_matches(['\r', '\n']));
        }
        Ok(target)
    }
}

/// A store as opened, before it is shared.
pub enum Opened {
    Sled(SledStore),
    Postgres(PgStore),
}

impl Opened {
    /// For the process that serves: sled is this process's alone, so its documents and
    /// certificate states are cached in front of it; a database other nodes write is not.
    pub fn serving(self) -> Arc<dyn Store> {
        match self {
            Self::Sled(sled) => Arc::new(DocCache::new(sled)),
            Self::Postgres(pg) => Arc::new(pg),
        }
    }

    /// For a one-off command: no cache.
    pub fn direct(self) -> Arc<dyn Store> {
        match self {
            Self::Sled(sled) => Arc::new(sled),
            Self::Postgres(pg) => Arc::new(pg),
        }
    }
}

/// Opens the configured store; `sled_dir` is where sled keeps its files.
pub async fn open(settings: &StoreSettings, sled_dir: &Path) -> Result<Opened, StoreError> {
    match settings.backend {
        BackendKind::Sled => SledStore::open(sled_dir).map(Opened::Sled),
        BackendKind::Postgres => PgStore::connect(settings.postgres()?, settings.pool_size)
            .await
            .map(Opened::Postgres),
    }
}
