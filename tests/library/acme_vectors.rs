//! JWS requests signed by an independent implementation (Python `cryptography`, see
//! tests/vectors/acme/README.md): they parse, and their signatures verify with our code. A
//! tls-alpn-01 validation certificate made by openssl passes RFC 8737's checks.

use enrollca::acme::jws::{Binding, Jws, KeyRef};
use enrollca::acme::model::Identifier;
use enrollca::acme::tls_alpn01::check_certificate;

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/vectors/acme/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn embedded_key(jws: &Jws) -> enrollca::acme::jws::Jwk {
    match &jws.header.key {
        KeyRef::Jwk(jwk) => jwk.clone(),
        KeyRef::Kid(kid) => panic!("expected a jwk, got kid {kid}"),
    }
}

#[test]
fn es256_and_rs256_new_account_requests_verify() {
    for name in ["new-account-es256.json", "new-account-rs256.json"] {
        let jws = Jws::parse(&vector(name)).unwrap();
        let key = embedded_key(&jws);
        jws.verify(&key).unwrap_or_else(|e| panic!("{name}: {e}"));
        let payload: serde_json::Value = jws.json().unwrap();
        assert_eq!(payload["termsOfServiceAgreed"], true, "{name}");
    }
}

#[test]
fn the_external_account_binding_verifies_with_its_mac_key_only() {
    let jws = Jws::parse(&vector("new-account-es256.json")).unwrap();
    let payload: serde_json::Value = jws.json().unwrap();
    let binding = Binding::parse(&payload["externalAccountBinding"]).unwrap();
    assert_eq!(binding.kid, "kid-1");
    assert_eq!(
        binding.jwk,
        embedded_key(&jws),
        "it vouches for the account key"
    );
    binding.verify(&[b'k'; 32]).unwrap();
    assert!(binding.verify(&[b'j'; 32]).is_err());
}

#[test]
fn a_key_change_carries_an_inner_jws_signed_by_the_new_key() {
    let outer = Jws::parse(&vector("key-change.json")).unwrap();
    assert!(matches!(outer.header.key, KeyRef::Kid(_)));
    let inner = Jws::parse(&outer.payload).unwrap();
    assert_eq!(inner.header.url, outer.header.url);
    assert!(inner.header.nonce.is_none());
    inner.verify(&embedded_key(&inner)).unwrap();
}

#[test]
fn kid_requests_parse_with_and_without_payload() {
    let get = Jws::parse(&vector("post-as-get-kid.json")).unwrap();
    assert!(get.is_post_as_get());
    let order = Jws::parse(&vector("new-order.json")).unwrap();
    let payload: serde_json::Value = order.json().unwrap();
    assert_eq!(payload["identifiers"].as_array().unwrap().len(), 2);
}

#[test]
fn an_openssl_validation_certificate_proves_its_name_and_key_authorization_only() {
    let der = vector("tls-alpn-01.der");
    let key_authorization =
        "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";
    let name = Identifier::dns("alpn.example.test");
    check_certificate(&der, &name, key_authorization).unwrap();
    let other = check_certificate(
        &der,
        &Identifier::dns("other.example.test"),
        key_authorization,
    );
    assert!(
        other
            .unwrap_err()
            .contains("must be exactly dns:other.example.test")
    );
    let wrong = check_certificate(&der, &name, "another.key-authorization");
    assert!(
        wrong
            .unwrap_err()
            .contains("does not match the key authorization")
    );
    let cut = check_certificate(&der[..der.len() / 2], &name, key_authorization);
    assert!(cut.unwrap_err().contains("not DER X.509"));
}
