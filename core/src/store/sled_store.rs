//! [`SledStore`]: the store on disk, in one sled database. The only code that names sled.
//!
//! Layout (one sled tree each, values encoded with postcard):
//! - `settings`: setting name → raw bytes; the typed records' keys and encodings are in
//!   `records.rs`
//! - `contacts`: peer id → [`Contact`]
//! - `messages`: chat ‖ 0x00 ‖ HLC (big-endian) ‖ id → [`StoredMessage`], so that a chat is
//!   one contiguous key range in (HLC, id) order
//! - `msg_index`: id → key in `messages`; the dedup set
//! - `chat_meta`: chat → [`ChatMeta`]
//! - `outbox`: id → [`OutboxEntry`]
//! - `mail`: recipient ‖ 0x00 ‖ seq (big-endian) → [`HeldMail`] (a relay's mailbox; a tree
//!   added without a schema change: older databases simply have it empty)
//! - `meta`: `schema_version` → u32 big-endian; `flushes` → u64 big-endian, how many
//!   [`Store::flush`] calls completed
//!
//! Next to sled's files, `bonghwa-flushed` repeats the `flushes` count (see
//! [`SledStore::open`] for why).

use std::fs;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::records::{decode, encode};
use super::{SCHEMA_VERSION, Store, StoreError, StoreResult};
use crate::model::{
    ChatMeta, Contact, HeldMail, Hlc, MessageId, MessageStatus, OutboxEntry, StoredMessage,
};

/// Names of the sled trees. Changing one is a schema change.
const SETTINGS: &str = "settings";
const CONTACTS: &str = "contacts";
const MESSAGES: &str = "messages";
const MSG_INDEX: &str = "msg_index";
const CHAT_META: &str = "chat_meta";
const OUTBOX: &str = "outbox";
const MAIL: &str = "mail";
const GROUP_LOG: &str = "group_log";
const GROUP_INDEX: &str = "group_index";
const META: &str = "meta";
/// Key in the `meta` tree under which the schema version lives.
const SCHEMA_KEY: &[u8] = b"schema_version";
/// Key in the `meta` tree counting completed flushes.
const FLUSHES_KEY: &[u8] = b"flushes";

/// Bytes of a message key after the chat and its 0x00 separator: HLC then id.
const KEY_SUFFIX_LEN: usize = 12 + 32;
/// sled's own files: its settings (`conf`) and its log (`db`). Both exist in any database
/// sled has opened; a directory holding something else is not ours.
const SLED_CONF_FILE: &str = "conf";
const SLED_LOG_FILE: &str = "db";
/// Our file next to sled's: the number of the last completed flush, as 8 big-endian
/// bytes and their CRC-32, written after sled's fsync.
const FLUSH_MARK_FILE: &str = "bonghwa-flushed";
const FLUSH_MARK_TEMP: &str = "bonghwa-flushed.tmp";

/// How to open the database.
#[derive(Clone, Debug)]
pub struct SledConfig {
    /// Most memory sled may use to cache pages. sled's own default is 1 GiB, far too much
    /// for a phone; ours is 8 MiB, which holds the recent part of many chats.
    pub cache_bytes: u64,
}

impl Default for SledConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The store on disk. Every write is visible to later reads at once and durable after
/// [`Store::flush`] (sled also writes in the background about every half second).
#[derive(Debug)]
pub struct SledStore {
    /// Kept so that [`Store::flush`] can sync every tree at once.
    db: sled::Db,
    settings: sled::Tree,
    contacts: sled::Tree,
    messages: sled::Tree,
    msg_index: sled::Tree,
    chat_meta: sled::Tree,
    outbox: sled::Tree,
    mail: sled::Tree,
    /// Group logs keyed `group ‖ 0 ‖ HLC ‖ id`, so one group's log is one range in order.
    group_log: sled::Tree,
    /// `group ‖ 0 ‖ id` → HLC: where an item lives in `group_log`; also the dedup set.
    group_index: sled::Tree,
    meta: sled::Tree,
    /// Completed flushes; the lock also keeps two flushes from racing on the mark file.
    flushes: Mutex<u64>,
    /// The database directory, where the flush mark lives.
    dir: PathBuf,
    /// The same, for error messages.
    path: String,
}

impl SledStore {
    /// Opens the database in `dir`, creating it if `dir` is missing or empty.
    ///
    /// An existing database is refused when it was written by a newer Bonghwa
    /// ([`StoreError::NewerSchema`]) or when its files are damaged or are not a Bonghwa
    /// database ([`StoreError::Corrupt`]). It is never replaced by an empty one.
    ///
    /// sled 0.34 needs help with that. Left alone it silently rewrites a settings file
    /// (`conf`) of 8 bytes or less, recreates a missing log (`db`), only warns about a bad
    /// checksum in `conf`, starts an empty database over a log it cannot read, panics on
    /// some damaged snapshots, and takes damage in the part of the log written since its
    /// last snapshot (that is, since the last open) for a write torn by a crash: it
    /// recovers what comes before, zeroes the rest of that log segment and carries on
    /// without a word. So `open`:
    /// - checks `conf` and `db` itself before sled runs, and catches sled's panics;
    /// - looks at an existing database first with sled's background flusher off, so that
    ///   no flushing or segment cleaning runs against a database it may refuse, and
    ///   refuses one without a schema version;
    /// - compares the flush count in the log with the one in `bonghwa-flushed`, written
    ///   after every flush: a log that recovers fewer flushes than had completed lost data
    ///   to damage, not to a crash.
    ///
    /// Refusing leaves `conf`, any damaged snapshot and a newer database's data as they
    /// were. sled's recovery does write before anything can be checked: it refreshes its
    /// snapshot file and, in a damaged log, zeroes the tail of the segment where reading
    /// stopped and may lengthen the file.
    ///
    /// A crash during the very first open can leave sled's files without a schema version;
    /// that is refused too, and moving it aside loses nothing, as nothing was in it yet.
    pub fn open(dir: &Path, config: &SledConfig) -> StoreResult<SledStore> {
        let path = dir.display().to_string();
        let fresh = match check_files(dir).map_err(|err| open_io_error(&path, err))? {
            Files::Missing => true,
            Files::Present => false,
            Files::Damaged(detail) => return Err(corrupt(&path, detail)),
        };
        if !fresh {
            guard_panics(&path, || {
                let db = open_sled(&sled_config(dir, config).flush_every_ms(None), &path)?;
                check_existing(&db, dir, &path)
            })?;
        }
        guard_panics(&path, || {
            let db = open_sled(&sled_config(dir, config), &path)?;
            let store = SledStore::with_trees(db, dir, path.clone())?;
            if fresh {
                store
                    .meta
                    .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|err| store.storage_error(err))?;
                store.flush()?;
            } else {
                // Again, in case another process changed it between the two opens.
                check_schema(&store.meta, &path)?;
            }
            Ok(store)
        })
    }

    fn with_trees(db: sled::Db, dir: &Path, path: String) -> StoreResult<SledStore> {
        let tree = |name: &str| db.open_tree(name).map_err(|err| open_error(&path, err));
        let meta = tree(META)?;
        let flushes = flushes_in_log(&meta, &path)?;
        Ok(SledStore {
            settings: tree(SETTINGS)?,
            contacts: tree(CONTACTS)?,
            messages: tree(MESSAGES)?,
            msg_index: tree(MSG_INDEX)?,
            chat_meta: tree(CHAT_META)?,
            outbox: tree(OUTBOX)?,
            mail: tree(MAIL)?,
            group_log: tree(GROUP_LOG)?,
            group_index: tree(GROUP_INDEX)?,
            meta,
            flushes: Mutex::new(flushes),
            db,
            dir: dir.to_path_buf(),
            path,
        })
    }

    /// Maps an error sled reported after opening.
    fn storage_error(&self, err: sled::Error) -> StoreError {
        match err {
            sled::Error::Io(err) => StoreError::Io(err.to_string()),
            other => corrupt(&self.path, other.to_string()),
        }
    }

    fn transaction_error(&self, err: TransactionError<StoreError>) -> StoreError {
        match err {
            TransactionError::Abort(err) => err,
            TransactionError::Storage(err) => self.storage_error(err),
        }
    }

    fn get<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        what: &'static str,
    ) -> StoreResult<Option<T>> {
        match tree.get(key).map_err(|err| self.storage_error(err))? {
            Some(bytes) => decode(&bytes, what).map(Some),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        value: &T,
        what: &'static str,
    ) -> StoreResult<()> {
        tree.insert(key, encode(value, what)?)
            .map_err(|err| self.storage_error(err))?;
        Ok(())
    }

    fn all<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        what: &'static str,
    ) -> StoreResult<Vec<T>> {
        tree.iter()
            .values()
            .map(|bytes| decode(&bytes.map_err(|err| self.storage_error(err))?, what))
            .collect()
    }
}

impl Store for SledStore {
    fn setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let value = self
            .settings
            .get(key)
            .map_err(|err| self.storage_error(err))?;
        Ok(value.map(|bytes| bytes.to_vec()))
    }

    fn set_setting(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.settings
            .insert(key, value)
            .map_err(|err| self.storage_error(err))?;
        Ok(())
    }

    fn remove_setting(&self, key: &str) -> StoreResult<()> {
        self.settings
            .remove(key)
            .map_err(|err| self.storage_error(err))?;
        Ok(())
    }

    fn settings_with_prefix(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for entry in self.settings.scan_prefix(prefix) {
            let (key, value) = entry.map_err(|err| self.storage_error(err))?;
            out.push((String::from_utf8_lossy(&key).into_owned(), value.to_vec()));
        }
        Ok(out)
    }

    fn contact(&self, peer_id: &str) -> StoreResult<Option<Contact>> {
        self.get(&self.contacts, peer_id.as_bytes(), "contact")
    }

    fn put_contact(&self, contact: &Contact) -> StoreResult<()> {
        self.put(
            &self.contacts,
            contact.peer_id.as_bytes(),
            contact,
            "contact",
        )
    }

    fn contacts(&self) -> StoreResult<Vec<Contact>> {
        self.all(&self.contacts, "contact")
    }

    fn insert_message(&self, message: &StoredMessage) -> StoreResult<bool> {
        let key = message_key(&message.chat, message.hlc, &message.id);
        let value = encode(message, "message")?;
        (&self.messages, &self.msg_index, &self.chat_meta)
            .transaction(|(messages, index, metas)| {
                if index.get(message.id.0)?.is_some() {
                    return Ok(false);
                }
                let mut meta: ChatMeta = match metas.get(message.chat.as_bytes())? {
                    Some(bytes) => decode(&bytes, "chat").map_err(abort)?,
                    None => ChatMeta::default(),
                };
                if !message.outgoing {
                    meta.unread = meta.unread.saturating_add(1);
                }
                let is_newest = meta
                    .last
                    .as_ref()
                    .is_none_or(|last| (message.hlc, message.id) > (last.hlc, last.id));
                if is_newest {
                    meta.last = Some(message.clone());
                }
                messages.insert(key.as_slice(), value.as_slice())?;
                index.insert(&message.id.0[..], key.as_slice())?;
                metas.insert(
                    message.chat.as_bytes(),
                    encode(&meta, "chat").map_err(abort)?,
                )?;
                Ok(true)
            })
            .map_err(|err| self.transaction_error(err))
    }

    fn message(&self, id: &MessageId) -> StoreResult<Option<StoredMessage>> {
        let Some(key) = self
            .msg_index
            .get(id.0)
            .map_err(|err| self.storage_error(err))?
        else {
            return Ok(None);
        };
        self.get(&self.messages, &key, "message")
    }

    fn set_status(
        &self,
        id: &MessageId,
        status: MessageStatus,
    ) -> StoreResult<Option<StoredMessage>> {
        (&self.messages, &self.msg_index, &self.chat_meta)
            .transaction(|(messages, index, metas)| {
                let Some(key) = index.get(id.0)? else {
                    return Ok(None);
                };
                let Some(bytes) = messages.get(&key)? else {
                    // The index points nowhere: the database was damaged.
                    return Err(abort(StoreError::Decode { what: "message" }));
                };
                let mut message: StoredMessage = decode(&bytes, "message").map_err(abort)?;
                if !message.status.can_become(status) {
                    return Ok(None);
                }
                message.status = status;
                messages.insert(&key, encode(&message, "message").map_err(abort)?)?;
                if let Some(bytes) = metas.get(message.chat.as_bytes())? {
                    let mut meta: ChatMeta = decode(&bytes, "chat").map_err(abort)?;
                    if let Some(last) = &mut meta.last
                        && last.id == message.id
                    {
                        *last = message.clone();
                        metas.insert(
                            message.chat.as_bytes(),
                            encode(&meta, "chat").map_err(abort)?,
                        )?;
                    }
                }
                Ok(Some(message))
            })
            .map_err(|err| self.transaction_error(err))
    }

    fn messages(
        &self,
        chat: &str,
        limit: usize,
        before: Option<(Hlc, MessageId)>,
    ) -> StoreResult<Vec<StoredMessage>> {
        let mut start = chat.as_bytes().to_vec();
        start.push(0);
        let end = match before {
            Some((hlc, id)) => message_key(chat, hlc, &id),
            None => {
                // Just past every key of this chat: the separator 0x00 becomes 0x01.
                let mut end = chat.as_bytes().to_vec();
                end.push(1);
                end
            }
        };
        let key_len = start.len() + KEY_SUFFIX_LEN;
        let mut newest_first = Vec::new();
        for entry in self.messages.range(start..end).rev() {
            if newest_first.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|err| self.storage_error(err))?;
            // A chat whose id continues with 0x00 shares our prefix; its keys are longer.
            if key.len() == key_len {
                newest_first.push(decode::<StoredMessage>(&value, "message")?);
            }
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    fn chats(&self) -> StoreResult<Vec<(String, ChatMeta)>> {
        self.chat_meta
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(|err| self.storage_error(err))?;
                let chat = String::from_utf8(key.to_vec())
                    .map_err(|_| StoreError::Decode { what: "chat id" })?;
                Ok((chat, decode(&value, "chat")?))
            })
            .collect()
    }

    fn mark_read(&self, chat: &str) -> StoreResult<()> {
        self.chat_meta
            .transaction(|metas| {
                let Some(bytes) = metas.get(chat.as_bytes())? else {
                    return Ok(());
                };
                let mut meta: ChatMeta = decode(&bytes, "chat").map_err(abort)?;
                if meta.unread != 0 {
                    meta.unread = 0;
                    metas.insert(chat.as_bytes(), encode(&meta, "chat").map_err(abort)?)?;
                }
                Ok(())
            })
            .map_err(|err| self.transaction_error(err))
    }

    fn outbox_put(&self, entry: &OutboxEntry) -> StoreResult<()> {
        self.put(&self.outbox, &entry.id.0, entry, "outbox")
    }

    fn outbox_remove(&self, id: &MessageId) -> StoreResult<()> {
        self.outbox
            .remove(id.0)
            .map_err(|err| self.storage_error(err))?;
        Ok(())
    }

    fn outbox(&self) -> StoreResult<Vec<OutboxEntry>> {
        self.all(&self.outbox, "outbox")
    }

    fn mail_put(&self, mail: &HeldMail) -> StoreResult<()> {
        self.put(
            &self.mail,
            &mail_key(&mail.recipient, mail.seq),
            mail,
            "mail",
        )
    }

    fn mail(&self, recipient: &str, seq: u64) -> StoreResult<Option<HeldMail>> {
        self.get(&self.mail, &mail_key(recipient, seq), "mail")
    }

    fn mail_remove(&self, recipient: &str, seq: u64) -> StoreResult<()> {
        self.mail
            .remove(mail_key(recipient, seq))
            .map_err(|err| self.storage_error(err))?;
        Ok(())
    }

    fn mail_all(&self) -> StoreResult<Vec<HeldMail>> {
        self.all(&self.mail, "mail")
    }

    fn group_item_put(
        &self,
        group: &str,
        hlc: Hlc,
        id: &MessageId,
        item: &[u8],
    ) -> StoreResult<bool> {
        let index_key = group_index_key(group, id);
        let log_key = message_key(group, hlc, id);
        let result = (&self.group_index, &self.group_log).transaction(|(index, log)| {
            if index.get(&index_key)?.is_some() {
                return Ok(false);
            }
            index.insert(index_key.as_slice(), &hlc.to_be_bytes()[..])?;
            log.insert(log_key.as_slice(), item)?;
            Ok(true)
        });
        result.map_err(|err: sled::transaction::TransactionError<()>| match err {
            sled::transaction::TransactionError::Storage(err) => self.storage_error(err),
            sled::transaction::TransactionError::Abort(()) => {
                StoreError::Io("group log transaction aborted".into())
            }
        })
    }

    fn group_item(&self, group: &str, id: &MessageId) -> StoreResult<Option<Vec<u8>>> {
        let Some(hlc) = self
            .group_index
            .get(group_index_key(group, id))
            .map_err(|err| self.storage_error(err))?
        else {
            return Ok(None);
        };
        let hlc = <[u8; 12]>::try_from(hlc.as_ref()).map_err(|_| StoreError::Decode {
            what: "group index",
        })?;
        let item = self
            .group_log
            .get(message_key(group, Hlc::from_be_bytes(hlc), id))
            .map_err(|err| self.storage_error(err))?;
        Ok(item.map(|v| v.to_vec()))
    }

    fn group_items(&self, group: &str) -> StoreResult<Vec<(Hlc, MessageId)>> {
        let mut prefix = group.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.group_log.scan_prefix(&prefix) {
            let (key, _) = entry.map_err(|err| self.storage_error(err))?;
            let suffix = key
                .get(prefix.len()..)
                .filter(|s| s.len() == KEY_SUFFIX_LEN)
                .ok_or(StoreError::Decode {
                    what: "group log key",
                })?;
            let mut hlc = [0u8; 12];
            hlc.copy_from_slice(&suffix[..12]);
            let mut id = [0u8; 32];
            id.copy_from_slice(&suffix[12..]);
            out.push((Hlc::from_be_bytes(hlc), MessageId(id)));
        }
        Ok(out)
    }

    fn flush(&self) -> StoreResult<()> {
        let mut flushes = self.flushes.lock().unwrap_or_else(PoisonError::into_inner);
        let next = *flushes + 1;
        self.meta
            .insert(FLUSHES_KEY, &next.to_be_bytes())
            .map_err(|err| self.storage_error(err))?;
        self.db.flush().map_err(|err| self.storage_error(err))?;
        *flushes = next;
        // Only once the log holds `next` durably: the mark may lag, never lead.
        if let Err(err) = write_flush_mark(&self.dir, next) {
            tracing::warn!("cannot record flush {next} in {}: {err}", self.path);
        }
        Ok(())
    }
}

/// Where a held envelope lives in the `mail` tree: one recipient is one key range, in seq order.
fn mail_key(recipient: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(recipient.len() + 9);
    key.extend_from_slice(recipient.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Where a message lives in the `messages` tree.
/// Where a group item's HLC is found: `group ‖ 0 ‖ id`.
fn group_index_key(group: &str, id: &MessageId) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.len() + 33);
    key.extend_from_slice(group.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.0);
    key
}

fn message_key(chat: &str, hlc: Hlc, id: &MessageId) -> Vec<u8> {
    let mut key = Vec::with_capacity(chat.len() + 1 + KEY_SUFFIX_LEN);
    key.extend_from_slice(chat.as_bytes());
    key.push(0);
    key.extend_from_slice(&hlc.to_be_bytes());
    key.extend_from_slice(&id.0);
    key
}

fn abort(err: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(err)
}

fn corrupt(path: &str, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        detail,
    }
}

/// sled's configuration for our database.
fn sled_config(dir: &Path, config: &SledConfig) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(config.cache_bytes)
}

/// Opens sled, waiting a little if the database is still locked: sled's helper threads
/// keep the log file, and with it the lock, open for a moment after the last handle on a
/// database is dropped, so a quick reopen (ours included) can find it locked.
fn open_sled(config: &sled::Config, path: &str) -> StoreResult<sled::Db> {
    let mut tries = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(err)) if is_lock_contention(&err) && tries < LOCK_RETRIES => {
                tries += 1;
                std::thread::sleep(LOCK_RETRY_PAUSE);
            }
            other => return other.map_err(|err| open_error(path, err)),
        }
    }
}

/// How often, and how long apart, [`open_sled`] retries a locked database: half a second
/// in all, far longer than sled's threads take, far shorter than a user notices.
const LOCK_RETRIES: u32 = 25;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// sled reports a held lock as an `Other` I/O error with this text (0.34's `try_lock`).
fn is_lock_contention(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Other && err.to_string().contains("could not acquire lock")
}

/// Maps an error sled reported while opening. Anything but a plain I/O failure means
/// sled could not make sense of the files.
fn open_error(path: &str, err: sled::Error) -> StoreError {
    match err {
        sled::Error::Io(err) => open_io_error(path, err),
        other => corrupt(path, other.to_string()),
    }
}

/// An I/O error while opening: reading past the end or reading nonsense means damaged
/// files; anything else (permissions, full disk, a lock held by another process) is I/O.
fn open_io_error(path: &str, err: io::Error) -> StoreError {
    match err.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => corrupt(path, err.to_string()),
        _ => StoreError::Io(format!("{path}: {err}")),
    }
}

/// Runs `open`, turning a panic inside sled into [`StoreError::Corrupt`]: sled 0.34 panics
/// on some damaged files instead of returning an error.
fn guard_panics<T>(path: &str, open: impl FnOnce() -> StoreResult<T>) -> StoreResult<T> {
    panic::catch_unwind(AssertUnwindSafe(open)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Err(corrupt(
            path,
            format!("the storage engine crashed reading it: {message}"),
        ))
    })
}

/// The read-only look at an existing database, with sled's flusher off: is it ours, not
/// newer than this build, and did its log keep every completed flush?
fn check_existing(db: &sled::Db, dir: &Path, path: &str) -> StoreResult<()> {
    if !db.was_recovered() {
        return Err(corrupt(path, "sled found no database in its log".into()));
    }
    // Opening a missing tree would create it; look first.
    if !db.tree_names().iter().any(|name| name == META.as_bytes()) {
        return Err(corrupt(path, "it has no schema version".into()));
    }
    let meta = db.open_tree(META).map_err(|err| open_error(path, err))?;
    check_schema(&meta, path)?;
    let in_log = flushes_in_log(&meta, path)?;
    match read_flush_mark(dir) {
        Ok(Some(marked)) if marked > in_log => Err(corrupt(
            path,
            format!(
                "its log ends after flush {in_log}, but flush {marked} had completed: \
                 the log lost saved data"
            ),
        )),
        Ok(_) => Ok(()),
        Err(err) => {
            // A mark torn by a power cut: it can only ever lag, so lose the check, not the data.
            tracing::warn!("ignoring the flush mark in {path}: {err}");
            Ok(())
        }
    }
}

/// How many flushes the log says completed; 0 before the first.
fn flushes_in_log(meta: &sled::Tree, path: &str) -> StoreResult<u64> {
    match meta.get(FLUSHES_KEY).map_err(|err| open_error(path, err))? {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt(path, "its flush count is not an 8-byte number".into())),
    }
}

/// The flush count in `bonghwa-flushed`, if there is one.
fn read_flush_mark(dir: &Path) -> io::Result<Option<u64>> {
    let bytes = match fs::read(dir.join(FLUSH_MARK_FILE)) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not 8 bytes and a matching checksum",
        )
    };
    let (count, crc) = bytes.split_at_checked(8).ok_or_else(bad)?;
    let count: [u8; 8] = count.try_into().map_err(|_| bad())?;
    let crc: [u8; 4] = crc.try_into().map_err(|_| bad())?;
    if crc32(&count) != u32::from_be_bytes(crc) {
        return Err(bad());
    }
    Ok(Some(u64::from_be_bytes(count)))
}

/// Replaces `bonghwa-flushed` in one step, so a crash leaves the old count or the new.
/// No fsync: a count that is lost or lags only weakens the check.
fn write_flush_mark(dir: &Path, count: u64) -> io::Result<()> {
    let mut bytes = count.to_be_bytes().to_vec();
    bytes.extend_from_slice(&crc32(&count.to_be_bytes()).to_be_bytes());
    let temp = dir.join(FLUSH_MARK_TEMP);
    fs::write(&temp, bytes)?;
    fs::rename(temp, dir.join(FLUSH_MARK_FILE))
}

/// Refuses a database without a schema version or with one this build cannot read.
fn check_schema(meta: &sled::Tree, path: &str) -> StoreResult<()> {
    let Some(bytes) = meta.get(SCHEMA_KEY).map_err(|err| open_error(path, err))? else {
        return Err(corrupt(path, "it has no schema version".into()));
    };
    let found = <[u8; 4]>::try_from(bytes.as_ref())
        .map(u32::from_be_bytes)
        .map_err(|_| corrupt(path, "its schema version is not a 4-byte number".into()))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        return Err(corrupt(path, "its schema version is 0".into()));
    }
    // Versions older than ours get migrated here once there is more than one.
    Ok(())
}

/// What [`check_files`] found in the database directory.
#[derive(Debug)]
enum Files {
    /// No directory, or an empty one: a new database goes there.
    Missing,
    /// sled's files are there and look sound.
    Present,
    /// Something is there, but sled would misread it (the text says what).
    Damaged(String),
}

/// Looks at sled's files without changing anything, to refuse what sled would
/// silently "repair" by overwriting.
fn check_files(dir: &Path) -> io::Result<Files> {
    match fs::read_dir(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Files::Missing),
        Err(err) => return Err(err),
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(Files::Missing);
            }
        }
    }
    let conf = match fs::read(dir.join(SLED_CONF_FILE)) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Ok(Files::Damaged(format!(
                "its {SLED_CONF_FILE} file is missing"
            )));
        }
        other => other?,
    };
    if let Some(problem) = conf_problem(&conf) {
        return Ok(Files::Damaged(format!(
            "its {SLED_CONF_FILE} file {problem}"
        )));
    }
    match fs::metadata(dir.join(SLED_LOG_FILE)) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Files::Damaged(format!(
            "its {SLED_LOG_FILE} file is missing"
        ))),
        Err(err) => Err(err),
        Ok(meta) if !meta.is_file() || meta.len() == 0 => {
            Ok(Files::Damaged(format!("its {SLED_LOG_FILE} file is empty")))
        }
        Ok(_) => Ok(Files::Present),
    }
}

/// Why sled's `conf` file (text lines, then a little-endian CRC-32 of them) is not one
/// sled wrote, or `None` when it is sound.
fn conf_problem(conf: &[u8]) -> Option<&'static str> {
    // sled treats 8 bytes or less as "no settings yet" and overwrites the file.
    if conf.len() <= 8 {
        return Some("is truncated");
    }
    let (text, crc) = conf.split_at(conf.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32(text) != crc {
        // sled only warns about this one.
        return Some("fails its checksum");
    }
    let Ok(text) = std::str::from_utf8(text) else {
        return Some("is not text");
    };
    let has = |key: &str| text.lines().any(|line| line.starts_with(key));
    if !(has("segment_size: ") && has("use_compression: ") && has("version: ")) {
        return Some("lacks sled's settings");
    }
    None
}

/// CRC-32 (IEEE 802.3, as in zlib and sled's crc32fast), bit by bit: it runs over a
/// few dozen bytes once per open.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests;
