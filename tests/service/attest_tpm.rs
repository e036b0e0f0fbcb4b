//! ACME device-attest-01 with TPM 2.0 key attestation (`tpm`) against the real binary: a
//! synthetic AIK CA trusted through `acme.attestation_roots`, on a profile that takes Apple
//! devices and TPMs. A registered device whose AIK certificate names it enrols; each false
//! attestation is refused with `badAttestationStatement` naming its check, and nothing is
//! issued.

use enrollca_testkit::harness as common;

use common::acme::Client;
use common::device::*;
use common::*;
use enrollca_testkit::tpm::{TestTpmCa, TpmLeaf};
use serde_json::json;
use time::{Duration, OffsetDateTime};

const TPM_DEVICE: &str = "TPM-DEVICE-1";

fn tpm_server(tmp: &std::path::Path, ca: &TestTpmCa) -> Server {
    let data = init_dir(tmp, &[], &[]);
    let root = tmp.join("aik-root.pem");
    std::fs::write(&root, ca.root_pem()).unwrap();
    let path = data.join("config.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replacen(
            "attestation_roots = []",
            &format!("attestation_roots = [{:?}]", root.to_str().unwrap()),
            1,
        )
        .replacen(
            "attestation_formats = [\"apple\"]",
            "attestation_formats = [\"apple\", \"tpm\"]",
            1,
        )
        .replacen(
            "# [acme.profiles.device.tpm]",
            "[acme.profiles.device.tpm]",
            1,
        )
        .replacen(
            "# identifier = \"permanent-identifier\"",
            "identifier = \"permanent-identifier\"",
            1,
        );
    std::fs::write(&path, config).unwrap();
    Server::start(&data, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_device_enrols_and_each_false_attestation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestTpmCa::generate("Test").unwrap();
    let stranger = TestTpmCa::generate("Stranger").unwrap();
    let server = tpm_server(tmp.path(), &ca);
    assert_eq!(
        register(&server, "pc-1", json!({"serial": TPM_DEVICE})).await,
        201
    );
    let mut device = Client::new(&server, "device").await;
    device.register().await;
    let key = rcgen::KeyPair::generate().unwrap();

    let pending = order_for(&mut device, TPM_DEVICE).await;
    let ka = device.key.key_authorization(&pending.token);
    let att = ca.attest(&key, &TpmLeaf::default(), &ka).unwrap();
    let resp = answer(&mut device, &pending, &att).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["status"], "valid");
    let resp = finalize(&mut device, &pending, &key, "pc-1").await;
    assert_eq!(resp.status, 200, "finalize: {}", resp.text);
    let cert_url = resp.body["certificate"].as_str().unwrap().to_owned();
    let chain = device.post(&cert_url, None).await.text;
    let parts = split_pem(tmp.path(), "tpm", &chain);
    assert_eq!(
        permanent_identifier(&std::fs::read(&parts[0]).unwrap()),
        TPM_DEVICE
    );
    let key_path = tmp.path().join("tpm.key");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    assert_certifies_key(&parts[0], &key_path);

    // The MDM sees what the TPM attested.
    let view = server.get_json("/api/v1/devices/pc-1").await;
    let cert = &view["certificates"][0];
    assert_eq!(cert["attested"], true);
    let facts = &cert["attestation"];
    assert_eq!(facts["format"], "tpm");
    assert_eq!(facts["serial"], TPM_DEVICE);
    assert_eq!(facts["tpm_manufacturer"], "id:54455354");
    assert_eq!(facts["tpm_model"], "TESTTPM");
    assert_eq!(facts["firmware"], "id:00010002");
    let serial = cert["serial"].as_str().unwrap().to_owned();
    let shown = stdout(&server.cli(&["cert", "show", &serial]));
    assert!(
        shown.contains(
            "serial=TPM-DEVICE-1 firmware=id:00010002 tpm=id:54455354 tpm-model=TESTTPM (tpm)"
        ),
        "{shown}"
    );

    // What `enrollca profile` tells the device's enrolment agent.
    let guide = stdout(&server.cli_listening(&[
        "profile",
        "acme",
        "--format",
        "tpm",
        "--client-identifier",
        TPM_DEVICE,
    ]));
    for needed in [
        format!("--acme {}/acme/device/directory", server.https),
        "--attestation-uri 'tpmkms:".to_owned(),
        "PermanentIdentifier `TPM-DEVICE-1`".to_owned(),
    ] {
        assert!(guide.contains(&needed), "`{needed}` in:\n{guide}");
    }

    let now = OffsetDateTime::now_utc();
    type Make<'a> = Box<dyn Fn(&str) -> Vec<u8> + 'a>;
    let with = |leaf: TpmLeaf| -> Make {
        let (ca, key) = (&ca, &key);
        Box::new(move |ka: &str| ca.attest(key, &leaf, ka).unwrap())
    };
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "key authorization of another challenge",
            Box::new(|ka: &str| {
                ca.attest(&key, &TpmLeaf::default(), &format!("x{ka}"))
                    .unwrap()
            }),
            "freshness nonce: certInfo's extraData is not SHA-256",
        ),
        (
            "unknown root",
            Box::new(|ka: &str| stranger.attest(&key, &TpmLeaf::default(), ka).unwrap()),
            "not a trusted attestation root",
        ),
        (
            "AIK certificate expired",
            with(TpmLeaf {
                not_before: now - Duration::days(3),
                not_after: now - Duration::days(1),
                ..TpmLeaf::default()
            }),
            "expired at",
        ),
        (
            "AIK certificate without the AIK usage",
            with(TpmLeaf {
                aik_usage: false,
                ..TpmLeaf::default()
            }),
            "lacks tcg-kp-AIKCertificate",
        ),
        (
            "another device",
            with(TpmLeaf {
                permanent_identifier: Some("TPM-DEVICE-2".into()),
                ..TpmLeaf::default()
            }),
            "identifier: the order is for `TPM-DEVICE-1`",
        ),
        (
            "Name of another key",
            with(TpmLeaf {
                name: Some(vec![0, 0x0b, 1, 2, 3]),
                ..TpmLeaf::default()
            }),
            "certInfo certifies another object than pubArea",
        ),
        (
            "key not fixed to the TPM",
            with(TpmLeaf {
                attributes: 0x0004_0060,
                ..TpmLeaf::default()
            }),
            "fixedTPM and sensitiveDataOrigin are required",
        ),
        (
            "certInfo without the TPM's magic",
            with(TpmLeaf {
                magic: 0,
                ..TpmLeaf::default()
            }),
            "certInfo is not a TPM 2.0 structure",
        ),
    ];
    for (name, make, why) in &cases {
        let pending = order_for(&mut device, TPM_DEVICE).await;
        let ka = device.key.key_authorization(&pending.token);
        let resp = answer(&mut device, &pending, &make(&ka)).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text);
        assert_eq!(resp.problem(), "badAttestationStatement", "{name}");
        let detail = resp.body["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{name}: {detail}");
        assert_eq!(
            device.post(&pending.order_url, None).await.body["status"],
            "invalid",
            "{name}"
        );
    }

    // A CSR for another key than the attested one.
    let pending = order_for(&mut device, TPM_DEVICE).await;
    let ka = device.key.key_authorization(&pending.token);
    let att = ca.attest(&key, &TpmLeaf::default(), &ka).unwrap();
    assert_eq!(answer(&mut device, &pending, &att).await.status, 200);
    let other = rcgen::KeyPair::generate().unwrap();
    let resp = finalize(&mut device, &pending, &other, "x").await;
    assert_eq!(resp.problem(), "badCSR", "{}", resp.text);

    assert_eq!(
        certificate_count(&server).await,
        1,
        "only the genuine enrolment"
    );
}
