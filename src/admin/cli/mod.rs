//! The `enrollca` command line: what an operator types (this module, parsed by clap) and
//! what each command does (`commands`).

mod commands;
mod guide;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::api::Scope;
use crate::ca::{KeyFamily, KeySpec, Serial};
use crate::csr::San;
use crate::revocation::RevocationReason;
use crate::store::{DeviceId, Standing};

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
    /// The store: moving an installation to PostgreSQL.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy a data directory's sled store into an empty PostgreSQL database (stop the
    /// server first), then check the copy by counts and a digest of every record.
    Migrate {
        /// The data directory whose store is copied.
        #[arg(long)]
        from: PathBuf,
        /// postgres://user@host[:port]/database (ENROLLCA_STORE_URL).
        #[arg(long, env = "ENROLLCA_STORE_URL", hide_env_values = true)]
        to: String,
        /// The database password, when the URL has none (ENROLLCA_STORE_PASSWORD_FILE).
        #[arg(long, env = "ENROLLCA_STORE_PASSWORD_FILE")]
        password_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// ACME with Managed Device Attestation against a device profile: the payload
    /// `com.apple.security.acme`, or the declarative credential `com.apple.credential.acme`.
    Acme {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "plist")]
        format: AcmeFormat,
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

/// How `enrollca profile acme` writes what it makes, by kind of device.
#[derive(Clone, Copy, clap::ValueEnum)]
enum AcmeFormat {
    /// A configuration profile payload, as an XML property list (Apple).
    Plist,
    /// A declarative device management credential (Apple; see `scep --format ddm`).
    Ddm,
    /// What an Android MDM agent (a device-owner app) does to enrol with `android-key`.
    Android,
    /// The step CLI command that enrols a YubiKey's PIV key with `step`.
    Yubikey,
    /// The step CLI command that enrols a TPM-held key with `tpm`.
    Tpm,
}

/// How `enrollca profile scep` writes what it makes.
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
        issuer: Option<crate::ca::IssuerId>,
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

/// Parses the command line and runs the command; what `enrollca` exits with.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enrollca: {e:#}");
            ExitCode::FAILURE
        }
    }
}
