//! The roots and cross certificates, shared by the nodes of a cluster. Each node serves them
//! from its data directory (`ca/roots.pem`, `ca/cross.pem`), and a root rotation writes them
//! on the node it ran on; the store carries them to the others. Both lists only grow (a
//! rotation adds a root and its cross certificates), so nodes merge rather than choose: what
//! any node knows, every node ends up serving and keeping on disk.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::Trust;
use crate::datadir::DataDir;
use crate::durable;
use crate::error::cause;
use crate::store::{Collection, DocKind, Store, StoreError};

const TRUST: Collection<Shared> = Collection::new(DocKind::Trust);
const ID: &str = "roots";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Shared {
    roots: Vec<ByteBuf>,
    cross: Vec<ByteBuf>,
}

/// `known` with what `more` adds, in order.
fn union(known: &[Vec<u8>], more: &[ByteBuf]) -> Vec<Vec<u8>> {
    let mut all = known.to_vec();
    for c in more {
        if !all.iter().any(|k| k == c.as_ref()) {
            all.push(c.to_vec());
        }
    }
    all
}

fn bufs(certs: &[Vec<u8>]) -> Vec<ByteBuf> {
    certs.iter().cloned().map(ByteBuf::from).collect()
}

/// Merges `current` and the store's copy: the store gets what it lacked, and when the store
/// knew more, the data directory is rewritten and the merged set returned.
pub async fn sync(
    dir: &DataDir,
    store: &dyn Store,
    current: &Trust,
) -> Result<Option<Trust>, SyncError> {
    let shared = TRUST
        .get(store, ID)
        .await?
        .map(|s| s.value)
        .unwrap_or_default();
    let roots = union(current.roots(), &shared.roots);
    let cross = union(current.cross(), &shared.cross);
    if roots.len() > shared.roots.len() || cross.len() > shared.cross.len() {
        TRUST
            .update(store, ID, |now| {
                let now = now.cloned().unwrap_or_default();
                Ok::<_, StoreError>(Some(Shared {
                    roots: bufs(&union(&roots, &now.roots)),
                    cross: bufs(&union(&cross, &now.cross)),
                }))
            })
            .await?;
    }
    if roots.len() == current.roots().len() && cross.len() == current.cross().len() {
        return Ok(None);
    }
    let next = Trust::new(roots, cross);
    let dir = dir.clone();
    let (roots_pem, cross_pem) = (next.roots_pem(), next.cross_pem());
    tokio::task::spawn_blocking(move || {
        // Cross first: roots.pem names the roots this node trusts, and is written last.
        durable::write(&dir.cross(), cross_pem.as_bytes(), 0o644)?;
        durable::write(&dir.roots(), roots_pem.as_bytes(), 0o644)
    })
    .await
    .map_err(|e| SyncError::Files(cause(e)))?
    .map_err(|e| SyncError::Files(cause(e)))?;
    Ok(Some(next))
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sharing the roots through the store")]
    Store(#[from] StoreError),
    #[error("writing the roots another node rotated to into the data directory")]
    Files(#[source] crate::error::Cause),
}
