//! A small ACME client for what the real clients cannot do: send malformed, replayed and
//! misdirected requests on purpose, and answer http-01 from inside the test.

use std::path::Path;

use crate::acme::Http01Responder;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use super::*;

/// The test's account keys are the load generator's.
pub use crate::acme::AccountKey as Key;

/// The test's http-01 responder is the load generator's.
pub struct Responder;

impl Responder {
    pub async fn start() -> Http01Responder {
        Http01Responder::start(0).await.unwrap()
    }
}

/// Deliberate deviations from a well-formed request.
#[derive(Default)]
pub struct Tweak<'a> {
    /// `Some(None)` leaves the nonce out; `Some(Some(n))` sends `n`.
    pub nonce: Option<Option<String>>,
    /// The `url` header value, instead of the request URL.
    pub url: Option<String>,
    /// The `alg` header value, instead of ES256.
    pub alg: Option<&'a str>,
    /// Name the key by `jwk` even though the client has an account.
    pub force_jwk: bool,
    /// Name this account URL as `kid`.
    pub kid: Option<String>,
    /// Sign with this key instead of the account key.
    pub signer: Option<&'a Key>,
    /// Send the signature the way Apple devices do when r or s has a leading zero byte:
    /// without it (62 or 63 bytes instead of 64). Re-signs until such a signature occurs.
    pub apple_short_signature: bool,
}

pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Response {
    /// The ACME problem type without its URN prefix.
    pub fn problem(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
            .unwrap_or_else(|| panic!("not an ACME problem: {} {}", self.status, self.text))
    }

    /// The type of subproblem `i` without its URN prefix.
    pub fn subproblem(&self, i: usize) -> &str {
        self.body["subproblems"][i]["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
            .unwrap_or_else(|| panic!("no subproblem {i}: {} {}", self.status, self.text))
    }

    pub fn location(&self) -> String {
        self.headers["location"].to_str().unwrap().to_owned()
    }
}

pub struct Client {
    pub http: reqwest::Client,
    pub dir: Value,
    pub key: Key,
    pub kid: Option<String>,
    nonce: Option<String>,
}

impl Client {
    /// A client of `profile`'s directory, trusting the server's roots.
    pub async fn new(server: &Server, profile: &str) -> Self {
        let roots = server.roots_pem().await;
        Self::at(&server.https, &roots, profile, true).await
    }

    /// A client of `profile`'s directory at `base` (e.g. a front for several nodes),
    /// trusting `roots`; `reuse = false` opens a new connection for every request, so a
    /// round-robin front sends each to the next node.
    pub async fn at(base: &str, roots: &str, profile: &str, reuse: bool) -> Self {
        let mut http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(roots.as_bytes()).unwrap());
        if !reuse {
            http = http.pool_max_idle_per_host(0);
        }
        let http = http.build().unwrap();
        let dir = http
            .get(format!("{base}/acme/{profile}/directory"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            http,
            dir,
            key: Key::generate(),
            kid: None,
            nonce: None,
        }
    }

    pub fn url(&self, name: &str) -> String {
        self.dir[name].as_str().unwrap().to_owned()
    }

    pub async fn fresh_nonce(&mut self) -> String {
        if let Some(n) = self.nonce.take() {
            return n;
        }
        let resp = self.http.head(self.url("newNonce")).send().await.unwrap();
        resp.headers()["replay-nonce"].to_str().unwrap().to_owned()
    }

    /// Signs `payload` (None: POST-as-GET) for `url` and sends it.
    pub async fn post(&mut self, url: &str, payload: Option<Value>) -> Response {
        self.post_with(url, payload, Tweak::default()).await
    }

    /// The JWS body `post_with` would send.
    pub async fn jws(&mut self, url: &str, payload: Option<Value>, tweak: &Tweak<'_>) -> Value {
        let nonce = match &tweak.nonce {
            Some(n) => n.clone(),
            None => Some(self.fresh_nonce().await),
        };
        let signer = tweak.signer.unwrap_or(&self.key);
        let mut protected = json!({
            "alg": tweak.alg.unwrap_or("ES256"),
            "url": tweak.url.clone().unwrap_or_else(|| url.to_owned()),
        });
        if let Some(n) = nonce {
            protected["nonce"] = json!(n);
        }
        match (&tweak.kid, &self.kid, tweak.force_jwk) {
            (Some(kid), _, _) => protected["kid"] = json!(kid),
            (None, Some(kid), false) => protected["kid"] = json!(kid),
            _ => protected["jwk"] = signer.jwk_json(),
        }
        if tweak.apple_short_signature {
            return apple_short_jws(signer, &protected, payload.as_ref());
        }
        signer.jws(&protected, payload.as_ref())
    }

    pub async fn post_with(
        &mut self,
        url: &str,
        payload: Option<Value>,
        tweak: Tweak<'_>,
    ) -> Response {
        let body = self.jws(url, payload, &tweak).await;
        self.send(url, &body).await
    }

    pub async fn send(&mut self, url: &str, body: &Value) -> Response {
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/jose+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.nonce = headers
            .get("replay-nonce")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response {
            status,
            headers,
            body,
            text,
        }
    }

    /// newAccount; remembers the account URL.
    pub async fn register(&mut self) -> Response {
        let url = self.url("newAccount");
        let resp = self
            .post(&url, Some(json!({"termsOfServiceAgreed": true})))
            .await;
        assert!(
            matches!(resp.status, 200 | 201),
            "newAccount: {}",
            resp.text
        );
        self.kid = Some(resp.location());
        resp
    }

    /// newOrder for names (`ip` identifiers for addresses, `dns` otherwise).
    pub async fn order(&mut self, names: &[&str]) -> (String, Value) {
        let ids: Vec<Value> = names
            .iter()
            .map(|n| {
                let kind = if n.parse::<std::net::IpAddr>().is_ok() {
                    "ip"
                } else {
                    "dns"
                };
                json!({"type": kind, "value": n})
            })
            .collect();
        let url = self.url("newOrder");
        let resp = self.post(&url, Some(json!({"identifiers": ids}))).await;
        assert_eq!(resp.status, 201, "newOrder: {}", resp.text);
        (resp.location(), resp.body)
    }

    /// Answers every http-01 challenge of the order through `responder` and waits until the
    /// order leaves `pending`; returns the order.
    pub async fn authorize(
        &mut self,
        order_url: &str,
        order: &Value,
        responder: &Http01Responder,
    ) -> Value {
        for authz in order["authorizations"].as_array().unwrap() {
            let authz = self.post(authz.as_str().unwrap(), None).await.body;
            let ch = challenge(&authz, "http-01");
            let token = ch["token"].as_str().unwrap();
            responder.serve(token, self.key.key_authorization(token));
            let resp = self
                .post(ch["url"].as_str().unwrap(), Some(json!({})))
                .await;
            assert_eq!(resp.status, 200, "challenge: {}", resp.text);
            // A loopback validation settles while the server holds the answer.
            assert!(
                matches!(resp.body["status"].as_str(), Some("valid" | "invalid")),
                "challenge answered before it settled: {}",
                resp.text
            );
        }
        self.poll(order_url, "pending").await
    }

    /// finalize `order` with a DER CSR.
    pub async fn finalize(&mut self, order: &Value, csr_der: &[u8]) -> Response {
        self.post(
            order["finalize"].as_str().unwrap(),
            Some(json!({"csr": B64.encode(csr_der)})),
        )
        .await
    }

    /// POST-as-GET `url` until its status is no longer `while_status`.
    pub async fn poll(&mut self, url: &str, while_status: &str) -> Value {
        for _ in 0..200 {
            let body = self.post(url, None).await.body;
            if body["status"] != while_status {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{url} stayed {while_status}");
    }
}

/// A JWS whose ES256 signature has r or s shortened by its leading zero bytes, as Apple's
/// ACME client sends about 1 in 128 of its requests.
fn apple_short_jws(key: &Key, protected: &Value, payload: Option<&Value>) -> Value {
    let p = B64.encode(protected.to_string());
    let pl = payload
        .map(|v| B64.encode(v.to_string()))
        .unwrap_or_default();
    let input = format!("{p}.{pl}");
    for _ in 0..10_000 {
        let sig = key.sign(input.as_bytes());
        let (r, s) = sig.split_at(32);
        if r[0] == 0 || s[0] == 0 {
            let strip = |x: &[u8]| x[x.iter().take_while(|b| **b == 0).count()..].to_vec();
            let short = [strip(r), strip(s)].concat();
            assert!(short.len() < 64);
            return json!({"protected": p, "payload": pl, "signature": B64.encode(&short)});
        }
    }
    panic!("no signature with a leading zero byte in 10,000 tries");
}

/// The authorization's challenge of type `kind`.
pub fn challenge(authz: &Value, kind: &str) -> Value {
    authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} challenge: {authz}"))
        .clone()
}

/// A DER CSR for `names` with a fresh P-256 key (rcgen).
pub fn csr(names: &[&str]) -> (Vec<u8>, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    // Names only, as certbot sends them (rcgen would add a placeholder common name).
    params.distinguished_name = rcgen::DistinguishedName::new();
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    (der, key)
}

/// The server's roots as a file, for clients that take a CA bundle.
pub async fn roots_file(server: &Server, dir: &Path) -> String {
    let pem = server.roots_pem().await;
    let path = dir.join("roots.pem");
    std::fs::write(&path, pem).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Certificates of the store, as the API lists them.
pub async fn certificates(server: &Server) -> Vec<Value> {
    server.get_json("/api/v1/certificates?limit=1000").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Checks a leaf + issuer bundle with openssl: chain to the roots, TLS server purpose, the
/// names, and that it certifies `key`. Returns the leaf's serial.
pub fn check_issued(dir: &Path, roots: &str, bundle: &str, key: &Path, name: &str) -> String {
    let parts = split_pem(dir, &format!("{name}-chain"), bundle);
    assert_eq!(parts.len(), 2, "leaf and issuing CA, leaf first");
    assert_chain_verifies_for(
        "sslserver",
        roots,
        parts[1].to_str().unwrap(),
        parts[0].to_str().unwrap(),
    );
    let text = stdout(&run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            parts[0].to_str().unwrap(),
        ],
    ));
    assert!(text.contains(&format!("DNS:{name}")), "{text}");
    assert_certifies_key(&parts[0], key);
    serial_of(&parts[0])
}
