//! Connection limits against the real binary: idle and dribbling sockets cannot starve the
//! service. A test binary of its own: it holds 400 sockets and times what the server does with
//! them, so other servers starting in parallel in the same binary must not share its cores.

use enrollca_testkit::harness as common;

use common::*;

/// Issue 23, item 3: clients that open connections and send nothing, or dribble a request a
/// byte at a time, cannot starve the service: the cap holds them to `limits.max_connections`,
/// the header timeout closes them, and SIGTERM does not wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_connections_do_not_starve_the_service() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let tmp = tempfile::tempdir().unwrap();
    let data = init_dir(tmp.path(), &[], &[]);
    const HELD: usize = 400;
    let server = Server::start(
        &data,
        &[
            ("ENROLLCA_LIMITS_HEADER_READ_TIMEOUT", "2s"),
            ("ENROLLCA_LIMITS_IDLE_TIMEOUT", "3s"),
            // Both listeners together: the held sockets take every slot of the HTTP one.
            ("ENROLLCA_LIMITS_MAX_CONNECTIONS", &HELD.to_string()),
            ("ENROLLCA_LIMITS_SHUTDOWN_TIMEOUT", "2s"),
        ],
    );
    let addr = server.http.trim_start_matches("http://").to_owned();
    let stop = tokio_util::sync::CancellationToken::new();
    // 300 sockets that say nothing; 100 that send a request's first line, then a header byte
    // every 200 ms, forever. Each task reports when the server closed its socket.
    let mut held = Vec::new();
    let (connected_tx, mut connected) = tokio::sync::mpsc::channel::<()>(HELD);
    for i in 0..HELD {
        let (addr, stop, connected_tx) = (addr.clone(), stop.clone(), connected_tx.clone());
        held.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            connected_tx.send(()).await.unwrap();
            let mut buf = [0u8; 256];
            if i < 300 {
                // EOF or a reset: the server closed it.
                tokio::select! {
                    _ = s.read(&mut buf) => true,
                    () = stop.cancelled() => false,
                }
            } else {
                if s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                    .await
                    .is_err()
                {
                    return true;
                }
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                            if s.write_all(b"a").await.is_err() {
                                return true;
                            }
                        }
                        n = s.read(&mut buf) => match n {
                            Ok(0) | Err(_) => return true,
                            Ok(_) => {}
                        },
                        () = stop.cancelled() => return false,
                    }
                }
            }
        }));
    }
    // Every socket connected before anything is timed (on a loaded machine, 400 connects
    // can take a while).
    for _ in 0..HELD {
        connected.recv().await.unwrap();
    }

    // The service still answers, on fresh connections, within the header timeout and a bit.
    let answers = |path: &'static str, post: Option<&'static [u8]>| {
        let url = server.url(path);
        async move {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(20))
                .build()
                .unwrap();
            let started = std::time::Instant::now();
            let resp = match post {
                None => client.get(url).send().await,
                Some(body) => {
                    client
                        .post(url)
                        .header("content-type", "application/ocsp-request")
                        .body(body)
                        .send()
                        .await
                }
            }
            .unwrap();
            (resp.status(), started.elapsed())
        }
    };
    let (health, scep, ocsp) = tokio::join!(
        answers("/healthz", None),
        answers("/scep?operation=GetCACaps", None),
        answers("/ocsp", Some(b"not an OCSP request")),
    );
    for (what, (status, took)) in [("healthz", health), ("GetCACaps", scep), ("OCSP", ocsp)] {
        assert_eq!(status, 200, "{what}");
        // The slots free when the held sockets' 2 s header timeout ends: well before this.
        assert!(
            took < std::time::Duration::from_secs(12),
            "{what} took {took:?}"
        );
    }

    // Every held socket was closed by the server, none by us.
    // Without the timeouts they stayed open for good (105 s in the review's probe).
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut n = 0;
        for task in held {
            n += usize::from(task.await.unwrap());
        }
        n
    })
    .await
    .expect("the server closes held sockets within its timeouts");
    assert_eq!(closed, HELD);
    let metrics = server.metrics().await;
    let closed_for = |reason: &str| -> u64 {
        let prefix =
            format!("enrollca_http_connections_closed_by_server_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.parse().unwrap())
    };
    assert!(closed_for("header_timeout") >= HELD as u64, "{metrics}");

    // A keep-alive connection that has been answered and then says nothing is closed too.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let eof = tokio::time::timeout(std::time::Duration::from_secs(6), s.read(&mut buf)).await;
    assert!(
        matches!(eof, Ok(Ok(0)) | Ok(Err(_))),
        "idle keep-alive closed: {eof:?}"
    );

    // SIGTERM with dribbling clients connected: the server stops within its bound.
    let mut dribblers = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /api/v1/validate HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
            .await
            .unwrap();
        dribblers.push(s);
    }
    let started = std::time::Instant::now();
    let (status, log) = tokio::task::block_in_place(|| server.stop());
    assert!(status.success(), "{log}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    stop.cancel();
}
