//! The client side, for the load generator and the tests: a P-256 account key that signs
//! flattened JWS the way RFC 8555 clients do, and an http-01 responder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use enrollca::acme::jws::Jwk;

pub struct AccountKey {
    pair: EcdsaKeyPair,
}

impl AccountKey {
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key generation");
        Self::from_pkcs8(pkcs8.as_ref()).expect("a key ring just made")
    }

    /// A P-256 key from PKCS#8 (e.g. a certificate's key, to revoke with it).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, ring::error::KeyRejected> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )?;
        Ok(Self { pair })
    }

    pub fn jwk(&self) -> Jwk {
        let point = self.pair.public_key().as_ref();
        Jwk::P256 {
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
        }
    }

    pub fn jwk_json(&self) -> Value {
        serde_json::to_value(self.jwk()).expect("a JWK serialises")
    }

    /// `token.thumbprint`: what http-01 serves.
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.jwk().thumbprint())
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), msg)
            .expect("ECDSA signing")
            .as_ref()
            .to_vec()
    }

    /// Flattened JWS over `protected` and `payload` (None: empty, for POST-as-GET).
    pub fn jws(&self, protected: &Value, payload: Option<&Value>) -> Value {
        let p = URL_SAFE_NO_PAD.encode(protected.to_string());
        let pl = payload
            .map(|v| URL_SAFE_NO_PAD.encode(v.to_string()))
            .unwrap_or_default();
        let sig = self.sign(format!("{p}.{pl}").as_bytes());
        json!({"protected": p, "payload": pl, "signature": URL_SAFE_NO_PAD.encode(sig)})
    }

    /// The usual protected header: ES256, the URL, the nonce, and `kid` (or this `jwk`).
    pub fn header(&self, url: &str, nonce: &str, kid: Option<&str>) -> Value {
        let mut h = json!({"alg": "ES256", "url": url, "nonce": nonce});
        match kid {
            Some(kid) => h["kid"] = json!(kid),
            None => h["jwk"] = self.jwk_json(),
        }
        h
    }
}

/// Answers http-01 on 127.0.0.1 with the key authorizations it is given.
#[derive(Clone)]
pub struct Http01Responder {
    answers: Arc<Mutex<HashMap<String, String>>>,
    pub port: u16,
}

impl Http01Responder {
    /// Listens on 127.0.0.1:`port` (0 picks a free one).
    pub async fn start(port: u16) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let shared = answers.clone();
        let app = axum::Router::new().route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(
                move |axum::extract::Path(token): axum::extract::Path<String>| {
                    let answer = shared.lock().ok().and_then(|a| a.get(&token).cloned());
                    async move {
                        match answer {
                            Some(a) => (axum::http::StatusCode::OK, a),
                            None => (axum::http::StatusCode::NOT_FOUND, String::new()),
                        }
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { answers, port })
    }

    pub fn serve(&self, token: &str, key_authorization: String) {
        if let Ok(mut a) = self.answers.lock() {
            a.insert(token.to_owned(), key_authorization);
        }
    }

    pub fn forget(&self, token: &str) {
        if let Ok(mut a) = self.answers.lock() {
            a.remove(token);
        }
    }
}
