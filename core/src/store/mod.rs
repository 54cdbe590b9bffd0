//! Durable state: settings, contacts, chats, messages, the outbox and settings.
//!
//! `Store` is the only door to disk. [`SledStore`] keeps everything in one sled database
//! (this module tree is the only code that knows sled); [`MemoryStore`] keeps it in maps for
//! unit tests of the layers above. Writes become durable at [`Store::flush`], which the node
//! calls before it acknowledges anything to anyone.

#[cfg(test)]
mod conformance;
mod memory;
mod records;
mod sled_store;

pub use memory::MemoryStore;
pub use sled_store::{SledConfig, SledStore};

use libp2p::{Multiaddr, PeerId};

use crate::crypto::group::GroupId;
use crate::identity::SignedPrekey;
use crate::model::{
    ChatMeta, Contact, GroupRecord, HeldMail, Hlc, MessageId, MessageStatus, OutboxEntry,
    RelayGroupUsage, StoredMessage,
};
use crate::wire::Body;
use records::{
    GROUPS_KEY, NAME_KEY, OWN_PREKEYS_KEY, SESSIONS_PREFIX, addrs_key, control_key, decode, encode,
    group_key, peer_prekey_key, port_key, sealed_key, seen_key, sessions_key, usage_key,
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
///
/// The small records (name, groups, ports, addresses, …) are provided methods over the
/// raw settings: an implementation supplies `setting`, `set_setting` and `remove_setting`
/// and gets the keys and encodings of `records.rs`, the same for every store.
pub trait Store: Send + 'static {
    /// The raw bytes of a setting. Prefer the typed methods below, which know the keys
    /// and encodings; this is for records that have none yet.
    fn setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Saves a setting's raw bytes.
    fn set_setting(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Forgets a setting; an unknown key is fine.
    fn remove_setting(&self, key: &str) -> StoreResult<()>;
    /// Every setting whose key starts with `prefix`, in key order.
    fn settings_with_prefix(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;

    /// Our display name, if one was ever set. Not UTF-8 only when damaged: an error.
    fn name(&self) -> StoreResult<Option<String>> {
        self.setting(NAME_KEY)?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| StoreError::Decode {
                    what: "display name",
                })
            })
            .transpose()
    }
    /// Saves our display name (raw UTF-8).
    fn set_name(&self, name: &str) -> StoreResult<()> {
        self.set_setting(NAME_KEY, name.as_bytes())
    }

    /// The ids of the groups we hold a record of, empty if none.
    fn group_ids(&self) -> StoreResult<Vec<GroupId>> {
        match self.setting(GROUPS_KEY)? {
            Some(bytes) => decode(&bytes, "group list"),
            None => Ok(Vec::new()),
        }
    }
    /// Replaces the list of our groups.
    fn set_group_ids(&self, ids: &[GroupId]) -> StoreResult<()> {
        self.set_setting(GROUPS_KEY, &encode(&ids, "group list")?)
    }

    /// One group's record (membership and keys; its log is in the group log).
    fn group_record(&self, id: &GroupId) -> StoreResult<Option<GroupRecord>> {
        self.setting(&group_key(id))?
            .map(|bytes| decode(&bytes, "group"))
            .transpose()
    }
    /// Saves one group's record.
    fn put_group_record(&self, id: &GroupId, record: &GroupRecord) -> StoreResult<()> {
        self.set_setting(&group_key(id), &encode(record, "group")?)
    }
    /// Forgets one group's record; an unknown group is fine.
    fn remove_group_record(&self, id: &GroupId) -> StoreResult<()> {
        self.remove_setting(&group_key(id))
    }

    /// The body of a control message (an invite) waiting in the outbox under `id`.
    /// `None` once removed, including the empty value that stood for "removed" before
    /// removal existed.
    fn control(&self, id: &MessageId) -> StoreResult<Option<Body>> {
        match self.setting(&control_key(id))? {
            Some(bytes) if !bytes.is_empty() => decode(&bytes, "control message").map(Some),
            _ => Ok(None),
        }
    }
    /// Saves the body of a control message queued in the outbox under `id`.
    fn put_control(&self, id: &MessageId, body: &Body) -> StoreResult<()> {
        self.set_setting(&control_key(id), &encode(body, "control message")?)
    }
    /// Forgets a control message's body (it left the outbox); an unknown id is fine.
    fn remove_control(&self, id: &MessageId) -> StoreResult<()> {
        self.remove_setting(&control_key(id))
    }

    /// The port that the port-0 listen address `addr` (as configured) got last time.
    fn listen_port(&self, addr: &Multiaddr) -> StoreResult<Option<u16>> {
        self.setting(&port_key(addr))?
            .map(|bytes| {
                <[u8; 2]>::try_from(bytes.as_slice())
                    .map(u16::from_be_bytes)
                    .map_err(|_| StoreError::Decode {
                        what: "listen port",
                    })
            })
            .transpose()
    }
    /// Remembers the port that `addr` got (2 bytes, big-endian).
    fn set_listen_port(&self, addr: &Multiaddr, port: u16) -> StoreResult<()> {
        self.set_setting(&port_key(addr), &port.to_be_bytes())
    }

    /// The addresses `peer` was last reached at, in the order saved, empty if none. An
    /// entry that does not parse (a protocol a newer version knows) is left out.
    fn peer_addrs(&self, peer: &PeerId) -> StoreResult<Vec<Multiaddr>> {
        let Some(bytes) = self.setting(&addrs_key(peer))? else {
            return Ok(Vec::new());
        };
        let addrs: Vec<String> = decode(&bytes, "peer addresses")?;
        Ok(addrs.iter().filter_map(|a| a.parse().ok()).collect())
    }
    /// Remembers the addresses `peer` was reached at (as text, so that any reader parses
    /// what it understands).
    fn set_peer_addrs(&self, peer: &PeerId, addrs: &[Multiaddr]) -> StoreResult<()> {
        let text: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        self.set_setting(&addrs_key(peer), &encode(&text, "peer addresses")?)
    }
    /// Forgets `peer`'s addresses; an unknown peer is fine.
    fn remove_peer_addrs(&self, peer: &PeerId) -> StoreResult<()> {
        self.remove_setting(&addrs_key(peer))
    }

    /// How much of `group`'s log we keep as its relay; `None` if we keep none.
    fn relay_group_usage(&self, group: &GroupId) -> StoreResult<Option<RelayGroupUsage>> {
        self.setting(&usage_key(group))?
            .map(|bytes| {
                decode::<(u64, u64)>(&bytes, "relayed group usage")
                    .map(|(items, bytes)| RelayGroupUsage { items, bytes })
            })
            .transpose()
    }
    /// Saves how much of `group`'s log we keep as its relay.
    fn set_relay_group_usage(&self, group: &GroupId, usage: RelayGroupUsage) -> StoreResult<()> {
        let pair = (usage.items, usage.bytes);
        self.set_setting(&usage_key(group), &encode(&pair, "relayed group usage")?)
    }
    /// Forgets `group`'s relay usage; an unknown group is fine.
    fn remove_relay_group_usage(&self, group: &GroupId) -> StoreResult<()> {
        self.remove_setting(&usage_key(group))
    }

    /// Our signed prekeys with their secrets, as the session layer wrote them.
    fn own_prekeys(&self) -> StoreResult<Option<Vec<u8>>> {
        self.setting(OWN_PREKEYS_KEY)
    }
    /// Saves our signed prekeys.
    fn set_own_prekeys(&self, bytes: &[u8]) -> StoreResult<()> {
        self.set_setting(OWN_PREKEYS_KEY, bytes)
    }

    /// Our sessions with the peer whose identity key is `peer`, as the session layer wrote
    /// them.
    fn sessions(&self, peer: &[u8; 32]) -> StoreResult<Option<Vec<u8>>> {
        self.setting(&sessions_key(peer))
    }
    /// Saves our sessions with `peer`.
    fn set_sessions(&self, peer: &[u8; 32], bytes: &[u8]) -> StoreResult<()> {
        self.set_setting(&sessions_key(peer), bytes)
    }
    /// All our session records, `(key, bytes)`: to encrypt them when a passphrase is set.
    fn all_sessions(&self) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.settings_with_prefix(SESSIONS_PREFIX)
    }

    /// The newest signed prekey `peer` gave us (checked when received).
    fn peer_prekey(&self, peer: &PeerId) -> StoreResult<Option<SignedPrekey>> {
        self.setting(&peer_prekey_key(peer))?
            .map(|bytes| decode(&bytes, "peer prekey"))
            .transpose()
    }
    /// Saves `peer`'s newest signed prekey.
    fn set_peer_prekey(&self, peer: &PeerId, prekey: &SignedPrekey) -> StoreResult<()> {
        self.set_setting(&peer_prekey_key(peer), &encode(prekey, "peer prekey")?)
    }

    /// The envelope our message `id` was sealed into, if it was.
    fn sealed(&self, id: &MessageId) -> StoreResult<Option<Vec<u8>>> {
        self.setting(&sealed_key(id))
    }
    /// Keeps the envelope our message `id` was sealed into.
    fn put_sealed(&self, id: &MessageId, envelope: &[u8]) -> StoreResult<()> {
        self.set_setting(&sealed_key(id), envelope)
    }
    /// Forgets a sealed envelope (its message left the outbox); an unknown id is fine.
    fn remove_sealed(&self, id: &MessageId) -> StoreResult<()> {
        self.remove_setting(&sealed_key(id))
    }

    /// The message a received envelope with this digest carried, if we took one.
    fn seen(&self, digest: &[u8; 32]) -> StoreResult<Option<MessageId>> {
        self.setting(&seen_key(digest))?
            .map(|bytes| decode::<(MessageId, u64)>(&bytes, "seen envelope").map(|(id, _)| id))
            .transpose()
    }
    /// Remembers that the envelope with this digest carried message `id`.
    fn put_seen(&self, digest: &[u8; 32], id: &MessageId, now_ms: u64) -> StoreResult<()> {
        self.set_setting(&seen_key(digest), &encode(&(id, now_ms), "seen envelope")?)
    }

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
