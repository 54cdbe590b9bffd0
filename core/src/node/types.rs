//! What the node's API returns. Each type serialises to the JSON shape README.md documents, so the
//! RPC layer, the FFI and the terminal UI all see the same thing.

use serde::Serialize;

use crate::event::{Reachability, Via};
use crate::model::{MessageStatus, StoredMessage};

/// `identity`: who this node is and where it listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IdentityInfo {
    /// Our peer id.
    pub peer_id: String,
    /// Our display name.
    pub name: String,
    /// Our contact code, to give to others.
    pub contact_code: String,
    /// Addresses we listen on (with `/p2p/<peer id>` appended, ready to `connect` to).
    pub addrs: Vec<String>,
    /// Whether others can dial us, as AutoNAT sees it: `"public"`, `"private"` (behind NAT,
    /// reachable through relays) or `"unknown"` (not yet probed).
    pub reachability: Reachability,
    /// Whether the identity key and session state are encrypted under a passphrase.
    pub keys_protected: bool,
}

/// `peers`: one connected peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// Their peer id.
    pub peer_id: String,
    /// Remote addresses of our connections to them.
    pub addrs: Vec<String>,
    /// Direct connection or relay circuit.
    pub via: Via,
    /// Their name, when we know their card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `relays`: one of our relays (the `--bootstrap` peers given with a `/p2p/` id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RelayInfo {
    /// Its peer id.
    pub peer_id: String,
    /// The address we were given.
    pub addr: String,
    /// Whether we hold a connection to it now.
    pub connected: bool,
    /// Whether it holds a reservation for us: others can reach us through it.
    pub reserved: bool,
    /// Our mailbox there: `"ok"` after a successful fetch, `"failed"` if the last fetch
    /// was refused or failed, `"unknown"` before the first.
    pub mailbox: MailboxState,
}

/// How our last fetch from a relay's mailbox went (`relays`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailboxState {
    /// The last fetch succeeded: mail held there for us reaches us.
    Ok,
    /// The last fetch was refused or failed.
    Failed,
    /// No fetch has finished yet.
    Unknown,
}

/// `nearby`: a LAN peer found by mDNS that told us its card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NearbyPeer {
    /// Their peer id.
    pub peer_id: String,
    /// The name on their card.
    pub name: String,
    /// Their contact code, ready for `contact_add`.
    pub contact_code: String,
}

/// `contacts`: one accepted contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContactInfo {
    /// Their peer id (also the direct chat's id).
    pub peer_id: String,
    /// The name to show.
    pub name: String,
    /// A connection to them is open.
    pub online: bool,
    /// Safety numbers were compared and confirmed.
    pub verified: bool,
}

/// `chats`: one chat in the list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatInfo {
    /// The chat id (a peer id for direct chats).
    pub id: String,
    /// `"direct"` or `"group"`.
    pub kind: ChatKind,
    /// The name to show.
    pub name: String,
    /// Incoming messages not yet marked read.
    pub unread: u32,
    /// The newest message.
    pub last: Option<MessageInfo>,
    /// The other side is not a contact yet: their messages form a contact request.
    pub request: bool,
}

/// Whether a chat is with one peer or a group (`chats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// A chat with one peer; its id is their peer id.
    Direct,
    /// A group chat; its id is the group id.
    Group,
}

/// A message as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageInfo {
    /// Message id (hex).
    pub id: String,
    /// The chat it belongs to.
    pub chat: String,
    /// Author's peer id.
    pub from: String,
    /// The text.
    pub text: String,
    /// Author's creation time, Unix milliseconds.
    pub sent_at: u64,
    /// `pending`, `sent`, `delivered`, `read` or `failed`.
    pub status: MessageStatus,
}

impl From<&StoredMessage> for MessageInfo {
    fn from(m: &StoredMessage) -> Self {
        Self {
            id: m.id.to_hex(),
            chat: m.chat.clone(),
            from: m.from.clone(),
            text: m.text.clone(),
            sent_at: m.hlc.ms,
            status: m.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn json_of(value: impl Serialize) -> Value {
        serde_json::to_value(value).unwrap_or(Value::Null)
    }

    #[test]
    fn the_enums_serialise_to_the_strings_the_api_always_had() {
        assert_eq!(json_of(ChatKind::Direct), json!("direct"));
        assert_eq!(json_of(ChatKind::Group), json!("group"));
        assert_eq!(json_of(Reachability::Public), json!("public"));
        assert_eq!(json_of(Reachability::Private), json!("private"));
        assert_eq!(json_of(Reachability::Unknown), json!("unknown"));
        assert_eq!(json_of(MailboxState::Ok), json!("ok"));
        assert_eq!(json_of(MailboxState::Failed), json!("failed"));
        assert_eq!(json_of(MailboxState::Unknown), json!("unknown"));
    }

    #[test]
    fn a_chat_serialises_as_before() {
        let message = MessageInfo {
            id: "01".repeat(32),
            chat: "12D3KooWchat".into(),
            from: "12D3KooWfrom".into(),
            text: "hi".into(),
            sent_at: 5,
            status: MessageStatus::Read,
        };
        let chat = ChatInfo {
            id: "12D3KooWchat".into(),
            kind: ChatKind::Direct,
            name: "Jun".into(),
            unread: 1,
            last: Some(message),
            request: false,
        };
        assert_eq!(
            json_of(chat),
            json!({
                "id": "12D3KooWchat", "kind": "direct", "name": "Jun", "unread": 1,
                "last": {"id": "01".repeat(32), "chat": "12D3KooWchat", "from": "12D3KooWfrom",
                         "text": "hi", "sent_at": 5, "status": "read"},
                "request": false,
            })
        );
    }
}
