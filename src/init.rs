//! `enrollca init`: create a data directory with a CA hierarchy, generated or imported.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use rand::RngCore;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::hierarchy::{self, Made};
use crate::ca::{CaKey, IssuerId, KeyFamily, KeySpec, Passphrase};
use crate::datadir::DataDir;
use crate::encoding::{pem_certs, to_pem};
use crate::store::{BackendKind, IssuerRecord, IssuerState, StoreSettings};

/// Where a CA comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Generate(KeySpec),
    /// Certificate and key files. A root may come without its key (kept offline); then the
    /// issuing CAs must be imported too.
    Import {
        cert: PathBuf,
        key: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub root: Source,
    pub rsa_issuer: Source,
    pub ecdsa_issuer: Source,
    pub organization: String,
    pub passphrase: Option<Passphrase>,
    /// Recorded in the new config.toml so `serve` finds the passphrase again.
    pub passphrase_file: Option<PathBuf>,
    /// Where the CA state goes (the issuers, the admin token's record): the data directory's
    /// sled, or a PostgreSQL database that must hold no CA yet.
    pub store: StoreSettings,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            root: Source::Generate(KeySpec::EcP384),
            rsa_issuer: Source::Generate(KeySpec::Rsa2048),
            ecdsa_issuer: Source::Generate(KeySpec::EcP256),
            organization: "enrollca".into(),
            passphrase: None,
            passphrase_file: None,
            store: StoreSettings::default(),
        }
    }
}

/// What init made, for the operator.
#[derive(Debug)]
pub struct InitReport {
    pub root_fingerprint: String,
    pub issuers: Vec<(KeyFamily, IssuerId)>,
}

/// Builds the directory beside `dir` and renames it into place, so a failed init leaves
/// nothing behind and an existing directory is never touched.
pub async fn init(dir: &DataDir, opts: InitOptions) -> anyhow::Result<InitReport> {
    if !dir.is_vacant() {
        bail!(
            "{} already exists and is not empty; refusing to overwrite it",
            dir.path().display()
        );
    }
    let staging = DataDir::new(staging_path(dir.path()));
    if staging.path().exists() {
        std::fs::remove_dir_all(staging.path()).ok();
    }
    let result = build(&staging, &opts).await;
    match result {
        Ok(report) => {
            if dir.path().exists() {
                std::fs::remove_dir(dir.path())
                    .with_context(|| format!("replacing empty {}", dir.path().display()))?;
            }
            // Nothing of a data directory is there after a power cut unless synced: its
            // files, the directories naming them, and the rename that publishes it.
            crate::durable::sync_tree(staging.path())
                .with_context(|| format!("syncing {}", staging.path().display()))?;
            crate::durable::rename(staging.path(), dir.path()).with_context(|| {
                format!("moving the new data directory to {}", dir.path().display())
            })?;
            Ok(report)
        }
        Err(e) => {
            std::fs::remove_dir_all(staging.path()).ok();
            Err(e)
        }
    }
}

fn staging_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or("enrollca-data".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(".{name}.init-{}", std::process::id()))
}

async fn build(dir: &DataDir, opts: &InitOptions) -> anyhow::Result<InitReport> {
    dir.create_tree()
        .with_context(|| format!("creating {}", dir.path().display()))?;
    let pass = opts.passphrase.as_ref();
    let suffix = hex::encode(rand::random::<[u8; 3]>());
    let org = opts.organization.as_str();
    // Initialisation is an operator's command, on the system's clock.
    let now = OffsetDateTime::now_utc();

    let (root_der, root_key) = match &opts.root {
        Source::Generate(spec) => {
            let Made { cert_der, key } =
                hierarchy::root(*spec, &format!("{org} Root CA {suffix}"), org, now)?;
            (cert_der, Some(key))
        }
        Source::Import { cert, key } => {
            let der = read_one_cert(cert)?;
            let key = key.as_deref().map(|k| read_key(k, pass)).transpose()?;
            check_root(&der, key.as_ref())?;
            (der, key)
        }
    };
    std::fs::write(dir.roots(), to_pem("CERTIFICATE", &root_der))?;
    if let Some(key) = &root_key {
        key.save(&dir.root_key(), pass)?;
    }

    let store = crate::store::open(&opts.store, &dir.db()).await?.direct();
    if opts.store.backend == BackendKind::Postgres {
        let held = store.issuers().await?.len();
        ensure!(
            held == 0,
            "the PostgreSQL database already holds a CA ({held} issuers): another node was \
             initialised on it; copy that node's data directory instead (README, \"Several nodes\")"
        );
    }
    let mut issuers = Vec::new();
    for (family, source, name) in [
        (KeyFamily::Rsa, &opts.rsa_issuer, "SCEP"),
        (KeyFamily::Ecdsa, &opts.ecdsa_issuer, "ACME"),
    ] {
        let (Made { cert_der, key }, intermediates) = match source {
            Source::Generate(spec) => {
                ensure!(
                    spec.family() == family,
                    "the {family} issuer needs a {family} key type"
                );
                let root_key = root_key.as_ref().context(
                    "the root key is not available: import the issuing CAs as well (--rsa-issuer-cert/--ecdsa-issuer-cert)",
                )?;
                let made = hierarchy::issuing_ca(
                    &root_der,
                    root_key,
                    CaKey::generate(*spec)?,
                    &format!("{org} {name} Issuing CA {suffix}"),
                    org,
                    now,
                )?;
                (made, Vec::new())
            }
            Source::Import { cert, key } => {
                let (cert_der, intermediates) = read_chain(cert, &root_der)?;
                let key_path = key
                    .as_deref()
                    .context("an imported issuing CA needs its key file")?;
                let key = read_key(key_path, pass)?;
                ensure!(
                    key.family() == family,
                    "{}: expected a {family} key",
                    key_path.display()
                );
                hierarchy::check_path(&cert_der, &intermediates, &root_der)
                    .map_err(|why| anyhow::anyhow!("{}: {why}", cert.display()))?;
                (Made { cert_der, key }, intermediates)
            }
        };
        let id = IssuerId::for_spki(&key.spki_der());
        key.save(&dir.path().join(DataDir::issuer_key_rel(&id)), pass)?;
        std::fs::write(dir.issuer_cert(&id), to_pem("CERTIFICATE", &cert_der))?;
        store
            .put_issuer(IssuerRecord {
                id: id.clone(),
                family,
                state: IssuerState::Active,
                cert_der,
                intermediates: intermediates.into_iter().map(Into::into).collect(),
                key_file: DataDir::issuer_key_rel(&id),
                created_at: now,
            })
            .await?;
        issuers.push((family, id));
    }
    store.flush().await?;
    drop(store);

    let mut token = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut token);
    use base64::Engine;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
    crate::durable::create_private(&dir.admin_token(), format!("{token}\n").as_bytes())?;
    std::fs::write(
        dir.config(),
        default_config(opts.passphrase_file.as_deref(), &opts.store),
    )?;

    Ok(InitReport {
        root_fingerprint: crate::encoding::fingerprint(&root_der),
        issuers,
    })
}

fn default_config(passphrase_file: Option<&Path>, store: &StoreSettings) -> String {
    let section = match store.backend {
        BackendKind::Sled => "[store]\nbackend = \"sled\"               # or \"postgres\" with url: several nodes (README)\n# url = \"postgres://enrollca@db.internal/enrollca\"   # or ENROLLCA_STORE_URL\n".to_owned(),
        BackendKind::Postgres => {
            let url = store.url.as_ref().map(|u| u.expose());
            // A URL with a password stays out of the file: the nodes get it from their
            // environment (ENROLLCA_STORE_URL) or from password_file.
            let url = match url.map(|u| (u, crate::store::PgTarget::parse(u))) {
                Some((u, Ok(t))) if t.config.get_password().is_none() => format!("url = {u:?}\n"),
                _ => "# url: set ENROLLCA_STORE_URL (it holds a password)\n".to_owned(),
            };
            let password = store.password_file.as_ref().map_or(String::new(), |p| {
                format!("password_file = {:?}\n", p.display().to_string())
            });
            format!("[store]\nbackend = \"postgres\"\n{url}{password}")
        }
    };
    let store = format!("{section}pool_size = {}\n", store.pool_size);
    let ca = match passphrase_file {
        Some(p) => format!("[ca]\npassphrase_file = {:?}\n", p.display().to_string()),
        None => "[ca]\n# passphrase_file = \"/run/secrets/enrollca-ca-passphrase\"\n".into(),
    };
    format!(
        r#"# enrollca configuration. Every key can be overridden by ENROLLCA_<SECTION>_<KEY>.
# See README.md, "Configuration", for the reference.

[listen]
http = "127.0.0.1:8080"
https = "127.0.0.1:8443"
# public_url = "http://ca.example.com"          # base URL written into certificates
# public_https_url = "https://ca.example.com"
api_on_http = false                # true serves the API on plain HTTP too (loopback-only set-ups)

{ca}
[issuance]
lifetime = "365days"
backdate = "5m"

[scep]
# challenge = "change-me"
# webhook_url = "http://mdm.internal/scep/validate"
webhook_timeout = "5s"
approval = "automatic"             # or "manual": enrolments wait for `enrollca scep approve`
allowed_sans = []                  # SAN kinds a request may name itself: "dns", "ip", "email", "uri"
allow_single_des = true            # false refuses DES-encrypted requests (micromdm scepclient sends only DES)

[acme]
http01_port = 80
tls_alpn01_port = 443
# dns01_resolver = "127.0.0.1:53"  # DNS server asked for dns-01 TXT records; default: the system's
attestation_roots = []            # PEM roots trusted beside Apple's and Google's, for device-attest-01
android_status_list = "https://android.googleapis.com/attestation/status"  # revoked Android attestation keys: URL or file
android_status_refresh = "1h"     # read again this often (only when a profile accepts android-key)
# attestation_revocations = "/etc/enrollca/revoked-attestations.json"  # your own withdrawn attestation certificates (any format), Google's list format: file or URL
attestation_revocations_refresh = "1h"  # read again this often

# One directory per profile: https://<host>/acme/<name>/directory.
[acme.profiles.default]
dns_names = ["localhost"]       # each allows itself and every name under it
ip_addresses = ["127.0.0.1", "::1"]
challenges = ["http-01"]         # and/or "tls-alpn-01", "dns-01" (wildcards, not localhost)
issuer = "ecdsa"
external_account_required = false
internal_targets = ["127.0.0.1/32", "::1/128"]  # internal addresses http-01/tls-alpn-01 may reach
# lifetime = "90days"           # default: issuance.lifetime
# terms_of_service = "https://ca.example.com/terms"

# Apple Managed Device Attestation: permanent-identifier orders, device-attest-01 only.
[acme.profiles.device]
dns_names = []
ip_addresses = []
challenges = ["device-attest-01"]
issuer = "ecdsa"
external_account_required = false
attestation_key_types = ["p256", "p384"]  # add "rsa" (2048 to 4096 bits) for TPM or YubiKey RSA keys
attestation_formats = ["apple"]  # add "android-key" (Android), "step" (YubiKey PIV), "tpm" (TPM 2.0); see `enrollca profile`
permanent_identifier = "serial-or-udid"  # or "client-identifier": one-time values the MDM mints (POST /api/v1/acme/client-identifiers)
require_attestation = true       # false (client-identifier only): a device that cannot attest enrols on its ClientIdentifier alone
device_inventory = "registered"  # devices the MDM registered (PUT /api/v1/devices/ID); or "webhook"
# inventory_webhook_url = "https://mdm.internal/enrollca/device"  # with "webhook": 2xx admits
subject_serial = false           # true: the attested serial number goes into the subject
# [acme.profiles.device.android]  # with "android-key":
# security_level = "trusted-environment"  # or "strongbox"
# boot_states = ["verified"]      # add "self-signed" for an owner-signed OS (GrapheneOS); the bootloader must be locked regardless
# identifier = "serial"           # the attested ID the order names: "serial", "imei" or "meid"
# [acme.profiles.device.yubikey]  # with "step":
# require_pin = false             # true: only keys that demand the PIN (policy once/always)
# require_touch = false           # true: only keys that demand a touch (policy always/cached)
# [acme.profiles.device.tpm]      # with "tpm" (its AIK CA's or TPM makers' roots in attestation_roots):
# identifier = "permanent-identifier"  # the AIK certificate's otherName naming the device, or "hardware-module-name"
# accept_sha1 = false             # true: accept alg -65535 (RS1), as Windows' TPM attestations sign

[events]
# webhook_url = "https://mdm.internal/enrollca/events"   # every event POSTed, in order
# webhook_secret = "change-me"                            # HMAC-SHA256 key of the signature
expiring_before = "30days"        # an `expiring` event this long before a certificate's notAfter; "0s": none

[limits]
header_read_timeout = "10s"        # a request's headers (and a new connection's first request)
idle_timeout = "60s"               # a connection with nothing in flight is closed after this
request_timeout = "90s"            # a request's whole time, body included: 503 after it
max_connections = 4096             # both listeners together; more wait in the backlog
http2_max_streams = 100            # concurrent streams per HTTP/2 connection
shutdown_timeout = "10s"           # on SIGTERM, in-flight requests get this long
client_rate = 20.0                 # SCEP PKIOperation + ACME newAccount a second per address (0: off)
client_burst = 200                 # ... and at once
client_concurrency = 8             # SCEP PKIOperations in flight per address (0: no bound)
account_order_rate = 10.0          # ACME newOrder a second per account (0: off)
account_order_burst = 100

[log]
level = "info"
format = "text"

{store}"#
    )
}

/// An issuing CA's certificate file: the CA first, then the intermediates above it, nearest
/// first (a trailing copy of the root is dropped; the CA may be the root itself).
fn read_chain(path: &Path, root_der: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut certs = pem_certs(&pem).with_context(|| format!("{}: not PEM", path.display()))?;
    ensure!(!certs.is_empty(), "{}: no certificate", path.display());
    let ca = certs.remove(0);
    certs.retain(|c| c != root_der);
    Ok((ca, certs))
}

fn read_one_cert(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut certs = pem_certs(&pem).with_context(|| format!("{}: not PEM", path.display()))?;
    ensure!(
        certs.len() == 1,
        "{}: expected one certificate, found {}",
        path.display(),
        certs.len()
    );
    Ok(certs.remove(0))
}

fn read_key(path: &Path, pass: Option<&Passphrase>) -> anyhow::Result<CaKey> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(CaKey::from_pem(&pem, pass, &path.display().to_string())?)
}

fn parse(der: &[u8]) -> anyhow::Result<X509Certificate<'_>> {
    Ok(X509Certificate::from_der(der)
        .map_err(|e| anyhow::anyhow!("unparsable certificate: {e}"))?
        .1)
}

fn check_root(der: &[u8], key: Option<&CaKey>) -> anyhow::Result<()> {
    let cert = parse(der)?;
    ensure!(cert.is_ca(), "the root certificate is not a CA");
    cert.verify_signature(None)
        .map_err(|_| anyhow::anyhow!("the root certificate is not self-signed"))?;
    if let Some(key) = key {
        ensure!(
            cert.public_key().raw == key.spki_der().as_slice(),
            "the root key does not match the root certificate"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_config_is_the_built_in_default() {
        let written =
            crate::config::Config::parse(&default_config(None, &StoreSettings::default())).unwrap();
        assert_eq!(written, crate::config::Config::default());
    }
}
