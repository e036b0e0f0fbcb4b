//! Real Android Key Attestation chains from Google's own verification library
//! (tests/vectors/android, see its README): each verifies to the shipped Google roots at a
//! time inside its validity, its KeyDescription reads as Google's decoding (the `.json`
//! beside it) says, and each of enrollca's checks refuses what it must.

use std::sync::Arc;

use enrollca::attest::android::{BootState, KeyDescription, SecurityLevel};
use enrollca::attest::status::{Revoked, StatusList};
use enrollca::attest::{
    AndroidKey, AndroidPolicy, AttestError, Expected, FormatName, KeyType, TpmPolicy, Verifier,
    YubiKeyPolicy,
};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;
use x509_parser::prelude::{FromDer, X509Certificate};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/android");

fn chain(name: &str) -> Vec<Vec<u8>> {
    let pem = std::fs::read(format!("{DIR}/{name}.pem")).unwrap();
    enrollca::encoding::pem_certs(&pem).unwrap()
}

fn decoding(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{DIR}/{name}.json")).unwrap();
    // Google's files carry `//` comments.
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).unwrap()
}

/// The leaf's KeyDescription extension, DER.
fn extension(leaf: &[u8]) -> Vec<u8> {
    let (_, leaf) = X509Certificate::from_der(leaf).unwrap();
    leaf.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.4.1.11129.2.1.17")
        .expect("the leaf carries a KeyDescription")
        .value
        .to_vec()
}

fn description(leaf: &[u8]) -> KeyDescription {
    KeyDescription::parse(&extension(leaf)).unwrap()
}

fn verifier(revoked: Revoked) -> Verifier {
    Verifier::new(vec![Arc::new(
        AndroidKey::new(&[], StatusList::loaded(revoked)).unwrap(),
    )])
}

fn verify(
    v: &Verifier,
    name: &str,
    challenge: &[u8],
    identifiers: &[&str],
    policy: &AndroidPolicy,
    now: OffsetDateTime,
) -> Result<enrollca::attest::Attestation, AttestError> {
    let object = enrollca_testkit::attestation::object("android-key", &chain(name));
    v.verify(
        &object,
        &Expected {
            nonce: challenge.try_into().unwrap_or([0; 32]),
            key_authorization: "",
            identifiers,
            key_types: &[KeyType::P256],
            formats: &[FormatName::AndroidKey],
            android: policy,
            yubikey: &YubiKeyPolicy::default(),
            tpm: &TpmPolicy::default(),
            now,
        },
    )
}

fn b64(v: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

/// (vector, an instant inside its chain's validity)
const VALID: [(&str, OffsetDateTime); 4] = [
    (
        "sony-xperia10-iii_sdk33_TEE_EC",
        datetime!(2025-06-01 0:00 UTC),
    ),
    ("caiman_sdk36_SB_EC_RKP", datetime!(2025-09-30 0:00 UTC)),
    ("tegu_sdk36_SB_EC_2026_ROOT", datetime!(2026-03-01 0:00 UTC)),
    ("blueline_sdk28_TEE_EC_NONE", datetime!(2025-06-01 0:00 UTC)),
];

#[test]
fn each_real_key_description_reads_as_googles_decoding() {
    for (name, _) in VALID
        .iter()
        .chain(&[("akita_sdk34_TEE_RSA_BASE+IMEI", VALID[0].1)])
    {
        let d = description(&chain(name)[0]);
        let json = decoding(name);
        let level = match json["attestationSecurityLevel"].as_str().unwrap() {
            "TRUSTED_ENVIRONMENT" => SecurityLevel::TrustedEnvironment,
            "STRONG_BOX" => SecurityLevel::StrongBox,
            other => panic!("{other}"),
        };
        assert_eq!(d.attestation_security_level, level, "{name}");
        assert_eq!(d.challenge, b64(&json["attestationChallenge"]), "{name}");
        let hw = &json["hardwareEnforced"];
        let rot = d.hardware_enforced.root_of_trust.as_ref().unwrap();
        assert_eq!(
            rot.device_locked, hw["rootOfTrust"]["deviceLocked"],
            "{name}"
        );
        let state = match hw["rootOfTrust"]["verifiedBootState"].as_str().unwrap() {
            "VERIFIED" => BootState::Verified,
            "UNVERIFIED" => BootState::Unverified,
            other => panic!("{other}"),
        };
        assert_eq!(rot.boot_state, state, "{name}");
        assert_eq!(
            rot.verified_boot_key,
            b64(&hw["rootOfTrust"]["verifiedBootKey"]),
            "{name}"
        );
        let number = |v: &Value| v.as_str().map(|s| s.parse::<i64>().unwrap());
        assert_eq!(
            d.hardware_enforced.os_version,
            number(&hw["osVersion"]),
            "{name}"
        );
        assert_eq!(
            d.hardware_enforced.os_patch_level,
            number(&hw["osPatchLevel"]),
            "{name}"
        );
        let imei = hw["attestationIdImei"]
            .as_str()
            .map(|s| s.as_bytes().to_vec());
        assert_eq!(d.hardware_enforced.imei, imei, "{name}");
        let packages: Vec<String> =
            json["softwareEnforced"]["attestationApplicationId"]["packages"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|p| p["name"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
        assert_eq!(d.software_enforced.packages, packages, "{name}");
    }
}

#[test]
fn each_real_chain_verifies_to_the_shipped_google_roots() {
    let v = verifier(Revoked::default());
    let policy = AndroidPolicy::default();
    for (name, at) in VALID {
        // A challenge of another length than ours cannot match: reaching the challenge
        // check means the chain verified and the extension parsed.
        let err = verify(&v, name, &[0; 32], &["X"], &policy, at).unwrap_err();
        assert!(matches!(err, AttestError::Nonce(_)), "{name}: {err}");
        // Outside its validity the same chain is refused.
        let late = verify(
            &v,
            name,
            &[0; 32],
            &["X"],
            &policy,
            datetime!(2044-01-01 0:00 UTC),
        )
        .unwrap_err();
        assert!(matches!(late, AttestError::Chain(_)), "{name}: {late}");
    }
}

#[test]
fn a_real_locked_verified_device_passes_every_check_up_to_its_identity() {
    let name = "sony-xperia10-iii_sdk33_TEE_EC";
    let challenge = b64(&decoding(name)["attestationChallenge"]);
    assert_eq!(challenge.len(), 32);
    let v = verifier(Revoked::default());
    let at = VALID[0].1;
    let policy = AndroidPolicy::default();
    // This device did not attest its IDs (no serial in the hardware list): refused there.
    let err = verify(&v, name, &challenge, &["SO-52B"], &policy, at).unwrap_err();
    assert!(
        matches!(&err, AttestError::Identifier(m) if m.contains("did not attest its IDs")),
        "{err}"
    );
    // A profile demanding StrongBox refuses it before that.
    let strongbox = AndroidPolicy {
        security_level: enrollca::attest::android::RequiredLevel::Strongbox,
        ..AndroidPolicy::default()
    };
    let err = verify(&v, name, &challenge, &["SO-52B"], &strongbox, at).unwrap_err();
    assert!(err.to_string().contains("security level"), "{err}");
}

#[test]
fn a_chain_through_a_revoked_intermediate_is_refused_naming_it() {
    let name = "sony-xperia10-iii_sdk33_TEE_EC";
    let challenge = b64(&decoding(name)["attestationChallenge"]);
    let ders = chain(name);
    let (_, intermediate) = X509Certificate::from_der(&ders[1]).unwrap();
    let serial = hex::encode(intermediate.raw_serial());
    let list = format!(
        r#"{{"entries": {{"{serial}": {{"status": "REVOKED", "reason": "KEY_COMPROMISE"}}}}}}"#
    );
    let v = verifier(Revoked::parse(list.as_bytes()).unwrap());
    let err = verify(
        &v,
        name,
        &challenge,
        &["X"],
        &AndroidPolicy::default(),
        VALID[0].1,
    )
    .unwrap_err();
    assert!(
        matches!(&err, AttestError::Chain(m) if m.contains("x5c[1]") && m.contains("revoked")),
        "{err}"
    );
}

#[test]
fn what_real_devices_get_wrong_is_refused_or_tolerated_as_google_does() {
    let v = verifier(Revoked::default());
    for (name, why) in [
        // Software attestation (an emulator): its root is not Google's hardware root.
        ("marlin_sdk29_TEE_EC_NONE", "not a trusted attestation root"),
        // A leaf edited after signing (its tags reordered): the signature check catches it.
        ("invalid_tags_not_in_ascending_order", "does not verify"),
    ] {
        let at = datetime!(2025-01-01 0:00 UTC);
        let err = verify(&v, name, &[0; 32], &["X"], &AndroidPolicy::default(), at).unwrap_err();
        assert!(
            matches!(&err, AttestError::Chain(m) if m.contains(why)),
            "{name}: {err}"
        );
    }
    // A device that encodes TRUE as 0x01 (BER, not DER) is read as locked.
    let d = description(&chain("invalid_malformed_rot_device_locked")[0]);
    assert!(d.hardware_enforced.root_of_trust.unwrap().device_locked);
    // An unlocked Pixel (blueline) attests it honestly.
    let d = description(&chain("blueline_sdk28_TEE_EC_NONE")[0]);
    let rot = d.hardware_enforced.root_of_trust.unwrap();
    assert!(!rot.device_locked);
    assert_eq!(rot.boot_state, BootState::Unverified);
}

#[test]
fn every_truncation_of_a_real_key_description_is_refused_without_panic() {
    let ext = extension(&chain("caiman_sdk36_SB_EC_RKP")[0]);
    KeyDescription::parse(&ext).unwrap();
    for len in 0..ext.len() {
        assert!(
            KeyDescription::parse(&ext[..len]).is_err(),
            "prefix of {len}"
        );
    }
}

#[test]
fn the_fuzz_seeds_are_the_real_leaves_key_descriptions() {
    for (name, _) in VALID {
        let ext = extension(&chain(name)[0]);
        let seed = std::fs::read(format!("{DIR}/key-descriptions/{name}.der")).unwrap();
        assert_eq!(seed, ext, "{name}");
    }
}
