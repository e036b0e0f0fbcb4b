//! The `enrollca` command line.

/// jemalloc, for its per-thread caches: glibc's malloc, capped at two arenas to stay in the
/// memory budget, had the async workers, the blocking pool and sled's threads contend on the
/// arena locks. A/B, ACME orders: 8% less server CPU per order. A fleet's first-contact
/// validations peak at 489 MiB, inside the 512 MiB budget (glibc: 447, mimalloc: 556).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use enrollca::admin::{Backend, data_dir, dir_config};
use enrollca::api::views::{CertView, ChallengeBody, IssueBody};
use enrollca::api::{ClientIdentifierBody, EabBody, PrepareBody, RootBody, Scope, TokenBody};
use enrollca::app::{ServeOptions, serve};
use enrollca::ca::passphrase;
use enrollca::ca::{KeyFamily, KeySpec, Serial};
use enrollca::csr::San;
use enrollca::init::{InitOptions, Source, init};
use enrollca::revocation::RevocationReason;
use enrollca::store::{CertQuery, DeviceId, IssuerState, Standing};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "enrollca",
    version,
    about = "Certificate authority for device enrolment (SCEP, ACME)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (creates a development CA in an empty data directory).
    Serve {
        /// Configuration file (default: <data>/config.toml when present).
        #[arg(long, env = "ENROLLCA_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        data: DataArg,
    },
    /// Create a data directory: generate or import the root and the issuing CAs.
    Init(InitArgs),
    /// CA certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issued certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// One-time SCEP challenges.
    #[command(subcommand)]
    Challenge(ChallengeCommand),
    /// ACME administration.
    #[command(subcommand)]
    Acme(AcmeCommand),
    /// SCEP enrolments held for manual approval (`scep.approval = "manual"`).
    #[command(subcommand)]
    Scep(ScepCommand),
    /// Scoped API tokens for MDM servers and scripts.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Apple configuration profile payloads (XML plist) that point devices at enrollca.
    #[command(subcommand)]
    Profile(ProfileCommand),
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// ACME with Managed Device Attestation against a device profile: the payload
    /// `com.apple.security.acme`, or the declarative credential `com.apple.credential.acme`.
    Acme {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "plist")]
        format: PayloadFormat,
        /// The ACME profile (it must offer device-attest-01).
        #[arg(long, default_value = "device")]
        profile: String,
        /// What the device orders as its permanent-identifier: its serial number or UDID
        /// (profiles with permanent_identifier = "serial-or-udid").
        #[arg(long, required_unless_present = "device", conflicts_with = "device")]
        client_identifier: Option<String>,
        /// Mint a one-time ClientIdentifier for this registered device (profiles with
        /// permanent_identifier = "client-identifier"; needs the server).
        #[arg(long)]
        device: Option<DeviceId>,
        /// Secure Enclave key size: 256 or 384.
        #[arg(long, default_value_t = 384, value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(["256", "384"]), |s: String| s.parse::<u32>().expect("listed values are numbers")))]
        key_size: u32,
        /// Subject, e.g. "CN=device,O=Example" (default: CN=<device>, or CN=<client
        /// identifier> without --device).
        #[arg(long)]
        subject: Option<String>,
    },
    /// SCEP enrolment with a challenge: the payload `com.apple.security.scep`, or the
    /// declarative credential `com.apple.credential.scep`.
    Scep {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "plist")]
        format: PayloadFormat,
        /// The challenge to embed (e.g. the static `scep.challenge`).
        #[arg(long, conflicts_with = "one_time")]
        challenge: Option<String>,
        /// Mint a one-time challenge for this payload (needs the server).
        #[arg(long)]
        one_time: bool,
        /// With --one-time: bind the challenge to this device.
        #[arg(long, requires = "one_time")]
        device: Option<DeviceId>,
        /// With --one-time: how long the challenge stays usable.
        #[arg(long, default_value = "7days")]
        ttl: humantime::Duration,
        /// RSA key size.
        #[arg(long, default_value_t = 2048, value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(["2048", "4096"]), |s: String| s.parse::<u32>().expect("listed values are numbers")))]
        key_size: u32,
        /// Subject, e.g. "CN=device,O=Example" (default: CN=<device> with --device, else
        /// CN=enrollca device). With --one-time the challenge states it: the certificate
        /// gets exactly this subject.
        #[arg(long)]
        subject: Option<String>,
    },
}

/// How `enrollca profile` writes what it makes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum PayloadFormat {
    /// A configuration profile payload, as an XML property list.
    Plist,
    /// A declarative device management credential: the JSON document a
    /// `com.apple.asset.credential.*` declaration points at, printed byte for byte (no
    /// trailing newline), so its SHA-256 and size are what the declaration states.
    Ddm,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a token (printed once; only its hash is stored). Needs the server.
    Create {
        #[command(flatten)]
        target: Target,
        /// Who it is for, e.g. the MDM's name.
        #[arg(long)]
        name: String,
        /// read, revoke, enroll-admin (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
    },
    /// List tokens: id, name, scopes. Needs the server.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Withdraw a token at once, by the id `token list` shows. Needs the server.
    Revoke {
        #[command(flatten)]
        target: Target,
        id: String,
    },
}

#[derive(Subcommand)]
enum ScepCommand {
    /// List enrolments waiting for a decision. Needs the server.
    Pending {
        #[command(flatten)]
        target: Target,
    },
    /// Issue the certificate of a pending enrolment; the device collects it by polling.
    Approve {
        #[command(flatten)]
        target: Target,
        transaction_id: String,
    },
    /// Refuse a pending enrolment; the device's next poll gets FAILURE.
    Reject {
        #[command(flatten)]
        target: Target,
        transaction_id: String,
    },
}

#[derive(Subcommand)]
enum AcmeCommand {
    /// Mint an External Account Binding key for a profile (shown once; used by one account).
    /// Needs the server.
    EabKey {
        #[command(flatten)]
        target: Target,
        /// The ACME profile the key is for.
        #[arg(long, default_value = "default")]
        profile: String,
    },
    /// Mint a one-time ClientIdentifier for a registered device, for the payload's
    /// `ClientIdentifier` (printed once; only its hash is stored). Needs the server.
    ClientIdentifier {
        #[command(flatten)]
        target: Target,
        /// The device, as registered (`PUT /api/v1/devices/ID`).
        #[arg(long)]
        device: DeviceId,
        /// The ACME profile it is for (its permanent_identifier must be "client-identifier").
        #[arg(long, default_value = "device")]
        profile: String,
        /// How long it stays usable.
        #[arg(long, default_value = "7days")]
        ttl: humantime::Duration,
    },
}

#[derive(Subcommand)]
enum ChallengeCommand {
    /// Mint a single-use challenge (printed once; only its hash is stored). Needs the server.
    Create {
        #[command(flatten)]
        target: Target,
        /// Bind it to this device: the certificate is recorded for it, and its common name
        /// is the device id unless --subject says otherwise.
        #[arg(long)]
        device: Option<DeviceId>,
        /// The subject the certificate must have, e.g. "CN=dev-42,O=Example".
        #[arg(long)]
        subject: Option<String>,
        /// A subjectAltName it must have (repeatable), e.g. DNS:dev-42.example.
        #[arg(long = "san")]
        sans: Vec<San>,
        /// How long it stays usable, e.g. 15m, 1h, 7days (at most 30 days).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
    },
}

#[derive(Args)]
struct DataArg {
    /// Data directory.
    #[arg(long, env = "ENROLLCA_DATA", default_value = "enrollca-data")]
    data: PathBuf,
}

#[derive(Args)]
struct Target {
    #[command(flatten)]
    data: DataArg,
    /// Server base URL (default: https://<listen.https> from the configuration, trusting
    /// the roots in the data directory).
    #[arg(long, env = "ENROLLCA_URL")]
    url: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InitArgs {
    #[command(flatten)]
    data: DataArg,
    /// Organization name in the generated CA certificates.
    #[arg(long, default_value = "enrollca")]
    organization: String,
    /// Key type of a generated root: p256, p384, rsa2048, rsa3072, rsa4096.
    #[arg(long, default_value = "p384")]
    root_key_type: KeySpec,
    /// Import this root certificate (PEM) instead of generating one.
    #[arg(long, requires = "root_key")]
    root_cert: Option<PathBuf>,
    /// The imported root's key (PEM). Leave out to keep the root offline; then import the
    /// issuing CAs too.
    #[arg(long)]
    root_key: Option<PathBuf>,
    /// RSA issuer (SCEP) key size: 2048, 3072 or 4096.
    #[arg(long, default_value = "2048", value_parser = ["2048", "3072", "4096"])]
    rsa_bits: String,
    /// ECDSA issuer (ACME) curve: p256 or p384.
    #[arg(long, default_value = "p256", value_parser = ["p256", "p384"])]
    ec_curve: String,
    #[arg(long, requires = "rsa_issuer_key")]
    rsa_issuer_cert: Option<PathBuf>,
    #[arg(long)]
    rsa_issuer_key: Option<PathBuf>,
    #[arg(long, requires = "ecdsa_issuer_key")]
    ecdsa_issuer_cert: Option<PathBuf>,
    #[arg(long)]
    ecdsa_issuer_key: Option<PathBuf>,
    /// Encrypt the CA keys with the passphrase in this file (or set ENROLLCA_CA_PASSPHRASE).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the root certificate(s) in PEM, for clients' trust stores.
    Root(DataArg),
    /// List the issuing CAs and their state.
    List(Target),
    /// Replace an issuing CA: `prepare` stages the next one, `activate` switches to it.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// End a retiring issuer once none of its certificates is still valid. Needs the server.
    Retire {
        #[command(flatten)]
        target: Target,
        /// The issuer id (`enrollca ca list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum RotateCommand {
    /// Stage the next issuer of a line: generated under the root, or imported. Needs the server.
    Prepare {
        #[command(flatten)]
        target: Target,
        /// The issuer line: rsa (SCEP) or ecdsa (ACME).
        #[arg(long)]
        family: KeyFamily,
        /// Import a next issuer signed offline by the root: its certificate (PEM)…
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// … and its key (PEM; encrypted with the CA passphrase if one is set).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Or: a key pair already in the configured PKCS#11 token
        /// (pkcs11:token=<label>;object=<label>); the root signs its certificate here.
        #[arg(long, conflicts_with_all = ["cert", "key"])]
        pkcs11_key: Option<String>,
    },
    /// Replace the root: a new root and cross certificates both ways, so devices trusting
    /// either root accept certificates under both. Issuers prepared afterwards are signed
    /// by the new root. Needs the server.
    Root {
        #[command(flatten)]
        target: Target,
        /// Key type of the new root (default: the current root's).
        #[arg(long)]
        key_type: Option<KeySpec>,
    },
    /// Make the staged issuer the one that issues; the current one becomes retiring.
    /// Needs the server; takes effect at once, without a restart.
    Activate {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        family: KeyFamily,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// List certificates, optionally filtered.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        device: Option<DeviceId>,
        /// good, revoked or expired.
        #[arg(long)]
        status: Option<Standing>,
        #[arg(long)]
        issuer: Option<enrollca::ca::IssuerId>,
        /// Continue after this serial (the `next` of the previous page).
        #[arg(long)]
        after: Option<Serial>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one certificate, with its PEM.
    Show {
        #[command(flatten)]
        target: Target,
        serial: Serial,
    },
    /// Revoke a certificate.
    Revoke {
        #[command(flatten)]
        target: Target,
        serial: Serial,
        /// RFC 5280 reason, e.g. keyCompromise, superseded, cessationOfOperation.
        #[arg(long, default_value = "unspecified")]
        reason: RevocationReason,
    },
    /// Issue a certificate for a PKCS#10 request (needs the running server). Prints the PEM
    /// chain, leaf first.
    Issue {
        #[command(flatten)]
        target: Target,
        /// The request, PEM.
        #[arg(long)]
        csr: PathBuf,
        #[arg(long)]
        device: Option<DeviceId>,
        /// Issuer line: rsa or ecdsa.
        #[arg(long, default_value = "ecdsa", value_parser = ["rsa", "ecdsa"])]
        issuer: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enrollca: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
    use enrollca::payload;
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
            match format {
                PayloadFormat::Plist => print!("{}", payload::to_xml(acme.profile_payload())?),
                PayloadFormat::Ddm => print!("{}", acme.credential().document),
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
            let top = enrollca::encoding::pem_certs(scep_ca.pem.as_bytes())?
                .pop()
                .ok_or_else(|| anyhow::anyhow!("issuer {} has no certificate", scep_ca.id))?;
            // Apple compares CAFingerprint with the root of what GetCACert serves: the SCEP
            // CA itself when it is self-signed, else the root above it.
            let roots = backend.roots(&dir).await?;
            let anchor = enrollca::ca::Trust::new(roots, Vec::new())
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

fn print_issuer(i: &enrollca::api::views::IssuerView, json: bool) -> anyhow::Result<()> {
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
