//! The project's own SCEP client against the real binary: what the third-party clients do not
//! exercise (every content cipher, SHA-512, GetCert, GetCRL) and the refusals with their
//! failInfo.

use enrollca_testkit::harness as common;

use common::*;
use der::{Decode, Encode};
use enrollca::scep::message::{Cipher, Digest, FailInfo, MessageType, PkiStatus};
use enrollca::scep::wire::{self, NewRequest, SignedMessage};
use enrollca_testkit::scep::Identity;
use openssl::x509::X509;

const CHALLENGE: &str = "client-challenge";

/// A server in a fresh data directory under `tmp`, with the static challenge and `extra`.
fn scep_server(tmp: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let data = init_dir(tmp, &[], &[]);
    let mut envs = vec![("ENROLLCA_SCEP_CHALLENGE", CHALLENGE)];
    envs.extend_from_slice(extra);
    Server::start(&data, &envs)
}

/// Our SCEP client against one server, holding what GetCACert served when it was made.
pub(crate) struct Client<'a> {
    server: &'a Server,
    ca: X509,
    /// Every certificate GetCACert served, in order (DER).
    served: Vec<Vec<u8>>,
    transaction: String,
}

impl<'a> Client<'a> {
    pub(crate) async fn new(server: &'a Server) -> Self {
        let der = reqwest::get(server.url("/scep?operation=GetCACert"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let p7 =
            openssl::pkcs7::Pkcs7::from_der(&der).expect("a chain: the SCEP CA is under the root");
        let served = p7.signed().unwrap().certificates().unwrap();
        Self {
            server,
            ca: enrollca_testkit::scep::ca_of_getcacert(&der).unwrap(),
            served: served.iter().map(|c| c.to_der().unwrap()).collect(),
            transaction: "test-transaction-1".into(),
        }
    }

    /// `exchange` with AES-256 and SHA-256.
    pub(crate) async fn send(
        &self,
        device: &Identity,
        message_type: MessageType,
        content: &[u8],
    ) -> (SignedMessage, Option<(Vec<X509>, Cipher)>) {
        self.exchange(
            device,
            message_type,
            content,
            Cipher::Aes256,
            Digest::Sha256,
        )
        .await
    }

    /// The same client, speaking in another SCEP transaction.
    fn in_transaction(self, id: &str) -> Self {
        Self {
            transaction: id.into(),
            ..self
        }
    }

    fn build(
        &self,
        device: &Identity,
        message_type: MessageType,
        content: &[u8],
        cipher: Cipher,
        digest: Digest,
    ) -> (Vec<u8>, Vec<u8>) {
        let req = NewRequest {
            message_type,
            transaction_id: &self.transaction,
            digest,
            cipher,
            ca: &self.ca,
            content,
        };
        wire::request(&device.signer(), &req).unwrap()
    }

    async fn post(&self, body: Vec<u8>) -> reqwest::Response {
        self.server
            .client
            .post(self.server.url("/scep?operation=PKIOperation"))
            .header("content-type", "application/x-pki-message")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Sends a request; returns the reply's signed layer and, on success, its certificates and
    /// the cipher the reply used.
    async fn exchange(
        &self,
        device: &Identity,
        message_type: MessageType,
        content: &[u8],
        cipher: Cipher,
        digest: Digest,
    ) -> (SignedMessage, Option<(Vec<X509>, Cipher)>) {
        let (reply, inner) = self
            .exchange_raw(device, message_type, content, cipher, digest)
            .await;
        let Some((inner, used)) = inner else {
            return (reply, None);
        };
        let p7 = openssl::pkcs7::Pkcs7::from_der(&inner).unwrap();
        let certs = p7
            .signed()
            .unwrap()
            .certificates()
            .unwrap()
            .iter()
            .map(|c| c.to_owned())
            .collect();
        (reply, Some((certs, used)))
    }

    /// `exchange`, returning the decrypted content of a successful reply as it is.
    async fn exchange_raw(
        &self,
        device: &Identity,
        message_type: MessageType,
        content: &[u8],
        cipher: Cipher,
        digest: Digest,
    ) -> (SignedMessage, Option<(Vec<u8>, Cipher)>) {
        let (body, nonce) = self.build(device, message_type, content, cipher, digest);
        let resp = self.post(body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/x-pki-message");
        let reply = wire::open(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(reply.message_type, MessageType::CertRep);
        assert_eq!(reply.transaction_id, self.transaction);
        assert_eq!(reply.recipient_nonce.as_deref(), Some(nonce.as_slice()));
        assert_ne!(reply.sender_nonce, nonce);
        assert_eq!(reply.digest, digest, "the reply uses the request's digest");
        // Signed by the SCEP CA.
        assert_eq!(reply.signer.to_der().unwrap(), self.ca.to_der().unwrap());
        if reply.pki_status != Some(PkiStatus::Success) {
            return (reply, None);
        }
        let (inner, used) = wire::decrypt(&reply.envelope, &device.key).unwrap();
        (reply, Some((inner, used)))
    }
}

#[tokio::test]
async fn every_cipher_and_digest_enrols_and_get_cert_and_get_crl_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let server = scep_server(tmp.path(), &[]);
    let client = Client::new(&server).await;
    let cases = [
        (Cipher::Des, Digest::Sha1, Cipher::Des3),
        (Cipher::Des3, Digest::Sha256, Cipher::Des3),
        (Cipher::Aes128, Digest::Sha256, Cipher::Aes128),
        (Cipher::Aes192, Digest::Sha384, Cipher::Aes192),
        (Cipher::Aes256, Digest::Sha512, Cipher::Aes256),
    ];
    let mut issued = Vec::new();
    for (cipher, digest, reply_cipher) in cases {
        let device = Identity::generate().unwrap();
        let csr = device
            .csr(&format!("client-{cipher:?}"), Some(CHALLENGE))
            .unwrap();
        let (reply, certs) = client
            .exchange(&device, MessageType::PkcsReq, &csr, cipher, digest)
            .await;
        assert_eq!(
            reply.pki_status,
            Some(PkiStatus::Success),
            "{cipher:?}/{digest:?}: {:?}",
            reply.fail_info
        );
        let (certs, used) = certs.unwrap();
        assert_eq!(used, reply_cipher, "{cipher:?} answered with {used:?}");
        assert!(
            certs[0].public_key().unwrap().public_eq(&device.key),
            "issued certificate first"
        );
        // Then the chain GetCACert serves: the SCEP CA, then the root.
        let chain: Vec<Vec<u8>> = certs[1..].iter().map(|c| c.to_der().unwrap()).collect();
        assert_eq!(chain, client.served);
        assert_eq!(chain.len(), 2);
        assert_eq!(certs[1].to_der().unwrap(), client.ca.to_der().unwrap());
        issued.push((device, certs[0].clone()));
    }

    // GetCert: by issuer and serial, for a certificate we issued.
    let (device, cert) = &issued[0];
    let x509 = x509_cert::Certificate::from_der(&cert.to_der().unwrap()).unwrap();
    let ias = cms::cert::IssuerAndSerialNumber {
        issuer: x509.tbs_certificate.issuer.clone(),
        serial_number: x509.tbs_certificate.serial_number.clone(),
    };
    let (reply, certs) = client
        .send(device, MessageType::GetCert, &ias.to_der().unwrap())
        .await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Success));
    assert_eq!(
        certs.unwrap().0[0].to_der().unwrap(),
        cert.to_der().unwrap()
    );

    let events = server.events().await.len();
    let unknown = cms::cert::IssuerAndSerialNumber {
        issuer: x509.tbs_certificate.issuer.clone(),
        serial_number: x509_cert::serial_number::SerialNumber::new(&[0x42; 16]).unwrap(),
    };
    let (reply, _) = client
        .send(device, MessageType::GetCert, &unknown.to_der().unwrap())
        .await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Failure));
    assert_eq!(reply.fail_info, Some(FailInfo::BadCertId));
    assert_eq!(server.events().await.len(), events);

    // GetCRL for the SCEP CA: a CRL in the reply that openssl verifies and that lists a
    // certificate revoked a moment ago.
    let serial = hex_serial(cert);
    let resp = server
        .post(&format!("/api/v1/certificates/{serial}/revoke"))
        .json(&serde_json::json!({"reason": "cessationOfOperation"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (reply, inner) = client
        .exchange_raw(
            device,
            MessageType::GetCrl,
            &ias.to_der().unwrap(),
            Cipher::Aes256,
            Digest::Sha256,
        )
        .await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Success));
    let (inner, _) = inner.unwrap();
    let info = cms::content_info::ContentInfo::from_der(&inner).unwrap();
    let sd: cms::signed_data::SignedData = info.content.decode_as().unwrap();
    let crls = sd.crls.expect("a CRL in the reply").0.into_vec();
    let cms::revocation::RevocationInfoChoice::Crl(crl) = &crls[0] else {
        panic!("not a CRL");
    };
    let crl_path = tmp.path().join("getcrl.der");
    std::fs::write(&crl_path, crl.to_der().unwrap()).unwrap();
    let cafile = tmp.path().join("scep-cafile.pem");
    let ca_pem = String::from_utf8(client.ca.to_pem().unwrap()).unwrap();
    std::fs::write(&cafile, format!("{}{ca_pem}", server.roots_pem().await)).unwrap();
    let text = openssl_verified_crl(&crl_path, &cafile);
    assert!(
        text.contains(&format!("Serial Number: {}", serial.to_uppercase())),
        "{text}"
    );
    assert!(text.contains("Cessation Of Operation"), "{text}");
}

/// A certificate's serial as the API names it (lowercase hex).
fn hex_serial(cert: &X509) -> String {
    hex::encode(cert.serial_number().to_bn().unwrap().to_vec())
}

#[tokio::test]
async fn refusals_carry_the_right_fail_info_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = scep_server(tmp.path(), &[]);
    let client = Client::new(&server).await;
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());

    // RSA-1024 request (made by openssl, kept under tests/vectors).
    let weak = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/csr/weak-rsa-1024.der"
    ))
    .unwrap();
    let cases = [
        // Signed by one key, certificate requested for another: no proof of possession.
        (
            "signer's key is not the CSR's",
            MessageType::PkcsReq,
            b.csr("mismatch", Some(CHALLENGE)).unwrap(),
            FailInfo::BadMessageCheck,
        ),
        ("RSA-1024", MessageType::PkcsReq, weak, FailInfo::BadAlg),
        (
            "garbage where the CSR should be",
            MessageType::PkcsReq,
            b"not a csr".to_vec(),
            FailInfo::BadRequest,
        ),
        (
            "wrong challenge",
            MessageType::PkcsReq,
            a.csr("nochallenge", Some("x")).unwrap(),
            FailInfo::BadRequest,
        ),
        // A RenewalReq signed by a certificate we never issued.
        (
            "renewal by a stranger",
            MessageType::RenewalReq,
            a.csr("renew", Some(CHALLENGE)).unwrap(),
            FailInfo::BadRequest,
        ),
    ];
    for (what, kind, content, fail_info) in cases {
        let (reply, _) = client
            .exchange(&a, kind, &content, Cipher::Aes128, Digest::Sha256)
            .await;
        assert_eq!(
            (reply.pki_status, reply.fail_info),
            (Some(PkiStatus::Failure), Some(fail_info)),
            "{what}"
        );
    }

    // A tampered signature cannot be opened: HTTP 400, before any reply is signed.
    let (mut body, _) = client.build(
        &a,
        MessageType::PkcsReq,
        &a.csr("tampered", Some(CHALLENGE)).unwrap(),
        Cipher::Aes128,
        Digest::Sha256,
    );
    let at = body.len() - 10;
    body[at] ^= 0xff;
    let resp = client.post(body).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("signature"));

    // Truncated.
    let (body, _) = client.build(
        &a,
        MessageType::PkcsReq,
        &a.csr("truncated", Some(CHALLENGE)).unwrap(),
        Cipher::Aes128,
        Digest::Sha256,
    );
    let resp = client.post(body[..body.len() / 2].to_vec()).await;
    assert_eq!(resp.status(), 400);

    assert_eq!(server.events().await.len(), 0, "no refusal wrote anything");

    // Every refusal is counted by reason.
    let metrics = server.metrics().await;
    for (reason, count) in [
        ("badMessageCheck", 1),
        ("badAlg", 1),
        ("badRequest", 3),
        ("unreadable", 2),
    ] {
        let line = format!("enrollca_scep_refusals_total{{reason=\"{reason}\"}} {count}");
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in\n{metrics}"
        );
    }
}

/// RFC 8894 §3.2.3: what CertPoll carries.
#[derive(der::Sequence)]
struct IssuerAndSubject {
    issuer: x509_cert::name::Name,
    subject: x509_cert::name::Name,
}

#[tokio::test]
async fn held_enrolments_wait_for_the_operator_and_are_collected_by_cert_poll() {
    let tmp = tempfile::tempdir().unwrap();
    let server = scep_server(tmp.path(), &[("ENROLLCA_SCEP_APPROVAL", "manual")]);
    let a = Client::new(&server).await.in_transaction("tx-a");
    let (device_a, device_b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let csr_a = device_a.csr("held-a", Some(CHALLENGE)).unwrap();
    // CertPoll carries IssuerAndSubject; the server goes by the transaction id and signer.
    let poll_body = |client: &Client<'_>, cn: &str| {
        let issuer = x509_cert::Certificate::from_der(&client.ca.to_der().unwrap())
            .unwrap()
            .tbs_certificate
            .subject;
        let subject: x509_cert::name::Name = format!("CN={cn}").parse().unwrap();
        IssuerAndSubject { issuer, subject }.to_der().unwrap()
    };

    // Accepted for review: PENDING, nothing issued.
    let (reply, _) = a.send(&device_a, MessageType::PkcsReq, &csr_a).await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Pending));
    let (reply, _) = a
        .send(&device_a, MessageType::CertPoll, &poll_body(&a, "held-a"))
        .await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Pending));
    assert!(server.events().await.is_empty());

    // Only the key that asked may poll.
    let (reply, _) = a
        .send(&device_b, MessageType::CertPoll, &poll_body(&a, "held-a"))
        .await;
    assert_eq!(
        (reply.pki_status, reply.fail_info),
        (Some(PkiStatus::Failure), Some(FailInfo::BadMessageCheck))
    );

    // The operator sees it and approves it with the CLI.
    let out = server.cli(&["scep", "pending", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let held: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(held["items"][0]["transaction_id"], "tx-a");
    assert_eq!(held["items"][0]["state"], "waiting");
    let out = server.cli(&["scep", "approve", "tx-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("approved: certificate"),
        "{}",
        stdout(&out)
    );

    // The next poll collects the certificate, for the requested key, issued first.
    let (reply, certs) = a
        .send(&device_a, MessageType::CertPoll, &poll_body(&a, "held-a"))
        .await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Success));
    let (certs, _) = certs.unwrap();
    assert!(certs[0].public_key().unwrap().public_eq(&device_a.key));
    assert_eq!(certs[1].to_der().unwrap(), a.ca.to_der().unwrap());
    // Sending the same PKCSReq again is answered like a poll, not a second certificate.
    let (reply, again) = a.send(&device_a, MessageType::PkcsReq, &csr_a).await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Success));
    assert_eq!(
        again.unwrap().0[0].to_der().unwrap(),
        certs[0].to_der().unwrap()
    );
    assert_eq!(server.events().await.len(), 1);

    // A rejected one: FAILURE on the next poll; a second decision is a conflict.
    let b = Client::new(&server).await.in_transaction("tx-b");
    let csr_b = device_b.csr("held-b", Some(CHALLENGE)).unwrap();
    let (reply, _) = b.send(&device_b, MessageType::PkcsReq, &csr_b).await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Pending));
    let resp = server
        .post("/api/v1/scep/pending/tx-b/reject")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (reply, _) = b
        .send(&device_b, MessageType::CertPoll, &poll_body(&b, "held-b"))
        .await;
    assert_eq!(
        (reply.pki_status, reply.fail_info),
        (Some(PkiStatus::Failure), Some(FailInfo::BadRequest))
    );
    let resp = server
        .post("/api/v1/scep/pending/tx-b/approve")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let resp = server
        .post("/api/v1/scep/pending/nope/approve")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(server.events().await.len(), 1, "refusals issued nothing");
    let waiting = server.get_json("/api/v1/scep/pending").await;
    assert!(waiting["items"].as_array().unwrap().is_empty());
}

/// Issue 23, item 1: the device and the names come from whoever vouched for the request (a
/// one-time challenge, the webhook, the certificate a renewal replaces), never from the
/// request itself. Each refusal is badRequest and writes nothing.
#[tokio::test]
async fn identity_comes_from_the_challenge_or_renewed_certificate_never_from_the_request() {
    use rcgen::DnType::{CommonName, OrganizationName};
    let tmp = tempfile::tempdir().unwrap();
    let server = scep_server(tmp.path(), &[]);
    let client = Client::new(&server).await;
    let refused = |reply: &SignedMessage, what: &str| {
        assert_eq!(
            (reply.pki_status, reply.fail_info),
            (Some(PkiStatus::Failure), Some(FailInfo::BadRequest)),
            "{what}"
        );
    };
    let validate = |cert: &X509| {
        let req = server.post("/api/v1/validate").json(
            &serde_json::json!({"certificate": String::from_utf8(cert.to_pem().unwrap()).unwrap()}),
        );
        async move {
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let subject_of = |cert: &X509| {
        cert.subject_name()
            .entries()
            .map(|e| {
                format!(
                    "{}={}",
                    e.object().nid().short_name().unwrap(),
                    String::from_utf8_lossy(e.data().as_slice())
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let dns_of = |cert: &X509| -> Vec<String> {
        cert.subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.dnsname().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };

    // The static challenge proves knowledge of a fleet-wide secret, not a device: the CN a
    // client asks for is certified, but no device is recorded and `validate` names none.
    let a = Identity::generate().unwrap();
    let csr = a.csr("VICTIM-DEVICE-7", Some(CHALLENGE)).unwrap();
    let (reply, certs) = client.send(&a, MessageType::PkcsReq, &csr).await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Success));
    let certs = certs.unwrap().0;
    let answer = validate(&certs[0]).await;
    assert_eq!(answer["status"], "good");
    assert_eq!(answer["device"], serde_json::Value::Null, "{answer}");

    // SANs the request names itself are refused by default.
    let b = Identity::generate().unwrap();
    let csr = b
        .csr_named(&[(CommonName, "b")], &["victim.example"], Some(CHALLENGE))
        .unwrap();
    let (reply, _) = client.send(&b, MessageType::PkcsReq, &csr).await;
    refused(&reply, "a DNS SAN with the static challenge");

    // A one-time challenge for dev-42: its common name must be dev-42; another is refused and
    // the challenge stays unused; no common name gets dev-42.
    let challenge = server
        .mint_challenge(serde_json::json!({"device": "dev-42"}))
        .await;
    let c = Identity::generate().unwrap();
    let csr = c.csr("VICTIM-DEVICE-7", Some(&challenge)).unwrap();
    let (reply, _) = client.send(&c, MessageType::PkcsReq, &csr).await;
    refused(&reply, "another device's CN with a challenge for dev-42");
    let csr = c.csr_named(&[], &[], Some(&challenge)).unwrap();
    let (reply, certs) = client.send(&c, MessageType::PkcsReq, &csr).await;
    assert_eq!(
        reply.pki_status,
        Some(PkiStatus::Success),
        "{:?}",
        reply.fail_info
    );
    let dev42 = certs.unwrap().0.remove(0);
    assert_eq!(subject_of(&dev42), "CN=dev-42");
    let answer = validate(&dev42).await;
    assert_eq!(answer["device"], "dev-42", "{answer}");

    // A challenge stating subject and SANs: the certificate gets exactly those; a request
    // naming others is refused.
    let challenge = server
        .mint_challenge(serde_json::json!({
            "device": "dev-43",
            "subject": "CN=dev-43,O=Example",
            "sans": ["DNS:dev-43.example"],
        }))
        .await;
    let d = Identity::generate().unwrap();
    for (subject, dns, what) in [
        (
            vec![(CommonName, "dev-43")],
            vec![],
            "a subject without the stated O",
        ),
        (
            vec![(CommonName, "dev-43"), (OrganizationName, "Example")],
            vec!["other.example"],
            "another SAN",
        ),
    ] {
        let csr = d.csr_named(&subject, &dns, Some(&challenge)).unwrap();
        let (reply, _) = client.send(&d, MessageType::PkcsReq, &csr).await;
        refused(&reply, what);
    }
    let csr = d
        .csr_named(
            &[(OrganizationName, "Example"), (CommonName, "dev-43")],
            &["dev-43.example"],
            Some(&challenge),
        )
        .unwrap();
    let (reply, certs) = client.send(&d, MessageType::PkcsReq, &csr).await;
    assert_eq!(
        reply.pki_status,
        Some(PkiStatus::Success),
        "{:?}",
        reply.fail_info
    );
    let dev43 = certs.unwrap().0.remove(0);
    assert_eq!(subject_of(&dev43), "CN=dev-43,O=Example");
    assert_eq!(dns_of(&dev43), vec!["dev-43.example"]);

    // A renewal keeps the subject and SANs of the certificate it renews.
    let renewing = c.with_certificate(dev42.to_der().unwrap());
    let client = client.in_transaction("renewal-1");
    for (subject, dns, what) in [
        (
            vec![(CommonName, "VICTIM-DEVICE-7")],
            vec![],
            "renewal to another CN",
        ),
        (
            vec![(CommonName, "dev-42")],
            vec!["victim.example"],
            "renewal adding a SAN",
        ),
    ] {
        let csr = renewing.csr_named(&subject, &dns, None).unwrap();
        let (reply, _) = client.send(&renewing, MessageType::RenewalReq, &csr).await;
        refused(&reply, what);
    }
    let csr = renewing
        .csr_named(&[(CommonName, "dev-42")], &[], None)
        .unwrap();
    let (reply, certs) = client.send(&renewing, MessageType::RenewalReq, &csr).await;
    assert_eq!(
        reply.pki_status,
        Some(PkiStatus::Success),
        "{:?}",
        reply.fail_info
    );
    let renewed = certs.unwrap().0.remove(0);
    assert_eq!(subject_of(&renewed), "CN=dev-42");
    assert_eq!(validate(&renewed).await["device"], "dev-42");

    // Exactly the four successes wrote anything.
    assert_eq!(
        server.event_kinds().await,
        ["issued", "issued", "issued", "renewed"]
    );
}

/// `scep.allowed_sans` lets requests name SAN kinds themselves.
#[tokio::test]
async fn allowed_sans_admit_the_kinds_they_name() {
    let tmp = tempfile::tempdir().unwrap();
    let server = scep_server(tmp.path(), &[("ENROLLCA_SCEP_ALLOWED_SANS", "dns")]);
    let client = Client::new(&server).await;
    let a = Identity::generate().unwrap();
    let csr = a
        .csr_named(
            &[(rcgen::DnType::CommonName, "a")],
            &["a.example"],
            Some(CHALLENGE),
        )
        .unwrap();
    let (reply, certs) = client.send(&a, MessageType::PkcsReq, &csr).await;
    assert_eq!(
        reply.pki_status,
        Some(PkiStatus::Success),
        "{:?}",
        reply.fail_info
    );
    let cert = certs.unwrap().0.remove(0);
    let names: Vec<_> = cert
        .subject_alt_names()
        .unwrap()
        .iter()
        .filter_map(|n| n.dnsname().map(str::to_owned))
        .collect();
    assert_eq!(names, ["a.example"]);
}

/// Issue 23, item 2: a held enrolment keeps no challenge. Neither the store nor any answer
/// (held listing, decisions, with any scope) nor the log holds a challenge in clear or inside
/// an encoded request.
#[tokio::test]
async fn held_enrolments_keep_no_challenge_anywhere() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let server = scep_server(tmp.path(), &[("ENROLLCA_SCEP_APPROVAL", "manual")]);
    let one_time = server
        .mint_challenge(serde_json::json!({"device": "dev-9"}))
        .await;
    let secrets = [CHALLENGE.to_owned(), one_time.clone()];
    // Whether `text` holds a secret, in clear or inside any base64 or PEM it carries.
    let leaks = |text: &str| -> Option<String> {
        let mut decoded = Vec::new();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c))) {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(word) {
                decoded.push(bytes);
            }
        }
        let pem_bodies = text
            .split("-----")
            .filter(|p| !p.starts_with("BEGIN") && !p.starts_with("END"));
        for body in pem_bodies {
            let joined: String = body.split("\\n").flat_map(|l| l.split('\n')).collect();
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(joined.trim()) {
                decoded.push(bytes);
            }
        }
        secrets.iter().find_map(|s| {
            let found = text.contains(s.as_str())
                || decoded
                    .iter()
                    .any(|d| d.windows(s.len()).any(|w| w == s.as_bytes()));
            found.then(|| s.clone())
        })
    };

    let client = Client::new(&server).await;
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (reply, _) = client
        .in_transaction("tx-static")
        .send(
            &a,
            MessageType::PkcsReq,
            &a.csr("held-static", Some(CHALLENGE)).unwrap(),
        )
        .await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Pending));
    let client = Client::new(&server).await.in_transaction("tx-once");
    let (reply, _) = client
        .send(
            &b,
            MessageType::PkcsReq,
            &b.csr_named(&[], &[], Some(&one_time)).unwrap(),
        )
        .await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Pending));

    // What a read-scoped token sees, and what the operator's decisions answer.
    let token: serde_json::Value = server
        .post("/api/v1/tokens")
        .json(&serde_json::json!({"name": "reader", "scopes": ["read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listing = server
        .client
        .get(server.url("/api/v1/scep/pending"))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    let listing = listing.text().await.unwrap();
    assert!(listing.contains("BEGIN PUBLIC KEY"), "{listing}");
    assert_eq!(leaks(&listing), None, "{listing}");
    let approved = server
        .post("/api/v1/scep/pending/tx-once/approve")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(approved.contains("\"approved\""), "{approved}");
    assert_eq!(leaks(&approved), None, "{approved}");
    let out = server.cli(&["scep", "pending", "--json"]);
    assert_eq!(leaks(&stdout(&out)), None);

    // Approval issues what the challenge allowed: dev-9's certificate.
    let poll = IssuerAndSubject {
        issuer: x509_cert::Certificate::from_der(&client.ca.to_der().unwrap())
            .unwrap()
            .tbs_certificate
            .subject,
        subject: "CN=dev-9".parse().unwrap(),
    }
    .to_der()
    .unwrap();
    let (reply, certs) = client.send(&b, MessageType::CertPoll, &poll).await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Success));
    let cert = certs.unwrap().0.remove(0);
    let cn = cert
        .subject_name()
        .entries()
        .next()
        .unwrap()
        .data()
        .as_slice()
        .to_vec();
    assert_eq!(cn, b"dev-9");

    // Nothing on disk, nor in the log.
    let data = server.data.clone();
    let (status, log) = server.stop();
    assert!(status.success());
    assert_eq!(leaks(&log), None, "the log");
    let mut files = vec![data.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} holds a challenge",
                path.display()
            );
        }
    }
}

/// Issue 23, low item: single DES is counted, and refused (badAlg, nothing written) where
/// `scep.allow_single_des = false`.
#[tokio::test]
async fn single_des_is_counted_and_can_be_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = scep_server(tmp.path(), &[("ENROLLCA_SCEP_ALLOW_SINGLE_DES", "false")]);
    let client = Client::new(&server).await;
    let device = Identity::generate().unwrap();
    let csr = device.csr("des-device", Some(CHALLENGE)).unwrap();
    let (reply, _) = client
        .exchange(
            &device,
            MessageType::PkcsReq,
            &csr,
            Cipher::Des,
            Digest::Sha256,
        )
        .await;
    assert_eq!(
        (reply.pki_status, reply.fail_info),
        (Some(PkiStatus::Failure), Some(FailInfo::BadAlg))
    );
    assert!(server.events().await.is_empty());
    let (reply, _) = client
        .exchange(
            &device,
            MessageType::PkcsReq,
            &csr,
            Cipher::Aes128,
            Digest::Sha256,
        )
        .await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Success));
    let metrics = server.metrics().await;
    for line in [
        "enrollca_scep_requests_by_cipher_total{cipher=\"des\"} 1",
        "enrollca_scep_requests_by_cipher_total{cipher=\"aes128\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in\n{metrics}"
        );
    }
}

/// Issue 23, item 8 (in part): one address has at most `limits.client_concurrency`
/// PKIOperations in flight; a validation webhook that answers slowly holds the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_has_a_bounded_number_of_pki_operations_in_flight() {
    let app = axum::Router::new().route(
        "/validate",
        axum::routing::post(|| async {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            (axum::http::StatusCode::OK, "{}")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/validate", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let tmp = tempfile::tempdir().unwrap();
    let server = scep_server(
        tmp.path(),
        &[
            ("ENROLLCA_SCEP_WEBHOOK_URL", &url),
            ("ENROLLCA_LIMITS_CLIENT_CONCURRENCY", "1"),
        ],
    );
    let client = Client::new(&server).await;
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let slow = {
        let (body, _) = client.build(
            &a,
            MessageType::PkcsReq,
            &a.csr("slow", Some("ask-the-webhook")).unwrap(),
            Cipher::Aes128,
            Digest::Sha256,
        );
        client.post(body)
    };
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (body, _) = client.build(
            &b,
            MessageType::PkcsReq,
            &b.csr("second", Some(CHALLENGE)).unwrap(),
            Cipher::Aes128,
            Digest::Sha256,
        );
        client.post(body).await
    };
    let (slow, second) = tokio::join!(slow, second);
    assert_eq!(second.status(), 429, "the second waits for the first");
    assert!(second.headers().contains_key("retry-after"));
    assert_eq!(slow.status(), 200);
    let reply = wire::open(&slow.bytes().await.unwrap()).unwrap();
    assert_eq!(reply.pki_status, Some(PkiStatus::Success));
    // Once it is answered, the address may send again.
    let (reply, _) = client
        .send(
            &b,
            MessageType::PkcsReq,
            &b.csr("again", Some(CHALLENGE)).unwrap(),
        )
        .await;
    assert_eq!(reply.pki_status, Some(PkiStatus::Success));
}
