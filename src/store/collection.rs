//! Typed access to one kind of document: each key space is declared once with the type it
//! holds (`const ORDERS: Collection<Order> = Collection::new(DocKind::AcmeOrder)`), and every
//! read-modify-write goes through one compare-and-swap loop instead of one per caller.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Doc, DocKey, DocKind, DocPages, DocWrite, Store, StoreError, Stored};

/// How often `update` re-reads and re-applies a change that lost a race. Contention on one
/// document is a handful of requests of one client at most; more means something is wrong.
const UPDATE_ATTEMPTS: usize = 5;

/// The documents of one kind, each holding a `T`.
pub struct Collection<T> {
    kind: DocKind,
    holds: PhantomData<fn() -> T>,
}

impl<T> Collection<T> {
    pub const fn new(kind: DocKind) -> Self {
        Self {
            kind,
            holds: PhantomData,
        }
    }

    pub fn kind(&self) -> DocKind {
        self.kind
    }

    pub fn key(&self, id: &str) -> DocKey {
        DocKey::new(self.kind, id)
    }

    /// Deletes `id` if it is still at `version`.
    pub fn delete(&self, id: &str, version: u64) -> DocWrite {
        DocWrite::delete(self.kind, id, version)
    }

    /// Every document, a page at a time (for sweeps that delete what they read).
    pub fn pages<'a>(&self, store: &'a dyn Store) -> Pages<'a, T> {
        Pages {
            inner: DocPages::new(store, self.kind),
            holds: PhantomData,
        }
    }
}

impl<T: Serialize> Collection<T> {
    /// Writes `value` as a new document; the write conflicts if `id` exists.
    pub fn create(&self, id: &str, value: &T) -> DocWrite {
        DocWrite::put(self.kind, id, None, value)
    }

    /// Writes `value` over the document as it was read at `version`.
    pub fn replace(&self, id: &str, version: u64, value: &T) -> DocWrite {
        DocWrite::put(self.kind, id, Some(version), value)
    }

    /// `create` when `version` is `None`, else `replace`.
    pub fn put(&self, id: &str, version: Option<u64>, value: &T) -> DocWrite {
        DocWrite::put(self.kind, id, version, value)
    }
}

impl<T: DeserializeOwned> Collection<T> {
    /// The documents under `prefix`, in id order, after `after`, at most `limit`.
    pub async fn page(
        &self,
        store: &dyn Store,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Stored<T>)>, StoreError> {
        decode_all(store.docs(self.kind, prefix, after, limit).await?)
    }

    pub async fn get(&self, store: &dyn Store, id: &str) -> Result<Option<Stored<T>>, StoreError> {
        store.doc(&self.key(id)).await?.map(Doc::decode).transpose()
    }

    /// Every document under `prefix`, decoded (small kinds only: it reads them all at once).
    pub async fn all(
        &self,
        store: &dyn Store,
        prefix: &str,
    ) -> Result<Vec<(String, Stored<T>)>, StoreError> {
        decode_all(store.all_docs(self.kind, prefix).await?)
    }
}

fn decode_all<T: DeserializeOwned>(
    docs: Vec<(String, Doc)>,
) -> Result<Vec<(String, Stored<T>)>, StoreError> {
    docs.into_iter()
        .map(|(id, doc)| Ok((id, doc.decode()?)))
        .collect()
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    /// Read-modify-write under compare-and-swap. `change` is given the document as it is now
    /// (`None` when absent) and returns what to write, or `None` to write nothing; when
    /// another writer got there first it runs again on what that writer left. Returns what
    /// was written.
    pub async fn update<E: From<StoreError>>(
        &self,
        store: &dyn Store,
        id: &str,
        change: impl FnMut(Option<&T>) -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        self.update_from(store, id, None, change).await
    }

    /// `update`, trying first on `seen`, a copy the caller has just read: a read fewer when
    /// nobody wrote meanwhile (a round trip on a shared database), the same outcome when
    /// somebody did.
    pub async fn update_from<E: From<StoreError>>(
        &self,
        store: &dyn Store,
        id: &str,
        mut seen: Option<Stored<T>>,
        mut change: impl FnMut(Option<&T>) -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        for _ in 0..UPDATE_ATTEMPTS {
            let current = match seen.take() {
                Some(seen) => Some(seen),
                None => self.get(store, id).await?,
            };
            let Some(next) = change(current.as_ref().map(|c| &c.value))? else {
                return Ok(None);
            };
            let write = self.put(id, current.map(|c| c.version), &next);
            match store.write_docs(vec![write]).await {
                Ok(()) => return Ok(Some(next)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict {
            kind: self.kind,
            id: id.to_owned(),
        }
        .into())
    }
}

/// A typed `DocPages`: each document decoded, or the reason it does not decode.
pub struct Pages<'a, T> {
    inner: DocPages<'a>,
    holds: PhantomData<fn() -> T>,
}

/// One document of a page.
pub type Entry<T> = (String, Result<Stored<T>, StoreError>);

impl<T: DeserializeOwned> Pages<'_, T> {
    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<Entry<T>>>, StoreError> {
        Ok(self.inner.next().await?.map(|page| {
            page.into_iter()
                .map(|(id, doc)| (id, doc.decode()))
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    const NUMBERS: Collection<u64> = Collection::new(DocKind::CrlNumber);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn update_applies_each_change_once_under_contention() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
        // Several worker threads, so that the writers really race.
        let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (store, written) = (store.clone(), written.clone());
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let n = NUMBERS
                            .update(store.as_ref(), "n", |n| {
                                Ok::<_, StoreError>(Some(n.map_or(1, |n| n + 1)))
                            })
                            .await
                            // Four writers rarely lose five races in a row; if one does,
                            // it says so instead of counting twice.
                            .or_else(|e| match e {
                                StoreError::Conflict { .. } => Ok(None),
                                e => Err(e),
                            })
                            .unwrap();
                        if n.is_some() {
                            written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let stored = NUMBERS.get(store.as_ref(), "n").await.unwrap().unwrap();
        // Every change that reported success is counted once: no update was lost.
        assert_eq!(
            stored.value,
            written.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert_eq!(stored.value, stored.version);
        assert!(stored.value > 50, "{} of 100 changes won", stored.value);
    }

    #[tokio::test]
    async fn update_that_declines_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let written = NUMBERS
            .update(&store, "n", |_| Ok::<_, StoreError>(None))
            .await
            .unwrap();
        assert!(written.is_none());
        assert!(NUMBERS.get(&store, "n").await.unwrap().is_none());
    }
}
