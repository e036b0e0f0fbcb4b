//! A private PostgreSQL cluster for the tests: Debian's server binaries, `initdb` into a
//! temporary directory, `pg_ctl` on a free loopback port with its socket in that directory.
//! PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the `postgres`
//! system user the package creates.
//!
//! One cluster serves a whole test binary (each test makes its own database); a guard process
//! stops it and removes its directory when the test process exits, however it exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::free_port;

pub struct Cluster {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    /// The directory the cluster lives in (data, socket, log).
    root: PathBuf,
    /// Run the server's tools as this user (when the tests run as root).
    user: Option<&'static str>,
}

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::private)
}

/// The newest server installed under Debian's `/usr/lib/postgresql/<major>/bin`.
fn server_bin() -> PathBuf {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)")
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors
        .pop()
        .expect("no /usr/lib/postgresql/<major>/bin/pg_ctl")
        .1
}

impl Cluster {
    /// A cluster of its own, for a test that stops or restarts it.
    pub fn private() -> Self {
        let root = tempfile::Builder::new()
            .prefix("enrollca-pg-")
            .tempdir()
            .expect("a directory for the cluster")
            .keep();
        let is_root = effective_uid() == 0;
        let user = is_root.then_some("postgres");
        if is_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of {} to postgres", root.display());
        }
        let cluster = Cluster {
            port: free_port(),
            bin: server_bin(),
            data: root.join("data"),
            root,
            user,
        };
        let out = cluster.tool(
            "initdb",
            &[
                "-D",
                path(&cluster.data),
                "-U",
                "enrollca",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        cluster.pg_ctl_start();
        cluster.guard();
        cluster
    }

    fn tool(&self, name: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(name);
        let mut cmd = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()))
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            self.port,
            self.root.display()
        );
        let log = self.root.join("server.log");
        let out = self.tool(
            "pg_ctl",
            &[
                "-D",
                path(&self.data),
                "-o",
                &options,
                "-l",
                path(&log),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Restarts the server, dropping every connection (`pg_ctl restart -m fast`).
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// Stops the server (`-m fast`: connections are dropped, nothing committed is lost).
    pub fn stop(&self) {
        let out = self.tool(
            "pg_ctl",
            &["-D", path(&self.data), "-m", "fast", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    }

    /// Crashes the server and starts it again: `-m immediate` skips the shutdown checkpoint,
    /// so the start recovers from the WAL, as after a power cut, and empties unlogged tables.
    pub fn crash_and_recover(&self) {
        let out = self.tool(
            "pg_ctl",
            &["-D", path(&self.data), "-m", "immediate", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop -m immediate: {}",
            text(&out)
        );
        self.start();
    }

    /// Starts it again after `stop`, on the same port.
    pub fn start(&self) {
        self.pg_ctl_start();
    }

    /// Stops the cluster and removes its directory once this process has exited.
    fn guard(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match self.user {
            Some(user) => format!("runuser -u {user} -- {}", pg_ctl.display()),
            None => pg_ctl.display().to_string(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {stop} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            data = self.data.display(),
            root = self.root.display(),
        );
        // In the background of a shell that exits at once: the guard outlives nothing here.
        let status = Command::new("sh")
            .args(["-c", &format!("( {script} ) </dev/null >/dev/null 2>&1 &")])
            .status()
            .expect("the cluster's guard");
        assert!(status.success(), "starting the cluster's guard");
    }

    /// Serves TLS with this certificate and key (PEM) and accepts TCP connections only over
    /// it (`hostssl`), so a client that connects at all connected encrypted. With
    /// `client_certs` (a CA's PEM and a role), that role logs in only with a client
    /// certificate from that CA naming it. Restarts the server so the new settings are in
    /// force when this returns.
    pub fn serve_tls(&self, cert_pem: &str, key_pem: &str, client_certs: Option<(&str, &str)>) {
        let (cert, key) = (self.root.join("server.crt"), self.root.join("server.key"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        // The server refuses a key others can read, and must own it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some(user) = self.user {
            let owner = format!("{user}:{user}");
            let out = Command::new("chown")
                .args([owner.as_str(), path(&cert), path(&key)])
                .output()
                .expect("chown");
            assert!(out.status.success(), "chown: {}", text(&out));
        }
        // No file, no client certificates asked for ('' is the server's default).
        let client_ca = match client_certs {
            Some((ca, _)) => {
                let file = self.root.join("client-ca.pem");
                std::fs::write(&file, ca).unwrap();
                file.display().to_string()
            }
            None => String::new(),
        };
        // Each its own statement: ALTER SYSTEM does not run inside a transaction.
        for setting in [
            format!("ssl_cert_file = '{}'", cert.display()),
            format!("ssl_key_file = '{}'", key.display()),
            format!("ssl_ca_file = '{client_ca}'"),
            "ssl = on".to_owned(),
        ] {
            self.psql("postgres", &format!("ALTER SYSTEM SET {setting}"));
        }
        let by_cert = client_certs.map_or(String::new(), |(_, role)| {
            format!("hostssl all {role} 127.0.0.1/32 cert\n")
        });
        // Overwriting keeps the file's owner.
        std::fs::write(
            self.data.join("pg_hba.conf"),
            format!("local all all trust\n{by_cert}hostssl all all 127.0.0.1/32 trust\n"),
        )
        .unwrap();
        self.restart();
    }

    /// A `postgres://` URL for `database`, created if it does not exist yet.
    pub fn database(&self, database: &str) -> String {
        assert!(
            database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database names here are plain identifiers: {database}"
        );
        let exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
        );
        if exists.trim() != "1" {
            self.psql("postgres", &format!("CREATE DATABASE {database}"));
        }
        self.url(database)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://enrollca@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `sql` with psql and returns what it printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "enrollca",
            ])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The effective user id, from `id -u` (the test kit carries no libc binding for one call).
fn effective_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id -u prints a number")
}
