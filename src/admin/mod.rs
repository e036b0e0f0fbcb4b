//! Operator commands. sled admits one process, so commands talk to the running server through
//! its authenticated API; when no server answers they open the data directory themselves.

pub mod cli;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::api::views::{
    CertPage, CertView, ChallengeBody, ChallengeView, IssueBody, IssuedView, IssuerView, RevokeBody,
};
use crate::api::{
    ActivatedView, ClientIdentifierBody, ClientIdentifierView, EabBody, EabView, PendingList,
    PendingView, PrepareBody, RootBody, RootView, TokenBody, TokenList, TokenView,
};
use crate::ca::Serial;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::revocation::RevocationReason;
use crate::store::{CertQuery, Store};

/// The data directory's configuration (its config.toml if any, with environment
/// overrides), as `serve` reads it without `--config`.
pub fn dir_config(dir: &DataDir) -> anyhow::Result<Config> {
    Ok(Config::load(
        Some(dir.config()).filter(|p| p.is_file()).as_deref(),
        std::env::vars(),
    )?)
}

/// How a command reaches the CA state.
pub enum Backend {
    Remote(Remote),
    Local(Arc<dyn Store>),
}

pub struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Backend {
    /// The running server if one answers at `url` (default: the configured HTTP listener),
    /// otherwise the data directory opened directly.
    pub async fn connect(dir: &DataDir, url: Option<String>) -> anyhow::Result<Self> {
        let remote = Remote::new(dir, url)?;
        match remote
            .http
            .get(format!("{}/healthz", remote.base))
            .send()
            .await
        {
            Ok(_) => Ok(Self::Remote(remote)),
            Err(e) if e.is_connect() => {
                let settings = dir_config(dir)?.store;
                let store = crate::store::open(&settings, &dir.db())
                    .await
                    .with_context(|| {
                        format!(
                            "no server at {} and the store cannot be opened",
                            remote.base
                        )
                    })?;
                Ok(Self::Local(store.direct()))
            }
            Err(e) => Err(e).context(format!("contacting {}", remote.base)),
        }
    }

    pub async fn issuers(&self) -> anyhow::Result<Vec<IssuerView>> {
        match self {
            Self::Remote(r) => r.get("/api/v1/issuers").await,
            Self::Local(store) => store
                .issuers()
                .await?
                .iter()
                .map(IssuerView::from_record)
                .collect(),
        }
    }

    /// The roots clients are told to trust (`/roots.pem`, or the data directory's).
    pub async fn roots(&self, dir: &DataDir) -> anyhow::Result<Vec<Vec<u8>>> {
        match self {
            Self::Remote(r) => {
                let pem = r.send(r.http.get(format!("{}/roots.pem", r.base))).await?;
                crate::encoding::pem_certs(&pem)
            }
            Self::Local(_) => dir.read_roots(),
        }
    }

    pub async fn certificates(&self, q: CertQuery) -> anyhow::Result<CertPage> {
        match self {
            Self::Remote(r) => {
                let mut params = vec![("limit", q.limit.to_string())];
                params.extend(q.device.map(|d| ("device", d.to_string())));
                params.extend(q.issuer.map(|i| ("issuer", i.to_string())));
                params.extend(q.after.map(|s| ("after", s.to_string())));
                params.extend(q.status.map(|s| ("status", s.as_str().to_owned())));
                r.finish(
                    r.http
                        .get(format!("{}/api/v1/certificates", r.base))
                        .query(&params),
                )
                .await
            }
            Self::Local(store) => {
                let now = OffsetDateTime::now_utc();
                let page = store
                    .certificates(CertQuery {
                        now: Some(now),
                        ..q
                    })
                    .await?;
                Ok(CertPage::new(&page, now))
            }
        }
    }

    pub async fn certificate(&self, serial: &Serial) -> anyhow::Result<CertView> {
        match self {
            Self::Remote(r) => r.get(&format!("/api/v1/certificates/{serial}")).await,
            Self::Local(store) => {
                let rec = store
                    .certificate(serial)
                    .await?
                    .with_context(|| format!("no certificate with serial {serial}"))?;
                Ok(CertView::new(&rec, OffsetDateTime::now_utc(), true))
            }
        }
    }

    pub async fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
    ) -> anyhow::Result<CertView> {
        match self {
            Self::Remote(r) => {
                r.post(
                    &format!("/api/v1/certificates/{serial}/revoke"),
                    &RevokeBody { reason },
                )
                .await
            }
            Self::Local(store) => {
                let now = OffsetDateTime::now_utc();
                let rec = store.revoke(serial, reason, now).await?;
                Ok(CertView::new(&rec, now, false))
            }
        }
    }

    pub async fn create_challenge(&self, body: &ChallengeBody) -> anyhow::Result<ChallengeView> {
        match self {
            Self::Remote(r) => r.post("/api/v1/scep/challenges", body).await,
            Self::Local(_) => {
                bail!("minting challenges needs the running server; start `enrollca serve`")
            }
        }
    }

    pub async fn create_token(&self, body: &TokenBody) -> anyhow::Result<TokenView> {
        match self {
            Self::Remote(r) => r.post("/api/v1/tokens", body).await,
            Self::Local(_) => bail!("minting tokens goes through the running server"),
        }
    }

    pub async fn delete_token(&self, id: &str) -> anyhow::Result<()> {
        match self {
            Self::Remote(r) => r.delete(&format!("/api/v1/tokens/{id}")).await,
            Self::Local(_) => bail!("tokens are withdrawn through the running server"),
        }
    }

    pub async fn tokens(&self) -> anyhow::Result<TokenList> {
        match self {
            Self::Remote(r) => r.get("/api/v1/tokens").await,
            Self::Local(_) => bail!("tokens are listed through the running server"),
        }
    }

    /// SCEP enrolments waiting for approval.
    pub async fn pending(&self) -> anyhow::Result<PendingList> {
        match self {
            Self::Remote(r) => r.get("/api/v1/scep/pending").await,
            Self::Local(_) => bail!("pending enrolments are managed through the running server"),
        }
    }

    /// Approves (issues) or rejects a pending SCEP enrolment.
    pub async fn decide(&self, transaction_id: &str, approve: bool) -> anyhow::Result<PendingView> {
        let verb = if approve { "approve" } else { "reject" };
        match self {
            Self::Remote(r) => {
                let path = format!("/api/v1/scep/pending/{transaction_id}/{verb}");
                r.post(&path, &serde_json::json!({})).await
            }
            Self::Local(_) => bail!("approving needs the running server; start `enrollca serve`"),
        }
    }

    /// Stages the next issuer of a line (`rsa`, `ecdsa`).
    pub async fn prepare_issuer(
        &self,
        line: &str,
        body: &PrepareBody,
    ) -> anyhow::Result<IssuerView> {
        self.remote("CA rotation")?
            .post(&format!("/api/v1/rotation/{line}/prepare"), body)
            .await
    }

    pub async fn rotate_root(&self, body: &RootBody) -> anyhow::Result<RootView> {
        self.remote("CA rotation")?
            .post("/api/v1/rotation/root", body)
            .await
    }

    pub async fn activate_issuer(&self, line: &str) -> anyhow::Result<ActivatedView> {
        self.remote("CA rotation")?
            .post(&format!("/api/v1/rotation/{line}/activate"), &())
            .await
    }

    pub async fn retire_issuer(&self, id: &str) -> anyhow::Result<IssuerView> {
        self.remote("CA rotation")?
            .post(&format!("/api/v1/issuers/{id}/retire"), &())
            .await
    }

    /// The running server, for what only it can do (it holds the keys and the issuer set).
    fn remote(&self, what: &str) -> anyhow::Result<&Remote> {
        match self {
            Self::Remote(r) => Ok(r),
            Self::Local(_) => bail!("{what} needs the running server; start `enrollca serve`"),
        }
    }

    pub async fn create_client_identifier(
        &self,
        body: &ClientIdentifierBody,
    ) -> anyhow::Result<ClientIdentifierView> {
        match self {
            Self::Remote(r) => r.post("/api/v1/acme/client-identifiers", body).await,
            Self::Local(_) => {
                bail!("minting ClientIdentifiers needs the running server; start `enrollca serve`")
            }
        }
    }

    pub async fn create_eab_key(&self, body: &EabBody) -> anyhow::Result<EabView> {
        match self {
            Self::Remote(r) => r.post("/api/v1/acme/eab-keys", body).await,
            Self::Local(_) => {
                bail!("minting EAB keys needs the running server; start `enrollca serve`")
            }
        }
    }

    pub async fn issue(&self, body: &IssueBody) -> anyhow::Result<IssuedView> {
        match self {
            Self::Remote(r) => r.post("/api/v1/certificates", body).await,
            Self::Local(_) => {
                bail!("issuing needs the running server (its CA keys); start `enrollca serve`")
            }
        }
    }
}

impl Remote {
    /// The server's API over HTTPS: at `url`, else at the configured HTTPS listener (on
    /// loopback when it listens on every address), trusting the roots in the data directory
    /// beside the system's.
    fn new(dir: &DataDir, url: Option<String>) -> anyhow::Result<Self> {
        let base = match url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let mut https = dir_config(dir)?.listen.https;
                if https.ip().is_unspecified() {
                    https.set_ip(match https.ip() {
                        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                format!("https://{https}")
            }
        };
        let mut http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        let roots = dir.roots();
        if roots.is_file() {
            let pem =
                std::fs::read(&roots).with_context(|| format!("reading {}", roots.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not PEM certificates", roots.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let token = match std::env::var("ENROLLCA_TOKEN") {
            Ok(t) => t,
            Err(_) => std::fs::read_to_string(dir.admin_token()).with_context(|| {
                format!(
                    "reading the admin token {} (or set ENROLLCA_TOKEN)",
                    dir.admin_token().display()
                )
            })?,
        };
        Ok(Self {
            base,
            token: token.trim().to_owned(),
            http: http.build()?,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.finish(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.finish(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
            .map(drop)
    }

    async fn finish<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let bytes = self.send(req).await?;
        serde_json::from_slice(&bytes).context("unexpected answer from the server")
    }

    /// Sends with the token; a refusal becomes an error carrying the problem's detail.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<bytes::Bytes> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .context("request to the server failed")?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("server answered {status}: {detail}");
        }
        Ok(bytes)
    }
}

/// Resolves `--data`, defaulting to `./enrollca-data`.
pub fn data_dir(arg: Option<PathBuf>) -> DataDir {
    DataDir::new(arg.unwrap_or_else(|| PathBuf::from("enrollca-data")))
}
