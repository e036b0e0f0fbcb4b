//! The SCEP wire code on requests captured from real clients (tests/vectors/scep), on every
//! truncation of them, and on the replies we build.

use enrollca::csr::Csr;
use enrollca::scep::message::{Cipher, Digest, MessageType};
use enrollca::scep::wire::{self, MessageSigner, Outcome, Payload, WireError};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

fn file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/vectors/scep/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn key(name: &str) -> PKey<Private> {
    PKey::private_key_from_pem(&file(name)).unwrap()
}

const VECTORS: &[(&str, Cipher, Digest, &str)] = &[
    (
        "scepclient-pkcsreq.der",
        Cipher::Des,
        Digest::Sha1,
        "vector-scepclient",
    ),
    (
        "strongswan-pkcsreq-des3.der",
        Cipher::Des3,
        Digest::Sha256,
        "vector-strongswan-des3",
    ),
    (
        "strongswan-pkcsreq-aes.der",
        Cipher::Aes128,
        Digest::Sha256,
        "vector-strongswan-aes",
    ),
    (
        "certmonger-pkcsreq.der",
        Cipher::Aes256,
        Digest::Sha256,
        "vector-certmonger",
    ),
];

#[test]
fn captured_requests_open_and_decrypt() {
    let ca_key = key("ca.key");
    for (name, cipher, digest, cn) in VECTORS {
        let req = wire::open(&file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(req.message_type, MessageType::PkcsReq, "{name}");
        assert_eq!(req.digest, *digest, "{name}");
        assert!(
            !req.transaction_id.is_empty() && !req.sender_nonce.is_empty(),
            "{name}"
        );
        let (content, used) =
            wire::decrypt(&req.envelope, &ca_key).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(used, *cipher, "{name}");
        let csr = Csr::from_der(&content).unwrap();
        assert_eq!(csr.common_name(), Some(*cn), "{name}");
        assert!(
            csr.challenge.unwrap().matches(b"vector-challenge"),
            "{name}"
        );
    }
}

/// `der` with its outermost SEQUENCE re-encoded at indefinite length: BER, which clients
/// may send and the wire code reads through OpenSSL.
fn indefinite(der: &[u8]) -> Vec<u8> {
    // 30 82 hi lo: every captured message is 256 bytes to 64 KiB long.
    assert_eq!(der[..2], [0x30, 0x82]);
    [&[0x30, 0x80], &der[4..], &[0, 0]].concat()
}

#[test]
fn ber_requests_read_like_their_der_form() {
    let ca_key = key("ca.key");
    for (name, ..) in VECTORS {
        let der = file(name);
        let (a, b) = (
            wire::open(&der).unwrap(),
            wire::open(&indefinite(&der)).unwrap_or_else(|e| panic!("{name}: {e}")),
        );
        assert_eq!(a.transaction_id, b.transaction_id, "{name}");
        assert_eq!(a.sender_nonce, b.sender_nonce, "{name}");
        assert_eq!(a.digest, b.digest, "{name}");
        assert_eq!(a.signer_der, b.signer_der, "{name}");
        let plain = wire::decrypt(&a.envelope, &ca_key).unwrap().0;
        let from_ber = wire::decrypt(&indefinite(&a.envelope), &ca_key)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .0;
        assert_eq!(plain, from_ber, "{name}");
    }
}

#[test]
fn an_envelope_for_another_ca_is_refused() {
    let other = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    for (name, ..) in VECTORS {
        let req = wire::open(&file(name)).unwrap();
        assert_eq!(
            wire::decrypt(&req.envelope, &other).unwrap_err(),
            WireError::Decrypt,
            "{name}"
        );
    }
}

#[test]
fn truncated_and_corrupted_requests_are_refused_cleanly() {
    for (name, ..) in VECTORS {
        let good = file(name);
        for len in (0..good.len()).step_by(7) {
            assert!(
                wire::open(&good[..len]).is_err(),
                "{name} truncated to {len} opened"
            );
        }
        // A flipped byte inside the signed attributes or the signature must not verify.
        let at = good.len() - 40;
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        assert!(
            wire::open(&bad).is_err(),
            "{name}: corrupted signature accepted"
        );
    }
}

#[test]
fn replies_follow_the_interop_rules() {
    let ca_key = key("ca.key");
    let ca_der = X509::from_pem(&file("ca.pem")).unwrap().to_der().unwrap();
    let signer = MessageSigner {
        cert_der: &ca_der,
        key: &ca_key,
    };
    let req = wire::open(&file("scepclient-pkcsreq.der")).unwrap();
    let (_, cipher) = wire::decrypt(&req.envelope, &ca_key).unwrap();
    assert_eq!(cipher, Cipher::Des);

    // Any two certificates will do to check order: the CA, then a self-signed stand-in.
    let other = req.signer.to_der().unwrap();
    let certs = vec![other.clone(), ca_der.clone()];
    let payload = Payload::Certs(certs.clone());
    let reply = wire::cert_rep(
        &signer,
        &req,
        Outcome::Success {
            payload: &payload,
            recipient: &req.signer,
            cipher,
        },
    )
    .unwrap();

    // OpenSSL verifies the reply's signature with the CA certificate and reads the
    // attributes we promise (checked with the openssl command line as an independent parser).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reply.der");
    std::fs::write(&path, &reply).unwrap();
    let text = std::process::Command::new("openssl")
        .args([
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("algorithm: rsaEncryption"),
        "signerInfo algorithm must be rsaEncryption:\n{text}"
    );
    assert!(
        text.contains("algorithm: sha1"),
        "digest as requested:\n{text}"
    );
    assert!(text.contains(&req.transaction_id), "transactionID echoed");

    // The envelope inside is for the requester, in 3DES (never single DES), and holds the
    // certificates in the given order.
    // Read back: a CertRep for the same transaction with a fresh senderNonce.
    let back = wire::open(&reply).unwrap();
    assert_eq!(back.message_type, MessageType::CertRep);
    assert_eq!(back.transaction_id, req.transaction_id);
    assert_ne!(back.sender_nonce, req.sender_nonce);
    assert_eq!(back.sender_nonce.len(), 16);
    let p7 = openssl::pkcs7::Pkcs7::from_der(&reply).unwrap();
    let mut envelope = Vec::new();
    let no_certs = openssl::stack::Stack::new().unwrap();
    let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
    store.add_cert(X509::from_der(&ca_der).unwrap()).unwrap();
    p7.verify(
        &no_certs,
        &store.build(),
        None,
        Some(&mut envelope),
        openssl::pkcs7::Pkcs7Flags::NOVERIFY,
    )
    .unwrap();
    let (inner, reply_cipher) = wire::decrypt(&envelope, &key("scepclient-requester.key")).unwrap();
    assert_eq!(reply_cipher, Cipher::Des3);
    let degenerate = openssl::pkcs7::Pkcs7::from_der(&inner).unwrap();
    let signed = degenerate.signed().unwrap();
    let order: Vec<Vec<u8>> = signed
        .certificates()
        .unwrap()
        .iter()
        .map(|c| c.to_der().unwrap())
        .collect();
    assert_eq!(order, certs, "issued certificate first, then the chain");
}
