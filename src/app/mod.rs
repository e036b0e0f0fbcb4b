//! Wiring: config → store → issuers → services → listeners.

mod router;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::acme::settings::DeviceInventory;
use crate::acme::validation::Validators;
use crate::acme::{AcmeService, Nonces, Profile};
use crate::api::TokenHash;
use crate::attest::status::StatusList;
use crate::attest::{AndroidKey, Apple, FormatName, Tpm, Verifier, YubiKeyPiv};
use crate::ca::KeyAccess;
use crate::ca::passphrase;
use crate::ca::pkcs11::Pkcs11Access;
use crate::ca::rotation::Rotation;
use crate::ca::{Ca, Issuer, IssuerSet, KeyFamily};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::encoding::fingerprint;
use crate::error::Chain;
use crate::http::server::Listener;
use crate::http::settings::Limits;
use crate::init::{InitOptions, init};
use crate::inventory::Gate;
use crate::metrics::Metrics;
use crate::policy::{SanKinds, Template};
use crate::rate::{Concurrency, Costly, Limiter, Rate};
use crate::revocation::{Crls, Ocsp};
use crate::scep::ScepService;
use crate::scep::service::Admission;
use crate::store::{BackendKind, Backing, Lease};
use crate::validator::Validator;

/// What request handlers share (every field an `Arc` or as cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub ca: Arc<Ca>,
    pub backing: Backing,
    pub crls: Arc<Crls>,
    pub ocsp: Arc<Ocsp>,
    pub rotation: Arc<Rotation>,
    pub acme: Arc<AcmeService>,
    pub scep: Arc<ScepService>,
    pub template: Arc<Template>,
    pub metrics: Arc<Metrics>,
    pub admin_token: TokenHash,
    pub costly: Costly,
}

/// Each handler extracts only the part of the state it needs (`State<Arc<AcmeService>>`,
/// …): only this module knows them all.
macro_rules! sub_states {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(impl axum::extract::FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        })*
    };
}

impl axum::extract::FromRef<AppState> for crate::api::auth::Tokens {
    fn from_ref(state: &AppState) -> Self {
        Self {
            admin: state.admin_token.clone(),
            store: Arc::clone(&state.backing.store),
        }
    }
}

sub_states!(
    ca: Arc<Ca>,
    backing: Backing,
    crls: Arc<Crls>,
    ocsp: Arc<Ocsp>,
    rotation: Arc<Rotation>,
    acme: Arc<AcmeService>,
    scep: Arc<ScepService>,
    template: Arc<Template>,
    metrics: Arc<Metrics>,
    costly: Costly,
);

/// Shortest admin token accepted at start-up.
const MIN_ADMIN_TOKEN: usize = 32;

/// Descriptors kept for everything that is not a client connection: the store's files, the
/// webhooks', validators' and PKCS#11 module's sockets, logs.
const RESERVED_FILES: u64 = 256;

/// Raises the soft open-files limit to the hard one (every connection is a descriptor; the
/// usual soft default of 1024 is below `limits.max_connections`), and lowers the connection
/// cap to what the hard limit allows, so that running out of descriptors never stops accept.
fn fit_open_files(limits: &mut Limits) {
    let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-files limit");
            return;
        }
    };
    let fits = open_files.saturating_sub(RESERVED_FILES).max(1);
    if (limits.max_connections as u64) > fits {
        tracing::warn!(
            open_files,
            max_connections = fits,
            "limits.max_connections lowered to fit the open-files limit"
        );
        limits.max_connections = fits as usize;
    }
}

/// Where `serve` runs from.
pub struct ServeOptions {
    pub data: DataDir,
    pub config: Option<PathBuf>,
}

/// Runs the service until `shutdown` is cancelled, then drains and flushes.
pub async fn serve(opts: ServeOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dir = &opts.data;
    if !dir.is_initialised() {
        anyhow::ensure!(
            dir.is_vacant(),
            "{} is not an enrollca data directory (no ca/roots.pem) and is not empty",
            dir.path().display()
        );
        eprintln!(
            "enrollca: initialising a development CA in {} (use `enrollca init` for a production set-up)",
            dir.path().display()
        );
        init(dir, InitOptions::default()).await?;
    }
    // An explicit --config must exist; the data directory's own config.toml is optional.
    let config_path = opts
        .config
        .clone()
        .or_else(|| Some(dir.config()).filter(|p| p.is_file()));
    let mut config = Config::load(config_path.as_deref(), std::env::vars())?;
    crate::logging::init_logging(&config.log);
    fit_open_files(&mut config.limits);

    // Bind first: a port in use fails before any key is touched, and an ephemeral port (0)
    // is known before it is written into certificates.
    let listeners = Listeners {
        http: bind("listen.http", config.listen.http)?,
        https: bind("listen.https", config.listen.https)?,
    };
    run(dir, config, listeners, Arc::new(SystemClock), shutdown).await
}

/// Listeners already bound, by `serve` from the configuration or by a caller that chose them.
pub struct Listeners {
    pub http: TcpListener,
    pub https: TcpListener,
}

/// Serves the initialised data directory `dir` on `listeners` until `shutdown` is cancelled,
/// then drains and flushes. Every service reads the time from `clock`; `config.listen` takes
/// the listeners' addresses (the URLs written into certificates and payloads).
pub async fn run(
    dir: &DataDir,
    mut config: Config,
    listeners: Listeners,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Listeners { http, https } = listeners;
    let (http_addr, https_addr) = (http.local_addr()?, https.local_addr()?);
    config.listen.http = http_addr;
    config.listen.https = https_addr;

    let pass = passphrase(config.ca.passphrase_file.as_deref())?;
    let keys = KeyAccess {
        passphrase: pass.clone(),
        pkcs11: pkcs11_access(&config.ca)?.map(Arc::new),
    };
    crate::ca::rotation::recover_root_rotation(dir, &keys)
        .context("completing an interrupted root rotation")?;
    let store = crate::store::open(&config.store, &dir.db())
        .await
        .map_err(|e| match config.store.backend {
            BackendKind::Sled => anyhow::anyhow!(
                "{e} (is another enrollca process using {}?)",
                dir.path().display()
            ),
            BackendKind::Postgres => anyhow::anyhow!("opening the PostgreSQL store: {}", Chain(&e)),
        })?
        .serving();
    let backing = Backing {
        store: store.clone(),
        clock,
    };
    let metrics = Arc::new(Metrics::default());
    let ca = Arc::new(open_ca(dir, &config, &keys, backing.clone(), metrics.clone()).await?);
    if let Some(rsa) = ca.issuers().active(KeyFamily::Rsa) {
        // SCEP decrypts with the RSA issuer's key, which a token will not do for us here.
        rsa.key()
            .pkey()
            .map_err(|e| anyhow::anyhow!("the SCEP (rsa) issuer {}: {e}", rsa.id()))?;
    }
    let issuers = ca.issuers();
    let ecdsa = issuers
        .active(KeyFamily::Ecdsa)
        .context("no active ECDSA issuer")?;
    let tls = crate::http::tls::server_config(
        &config.tls,
        dir,
        pass.as_ref(),
        (ecdsa.cert_der(), ecdsa.key()),
    )?;

    let trust = crate::ca::Trust::new(dir.read_roots()?, dir.read_cross()?);
    let roots = trust.roots().to_vec();
    ca.set_trust(trust);
    let token = std::fs::read_to_string(dir.admin_token())
        .with_context(|| format!("reading {}", dir.admin_token().display()))?;
    // Tokens are compared trimmed: an empty file would admit an empty bearer token.
    anyhow::ensure!(
        token.trim().len() >= MIN_ADMIN_TOKEN,
        "{} must hold a token of at least {MIN_ADMIN_TOKEN} characters (init writes one of 43)",
        dir.admin_token().display()
    );
    // Operators may issue whatever names they like; SCEP clients only what was stated.
    let template = Arc::new(Template::device(
        config.issuance.lifetime,
        config.issuance.backdate,
    ));
    let scep_template = Arc::new(Template::scep(
        config.issuance.lifetime,
        config.issuance.backdate,
        SanKinds::only(&config.scep.allowed_sans),
    ));
    let webhook = config
        .scep
        .webhook_url
        .clone()
        .map(|url| Validator::new(url, config.scep.webhook_timeout))
        .transpose()
        .context("scep.webhook_url: cannot set up the HTTP client")?;
    let crls = Arc::new(Crls::new((ca.clone(), backing.clone()), CRL_LIFETIME));
    let ocsp = Arc::new(Ocsp::new((ca.clone(), backing.clone()), OCSP_VALIDITY));
    let rotation = Arc::new(Rotation::new(
        ca.clone(),
        dir.clone(),
        keys.clone(),
        config.listen.public_url(),
    ));
    let scep = Arc::new(ScepService::new(
        format!("{}/scep", config.listen.public_url()),
        (ca.clone(), backing.clone()),
        crls.clone(),
        metrics.clone(),
        scep_template,
        Admission {
            approval: config.scep.approval,
            challenge: config.scep.challenge.clone(),
            webhook,
            allow_single_des: config.scep.allow_single_des,
        },
    ));
    let (status_list, revocations) = (StatusList::default(), StatusList::default());
    let mut acme = acme_service(
        &config,
        ca.clone(),
        backing.clone(),
        status_list.clone(),
        revocations.clone(),
    )?;
    if let Some(source) = &config.acme.attestation_revocations {
        tokio::spawn(crate::attest::status::follow(
            source.clone(),
            config.acme.attestation_revocations_refresh,
            revocations,
            shutdown.clone(),
        ));
    }
    let android = FormatName::AndroidKey;
    if config
        .acme
        .profiles
        .values()
        .any(|p| p.attests() && p.attestation_formats.contains(&android))
    {
        tokio::spawn(crate::attest::status::follow(
            config.acme.android_status_list.clone(),
            config.acme.android_status_refresh,
            status_list,
            shutdown.clone(),
        ));
    }
    // A node of a cluster: a client's requests may reach any node, so the nonces are the
    // cluster's; and what other nodes revoke or rotate reaches this one through the feed.
    if config.store.backend == BackendKind::Postgres {
        let shared = Nonces::shared(&backing)
            .await
            .context("reading the shared ACME nonce key")?;
        acme = acme.with_nonces(shared);
        tokio::spawn(crate::ca::follow::follow(
            ca.clone(),
            rotation.clone(),
            store.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(crate::ca::presence::announce(
            ca.clone(),
            backing.clone(),
            shutdown.clone(),
        ));
    }
    let acme = Arc::new(acme);
    let state = AppState {
        ca,
        backing: backing.clone(),
        crls,
        ocsp,
        rotation,
        acme,
        scep,
        template,
        metrics,
        admin_token: TokenHash::of(&token),
        costly: Costly {
            rate: Arc::new(Limiter::new(Rate {
                per_second: config.limits.client_rate,
                burst: config.limits.client_burst,
            })),
            in_flight: Arc::new(Concurrency::new(config.limits.client_concurrency)),
        },
    };

    // Periodic work runs once per cluster: on the node holding this lease.
    let periodic = match config.store.backend {
        BackendKind::Sled => Lease::alone(),
        BackendKind::Postgres => Lease::contend("periodic-work", backing.clone(), shutdown.clone()),
    };
    if let (Some(url), Some(secret)) = (&config.events.webhook_url, &config.events.webhook_secret) {
        let webhook =
            crate::notify::Webhook::new(url.clone(), secret, store.clone(), periodic.clone())
                .context("events.webhook_url: cannot set up the HTTP client")?;
        tokio::spawn(webhook.run(shutdown.clone()));
    }
    let expiring_before = time::Duration::try_from(config.events.expiring_before)
        .context("events.expiring_before is out of range")?;
    tokio::spawn(sweep(
        state.backing.clone(),
        state.acme.clone(),
        expiring_before,
        periodic,
        shutdown.clone(),
    ));
    let metrics = state.metrics.clone();
    let (http_router, https_router) = router::routers(state, config.listen.api_on_http);
    let plain = Listener {
        tls: None,
        limits: config.limits.clone(),
        slots: Arc::new(Semaphore::new(config.limits.max_connections)),
        metrics: Some(metrics),
    };
    let tls = Listener {
        tls: Some(tokio_rustls::TlsAcceptor::from(tls)),
        ..plain.clone()
    };
    let servers = [
        tokio::spawn(crate::http::server::serve(
            http,
            plain,
            http_router,
            shutdown.clone(),
        )),
        tokio::spawn(crate::http::server::serve(
            https,
            tls,
            https_router,
            shutdown.clone(),
        )),
    ];

    println!("enrollca {} ready", env!("CARGO_PKG_VERSION"));
    let api_where = if config.listen.api_on_http {
        "API /api/v1 on both"
    } else {
        "API /api/v1 on https only"
    };
    println!(
        "  http   http://{http_addr}   (SCEP /scep, CRL /crl, OCSP /ocsp, /healthz, /metrics)"
    );
    println!("  https  https://{https_addr}  (ACME /acme/<profile>/directory; {api_where})");
    println!("  root   SHA256 {}", fingerprint(&roots[0]));
    println!("  roots  http://{http_addr}/roots.pem");
    println!("  admin token in {}", dir.admin_token().display());
    tracing::info!(%http_addr, %https_addr, data = %dir.path().display(), "listening");

    for server in servers {
        server.await.context("listener task failed")?;
    }
    store.flush().await?;
    tracing::info!("stopped; store flushed");
    Ok(())
}

/// Loads the issuers the store lists (keys from the data directory) into a ready `Ca`.
pub async fn open_ca(
    dir: &DataDir,
    config: &Config,
    keys: &KeyAccess,
    backing: Backing,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Ca> {
    let public_url = config.listen.public_url();
    let mut issuers = Vec::new();
    for record in backing.store.issuers().await? {
        let issuer = Issuer::load(&record, dir.path(), keys, &public_url).with_context(|| {
            match config.store.backend {
                BackendKind::Sled => format!("loading issuer {}", record.id),
                // The store is the cluster's; the keys are this node's.
                BackendKind::Postgres => format!(
                    "loading issuer {} ({}, {:?}) that the database records: this node does not \
                     hold its key ({}); every node needs the cluster's CA keys (a copy of the \
                     first node's data directory, or the same PKCS#11 token)",
                    record.id, record.family, record.state, record.key_file
                ),
            }
        })?;
        issuers.push(issuer);
    }
    let issuers = IssuerSet::new(issuers)?;
    Ok(Ca::new(issuers, backing.store, backing.clock, metrics))
}

/// The PKCS#11 module and PIN, when CA keys may live in a token. The PIN comes from
/// `ENROLLCA_CA_PKCS11_PIN` or `ca.pkcs11_pin_file`, never from the command line.
fn pkcs11_access(ca: &crate::config::Ca) -> anyhow::Result<Option<Pkcs11Access>> {
    let Some(module) = &ca.pkcs11_module else {
        return Ok(None);
    };
    let pin = match (std::env::var("ENROLLCA_CA_PKCS11_PIN"), &ca.pkcs11_pin_file) {
        (Ok(pin), _) => pin,
        (Err(_), Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("ca.pkcs11_pin_file {}", file.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (Err(_), None) => anyhow::bail!(
            "ca.pkcs11_module is set but no PIN: set ENROLLCA_CA_PKCS11_PIN or ca.pkcs11_pin_file"
        ),
    };
    Ok(Some(Pkcs11Access::new(
        module.clone(),
        crate::secret::Secret::new(pin),
    )))
}

/// The ACME service with one profile per configured directory.
fn acme_service(
    config: &Config,
    ca: Arc<Ca>,
    backing: Backing,
    status_list: StatusList,
    revocations: StatusList,
) -> anyhow::Result<AcmeService> {
    let mut profiles = Vec::new();
    for (name, p) in &config.acme.profiles {
        let lifetime = p.lifetime.unwrap_or(config.issuance.lifetime);
        let backdate = config.issuance.backdate;
        let template = if p.attests() {
            Template::attested(name, lifetime, backdate, p.subject_serial)
        } else {
            Template::server(name, lifetime, backdate)
        };
        let inventory = match (p.device_inventory, &p.inventory_webhook_url) {
            (DeviceInventory::Registered, _) => Gate::Registered(backing.store.clone()),
            (DeviceInventory::Webhook, Some(url)) => Gate::Webhook(
                Validator::new(url.clone(), config.scep.webhook_timeout)
                    .context("setting up the inventory webhook client")?,
            ),
            (DeviceInventory::Webhook, None) => {
                anyhow::bail!("profile `{name}`: no inventory_webhook_url")
            }
            (DeviceInventory::None, _) => Gate::Open,
        };
        profiles.push(Profile {
            name: name.clone(),
            config: p.clone(),
            template: Arc::new(template),
            inventory,
        });
    }
    let mut apple = Apple::new(Vec::new()).context("acme.attestation_roots")?;
    let mut extra = Vec::new();
    for path in &config.acme.attestation_roots {
        let pem = std::fs::read(path)
            .with_context(|| format!("acme.attestation_roots: reading {}", path.display()))?;
        let certs = crate::encoding::pem_certs(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .with_context(|| {
                format!(
                    "acme.attestation_roots: {} holds no PEM certificate",
                    path.display()
                )
            })?;
        apple
            .trust(certs.clone())
            .with_context(|| format!("acme.attestation_roots: {}", path.display()))?;
        extra.extend(certs);
    }
    let android =
        AndroidKey::new(&extra, status_list).context("acme.attestation_roots (android-key)")?;
    let yubikey = YubiKeyPiv::new(&extra).context("acme.attestation_roots (step)")?;
    let tpm = Tpm::new(&extra).context("acme.attestation_roots (tpm)")?;
    let mut attestation = Verifier::new(vec![
        Arc::new(apple),
        Arc::new(android),
        Arc::new(yubikey),
        Arc::new(tpm),
    ]);
    if config.acme.attestation_revocations.is_some() {
        attestation = attestation.with_revocations(revocations);
    }
    let validators =
        Validators::new(&config.acme).context("setting up the challenge validators")?;
    Ok(AcmeService::new(
        ca,
        backing,
        profiles,
        validators,
        attestation,
        config.listen.public_https_url(),
        Rate {
            per_second: config.limits.account_order_rate,
            burst: config.limits.account_order_burst,
        },
    ))
}

/// thisUpdate to nextUpdate of every CRL; a new one is signed after half of it, or as soon as
/// a certificate of its issuer is revoked.
const CRL_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// thisUpdate to nextUpdate of OCSP responses; cached ones are signed again after half.
const OCSP_VALIDITY: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// How often expiries are noted and expired one-time challenges and ACME orders deleted (so
/// an `expiring` or `expired` event comes at most this late).
const SWEEP: std::time::Duration = std::time::Duration::from_secs(600);

/// Abandoned ACME accounts are looked for every this many sweeps (daily): it reads every
/// account, and an account is abandoned only after weeks.
const ACCOUNT_SWEEP_EVERY: u32 = 144;

/// Periodically: notes certificates that have expired or will expire within
/// `expiring_before` in the event feed, and deletes expired one-time challenges, ACME orders
/// and abandoned ACME accounts, so minting a challenge per device, an order per renewal or
/// accounts by the thousand does not grow the store without bound.
async fn sweep(
    Backing { store, clock }: Backing,
    acme: Arc<AcmeService>,
    expiring_before: time::Duration,
    mut lease: Lease,
    shutdown: CancellationToken,
) {
    // The first sweep as soon as this node may run it.
    tokio::select! {
        () = lease.acquired() => {}
        () = shutdown.cancelled() => return,
    }
    let mut tick = tokio::time::interval(SWEEP);
    let mut sweeps = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !lease.held() {
                    continue;
                }
                if sweeps.is_multiple_of(ACCOUNT_SWEEP_EVERY) {
                    match acme.purge_abandoned_accounts().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(purged = n, "abandoned ACME accounts deleted"),
                        Err(e) => tracing::warn!(error = %e, "could not purge abandoned ACME accounts"),
                    }
                }
                sweeps = sweeps.wrapping_add(1);
                match store.purge_challenges(clock.now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired one-time challenges deleted"),
                    Err(e) => tracing::warn!(error = %e, "could not purge expired challenges"),
                }
                match store.expire(clock.now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(count = n, "expired certificates noted in the feed"),
                    Err(e) => tracing::warn!(error = %e, "could not note expired certificates"),
                }
                if !expiring_before.is_zero() {
                    match store.expiring(clock.now(), expiring_before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(count = n, "expiring certificates noted in the feed"),
                        Err(e) => tracing::warn!(error = %e, "could not note expiring certificates"),
                    }
                }
                match acme.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired ACME orders deleted"),
                    Err(e) => tracing::warn!(error = %e, "could not purge expired ACME orders"),
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Connections the kernel may complete before they are accepted (it caps this at
/// `net.core.somaxconn`). `TcpListener::bind` asks for 128: a fleet reconnecting at once, or
/// the connection cap being reached, overflows that, and a client whose handshake completed
/// into a full queue is silently dropped while believing itself connected.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(key: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().with_context(|| format!("{key} {addr}: cannot listen"))
}
