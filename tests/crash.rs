//! Durability: a certificate the server acknowledged survives kill -9, and the store reopens
//! with a gap-free feed that matches the certificates exactly.

use enrollca_testkit::harness as common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::{Value, json};

async fn all_serials(server: &Server) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = "/api/v1/certificates?limit=1000".to_owned();
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let v: Value = server.get_json(&path).await;
        for c in v["items"].as_array().unwrap() {
            out.insert(c["serial"].as_str().unwrap().to_owned());
        }
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return out,
        }
    }
}

/// Fires issuances from `workers` loops until the server stops answering; returns the
/// serials it acknowledged.
fn burst(
    server: &Server,
    csrs: Arc<Vec<String>>,
    workers: usize,
    acked: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..workers)
        .map(|w| {
            let (client, url, token, csrs, acked) = (server.client.clone(), server.url("/api/v1/certificates"), server.token.clone(), csrs.clone(), acked.clone());
            tokio::spawn(async move {
                let mut ok = Vec::new();
                for i in 0.. {
                    let body = json!({"csr": csrs[(w + i) % csrs.len()], "device": format!("dev-{w}"), "issuer": if i % 3 == 0 {"rsa"} else {"ecdsa"}});
                    let Ok(resp) = client.post(&url).bearer_auth(&token).json(&body).send().await else { break };
                    if resp.status() != 201 {
                        break;
                    }
                    let Ok(v) = resp.json::<Value>().await else { break };
                    ok.push(v["certificate"]["serial"].as_str().unwrap().to_owned());
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                ok
            })
        })
        .collect()
}

async fn csrs(dir: &std::path::Path) -> Arc<Vec<String>> {
    Arc::new(
        (0..4)
            .map(|i| {
                openssl_csr(
                    dir,
                    &format!("c{i}"),
                    "ec:P-256",
                    &format!("/CN=device-{i}"),
                    None,
                )
                .1
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_burst_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let csrs = csrs(tmp.path()).await;

    for round in 0..3 {
        let server = Server::start(&data, &[]);
        let acked = Arc::new(AtomicUsize::new(0));
        let workers = burst(&server, csrs.clone(), 16, acked.clone());
        // Let a few hundred land, then pull the plug with requests in flight.
        while acked.load(Ordering::SeqCst) < 200 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        server.kill9();
        let mut acknowledged = Vec::new();
        for w in workers {
            acknowledged.extend(w.await.unwrap());
        }
        assert!(acknowledged.len() >= 200);

        let server = Server::start(&data, &[]);
        let stored = all_serials(&server).await;
        let missing: Vec<_> = acknowledged
            .iter()
            .filter(|s| !stored.contains(*s))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged certificates lost: {missing:?}",
            missing.len()
        );

        // One event per certificate, numbered 1..=n without gaps.
        let events = server.events().await;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e["seq"].as_u64().unwrap(),
                i as u64 + 1,
                "round {round}: gap in the feed"
            );
        }
        let evented: HashSet<String> = events
            .iter()
            .map(|e| e["serial"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            evented, stored,
            "round {round}: certificates and events disagree"
        );
        assert_eq!(events.len(), stored.len());
        server.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    let csrs = csrs(tmp.path()).await;
    let server = Server::start(&data, &[]);
    let acked = Arc::new(AtomicUsize::new(0));
    let workers = burst(&server, csrs, 8, acked.clone());
    while acked.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "exit {status}: {stderr}");
    let mut acknowledged = Vec::new();
    for w in workers {
        acknowledged.extend(w.await.unwrap());
    }
    let server = Server::start(&data, &[]);
    let stored = all_serials(&server).await;
    assert!(acknowledged.iter().all(|s| stored.contains(s)));
    assert_eq!(stored.len(), server.events().await.len());
}
