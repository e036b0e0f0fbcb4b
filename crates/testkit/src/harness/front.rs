//! A round-robin TCP front for several nodes, as a load balancer without session affinity:
//! each new connection goes to the next node (TLS passes through). A node that refuses the
//! connection is skipped, as a balancer's health check would, so clients retrying after a
//! node died reach a live one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

pub struct RoundRobin {
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    /// Connections handed to each backend, in the order of `route`'s list.
    served: Arc<Mutex<Vec<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RoundRobin {
    /// Listens on a loopback port; connections wait (and then fail) until `route` names the
    /// nodes, so the nodes can be told the front's address before they start.
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let served: Arc<Mutex<Vec<usize>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let (b, s) = (backends.clone(), served.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (b, s, next) = (b.clone(), s.clone(), next.clone());
                tokio::spawn(async move {
                    let list = b.lock().unwrap().clone();
                    for _ in 0..list.len() {
                        let i = next.fetch_add(1, Ordering::Relaxed) % list.len();
                        if let Ok(mut server) = TcpStream::connect(list[i]).await {
                            s.lock().unwrap()[i] += 1;
                            let mut client = client;
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            backends,
            served,
            task,
        }
    }

    /// Sends connections to these nodes, in turn.
    pub fn route(&self, nodes: Vec<SocketAddr>) {
        *self.served.lock().unwrap() = vec![0; nodes.len()];
        *self.backends.lock().unwrap() = nodes;
    }

    /// Connections each node was handed so far.
    pub fn served(&self) -> Vec<usize> {
        self.served.lock().unwrap().clone()
    }

    pub fn https(&self) -> String {
        format!("https://{}", self.addr)
    }
}
