//! Tests of the sled store: persistence, schema refusals and damaged files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;
use crate::identity::ContactCard;
use crate::model::ContactState;

super::super::conformance::conformance_tests!(|| {
    let dir = TempDir::new().unwrap();
    let store = SledStore::open(&dir.path().join("db"), &SledConfig::default()).unwrap();
    (store, dir)
});

const MESSAGES_IN_ALICES_DB: usize = 200;

fn message(n: u8, ms: u64) -> StoredMessage {
    StoredMessage {
        id: MessageId([n; 32]),
        chat: "bob".to_owned(),
        from: "bob".to_owned(),
        text: format!("hello {n}"),
        hlc: Hlc { ms, counter: 0 },
        status: MessageStatus::Delivered,
        outgoing: false,
    }
}

fn open(dir: &Path) -> StoreResult<SledStore> {
    SledStore::open(dir, &SledConfig::default())
}

/// Alice's database with 200 messages from Bob, flushed and closed. With `opens`
/// more opens, sled has written a snapshot covering them; with none, it has not.
fn alices_database(opens: usize) -> (TempDir, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("db");
    let store = open(&dir).unwrap();
    store.set_setting("display_name", b"Alice").unwrap();
    for n in 0..200 {
        store
            .insert_message(&message(n, 1_000 + u64::from(n)))
            .unwrap();
    }
    store.flush().unwrap();
    drop(store);
    for _ in 0..opens {
        let store = open(&dir).unwrap();
        let history = store.messages("bob", 500, None).unwrap();
        assert_eq!(history.len(), MESSAGES_IN_ALICES_DB);
    }
    (tmp, dir)
}

type Contents = BTreeMap<PathBuf, Option<Vec<u8>>>;

/// Every file (with its bytes) and folder under `dir`.
fn contents(dir: &Path) -> Contents {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path.clone());
                found.insert(path, None);
            } else {
                found.insert(path.clone(), Some(fs::read(&path).unwrap()));
            }
        }
    }
    found
}

fn is_log(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == SLED_LOG_FILE)
}

fn is_snapshot(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("snap."))
}

/// Fails, naming the files, if anything under `dir` differs from `before` other than
/// the files `may_change` allows to change, appear or vanish.
fn assert_unchanged_except(dir: &Path, before: &Contents, may_change: fn(&Path) -> bool) {
    let after = contents(dir);
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys().filter(|path| !before.contains_key(*path)))
        .filter(|path| !may_change(path) && before.get(*path) != after.get(*path))
        .map(|path| path.display().to_string())
        .collect();
    assert!(changed.is_empty(), "opening changed {changed:?}");
}

fn nothing(_: &Path) -> bool {
    false
}

fn log_and_snapshots(path: &Path) -> bool {
    is_log(path) || is_snapshot(path)
}

/// Deterministic junk: the same damage on every run.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut snaps: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| is_snapshot(path))
        .collect();
    snaps.sort();
    assert!(!snaps.is_empty(), "sled wrote no snapshot");
    snaps
}

fn overwrite_with_garbage(path: &Path) {
    let len = fs::metadata(path).unwrap().len();
    fs::write(path, garbage(usize::try_from(len).unwrap().max(64), len)).unwrap();
}

fn truncate(path: &Path, keep: u64) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(keep).unwrap();
}

/// Flips 64 bytes of the log, `at` bytes in: inside Bob's messages for `at` below
/// about 130 kB.
fn flip_log_bytes(dir: &Path, at: usize) {
    let mut log = fs::read(dir.join(SLED_LOG_FILE)).unwrap();
    for byte in &mut log[at..at + 64] {
        *byte ^= 0x5A;
    }
    fs::write(dir.join(SLED_LOG_FILE), log).unwrap();
}

/// Damages a fresh copy of Alice's database and opens it twice: both opens must fail
/// with `Corrupt` rather than panic or hand out a store (the first must not "repair"
/// the files for the second), and only files `may_change` allows may change.
/// Returns what the first refusal said.
fn assert_damage_is_refused(
    opens: usize,
    damage: impl Fn(&Path),
    may_change: fn(&Path) -> bool,
) -> String {
    let (_tmp, dir) = alices_database(opens);
    damage(&dir);
    let before = contents(&dir);
    let mut details = Vec::new();
    for _ in 0..2 {
        match open(&dir) {
            Err(StoreError::Corrupt { path, detail }) => {
                assert_eq!(path, dir.display().to_string());
                details.push(detail);
            }
            Err(other) => panic!("expected Corrupt, got {other:?}"),
            Ok(store) => panic!(
                "a damaged database opened, with {} of {MESSAGES_IN_ALICES_DB} messages",
                store.messages("bob", 500, None).unwrap().len()
            ),
        }
        assert_unchanged_except(&dir, &before, may_change);
    }
    details.swap_remove(0)
}

#[test]
fn reopened_store_keeps_everything() {
    let (_tmp, dir) = alices_database(0);
    let store = open(&dir).unwrap();
    store
        .set_status(&MessageId([3; 32]), MessageStatus::Read)
        .unwrap();
    store.mark_read("bob").unwrap();
    let bob = Contact {
        peer_id: "bob".to_owned(),
        card: ContactCard {
            identity: [1; 32],
            msg_key: [2; 32],
            name: "Bob".to_owned(),
            relays: Vec::new(),
            issued_ms: 5,
            signature: vec![9; 64],
        },
        alias: Some("B".to_owned()),
        verified: true,
        state: ContactState::Accepted,
    };
    store.put_contact(&bob).unwrap();
    let entry = OutboxEntry {
        id: MessageId([7; 32]),
        to: "bob".to_owned(),
        created_ms: 1,
        expires_ms: 2,
    };
    store.outbox_put(&entry).unwrap();
    let chats = store.chats().unwrap();
    let history = store.messages("bob", 500, None).unwrap();
    store.flush().unwrap();
    drop(store);

    let store = open(&dir).unwrap();
    assert_eq!(
        store.setting("display_name").unwrap(),
        Some(b"Alice".to_vec())
    );
    assert_eq!(store.chats().unwrap(), chats);
    assert_eq!(chats[0].1.unread, 0);
    assert_eq!(chats[0].1.last.as_ref().unwrap().id, MessageId([199; 32]));
    assert_eq!(store.contacts().unwrap(), vec![bob]);
    assert_eq!(store.messages("bob", 500, None).unwrap(), history);
    assert_eq!(history.len(), MESSAGES_IN_ALICES_DB);
    assert_eq!(history[3].status, MessageStatus::Read);
    assert_eq!(store.outbox().unwrap(), vec![entry]);
    // Dedup survives the restart too.
    assert!(!store.insert_message(&message(5, 1)).unwrap());
}

#[test]
fn new_database_records_schema_version_and_flushes() {
    let tmp = TempDir::new().unwrap();
    // An existing empty folder is as good as none.
    let store = open(tmp.path()).unwrap();
    let version = store.meta.get(SCHEMA_KEY).unwrap().unwrap();
    assert_eq!(version.as_ref(), SCHEMA_VERSION.to_be_bytes());
    assert_eq!(read_flush_mark(tmp.path()).unwrap(), Some(1));
    store.flush().unwrap();
    store.flush().unwrap();
    assert_eq!(read_flush_mark(tmp.path()).unwrap(), Some(3));
    drop(store);
    let store = open(tmp.path()).unwrap();
    assert_eq!(*store.flushes.lock().unwrap(), 3);
}

fn set_schema_version(dir: &Path, version: Option<&[u8]>) {
    let store = open(dir).unwrap();
    match version {
        Some(version) => store.meta.insert(SCHEMA_KEY, version).unwrap(),
        None => store.meta.remove(SCHEMA_KEY).unwrap(),
    };
    store.flush().unwrap();
}

#[test]
fn newer_schema_is_refused_and_its_data_left_alone() {
    let (_tmp, dir) = alices_database(1);
    set_schema_version(&dir, Some(&(SCHEMA_VERSION + 1).to_be_bytes()));
    let before = contents(&dir);
    for _ in 0..2 {
        match open(&dir) {
            Err(StoreError::NewerSchema {
                found, supported, ..
            }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
        // sled refreshes its snapshot (its own recovery shortcut) on every open.
        assert_unchanged_except(&dir, &before, is_snapshot);
    }
}

#[test]
fn missing_or_nonsense_schema_version_is_refused() {
    for version in [None, Some(&[0, 0, 0, 0][..]), Some(&[1, 2, 3][..])] {
        let (_tmp, dir) = alices_database(0);
        set_schema_version(&dir, version);
        let before = contents(&dir);
        let result = open(&dir);
        assert!(
            matches!(result, Err(StoreError::Corrupt { .. })),
            "{result:?}"
        );
        assert_unchanged_except(&dir, &before, is_snapshot);
    }
}

#[test]
fn folder_of_other_files_is_refused() {
    let tmp = TempDir::new().unwrap();
    fs::write(tmp.path().join("notes.txt"), b"not a database").unwrap();
    let before = contents(tmp.path());
    let result = open(tmp.path());
    assert!(
        matches!(result, Err(StoreError::Corrupt { .. })),
        "{result:?}"
    );
    assert_unchanged_except(tmp.path(), &before, nothing);
}

#[test]
fn garbage_conf_is_refused() {
    let detail =
        assert_damage_is_refused(1, |dir| overwrite_with_garbage(&dir.join("conf")), nothing);
    assert!(detail.contains("conf"), "{detail}");
}

#[test]
fn truncated_conf_is_refused() {
    // sled would rewrite a conf of up to 8 bytes as if it were new.
    for keep in [0, 5, 8, 20] {
        assert_damage_is_refused(1, |dir| truncate(&dir.join("conf"), keep), nothing);
    }
}

#[test]
fn conf_with_bad_checksum_is_refused() {
    // Still parses, so sled itself would only log a warning and carry on.
    assert_damage_is_refused(
        0,
        |dir| {
            let mut conf = fs::read(dir.join("conf")).unwrap();
            let last = conf.len() - 1;
            conf[last] ^= 0xFF;
            fs::write(dir.join("conf"), conf).unwrap();
        },
        nothing,
    );
}

#[test]
fn missing_conf_is_refused() {
    assert_damage_is_refused(1, |dir| fs::remove_file(dir.join("conf")).unwrap(), nothing);
}

#[test]
fn missing_or_empty_log_is_refused() {
    // sled would start a new, empty log.
    assert_damage_is_refused(1, |dir| fs::remove_file(dir.join("db")).unwrap(), nothing);
    assert_damage_is_refused(1, |dir| truncate(&dir.join("db"), 0), nothing);
}

#[test]
fn garbage_snapshot_is_refused() {
    assert_damage_is_refused(
        1,
        |dir| {
            for snap in snapshot_files(dir) {
                overwrite_with_garbage(&snap);
            }
        },
        nothing,
    );
}

#[test]
fn truncated_snapshot_is_refused() {
    for keep in [0, 10, 40] {
        assert_damage_is_refused(
            1,
            |dir| {
                for snap in snapshot_files(dir) {
                    truncate(&snap, keep);
                }
            },
            nothing,
        );
    }
}

#[test]
fn sled_panic_on_a_nonsense_snapshot_is_caught() {
    // Snapshots whose checksum matches but whose content does not: sled trips an
    // assertion on some of them. Each must be an error all the same.
    let mut panics = 0;
    for seed in 1..80_u64 {
        let detail = assert_damage_is_refused(
            1,
            |dir| {
                let snap = snapshot_files(dir).swap_remove(0);
                let bytes = fs::read(&snap).unwrap();
                let body_len = bytes.len() - 12;
                let mut body = bytes[..body_len].to_vec();
                let at = (usize::try_from(seed).unwrap() * 37) % body_len;
                let end = (at + 8).min(body_len);
                body[at..end].copy_from_slice(&garbage(end - at, seed));
                let mut forged = body.clone();
                forged.extend_from_slice(&bytes[body_len..body_len + 8]);
                forged.extend_from_slice(&crc32(&body).to_le_bytes());
                fs::write(&snap, forged).unwrap();
            },
            log_and_snapshots,
        );
        if detail.contains("crashed") {
            panics += 1;
        }
    }
    assert!(
        panics > 0,
        "no forged snapshot made sled panic; the catch went untested"
    );
}

#[test]
fn everything_garbage_is_refused() {
    let damage = |dir: &Path| {
        overwrite_with_garbage(&dir.join("conf"));
        overwrite_with_garbage(&dir.join("db"));
        for snap in snapshot_files(dir) {
            overwrite_with_garbage(&snap);
        }
    };
    assert_damage_is_refused(1, damage, nothing);
}

#[test]
fn garbage_log_is_refused() {
    // With a snapshot sled notices at once and writes nothing.
    for opens in [1, 2] {
        let damage = |dir: &Path| overwrite_with_garbage(&dir.join("db"));
        assert_damage_is_refused(opens, damage, nothing);
    }
    // Without one it sets up an empty database over the garbage before anything can
    // be checked; refused all the same, the first time and the next.
    let damage = |dir: &Path| overwrite_with_garbage(&dir.join("db"));
    let detail = assert_damage_is_refused(0, damage, log_and_snapshots);
    assert!(detail.contains("no database"), "{detail}");
}

#[test]
fn damaged_log_is_refused_with_or_without_snapshot() {
    for opens in [0, 1, 2] {
        for at in [0, 1_000, 30_000, 65_000, 100_000, 130_000] {
            let detail =
                assert_damage_is_refused(opens, |dir| flip_log_bytes(dir, at), log_and_snapshots);
            if opens == 0 && at > 0 {
                // sled recovered what came before the damage and called the rest a torn
                // write; the flush mark shows that data was lost (or, where the damage
                // hit the metadata tree's creation, the schema version is gone).
                assert!(
                    detail.contains("lost saved data") || detail.contains("no schema version"),
                    "{detail}"
                );
            }
        }
    }
}

#[test]
fn truncated_log_is_refused() {
    for opens in [0, 1] {
        for keep in [100, 60_000, 120_000] {
            let damage = |dir: &Path| truncate(&dir.join("db"), keep);
            assert_damage_is_refused(opens, damage, log_and_snapshots);
        }
    }
}

#[test]
fn damage_in_the_logs_unused_tail_is_harmless() {
    // After a reopen sled pads the log to the segment's end; hurting only the padding
    // loses nothing.
    let (_tmp, dir) = alices_database(1);
    flip_log_bytes(&dir, 400_000);
    let store = open(&dir).unwrap();
    assert_eq!(
        store.messages("bob", 500, None).unwrap().len(),
        MESSAGES_IN_ALICES_DB
    );
}

#[test]
fn lost_or_torn_flush_mark_only_weakens_the_check() {
    let (_tmp, dir) = alices_database(0);
    fs::write(dir.join(FLUSH_MARK_FILE), b"torn").unwrap();
    assert!(open(&dir).is_ok());
    let (_tmp, dir) = alices_database(0);
    fs::remove_file(dir.join(FLUSH_MARK_FILE)).unwrap();
    let store = open(&dir).unwrap();
    // The next flush writes a fresh mark.
    store.flush().unwrap();
    assert_eq!(read_flush_mark(&dir).unwrap(), Some(3));
}

#[test]
fn second_open_of_an_open_database_is_an_io_error() {
    let (_tmp, dir) = alices_database(0);
    let _first = open(&dir).unwrap();
    let second = open(&dir);
    assert!(matches!(second, Err(StoreError::Io(_))), "{second:?}");
}

#[test]
fn cache_limit_reaches_sled() {
    let small = SledConfig {
        cache_bytes: 64 * 1024,
    };
    assert_eq!(
        sled_config(Path::new("x"), &small).cache_capacity,
        64 * 1024
    );
    assert_eq!(
        sled_config(Path::new("x"), &SledConfig::default()).cache_capacity,
        8 * 1024 * 1024
    );

    // A cache far smaller than the data still serves all of it.
    let tmp = TempDir::new().unwrap();
    let store = SledStore::open(tmp.path(), &small).unwrap();
    for n in 0..=255 {
        let mut long = message(n, u64::from(n));
        long.text = "x".repeat(2_000);
        store.insert_message(&long).unwrap();
    }
    let all = store.messages("bob", 1_000, None).unwrap();
    assert_eq!(all.len(), 256);
    assert!(all.windows(2).all(|pair| pair[0].hlc < pair[1].hlc));
}

#[test]
fn undecodable_records_are_errors_not_panics() {
    let tmp = TempDir::new().unwrap();
    let store = open(tmp.path()).unwrap();
    store.insert_message(&message(1, 10)).unwrap();
    let key = message_key("bob", Hlc { ms: 10, counter: 0 }, &MessageId([1; 32]));
    store.messages.insert(key, &[0xFF; 3][..]).unwrap();
    store.chat_meta.insert("bob", &[0xFF][..]).unwrap();
    store.outbox.insert([2; 32], &[0xFF][..]).unwrap();
    store.contacts.insert("carol", &[][..]).unwrap();

    fn is_decode<T>(result: StoreResult<T>) -> bool {
        matches!(result, Err(StoreError::Decode { .. }))
    }
    assert!(is_decode(store.messages("bob", 10, None)));
    assert!(is_decode(store.message(&MessageId([1; 32]))));
    assert!(is_decode(
        store.set_status(&MessageId([1; 32]), MessageStatus::Read)
    ));
    assert!(is_decode(store.chats()));
    assert!(is_decode(store.mark_read("bob")));
    assert!(is_decode(store.insert_message(&message(2, 20))));
    assert!(is_decode(store.outbox()));
    assert!(is_decode(store.contacts()));
    assert!(is_decode(store.contact("carol")));
    // The failed insert left no trace.
    assert_eq!(store.msg_index.get([2; 32]).unwrap(), None);
}

#[test]
fn crc32_matches_the_standard() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}
