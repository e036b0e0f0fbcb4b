//! Declarative device management (issue 24, item 5): the credential documents
//! (`com.apple.credential.acme` / `.scep`) and asset declarations enrollca makes for an MDM,
//! checked against Apple's published schemas (`tests/vectors/apple-ddm/`), byte for byte
//! what their declarations state, and usable: a device enrols with what the document says.

use enrollca_testkit::harness as common;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::acme::Client;
use common::device::*;
use common::*;
use enrollca_testkit::attestation::TestAttestationCa;
use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

/// One of Apple's schema files.
fn schema(name: &str) -> Yaml {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/apple-ddm")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

/// Checks a JSON object against a schema's key list (`payloadkeys`, or a key's `subkeys`):
/// every member is a key the schema defines, of its type and range; every required key is
/// there. Returns what is wrong, one line each.
fn violations(object: &Value, keys: &Yaml, path: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    let Some(members) = object.as_object() else {
        return vec![format!("{path}: not a dictionary")];
    };
    let keys = keys.as_vec().expect("a key list");
    for (name, value) in members {
        match keys.iter().find(|k| k["key"].as_str() == Some(name)) {
            None => wrong.push(format!("{path}.{name}: not a key of the schema")),
            Some(key) => wrong.extend(value_violations(value, key, &format!("{path}.{name}"))),
        }
    }
    for key in keys {
        let name = key["key"].as_str().unwrap();
        if key["presence"].as_str() == Some("required") && !members.contains_key(name) {
            wrong.push(format!("{path}.{name}: required, missing"));
        }
    }
    wrong
}

fn value_violations(value: &Value, key: &Yaml, path: &str) -> Vec<String> {
    let ty = key["type"].as_str().unwrap();
    let typed = match ty {
        "<string>" => value.is_string(),
        "<integer>" => value.is_i64(),
        "<boolean>" => value.is_boolean(),
        "<data>" => value.as_str().is_some_and(|s| STANDARD.decode(s).is_ok()),
        "<dictionary>" => value.is_object(),
        "<array>" => value.is_array(),
        other => panic!("{path}: schema type {other} not handled by this check"),
    };
    if !typed {
        return vec![format!("{path}: {value} is not {ty}")];
    }
    let mut wrong = Vec::new();
    if let Some(range) = key["rangelist"].as_vec() {
        let allowed = range.iter().any(|r| match r {
            Yaml::String(s) => value.as_str() == Some(s),
            Yaml::Integer(i) => value.as_i64() == Some(*i),
            _ => false,
        });
        if !allowed {
            wrong.push(format!("{path}: {value} is not in {range:?}"));
        }
    }
    match (ty, &key["subkeys"]) {
        ("<dictionary>", Yaml::Array(_)) => {
            wrong.extend(violations(value, &key["subkeys"], path));
        }
        ("<array>", Yaml::Array(items)) => {
            let item = &items[0];
            let items = value.as_array().unwrap();
            let repetition = &item["repetition"];
            if let (Some(min), Some(max)) = (repetition["min"].as_i64(), repetition["max"].as_i64())
                && !(min..=max).contains(&(items.len() as i64))
            {
                wrong.push(format!("{path}: {} items, not {min} to {max}", items.len()));
            }
            for (i, v) in items.iter().enumerate() {
                wrong.extend(value_violations(v, item, &format!("{path}[{i}]")));
            }
        }
        _ => {}
    }
    wrong
}

/// A credential document checked against its schema, and its type.
fn assert_credential(document: &str, schema_file: &str) -> Value {
    let schema = schema(schema_file);
    let doc: Value = serde_json::from_str(document).unwrap();
    let wrong = violations(&doc, &schema["payloadkeys"], "credential");
    assert!(wrong.is_empty(), "{schema_file}: {wrong:#?}\n{document}");
    doc
}

/// An asset declaration checked against its schema, and against the document it references.
fn assert_declaration(view: &Value, schema_file: &str, data_url: &str) {
    let schema = schema(schema_file);
    let declaration = &view["declaration"];
    assert_eq!(
        declaration["Type"].as_str(),
        schema["payload"]["declarationtype"].as_str(),
        "{declaration}"
    );
    assert!(
        declaration["Identifier"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(
        declaration["ServerToken"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let wrong = violations(&declaration["Payload"], &schema["payloadkeys"], "Payload");
    assert!(wrong.is_empty(), "{schema_file}: {wrong:#?}\n{declaration}");
    let reference = &declaration["Payload"]["Reference"];
    assert_eq!(reference["DataURL"], data_url);
    assert_eq!(reference["ContentType"], "application/json");
    // What the device checks the downloaded bytes against.
    let document = view["document"].as_str().unwrap();
    assert_eq!(reference["Size"], document.len(), "Size is the document's");
    let sha = stdout(&run_with_stdin("sha256sum", &[], document.as_bytes()));
    assert_eq!(
        reference["Hash-SHA-256"].as_str().unwrap(),
        sha.split_whitespace().next().unwrap(),
        "Hash-SHA-256 is the document's"
    );
}

/// `cmd ARGS` fed `input`, to completion.
fn run_with_stdin(cmd: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

async fn credential(server: &Server, device: &str, kind: &str, query: &str) -> (u16, Value) {
    let resp = server
        .get(&format!(
            "/api/v1/devices/{device}/credentials/{kind}?{query}"
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status == 200 {
        assert_eq!(
            resp.headers()["cache-control"],
            "no-store",
            "it holds a one-time secret"
        );
    }
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_mdm_gets_declarative_credentials_that_match_apples_schema_and_enrol_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestAttestationCa::generate("Test").unwrap();
    let server = client_identifier_server(tmp.path(), &ca, true);
    assert_eq!(
        register(&server, "mdm-7", json!({"serial": SERIAL, "udid": UDID})).await,
        201
    );

    // ACME: a one-time ClientIdentifier for mdm-7, in a document Apple's schema accepts.
    let data_url = "https://mdm.example/assets/mdm-7/acme.json";
    let (status, view) = credential(
        &server,
        "mdm-7",
        "acme",
        &format!("data_url={data_url}&ttl=1day"),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["credential_type"], "com.apple.credential.acme");
    assert_eq!(view["device"], "mdm-7");
    let doc = assert_credential(view["document"].as_str().unwrap(), "credentials-acme.yaml");
    assert_declaration(&view, "credential.acme.yaml", data_url);
    assert_eq!(
        doc["DirectoryURL"],
        server.url("/acme/device/directory"),
        "{doc}"
    );
    assert_eq!(doc["Attest"], true);
    assert_eq!(doc["HardwareBound"], true);
    assert_eq!(doc["Subject"], json!([[["CN", "mdm-7"]]]));

    // The device does what the document says: orders with its ClientIdentifier, attests,
    // and gets a certificate naming its serial number.
    let mut device = Client::new(&server, "device").await;
    device.register().await;
    let client_identifier = doc["ClientIdentifier"].as_str().unwrap();
    let pending = order_for(&mut device, client_identifier).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    attest(&mut device, &pending, &ca, &key).await;
    let resp = finalize(&mut device, &pending, &key, "mdm-7").await;
    assert_eq!(resp.status, 200, "finalize: {}", resp.text);
    let device_view = server.get_json("/api/v1/devices/mdm-7").await;
    assert_eq!(device_view["certificates"][0]["protocol"], "acme");
    assert_eq!(
        device_view["certificates"][0]["attestation"]["serial"],
        SERIAL
    );

    // Every call mints anew: a second document differs (and its hash with it).
    let (_, again) = credential(&server, "mdm-7", "acme", &format!("data_url={data_url}")).await;
    assert_ne!(again["document"], view["document"]);
    assert_ne!(
        again["declaration"]["Payload"]["Reference"]["Hash-SHA-256"],
        view["declaration"]["Payload"]["Reference"]["Hash-SHA-256"]
    );

    // SCEP: a one-time challenge bound to mdm-7, and the CAFingerprint of GetCACert's root.
    let data_url = "https://mdm.example/assets/mdm-7/scep.json";
    let (status, view) =
        credential(&server, "mdm-7", "scep", &format!("data_url={data_url}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["credential_type"], "com.apple.credential.scep");
    let doc = assert_credential(view["document"].as_str().unwrap(), "credentials-scep.yaml");
    assert_declaration(&view, "credential.scep.yaml", data_url);
    assert_eq!(doc["URL"], server.url("/scep"));
    let served = server.scep_ca_certs(&tmp.path().join("getcacert")).await;
    let served = split_pem(
        tmp.path(),
        "served",
        &std::fs::read_to_string(&served).unwrap(),
    );
    let root_sha1 = stdout(&run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha1",
            "-in",
            served.last().unwrap().to_str().unwrap(),
        ],
    ));
    let root_sha1 = hex_of(root_sha1.trim().rsplit('=').next().unwrap());
    assert_eq!(
        STANDARD
            .decode(doc["CAFingerprint"].as_str().unwrap())
            .unwrap(),
        root_sha1,
        "SHA-1 of the root GetCACert serves"
    );
    // A real SCEP client enrols as the document says: its subject, key size and challenge.
    let challenge = doc["Challenge"].as_str().unwrap();
    let subject = doc["Subject"][0][0].as_array().unwrap();
    let dn = format!(
        "{}={}",
        subject[0].as_str().unwrap(),
        subject[1].as_str().unwrap()
    );
    let bits = doc["Keysize"].as_u64().unwrap() as u32;
    let (out, key) = strongswan_enrol(&server, &tmp.path().join("scep"), &dn, challenge, bits);
    assert!(out.status.success(), "pki --scep: {}", stderr(&out));
    let cert = tmp.path().join("scep.der");
    std::fs::write(&cert, &out.stdout).unwrap();
    let getcacert = server.scep_ca_certs(&tmp.path().join("getcacert-2")).await;
    assert_verifies_with_getcacert(&getcacert, &cert);
    assert_certifies_key(&cert, &key);
    let device_view = server.get_json("/api/v1/devices/mdm-7").await;
    let scep_certs = device_view["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["protocol"] == "scep")
        .count();
    assert_eq!(scep_certs, 1, "recorded for mdm-7: {device_view}");
    // Once.
    let (out, _) = strongswan_enrol(
        &server,
        &tmp.path().join("scep-again"),
        &dn,
        challenge,
        bits,
    );
    assert!(!out.status.success(), "a used challenge is refused");

    // The CLI prints the same kind of document, offline values included.
    let out = server.cli_ok(&[
        "profile",
        "acme",
        "--format",
        "ddm",
        "--client-identifier",
        "C02TESTDEV01",
    ]);
    let doc = assert_credential(&out, "credentials-acme.yaml");
    assert_eq!(doc["ClientIdentifier"], "C02TESTDEV01");
    let out = server.cli_ok(&[
        "profile",
        "scep",
        "--format",
        "ddm",
        "--one-time",
        "--device",
        "mdm-7",
    ]);
    let doc = assert_credential(&out, "credentials-scep.yaml");
    assert_eq!(doc["Subject"], json!([[["CN", "mdm-7"]]]));
    assert_eq!(
        STANDARD
            .decode(doc["CAFingerprint"].as_str().unwrap())
            .unwrap(),
        root_sha1
    );
    assert!(!out.ends_with('\n'), "byte for byte: no trailing newline");

    // Bad requests are refused, saying why (each before anything is minted).
    for (device, kind, query, status, why) in [
        (
            "mdm-7",
            "acme",
            "data_url=http://mdm.example/a",
            400,
            "https:// URL is required",
        ),
        ("mdm-7", "scep", "", 400, "data_url"),
        (
            "mdm-7",
            "smime",
            "data_url=https://mdm.example/a",
            400,
            "smime",
        ),
        (
            "nobody",
            "acme",
            "data_url=https://mdm.example/a",
            409,
            "not registered",
        ),
        (
            "mdm-7",
            "acme",
            "data_url=https://mdm.example/a&profile=nope",
            404,
            "no ACME profile",
        ),
        (
            "mdm-7",
            "acme",
            "data_url=https://mdm.example/a&profile=default",
            400,
            "ClientIdentifier",
        ),
        (
            "mdm-7",
            "scep",
            "data_url=https://mdm.example/a&profile=device",
            400,
            "no profiles",
        ),
        (
            "mdm-7",
            "scep",
            "data_url=https://mdm.example/a&ttl=31days",
            400,
            "ttl",
        ),
    ] {
        let (got, body) = credential(&server, device, kind, query).await;
        assert_eq!(got, status, "{kind} {query}: {body}");
        assert!(body.to_string().contains(why), "{kind} {query}: {body}");
    }
}

fn hex_of(colons: &str) -> Vec<u8> {
    colons
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// The check above is only worth what it catches.
#[test]
fn the_schema_check_catches_what_the_schema_forbids() {
    let schema = schema("credentials-scep.yaml");
    let wrong = violations(
        &json!({
            "Challenge": 7,
            "Keysize": 3072,
            "Subject": [[["CN"]]],
            "CAFingerprint": "not base64!",
            "Colour": "blue",
        }),
        &schema["payloadkeys"],
        "c",
    );
    for expected in [
        "c.Challenge: 7 is not <string>",
        "c.Keysize: 3072 is not in",
        "c.Subject[0][0]: 1 items, not 2 to 2",
        "c.CAFingerprint: \"not base64!\" is not <data>",
        "c.Colour: not a key of the schema",
        "c.URL: required, missing",
    ] {
        assert!(
            wrong.iter().any(|w| w.starts_with(expected)),
            "{expected}: {wrong:#?}"
        );
    }
    assert_eq!(wrong.len(), 6, "{wrong:#?}");
}
