//! Attestation status lists: the serial numbers of attestation certificates (keys and
//! intermediates) withdrawn from trust, in the JSON Google publishes its list in
//! (`{"entries": {"<serial in lowercase hex>": {"status": "REVOKED", ...}}}`). Google's list
//! covers android-key; an operator's own (`acme.attestation_revocations`) covers every
//! format. Read from a file or an HTTP(S) URL and refreshed; until a first list is loaded,
//! the attestations it covers are answered "try later".

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use serde::Deserialize;

/// Largest list accepted (Google's is about 200 KiB).
const MAX_LEN: usize = 16 * 1024 * 1024;

#[derive(Deserialize)]
struct File {
    entries: std::collections::HashMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    status: String,
}

/// The serials no attestation may chain through.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Revoked(HashSet<String>);

impl Revoked {
    /// Parses the JSON list; any status (`REVOKED`, `SUSPENDED`) withdraws trust.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_LEN {
            return Err(format!("{} bytes, more than {MAX_LEN}", bytes.len()));
        }
        let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Self(
            file.entries
                .into_iter()
                .filter(|(_, e)| !e.status.is_empty())
                .map(|(serial, _)| serial.trim_start_matches('0').to_ascii_lowercase())
                .collect(),
        ))
    }

    /// Whether a certificate serial (big-endian bytes, as DER holds it) is listed.
    pub fn contains(&self, serial: &[u8]) -> bool {
        let hex = hex::encode(serial);
        self.0.contains(hex.trim_start_matches('0'))
    }

    pub fn count(&self) -> usize {
        self.0.len()
    }
}

/// The current list, shared by the verifier and the task that refreshes it.
#[derive(Clone, Default)]
pub struct StatusList(Arc<ArcSwapOption<Revoked>>);

impl StatusList {
    /// A list already loaded (tests; a node that reads it once).
    pub fn loaded(revoked: Revoked) -> Self {
        let list = Self::default();
        list.set(revoked);
        list
    }

    pub fn set(&self, revoked: Revoked) {
        self.0.store(Some(Arc::new(revoked)));
    }

    pub fn current(&self) -> Option<Arc<Revoked>> {
        self.0.load_full()
    }

    /// Refuses an attestation whose `x5c` holds a listed certificate (every one sent, a
    /// root copy included: makers revoke intermediates); until a first list is loaded, says
    /// "try later". `name` says which list in the refusal.
    pub(super) fn check(&self, x5c: &[Vec<u8>], name: &str) -> Result<(), super::AttestError> {
        use super::AttestError;
        let revoked = self
            .current()
            .ok_or_else(|| AttestError::Unavailable(format!("{name} has not been loaded yet")))?;
        for (i, der) in x5c.iter().enumerate() {
            if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der)
                && revoked.contains(cert.raw_serial())
            {
                return Err(AttestError::Chain(format!(
                    "x5c[{i}] (serial {}) is revoked in {name}",
                    cert.raw_serial_as_string()
                )));
            }
        }
        Ok(())
    }
}

/// Where the list comes from: `http://` or `https://` URLs are fetched, anything else is
/// a file path. A list larger than `max` bytes is refused, whether or not its server said
/// so in advance.
async fn fetch(source: &str, client: &reqwest::Client, max: usize) -> Result<Revoked, String> {
    let bytes = if source.starts_with("https://") || source.starts_with("http://") {
        let mut response = client
            .get(source)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("fetching {source}: {e}"))?;
        let too_large = || format!("{source} is larger than {max} bytes");
        if response.content_length().is_some_and(|l| l > max as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading {source}: {e}"))?
        {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        body
    } else {
        tokio::fs::read(source)
            .await
            .map_err(|e| format!("reading {source}: {e}"))?
    };
    Revoked::parse(&bytes).map_err(|e| format!("{source}: {e}"))
}

/// Keeps `list` current from `source`: read now, then every `every`; a failed read keeps
/// the list it has and is tried again sooner (a node without any list refuses to judge).
pub async fn follow(
    source: String,
    every: std::time::Duration,
    list: StatusList,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("a reqwest client with a timeout builds");
    let retry = every.min(std::time::Duration::from_secs(30));
    loop {
        let wait = match fetch(&source, &client, MAX_LEN).await {
            Ok(revoked) => {
                tracing::info!(
                    source,
                    revoked = revoked.count(),
                    "attestation status list loaded"
                );
                list.set(revoked);
                every
            }
            Err(e) => {
                tracing::warn!(error = %e, have_one = list.current().is_some(),
                    "attestation status list not refreshed");
                retry
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_serials_are_found_whatever_their_leading_zeros() {
        let list = Revoked::parse(
            br#"{"entries": {"2c8cdddfd5e03bfc": {"status": "REVOKED", "reason": "KEY_COMPROMISE"},
                 "0a1b": {"status": "SUSPENDED"}}}"#,
        )
        .unwrap();
        assert_eq!(list.count(), 2);
        assert!(list.contains(&hex::decode("2c8cdddfd5e03bfc").unwrap()));
        // DER keeps a leading zero byte on a serial whose high bit is set.
        assert!(list.contains(&[0x00, 0x0a, 0x1b]));
        assert!(!list.contains(&[0x0a, 0x1c]));
    }

    /// A server that streams `chunks` of `size` bytes without announcing a length.
    async fn chunked_server(chunks: usize, size: usize) -> String {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/status", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
            let mut reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..chunks {
                reply.extend(format!("{size:x}\r\n").as_bytes());
                reply.extend(std::iter::repeat_n(b' ', size));
                reply.extend(b"\r\n");
            }
            reply.extend(b"0\r\n\r\n");
            let _ = socket.write_all(&reply).await;
        });
        url
    }

    #[tokio::test]
    async fn a_list_without_a_length_is_read_only_up_to_the_bound() {
        let client = reqwest::Client::new();
        let url = chunked_server(8, 1024).await;
        let err = match fetch(&url, &client, 4096).await {
            Err(e) => e,
            Ok(_) => panic!("an 8 KiB body passed a 4 KiB bound"),
        };
        assert!(err.contains("is larger than 4096 bytes"), "{err}");
        // Within the bound it is read whole (and is not a list: whitespace).
        let url = chunked_server(2, 1024).await;
        let err = match fetch(&url, &client, 4096).await {
            Err(e) => e,
            Ok(_) => panic!("whitespace is not a list"),
        };
        assert!(!err.contains("larger than"), "{err}");
    }

    #[test]
    fn a_list_that_is_not_the_format_is_refused() {
        assert!(Revoked::parse(b"{}").is_err());
        assert!(Revoked::parse(b"[1]").is_err());
        assert!(Revoked::parse(br#"{"entries": {"01": {}}}"#).is_err());
    }
}
