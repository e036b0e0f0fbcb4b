//! The OpenAPI document served by the real binary matches what it serves: every documented
//! operation exists (and demands a token), every API route in the route table is documented,
//! and live responses validate against the documented schemas (JSON Schema, by the
//! `jsonschema` crate).

use enrollca_testkit::harness as common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

/// `/api/v1/devices/{id}` and `/api/v1/devices/{x}` are the same route.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "{}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

fn validator(doc: &Value, schema_name: &str) -> jsonschema::Validator {
    let schema = json!({
        "$ref": format!("#/components/schemas/{schema_name}"),
        "components": doc["components"],
    });
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("schema {schema_name} does not compile: {e}"))
}

fn validate(doc: &Value, schema_name: &str, instance: &Value) {
    let errors: Vec<String> = validator(doc, schema_name)
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_name}: {errors:?}\n{instance:#}");
}

/// The schema name a documented operation's 200 response refers to.
fn response_schema(doc: &Value, path: &str, method: &str) -> String {
    let schema =
        &doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"];
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema["items"]["$ref"].as_str())
        .unwrap_or_else(|| panic!("{method} {path}: no JSON schema for 200: {schema}"));
    reference.rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_document_matches_the_routes_and_the_responses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let server = Server::start(&data, &[]);

    let resp = server
        .client
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // Every documented operation exists and, but for the document itself, needs a token.
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        documented.insert(shape(path));
        for method in ops.as_object().unwrap().keys() {
            let url = server.url(&path.replace('{', "x").replace('}', ""));
            let req = server
                .client
                .request(method.to_uppercase().parse().unwrap(), &url);
            let status = req.send().await.unwrap().status().as_u16();
            let expected = if path == "/api/v1/openapi.json" {
                200
            } else {
                401
            };
            assert_eq!(status, expected, "{method} {path}");
        }
    }

    // Every API route in the route table is documented.
    let table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/app/router.rs")).unwrap();
    let routes: BTreeSet<String> = table
        .split('"')
        .filter(|s| s.starts_with("/api/v1"))
        .map(shape)
        .collect();
    assert!(routes.len() >= 20, "{routes:?}");
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes without documentation: {missing:?}"
    );

    // Live responses validate against their documented schemas.
    let (_, csr) = openssl_csr(tmp.path(), "doc", "ec:P-256", "/CN=doc", None);
    let issued = server
        .post("/api/v1/certificates")
        .json(&json!({"csr": csr, "device": "doc-device", "issuer": "ecdsa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 201);
    let issued: Value = issued.json().await.unwrap();
    let serial = issued["certificate"]["serial"].as_str().unwrap().to_owned();
    let put = server
        .client
        .put(server.url("/api/v1/devices/doc-device"))
        .bearer_auth(&server.token)
        .json(&json!({"serial": "C02DOC"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let revoked = server
        .post(&format!("/api/v1/certificates/{serial}/revoke"))
        .json(&json!({"reason": "superseded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    validate(
        &doc,
        &response_schema(&doc, "/api/v1/certificates/{serial}/revoke", "post"),
        &revoked.json().await.unwrap(),
    );

    for (path, live) in [
        (
            "/api/v1/certificates",
            "/api/v1/certificates?limit=10".to_owned(),
        ),
        (
            "/api/v1/certificates/{serial}",
            format!("/api/v1/certificates/{serial}"),
        ),
        (
            "/api/v1/devices/{id}",
            "/api/v1/devices/doc-device".to_owned(),
        ),
        ("/api/v1/issuers", "/api/v1/issuers".to_owned()),
        ("/api/v1/events", "/api/v1/events?after=0".to_owned()),
        ("/api/v1/tokens", "/api/v1/tokens".to_owned()),
        ("/api/v1/scep/pending", "/api/v1/scep/pending".to_owned()),
    ] {
        let body = server.get_json(&live).await;
        let name = response_schema(&doc, path, "get");
        let instance = if doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["type"]
            == "array"
        {
            body.as_array().unwrap().first().cloned().unwrap()
        } else {
            body
        };
        validate(&doc, &name, &instance);
    }
    let validated = server
        .post("/api/v1/validate")
        .json(&json!({"certificate": issued["chain_pem"]}))
        .send()
        .await
        .unwrap();
    validate(
        &doc,
        &response_schema(&doc, "/api/v1/validate", "post"),
        &validated.json().await.unwrap(),
    );
    let batch = server
        .post("/api/v1/validate/batch")
        .json(&json!({"certificates": [issued["chain_pem"], "not a certificate"]}))
        .send()
        .await
        .unwrap();
    validate(
        &doc,
        &response_schema(&doc, "/api/v1/validate/batch", "post"),
        &batch.json().await.unwrap(),
    );
}
