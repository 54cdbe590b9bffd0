//! Plain data that the store keeps and the API hands out: messages, contacts, chats.
//!
//! These types carry no behaviour beyond ordering and formatting; the store persists them
//! with postcard and the RPC layer turns them into JSON.

use std::fmt;
use std::str::FromStr;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::crypto::group::{ChainState, GroupId, ReceiverChain, SenderKey};
use crate::identity::ContactCard;
use crate::wire::group::SignedOp;

/// A message's 32-byte id, random at creation and unchanged across retries and routes,
/// so that a receiver can drop duplicates.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(pub [u8; 32]);

impl MessageId {
    /// A fresh id from the operating system's randomness.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Lower-case hex, the form used in JSON.
    pub fn to_hex(&self) -> String {
        hex32(&self.0)
    }

    /// Parses the lower- or upper-case hex form; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        parse_hex32(text).map(Self)
    }
}

/// 32 bytes as lower-case hex (message and group ids in JSON).
pub(crate) fn hex32(bytes: &[u8; 32]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// 64 hex digits (either case) as 32 bytes; `None` for anything else.
pub(crate) fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()?;
    bytes.try_into().ok()
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A chat, as a request names it: the direct chat with a peer, or a group.
///
/// Parsed once where a request enters [`crate::node::Node`], so the actor never guesses
/// from the shape of a string. Its text form ([`fmt::Display`]) is the chat id the JSON
/// and the store use: the peer id, or the group id's 64 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChatId {
    /// The direct chat with this peer.
    Peer(PeerId),
    /// A group chat.
    Group(GroupId),
}

/// A chat id that is neither a peer id nor a group id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a peer id (12D3Koo…) nor a group id (64 hex digits)")]
pub struct BadChatId(pub String);

impl FromStr for ChatId {
    type Err = BadChatId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Hex first: a group id is never a valid peer id, and the check is cheap.
        if let Some(group) = GroupId::from_hex(text) {
            return Ok(Self::Group(group));
        }
        text.parse()
            .map(Self::Peer)
            .map_err(|_| BadChatId(text.to_owned()))
    }
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(peer) => write!(f, "{peer}"),
            Self::Group(group) => f.write_str(&group.to_hex()),
        }
    }
}

/// A hybrid-logical-clock timestamp: wall-clock milliseconds plus a counter that keeps
/// the order causal when clocks disagree or several messages share a millisecond.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (never behind any timestamp this clock has seen).
    pub ms: u64,
    /// Tie-breaker within one millisecond.
    pub counter: u32,
}

impl Hlc {
    /// Big-endian bytes, so that byte order equals time order in the store's keys.
    pub fn to_be_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.ms.to_be_bytes());
        out[8..].copy_from_slice(&self.counter.to_be_bytes());
        out
    }

    /// The inverse of [`Hlc::to_be_bytes`].
    pub fn from_be_bytes(bytes: [u8; 12]) -> Self {
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&bytes[..8]);
        let mut counter = [0u8; 4];
        counter.copy_from_slice(&bytes[8..]);
        Self {
            ms: u64::from_be_bytes(ms),
            counter: u32::from_be_bytes(counter),
        }
    }
}

/// The clock that stamps new messages; it moves forward past every timestamp it receives.
#[derive(Clone, Copy, Debug, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// Stamps an event happening at wall-clock time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.ms {
            Hlc {
                ms: now_ms,
                counter: 0,
            }
        } else {
            Hlc {
                ms: self.last.ms,
                counter: self.last.counter.saturating_add(1),
            }
        };
        self.last
    }

    /// Takes a received timestamp into account so later local stamps sort after it.
    /// Timestamps more than `max_skew_ms` ahead of `now_ms` are ignored rather than
    /// dragging the clock into the future.
    pub fn observe(&mut self, seen: Hlc, now_ms: u64, max_skew_ms: u64) {
        if seen.ms <= now_ms.saturating_add(max_skew_ms) && seen > self.last {
            self.last = seen;
        }
    }
}

/// Where an outgoing message stands, or `Delivered` for a received one.
///
/// Serialises as `"pending"`, `"sent"`, … in JSON. The store's postcard encoding is the
/// variant index, which the names do not touch: keep the variants in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Stored in the outbox, not yet handed to any route.
    Pending,
    /// Handed to the recipient's open connection (or, later, a mailbox); no ack yet.
    Sent,
    /// The recipient acknowledged it after storing it durably.
    Delivered,
    /// The recipient showed it (optional receipt).
    Read,
    /// Expired in the outbox without an ack.
    Failed,
}

impl MessageStatus {
    /// The JSON spelling (`"pending"`, `"sent"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }

    /// Whether moving from `self` to `next` is progress. Statuses only move forward,
    /// except that nothing leaves `Failed` but a late ack (`Delivered`, `Read`).
    pub fn can_become(self, next: MessageStatus) -> bool {
        match (self, next) {
            (Self::Failed, Self::Delivered | Self::Read) => true,
            (Self::Failed, _) => false,
            (_, Self::Failed) => matches!(self, Self::Pending | Self::Sent),
            _ => next > self,
        }
    }
}

/// One message in a chat, incoming or outgoing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Unique id, the dedup key.
    pub id: MessageId,
    /// The chat it belongs to: for a direct chat, the other person's peer id (base58).
    pub chat: String,
    /// The author's peer id (base58); our own for outgoing messages.
    pub from: String,
    /// The text as typed.
    pub text: String,
    /// The author's clock at creation; orders the chat.
    pub hlc: Hlc,
    /// Delivery status (outgoing) or `Delivered` (incoming).
    pub status: MessageStatus,
    /// True when we wrote it.
    pub outgoing: bool,
}

/// Whether a contact was added by us or only wrote to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContactState {
    /// Added by the user from a contact code (or accepted): trusted to chat.
    Accepted,
    /// A stranger who sent a message; shown as a request until the user adds them.
    Request,
    /// A request the user refused: hidden, and later messages from them are dropped.
    Refused,
}

/// Someone we can write to: their signed card plus what the user decided about them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Their peer id (base58), also the direct chat's id.
    pub peer_id: String,
    /// The newest card they signed: message key, name, mailboxes.
    pub card: ContactCard,
    /// A name the user chose, shown instead of the card's name when set.
    pub alias: Option<String>,
    /// The user compared safety numbers and confirmed them.
    pub verified: bool,
    /// Accepted contact or pending request.
    pub state: ContactState,
}

impl Contact {
    /// The name to show: the user's alias, else the name the contact chose.
    pub fn display_name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.card.name)
    }
}

/// Per-chat bookkeeping kept next to the messages, so listing chats needs no scan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMeta {
    /// Incoming messages not yet marked read.
    pub unread: u32,
    /// The newest message by HLC, for previews and sorting by activity.
    pub last: Option<StoredMessage>,
}

/// A sealed envelope a relay's mailbox holds for an offline recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMail {
    /// Recipient peer id (base58).
    pub recipient: String,
    /// Position in the recipient's mailbox; fetched in this order.
    pub seq: u64,
    /// The peer id that deposited it (a throwaway one, not the author's).
    pub depositor: String,
    /// SHA-256 of the envelope, so a retried deposit is held once.
    pub digest: [u8; 32],
    /// When it is dropped unfetched, in Unix milliseconds.
    pub expires_ms: u64,
    /// The sealed envelope, as deposited.
    pub envelope: Vec<u8>,
}

/// An outgoing message that has not been acknowledged yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The message id (the same as in the history).
    pub id: MessageId,
    /// Recipient peer id (base58).
    pub to: String,
    /// When it was created, in Unix milliseconds.
    pub created_ms: u64,
    /// When it stops being retried and becomes `Failed`, in Unix milliseconds.
    pub expires_ms: u64,
}

/// What is persisted of one group besides its log (which lives in the store's group log):
/// the membership ops and the key material a member needs to go on reading and sending
/// after a restart. The field order is the on-disk format (postcard): only append.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Every membership op, so that the member list can be replayed without reading the log.
    pub ops: Vec<SignedOp>,
    /// Our sending chain; `None` once we left or were removed.
    pub my_key: Option<SenderKey>,
    /// Our chain as it was before each of our latest sends, with the send's HLC, so that
    /// a member we learn of late gets our key from the right message on.
    pub checkpoints: Vec<(Hlc, ChainState)>,
    /// Other members' chains, by identity key, to open what they send.
    pub chains: Vec<([u8; 32], ReceiverChain)>,
    /// Members' cards (and those about to be added), to seal our key to them.
    pub cards: Vec<ContactCard>,
    /// Identity keys of the members that hold our current key.
    pub shared: Vec<[u8; 32]>,
    /// Items of each author held to look at again: chat items waiting for the author's
    /// key, and key items waiting for the author to be a member or kept for an older
    /// generation (see `proto::group::session`).
    pub unopened: Vec<([u8; 32], Vec<MessageId>)>,
}

/// How much of one group's log a relay keeps, against its per-group quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayGroupUsage {
    /// Items kept.
    pub items: u64,
    /// Bytes of those items.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        let key = libp2p::identity::Keypair::ed25519_from_bytes([7; 32]).expect("a valid key");
        key.public().to_peer_id()
    }

    #[test]
    fn a_chat_id_is_a_peer_or_a_group_and_prints_as_it_was_given() {
        let peer = peer();
        let text = peer.to_string();
        assert_eq!(text.parse::<ChatId>(), Ok(ChatId::Peer(peer)));
        assert_eq!(text.parse::<ChatId>().map(|c| c.to_string()), Ok(text));

        let group = GroupId([0xab; 32]);
        let hex = "ab".repeat(32);
        assert_eq!(hex.parse::<ChatId>(), Ok(ChatId::Group(group)));
        assert_eq!(
            hex.parse::<ChatId>().map(|c| c.to_string()),
            Ok(hex.clone())
        );
        // Upper case is accepted and printed the way the store keys chats.
        let upper = hex.to_uppercase().parse::<ChatId>();
        assert_eq!(upper.map(|c| c.to_string()), Ok(hex));
    }

    #[test]
    fn garbage_is_neither_a_peer_nor_a_group() {
        for garbage in [
            "",
            "hello",
            "12D3KooWnot-a-peer",
            &"ab".repeat(31),
            &"ab".repeat(33),
        ] {
            let err = garbage.parse::<ChatId>().expect_err(garbage);
            assert_eq!(
                err.to_string(),
                format!(
                    "{garbage:?} is neither a peer id (12D3Koo…) nor a group id (64 hex digits)"
                )
            );
        }
    }

    #[test]
    fn message_status_keeps_its_json_and_store_encodings() {
        let all = [
            (MessageStatus::Pending, "pending", 0u8),
            (MessageStatus::Sent, "sent", 1),
            (MessageStatus::Delivered, "delivered", 2),
            (MessageStatus::Read, "read", 3),
            (MessageStatus::Failed, "failed", 4),
        ];
        for (status, json, index) in all {
            assert_eq!(serde_json::to_value(status).ok(), Some(json.into()));
            assert_eq!(status.as_str(), json);
            // The store writes postcard, which encodes the variant's index only.
            assert_eq!(postcard::to_stdvec(&status).ok(), Some(vec![index]));
            assert_eq!(postcard::from_bytes(&[index]).ok(), Some(status));
        }
    }
}
