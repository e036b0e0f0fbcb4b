//! Power cuts, not just crashes: the data directory lives on a filesystem that forgets every
//! byte and every name not made durable by fsync (tests/powercut/lossy_fs.py, FUSE). The
//! server issues, revokes and uses up one-time challenges while the power is cut at random
//! moments; after each cut everything it acknowledged must be there, the store must open, and
//! the event feed must have no gaps. A process kill alone cannot show this: the kernel keeps
//! what the process wrote.

use enrollca_testkit::harness as common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use enrollca::scep::message::{Cipher, Digest, MessageType, PkiStatus};
use enrollca::scep::wire::{self, NewRequest};
use enrollca_testkit::scep::Identity;
use openssl::x509::X509;
use serde_json::{Value, json};

const CUTS: usize = 8;
const CHALLENGE_WORKERS: usize = 2;
const ISSUE_WORKERS: usize = 3;

/// The lossy filesystem, mounted for the life of the value.
struct Lossy {
    mountpoint: PathBuf,
    control: PathBuf,
    fs: std::process::Child,
}

impl Lossy {
    fn mount(dir: &Path) -> Self {
        let mountpoint = dir.join("mnt");
        let control = dir.join("control.sock");
        std::fs::create_dir(&mountpoint).unwrap();
        let fs = std::process::Command::new("/usr/bin/python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/powercut/lossy_fs.py"
            ))
            .arg(&mountpoint)
            .arg(&control)
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("python3-fusepy runs the lossy filesystem");
        let mounted = |p: &Path| {
            std::fs::read_to_string("/proc/self/mounts")
                .unwrap()
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(p.to_str().unwrap()))
        };
        let mut fs = fs;
        for _ in 0..100 {
            if mounted(&mountpoint) && control.exists() {
                return Self {
                    mountpoint,
                    control,
                    fs,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = fs.kill();
        let _ = fs.wait();
        panic!("the lossy filesystem did not mount");
    }

    /// Everything not fsynced is gone; returns how many files and directories lost anything.
    fn cut_power(&self) -> usize {
        let mut s = std::os::unix::net::UnixStream::connect(&self.control).unwrap();
        s.write_all(b"cut").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
            .trim()
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("{answer}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Lossy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mountpoint)
            .status();
        let _ = self.fs.kill();
        let _ = self.fs.wait();
    }
}

/// What the server acknowledged, to be found after every power cut.
#[derive(Default)]
struct Acked {
    issued: HashSet<String>,
    revoked: HashSet<String>,
    /// One-time challenges whose enrolment was answered SUCCESS.
    used: Vec<String>,
}

/// A SCEP PKCSReq with a one-time challenge; `Some(serial)` when it was answered SUCCESS.
async fn enrol(server: &Server, ca: &X509, challenge: &str, tx: &str) -> Option<String> {
    let device = Identity::generate().unwrap();
    let csr = device.csr_named(&[], &[], Some(challenge)).unwrap();
    let req = NewRequest {
        message_type: MessageType::PkcsReq,
        transaction_id: tx,
        digest: Digest::Sha256,
        cipher: Cipher::Aes256,
        ca,
        content: &csr,
    };
    let (body, _) = wire::request(&device.signer(), &req).unwrap();
    let resp = server
        .client
        .post(server.url("/scep?operation=PKIOperation"))
        .header("content-type", "application/x-pki-message")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let reply = wire::open(&resp.bytes().await.ok()?).ok()?;
    if reply.pki_status != Some(PkiStatus::Success) {
        return None;
    }
    let (inner, _) = wire::decrypt(&reply.envelope, &device.key).ok()?;
    let p7 = openssl::pkcs7::Pkcs7::from_der(&inner).ok()?;
    let certs = p7.signed()?.certificates()?;
    // The magnitude's octets in hex: how the API names serials.
    Some(hex::encode(
        certs.get(0)?.serial_number().to_bn().ok()?.to_vec(),
    ))
}

/// The SCEP CA, as a device learns it: GetCACert.
async fn scep_ca(server: &Server) -> X509 {
    let der = server
        .client
        .get(server.url("/scep?operation=GetCACert"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    enrollca_testkit::scep::ca_of_getcacert(&der).unwrap()
}

fn csr_pem(n: usize) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("powercut-{n}"));
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// Runs the workload until `stop`, recording what was acknowledged.
async fn workload(
    server: Arc<Server>,
    acked: Arc<Mutex<Acked>>,
    stop: tokio_util::sync::CancellationToken,
    round: usize,
) {
    let ca = scep_ca(&server).await;
    let mut tasks = Vec::new();
    for w in 0..ISSUE_WORKERS {
        let (client, url, token, acked, stop) = (
            server.client.clone(),
            server.url("/api/v1/certificates"),
            server.token.clone(),
            acked.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let sent = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"csr": csr_pem(round * 100_000 + w * 10_000 + n), "issuer": "ecdsa"}))
                    .send();
                let Ok(resp) = (tokio::select! { r = sent => r, () = stop.cancelled() => break }) else {
                    break;
                };
                if resp.status() != 201 {
                    break;
                }
                let Ok(body) = resp.json::<Value>().await else { break };
                let serial = body["certificate"]["serial"].as_str().unwrap().to_owned();
                acked.lock().unwrap().issued.insert(serial.clone());
                // Every other one is revoked at once.
                if n % 2 == 0 {
                    let revoked = client
                        .post(format!("{url}/{serial}/revoke"))
                        .bearer_auth(&token)
                        .json(&json!({"reason": "keyCompromise"}))
                        .send()
                        .await;
                    if revoked.is_ok_and(|r| r.status() == 200) {
                        acked.lock().unwrap().revoked.insert(serial);
                    }
                }
            }
        }));
    }
    for w in 0..CHALLENGE_WORKERS {
        let (acked, stop, ca, server) = (acked.clone(), stop.clone(), ca.clone(), server.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let device = format!("pc-{round}-{w}-{n}");
                let Ok(resp) = server
                    .post("/api/v1/scep/challenges")
                    .json(&json!({"device": device}))
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(minted) = resp.json::<Value>().await else {
                    break;
                };
                let challenge = minted["challenge"].as_str().unwrap().to_owned();
                match enrol(&server, &ca, &challenge, &format!("tx-{device}")).await {
                    Some(serial) => {
                        let mut a = acked.lock().unwrap();
                        a.issued.insert(serial);
                        a.used.push(challenge);
                    }
                    None => break,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_acknowledged_survives_power_cuts() {
    let tmp = tempfile::tempdir().unwrap();
    let lossy = Lossy::mount(tmp.path());
    // init, then the power goes at once: the data directory must be whole.
    let data = init_dir(&lossy.mountpoint, &[], &[]);
    lossy.cut_power();

    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut lost_by_cuts = Vec::new();
    // A root rotation acknowledged before one of the cuts: its root PEM.
    let mut rotated_root: Option<String> = None;
    for round in 0..=CUTS {
        let server = Arc::new(Server::start(&data, &[]));
        // After each cut: every acknowledged certificate, revocation and used challenge.
        let (issued, revoked, used) = {
            let a = acked.lock().unwrap();
            (a.issued.clone(), a.revoked.clone(), a.used.clone())
        };
        let mut status = BTreeMap::new();
        for serial in &issued {
            let resp = server
                .get(&format!("/api/v1/certificates/{serial}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                200,
                "round {round}: acknowledged {serial} is gone"
            );
            let rec: Value = resp.json().await.unwrap();
            status.insert(serial.clone(), rec["status"].as_str().unwrap().to_owned());
        }
        for serial in &revoked {
            assert_eq!(
                status[serial], "revoked",
                "round {round}: revocation of {serial} is gone"
            );
        }
        let ca = scep_ca(&server).await;
        for (i, challenge) in used.iter().enumerate().rev().take(3) {
            assert_eq!(
                enrol(&server, &ca, challenge, &format!("reuse-{round}-{i}")).await,
                None,
                "round {round}: a used challenge works again"
            );
        }
        // The feed: sequence numbers from 1 without gaps, at least one event per certificate.
        let events = server.events().await;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e["seq"].as_u64(),
                Some(i as u64 + 1),
                "round {round}: a gap in the feed"
            );
        }
        assert!(events.len() >= issued.len() + revoked.len());
        // An acknowledged root rotation: the new root is served, and the root key on disk
        // is its key (preparing an issuer signs with the key whose root is listed).
        if let Some(root_pem) = rotated_root.take() {
            assert!(
                server.roots_pem().await.contains(root_pem.trim()),
                "round {round}: the new root is gone"
            );
            let resp = server
                .post("/api/v1/rotation/ecdsa/prepare")
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                201,
                "round {round}: {}",
                resp.text().await.unwrap()
            );
        }
        if round == CUTS {
            break;
        }
        if round == CUTS / 2 {
            let resp = server.post("/api/v1/rotation/root").send().await.unwrap();
            assert_eq!(resp.status(), 201);
            let body: Value = resp.json().await.unwrap();
            rotated_root = Some(body["root_pem"].as_str().unwrap().to_owned());
        }

        // Work, then the power goes at a random moment.
        let stop = tokio_util::sync::CancellationToken::new();
        let work = tokio::spawn(workload(server.clone(), acked.clone(), stop.clone(), round));
        let after = Duration::from_millis(300 + rand::random::<u64>() % 900);
        tokio::time::sleep(after).await;
        // SIGKILL, then the power: nothing the server had not synced survives.
        let killed = run("kill", &["-9", &server.pid().to_string()]);
        assert!(killed.status.success());
        lost_by_cuts.push(lossy.cut_power());
        stop.cancel();
        let _ = work.await;
        drop(server);
    }
    let a = acked.lock().unwrap();
    eprintln!(
        "{CUTS} power cuts: {} certificates, {} revocations and {} one-time challenges acknowledged and found after each; unsynced files or names dropped per cut: {lost_by_cuts:?}",
        a.issued.len(),
        a.revoked.len(),
        a.used.len()
    );
    assert!(a.issued.len() >= CUTS * 2, "the workload ran");
    assert!(!a.used.is_empty() && !a.revoked.is_empty());
}
