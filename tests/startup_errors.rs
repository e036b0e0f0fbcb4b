//! What an operator sees when start-up cannot work: a non-zero exit and a message that names
//! the problem. Also the key-at-rest guarantees.

use enrollca_testkit::harness as common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;

use common::*;

fn serve_fails(data: &std::path::Path, extra: &[&str], envs: &[(&str, &str)]) -> String {
    let mut args = vec!["serve", "--data", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut all_envs = vec![
        ("ENROLLCA_LISTEN_HTTP", "127.0.0.1:0"),
        ("ENROLLCA_LISTEN_HTTPS", "127.0.0.1:0"),
    ];
    all_envs.extend_from_slice(envs);
    let out = enrollca(&args, &all_envs);
    assert!(
        !out.status.success(),
        "serve should have failed; stdout: {}",
        stdout(&out)
    );
    stderr(&out)
}

#[test]
fn bad_configuration_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);

    let cfg = tmp.path().join("typo.toml");
    std::fs::write(
        &cfg,
        "[listen]\nhttp = \"127.0.0.1:0\"\nhtps = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let err = serve_fails(&data, &["--config", cfg.to_str().unwrap()], &[]);
    assert!(
        err.contains("unknown field `htps`") && err.contains("typo.toml"),
        "{err}"
    );

    let err = serve_fails(&data, &[], &[("ENROLLCA_LISTEN_HTTP", "nowhere:80")]);
    assert!(
        err.contains("ENROLLCA_LISTEN_HTTP") && err.contains("invalid socket address"),
        "{err}"
    );

    let cfg = tmp.path().join("addr.toml");
    std::fs::write(&cfg, "[listen]\nhttps = \"300.0.0.1:443\"\n").unwrap();
    let err = serve_fails(&data, &["--config", cfg.to_str().unwrap()], &[]);
    assert!(
        err.contains("addr.toml")
            && err.contains("https")
            && err.contains("invalid socket address"),
        "{err}"
    );

    let err = serve_fails(&data, &[], &[("ENROLLCA_LISTEN_HTTPS", "")]);
    assert!(err.contains("ENROLLCA_LISTEN_HTTPS"), "{err}");

    let err = serve_fails(&data, &[], &[("ENROLLCA_LISTEN_HTPP", "127.0.0.1:1")]);
    assert!(
        err.contains("ENROLLCA_LISTEN_HTPP") && err.contains("names no configuration key"),
        "{err}"
    );

    let err = serve_fails(
        &data,
        &[],
        &[
            ("ENROLLCA_TLS_CERT", "/nonexistent/tls.pem"),
            ("ENROLLCA_TLS_KEY", "/nonexistent/tls.key"),
        ],
    );
    assert!(
        err.contains("tls.cert") && err.contains("/nonexistent/tls.pem"),
        "{err}"
    );

    let err = serve_fails(&data, &["--config", "/nonexistent/enrollca.toml"], &[]);
    assert!(err.contains("/nonexistent/enrollca.toml"), "{err}");

    // A PEM block that is no certificate: refused at start, not skipped at every attestation.
    let root = tmp.path().join("not-a-root.pem");
    std::fs::write(
        &root,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cfg = tmp.path().join("roots.toml");
    std::fs::write(&cfg, format!("[acme]\nattestation_roots = [{root:?}]\n")).unwrap();
    let err = serve_fails(&data, &["--config", cfg.to_str().unwrap()], &[]);
    assert!(
        err.contains("acme.attestation_roots")
            && err.contains("not-a-root.pem")
            && err.contains("not a DER certificate"),
        "{err}"
    );
}

#[test]
fn port_in_use_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = serve_fails(&data, &[], &[("ENROLLCA_LISTEN_HTTP", &addr)]);
    assert!(
        err.contains(&format!("listen.http {addr}: cannot listen")),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn missing_or_unreadable_key_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let key = std::fs::read_dir(data.join("ca/issuers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = serve_fails(&data, &[], &[]);
    assert!(
        err.contains(key.to_str().unwrap()) && err.contains("too open"),
        "{err}"
    );

    std::fs::remove_file(&key).unwrap();
    let err = serve_fails(&data, &[], &[]);
    assert!(
        err.contains(key.to_str().unwrap()) && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn foreign_or_existing_directories_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let err = serve_fails(&foreign, &[], &[]);
    assert!(err.contains("is not an enrollca data directory"), "{err}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);

    let data = init_dir(tmp.path(), &[], &[]);
    let before = std::fs::read(data.join("ca/roots.pem")).unwrap();
    let out = enrollca(&["init", "--data", data.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing to overwrite"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(data.join("ca/roots.pem")).unwrap(), before);
}

#[test]
fn passphrase_protected_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let pass_file = tmp.path().join("passphrase");
    std::fs::write(&pass_file, "correct horse battery staple\n").unwrap();
    let data = init_dir(
        tmp.path(),
        &["--passphrase-file", pass_file.to_str().unwrap()],
        &[],
    );

    let mut keys = vec![data.join("ca/root.key")];
    keys.extend(
        std::fs::read_dir(data.join("ca/issuers"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "key")),
    );
    assert_eq!(keys.len(), 3);
    for k in &keys {
        assert_eq!(
            std::fs::metadata(k).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            k.display()
        );
        let pem = std::fs::read_to_string(k).unwrap();
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{}",
            k.display()
        );
        // openssl agrees it is PKCS#8 encrypted and opens it with the passphrase.
        let out = run(
            "openssl",
            &[
                "pkey",
                "-noout",
                "-in",
                k.to_str().unwrap(),
                "-passin",
                &format!("file:{}", pass_file.display()),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let out = run(
            "openssl",
            &[
                "pkey",
                "-noout",
                "-in",
                k.to_str().unwrap(),
                "-passin",
                "pass:wrong",
            ],
        );
        assert!(!out.status.success());
    }

    // The passphrase file recorded by init is found again.
    let server = Server::start(&data, &[]);
    drop(server);

    let err = serve_fails(&data, &[], &[("ENROLLCA_CA_PASSPHRASE", "wrong")]);
    assert!(err.contains("wrong passphrase"), "{err}");

    let cfg = tmp.path().join("nopass.toml");
    std::fs::write(&cfg, "").unwrap();
    let err = serve_fails(&data, &["--config", cfg.to_str().unwrap()], &[]);
    assert!(
        err.contains("the key is encrypted; set ENROLLCA_CA_PASSPHRASE"),
        "{err}"
    );
}

#[test]
fn init_imports_an_existing_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_owned();
    // A root and an RSA issuing CA made by openssl, not by us.
    let steps: Vec<Vec<String>> = vec![
        vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            &p("root.key"),
            "-out",
            &p("root.pem"),
            "-subj",
            "/CN=Imported Root",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        vec![
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("rsa.key"),
            "-out",
            &p("rsa.csr"),
            "-subj",
            "/CN=Imported RSA Issuer",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    ];
    for s in &steps {
        let args: Vec<&str> = s.iter().map(String::as_str).collect();
        let out = run("openssl", &args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    std::fs::write(d.join("ext.cnf"), "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature,keyEncipherment\n").unwrap();
    let out = run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("rsa.csr"),
            "-CA",
            &p("root.pem"),
            "-CAkey",
            &p("root.key"),
            "-CAcreateserial",
            "-out",
            &p("rsa.pem"),
            "-days",
            "1000",
            "-extfile",
            &p("ext.cnf"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let data = d.join("data");
    let out = enrollca(
        &[
            "init",
            "--data",
            data.to_str().unwrap(),
            "--root-cert",
            &p("root.pem"),
            "--root-key",
            &p("root.key"),
            "--rsa-issuer-cert",
            &p("rsa.pem"),
            "--rsa-issuer-key",
            &p("rsa.key"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let fp = openssl_fingerprint(&d.join("root.pem"));
    assert!(stdout(&out).contains(&fp), "{}", stdout(&out));

    let server = Server::start(&data, &[]);
    let out = server.cli(&["ca", "list"]);
    assert!(
        stdout(&out).contains("Imported RSA Issuer"),
        "{}",
        stdout(&out)
    );

    // An issuing CA the root did not sign is refused, and nothing is left behind.
    let bad = d.join("bad");
    let out = enrollca(
        &[
            "init",
            "--data",
            bad.to_str().unwrap(),
            "--rsa-issuer-cert",
            &p("rsa.pem"),
            "--rsa-issuer-key",
            &p("rsa.key"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not signed by the root"),
        "{}",
        stderr(&out)
    );
    assert!(!bad.exists());
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("init-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// An empty or short admin token would let an empty `Authorization: Bearer` header in.
#[test]
fn an_empty_or_short_admin_token_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    for token in ["", "  \n", "short"] {
        std::fs::write(data.join("admin-token"), token).unwrap();
        let err = serve_fails(&data, &[], &[]);
        assert!(
            err.contains("admin-token") && err.contains("at least 32 characters"),
            "{token:?}: {err}"
        );
    }
}
