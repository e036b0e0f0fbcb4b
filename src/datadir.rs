//! The data directory: where every file enrollca owns lives, and nothing else.
//!
//! ```text
//! config.toml           configuration (written by init; edit freely)
//! admin-token           bearer token of the admin API (0600)
//! ca/roots.pem          root certificate(s) clients should trust
//! ca/root.key           root key (0600; absent when the root is kept offline)
//! ca/issuers/<id>.pem   issuing CA certificates; <id>.key their keys (0600)
//! tls/cert.pem, key.pem HTTPS certificate (generated unless tls.cert/tls.key are set)
//! db/                   sled database
//! ```

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::encoding::pem_certs;
use crate::model::IssuerId;

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin-token")
    }

    pub fn roots(&self) -> PathBuf {
        self.root.join("ca/roots.pem")
    }

    pub fn root_key(&self) -> PathBuf {
        self.root.join("ca/root.key")
    }

    /// Cross certificates between roots (after a root rotation).
    pub fn cross(&self) -> PathBuf {
        self.root.join("ca/cross.pem")
    }

    /// A root rotation's new key, until the rotation completes.
    pub fn staged_root_key(&self) -> PathBuf {
        self.root.join("ca/root.key.new")
    }

    /// The last step of a root rotation, once `ca/roots.pem` lists the new root: the current
    /// key is kept as `retired-root-<old_id>.key`, and the staged key becomes `ca/root.key`
    /// by one atomic rename. Every step is durable before the next.
    pub fn complete_root_rotation(&self, old_id: &IssuerId) -> std::io::Result<()> {
        let retired = self.retired_root_key(old_id);
        if !retired.exists() {
            crate::durable::create_private(&retired, &std::fs::read(self.root_key())?)?;
        }
        crate::durable::rename(&self.staged_root_key(), &self.root_key())
    }

    /// Keys of roots that were replaced, kept for the operator to move offline.
    pub fn retired_root_key(&self, id: &IssuerId) -> PathBuf {
        self.root.join(format!("ca/retired-root-{id}.key"))
    }

    /// The cross certificates between roots (none before a root rotation).
    pub fn read_cross(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        match std::fs::read(self.cross()) {
            Ok(pem) => pem_certs(&pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => anyhow::bail!("{}: {e}", self.cross().display()),
        }
    }

    pub fn issuer_cert(&self, id: &IssuerId) -> PathBuf {
        self.root.join(format!("ca/issuers/{id}.pem"))
    }

    /// Key path relative to the data directory, as the issuer record stores it.
    pub fn issuer_key_rel(id: &IssuerId) -> String {
        format!("ca/issuers/{id}.key")
    }

    pub fn tls_cert(&self) -> PathBuf {
        self.root.join("tls/cert.pem")
    }

    pub fn tls_key(&self) -> PathBuf {
        self.root.join("tls/key.pem")
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    pub fn is_initialised(&self) -> bool {
        self.roots().is_file()
    }

    /// True when the directory is absent or empty: safe to initialise.
    pub fn is_vacant(&self) -> bool {
        match std::fs::read_dir(&self.root) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    /// Creates the directory tree, owner-only.
    pub fn create_tree(&self) -> std::io::Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        for sub in ["ca/issuers", "tls", "db"] {
            b.create(self.root.join(sub))?;
        }
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
    }

    /// Root certificates in DER, in file order.
    pub fn read_roots(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let pem = std::fs::read(self.roots())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.roots().display()))?;
        let roots = pem_certs(&pem)?;
        anyhow::ensure!(
            !roots.is_empty(),
            "{}: no certificate",
            self.roots().display()
        );
        Ok(roots)
    }
}
