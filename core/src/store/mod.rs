//! Durable state: settings, contacts, chats, messages, the outbox and settings.
//!
//! `Store` is the only door to disk. [`SledStore`] keeps everything in one sled database
//! (this module tree is the only code that knows sled); [`MemoryStore`] keeps it in maps for
//! unit tests of the layers above. Writes become durable at [`Store::flush`], which the node
//! calls before it acknowledges anything to anyone.

#[cfg(test)]
mod conformance;
mod memory;
mod sled_store;

pub use memory::MemoryStore;
pub use sled_store::{SledConfig, SledStore};

use crate::model::{
    ChatMeta, Contact, HeldMail, Hlc, MessageId, MessageStatus, OutboxEntry, StoredMessage,
};

/// The schema version this build writes. A database with a higher version is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// What can go wrong reading or writing the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database was written by a newer Bonghwa.
    #[error(
        "the database in {path} has schema version {found}, newer than this build's {supported}; \
         upgrade Bonghwa or use another --data-dir"
    )]
    NewerSchema {
        /// Where the database lives.
        path: String,
        /// Version found on disk.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },
    /// The files are damaged or are not a Bonghwa database.
    #[error(
        "the database in {path} is damaged or not a Bonghwa database ({detail}); \
         Bonghwa did not overwrite it: restore a backup or move it aside"
    )]
    Corrupt {
        /// Where the database lives.
        path: String,
        /// What the storage engine reported.
        detail: String,
    },
    /// The disk refused a read or write (full, read-only, permissions).
    #[error("storage I/O failed: {0}; check free space and permissions of the data dir")]
    Io(String),
    /// A stored record could not be decoded.
    #[error("a stored {what} record could not be decoded; the database may be damaged")]
    Decode {
        /// Which kind of record.
        what: &'static str,
    },
}

/// The result type of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the node persists. Implementations must make every write visible to
/// later reads at once, and durable (surviving kill -9 and power loss) after `flush`.
pub trait Store: Send + 'static {
    /// A small setting such as the display name (`key` is a fixed string).
    fn setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Saves a small setting.
    fn set_setting(&self, key: &str, value: &[u8]) -> StoreResult<()>;

    /// The contact (accepted or request) with this peer id.
    fn contact(&self, peer_id: &str) -> StoreResult<Option<Contact>>;
    /// Inserts or replaces a contact.
    fn put_contact(&self, contact: &Contact) -> StoreResult<()>;
    /// All contacts and requests, ordered by peer id.
    fn contacts(&self) -> StoreResult<Vec<Contact>>;

    /// Adds a message to its chat unless a message with the same id exists.
    /// Returns `false` (and changes nothing) for a duplicate. An incoming message
    /// raises its chat's unread count; every message may become the chat's `last`.
    fn insert_message(&self, message: &StoredMessage) -> StoreResult<bool>;
    /// Looks a message up by id.
    fn message(&self, id: &MessageId) -> StoreResult<Option<StoredMessage>>;
    /// Moves a message to `status` if that is progress (see [`MessageStatus::can_become`]).
    /// Returns the updated message, or `None` if the id is unknown or nothing changed.
    fn set_status(
        &self,
        id: &MessageId,
        status: MessageStatus,
    ) -> StoreResult<Option<StoredMessage>>;
    /// Up to `limit` messages of `chat` older than `before` (all when `None`),
    /// the newest ones, returned oldest first; ordered by (HLC, id).
    fn messages(
        &self,
        chat: &str,
        limit: usize,
        before: Option<(Hlc, MessageId)>,
    ) -> StoreResult<Vec<StoredMessage>>;
    /// Every chat that has at least one message, with its bookkeeping, ordered by chat id.
    fn chats(&self) -> StoreResult<Vec<(String, ChatMeta)>>;
    /// Sets a chat's unread count to zero.
    fn mark_read(&self, chat: &str) -> StoreResult<()>;

    /// Adds or replaces an outbox entry.
    fn outbox_put(&self, entry: &OutboxEntry) -> StoreResult<()>;
    /// Removes an outbox entry (acked or expired); unknown ids are fine.
    fn outbox_remove(&self, id: &MessageId) -> StoreResult<()>;
    /// Every outbox entry, ordered by id.
    fn outbox(&self) -> StoreResult<Vec<OutboxEntry>>;

    /// Holds a mailbox envelope (a relay's), replacing one with the same recipient and seq.
    fn mail_put(&self, mail: &HeldMail) -> StoreResult<()>;
    /// The held envelope at this recipient and seq.
    fn mail(&self, recipient: &str, seq: u64) -> StoreResult<Option<HeldMail>>;
    /// Drops a held envelope (fetched and acked, or expired); unknown ones are fine.
    fn mail_remove(&self, recipient: &str, seq: u64) -> StoreResult<()>;
    /// Every held envelope, by recipient then seq (read once at start).
    fn mail_all(&self) -> StoreResult<Vec<HeldMail>>;

    /// Adds an item (opaque bytes) to a group's log unless one with the same id is there;
    /// `false` (and nothing changed) for a duplicate.
    fn group_item_put(
        &self,
        group: &str,
        hlc: Hlc,
        id: &MessageId,
        item: &[u8],
    ) -> StoreResult<bool>;
    /// One item of a group's log.
    fn group_item(&self, group: &str, id: &MessageId) -> StoreResult<Option<Vec<u8>>>;
    /// The (HLC, id) of every item in a group's log, in that order (what sync reconciles).
    fn group_items(&self, group: &str) -> StoreResult<Vec<(Hlc, MessageId)>>;

    /// Makes every write so far durable (fsync). Call before acknowledging anything.
    fn flush(&self) -> StoreResult<()>;
}
