//! Devices of the device-attest-01 tests: a server trusting a synthetic Apple-style
//! attestation CA, the MDM's inventory, and a device's order up to its attestation.

use std::path::{Path, PathBuf};

use crate::attestation::{Leaf, TestAttestationCa};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use enrollca::attest::freshness_nonce;
use serde_json::{Value, json};

use super::acme::{Client, Response};
use super::*;

pub const SERIAL: &str = "C02TESTDEV01";
pub const UDID: &str = "00008030-001A2C3E0A12802E";

/// A server trusting `ca`'s root for attestation, with the built-in `device` profile.
pub async fn device_server(tmp: &Path, ca: &TestAttestationCa) -> Server {
    let data = init_dir(tmp, &[], &[]);
    device_server_in(tmp, &data, ca)
}

pub fn device_server_in(tmp: &Path, data: &Path, ca: &TestAttestationCa) -> Server {
    trust_attestation_ca(tmp, data, ca);
    Server::start(data, &[])
}

/// Configures the data directory `data` to trust `ca`'s root for attestation.
fn trust_attestation_ca(tmp: &Path, data: &Path, ca: &TestAttestationCa) {
    let root = tmp.join("attestation-root.pem");
    std::fs::write(&root, ca.root_pem()).unwrap();
    let config_path = data.join("config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let config = config.replacen(
        "attestation_roots = []",
        &format!("attestation_roots = [{:?}]", root.to_str().unwrap()),
        1,
    );
    std::fs::write(&config_path, config).unwrap();
}

/// A server whose `device` profile takes one-time ClientIdentifiers, requiring an
/// attestation or not.
pub fn client_identifier_server(
    tmp: &Path,
    ca: &TestAttestationCa,
    require_attestation: bool,
) -> Server {
    Server::start(&client_identifier_data(tmp, ca, require_attestation), &[])
}

/// The data directory of `client_identifier_server`, for a server started otherwise.
pub fn client_identifier_data(
    tmp: &Path,
    ca: &TestAttestationCa,
    require_attestation: bool,
) -> PathBuf {
    let data = init_dir(tmp, &[], &[]);
    let config_path = data.join("config.toml");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replacen(
            "permanent_identifier = \"serial-or-udid\"",
            "permanent_identifier = \"client-identifier\"",
            1,
        )
        .replacen(
            "require_attestation = true",
            &format!("require_attestation = {require_attestation}"),
            1,
        );
    std::fs::write(&config_path, config).unwrap();
    trust_attestation_ca(tmp, &data, ca);
    data
}

pub async fn register(server: &Server, id: &str, body: Value) -> u16 {
    server
        .client
        .put(server.url(&format!("/api/v1/devices/{id}")))
        .bearer_auth(&server.token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// An order for a device, up to its pending device-attest-01 challenge.
pub struct Pending {
    pub order_url: String,
    pub order: Value,
    pub authz_url: String,
    pub challenge_url: String,
    pub token: String,
}

pub async fn order_for(client: &mut Client, identifier: &str) -> Pending {
    let url = client.url("newOrder");
    let resp = client
        .post(
            &url,
            Some(json!({"identifiers": [{"type": "permanent-identifier", "value": identifier}]})),
        )
        .await;
    assert_eq!(resp.status, 201, "newOrder: {}", resp.text);
    let authz_url = resp.body["authorizations"][0].as_str().unwrap().to_owned();
    let authz = client.post(&authz_url, None).await.body;
    let challenges = authz["challenges"].as_array().unwrap();
    assert_eq!(
        challenges.len(),
        1,
        "device profiles offer device-attest-01 only"
    );
    assert_eq!(challenges[0]["type"], "device-attest-01");
    Pending {
        order_url: resp.location(),
        order: resp.body.clone(),
        authz_url,
        challenge_url: challenges[0]["url"].as_str().unwrap().to_owned(),
        token: challenges[0]["token"].as_str().unwrap().to_owned(),
    }
}

pub async fn answer(client: &mut Client, pending: &Pending, att_obj: &[u8]) -> Response {
    let url = pending.challenge_url.clone();
    client
        .post(&url, Some(json!({"attObj": B64.encode(att_obj)})))
        .await
}

/// Answers the challenge as a genuine device holding `key` would, and checks it is accepted.
pub async fn attest(
    client: &mut Client,
    pending: &Pending,
    ca: &TestAttestationCa,
    key: &rcgen::KeyPair,
) {
    let att_obj = ca.attest(key, &leaf_for(&pending.token)).unwrap();
    let resp = answer(client, pending, &att_obj).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

/// Finalizes the order with a device CSR for `key`, named `cn`.
pub async fn finalize(
    client: &mut Client,
    pending: &Pending,
    key: &rcgen::KeyPair,
    cn: &str,
) -> Response {
    let url = pending.order["finalize"].as_str().unwrap().to_owned();
    client
        .post(&url, Some(json!({"csr": B64.encode(device_csr(key, cn))})))
        .await
}

/// The device's identity leaf for a challenge.
pub fn leaf_for(token: &str) -> Leaf {
    Leaf {
        nonce: Some(freshness_nonce(token)),
        serial: Some(SERIAL.into()),
        udid: Some(UDID.into()),
        ..Leaf::default()
    }
}

pub fn device_csr(key: &rcgen::KeyPair, cn: &str) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.serialize_request(key).unwrap().der().to_vec()
}

/// The value of the certificate's PermanentIdentifier otherName SAN (RFC 4043), read with
/// x509-parser and checked to be exactly `[0] { SEQUENCE { UTF8String value } }`.
pub fn permanent_identifier(pem: &[u8]) -> String {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("a SAN");
    let [GeneralName::OtherName(oid, value)] = san.value.general_names.as_slice() else {
        panic!("one otherName expected: {:?}", san.value.general_names);
    };
    assert_eq!(oid.to_id_string(), "1.3.6.1.5.5.7.8.3");
    let n = value.len();
    let id = &value[6..];
    assert_eq!(
        value[..6],
        [
            0xa0,
            (n - 2) as u8,
            0x30,
            (n - 4) as u8,
            0x0c,
            (n - 6) as u8
        ],
        "[0] EXPLICIT SEQUENCE {{ UTF8String }}"
    );
    String::from_utf8(id.to_vec()).unwrap()
}

pub async fn certificate_count(server: &Server) -> usize {
    server.get_json("/api/v1/certificates?limit=1000").await["items"]
        .as_array()
        .unwrap()
        .len()
}

/// Makes an attestation object for a challenge: from its token and the client's key
/// authorization (formats use one or the other).
pub type MakeAttestation<'a> = Box<dyn Fn(&str, &str) -> Vec<u8> + 'a>;

/// A genuine device holding `key` enrols on `make`'s attestation: the challenge is valid at
/// once, then as `finish_enrolment`.
pub async fn enrol_attested(
    server: &Server,
    client: &mut Client,
    device_id: &str,
    identifier: &str,
    key: &rcgen::KeyPair,
    make: &MakeAttestation<'_>,
) -> Value {
    let pending = order_for(client, identifier).await;
    let ka = client.key.key_authorization(&pending.token);
    let resp = answer(client, &pending, &make(&pending.token, &ka)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["status"], "valid");
    finish_enrolment(server, client, &pending, device_id, identifier, key).await
}

/// Finalizes an attested order: the certificate names the ordered identifier and certifies
/// `key`. Returns it as the MDM's API shows it for device `device_id` (attested).
pub async fn finish_enrolment(
    server: &Server,
    client: &mut Client,
    pending: &Pending,
    device_id: &str,
    identifier: &str,
    key: &rcgen::KeyPair,
) -> Value {
    let resp = finalize(client, pending, key, device_id).await;
    assert_eq!(resp.status, 200, "finalize: {}", resp.text);
    assert_eq!(resp.body["status"], "valid");
    let cert_url = resp.body["certificate"].as_str().unwrap().to_owned();
    let chain = client.post(&cert_url, None).await.text;
    let dir = tempfile::tempdir().unwrap();
    let parts = split_pem(dir.path(), "enrolled", &chain);
    assert_eq!(
        permanent_identifier(&std::fs::read(&parts[0]).unwrap()),
        identifier
    );
    let key_path = dir.path().join("device.key");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    assert_certifies_key(&parts[0], &key_path);
    let view = server
        .get_json(&format!("/api/v1/devices/{device_id}"))
        .await;
    let cert = view["certificates"][0].clone();
    assert_eq!(cert["attested"], true, "{view}");
    cert
}

/// Each `(name, attestation, reason)` answers a fresh order for `identifier`: refused with
/// `badAttestationStatement` saying `reason`, and the order invalid.
pub async fn assert_each_refused(
    client: &mut Client,
    identifier: &str,
    cases: &[(&str, MakeAttestation<'_>, &str)],
) {
    for (name, make, why) in cases {
        let pending = order_for(client, identifier).await;
        let ka = client.key.key_authorization(&pending.token);
        let resp = answer(client, &pending, &make(&pending.token, &ka)).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text);
        assert_eq!(resp.problem(), "badAttestationStatement", "{name}");
        let detail = resp.body["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{name}: {detail}");
        assert_eq!(
            client.post(&pending.order_url, None).await.body["status"],
            "invalid",
            "{name}"
        );
    }
}

/// A genuine attestation, then a CSR for another key than the attested one: `badCSR`.
pub async fn assert_foreign_csr_refused(
    client: &mut Client,
    identifier: &str,
    make: &MakeAttestation<'_>,
) {
    let pending = order_for(client, identifier).await;
    let ka = client.key.key_authorization(&pending.token);
    let resp = answer(client, &pending, &make(&pending.token, &ka)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let other = rcgen::KeyPair::generate().unwrap();
    let resp = finalize(client, &pending, &other, "x").await;
    assert_eq!(resp.problem(), "badCSR", "{}", resp.text);
}

/// A server whose `device` profile accepts `format` beside Apple's, trusting `root_pem` for
/// attestation, with `edits` (what the generated config says, what it should say) applied.
pub fn attesting_server(
    tmp: &Path,
    format: &str,
    root_pem: &str,
    edits: &[(&str, String)],
) -> Server {
    let data = init_dir(tmp, &[], &[]);
    let root = tmp.join(format!("{format}-root.pem"));
    std::fs::write(&root, root_pem).unwrap();
    let path = data.join("config.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    let standard = [
        (
            "attestation_roots = []",
            format!("attestation_roots = [{:?}]", root.to_str().unwrap()),
        ),
        (
            "attestation_formats = [\"apple\"]",
            format!("attestation_formats = [\"apple\", \"{format}\"]"),
        ),
    ];
    for (from, to) in standard.iter().chain(edits) {
        assert!(config.contains(from), "the generated config says `{from}`");
        config = config.replacen(from, to, 1);
    }
    std::fs::write(&path, config).unwrap();
    Server::start(&data, &[])
}

/// Registers device `id` with `serial` in the MDM's inventory; returns an ACME account on
/// the `device` profile and the device's key.
pub async fn registered_device(
    server: &Server,
    id: &str,
    serial: &str,
) -> (Client, rcgen::KeyPair) {
    assert_eq!(register(server, id, json!({"serial": serial})).await, 201);
    let mut client = Client::new(server, "device").await;
    client.register().await;
    (client, rcgen::KeyPair::generate().unwrap())
}
