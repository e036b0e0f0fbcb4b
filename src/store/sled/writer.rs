//! The one writer thread: group commit through the journal, and the staging that lets each
//! job of a batch see the writes of the jobs before it.

use super::*;

pub(super) struct Writer {
    pub(super) db: Db,
    pub(super) trees: Trees,
    pub(super) next_seq: Seq,
    /// Tells feed readers the newest durable event, after each flush.
    pub(super) announce: tokio::sync::watch::Sender<Seq>,
    /// Key of the next journal entry.
    pub(super) next_entry: u64,
    /// Journal entries applied to their trees but not yet known durable there: deleted after
    /// the next flush.
    pub(super) unsettled: Vec<u64>,
    /// Why writing stopped: after a failed journal write, flush or apply, what is on disk
    /// is known only to the replay at the next open.
    pub(super) stopped: Option<Cause>,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut last_len = 0;
        while let Some(job) = rx.blocking_recv() {
            batch.push(job);
            take_waiting(&mut rx, &mut batch);
            // The last commit served several callers, so others are likely on their way.
            if last_len > 1 && batch.len() < MAX_BATCH {
                std::thread::sleep(GROUP_COMMIT_WAIT);
                take_waiting(&mut rx, &mut batch);
            }
            last_len = batch.len();
            let results = self.commit(&batch);
            for (job, result) in batch.drain(..).zip(results) {
                let _ = job.reply.send(result);
            }
        }
        // Closed: leave an empty journal behind (a failure here only means a replay on open).
        if self.db.flush().is_ok() && self.settle().is_ok() {
            let _ = self.db.flush();
        }
    }

    /// Stages the batch, makes it durable and applies it; one result per job.
    fn commit(&mut self, batch: &[Job]) -> Vec<Result<Applied, StoreError>> {
        if let Some(why) = &self.stopped {
            return batch
                .iter()
                .map(|_| {
                    Err(StoreError::backend(
                        "writes stopped after a failed commit",
                        why.clone(),
                    ))
                })
                .collect();
        }
        let committed = self.stage(batch).and_then(|(results, seq, writes)| {
            self.persist(writes)
                .inspect_err(|e| self.stopped = Some(cause(e.clone())))?;
            Ok((results, seq))
        });
        match committed {
            Ok((results, seq)) => {
                if seq != self.next_seq {
                    self.announce.send_replace(seq - 1);
                }
                self.next_seq = seq;
                results
            }
            Err(e) => {
                tracing::error!(error = %Chain(&e), jobs = batch.len(), "store commit failed");
                let e = cause(e);
                batch
                    .iter()
                    .map(|_| Err(StoreError::backend("commit", e.clone())))
                    .collect()
            }
        }
    }

    /// Journals the writes, flushes, then applies them to their trees. Entries applied
    /// before this flush are durable in their trees with it, so they go. Any failure here
    /// stops the writer: the entry may be on disk, and would be replayed at the next open.
    fn persist(&mut self, writes: Vec<StagedWrite>) -> sled::Result<()> {
        if writes.is_empty() {
            self.db.flush()?;
            return self.settle();
        }
        let key = self.next_entry.to_be_bytes();
        self.next_entry += 1;
        self.trees.journal.insert(key, encode(&writes))?;
        self.db.flush()?;
        self.settle()?;
        apply(&self.trees, writes)?;
        self.unsettled.push(self.next_entry - 1);
        Ok(())
    }

    /// Deletes the journal entries a flush since their apply has made redundant.
    fn settle(&mut self) -> sled::Result<()> {
        for entry in self.unsettled.drain(..) {
            self.trees.journal.remove(entry.to_be_bytes())?;
        }
        Ok(())
    }

    /// Checks each job against the trees and the writes staged before it, and stages its
    /// writes; a job that fails a check stages nothing. The outer error is sled's.
    fn stage(&self, batch: &[Job]) -> sled::Result<StagedBatch> {
        let staged = Staged::new(&self.trees);
        let [
            certs,
            by_device,
            by_issuer,
            events,
            issuers,
            challenges,
            docs,
            by_expiry,
            by_revoked,
            by_expiring,
        ] = [
            TreeId::Certs,
            TreeId::ByDevice,
            TreeId::ByIssuer,
            TreeId::Events,
            TreeId::Issuers,
            TreeId::Challenges,
            TreeId::Docs,
            TreeId::ByExpiry,
            TreeId::ByRevoked,
            TreeId::ByExpiring,
        ]
        .map(|id| staged.tree(id));
        let mut seq = self.next_seq;
        let mut results = Vec::with_capacity(batch.len());
        for job in batch {
            let result = match &job.op {
                Op::Insert(rec, linked) => {
                    let key = rec.serial.as_bytes();
                    // Reads first; nothing is staged unless every check passes.
                    let docs_ok = check_docs(&docs, &linked.docs)?;
                    let challenge_ok = usable(
                        &challenges,
                        linked.consume.map(|challenge| UseUp {
                            challenge,
                            at: rec.issued_at,
                        }),
                    )?;
                    if !challenge_ok {
                        Err(StoreError::ChallengeUnavailable)
                    } else if let Err(e) = docs_ok {
                        Err(e)
                    } else if certs.get(key)?.is_some() {
                        // Also a certificate staged earlier in this batch.
                        Err(StoreError::DuplicateSerial(rec.serial.clone()))
                    } else {
                        // The certificate before what refers to it: its indexes, the
                        // documents naming it (an ACME order), its event.
                        certs.insert(key, encode(rec.as_ref()));
                        if let Some(device) = &rec.device {
                            by_device.insert(index_key(device.as_str(), key), []);
                        }
                        by_issuer.insert(index_key(rec.issuer.as_str(), key), []);
                        by_expiry.insert(expiry_key(rec), []);
                        by_expiring.insert(expiry_key(rec), []);
                        // What a renewal replaces will not need renewing.
                        if let Some(old) = &rec.replaces
                            && let Some(bytes) = certs.get(old.as_bytes())?
                            && let Ok(old) = decode::<CertRecord>("certs", &bytes)
                        {
                            by_expiring.remove(expiry_key(&old).as_slice())?;
                        }
                        if let Some(hash) = linked.consume {
                            challenges.remove(hash.as_bytes())?;
                        }
                        apply_docs(&docs, &linked.docs);
                        let kind = rec.issuance_event();
                        append_event(&events, &mut seq, rec, kind, rec.issued_at);
                        Ok(Applied::Inserted(seq - 1))
                    }
                }
                Op::Revoke { serial, reason, at } => match certs.get(serial.as_bytes())? {
                    None => Err(StoreError::NotFound(serial.clone())),
                    Some(bytes) => match decode::<CertRecord>("certs", &bytes) {
                        Err(e) => Err(e),
                        Ok(rec) if rec.status != CertStatus::Good => {
                            Err(StoreError::AlreadyRevoked(serial.clone()))
                        }
                        Ok(mut rec) => {
                            rec.status = CertStatus::Revoked {
                                at: *at,
                                reason: *reason,
                            };
                            certs.insert(serial.as_bytes(), encode(&rec));
                            by_expiring.remove(expiry_key(&rec).as_slice())?;
                            by_revoked.insert(
                                index_key(rec.issuer.as_str(), serial.as_bytes()),
                                encode(&RevokedValue::of(&rec)),
                            );
                            let kind = EventKind::Revoked { reason: *reason };
                            append_event(&events, &mut seq, &rec, kind, *at);
                            Ok(Applied::Revoked(Box::new(rec)))
                        }
                    },
                },
                Op::NoteDue(due, keys, now) => {
                    let index = match due {
                        Due::Expired => &by_expiry,
                        Due::Expiring => &by_expiring,
                    };
                    let mut noted = 0;
                    for key in keys {
                        if index.remove(key.as_slice())?.is_none() {
                            continue;
                        }
                        let Some(bytes) = certs.get(&key[8..])? else {
                            continue;
                        };
                        let Ok(rec) = decode::<CertRecord>("certs", &bytes) else {
                            continue;
                        };
                        if due.applies(&rec, *now) {
                            append_event(&events, &mut seq, &rec, due.event(), *now);
                            noted += 1;
                        }
                    }
                    Ok(Applied::Purged(noted))
                }
                Op::PurgeChallenges(hashes, now) => {
                    let mut purged = 0;
                    for hash in hashes {
                        let expired = challenges.get(hash.as_bytes())?.is_some_and(|v| {
                            decode::<ChallengeRecord>("challenges", &v)
                                .is_ok_and(|c| !c.is_live(*now))
                        });
                        if expired {
                            challenges.remove(hash.as_bytes())?;
                            purged += 1;
                        }
                    }
                    Ok(Applied::Purged(purged))
                }
                Op::PutChallenge(hash, rec) => {
                    challenges.insert(hash.as_bytes(), encode(rec.as_ref()));
                    Ok(Applied::Done)
                }
                Op::WriteDocs(writes, consume) => {
                    if !usable(&challenges, *consume)? {
                        Err(StoreError::ChallengeUnavailable)
                    } else {
                        match check_docs(&docs, writes)? {
                            Ok(()) => {
                                if let Some(u) = consume {
                                    challenges.remove(u.challenge.as_bytes())?;
                                }
                                apply_docs(&docs, writes);
                                Ok(Applied::Done)
                            }
                            Err(e) => Err(e),
                        }
                    }
                }
                Op::PutIssuer(rec) => {
                    issuers.insert(rec.id.as_str().as_bytes(), encode(rec.as_ref()));
                    Ok(Applied::Done)
                }
                Op::ChangeIssuers(changes, at) => {
                    // Every expectation is checked before anything is staged.
                    let mut unmet = None;
                    for c in changes {
                        let now = match issuers.get(c.record.id.as_str().as_bytes())? {
                            None => None,
                            Some(bytes) => match decode::<IssuerRecord>("issuers", &bytes) {
                                Ok(r) => Some(r.state),
                                Err(e) => {
                                    unmet = Some(e);
                                    break;
                                }
                            },
                        };
                        if now != c.was {
                            unmet = Some(StoreError::IssuerChanged(c.record.id.clone()));
                            break;
                        }
                    }
                    match unmet {
                        Some(e) => Err(e),
                        None => {
                            for c in changes {
                                issuers.insert(c.record.id.as_str().as_bytes(), encode(&c.record));
                                let event = Event {
                                    seq,
                                    at: *at,
                                    kind: c.event.clone(),
                                    serial: c.serial.clone(),
                                    issuer: c.record.id.clone(),
                                    device: None,
                                };
                                events.insert(seq.to_be_bytes(), encode(&event));
                                seq += 1;
                            }
                            Ok(Applied::Done)
                        }
                    }
                }
                Op::Flush => Ok(Applied::Done),
            };
            results.push(result);
        }
        Ok((results, seq, staged.writes.into_inner()))
    }
}

/// Each job's result, the next event number, and the writes to make.
pub(super) type StagedBatch = (Vec<Result<Applied, StoreError>>, Seq, Vec<StagedWrite>);

/// One staged write: a value to put, or `None` to delete the key.
#[derive(Serialize, Deserialize)]
pub(super) struct StagedWrite {
    pub(super) tree: TreeId,
    #[serde(with = "serde_bytes")]
    pub(super) key: Vec<u8>,
    pub(super) value: Option<serde_bytes::ByteBuf>,
}

/// A commit's writes in order, and where the newest write of each key is: the commit's own
/// later reads see that instead of the tree.
pub(super) struct Staged<'t> {
    trees: &'t Trees,
    pub(super) writes: RefCell<Vec<StagedWrite>>,
    latest: RefCell<HashMap<(TreeId, Vec<u8>), usize>>,
}

impl<'t> Staged<'t> {
    pub(super) fn new(trees: &'t Trees) -> Self {
        Self {
            trees,
            writes: RefCell::new(Vec::new()),
            latest: RefCell::new(HashMap::new()),
        }
    }

    pub(super) fn tree(&self, id: TreeId) -> StagedTree<'_, 't> {
        StagedTree { staged: self, id }
    }
}

/// One tree as the commit being staged sees it.
#[derive(Clone, Copy)]
pub(super) struct StagedTree<'s, 't> {
    staged: &'s Staged<'t>,
    id: TreeId,
}

impl StagedTree<'_, '_> {
    fn get(&self, key: impl AsRef<[u8]>) -> sled::Result<Option<IVec>> {
        let key = key.as_ref();
        if let Some(&i) = self.staged.latest.borrow().get(&(self.id, key.to_vec())) {
            let writes = self.staged.writes.borrow();
            return Ok(writes[i].value.as_ref().map(|v| IVec::from(v.as_slice())));
        }
        self.staged.trees.tree(self.id).get(key)
    }

    fn insert(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.stage(key.as_ref(), Some(value.into()));
    }

    /// Stages the deletion and returns the value it deletes.
    fn remove(&self, key: impl AsRef<[u8]>) -> sled::Result<Option<IVec>> {
        let key = key.as_ref();
        let old = self.get(key)?;
        if old.is_some() {
            self.stage(key, None);
        }
        Ok(old)
    }

    fn stage(&self, key: &[u8], value: Option<Vec<u8>>) {
        let mut writes = self.staged.writes.borrow_mut();
        self.staged
            .latest
            .borrow_mut()
            .insert((self.id, key.to_vec()), writes.len());
        writes.push(StagedWrite {
            tree: self.id,
            key: key.to_vec(),
            value: value.map(serde_bytes::ByteBuf::from),
        });
    }
}

/// Writes a commit's staged writes to their trees (idempotent, so a replay may repeat it).
pub(super) fn apply(trees: &Trees, writes: Vec<StagedWrite>) -> sled::Result<()> {
    for w in writes {
        let tree = trees.tree(w.tree);
        match w.value {
            Some(value) => tree.insert(w.key, value.into_vec())?,
            None => tree.remove(w.key)?,
        };
    }
    Ok(())
}

/// Applies, in order, the journal entries a crash left behind, then empties the journal.
pub(super) fn replay_journal(db: &Db, trees: &Trees) -> Result<(), StoreError> {
    if trees.journal.is_empty() {
        return Ok(());
    }
    for entry in trees.journal.iter() {
        let (_, writes) = entry.map_err(backend)?;
        apply(trees, decode("journal", &writes)?).map_err(backend)?;
    }
    db.flush().map_err(backend)?;
    trees.journal.clear().map_err(backend)?;
    db.flush().map_err(backend)?;
    Ok(())
}

/// Adds the jobs already queued to `batch`, up to `MAX_BATCH`.
pub(super) fn take_waiting(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

pub(super) fn append_event(
    events: &StagedTree,
    seq: &mut Seq,
    rec: &CertRecord,
    kind: EventKind,
    at: OffsetDateTime,
) {
    let event = Event {
        seq: *seq,
        at,
        kind,
        serial: rec.serial.clone(),
        issuer: rec.issuer.clone(),
        device: rec.device.clone(),
    };
    events.insert(seq.to_be_bytes(), encode(&event));
    *seq += 1;
}

/// Whether the one-time challenge to use up (if any) exists and is live when it is used.
pub(super) fn usable(challenges: &StagedTree, consume: Option<UseUp>) -> sled::Result<bool> {
    let Some(UseUp { challenge, at }) = consume else {
        return Ok(true);
    };
    Ok(challenges
        .get(challenge.as_bytes())?
        .is_some_and(|v| decode::<ChallengeRecord>("challenges", &v).is_ok_and(|c| c.is_live(at))))
}

/// Checks every expectation before anything is written; the outer error is sled's, the inner
/// one the caller's conflict.
pub(super) fn check_docs(
    docs: &StagedTree,
    writes: &[DocWrite],
) -> sled::Result<Result<(), StoreError>> {
    for w in writes {
        let current = docs.get(doc_key(&w.key))?;
        let met = match (w.expect, &current) {
            (Expect::Absent, None) => true,
            (Expect::Version(v), Some(bytes)) => decode_version(bytes) == Some(v),
            _ => false,
        };
        if !met {
            return Ok(Err(StoreError::Conflict {
                kind: w.key.kind,
                id: w.key.id.clone(),
            }));
        }
    }
    Ok(Ok(()))
}

pub(super) fn apply_docs(docs: &StagedTree, writes: &[DocWrite]) {
    for w in writes {
        let key = doc_key(&w.key);
        match &w.value {
            None => docs.stage(&key, None),
            Some(value) => {
                let version = match w.expect {
                    Expect::Absent => 1,
                    Expect::Version(v) => v + 1,
                };
                docs.insert(key, [&version.to_be_bytes()[..], value].concat());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit's later reads see its earlier staged writes: this is what refuses a serial
    /// staged twice in one batch, and a document changed twice against one version.
    #[tokio::test]
    async fn staged_writes_are_seen_by_the_same_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.trees.certs.insert(b"old", &b"on disk"[..]).unwrap();
        let staged = Staged::new(&store.trees);
        let certs = staged.tree(TreeId::Certs);
        assert_eq!(certs.get(b"new").unwrap(), None);
        certs.insert(b"new", b"one".to_vec());
        certs.insert(b"new", b"two".to_vec());
        assert_eq!(certs.get(b"new").unwrap().as_deref(), Some(&b"two"[..]));
        // Staged for another tree, the same key is not there.
        assert_eq!(staged.tree(TreeId::Docs).get(b"new").unwrap(), None);
        let removed = certs.remove(b"old").unwrap();
        assert_eq!(removed.as_deref(), Some(&b"on disk"[..]));
        assert_eq!(certs.get(b"old").unwrap(), None);
        assert_eq!(
            certs.remove(b"old").unwrap(),
            None,
            "nothing left to remove"
        );
        // Nothing reached the tree, and every write is kept, in order, for the journal.
        assert_eq!(store.trees.certs.get(b"new").unwrap(), None);
        let writes = staged.writes.into_inner();
        let keys: Vec<_> = writes
            .iter()
            .map(|w| (w.key.as_slice(), w.value.is_some()))
            .collect();
        assert_eq!(
            keys,
            [
                (&b"new"[..], true),
                (&b"new"[..], true),
                (&b"old"[..], false)
            ]
        );
    }
}
