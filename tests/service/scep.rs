//! SCEP against the real binary with real clients: micromdm `scepclient` (Debian `scep`),
//! certmonger (a private daemon) and strongSwan `pki --scep`; each enrols and each reports a
//! wrong challenge as refused. Bad input gets HTTP 400 with a reason and writes nothing.

use enrollca_testkit::harness as common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const CHALLENGE: &str = "pr1vate-challenge";

fn dir_1(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    tmp.path().join("device-1")
}

#[tokio::test]
async fn scepclient_enrols_and_a_wrong_challenge_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)]);

    let caps = reqwest::get(server.url("/scep?operation=GetCACaps"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for cap in [
        "POSTPKIOperation",
        "SHA-256",
        "SHA-384",
        "AES",
        "DES3",
        "SCEPStandard",
    ] {
        assert!(caps.lines().any(|l| l == cap), "{cap} missing from {caps}");
    }
    // The SCEP CA is under the root: GetCACert serves both (a device has nothing else).
    let ca_pem = server.scep_ca_certs(tmp.path()).await;
    let served = split_pem(
        tmp.path(),
        "served",
        &std::fs::read_to_string(&ca_pem).unwrap(),
    );
    assert_eq!(served.len(), 2, "the SCEP CA and the root");
    let ca_text = stdout(&run(
        "openssl",
        &["x509", "-noout", "-text", "-in", ca_pem.to_str().unwrap()],
    ));
    assert!(
        ca_text.contains("Key Encipherment") && ca_text.contains("Digital Signature"),
        "{ca_text}"
    );

    let dir = dir_1(&tmp);
    let out = scepclient(&server, &dir, "device-1", CHALLENGE);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let cert = dir.join("cert.pem");
    assert_verifies_with_getcacert(&ca_pem, &cert);
    let subject = stdout(&run(
        "openssl",
        &["x509", "-noout", "-subject", "-in", cert.to_str().unwrap()],
    ));
    assert!(
        subject.contains("CN = device-1") && subject.contains("O = scep-client"),
        "{subject}"
    );
    assert_certifies_key(&cert, &dir.join("key.pem"));

    // Recorded like every issuance: protocol, an `issued` event. The static challenge names
    // no device, and the request's CN does not make one.
    let serial = serial_of(&cert);
    let rec: Value = server
        .get_json(&format!("/api/v1/certificates/{serial}"))
        .await;
    assert_eq!(rec["protocol"], "scep");
    assert_eq!(rec["device"], Value::Null);
    assert_eq!(server.events().await.len(), 1);

    // Renewal: with a certificate in place scepclient sends a RenewalReq signed with it and
    // no challenge; the replacement is linked to the old one, with the same (absent) device.
    std::fs::remove_file(dir_1(&tmp).join("csr.pem")).unwrap();
    let out = scepclient(&server, &dir_1(&tmp), "device-1", "");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let renewed = serial_of(&cert);
    assert_ne!(renewed, serial);
    assert_verifies_with_getcacert(&ca_pem, &cert);
    let rec: Value = server
        .get_json(&format!("/api/v1/certificates/{renewed}"))
        .await;
    assert_eq!(rec["replaces"], serial.as_str());
    assert_eq!(rec["device"], Value::Null);
    assert_eq!(server.events().await.len(), 2);

    // A revoked certificate cannot renew itself.
    let r = server
        .post(&format!("/api/v1/certificates/{renewed}/revoke"))
        .json(&serde_json::json!({"reason": "keyCompromise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    std::fs::remove_file(dir_1(&tmp).join("csr.pem")).unwrap();
    let out = scepclient(&server, &dir_1(&tmp), "device-1", "");
    assert!(!out.status.success());
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("badRequest"));
    assert_eq!(
        serial_of(&cert),
        renewed,
        "the client keeps its certificate"
    );
    assert_eq!(
        server.events().await.len(),
        3,
        "issued, renewed, revoked: the refused renewal wrote nothing"
    );

    // A wrong challenge: the client reports the refusal, no certificate anywhere.
    let dir = tmp.path().join("device-2");
    let out = scepclient(&server, &dir, "device-2", "not-the-challenge");
    assert!(!out.status.success());
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("badRequest"), "{said}");
    assert!(!dir.join("cert.pem").exists());
    assert_eq!(server.events().await.len(), 3);
}

#[tokio::test]
async fn scep_bad_input_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)]);
    let c = &server.client;
    let url = |q: &str| server.url(&format!("/scep?{q}"));
    let pki = "application/x-pki-message";

    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (
            c.post(url("operation=PKIOperation"))
                .header("content-type", pki)
                .body("garbage"),
            "not a PKCS#7 pkiMessage",
        ),
        (
            c.post(url("operation=PKIOperation"))
                .header("content-type", pki)
                .body(""),
            "empty PKIOperation body",
        ),
        (
            c.post(url("operation=PKIOperation"))
                .header("content-type", "application/json")
                .body("{}"),
            "is not application/x-pki-message",
        ),
        (
            c.post(url("operation=GetCACert"))
                .header("content-type", pki)
                .body("x"),
            "not a POST operation",
        ),
        (
            c.get(url("operation=Frobnicate")),
            "unknown SCEP operation `Frobnicate`",
        ),
        (c.get(url("")), "missing operation"),
        (
            c.get(url("operation=PKIOperation")),
            "needs a message parameter",
        ),
        (
            c.get(url("operation=PKIOperation&message=%25%25%25")),
            "not base64",
        ),
        (
            c.get(url("operation=PKIOperation&message=MIIB")),
            "not a PKCS#7 pkiMessage",
        ),
    ];
    for (req, reason) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400, "{reason}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(reason), "expected {reason:?}, got {body:?}");
    }
    assert_eq!(server.events().await.len(), 0);
}

/// A private certmonger: its own D-Bus bus and state directories, so nothing lands in the
/// system's certmonger or in another test's; both processes are stopped by PID on drop.
///
/// The bus is configured without service directories. A stock session bus would activate
/// `certmonger-session` on the first `getcert` call made before our daemon owns its name, and that
/// one keeps its CAs under the real `$HOME/.config/certmonger`, shared by every test running at
/// the same time ("There is already a CA with the nickname ...").
struct Certmonger {
    dir: std::path::PathBuf,
    bus_pid: u32,
    daemon: std::process::Child,
}

impl Certmonger {
    fn start(dir: &Path) -> Self {
        for sub in ["requests", "cas", "local", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.join("bus").display()
            ),
        )
        .unwrap();
        let out = run(
            "dbus-daemon",
            &[
                &format!("--config-file={}", config.display()),
                "--fork",
                "--print-pid=1",
            ],
        );
        assert!(out.status.success(), "dbus-daemon: {}", stderr(&out));
        let bus_pid = stdout(&out).trim().parse().unwrap();
        let mut me = Self {
            dir: dir.to_owned(),
            bus_pid,
            daemon: std::process::Command::new("true").spawn().unwrap(),
        };
        me.daemon = me
            .command("certmonger")
            .args(["-s", "-n"])
            .stderr(std::fs::File::create(dir.join("certmonger.log")).unwrap())
            .spawn()
            .unwrap();
        // getcert talks to the daemon over the bus; wait until it answers.
        for _ in 0..100 {
            if me.getcert(&["list-cas"]).status.success() {
                return me;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("certmonger did not come up");
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        let d = |s: &str| self.dir.join(s).display().to_string();
        c.env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", d("bus")),
        )
        .env("CERTMONGER_REQUESTS_DIR", d("requests"))
        .env("CERTMONGER_CAS_DIR", d("cas"))
        .env("CERTMONGER_LOCAL_CA_DIR", d("local"))
        .env("CERTMONGER_TMPDIR", d("tmp"));
        c
    }

    /// `getcert request` from the enrollca CA, waiting for the outcome.
    fn request(
        &self,
        key: &Path,
        cert: &Path,
        subject: &str,
        challenge: &str,
    ) -> std::process::Output {
        let (key, cert) = (key.to_str().unwrap(), cert.to_str().unwrap());
        self.getcert(&[
            "request", "-c", "enrollca", "-k", key, "-f", cert, "-N", subject, "-L", challenge,
            "-w",
        ])
    }

    /// `getcert COMMAND -s ARGS`, bounded in time.
    fn getcert(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.command("timeout");
        c.args(["60", "getcert", args[0], "-s"]).args(&args[1..]);
        c.output().unwrap()
    }

    fn status(&self, id: &str) -> String {
        stdout(&self.getcert(&["list", "-i", id]))
    }
}

impl Drop for Certmonger {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        run("kill", &[&self.bus_pid.to_string()]);
    }
}

fn request_id(out: &std::process::Output) -> String {
    let text = stdout(out);
    text.split('"')
        .nth(1)
        .unwrap_or_else(|| panic!("no request id in {text}{}", stderr(out)))
        .to_owned()
}

fn serial_of_der(cert: &Path) -> String {
    let s = stdout(&run(
        "openssl",
        &[
            "x509",
            "-inform",
            "DER",
            "-noout",
            "-serial",
            "-in",
            cert.to_str().unwrap(),
        ],
    ));
    s.trim().trim_start_matches("serial=").to_lowercase()
}

#[tokio::test]
async fn certmonger_enrols_resubmits_and_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)]);
    let cm = Certmonger::start(&tmp.path().join("certmonger"));
    // certmonger's trust for CertRep signatures: what GetCACert served, nothing else.
    let served = server.scep_ca_certs(&tmp.path().join("getcacert")).await;
    let out = cm.getcert(&[
        "add-scep-ca",
        "-c",
        "enrollca",
        "-u",
        &server.url("/scep"),
        "-N",
        served.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let (key, cert) = (tmp.path().join("cm.key"), tmp.path().join("cm.pem"));
    let out = cm.request(&key, &cert, "CN=device-cm", CHALLENGE);
    let id = request_id(&out);
    let status = cm.status(&id);
    assert!(status.contains("status: MONITORING"), "{status}");
    assert_verifies_with_getcacert(&served, &cert);
    assert_certifies_key(&cert, &key);
    let first = serial_of(&cert);

    // Renewal: certmonger signs a PKCSReq for the same key with the certificate it holds.
    let out = cm.getcert(&["resubmit", "-i", &id, "-w"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = cm.status(&id);
    assert!(status.contains("status: MONITORING"), "{status}");
    let second = serial_of(&cert);
    assert_ne!(first, second);
    assert_verifies_with_getcacert(&served, &cert);
    assert_certifies_key(&cert, &key);
    let rec: Value = server
        .get_json(&format!("/api/v1/certificates/{second}"))
        .await;
    assert_eq!(
        rec["replaces"],
        first.as_str(),
        "the renewal is linked to what it renews"
    );
    assert_eq!(
        rec["device"],
        Value::Null,
        "the static challenge names no device"
    );
    let events: Value = server.get_json("/api/v1/events").await;
    assert_eq!(events["events"][1]["type"], "renewed");

    // Wrong challenge: certmonger reports the CA's refusal.
    let events_before = server.events().await.len();
    let (key, cert) = (tmp.path().join("bad.key"), tmp.path().join("bad.pem"));
    let out = cm.request(&key, &cert, "CN=intruder", "wrong");
    let status = cm.status(&request_id(&out));
    assert!(status.contains("status: CA_REJECTED"), "{status}");
    assert!(!cert.exists());
    assert_eq!(server.events().await.len(), events_before);
}

#[tokio::test]
async fn strongswan_enrols_with_3des_and_aes_and_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)]);
    let d = tmp.path();
    // strongSwan bootstraps from GetCACert: the root (to be confirmed by its fingerprint) as
    // ca.der, the SCEP CA it verified under that root as ca-1.der.
    let out = std::process::Command::new("pki")
        .args(["--scepca", "--url", &server.url("/scep")])
        .args(["--caout", d.join("ca.der").to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pki --scepca: {}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("Sub CA cert is trusted"), "{said}");
    let (root, ca) = (d.join("ca.der"), d.join("ca-1.der"));
    let served = server.scep_ca_certs(&d.join("getcacert")).await;
    let key = d.join("ss.key");
    assert!(
        run(
            "openssl",
            &["genrsa", "-out", key.to_str().unwrap(), "2048"]
        )
        .status
        .success()
    );

    for cipher in ["des3", "aes"] {
        let cert = d.join(format!("ss-{cipher}.der"));
        let out = std::process::Command::new("pki")
            .args([
                "--scep",
                "--url",
                &server.url("/scep"),
                "--in",
                key.to_str().unwrap(),
                "--dn",
                &format!("CN=device-ss-{cipher}"),
                "--password",
                CHALLENGE,
            ])
            .args([
                "--cacert-enc",
                ca.to_str().unwrap(),
                "--cacert-sig",
                ca.to_str().unwrap(),
                "--cacert",
                root.to_str().unwrap(),
            ])
            .args(["--cipher", cipher, "--digest", "sha256", "--outform", "der"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cipher}: {}", stderr(&out));
        std::fs::write(&cert, &out.stdout).unwrap();
        assert_verifies_with_getcacert(&served, &cert);
        let subject = stdout(&run(
            "openssl",
            &["x509", "-noout", "-subject", "-in", cert.to_str().unwrap()],
        ));
        assert!(
            subject.contains(&format!("CN = device-ss-{cipher}")),
            "{subject}"
        );
        assert_certifies_key(&cert, &key);
    }

    // Renewal with a new key, signed with the old certificate and key.
    let old = d.join("ss-aes.der");
    let old_serial = serial_of_der(&old);
    let new_key = d.join("ss-new.key");
    assert!(
        run(
            "openssl",
            &["genrsa", "-out", new_key.to_str().unwrap(), "2048"]
        )
        .status
        .success()
    );
    let renew = |cert: &Path, cert_key: &Path| {
        std::process::Command::new("pki")
            .args([
                "--scep",
                "--url",
                &server.url("/scep"),
                "--in",
                new_key.to_str().unwrap(),
                "--dn",
                "CN=device-ss-aes",
            ])
            .args([
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                cert_key.to_str().unwrap(),
            ])
            .args([
                "--cacert-enc",
                ca.to_str().unwrap(),
                "--cacert-sig",
                ca.to_str().unwrap(),
            ])
            .args(["--cipher", "aes", "--digest", "sha256", "--outform", "der"])
            .output()
            .unwrap()
    };
    let out = renew(&old, &key);
    assert!(out.status.success(), "{}", stderr(&out));
    let renewed = d.join("ss-renewed.der");
    std::fs::write(&renewed, &out.stdout).unwrap();
    assert_verifies_with_getcacert(&served, &renewed);
    let cert_pub = stdout(&run(
        "openssl",
        &[
            "x509",
            "-inform",
            "DER",
            "-noout",
            "-pubkey",
            "-in",
            renewed.to_str().unwrap(),
        ],
    ));
    let key_pub = stdout(&run(
        "openssl",
        &["pkey", "-pubout", "-in", new_key.to_str().unwrap()],
    ));
    assert_eq!(cert_pub, key_pub, "the replacement certifies the new key");
    let rec: Value = server
        .get_json(&format!("/api/v1/certificates/{}", serial_of_der(&renewed)))
        .await;
    assert_eq!(rec["replaces"], old_serial.as_str());

    // A certificate we never issued cannot renew.
    let events_before = server.events().await.len();
    let stranger = d.join("stranger.pem");
    let out = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            "/CN=device-ss-aes",
            "-days",
            "30",
            "-out",
            stranger.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = renew(&stranger, &key);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("badRequest"), "{}", stderr(&out));

    let out = std::process::Command::new("pki")
        .args([
            "--scep",
            "--url",
            &server.url("/scep"),
            "--in",
            key.to_str().unwrap(),
            "--dn",
            "CN=intruder",
            "--password",
            "wrong",
        ])
        .args([
            "--cacert-enc",
            ca.to_str().unwrap(),
            "--cacert-sig",
            ca.to_str().unwrap(),
            "--cipher",
            "aes",
            "--digest",
            "sha256",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("badRequest"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(server.events().await.len(), events_before);
}

#[tokio::test]
async fn one_time_challenges_enrol_once_per_device() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    // No static challenge: only minted ones open the door. In this process, on a clock the
    // test moves to expire a challenge.
    let clock = TestClock::starting_now();
    let server = Server::in_process(&data, clock.clone());
    let mint = |args: &[&str]| {
        let mut all = vec!["challenge", "create"];
        all.extend_from_slice(args);
        let out = server.cli(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_owned()
    };

    let challenge = mint(&["--device", "C02SERIAL01", "--ttl", "1h"]);
    assert!(challenge.len() >= 32, "{challenge}");
    // The request's CN must be the device's: another is refused and leaves the challenge.
    let out = scepclient(&server, &tmp.path().join("wrong-cn"), "some-cn", &challenge);
    assert!(!out.status.success());
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("badRequest"));
    let dir = tmp.path().join("a");
    let out = scepclient(&server, &dir, "C02SERIAL01", &challenge);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let rec: Value = server
        .get_json(&format!(
            "/api/v1/certificates/{}",
            serial_of(&dir.join("cert.pem"))
        ))
        .await;
    assert_eq!(
        rec["device"], "C02SERIAL01",
        "recorded for the device the challenge was minted for"
    );
    assert_eq!(server.events().await.len(), 1);

    // Used: a second enrolment with it is refused and writes nothing.
    let out = scepclient(&server, &tmp.path().join("b"), "other", &challenge);
    assert!(!out.status.success());
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("badRequest"));
    // Expired.
    let short = mint(&["--ttl", "1s"]);
    clock.advance(time::Duration::seconds(2));
    let out = scepclient(&server, &tmp.path().join("c"), "late", &short);
    assert!(!out.status.success());
    assert_eq!(server.events().await.len(), 1);

    // The API refuses bad requests for challenges.
    for (body, status) in [
        (serde_json::json!({"ttl": "0s"}), 400),
        (serde_json::json!({"ttl": "40days"}), 400),
        (serde_json::json!({"ttl": "soon"}), 400),
        (serde_json::json!({"colour": "blue"}), 400),
        (serde_json::json!({"device": ""}), 400),
    ] {
        let r = server
            .post("/api/v1/scep/challenges")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
    }
    let r = server
        .client
        .post(server.url("/api/v1/scep/challenges"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_webhook_decides_within_its_timeout() {
    use std::sync::{Arc, Mutex};
    // The operator's validator: approves `yes` (naming the device and the subject, which is
    // scepclient's), `other` (naming a subject the request does not have), refuses `no`, and
    // is too slow for `slow`.
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/validate",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Arc<Mutex<Vec<Value>>>>,
                 axum::Json(body): axum::Json<Value>| async move {
                    seen.lock().unwrap().push(body.clone());
                    match body["challenge"].as_str().unwrap() {
                        "yes" => (
                            axum::http::StatusCode::OK,
                            r#"{"device":"WEBHOOK-DEV-1","subject":"CN=webhook-device,O=scep-client,OU=MDM,C=US"}"#,
                        ),
                        "other" => (
                            axum::http::StatusCode::OK,
                            r#"{"device":"WEBHOOK-DEV-2","subject":"CN=WEBHOOK-DEV-2"}"#,
                        ),
                        "slow" => {
                            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                            (axum::http::StatusCode::OK, "{}")
                        }
                        _ => (axum::http::StatusCode::FORBIDDEN, "no"),
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/validate", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(
        &data,
        &[
            ("ENROLLCA_SCEP_WEBHOOK_URL", &url),
            ("ENROLLCA_SCEP_WEBHOOK_TIMEOUT", "500ms"),
        ],
    );

    let dir = tmp.path().join("yes");
    let out = tokio::task::block_in_place(|| scepclient(&server, &dir, "webhook-device", "yes"));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let rec: Value = server
        .get_json(&format!(
            "/api/v1/certificates/{}",
            serial_of(&dir.join("cert.pem"))
        ))
        .await;
    assert_eq!(
        rec["device"], "WEBHOOK-DEV-1",
        "the validator names the device"
    );
    assert_eq!(
        rec["subject"],
        "CN=webhook-device,O=scep-client,OU=MDM,C=US"
    );
    // A request whose subject is not the one the validator states is refused.
    let out = tokio::task::block_in_place(|| {
        scepclient(
            &server,
            &tmp.path().join("other"),
            "webhook-device",
            "other",
        )
    });
    assert!(!out.status.success());
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("badRequest"));
    {
        let seen = seen.lock().unwrap();
        let call = &seen[0];
        assert_eq!(call["message_type"], "PKCSReq");
        assert_eq!(call["common_name"], "webhook-device");
        assert!(
            call["csr"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        assert!(!call["transaction_id"].as_str().unwrap().is_empty());
    }

    for (challenge, name) in [("no", "refused"), ("slow", "timed out")] {
        let started = std::time::Instant::now();
        let out = tokio::task::block_in_place(|| {
            scepclient(&server, &tmp.path().join(challenge), "x", challenge)
        });
        assert!(!out.status.success(), "{name}");
        assert!(
            format!("{}{}", stdout(&out), stderr(&out)).contains("badRequest"),
            "{name}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{name}: the timeout bounds the wait"
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert_eq!(
        server.events().await.len(),
        1,
        "only the approved request wrote anything"
    );
}

/// An HTTPS validator that approves everything, with a certificate from a test CA; returns
/// its URL and the CA's PEM.
async fn https_validator(cancel: tokio_util::sync::CancellationToken) -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "validator test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let app = axum::Router::new().route(
        "/validate",
        axum::routing::post(|| async { (axum::http::StatusCode::OK, r#"{"device":"TLS-DEV"}"#) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/validate", listener.local_addr().unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    tokio::spawn(enrollca::http::server::serve(
        listener,
        enrollca::http::server::Listener::plain(Some(acceptor), Default::default()),
        app,
        cancel,
    ));
    (url, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_webhook_over_https_verifies_the_validator() {
    let cancel = tokio_util::sync::CancellationToken::new();
    let (url, ca_pem) = https_validator(cancel.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("validator-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let data = init_dir(tmp.path(), &[], &[]);

    // Trusted through the system store (SSL_CERT_FILE points rustls-native-certs at it).
    let server = Server::start(
        &data,
        &[
            ("ENROLLCA_SCEP_WEBHOOK_URL", &url),
            ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        ],
    );
    let dir = tmp.path().join("trusted");
    let out = tokio::task::block_in_place(|| scepclient(&server, &dir, "TLS-DEV", "anything"));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let rec = server
        .get_json(&format!(
            "/api/v1/certificates/{}",
            serial_of(&dir.join("cert.pem"))
        ))
        .await;
    assert_eq!(rec["device"], "TLS-DEV");
    drop(server);

    // Not trusted: the validator cannot be authenticated, so nothing is approved.
    let empty = tmp.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let server = Server::start(
        &data,
        &[
            ("ENROLLCA_SCEP_WEBHOOK_URL", &url),
            ("SSL_CERT_FILE", empty.to_str().unwrap()),
        ],
    );
    let out = tokio::task::block_in_place(|| {
        scepclient(
            &server,
            &tmp.path().join("untrusted"),
            "tls-device-2",
            "anything",
        )
    });
    assert!(!out.status.success());
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("badRequest"));
    assert_eq!(server.events().await.len(), 1);
    cancel.cancel();
}

/// scepclient, certmonger and strongSwan each enrol knowing only the server's SCEP URL and
/// what GetCACert serves (plus scepclient's pin, taken from it); each certificate verifies
/// with openssl against that answer and nothing else. Returns GetCACert's certificates.
async fn every_client_enrols_from_getcacert_alone(server: &Server, dir: &Path) -> Vec<PathBuf> {
    let served = server.scep_ca_certs(&dir.join("getcacert")).await;
    let listed = split_pem(dir, "served", &std::fs::read_to_string(&served).unwrap());

    let out = scepclient(server, &dir.join("scepclient"), "device-sc", CHALLENGE);
    assert!(
        out.status.success(),
        "scepclient: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_verifies_with_getcacert(&served, &dir.join("scepclient/cert.pem"));

    let cm = Certmonger::start(&dir.join("certmonger"));
    let out = cm.getcert(&[
        "add-scep-ca",
        "-c",
        "enrollca",
        "-u",
        &server.url("/scep"),
        "-N",
        served.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "getcert add-scep-ca: {:?} {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    let (key, cert) = (dir.join("cm.key"), dir.join("cm.pem"));
    let out = cm.request(&key, &cert, "CN=device-cm", CHALLENGE);
    let status = cm.status(&request_id(&out));
    assert!(
        status.contains("status: MONITORING"),
        "certmonger: {status}"
    );
    assert_verifies_with_getcacert(&served, &cert);

    let ss = dir.join("strongswan");
    std::fs::create_dir_all(&ss).unwrap();
    let out = std::process::Command::new("pki")
        .args(["--scepca", "--url", &server.url("/scep")])
        .args(["--caout", ss.join("ca.der").to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pki --scepca: {}", stderr(&out));
    // It writes each certificate it received as ca.der, ca-1.der, ...: the SCEP CA (to
    // encrypt to) and the root (its anchor) are found by their fingerprints.
    let written: Vec<PathBuf> = std::fs::read_dir(&ss)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "der"))
        .collect();
    assert_eq!(written.len(), listed.len(), "{written:?}");
    let fingerprint = |p: &Path| {
        stdout(&run(
            "openssl",
            &[
                "x509",
                "-noout",
                "-fingerprint",
                "-sha256",
                "-in",
                p.to_str().unwrap(),
            ],
        ))
    };
    let find = |wanted: &Path| {
        written
            .iter()
            .find(|w| fingerprint(w) == fingerprint(wanted))
            .unwrap_or_else(|| panic!("strongSwan did not write {}", wanted.display()))
            .clone()
    };
    let (enc, anchor) = (find(&listed[0]), find(listed.get(1).unwrap_or(&listed[0])));
    let key = ss.join("ss.key");
    assert!(
        run(
            "openssl",
            &["genrsa", "-out", key.to_str().unwrap(), "2048"]
        )
        .status
        .success()
    );
    let out = std::process::Command::new("pki")
        .args([
            "--scep",
            "--url",
            &server.url("/scep"),
            "--in",
            key.to_str().unwrap(),
        ])
        .args(["--dn", "CN=device-ss", "--password", CHALLENGE])
        .args([
            "--cacert-enc",
            enc.to_str().unwrap(),
            "--cacert-sig",
            enc.to_str().unwrap(),
        ])
        .args([
            "--cacert",
            anchor.to_str().unwrap(),
            "--cipher",
            "aes",
            "--digest",
            "sha256",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "pki --scep: {}", stderr(&out));
    let cert = ss.join("ss.der");
    std::fs::write(&cert, &out.stdout).unwrap();
    assert_verifies_with_getcacert(&served, &cert);
    listed
}

/// Issue 24: a self-signed SCEP CA imported as it is (a single-level CA, as micromdm makes)
/// is served alone, as `application/x-x509-ca-cert`, and every client bootstraps from it.
#[tokio::test]
async fn clients_bootstrap_from_an_imported_self_signed_scep_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (key, ca) = (d.join("ca.key"), d.join("ca.pem"));
    let out = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            ca.to_str().unwrap(),
            "-subj",
            "/CN=Imported SCEP CA/O=test",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature,keyEncipherment",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (ca, key) = (ca.to_str().unwrap(), key.to_str().unwrap());
    let data = init_dir(
        d,
        &[
            "--root-cert",
            ca,
            "--root-key",
            key,
            "--rsa-issuer-cert",
            ca,
            "--rsa-issuer-key",
            key,
        ],
        &[],
    );
    let server = Server::start(&data, &[("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)]);
    let resp = reqwest::get(server.url("/scep?operation=GetCACert"))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-x509-ca-cert");

    let served = every_client_enrols_from_getcacert_alone(&server, d).await;
    assert_eq!(served.len(), 1);
    assert_eq!(
        openssl_fingerprint(&served[0]),
        openssl_fingerprint(Path::new(ca))
    );
}

/// Issue 24: after `ca rotate root` and a SCEP CA prepared and activated under the new root, GetCACert
/// serves the new SCEP CA, the new root and the cross certificate from the old root, and every
/// client bootstraps from that.
#[tokio::test]
async fn clients_bootstrap_from_getcacert_after_a_root_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)]);
    let before = server.scep_ca_certs(&tmp.path().join("before")).await;
    let before = split_pem(
        tmp.path(),
        "before",
        &std::fs::read_to_string(&before).unwrap(),
    );
    server.cli_ok(&["ca", "rotate", "root"]);
    server.cli_ok(&["ca", "rotate", "prepare", "--family", "rsa"]);
    server.cli_ok(&["ca", "rotate", "activate", "--family", "rsa"]);

    let served = every_client_enrols_from_getcacert_alone(&server, tmp.path()).await;
    assert_eq!(
        served.len(),
        3,
        "the new SCEP CA, the new root, the cross certificate"
    );
    let subject = |p: &Path| {
        stdout(&run(
            "openssl",
            &[
                "x509",
                "-noout",
                "-subject",
                "-issuer",
                "-in",
                p.to_str().unwrap(),
            ],
        ))
    };
    let (old_root, new_root, cross) = (
        subject(&before[1]),
        subject(&served[1]),
        subject(&served[2]),
    );
    assert_ne!(old_root, new_root);
    // The cross certificate is the new root's name and key, issued by the old root.
    let name = |s: &str, which: &str| {
        s.lines()
            .find(|l| l.starts_with(which))
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .trim()
            .to_owned()
    };
    assert_eq!(name(&cross, "subject"), name(&new_root, "subject"));
    assert_eq!(name(&cross, "issuer"), name(&old_root, "subject"));
}

/// Issue 24: an imported three-level hierarchy (root → intermediate → SCEP CA, the SCEP CA's
/// file carrying the intermediate after it) is served whole by GetCACert, and every client
/// bootstraps from it.
#[tokio::test]
async fn clients_bootstrap_from_an_imported_three_level_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let ok = |args: &[&str]| {
        let out = run("openssl", args);
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    ok(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("root.key"),
        "-out",
        &p("root.pem"),
        "-subj",
        "/CN=Imported Root/O=test",
        "-days",
        "3650",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    // Each CA below: a key, a request, a certificate signed by its parent.
    let ca = |name: &str, key: &[&str], parent: &str, ext: &str| {
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend_from_slice(key);
        let (keyfile, csr, ext_file) = (
            p(&format!("{name}.key")),
            p(&format!("{name}.csr")),
            p(&format!("{name}.ext")),
        );
        let subj = format!("/CN=Imported {name}/O=test");
        args.extend_from_slice(&["-keyout", &keyfile, "-out", &csr, "-subj", &subj]);
        ok(&args);
        std::fs::write(&ext_file, ext).unwrap();
        ok(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &p(&format!("{parent}.pem")),
            "-CAkey",
            &p(&format!("{parent}.key")),
            "-CAcreateserial",
            "-out",
            &p(&format!("{name}.pem")),
            "-days",
            "2000",
            "-extfile",
            &ext_file,
        ]);
    };
    ca(
        "intermediate",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "root",
        "basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    ca(
        "scep",
        &["-newkey", "rsa:2048"],
        "intermediate",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature,keyEncipherment\n",
    );
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(p("scep.pem")).unwrap(),
        std::fs::read_to_string(p("intermediate.pem")).unwrap()
    );
    std::fs::write(p("scep-chain.pem"), bundle).unwrap();
    let data = init_dir(
        d,
        &[
            "--root-cert",
            &p("root.pem"),
            "--root-key",
            &p("root.key"),
            "--rsa-issuer-cert",
            &p("scep-chain.pem"),
            "--rsa-issuer-key",
            &p("scep.key"),
        ],
        &[],
    );
    let server = Server::start(&data, &[("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)]);
    let served = every_client_enrols_from_getcacert_alone(&server, &d.join("clients")).await;
    let fingerprints: Vec<String> = served.iter().map(|c| openssl_fingerprint(c)).collect();
    let expected: Vec<String> = ["scep.pem", "intermediate.pem", "root.pem"]
        .iter()
        .map(|f| openssl_fingerprint(&d.join(f)))
        .collect();
    assert_eq!(
        fingerprints, expected,
        "the SCEP CA, the intermediate, the root"
    );

    // An intermediate that did not sign the SCEP CA is refused at init, naming the break.
    ca(
        "stranger",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "root",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    std::fs::write(
        p("wrong-chain.pem"),
        format!(
            "{}{}",
            std::fs::read_to_string(p("scep.pem")).unwrap(),
            std::fs::read_to_string(p("stranger.pem")).unwrap()
        ),
    )
    .unwrap();
    let out = enrollca(
        &[
            "init",
            "--data",
            &p("refused"),
            "--root-cert",
            &p("root.pem"),
            "--root-key",
            &p("root.key"),
            "--rsa-issuer-cert",
            &p("wrong-chain.pem"),
            "--rsa-issuer-key",
            &p("scep.key"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("was not signed by the next certificate of its chain"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("refused").exists());
}
