//! The UI's vocabulary: what can happen ([`Action`]), what the node is asked to do
//! ([`Effect`]), and the small state types [`App`](super::App) is made of.

use std::fmt;

use bonghwa_core::Event;
use bonghwa_core::node::{ChatInfo, ContactInfo, IdentityInfo, MessageInfo, NearbyPeer, PeerInfo};

use super::{Composer, KeyEvent};

/// How times are shown: a fixed offset (tests) or the machine's local zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// Seconds east of UTC.
    Fixed(i32),
    /// The local time zone, as the system reports it.
    Local,
}

/// Which part of the screen takes typing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// Keys move through chats and open panels.
    ChatList,
    /// Keys edit the message.
    Composer,
}

/// A panel drawn over the chat (one at a time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Panel {
    /// Every key and command.
    Help {
        /// Lines scrolled down.
        scroll: usize,
    },
    /// Paste a contact code.
    AddContact {
        /// The code being pasted or typed.
        input: Composer,
        /// Set once the user was warned that this code is a different key than a contact
        /// they already have under the same name; Enter on the same code then adds it.
        clash: Option<Clash>,
    },
    /// Our own contact code, as text and QR.
    MyCode {
        /// Show only the text (the QR alone is shown when both do not fit).
        text_only: bool,
    },
    /// A contact's safety number.
    Safety {
        /// Their peer id.
        peer: String,
        /// Their name.
        name: String,
        /// The number, once the node has answered.
        number: Option<String>,
        /// Already verified.
        verified: bool,
    },
    /// LAN peers to add with one key.
    Nearby {
        /// The highlighted row.
        cursor: usize,
    },
}

/// A code whose name is already taken by a contact with a different key (peer id). Since a
/// peer id is its key, this is someone else, or the same person with a new key: never the
/// contact the user already has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clash {
    /// The code the warning was about (editing it clears the warning).
    pub code: String,
    /// The local name asked for with `/add CODE NAME`, kept for the confirmed add.
    pub alias: Option<String>,
    /// The name of the contact already there.
    pub existing: String,
}

/// A line at the bottom telling the user what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// Errors stay until dismissed and show in red; infos go on the next key.
    pub error: bool,
}

/// A node call whose failure is reported, so the notice can say what failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Starting the node.
    Start,
    /// Loading chats, contacts, peers or history.
    Load,
    /// Sending a message.
    Send,
    /// Adding a contact.
    AddContact,
    /// Accepting a contact request.
    Accept,
    /// Refusing a contact request.
    Refuse,
    /// Changing our name.
    SetName,
    /// Reading a safety number.
    SafetyNumber,
    /// Marking a contact verified.
    Verify,
    /// Dialling an address.
    Connect,
    /// Marking a chat read.
    MarkRead,
    /// Creating or changing a group.
    Group,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Start => "start the node",
            Op::Load => "load from the node",
            Op::Send => "send",
            Op::AddContact => "add the contact",
            Op::Accept => "accept the contact request",
            Op::Refuse => "refuse the contact request",
            Op::SetName => "change your name",
            Op::SafetyNumber => "get the safety number",
            Op::Verify => "mark verified",
            Op::Connect => "connect",
            Op::Group => "change the group",
            Op::MarkRead => "mark the chat read",
        })
    }
}

/// Everything that can happen to the UI.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A key press.
    Key(KeyEvent),
    /// Bracketed paste.
    Paste(String),
    /// Mouse wheel up.
    ScrollUp,
    /// Mouse wheel down.
    ScrollDown,
    /// The terminal's size.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// The node is up.
    Started(IdentityInfo),
    /// A node event.
    Node(Event),
    /// All chats, as the node lists them.
    Chats(Vec<ChatInfo>),
    /// All accepted contacts.
    Contacts(Vec<ContactInfo>),
    /// Connected peers.
    Peers(Vec<PeerInfo>),
    /// LAN peers with a card.
    Nearby(Vec<NearbyPeer>),
    /// A page of history, oldest first.
    Messages {
        /// The chat.
        chat: String,
        /// The messages.
        messages: Vec<MessageInfo>,
        /// True when this page is older than what was loaded (scrolling back).
        older: bool,
    },
    /// A message went into the outbox.
    Sent {
        /// The chat it went to.
        chat: String,
    },
    /// A contact was added from their code.
    ContactAdded {
        /// Their peer id.
        peer_id: String,
    },
    /// A contact request was accepted: the requester is a contact now.
    RequestAccepted {
        /// Their peer id.
        peer_id: String,
    },
    /// A contact request was refused: the node hides their chat and drops what they send.
    RequestRefused {
        /// Their peer id.
        peer_id: String,
    },
    /// Our name changed.
    NameSet(String),
    /// A safety number arrived.
    SafetyNumber {
        /// Whose.
        peer: String,
        /// The number.
        number: String,
    },
    /// A contact was marked verified.
    Verified {
        /// Whose.
        peer: String,
    },
    /// A dial succeeded.
    Connected {
        /// Who answered.
        peer_id: String,
    },
    /// A node call failed.
    Failed {
        /// Which call.
        op: Op,
        /// The error, readable.
        error: String,
    },
    /// A group was created: open it.
    GroupCreated {
        /// Its id.
        group: String,
    },
    /// A group call succeeded; what to tell the user.
    GroupDone(String),
    /// The node's event stream ended.
    NodeStopped,
}

/// A node call to make; its result comes back as an [`Action`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// `chats()`.
    LoadChats,
    /// `contacts()`.
    LoadContacts,
    /// `peers()`.
    LoadPeers,
    /// `nearby()`.
    LoadNearby,
    /// `messages(chat, HISTORY_PAGE, before)`.
    LoadMessages {
        /// The chat.
        chat: String,
        /// Load the page before this message id (scrolling back).
        before: Option<String>,
    },
    /// `send(to, text)`.
    Send {
        /// The chat.
        to: String,
        /// The text.
        text: String,
    },
    /// `contact_add(code, alias)`.
    AddContact {
        /// The code.
        code: String,
        /// A local name.
        alias: Option<String>,
    },
    /// `contact_accept(peer)`.
    AcceptRequest(String),
    /// `contact_refuse(peer)`.
    RefuseRequest(String),
    /// `set_name(name)`.
    SetName(String),
    /// `safety_number(peer)`.
    SafetyNumber(String),
    /// `contact_verify(peer)`.
    Verify(String),
    /// `mark_read(chat)`.
    MarkRead(String),
    /// `connect(addr)`.
    Connect(String),
    /// `group_create(name, [])`.
    GroupCreate(String),
    /// `group_add(group, member)`.
    GroupAdd {
        /// The group.
        group: String,
        /// The contact's peer id.
        member: String,
    },
    /// `group_leave(group)`.
    GroupLeave(String),
}

/// One row of the chat list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatEntry {
    /// The chat id (a peer id for direct chats).
    pub id: String,
    /// The name to show.
    pub name: String,
    /// Unread incoming messages.
    pub unread: u32,
    /// The newest message, for sorting and preview.
    pub last: Option<MessageInfo>,
    /// A stranger wrote: a contact request.
    pub request: bool,
    /// Safety numbers were compared.
    pub verified: bool,
}

/// What the node is busy with, for the status bar.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// The node has not started yet.
    pub starting: bool,
    /// Sends waiting for the outbox.
    pub sending: u32,
    /// Dials in progress.
    pub connecting: u32,
    /// Contact adds in progress.
    pub adding: u32,
    /// The node has stopped (or never started).
    pub stopped: bool,
}
