//! ACME device-attest-01 with TPM 2.0 key attestation (`tpm`) against the real binary: a
//! synthetic AIK CA trusted through `acme.attestation_roots`, on a profile that takes Apple
//! devices and TPMs. A registered device whose AIK certificate names it enrols; each false
//! attestation is refused with `badAttestationStatement` naming its check, and nothing is
//! issued.

use enrollca_testkit::harness as common;

use common::device::*;
use common::*;
use enrollca_testkit::tpm::{TestTpmCa, TpmLeaf};
use time::{Duration, OffsetDateTime};

const TPM_DEVICE: &str = "TPM-DEVICE-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_device_enrols_and_each_false_attestation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestTpmCa::generate("Test").unwrap();
    let stranger = TestTpmCa::generate("Stranger").unwrap();
    // The profile's tpm table as init documents it, uncommented.
    let server = attesting_server(
        tmp.path(),
        "tpm",
        &ca.root_pem(),
        &[
            (
                "# [acme.profiles.device.tpm]",
                "[acme.profiles.device.tpm]".into(),
            ),
            (
                "# identifier = \"permanent-identifier\"",
                "identifier = \"permanent-identifier\"".into(),
            ),
            ("# accept_sha1 = false", "accept_sha1 = false".into()),
            (
                "attestation_key_types = [\"p256\", \"p384\"]",
                "attestation_key_types = [\"p256\", \"p384\", \"rsa\"]".into(),
            ),
        ],
    );
    let (mut device, key) = registered_device(&server, "pc-1", TPM_DEVICE).await;

    let genuine: MakeAttestation =
        Box::new(|_, ka| ca.attest(&key, &TpmLeaf::default(), ka).unwrap());
    let cert = enrol_attested(&server, &mut device, "pc-1", TPM_DEVICE, &key, &genuine).await;

    // The MDM sees what the TPM attested.
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

    // A TPM holding an RSA key, on a profile that accepts RSA.
    let (mut pc2, _) = registered_device(&server, "pc-2", "TPM-DEVICE-2").await;
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let leaf = || TpmLeaf {
        permanent_identifier: Some("TPM-DEVICE-2".into()),
        ..TpmLeaf::default()
    };
    let rsa_attestation: MakeAttestation = Box::new(|_, ka| ca.attest(&rsa, &leaf(), ka).unwrap());
    let cert = enrol_attested(
        &server,
        &mut pc2,
        "pc-2",
        "TPM-DEVICE-2",
        &rsa,
        &rsa_attestation,
    )
    .await;
    assert_eq!(cert["attestation"]["format"], "tpm");

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
    let with = |leaf: TpmLeaf| -> MakeAttestation {
        let (ca, key) = (&ca, &key);
        Box::new(move |_, ka| ca.attest(key, &leaf, ka).unwrap())
    };
    let cases: Vec<(&str, MakeAttestation, &str)> = vec![
        (
            "key authorization of another challenge",
            Box::new(|_, ka| {
                ca.attest(&key, &TpmLeaf::default(), &format!("x{ka}"))
                    .unwrap()
            }),
            "freshness nonce: certInfo's extraData is not SHA-256",
        ),
        (
            "unknown root",
            Box::new(|_, ka| stranger.attest(&key, &TpmLeaf::default(), ka).unwrap()),
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
    assert_each_refused(&mut device, TPM_DEVICE, &cases).await;
    assert_foreign_csr_refused(&mut device, TPM_DEVICE, &genuine).await;

    assert_eq!(
        certificate_count(&server).await,
        2,
        "only the genuine enrolments"
    );
}
