//! The storage battery: written against the `Store` trait only, run for every backend.
//! A new backend joins by adding a `Backend` below; the tests stay as they are.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use enrollca::ca::{IssuerId, KeyFamily, Serial};
use enrollca::csr::Names;
use enrollca::csr::parse_subject;
use enrollca::revocation::RevocationReason;
use enrollca::store::{
    CertQuery, CertRecord, CertState, CertStatus, DeviceId, DocCache, DocKey, DocKind, DocWrite,
    EventKind, Expect, IssuerChange, IssuerRecord, IssuerState, Linked, PgStore, PgTarget,
    Protocol, SledStore, Standing, Store, StoreError, UseUp, UsedNonce,
};
use enrollca_testkit::harness::postgres;
use time::{Duration, OffsetDateTime};

/// A backend under test: opens (or reopens) a store rooted at `dir`.
type Backend = fn(&Path) -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>>;

const BACKENDS: &[(&str, Backend)] = &[
    ("sled", |dir| {
        let store: Arc<dyn Store> = Arc::new(reopen(dir));
        Box::pin(async move { store })
    }),
    // What `serve` runs: sled behind the document cache.
    ("sled+cache", |dir| {
        let store: Arc<dyn Store> = Arc::new(DocCache::new(reopen(dir)));
        Box::pin(async move { store })
    }),
    // A database of the test binary's private cluster, one per test directory.
    ("postgres", |dir| {
        let name: String = dir
            .file_name()
            .unwrap()
            .as_encoded_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let url = postgres::cluster().database(&format!("battery_{name}"));
        Box::pin(async move {
            let store = PgStore::connect(PgTarget::parse(&url).unwrap(), 8)
                .await
                .expect("connecting to the test cluster");
            Arc::new(store) as Arc<dyn Store>
        })
    }),
];

/// Opens the sled store in `dir`. sled's own background threads may hold the file lock for
/// a moment after a store in this process was dropped, so a reopen waits for it (up to 5 s).
fn reopen(dir: &Path) -> SledStore {
    let mut tries = 0;
    loop {
        match SledStore::open(dir) {
            Ok(store) => return store,
            Err(StoreError::Backend { source, .. })
                if source.to_string().contains("could not acquire lock") && tries < 100 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("opening the store: {e}"),
        }
    }
}

fn issuer(n: u8) -> IssuerId {
    format!("{:016x}", n).parse().unwrap()
}

pub(crate) fn record(device: Option<&str>, issuer_n: u8) -> CertRecord {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    CertRecord {
        serial: Serial::random(),
        issuer: issuer(issuer_n),
        subject: "CN=device".into(),
        sans: vec!["DNS:device.example".into()],
        device: device.map(|d| d.parse::<DeviceId>().unwrap()),
        not_before: now - Duration::minutes(5),
        not_after: now + Duration::days(365),
        issued_at: now,
        protocol: Protocol::Admin,
        profile: "device".into(),
        replaces: None,
        account: None,
        attested: None,
        status: CertStatus::Good,
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
    }
}

async fn all_events(store: &dyn Store) -> Vec<enrollca::store::Event> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |e: &enrollca::store::Event| e.seq);
        let page = store.events(after, 1000).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

async fn for_each_backend<F, Fut>(test: F)
where
    F: Fn(Backend, &'static str, tempfile::TempDir) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for (name, backend) in BACKENDS {
        test(*backend, name, tempfile::tempdir().unwrap()).await;
    }
}

#[tokio::test]
async fn insert_then_read_back_with_its_event() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let newest = store.newest_event();
        assert_eq!(*newest.borrow(), 0, "{name}: an empty feed");
        let rec = record(Some("dev-1"), 1);
        let seq = store
            .insert_certificate(rec.clone(), Linked::default())
            .await
            .unwrap();
        assert_eq!(seq, 1, "{name}: the first event is 1");
        assert_eq!(*newest.borrow(), 1, "{name}: readers hear of it");
        assert_eq!(
            store.certificate(&rec.serial).await.unwrap(),
            Some(rec.clone())
        );
        let events = all_events(store.as_ref()).await;
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].kind,
            EventKind::Issued {
                attested: Some(false)
            }
        );
        assert_eq!(events[0].serial, rec.serial);
        assert_eq!(events[0].device, rec.device);

        let mut renewal = record(Some("dev-1"), 1);
        renewal.replaces = Some(rec.serial.clone());
        renewal.attested = Some(enrollca::attest::DeviceFacts {
            format: "apple".into(),
            ..Default::default()
        });
        assert_eq!(
            store
                .insert_certificate(renewal, Linked::default())
                .await
                .unwrap(),
            2
        );
        let events = all_events(store.as_ref()).await;
        assert_eq!(
            events[1].kind,
            EventKind::Renewed {
                replaces: rec.serial.clone(),
                attested: Some(true),
            }
        );
        assert_eq!(store.certificate(&Serial::random()).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn duplicate_serial_writes_nothing() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let rec = record(Some("dev-1"), 1);
        store
            .insert_certificate(rec.clone(), Linked::default())
            .await
            .unwrap();
        let mut dup = record(Some("dev-2"), 2);
        dup.serial = rec.serial.clone();
        let err = store
            .insert_certificate(dup, Linked::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::DuplicateSerial(ref s) if *s == rec.serial),
            "{name}: {err}"
        );
        assert_eq!(all_events(store.as_ref()).await.len(), 1);
        assert_eq!(store.certificate(&rec.serial).await.unwrap(), Some(rec));
        let by_dev2 = store
            .certificates(CertQuery {
                device: Some("dev-2".parse().unwrap()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            by_dev2.items.is_empty(),
            "{name}: no index entry for the refused record"
        );
    })
    .await;
}

#[tokio::test]
async fn revocation_is_recorded_once() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let rec = record(None, 1);
        store
            .insert_certificate(rec.clone(), Linked::default())
            .await
            .unwrap();
        // Read first, so a cached state of the good record exists and must be replaced.
        assert_eq!(
            store.certificate_state(&rec.serial).await.unwrap(),
            Some(CertState::from(&rec))
        );
        let at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let revoked = store
            .revoke(&rec.serial, RevocationReason::KeyCompromise, at)
            .await
            .unwrap();
        assert_eq!(
            revoked.status,
            CertStatus::Revoked {
                at,
                reason: RevocationReason::KeyCompromise
            }
        );
        assert_eq!(
            store.certificate(&rec.serial).await.unwrap(),
            Some(revoked.clone())
        );
        assert_eq!(
            store.certificate_state(&rec.serial).await.unwrap(),
            Some(CertState::from(&revoked)),
            "{name}: the revocation replaces the state read before it"
        );

        let again = store
            .revoke(&rec.serial, RevocationReason::Superseded, at)
            .await
            .unwrap_err();
        assert!(
            matches!(again, StoreError::AlreadyRevoked(_)),
            "{name}: {again}"
        );
        assert_eq!(
            store.certificate(&rec.serial).await.unwrap(),
            Some(revoked.clone()),
            "{name}: a refused revocation changes nothing"
        );
        assert_eq!(
            store.certificate_state(&rec.serial).await.unwrap(),
            Some(CertState::from(&revoked)),
            "{name}"
        );
        let missing = store
            .revoke(&Serial::random(), RevocationReason::Unspecified, at)
            .await
            .unwrap_err();
        assert!(
            matches!(missing, StoreError::NotFound(_)),
            "{name}: {missing}"
        );

        let events = all_events(store.as_ref()).await;
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1].kind,
            EventKind::Revoked {
                reason: RevocationReason::KeyCompromise
            }
        );
        assert_eq!(events[1].at, at);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_racing_a_revocation_never_bring_back_the_good_state() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        for _ in 0..20 {
            let rec = record(None, 1);
            store
                .insert_certificate(rec.clone(), Linked::default())
                .await
                .unwrap();
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    let (store, serial, done) = (store.clone(), rec.serial.clone(), done.clone());
                    tokio::spawn(async move {
                        for _ in 0..200 {
                            let after_revoke = done.load(std::sync::atomic::Ordering::SeqCst);
                            let seen = store.certificate_state(&serial).await.unwrap().unwrap();
                            if after_revoke && seen.status == CertStatus::Good {
                                return Err("a read begun after the revocation saw it good");
                            }
                            let record = store.certificate(&serial).await.unwrap().unwrap();
                            if after_revoke && record.status == CertStatus::Good {
                                return Err("a record read after the revocation was good");
                            }
                            tokio::task::yield_now().await;
                        }
                        Ok(())
                    })
                })
                .collect();
            tokio::task::yield_now().await;
            store
                .revoke(
                    &rec.serial,
                    RevocationReason::Superseded,
                    OffsetDateTime::now_utc(),
                )
                .await
                .unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            for r in readers {
                r.await.unwrap().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            assert!(matches!(
                store
                    .certificate(&rec.serial)
                    .await
                    .unwrap()
                    .unwrap()
                    .status,
                CertStatus::Revoked { .. }
            ));
        }
    })
    .await;
}

#[tokio::test]
async fn listings_filter_and_page_without_gaps_or_repeats() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let mut dev_a = HashSet::new();
        for i in 0..7 {
            let rec = record(
                Some(if i % 2 == 0 { "dev-a" } else { "dev-b" }),
                (i % 3) as u8,
            );
            if i % 2 == 0 {
                dev_a.insert(rec.serial.clone());
            }
            store
                .insert_certificate(rec, Linked::default())
                .await
                .unwrap();
        }
        // A device id that is a prefix of another must not leak into its listing.
        store
            .insert_certificate(record(Some("dev-a2"), 0), Linked::default())
            .await
            .unwrap();
        let mut expired = record(Some("dev-a"), 0);
        expired.not_after = OffsetDateTime::now_utc() - Duration::days(1);
        store
            .insert_certificate(expired.clone(), Linked::default())
            .await
            .unwrap();
        dev_a.insert(expired.serial.clone());

        let mut seen = HashSet::new();
        let mut after = None;
        loop {
            let q = CertQuery {
                device: Some("dev-a".parse().unwrap()),
                after,
                limit: 2,
                ..Default::default()
            };
            let page = store.certificates(q).await.unwrap();
            assert!(page.items.len() <= 2);
            for r in &page.items {
                assert!(
                    seen.insert(r.serial.clone()),
                    "{name}: {} listed twice",
                    r.serial
                );
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, dev_a, "{name}");
        let all = store
            .all_certificates(CertQuery {
                device: Some("dev-a".parse().unwrap()),
                ..Default::default()
            })
            .await
            .unwrap();
        let all: HashSet<_> = all.into_iter().map(|r| r.serial).collect();
        assert_eq!(all, dev_a, "{name}: all pages, once each");

        let by_issuer = store
            .certificates(CertQuery {
                issuer: Some(issuer(1)),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(by_issuer.items.iter().all(|r| r.issuer == issuer(1)));
        assert_eq!(by_issuer.items.len(), 2);
        let exp = store
            .certificates(CertQuery {
                status: Some(Standing::Expired),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            exp.items.iter().map(|r| &r.serial).collect::<Vec<_>>(),
            vec![&expired.serial]
        );
        let good = store
            .certificates(CertQuery {
                device: Some("dev-a".parse().unwrap()),
                status: Some(Standing::Good),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(good.items.len(), 4);
        let all = store
            .certificates(CertQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.items.len(), 9);
        assert!(all.next.is_none());
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_get_a_gapless_feed() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let mut tasks = Vec::new();
        for i in 0..2000 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let rec = record(Some(&format!("dev-{}", i % 50)), 1);
                let serial = rec.serial.clone();
                (
                    store
                        .insert_certificate(rec, Linked::default())
                        .await
                        .unwrap(),
                    serial,
                )
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        let mut numbers: Vec<_> = seqs.iter().map(|(s, _)| *s).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=2000).collect::<Vec<_>>(), "{name}");
        let events = all_events(store.as_ref()).await;
        assert_eq!(events.len(), 2000);
        for (seq, serial) in &seqs {
            assert_eq!(
                &events[(*seq - 1) as usize].serial,
                serial,
                "{name}: event {seq} names its certificate"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn state_survives_reopening() {
    for_each_backend(|open, name, dir| async move {
        let rec = record(Some("dev-1"), 1);
        let issuer_rec = IssuerRecord {
            id: issuer(7),
            family: KeyFamily::Rsa,
            state: IssuerState::Active,
            cert_der: vec![1, 2, 3],
            intermediates: vec![vec![4, 5].into()],
            key_file: "ca/issuers/x.key".into(),
            created_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        };
        {
            let store = open(dir.path()).await;
            store
                .insert_certificate(rec.clone(), Linked::default())
                .await
                .unwrap();
            store.put_issuer(issuer_rec.clone()).await.unwrap();
            let retiring = IssuerRecord {
                state: IssuerState::Retiring,
                ..issuer_rec.clone()
            };
            store.put_issuer(retiring).await.unwrap();
        }
        let store = open(dir.path()).await;
        assert_eq!(store.certificate(&rec.serial).await.unwrap(), Some(rec));
        assert!(
            *store.newest_event().borrow() > 0,
            "{name}: the newest event is known"
        );
        let issuers = store.issuers().await.unwrap();
        assert_eq!(issuers.len(), 1, "{name}: put_issuer replaces");
        assert_eq!(issuers[0].state, IssuerState::Retiring);
        assert_eq!(issuers[0].intermediates, issuer_rec.intermediates);
        // The feed continues where it stopped.
        assert_eq!(
            store
                .insert_certificate(record(None, 1), Linked::default())
                .await
                .unwrap(),
            2,
            "{name}"
        );
    })
    .await;
}

#[tokio::test]
async fn one_time_challenges_are_used_once_and_only_with_a_write() {
    use enrollca::store::{ChallengeHash, ChallengeRecord};
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let live = ChallengeHash::of(b"live");
        let stale = ChallengeHash::of(b"stale");
        let names = Names {
            subject: Some(parse_subject("CN=dev-1,O=Example").unwrap()),
            sans: Some(vec!["DNS:dev-1.example".parse().unwrap()]),
        };
        let rec = |expires_at| ChallengeRecord {
            device: Some("dev-1".parse().unwrap()),
            names: names.clone(),
            created_at: now,
            expires_at,
        };
        store
            .put_challenge(live, rec(now + Duration::hours(1)))
            .await
            .unwrap();
        store
            .put_challenge(stale, rec(now - Duration::seconds(1)))
            .await
            .unwrap();
        let stored = store.challenge(&live).await.unwrap().unwrap();
        assert_eq!(stored.device.unwrap().as_str(), "dev-1");
        assert_eq!(stored.names, names, "the stated names come back as minted");
        assert!(
            store
                .challenge(&ChallengeHash::of(b"never"))
                .await
                .unwrap()
                .is_none()
        );

        // Expired or unknown: refused, nothing written.
        for hash in [stale, ChallengeHash::of(b"never")] {
            let err = store
                .insert_certificate(record(None, 1), Linked::challenge(hash))
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::ChallengeUnavailable),
                "{name}: {err}"
            );
        }
        assert!(all_events(store.as_ref()).await.is_empty(), "{name}");

        // A refused insert (duplicate serial) leaves the challenge usable.
        let first = record(None, 1);
        store
            .insert_certificate(first.clone(), Linked::default())
            .await
            .unwrap();
        let mut dup = record(None, 1);
        dup.serial = first.serial.clone();
        assert!(matches!(
            store.insert_certificate(dup, Linked::challenge(live)).await,
            Err(StoreError::DuplicateSerial(_))
        ));
        assert!(store.challenge(&live).await.unwrap().is_some(), "{name}");

        // Judged to the instant, not to the second: at .500, one that expired at .200 is
        // refused, one that expires at .800 is used.
        let at_half = |hash| {
            let mut rec = record(None, 1);
            rec.issued_at = now + Duration::milliseconds(500);
            (rec, Linked::challenge(hash))
        };
        let (gone, soon) = (ChallengeHash::of(b"gone"), ChallengeHash::of(b"soon"));
        store
            .put_challenge(gone, rec(now + Duration::milliseconds(200)))
            .await
            .unwrap();
        store
            .put_challenge(soon, rec(now + Duration::milliseconds(800)))
            .await
            .unwrap();
        let (rec_gone, linked) = at_half(gone);
        assert!(
            matches!(
                store.insert_certificate(rec_gone, linked).await,
                Err(StoreError::ChallengeUnavailable)
            ),
            "{name}"
        );
        let (rec_soon, linked) = at_half(soon);
        store.insert_certificate(rec_soon, linked).await.unwrap();

        // Concurrent uses: exactly one wins, and the challenge is gone.
        let attempts: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .insert_certificate(record(None, 1), Linked::challenge(live))
                        .await
                })
            })
            .collect();
        let mut won = 0;
        for a in attempts {
            match a.await.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::ChallengeUnavailable) => {}
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert_eq!(won, 1, "{name}");
        assert!(store.challenge(&live).await.unwrap().is_none());
        assert_eq!(all_events(store.as_ref()).await.len(), 3);
    })
    .await;
}

#[tokio::test]
async fn expired_challenges_are_purged_and_live_ones_kept() {
    use enrollca::store::{ChallengeHash, ChallengeRecord};
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let rec = |expires_at| ChallengeRecord {
            names: Names::default(),
            device: None,
            created_at: now,
            expires_at,
        };
        for i in 0..5u8 {
            store
                .put_challenge(
                    ChallengeHash::of(&[b'e', i]),
                    rec(now - Duration::minutes(1)),
                )
                .await
                .unwrap();
        }
        store
            .put_challenge(ChallengeHash::of(b"live"), rec(now + Duration::hours(1)))
            .await
            .unwrap();
        assert_eq!(store.purge_challenges(now).await.unwrap(), 5, "{name}");
        assert_eq!(store.purge_challenges(now).await.unwrap(), 0, "{name}");
        assert!(
            store
                .challenge(&ChallengeHash::of(b"live"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .challenge(&ChallengeHash::of(&[b'e', 0]))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            all_events(store.as_ref()).await.is_empty(),
            "{name}: purging is not an event"
        );
    })
    .await;
}

fn put(kind: DocKind, id: &str, expect: Expect, value: &[u8]) -> DocWrite {
    DocWrite {
        key: DocKey::new(kind, id),
        expect,
        value: Some(value.to_vec()),
    }
}

#[tokio::test]
async fn documents_are_compare_and_swap_and_all_or_nothing() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let order = DocKey::new(DocKind::AcmeOrder, "o1");
        store
            .write_docs(vec![
                put(DocKind::AcmeOrder, "o1", Expect::Absent, b"pending"),
                put(DocKind::AcmeAccountOrder, "a1/o1", Expect::Absent, b""),
            ])
            .await
            .unwrap();
        let doc = store.doc(&order).await.unwrap().unwrap();
        assert_eq!(
            (doc.value.as_slice(), doc.version),
            (&b"pending"[..], 1),
            "{name}"
        );

        // A second creation, a stale version, or one unmet expectation among several: refused,
        // and nothing of the batch is written.
        let stale = [
            vec![put(DocKind::AcmeOrder, "o1", Expect::Absent, b"x")],
            vec![put(DocKind::AcmeOrder, "o1", Expect::Version(7), b"x")],
            vec![
                put(DocKind::AcmeAuthz, "z1", Expect::Absent, b"x"),
                put(DocKind::AcmeOrder, "o1", Expect::Version(2), b"x"),
            ],
        ];
        for writes in stale {
            let err = store.write_docs(writes).await.unwrap_err();
            // The refusal names the write that was not met.
            assert!(
                matches!(&err, StoreError::Conflict { kind: DocKind::AcmeOrder, id } if id == "o1"),
                "{name}: {err}"
            );
        }
        let z1 = DocKey::new(DocKind::AcmeAuthz, "z1");
        assert!(store.doc(&z1).await.unwrap().is_none(), "{name}");

        // Concurrent read-modify-write: exactly one of them wins.
        let racers: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let w = put(DocKind::AcmeOrder, "o1", Expect::Version(1), &[i]);
                    store.write_docs(vec![w]).await
                })
            })
            .collect();
        let mut won = 0;
        for r in racers {
            won += usize::from(r.await.unwrap().is_ok());
        }
        assert_eq!(won, 1, "{name}");
        assert_eq!(store.doc(&order).await.unwrap().unwrap().version, 2);

        // A certificate linked to a document commits only if the document is as expected.
        let err = store
            .insert_certificate(
                record(None, 1),
                Linked::docs(vec![put(
                    DocKind::AcmeOrder,
                    "o1",
                    Expect::Version(1),
                    b"valid",
                )]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{name}");
        assert!(all_events(store.as_ref()).await.is_empty(), "{name}");
        store
            .insert_certificate(
                record(None, 1),
                Linked::docs(vec![put(
                    DocKind::AcmeOrder,
                    "o1",
                    Expect::Version(2),
                    b"valid",
                )]),
            )
            .await
            .unwrap();
        assert_eq!(store.doc(&order).await.unwrap().unwrap().value, b"valid");

        // Listing by prefix, in id order, with a cursor; other kinds do not leak in.
        for id in ["a1/o3", "a1/o2", "a2/o9"] {
            store
                .write_docs(vec![put(
                    DocKind::AcmeAccountOrder,
                    id,
                    Expect::Absent,
                    b"",
                )])
                .await
                .unwrap();
        }
        let ids = |v: Vec<(String, enrollca::store::Doc)>| {
            v.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
        };
        let a1 = store
            .docs(DocKind::AcmeAccountOrder, "a1/", None, 10)
            .await
            .unwrap();
        assert_eq!(ids(a1), ["a1/o1", "a1/o2", "a1/o3"], "{name}");
        let page = store
            .docs(DocKind::AcmeAccountOrder, "a1/", Some("a1/o1"), 1)
            .await
            .unwrap();
        assert_eq!(ids(page), ["a1/o2"], "{name}");
        let all = store
            .all_docs(DocKind::AcmeAccountOrder, "a1/")
            .await
            .unwrap();
        assert_eq!(ids(all), ["a1/o1", "a1/o2", "a1/o3"], "{name}");

        // Deletion, and the state survives reopening.
        store
            .write_docs(vec![DocWrite {
                key: DocKey::new(DocKind::AcmeAccountOrder, "a2/o9"),
                expect: Expect::Version(1),
                value: None,
            }])
            .await
            .unwrap();
        drop(store);
        let store = open(dir.path()).await;
        assert!(
            store
                .docs(DocKind::AcmeAccountOrder, "a2/", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.doc(&order).await.unwrap().unwrap().version,
            3,
            "{name}"
        );
    })
    .await;
}

#[tokio::test]
async fn documents_can_use_up_a_challenge_in_the_same_write() {
    use enrollca::store::{ChallengeHash, ChallengeRecord};
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let now = OffsetDateTime::now_utc();
        let hash = ChallengeHash::of(b"one-time");
        let rec = ChallengeRecord {
            names: Names::default(),
            device: None,
            created_at: now,
            expires_at: now + Duration::hours(1),
        };
        store.put_challenge(hash, rec).await.unwrap();
        let write = |id: &str| vec![put(DocKind::ScepPending, id, Expect::Absent, b"waiting")];
        let use_up = Some(UseUp {
            challenge: hash,
            at: now,
        });
        store.commit_docs(write("t1"), use_up).await.unwrap();
        assert!(
            store.challenge(&hash).await.unwrap().is_none(),
            "{name}: used up"
        );
        // A second use is refused, and its document is not written.
        let err = store.commit_docs(write("t2"), use_up).await.unwrap_err();
        assert!(
            matches!(err, StoreError::ChallengeUnavailable),
            "{name}: {err}"
        );
        let t2 = DocKey::new(DocKind::ScepPending, "t2");
        assert!(store.doc(&t2).await.unwrap().is_none(), "{name}");
    })
    .await;
}

#[tokio::test]
async fn expiry_is_noted_once_for_certificates_still_good() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let expired = |device| {
            let mut r = record(Some(device), 1);
            r.not_before = now - Duration::days(30);
            r.not_after = now - Duration::days(1);
            r
        };
        let (gone, revoked, live) = (expired("dev-e1"), expired("dev-e2"), record(None, 1));
        for rec in [&gone, &revoked, &live] {
            store
                .insert_certificate(rec.clone(), Linked::default())
                .await
                .unwrap();
        }
        store
            .revoke(&revoked.serial, RevocationReason::KeyCompromise, now)
            .await
            .unwrap();
        assert_eq!(store.expire(now).await.unwrap(), 1, "{name}");
        assert_eq!(store.expire(now).await.unwrap(), 0, "{name}: once");
        let events = all_events(store.as_ref()).await;
        let last = events.last().unwrap();
        assert_eq!(
            (&last.kind, &last.serial),
            (&EventKind::Expired, &gone.serial),
            "{name}"
        );
        assert_eq!(last.device.as_ref().map(|d| d.as_str()), Some("dev-e1"));
        // The live certificate's turn comes when its time does.
        let later = live.not_after + Duration::seconds(1);
        assert_eq!(store.expire(later).await.unwrap(), 1, "{name}");
    })
    .await;
}

#[tokio::test]
async fn a_fleet_expiring_together_is_noted_in_one_sweep() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        // More than one writer batch (512) of certificates past their notAfter.
        const FLEET: usize = 1300;
        for i in 0..FLEET {
            let mut r = record(Some(&format!("fleet-{i}")), 1);
            r.not_before = now - Duration::days(30);
            r.not_after = now - Duration::days(1);
            store
                .insert_certificate(r, Linked::default())
                .await
                .unwrap();
        }
        assert_eq!(
            store.expire(now).await.unwrap(),
            FLEET,
            "{name}: all in one sweep"
        );
        assert_eq!(store.expire(now).await.unwrap(), 0, "{name}");
        let expired = all_events(store.as_ref())
            .await
            .iter()
            .filter(|e| e.kind == EventKind::Expired)
            .count();
        assert_eq!(expired, FLEET, "{name}");
    })
    .await;
}

#[tokio::test]
async fn issuer_changes_are_all_or_nothing_with_their_events() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let rec = |n, state| IssuerRecord {
            id: issuer(n),
            family: KeyFamily::Ecdsa,
            state,
            cert_der: vec![n],
            intermediates: Vec::new(),
            key_file: format!("ca/issuers/{n}.key"),
            created_at: now,
        };
        let change = |n, state, was, event| IssuerChange {
            record: rec(n, state),
            was,
            event,
            serial: Serial::random(),
        };
        store.put_issuer(rec(1, IssuerState::Active)).await.unwrap();
        // Staging needs the issuer to be new.
        let stage = change(2, IssuerState::Next, None, EventKind::IssuerStaged);
        store
            .change_issuers(vec![stage.clone()], now)
            .await
            .unwrap();
        assert!(matches!(
            store.change_issuers(vec![stage], now).await,
            Err(StoreError::IssuerChanged(_))
        ));
        // Activation: both or neither. A stale expectation on the second writes nothing.
        let stale = vec![
            change(
                2,
                IssuerState::Active,
                Some(IssuerState::Next),
                EventKind::IssuerActivated,
            ),
            change(
                1,
                IssuerState::Retiring,
                Some(IssuerState::Next),
                EventKind::IssuerRetiring,
            ),
        ];
        assert!(store.change_issuers(stale, now).await.is_err(), "{name}");
        let states = |list: Vec<IssuerRecord>| {
            let mut s: Vec<_> = list.into_iter().map(|r| (r.id, r.state)).collect();
            s.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            s
        };
        assert_eq!(
            states(store.issuers().await.unwrap()),
            vec![
                (issuer(1), IssuerState::Active),
                (issuer(2), IssuerState::Next)
            ],
            "{name}: nothing written"
        );
        let activate = vec![
            change(
                2,
                IssuerState::Active,
                Some(IssuerState::Next),
                EventKind::IssuerActivated,
            ),
            change(
                1,
                IssuerState::Retiring,
                Some(IssuerState::Active),
                EventKind::IssuerRetiring,
            ),
        ];
        store.change_issuers(activate, now).await.unwrap();
        assert_eq!(
            states(store.issuers().await.unwrap()),
            vec![
                (issuer(1), IssuerState::Retiring),
                (issuer(2), IssuerState::Active)
            ],
            "{name}"
        );
        let kinds: Vec<_> = all_events(store.as_ref())
            .await
            .into_iter()
            .map(|e| (e.kind, e.issuer))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::IssuerStaged, issuer(2)),
                (EventKind::IssuerActivated, issuer(2)),
                (EventKind::IssuerRetiring, issuer(1)),
            ],
            "{name}: one event per change, in order, none for the refused ones"
        );
    })
    .await;
}

#[tokio::test]
async fn revoked_listings_by_issuer_hold_exactly_the_revoked_across_a_reopen() {
    for_each_backend(|open, name, dir| async move {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let recs: Vec<_> = [1, 1, 1, 2].iter().map(|i| record(None, *i)).collect();
        let query = |issuer_n| CertQuery {
            issuer: Some(issuer(issuer_n)),
            status: Some(Standing::Revoked),
            now: Some(now),
            ..CertQuery::default()
        };
        {
            let store = open(dir.path()).await;
            for r in &recs {
                store
                    .insert_certificate(r.clone(), Linked::default())
                    .await
                    .unwrap();
            }
            for r in [&recs[0], &recs[2], &recs[3]] {
                store
                    .revoke(&r.serial, RevocationReason::Superseded, now)
                    .await
                    .unwrap();
            }
        }
        let store = open(dir.path()).await;
        let mut got: Vec<_> = store
            .all_certificates(query(1))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.serial)
            .collect();
        got.sort();
        let mut want = vec![recs[0].serial.clone(), recs[2].serial.clone()];
        want.sort();
        assert_eq!(got, want, "{name}");
        assert_eq!(
            store.all_certificates(query(2)).await.unwrap().len(),
            1,
            "{name}"
        );
    })
    .await;
}

/// Issue 24, item 7: `expiring` comes once per certificate, `within` before its notAfter,
/// and never for one revoked, renewed or already expired; it survives reopening.
#[tokio::test]
async fn expiring_is_noted_once_for_certificates_still_to_renew() {
    for_each_backend(|open, name, dir| async move {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let ending = |device: &str, days: i64| {
            let mut r = record(Some(device), 1);
            r.not_after = now + Duration::days(days);
            r
        };
        let soon = ending("soon", 10);
        let later = ending("later", 60);
        let revoked = ending("revoked", 10);
        let renewed = ending("renewed", 10);
        let renewal = CertRecord {
            replaces: Some(renewed.serial.clone()),
            ..ending("renewed", 365)
        };
        let mut gone = ending("gone", -1);
        gone.not_before = now - Duration::days(30);
        {
            let store = open(dir.path()).await;
            for rec in [&soon, &later, &revoked, &renewed, &renewal, &gone] {
                store
                    .insert_certificate(rec.clone(), Linked::default())
                    .await
                    .unwrap();
            }
            store
                .revoke(&revoked.serial, RevocationReason::Superseded, now)
                .await
                .unwrap();
            assert_eq!(
                store.expiring(now, Duration::days(30)).await.unwrap(),
                1,
                "{name}: only the one due, good, not renewed and not expired"
            );
            assert_eq!(
                store.expiring(now, Duration::days(30)).await.unwrap(),
                0,
                "{name}: once"
            );
            let last = all_events(store.as_ref()).await.pop().unwrap();
            assert_eq!(
                (&last.kind, &last.serial),
                (&EventKind::Expiring, &soon.serial),
                "{name}"
            );
            assert_eq!(last.device.as_ref().map(|d| d.as_str()), Some("soon"));
        }
        // Reopened: what was noted stays noted; the rest come when due.
        let store = open(dir.path()).await;
        assert_eq!(
            store.expiring(now, Duration::days(30)).await.unwrap(),
            0,
            "{name}"
        );
        assert_eq!(
            store.expiring(now, Duration::days(400)).await.unwrap(),
            2,
            "{name}: `later` and the renewal"
        );
        let noted: Vec<Serial> = all_events(store.as_ref())
            .await
            .into_iter()
            .filter(|e| e.kind == EventKind::Expiring)
            .map(|e| e.serial)
            .collect();
        assert_eq!(noted.len(), 3, "{name}");
        for serial in [&soon.serial, &later.serial, &renewal.serial] {
            assert!(noted.contains(serial), "{name}");
        }
    })
    .await;
}

/// A used nonce, as a node names it: issued at `issued_ms`, in `epoch`.
pub(crate) fn nonce(epoch: u64, issued_ms: u64) -> UsedNonce {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&issued_ms.to_be_bytes());
    id[8..].copy_from_slice(&rand::random::<[u8; 8]>());
    UsedNonce { epoch, id }
}

/// ACME nonces the nodes share: each is used once, wherever it is presented, and only in the
/// epoch it was issued in; the read that comes with it sees the store; expired ones are
/// forgotten, and only those.
#[tokio::test]
async fn shared_nonces_are_used_once_in_their_epoch_with_the_read_beside_them() {
    for_each_backend(|open, name, dir| async move {
        let store = open(dir.path()).await;
        let account = DocKey::new(DocKind::AcmeAccount, "a1");
        store
            .write_docs(vec![put(
                DocKind::AcmeAccount,
                "a1",
                Expect::Absent,
                b"account",
            )])
            .await
            .unwrap();
        let first = store.use_nonce(None, &[]).await.unwrap();
        assert!(!first.fresh && first.docs.is_empty(), "{name}");
        let epoch = first.epoch;
        assert_eq!(
            store.use_nonce(None, &[]).await.unwrap().epoch,
            epoch,
            "{name}: stable"
        );

        // The documents come back in the order asked, a missing one as None.
        let absent = DocKey::new(DocKind::AcmeOrder, "nothing");
        let reads = [absent.clone(), account.clone()];
        let now_ms = OffsetDateTime::now_utc().unix_timestamp() as u64 * 1000;
        let n = nonce(epoch, now_ms);
        let used = store.use_nonce(Some(&n), &reads).await.unwrap();
        assert!(used.fresh, "{name}");
        let values: Vec<_> = used.docs.into_iter().map(|d| d.map(|d| d.value)).collect();
        assert_eq!(values, [None, Some(b"account".to_vec())], "{name}");
        let again = store.use_nonce(Some(&n), &reads).await.unwrap();
        assert!(!again.fresh, "{name}: a nonce is used once");
        let elsewhere = nonce(epoch.wrapping_add(1), now_ms);
        assert!(
            !store.use_nonce(Some(&elsewhere), &[]).await.unwrap().fresh,
            "{name}: not in another epoch"
        );

        // Presented to many requests at once: exactly one uses it.
        let raced = nonce(epoch, now_ms);
        let racers: Vec<_> = (0..16)
            .map(|_| {
                let (store, raced) = (store.clone(), raced.clone());
                tokio::spawn(async move { store.use_nonce(Some(&raced), &[]).await })
            })
            .collect();
        let mut won = 0;
        for r in racers {
            won += usize::from(r.await.unwrap().unwrap().fresh);
        }
        assert_eq!(won, 1, "{name}");

        // Purged: those issued before the cut, not the others (still refused when replayed).
        let old = nonce(epoch, now_ms - 3_600_000);
        assert!(
            store.use_nonce(Some(&old), &[]).await.unwrap().fresh,
            "{name}"
        );
        assert_eq!(
            store.purge_nonces(now_ms - 60_000).await.unwrap(),
            1,
            "{name}"
        );
        assert!(
            !store.use_nonce(Some(&n), &[]).await.unwrap().fresh,
            "{name}: kept"
        );
    })
    .await;
}

/// PostgreSQL keeps used nonces unlogged, and a crash empties them: the store then starts a
/// new nonce epoch, so a nonce used before the crash is refused after it (not accepted a
/// second time), and new nonces work. What was committed durably is all there.
#[tokio::test]
async fn a_crash_of_postgres_forgets_used_nonces_and_starts_a_new_epoch() {
    let cluster = postgres::Cluster::private();
    let url = cluster.database("nonce_crash");
    let store = PgStore::connect(PgTarget::parse(&url).unwrap(), 2)
        .await
        .unwrap();
    let epoch = store.use_nonce(None, &[]).await.unwrap().epoch;
    let now_ms = OffsetDateTime::now_utc().unix_timestamp() as u64 * 1000;
    let used = nonce(epoch, now_ms);
    let unused = nonce(epoch, now_ms);
    assert!(store.use_nonce(Some(&used), &[]).await.unwrap().fresh);
    let rec = record(Some("dev-1"), 1);
    store
        .insert_certificate(rec.clone(), Linked::default())
        .await
        .unwrap();

    cluster.crash_and_recover();
    let left = cluster.psql("nonce_crash", "SELECT count(*) FROM used_nonces");
    assert_eq!(left.trim(), "0", "the crash emptied the unlogged table");
    // The pool's connections died with the server; the next statement gets a new one.
    let mut after = None;
    for _ in 0..50 {
        match store.use_nonce(Some(&used), &[]).await {
            Ok(outcome) => {
                after = Some(outcome);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let after = after.expect("the store answers again after the restart");
    assert!(
        !after.fresh,
        "a nonce used before the crash is not accepted again"
    );
    assert_ne!(after.epoch, epoch, "a new epoch");
    assert!(
        !store.use_nonce(Some(&unused), &[]).await.unwrap().fresh,
        "nor one issued before it and never used"
    );
    let fresh = nonce(after.epoch, now_ms);
    assert!(store.use_nonce(Some(&fresh), &[]).await.unwrap().fresh);
    assert!(!store.use_nonce(Some(&fresh), &[]).await.unwrap().fresh);
    assert_eq!(store.certificate(&rec.serial).await.unwrap(), Some(rec));
}
