//! dns-01 (RFC 8555 §8.4) and wildcard orders against the real binary, with Let's Encrypt's
//! pebble-challtestsrv as the DNS server the clients publish to: lego proves a wildcard and its
//! base name, and a missing, wrong or unanswerable TXT record leaves the authorization invalid
//! with the cause, and nothing issued. Names are under `example.test`: a resolver answers
//! names under `localhost` itself (RFC 6761 §6.3), so their TXT records never reach DNS.

use enrollca_testkit::harness as common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::acme::{Client, certificates, challenge, check_issued, csr, roots_file};
use common::*;
use serde_json::{Value, json};

/// pebble-challtestsrv answering DNS on `dns` with the TXT records set through `management`.
struct ChallTestSrv {
    child: Child,
    dns: u16,
    management: String,
    http: reqwest::Client,
}

impl ChallTestSrv {
    async fn start() -> Self {
        let (dns, management) = (free_port(), free_port());
        let child = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{management}")])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv6",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble)");
        let srv = Self {
            child,
            dns,
            management: format!("http://127.0.0.1:{management}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..100 {
            if srv.http.get(&srv.management).send().await.is_ok() {
                return srv;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("pebble-challtestsrv did not start");
    }

    async fn call(&self, path: &str, body: Value) {
        let resp = self
            .http
            .post(format!("{}/{path}", self.management))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    async fn set_txt(&self, name: &str, value: &str) {
        let host = format!("_acme-challenge.{name}.");
        self.call("set-txt", json!({"host": host, "value": value}))
            .await;
    }
}

impl Drop for ChallTestSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with a profile `dns` that offers only dns-01 and asks `dns` for TXT records.
async fn dns01_server(tmp: &Path, dns: u16) -> (Server, String) {
    let data = init_dir(tmp, &[], &[]);
    let config = std::fs::read_to_string(data.join("config.toml")).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!(
            "{config}\n[acme.profiles.dns]\ndns_names = [\"example.test\", \"localhost\"]\n\
             challenges = [\"dns-01\"]\n"
        ),
    )
    .unwrap();
    let server = Server::start(
        &data,
        &[("ENROLLCA_ACME_DNS01_RESOLVER", &format!("127.0.0.1:{dns}"))],
    );
    let roots = roots_file(&server, tmp).await;
    (server, roots)
}

/// The TXT value that proves `key_authorization`.
fn digest(key_authorization: &str) -> String {
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        key_authorization.as_bytes(),
    ))
}

#[tokio::test]
async fn lego_proves_a_wildcard_and_its_base_name_with_dns_01() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = ChallTestSrv::start().await;
    let (server, roots) = dns01_server(tmp.path(), dns.dns).await;
    // lego's exec provider runs this with `present|cleanup FQDN VALUE`.
    let hook = tmp.path().join("dns-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncase \"$1\" in present) op=set-txt;; cleanup) op=clear-txt;; *) exit 0;; esac\n\
             exec curl -fsS -o /dev/null -X POST -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" \
             {}/$op\n",
            dns.management
        ),
    )
    .unwrap();
    run("chmod", &["+x", hook.to_str().unwrap()]);
    let dir = tmp.path().join("lego");
    let out = Command::new("lego")
        .env("LEGO_CA_CERTIFICATES", &roots)
        .env("EXEC_PATH", &hook)
        // The exec provider solves one name at a time, by default a minute apart.
        .env("EXEC_SEQUENCE_INTERVAL", "1")
        .env("EXEC_POLLING_INTERVAL", "1")
        .args(["--path", dir.to_str().unwrap()])
        .args(["--server", &format!("{}/acme/dns/directory", server.https)])
        .args(["--email", "ops@example.com", "--accept-tos"])
        .args([
            "--domains",
            "*.wild.example.test",
            "--domains",
            "wild.example.test",
        ])
        .args(["--key-type", "ec256", "--dns", "exec"])
        .args(["--dns.resolvers", &format!("127.0.0.1:{}", dns.dns)])
        .arg("--dns.disable-cp")
        .arg("run")
        .output()
        .unwrap();
    assert!(out.status.success(), "lego run: {}", stderr(&out));
    let certs = dir.join("certificates");
    // lego names a wildcard's files with `_` for `*`.
    let bundle = std::fs::read_to_string(certs.join("_.wild.example.test.crt")).unwrap();
    let key = certs.join("_.wild.example.test.key");
    check_issued(&dir, &roots, &bundle, &key, "*.wild.example.test");
    let serial = check_issued(&dir, &roots, &bundle, &key, "wild.example.test");
    let rec = server
        .get_json(&format!("/api/v1/certificates/{serial}"))
        .await;
    assert_eq!(rec["protocol"], "acme");
}

#[tokio::test]
async fn a_wildcard_authorization_names_the_base_and_offers_only_dns_01() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = ChallTestSrv::start().await;
    let data = init_dir(tmp.path(), &[], &[]);
    let config = std::fs::read_to_string(data.join("config.toml")).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!(
            "{config}\n[acme.profiles.both]\ndns_names = [\"example.test\"]\n\
             challenges = [\"http-01\", \"dns-01\"]\n"
        ),
    )
    .unwrap();
    let server = Server::start(
        &data,
        &[(
            "ENROLLCA_ACME_DNS01_RESOLVER",
            &format!("127.0.0.1:{}", dns.dns),
        )],
    );

    let mut c = Client::new(&server, "both").await;
    c.register().await;
    let (order_url, order) = c.order(&["*.w.example.test", "w.example.test"]).await;
    assert_eq!(
        order["identifiers"],
        json!([{"type": "dns", "value": "*.w.example.test"}, {"type": "dns", "value": "w.example.test"}])
    );
    let mut kinds = Vec::new();
    for authz_url in order["authorizations"].as_array().unwrap() {
        let authz = c.post(authz_url.as_str().unwrap(), None).await.body;
        assert_eq!(authz["identifier"]["value"], "w.example.test", "{authz}");
        let offered: Vec<String> = authz["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ch| ch["type"].as_str().unwrap().to_owned())
            .collect();
        kinds.push((authz["wildcard"].clone(), offered));
        let ch = challenge(&authz, "dns-01");
        let token = ch["token"].as_str().unwrap();
        dns.set_txt("w.example.test", &digest(&c.key.key_authorization(token)))
            .await;
        let settled = c
            .post(ch["url"].as_str().unwrap(), Some(json!({})))
            .await
            .body;
        assert_eq!(settled["status"], "valid", "{settled}");
    }
    kinds.sort_by_key(|(w, _)| w.to_string());
    assert_eq!(
        kinds,
        [
            // RFC 8555 §7.1.4: `wildcard` only on the wildcard's authorization, absent otherwise.
            (json!(null), vec!["http-01".to_owned(), "dns-01".to_owned()]),
            (json!(true), vec!["dns-01".to_owned()]),
        ]
    );
    let order = c.poll(&order_url, "pending").await;
    assert_eq!(order["status"], "ready");
    // The CSR must name the wildcard itself, not only its base.
    let (der, _) = csr(&["w.example.test"]);
    let refused = c.finalize(&order, &der).await;
    assert_eq!(refused.problem(), "badCSR", "{}", refused.text);
    let (der, _) = csr(&["*.w.example.test", "w.example.test"]);
    let fin = c.finalize(&order, &der).await;
    assert_eq!(fin.status, 200, "{}", fin.text);
    let issued = certificates(&server).await;
    assert_eq!(issued.len(), 1);

    // A profile without dns-01 cannot prove a wildcard; one whose names do not cover the
    // wildcard's base does not issue it.
    let mut d = Client::new(&server, "default").await;
    d.register().await;
    let resp = d
        .post(
            &d.url("newOrder"),
            Some(json!({"identifiers": [{"type": "dns", "value": "*.x.localhost"}]})),
        )
        .await;
    assert_eq!(resp.problem(), "rejectedIdentifier", "{}", resp.text);
    assert_eq!(resp.subproblem(0), "unsupportedIdentifier", "{}", resp.text);
    let detail = resp.body["subproblems"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("wildcard names"), "{detail}");
    let resp = c
        .post(
            &c.url("newOrder"),
            Some(json!({"identifiers": [{"type": "dns", "value": "*.example.com"}]})),
        )
        .await;
    assert_eq!(resp.subproblem(0), "rejectedIdentifier", "{}", resp.text);
}

#[tokio::test]
async fn missing_wrong_and_unanswerable_txt_records_leave_nothing_issued() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = ChallTestSrv::start().await;
    let (server, _) = dns01_server(tmp.path(), dns.dns).await;
    let mut c = Client::new(&server, "dns").await;
    c.register().await;

    enum Txt {
        Absent,
        Wrong,
        ServFail,
        /// The right digest, published where DNS is never asked.
        Right,
    }
    let cases = [
        (
            "absent.example.test",
            Txt::Absent,
            "incorrectResponse",
            "no TXT record at _acme-challenge.absent.example.test.",
        ),
        (
            "wrong.example.test",
            Txt::Wrong,
            "incorrectResponse",
            "none of them the digest",
        ),
        (
            "servfail.example.test",
            Txt::ServFail,
            "dns",
            "_acme-challenge.servfail.example.test.",
        ),
        (
            "dns.localhost",
            Txt::Right,
            "incorrectResponse",
            "not in DNS (RFC 6761)",
        ),
    ];
    for (name, txt, problem, detail) in cases {
        let (order_url, order) = c.order(&[name]).await;
        let authz = c
            .post(order["authorizations"][0].as_str().unwrap(), None)
            .await
            .body;
        let ch = authz["challenges"][0].clone();
        assert_eq!(ch["type"], "dns-01");
        match txt {
            Txt::Absent => {}
            Txt::Wrong => {
                // A record for another challenge of the same name proves nothing here.
                dns.set_txt(name, &digest("another.key-authorization"))
                    .await;
            }
            Txt::Right => {
                let token = ch["token"].as_str().unwrap();
                dns.set_txt(name, &digest(&c.key.key_authorization(token)))
                    .await;
            }
            Txt::ServFail => {
                dns.call(
                    "set-servfail",
                    json!({"host": format!("_acme-challenge.{name}.")}),
                )
                .await;
            }
        }
        let settled = c.post(ch["url"].as_str().unwrap(), Some(json!({}))).await;
        assert_eq!(settled.status, 200, "{}", settled.text);
        let authz = c
            .poll(order["authorizations"][0].as_str().unwrap(), "pending")
            .await;
        assert_eq!(authz["status"], "invalid", "{name}: {authz}");
        let error = &authz["challenges"][0]["error"];
        assert_eq!(
            error["type"],
            format!("urn:ietf:params:acme:error:{problem}"),
            "{name}: {authz}"
        );
        assert!(
            error["detail"].as_str().unwrap().contains(detail),
            "{name}: {error}"
        );
        let order = c.poll(&order_url, "pending").await;
        assert_eq!(order["status"], "invalid", "{name}");
        let (der, _) = csr(&[name]);
        let fin = c.finalize(&order, &der).await;
        assert_eq!(fin.problem(), "orderNotReady", "{name}");
    }
    assert!(certificates(&server).await.is_empty(), "nothing was issued");
}
