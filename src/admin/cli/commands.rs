//! What each command does: through the running server's API, or on the data directory when
//! no server answers (`admin::Backend`).

use std::path::PathBuf;

use anyhow::Context;

use tokio_util::sync::CancellationToken;

use super::{
    AcmeCommand, AcmeFormat, CaCommand, CertCommand, ChallengeCommand, Cli, Command, InitArgs,
    PayloadFormat, ProfileCommand, RotateCommand, ScepCommand, StoreCommand, TokenCommand,
};
use crate::admin::{Backend, data_dir, dir_config};
use crate::api::views::{CertView, ChallengeBody, IssueBody};
use crate::api::{ClientIdentifierBody, EabBody, PrepareBody, RootBody, TokenBody};
use crate::app::{ServeOptions, serve};
use crate::attest::FormatName;
use crate::ca::passphrase;
use crate::ca::{KeyFamily, KeySpec};
use crate::init::{InitOptions, Source, init};
use crate::secret::Secret;
use crate::store::{BackendKind, CertQuery, IssuerState, Opened, StoreSettings};

pub(super) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, data } => {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            serve(
                ServeOptions {
                    data: data_dir(Some(data.data)),
                    config,
                },
                shutdown,
            )
            .await
        }
        Command::Init(args) => run_init(args).await,
        Command::Ca(CaCommand::Root(data)) => {
            let dir = data_dir(Some(data.data));
            let pem = std::fs::read_to_string(dir.roots())
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.roots().display()))?;
            print!("{pem}");
            Ok(())
        }
        Command::Ca(CaCommand::List(t)) => {
            let backend = Backend::connect(&data_dir(Some(t.data.data)), t.url).await?;
            let issuers = backend.issuers().await?;
            if t.json {
                println!("{}", serde_json::to_string_pretty(&issuers)?);
            } else {
                println!(
                    "{:<16}  {:<6}  {:<8}  {:<20}  SUBJECT",
                    "ID", "FAMILY", "STATE", "NOT AFTER"
                );
                for i in issuers {
                    println!(
                        "{:<16}  {:<6}  {:<8}  {:<20}  {}",
                        i.id,
                        i.family.to_string(),
                        format!("{:?}", i.state).to_lowercase(),
                        date(i.not_after),
                        i.subject
                    );
                }
            }
            Ok(())
        }
        Command::Ca(CaCommand::Rotate(cmd)) => run_rotate(cmd).await,
        Command::Ca(CaCommand::Retire { target, id }) => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let retired = backend.retire_issuer(&id).await?;
            print_issuer(&retired, target.json)
        }
        Command::Cert(cmd) => run_cert(cmd).await,
        Command::Acme(cmd) => run_acme(cmd).await,
        Command::Scep(cmd) => run_scep(cmd).await,
        Command::Token(cmd) => run_token(cmd).await,
        Command::Profile(cmd) => run_profile(cmd).await,
        Command::Store(cmd) => run_store(cmd).await,
        Command::Challenge(ChallengeCommand::Create {
            target,
            device,
            subject,
            sans,
            ttl,
        }) => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let body = ChallengeBody {
                device,
                subject,
                sans: (!sans.is_empty()).then_some(sans),
                ttl: Some(ttl.into()),
            };
            let minted = backend.create_challenge(&body).await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&minted)?);
            } else {
                println!("{}", minted.challenge);
                eprintln!("expires {}", date(minted.expires_at));
            }
            Ok(())
        }
    }
}

async fn run_token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            target,
            name,
            scopes,
        } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let minted = backend.create_token(&TokenBody { name, scopes }).await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&minted)?);
            } else {
                println!("{}", minted.token.unwrap_or_default());
                eprintln!("token {} ({})", minted.id, minted.name);
            }
        }
        TokenCommand::Revoke { target, id } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            backend.delete_token(&id).await?;
            println!("token {id} withdrawn");
        }
        TokenCommand::List { target } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let list = backend.tokens().await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for t in list.items {
                    let scopes: Vec<String> = t
                        .scopes
                        .iter()
                        .filter_map(|s| serde_json::to_value(s).ok())
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    println!(
                        "{}  {}  {}  {}",
                        t.id,
                        date(t.created_at),
                        t.name,
                        scopes.join(",")
                    );
                }
            }
        }
    }
    Ok(())
}

async fn run_scep(cmd: ScepCommand) -> anyhow::Result<()> {
    let (target, decision) = match cmd {
        ScepCommand::Pending { target } => (target, None),
        ScepCommand::Approve {
            target,
            transaction_id,
        } => (target, Some((transaction_id, true))),
        ScepCommand::Reject {
            target,
            transaction_id,
        } => (target, Some((transaction_id, false))),
    };
    let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
    let Some((id, approve)) = decision else {
        let held = backend.pending().await?;
        if target.json {
            println!("{}", serde_json::to_string_pretty(&held)?);
        } else {
            for h in held.items {
                let device = h.device.as_ref().map_or("-", |d| d.as_str());
                println!(
                    "{}  {}  {device}  {}",
                    h.transaction_id,
                    date(h.received_at),
                    h.subject
                );
            }
        }
        return Ok(());
    };
    let decided = backend.decide(&id, approve).await?;
    if target.json {
        println!("{}", serde_json::to_string_pretty(&decided)?);
    } else {
        match &decided.serial {
            Some(serial) => println!("{id} approved: certificate {serial}"),
            None => println!("{id} {}", decided.state),
        }
    }
    Ok(())
}

async fn run_profile(cmd: ProfileCommand) -> anyhow::Result<()> {
    use crate::payload;
    match cmd {
        ProfileCommand::Acme {
            target,
            format,
            profile,
            client_identifier,
            device,
            key_size,
            subject,
        } => {
            let dir = data_dir(Some(target.data.data));
            let (client_identifier, named) = match (client_identifier, device) {
                (Some(value), _) => (value.clone(), value),
                (None, Some(device)) => {
                    let backend = Backend::connect(&dir, target.url.clone()).await?;
                    let body = ClientIdentifierBody {
                        device: device.clone(),
                        profile: profile.clone(),
                        ttl: None,
                    };
                    let minted = backend.create_client_identifier(&body).await?;
                    (minted.client_identifier, device.to_string())
                }
                (None, None) => unreachable!("clap requires one of them"),
            };
            let config = dir_config(&dir)?;
            let p = config
                .acme
                .profiles
                .get(&profile)
                .ok_or_else(|| anyhow::anyhow!("no ACME profile `{profile}`"))?;
            anyhow::ensure!(
                p.attests(),
                "ACME profile `{profile}` does not offer device-attest-01"
            );
            let subject =
                payload::parse_subject(&subject.unwrap_or_else(|| format!("CN={named}")))?;
            let directory_url = format!(
                "{}/acme/{profile}/directory",
                config.listen.public_https_url()
            );
            let acme = payload::Acme {
                directory_url: &directory_url,
                client_identifier: &client_identifier,
                key_size,
                subject: &subject,
            };
            // Devices that take no Apple payload: the steps their agent takes.
            let accepts = |kind: FormatName| {
                anyhow::ensure!(
                    p.attestation_formats.contains(&kind),
                    "ACME profile `{profile}` does not accept `{}` attestations \
                     (attestation_formats = {:?}): add it first",
                    kind.as_str(),
                    p.attestation_formats
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                );
                Ok(())
            };
            let roots_url = format!("{}/roots.pem", config.listen.public_url());
            let agent = super::guide::Agent {
                directory_url: &directory_url,
                roots_url: &roots_url,
                identifier: &client_identifier,
                subject: &subject,
                profile: p,
            };
            match format {
                AcmeFormat::Plist => print!("{}", payload::to_xml(acme.profile_payload())?),
                AcmeFormat::Ddm => print!("{}", acme.credential().document),
                AcmeFormat::Android => {
                    accepts(FormatName::AndroidKey)?;
                    print!("{}", agent.android());
                }
                AcmeFormat::Yubikey => {
                    accepts(FormatName::Step)?;
                    print!("{}", agent.yubikey());
                }
                AcmeFormat::Tpm => {
                    accepts(FormatName::Tpm)?;
                    print!("{}", agent.tpm());
                }
            }
        }
        ProfileCommand::Scep {
            target,
            format,
            challenge,
            one_time,
            device,
            ttl,
            key_size,
            subject,
        } => {
            let dir = data_dir(Some(target.data.data));
            let config = dir_config(&dir)?;
            let backend = Backend::connect(&dir, target.url).await?;
            let subject = subject.unwrap_or_else(|| match &device {
                Some(device) => format!("CN={device}"),
                None => "CN=enrollca device".to_owned(),
            });
            let challenge = if one_time {
                let body = ChallengeBody {
                    device,
                    subject: Some(subject.clone()),
                    sans: None,
                    ttl: Some(ttl.into()),
                };
                Some(backend.create_challenge(&body).await?.challenge)
            } else {
                challenge
            };
            let issuers = backend.issuers().await?;
            let scep_ca = issuers
                .iter()
                .find(|i| i.family == KeyFamily::Rsa && i.state == IssuerState::Active)
                .ok_or_else(|| anyhow::anyhow!("no active RSA issuer serves SCEP"))?;
            // The SCEP CA, then any intermediates: the last is the one a root signed.
            let top = crate::encoding::pem_certs(scep_ca.pem.as_bytes())?
                .pop()
                .ok_or_else(|| anyhow::anyhow!("issuer {} has no certificate", scep_ca.id))?;
            // Apple compares CAFingerprint with the root of what GetCACert serves: the SCEP
            // CA itself when it is self-signed, else the root above it.
            let roots = backend.roots(&dir).await?;
            let anchor = crate::ca::Trust::new(roots, Vec::new())
                .above(&top)
                .first()
                .cloned()
                .unwrap_or(top);
            let fingerprint = openssl::sha::sha1(&anchor).to_vec();
            let url = format!("{}/scep", config.listen.public_url());
            let subject = payload::parse_subject(&subject)?;
            let scep = payload::Scep {
                url: &url,
                challenge: challenge.as_deref(),
                key_size,
                subject: &subject,
                ca_fingerprint: fingerprint,
            };
            match format {
                PayloadFormat::Plist => print!("{}", payload::to_xml(scep.profile_payload())?),
                PayloadFormat::Ddm => print!("{}", scep.credential().document),
            }
        }
    }
    Ok(())
}

async fn run_rotate(cmd: RotateCommand) -> anyhow::Result<()> {
    match cmd {
        RotateCommand::Prepare {
            target,
            family,
            cert,
            key,
            pkcs11_key,
        } => {
            let read = |p: PathBuf| {
                std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            };
            let body = PrepareBody {
                cert_pem: cert.map(read).transpose()?,
                key_pem: key.map(read).transpose()?,
                pkcs11_key,
            };
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let staged = backend.prepare_issuer(&family.to_string(), &body).await?;
            print_issuer(&staged, target.json)
        }
        RotateCommand::Root { target, key_type } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let root = backend.rotate_root(&RootBody { key_type }).await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&root)?);
            } else {
                println!("new root SHA256 {}", root.sha256_fingerprint);
                print!("{}", root.root_pem);
                eprintln!(
                    "cross certificates: /ca/cross.pem; the old root key is in ca/retired-root-<id>.key: move it offline"
                );
            }
            Ok(())
        }
        RotateCommand::Activate { target, family } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let done = backend.activate_issuer(&family.to_string()).await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&done)?);
                return Ok(());
            }
            print_issuer(&done.activated, false)?;
            print_issuer(&done.retiring, false)
        }
    }
}

fn print_issuer(i: &crate::api::views::IssuerView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(i)?);
    } else {
        println!(
            "{}  {}  {}  {}",
            i.id,
            i.family,
            format!("{:?}", i.state).to_lowercase(),
            i.subject
        );
    }
    Ok(())
}

async fn run_acme(cmd: AcmeCommand) -> anyhow::Result<()> {
    match cmd {
        AcmeCommand::EabKey { target, profile } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let key = backend.create_eab_key(&EabBody { profile }).await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                println!("kid       {}", key.kid);
                println!("hmac key  {}", key.hmac_key);
                println!("directory {}", key.directory);
            }
        }
        AcmeCommand::ClientIdentifier {
            target,
            device,
            profile,
            ttl,
        } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let body = ClientIdentifierBody {
                device,
                profile,
                ttl: Some(ttl.into()),
            };
            let minted = backend.create_client_identifier(&body).await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&minted)?);
            } else {
                println!("client identifier {}", minted.client_identifier);
                println!("device            {}", minted.device);
                println!("expires           {}", minted.expires_at);
                println!("directory         {}", minted.directory);
            }
        }
    }
    Ok(())
}

async fn run_init(a: InitArgs) -> anyhow::Result<()> {
    let import =
        |cert: Option<PathBuf>, key: Option<PathBuf>| cert.map(|cert| Source::Import { cert, key });
    let rsa_spec: KeySpec = format!("rsa{}", a.rsa_bits)
        .parse()
        .map_err(anyhow::Error::msg)?;
    let ec_spec: KeySpec = a.ec_curve.parse().map_err(anyhow::Error::msg)?;
    let opts = InitOptions {
        root: import(a.root_cert, a.root_key).unwrap_or(Source::Generate(a.root_key_type)),
        rsa_issuer: import(a.rsa_issuer_cert, a.rsa_issuer_key)
            .unwrap_or(Source::Generate(rsa_spec)),
        ecdsa_issuer: import(a.ecdsa_issuer_cert, a.ecdsa_issuer_key)
            .unwrap_or(Source::Generate(ec_spec)),
        organization: a.organization,
        passphrase: passphrase(a.passphrase_file.as_deref())?,
        passphrase_file: a
            .passphrase_file
            .map(|p| std::path::absolute(&p))
            .transpose()?,
        // The store is named by the environment (ENROLLCA_STORE_*): there is no config file yet.
        store: crate::config::Config::load(None, std::env::vars())?.store,
    };
    let dir = data_dir(Some(a.data.data));
    let report = init(&dir, opts).await?;
    println!("initialised {}", dir.path().display());
    println!("  root SHA256 {}", report.root_fingerprint);
    for (family, id) in report.issuers {
        println!("  {family} issuer {id}");
    }
    println!("  admin token in {}", dir.admin_token().display());
    Ok(())
}

async fn run_cert(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::List {
            target,
            device,
            status,
            issuer,
            after,
            limit,
        } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let page = backend
                .certificates(CertQuery {
                    device,
                    issuer,
                    status,
                    after,
                    limit,
                    now: None,
                })
                .await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                println!(
                    "{:<32}  {:<8}  {:<16}  {:<20}  {:<20}  SUBJECT",
                    "SERIAL", "STATUS", "ISSUER", "NOT AFTER", "DEVICE"
                );
                for c in &page.items {
                    println!(
                        "{:<32}  {:<8}  {:<16}  {:<20}  {:<20}  {}",
                        c.serial.to_string(),
                        c.status.as_str(),
                        c.issuer,
                        date(c.not_after),
                        c.device.as_ref().map_or("-", |d| d.as_str()),
                        c.subject
                    );
                }
                if let Some(next) = page.next {
                    println!("(more: --after {next})");
                }
            }
            Ok(())
        }
        CertCommand::Show { target, serial } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let cert = backend.certificate(&serial).await?;
            print_cert(&cert, target.json)
        }
        CertCommand::Revoke {
            target,
            serial,
            reason,
        } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let cert = backend.revoke(&serial, reason).await?;
            print_cert(&cert, target.json)
        }
        CertCommand::Issue {
            target,
            csr,
            device,
            issuer,
        } => {
            let backend = Backend::connect(&data_dir(Some(target.data.data)), target.url).await?;
            let body = IssueBody {
                csr: std::fs::read_to_string(&csr)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", csr.display()))?,
                device,
                issuer: if issuer == "rsa" {
                    KeyFamily::Rsa
                } else {
                    KeyFamily::Ecdsa
                },
            };
            let issued = backend.issue(&body).await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&issued)?);
            } else {
                eprintln!("issued serial {}", issued.certificate.serial);
                print!("{}", issued.chain_pem);
            }
            Ok(())
        }
    }
}

fn print_cert(c: &CertView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(c)?);
        return Ok(());
    }
    println!("serial      {}", c.serial);
    println!("status      {}", c.status.as_str());
    if let (Some(at), Some(reason)) = (c.revoked_at, c.revocation_reason) {
        println!("revoked     {} ({reason})", date(at));
    }
    println!("subject     {}", c.subject);
    if !c.sans.is_empty() {
        println!("names       {}", c.sans.join(", "));
    }
    println!(
        "device      {}",
        c.device.as_ref().map_or("-", |d| d.as_str())
    );
    println!("issuer      {}", c.issuer);
    println!(
        "valid       {} .. {}",
        date(c.not_before),
        date(c.not_after)
    );
    println!("protocol    {:?} (profile {})", c.protocol, c.profile);
    if let Some(old) = &c.replaces {
        println!("renews      {old}");
    }
    if !c.attested {
        println!("attested    no");
    }
    if let Some(a) = &c.attestation {
        let facts = [
            ("serial", a.serial.clone()),
            ("udid", a.udid.clone()),
            ("os", a.os_version.clone()),
            ("sepos", a.sepos_version.clone()),
            ("sip", a.sip_status.map(|v| v.to_string())),
            ("secure-boot", a.secure_boot.clone()),
            ("kexts", a.kext_status.map(|v| v.to_string())),
            ("imei", a.imei.clone()),
            ("meid", a.meid.clone()),
            ("patch", a.patch_level.clone()),
            ("level", a.security_level.clone()),
            ("boot", a.verified_boot.clone()),
            ("app", a.attesting_app.clone()),
            ("firmware", a.firmware.clone()),
            ("pin", a.pin_policy.clone()),
            ("touch", a.touch_policy.clone()),
            ("form", a.form_factor.clone()),
            ("tpm", a.tpm_manufacturer.clone()),
            ("tpm-model", a.tpm_model.clone()),
        ];
        let shown: Vec<String> = facts
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        println!("attested    {} ({})", shown.join(" "), a.format);
    }
    if let Some(pem) = &c.pem {
        print!("{pem}");
    }
    Ok(())
}

fn date(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// SIGTERM or Ctrl-C: stop accepting, let in-flight requests finish, flush, exit 0.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested; draining");
    shutdown.cancel();
}

async fn run_store(cmd: StoreCommand) -> anyhow::Result<()> {
    let StoreCommand::Migrate {
        from,
        to,
        password_file,
    } = cmd;
    let dir = data_dir(Some(from));
    let sled = crate::store::SledStore::open(&dir.db()).with_context(|| {
        format!(
            "opening the store in {} (is a server still using it?)",
            dir.path().display()
        )
    })?;
    let settings = StoreSettings {
        backend: BackendKind::Postgres,
        url: Some(Secret::new(to)),
        password_file,
        pool_size: 2,
    };
    settings
        .check()
        .map_err(|(key, why)| anyhow::anyhow!("--to ({key}): {why}"))?;
    let Opened::Postgres(pg) = crate::store::open(&settings, &dir.db()).await? else {
        unreachable!("a postgres backend opens PostgreSQL");
    };
    let tally = crate::store::migrate::sled_to_postgres(&sled, &pg).await?;
    println!("copied {} and checked it:", dir.path().display());
    println!("  certificates {}", tally.certificates);
    println!("  events       {}", tally.events);
    println!("  issuers      {}", tally.issuers);
    println!("  challenges   {}", tally.challenges);
    println!("  documents    {}", tally.documents);
    println!("  sha256       {}", tally.sha256);
    println!("point every node at the database: store.backend = \"postgres\" and store.url");
    Ok(())
}
