//! ACME device-attest-01 with YubiKey PIV attestation (`step`) against the real binary: a
//! synthetic Yubico-style CA (root and a key's `f9` certificate) trusted through
//! `acme.attestation_roots`, on a profile that takes Apple devices and YubiKeys and requires
//! a PIN. A registered YubiKey enrols; each false attestation is refused with
//! `badAttestationStatement` naming its check, and nothing is issued; the operator's
//! revocation list (a file re-read every second) refuses a withdrawn key.

use enrollca_testkit::harness as common;

use common::device::*;
use common::*;
use enrollca_testkit::attestation::sign_sha256;
use enrollca_testkit::yubikey::{TestYubicoCa, YubiKeyLeaf, serial_der, step_object};
use serde_json::json;
use time::{Duration, OffsetDateTime};

const YUBIKEY_SERIAL: &str = "5000001";

/// A server whose `device` profile takes Apple devices and YubiKeys with a PIN, trusting
/// `ca`, and reads the operator's revocation list from `tmp/revoked.json` every second.
fn yubikey_server(tmp: &std::path::Path, ca: &TestYubicoCa) -> Server {
    std::fs::write(tmp.join("revoked.json"), r#"{"entries": {}}"#).unwrap();
    let revoked = tmp.join("revoked.json");
    attesting_server(
        tmp,
        "step",
        &ca.root_pem(),
        &[
            (
                "# [acme.profiles.device.yubikey]",
                "[acme.profiles.device.yubikey]".into(),
            ),
            ("# require_pin = false", "require_pin = true".into()),
            (
                "# attestation_revocations = \"/etc/enrollca/revoked-attestations.json\"",
                format!("attestation_revocations = {:?}", revoked.to_str().unwrap()),
            ),
            (
                "attestation_revocations_refresh = \"1h\"",
                "attestation_revocations_refresh = \"1s\"".into(),
            ),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yubikey_enrols_and_each_false_attestation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestYubicoCa::generate("Test").unwrap();
    let stranger = TestYubicoCa::generate("Stranger").unwrap();
    let server = yubikey_server(tmp.path(), &ca);
    let (mut device, key) = registered_device(&server, "yubikey-1", YUBIKEY_SERIAL).await;

    let genuine: MakeAttestation =
        Box::new(|_, ka| ca.attest(&key, &YubiKeyLeaf::default(), ka).unwrap());
    let cert = enrol_attested(
        &server,
        &mut device,
        "yubikey-1",
        YUBIKEY_SERIAL,
        &key,
        &genuine,
    )
    .await;

    // The MDM sees what the YubiKey attested.
    let facts = &cert["attestation"];
    assert_eq!(facts["format"], "step");
    assert_eq!(facts["serial"], YUBIKEY_SERIAL);
    assert_eq!(facts["firmware"], "5.7.4");
    assert_eq!(facts["pin_policy"], "once");
    assert_eq!(facts["touch_policy"], "never");
    assert_eq!(facts["form_factor"], "usb-c-keychain");
    let serial = cert["serial"].as_str().unwrap().to_owned();
    let shown = stdout(&server.cli(&["cert", "show", &serial]));
    assert!(
        shown.contains(
            "serial=5000001 firmware=5.7.4 pin=once touch=never form=usb-c-keychain (step)"
        ),
        "{shown}"
    );

    // What `enrollca profile` tells the YubiKey's holder: the step command with this
    // server's directory, the roots it serves over HTTP, and the profile's PIN demand.
    let guide = stdout(&server.cli_listening(&[
        "profile",
        "acme",
        "--format",
        "yubikey",
        "--client-identifier",
        YUBIKEY_SERIAL,
    ]));
    assert!(
        guide.contains(&format!(
            "step ca certificate '5000001' yubikey.crt --acme {}/acme/device/directory",
            server.https
        )) && guide.contains("--pin-policy once (or always)"),
        "{guide}"
    );
    let roots_url = format!("{}/roots.pem", server.http);
    assert!(guide.contains(&format!("curl -fsS {roots_url}")), "{guide}");
    let roots = reqwest::get(&roots_url).await.unwrap();
    assert_eq!(roots.status(), 200);
    assert!(roots.text().await.unwrap().contains("BEGIN CERTIFICATE"));
    // The profile takes no Android devices: it says so instead of printing false steps.
    let refused = server.cli(&[
        "profile",
        "acme",
        "--format",
        "android",
        "--client-identifier",
        YUBIKEY_SERIAL,
    ]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("does not accept `android-key` attestations"),
        "{why}"
    );

    let now = OffsetDateTime::now_utc();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let signed = |leaf: YubiKeyLeaf| -> MakeAttestation {
        let (ca, key) = (&ca, &key);
        Box::new(move |_, ka| {
            let x5c = [ca.leaf(key, &leaf).unwrap(), ca.f9_der()];
            step_object(&x5c, &sign_sha256(key, ka.as_bytes()), -7)
        })
    };
    let cases: Vec<(&str, MakeAttestation, &str)> = vec![
        (
            "signature over another challenge",
            Box::new(|_, ka| {
                ca.attest(&key, &YubiKeyLeaf::default(), &format!("x{ka}"))
                    .unwrap()
            }),
            "proof of possession: the signature over this challenge's key authorization",
        ),
        (
            "signature by another key than the attested one",
            Box::new(|_, ka| {
                let x5c = [ca.leaf(&key, &YubiKeyLeaf::default()).unwrap(), ca.f9_der()];
                step_object(&x5c, &sign_sha256(&other_key, ka.as_bytes()), -7)
            }),
            "proof of possession",
        ),
        (
            "unknown root",
            Box::new(|_, ka| stranger.attest(&key, &YubiKeyLeaf::default(), ka).unwrap()),
            "not a trusted attestation root",
        ),
        (
            "slot attestation expired",
            signed(YubiKeyLeaf {
                not_before: now - Duration::days(3),
                not_after: now - Duration::days(1),
                ..YubiKeyLeaf::default()
            }),
            "expired at",
        ),
        (
            "f9 certificate missing",
            Box::new(|_, ka| {
                let x5c = [ca.leaf(&key, &YubiKeyLeaf::default()).unwrap()];
                step_object(&x5c, &sign_sha256(&key, ka.as_bytes()), -7)
            }),
            "not a trusted attestation root",
        ),
        (
            "another YubiKey's serial",
            signed(YubiKeyLeaf {
                serial: Some(serial_der(5_000_002)),
                ..YubiKeyLeaf::default()
            }),
            "identifier: the order is for `5000001`, the YubiKey attests serial number 5000002",
        ),
        (
            "PIN never (the profile requires one)",
            signed(YubiKeyLeaf {
                policy: Some(vec![1, 2]),
                ..YubiKeyLeaf::default()
            }),
            "PIN policy: the key's is never, the profile requires a PIN",
        ),
        (
            "serial extension malformed",
            signed(YubiKeyLeaf {
                serial: Some(vec![0x02, 0x05, 0x01]),
                ..YubiKeyLeaf::default()
            }),
            "the YubiKey serial number extension",
        ),
        (
            "alg not ES256",
            Box::new(|_, ka| {
                let x5c = [ca.leaf(&key, &YubiKeyLeaf::default()).unwrap(), ca.f9_der()];
                step_object(&x5c, &sign_sha256(&key, ka.as_bytes()), -257)
            }),
            "`alg` -257 does not fit the attested key",
        ),
    ];
    assert_each_refused(&mut device, YUBIKEY_SERIAL, &cases).await;
    assert_foreign_csr_refused(&mut device, YUBIKEY_SERIAL, &genuine).await;

    // A YubiKey serial the MDM never registered is not ordered at all.
    let url = device.url("newOrder");
    let resp = device
        .post(
            &url,
            Some(json!({"identifiers": [{"type": "permanent-identifier", "value": "7777777"}]})),
        )
        .await;
    assert_eq!(resp.problem(), "rejectedIdentifier", "{}", resp.text);

    // The operator withdraws this YubiKey's f9 certificate: its next attestation is refused
    // once the list has been read again (every second here).
    let f9_der = ca.f9_der();
    let (_, f9) = x509_parser::parse_x509_certificate(&f9_der).unwrap();
    std::fs::write(
        tmp.path().join("revoked.json"),
        format!(
            r#"{{"entries": {{"{}": {{"status": "REVOKED"}}}}}}"#,
            hex::encode(f9.raw_serial())
        ),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let detail = loop {
        let pending = order_for(&mut device, YUBIKEY_SERIAL).await;
        let ka = device.key.key_authorization(&pending.token);
        let att = ca.attest(&key, &YubiKeyLeaf::default(), &ka).unwrap();
        let resp = answer(&mut device, &pending, &att).await;
        if resp.status == 400 || std::time::Instant::now() > deadline {
            assert_eq!(resp.problem(), "badAttestationStatement", "{}", resp.text);
            break resp.body["detail"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert!(
        detail.contains("x5c[1]") && detail.contains("is revoked in acme.attestation_revocations"),
        "{detail}"
    );

    assert_eq!(
        certificate_count(&server).await,
        1,
        "only the genuine enrolment"
    );
}
