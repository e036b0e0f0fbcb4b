//! CA keys in a PKCS#11 token (SoftHSM2, Debian `softhsm2`): an ACME issuer whose key never
//! leaves the token is staged, activated and issues certificates that verify; a wrong PIN or
//! a missing token is a clear start-up error; a restart with the right PIN issues again.

use enrollca_testkit::harness as common;

use std::path::Path;

use common::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const URI: &str = "pkcs11:token=enrollca;object=acme-next";

/// A SOFTHSM2_CONF whose tokens live in DIR/tokens (none yet); returns its path.
fn softhsm_conf(dir: &Path) -> String {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    conf.to_str().unwrap().to_owned()
}

/// A SoftHSM2 token `enrollca` (user PIN 1234) holding a P-256 key pair `acme-next`;
/// returns the SOFTHSM2_CONF path and the key's public half (PEM).
fn token(dir: &Path) -> (String, String) {
    let conf = softhsm_conf(dir);
    let util = |args: &[&str]| {
        let out = std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "softhsm2-util {args:?}: {}",
            stderr(&out)
        );
    };
    util(&[
        "--init-token",
        "--free",
        "--label",
        "enrollca",
        "--pin",
        "1234",
        "--so-pin",
        "5678",
    ]);
    let key = dir.join("acme-next.pem");
    let out = run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    util(&[
        "--import",
        key.to_str().unwrap(),
        "--token",
        "enrollca",
        "--label",
        "acme-next",
        "--id",
        "01",
        "--pin",
        "1234",
    ]);
    let public = stdout(&run(
        "openssl",
        &["pkey", "-in", key.to_str().unwrap(), "-pubout"],
    ));
    // The private key now lives in the token only.
    std::fs::remove_file(&key).unwrap();
    (conf, public)
}

fn envs<'a>(conf: &'a str, pin: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SOFTHSM2_CONF", conf),
        ("ENROLLCA_CA_PKCS11_MODULE", MODULE),
        ("ENROLLCA_CA_PKCS11_PIN", pin),
    ]
}

/// Issues an ECDSA certificate through the API and checks its chain with openssl; returns
/// the issuing CA certificate's path.
async fn issue_and_verify(server: &Server, dir: &Path, name: &str) -> std::path::PathBuf {
    let (_, chain) = server.issue(dir, name, "ec:P-256", "ecdsa").await;
    let roots = server.data.join("ca/roots.pem");
    assert_chain_verifies_for(
        "sslclient",
        roots.to_str().unwrap(),
        chain[1].to_str().unwrap(),
        chain[0].to_str().unwrap(),
    );
    chain[1].clone()
}

#[tokio::test]
async fn an_issuer_key_in_softhsm_signs_and_bad_tokens_stop_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (conf, public) = token(dir);
    let data = init_dir(dir, &[], &[]);
    let server = Server::start(&data, &envs(&conf, "1234"));

    // A key the token does not hold is refused, and nothing is staged.
    server.cli_refused(
        &[
            "ca",
            "rotate",
            "prepare",
            "--family",
            "ecdsa",
            "--pkcs11-key",
            "pkcs11:token=enrollca;object=no-such-key",
        ],
        "holds no private key labelled `no-such-key`",
    );

    server.cli_ok(&[
        "ca",
        "rotate",
        "prepare",
        "--family",
        "ecdsa",
        "--pkcs11-key",
        URI,
    ]);
    server.cli_ok(&["ca", "rotate", "activate", "--family", "ecdsa"]);
    let keys_on_disk = std::fs::read_dir(data.join("ca/issuers"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "key")
        })
        .count();
    assert_eq!(keys_on_disk, 2, "the token key is not written to disk");

    let issuer = issue_and_verify(&server, dir, "hsm-1").await;
    let issuer_public = stdout(&run(
        "openssl",
        &["x509", "-in", issuer.to_str().unwrap(), "-noout", "-pubkey"],
    ));
    assert_eq!(
        issuer_public, public,
        "the issuer certifies the token's key"
    );
    let (status, _) = server.stop();
    assert!(status.success());

    // Wrong PIN, or no such token: the server refuses to start and says why.
    let err = Server::try_start(&data, &envs(&conf, "0000"))
        .err()
        .expect("a wrong PIN starts");
    assert!(err.contains("wrong PIN"), "{err}");
    let empty_conf = softhsm_conf(&dir.join("empty"));
    let err = Server::try_start(&data, &envs(&empty_conf, "1234"))
        .err()
        .expect("a missing token starts");
    assert!(
        err.contains("no PKCS#11 token labelled `enrollca`"),
        "{err}"
    );
    let err = Server::try_start(&data, &[("SOFTHSM2_CONF", conf.as_str())])
        .err()
        .expect("a token key without ca.pkcs11_module starts");
    assert!(err.contains("ca.pkcs11_module is not set"), "{err}");

    // With the right PIN it issues again.
    let server = Server::start(&data, &envs(&conf, "1234"));
    issue_and_verify(&server, dir, "hsm-2").await;
}
