//! The UI's state and its one way to change: [`App::update`] takes an [`Action`] (a key, a
//! paste, a node event, the result of a node call) and returns the [`Effect`]s to run (node
//! calls). It never does I/O itself, so every behaviour is a unit test away.

pub mod command;
pub mod composer;
mod input;
pub mod keys;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bonghwa_core::Event;
use bonghwa_core::event::Via;
use bonghwa_core::node::{ChatInfo, ContactInfo, IdentityInfo, MessageInfo, NearbyPeer, PeerInfo};

pub use composer::Composer;
pub use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Messages loaded per page of history.
pub const HISTORY_PAGE: usize = 200;
/// Lines one mouse-wheel step scrolls.
pub const WHEEL_LINES: usize = 3;

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
        /// When accepting a request: the requester's peer id and name.
        accepting: Option<(String, String)>,
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
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Start => "start the node",
            Op::Load => "load from the node",
            Op::Send => "send",
            Op::AddContact => "add the contact",
            Op::SetName => "change your name",
            Op::SafetyNumber => "get the safety number",
            Op::Verify => "mark verified",
            Op::Connect => "connect",
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
    /// A contact was added (or a request accepted).
    ContactAdded {
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

/// The whole UI state. `ui::draw` reads it; only [`App::update`] changes it.
#[derive(Clone, Debug)]
pub struct App {
    /// Who we are, once the node has started.
    pub me: Option<IdentityInfo>,
    /// mDNS (LAN discovery) is on.
    pub mdns: bool,
    /// How to show times.
    pub zone: Zone,
    /// Chats as the node last listed them (kept current from events).
    pub chats: Vec<ChatInfo>,
    /// Accepted contacts.
    pub contacts: Vec<ContactInfo>,
    /// The chat list as shown: chats plus contacts without messages, newest first.
    pub list: Vec<ChatEntry>,
    /// The open chat's id.
    pub open: Option<String>,
    /// Loaded history per chat, oldest first.
    pub histories: BTreeMap<String, Vec<MessageInfo>>,
    /// Chats whose oldest message is loaded (no more pages).
    pub history_complete: BTreeSet<String>,
    /// Connected peers and how.
    pub online: BTreeMap<String, Via>,
    /// LAN peers with a card.
    pub nearby: Vec<NearbyPeer>,
    /// Who takes typing.
    pub focus: Focus,
    /// The panel over the chat.
    pub panel: Option<Panel>,
    /// The message being written.
    pub composer: Composer,
    /// The last thing that happened worth saying.
    pub notice: Option<Notice>,
    /// History lines scrolled up from the newest.
    pub scroll: usize,
    /// What the node is doing.
    pub activity: Activity,
    /// Requests refused this session (hidden from the list).
    pub dismissed: BTreeSet<String>,
    /// Terminal size, for clamping scrolling.
    pub size: (u16, u16),
    /// False once the user asked to quit.
    pub running: bool,
}

impl App {
    /// A fresh state while the node starts.
    pub fn new(mdns: bool, zone: Zone) -> Self {
        Self {
            me: None,
            mdns,
            zone,
            chats: Vec::new(),
            contacts: Vec::new(),
            list: Vec::new(),
            open: None,
            histories: BTreeMap::new(),
            history_complete: BTreeSet::new(),
            online: BTreeMap::new(),
            nearby: Vec::new(),
            focus: Focus::Composer,
            panel: None,
            composer: Composer::default(),
            notice: None,
            scroll: 0,
            activity: Activity {
                starting: true,
                ..Activity::default()
            },
            dismissed: BTreeSet::new(),
            size: (80, 24),
            running: true,
        }
    }

    /// The open chat's list row.
    pub fn open_entry(&self) -> Option<&ChatEntry> {
        let open = self.open.as_ref()?;
        self.list.iter().find(|e| &e.id == open)
    }

    /// The open chat's loaded history.
    pub fn open_history(&self) -> &[MessageInfo] {
        self.open
            .as_ref()
            .and_then(|id| self.histories.get(id))
            .map_or(&[], Vec::as_slice)
    }

    /// The name to show for a peer id: ours, a chat's, a nearby card's, else a short id.
    pub fn name_of(&self, peer: &str) -> String {
        if let Some(me) = &self.me
            && me.peer_id == peer
        {
            return me.name.clone();
        }
        if let Some(entry) = self.list.iter().find(|e| e.id == peer) {
            return entry.name.clone();
        }
        if let Some(n) = self.nearby.iter().find(|n| n.peer_id == peer) {
            return n.name.clone();
        }
        short_id(peer)
    }

    /// Applies one action; returns the node calls it needs.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Key(key) => self.on_key(key),
            Action::Paste(text) => self.on_paste(&text),
            Action::ScrollUp => self.scroll_by(WHEEL_LINES as isize),
            Action::ScrollDown => self.scroll_by(-(WHEEL_LINES as isize)),
            Action::Resize { width, height } => {
                self.size = (width, height);
                self.scroll = self.scroll.min(self.max_scroll());
                Vec::new()
            }
            Action::Started(identity) => {
                self.me = Some(identity);
                self.activity.starting = false;
                vec![
                    Effect::LoadChats,
                    Effect::LoadContacts,
                    Effect::LoadPeers,
                    Effect::LoadNearby,
                ]
            }
            Action::Node(event) => self.on_event(event),
            Action::Chats(chats) => {
                self.chats = chats;
                let mut effects = self.rebuild_list();
                if self.open.is_none()
                    && let Some(first) = self.list.first()
                {
                    let id = first.id.clone();
                    effects.extend(self.open_chat(id));
                }
                effects
            }
            Action::Contacts(contacts) => {
                self.contacts = contacts;
                self.rebuild_list()
            }
            Action::Peers(peers) => {
                self.online = peers.into_iter().map(|p| (p.peer_id, p.via)).collect();
                Vec::new()
            }
            Action::Nearby(nearby) => {
                self.nearby = nearby;
                if let Some(Panel::Nearby { cursor }) = &mut self.panel {
                    *cursor = (*cursor).min(self.nearby.len().saturating_sub(1));
                }
                Vec::new()
            }
            Action::Messages {
                chat,
                messages,
                older,
            } => {
                self.on_messages(chat, messages, older);
                Vec::new()
            }
            Action::Sent { chat } => {
                self.activity.sending = self.activity.sending.saturating_sub(1);
                vec![
                    Effect::LoadMessages { chat, before: None },
                    Effect::LoadChats,
                ]
            }
            Action::ContactAdded { peer_id } => {
                self.activity.adding = self.activity.adding.saturating_sub(1);
                self.dismissed.remove(&peer_id);
                self.panel = None;
                self.focus = Focus::Composer;
                self.info(format!(
                    "contact added: {}; write your first message",
                    self.name_of(&peer_id)
                ));
                let mut effects = vec![Effect::LoadContacts, Effect::LoadChats];
                effects.extend(self.open_chat(peer_id));
                effects
            }
            Action::NameSet(name) => {
                self.info(format!("your name is now {name}"));
                if let Some(me) = &mut self.me {
                    me.name = name;
                }
                Vec::new()
            }
            Action::SafetyNumber { peer, number } => {
                if let Some(Panel::Safety {
                    peer: shown,
                    number: slot,
                    ..
                }) = &mut self.panel
                    && *shown == peer
                {
                    *slot = Some(number);
                }
                Vec::new()
            }
            Action::Verified { peer } => {
                if let Some(Panel::Safety {
                    peer: shown,
                    verified,
                    ..
                }) = &mut self.panel
                    && *shown == peer
                {
                    *verified = true;
                }
                self.info(format!("{} is verified", self.name_of(&peer)));
                vec![Effect::LoadContacts]
            }
            Action::Connected { peer_id } => {
                self.activity.connecting = self.activity.connecting.saturating_sub(1);
                self.info(format!("connected to {}", self.name_of(&peer_id)));
                vec![Effect::LoadPeers, Effect::LoadNearby]
            }
            Action::Failed { op, error } => {
                match op {
                    Op::Start => {
                        self.activity.starting = false;
                        self.activity.stopped = true;
                    }
                    Op::Send => self.activity.sending = self.activity.sending.saturating_sub(1),
                    Op::Connect => {
                        self.activity.connecting = self.activity.connecting.saturating_sub(1)
                    }
                    Op::AddContact => self.activity.adding = self.activity.adding.saturating_sub(1),
                    _ => {}
                }
                if error.starts_with("could not") {
                    self.error(error);
                } else {
                    self.error(format!("could not {op}: {error}"));
                }
                Vec::new()
            }
            Action::NodeStopped => {
                self.activity.stopped = true;
                self.error("the node has stopped; press Ctrl+C to quit".into());
                Vec::new()
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::MessageReceived { chat, message } => {
                let info = MessageInfo::from(&message);
                let incoming = !message.outgoing;
                self.insert_message(&chat, info.clone());
                let mut effects = Vec::new();
                let is_open = self.open.as_deref() == Some(chat.as_str());
                match self.chats.iter_mut().find(|c| c.id == chat) {
                    Some(entry) => {
                        if entry
                            .last
                            .as_ref()
                            .is_none_or(|l| l.sent_at <= info.sent_at)
                        {
                            entry.last = Some(info);
                        }
                        if incoming && !is_open {
                            entry.unread = entry.unread.saturating_add(1);
                        }
                    }
                    None => effects.push(Effect::LoadChats),
                }
                if incoming && is_open {
                    effects.push(Effect::MarkRead(chat));
                }
                effects.extend(self.rebuild_list());
                effects
            }
            Event::MessageStatus { id, chat, status } => {
                let mut found = false;
                if let Some(history) = self.histories.get_mut(&chat)
                    && let Some(m) = history.iter_mut().find(|m| m.id == id)
                {
                    m.status = status.as_str();
                    found = true;
                }
                if let Some(last) = self
                    .chats
                    .iter_mut()
                    .filter_map(|c| c.last.as_mut())
                    .find(|m| m.id == id)
                {
                    last.status = status.as_str();
                }
                self.rebuild_list();
                if !found && self.histories.contains_key(&chat) {
                    // Reported before our copy of the history had it: reload.
                    return vec![Effect::LoadMessages { chat, before: None }];
                }
                Vec::new()
            }
            Event::PeerConnected { peer_id, via } => {
                self.online.insert(peer_id, via);
                vec![Effect::LoadNearby]
            }
            Event::PeerDisconnected { peer_id } => {
                self.online.remove(&peer_id);
                Vec::new()
            }
            Event::PeerDiscovered { .. } => vec![Effect::LoadNearby],
            Event::ContactRequest { peer_id, name } => {
                self.dismissed.remove(&peer_id);
                self.info(format!(
                    "{name} wants to chat: open their chat and press y to accept or x to refuse"
                ));
                vec![Effect::LoadChats]
            }
            Event::Lagged { .. } => {
                let mut effects = vec![
                    Effect::LoadChats,
                    Effect::LoadContacts,
                    Effect::LoadPeers,
                    Effect::LoadNearby,
                ];
                if let Some(chat) = &self.open {
                    effects.push(Effect::LoadMessages {
                        chat: chat.clone(),
                        before: None,
                    });
                }
                effects
            }
            _ => Vec::new(),
        }
    }

    fn insert_message(&mut self, chat: &str, info: MessageInfo) {
        let Some(history) = self.histories.get_mut(chat) else {
            return;
        };
        if history.iter().any(|m| m.id == info.id) {
            return;
        }
        let at = history.partition_point(|m| m.sent_at <= info.sent_at);
        history.insert(at, info);
    }

    fn on_messages(&mut self, chat: String, messages: Vec<MessageInfo>, older: bool) {
        if older {
            if messages.len() < HISTORY_PAGE {
                self.history_complete.insert(chat.clone());
            }
            let history = self.histories.entry(chat).or_default();
            let known: BTreeSet<String> = history.iter().map(|m| m.id.clone()).collect();
            let mut merged: Vec<MessageInfo> = messages
                .into_iter()
                .filter(|m| !known.contains(&m.id))
                .collect();
            merged.append(history);
            *history = merged;
        } else {
            if messages.len() < HISTORY_PAGE {
                self.history_complete.insert(chat.clone());
            }
            // Keep older pages already loaded; replace the newest page.
            let history = self.histories.entry(chat).or_default();
            let first_new = messages.first().map(|m| m.sent_at);
            let mut kept: Vec<MessageInfo> = match first_new {
                Some(at) => history
                    .iter()
                    .filter(|m| m.sent_at < at && !messages.iter().any(|n| n.id == m.id))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            for mut message in messages {
                // An event may have moved a status on while this page was in flight.
                if let Some(seen) = history.iter().find(|m| m.id == message.id)
                    && status_rank(seen.status) > status_rank(message.status)
                {
                    message.status = seen.status;
                }
                kept.push(message);
            }
            *history = kept;
        }
    }

    /// Rebuilds the chat list from chats and contacts. If the open chat is gone (a refused
    /// request), the newest chat opens instead.
    fn rebuild_list(&mut self) -> Vec<Effect> {
        let verified: BTreeMap<&str, bool> = self
            .contacts
            .iter()
            .map(|c| (c.peer_id.as_str(), c.verified))
            .collect();
        let mut list: Vec<ChatEntry> = self
            .chats
            .iter()
            .filter(|c| !(c.request && self.dismissed.contains(&c.id)))
            .map(|c| ChatEntry {
                id: c.id.clone(),
                name: c.name.clone(),
                unread: c.unread,
                last: c.last.clone(),
                request: c.request,
                verified: verified.get(c.id.as_str()).copied().unwrap_or(false),
            })
            .collect();
        for contact in &self.contacts {
            if !list.iter().any(|e| e.id == contact.peer_id) {
                list.push(ChatEntry {
                    id: contact.peer_id.clone(),
                    name: contact.name.clone(),
                    unread: 0,
                    last: None,
                    request: false,
                    verified: contact.verified,
                });
            }
        }
        list.sort_by(|a, b| {
            let at = |e: &ChatEntry| e.last.as_ref().map(|m| m.sent_at);
            at(b)
                .cmp(&at(a))
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.id.cmp(&b.id))
        });
        self.list = list;
        let gone = self
            .open
            .as_ref()
            .is_some_and(|id| !self.list.iter().any(|e| &e.id == id));
        if gone && let Some(first) = self.list.first() {
            let id = first.id.clone();
            return self.open_chat(id);
        }
        Vec::new()
    }

    /// Opens a chat: loads its history if needed and marks it read.
    fn open_chat(&mut self, id: String) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.open.as_ref() != Some(&id) {
            self.scroll = 0;
        }
        if !self.histories.contains_key(&id) {
            effects.push(Effect::LoadMessages {
                chat: id.clone(),
                before: None,
            });
        }
        let mut unread = false;
        for chat in self.chats.iter_mut().filter(|c| c.id == id) {
            unread |= chat.unread > 0;
            chat.unread = 0;
        }
        for entry in self.list.iter_mut().filter(|e| e.id == id) {
            entry.unread = 0;
        }
        if unread {
            effects.push(Effect::MarkRead(id.clone()));
        }
        self.open = Some(id);
        effects
    }

    /// Moves the selection `delta` rows in the chat list and opens that chat.
    fn move_selection(&mut self, delta: isize) -> Vec<Effect> {
        if self.list.is_empty() {
            return Vec::new();
        }
        let current = self
            .open
            .as_ref()
            .and_then(|id| self.list.iter().position(|e| &e.id == id))
            .unwrap_or(0);
        let last = self.list.len() - 1;
        let next = current.saturating_add_signed(delta).min(last);
        let id = self.list[next].id.clone();
        self.open_chat(id)
    }

    /// How far the history can scroll up at the current size.
    pub fn max_scroll(&self) -> usize {
        let (width, height) = crate::ui::history_viewport(self.size.0, self.size.1, self);
        let lines = crate::ui::history::history_lines(self, width).len();
        lines.saturating_sub(usize::from(height))
    }

    /// How far the help panel can scroll at the current size.
    pub fn help_max_scroll(&self) -> usize {
        let screen = ratatui::layout::Rect::new(0, 0, self.size.0, self.size.1);
        let rect = crate::ui::panel::help_area(screen);
        let lines = crate::ui::panel::help_lines(rect.width.saturating_sub(2)).len();
        lines.saturating_sub(usize::from(rect.height.saturating_sub(2)))
    }

    fn scroll_by(&mut self, delta: isize) -> Vec<Effect> {
        let help_max = self.help_max_scroll();
        if let Some(Panel::Help { scroll }) = &mut self.panel {
            *scroll = scroll.saturating_add_signed(delta).min(help_max);
            return Vec::new();
        }
        let max = self.max_scroll();
        self.scroll = self.scroll.saturating_add_signed(delta).min(max);
        if delta > 0
            && self.scroll == max
            && let Some(chat) = self.open.clone()
            && !self.history_complete.contains(&chat)
            && let Some(oldest) = self.histories.get(&chat).and_then(|h| h.first())
        {
            return vec![Effect::LoadMessages {
                before: Some(oldest.id.clone()),
                chat,
            }];
        }
        Vec::new()
    }

    fn info(&mut self, text: String) {
        self.notice = Some(Notice { text, error: false });
    }

    fn error(&mut self, text: String) {
        self.notice = Some(Notice { text, error: true });
    }
}

/// How far along a delivery status is; statuses only move forward.
fn status_rank(status: &str) -> u8 {
    match status {
        "pending" => 0,
        "sent" => 1,
        "failed" => 2,
        "delivered" => 3,
        "read" => 4,
        _ => 0,
    }
}

/// A peer id shortened for display: its last 8 characters.
pub fn short_id(peer: &str) -> String {
    let chars: Vec<char> = peer.chars().collect();
    let start = chars.len().saturating_sub(8);
    format!("…{}", chars[start..].iter().collect::<String>())
}

#[cfg(test)]
mod tests;
