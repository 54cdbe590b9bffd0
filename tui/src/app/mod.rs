//! The UI's state and its one way to change: [`App::update`] takes an [`Action`] (a key, a
//! paste, a node event, the result of a node call) and returns the [`Effect`]s to run (node
//! calls). It never does I/O itself, so every behaviour is a unit test away.

pub mod command;
pub mod composer;
mod input;
pub mod keys;

mod navigation;
mod state;
mod update;

use std::collections::{BTreeMap, BTreeSet};

use bonghwa_core::event::Via;
use bonghwa_core::identity::ContactCard;
use bonghwa_core::node::{ChatInfo, ContactInfo, IdentityInfo, MessageInfo, NearbyPeer};

pub use composer::Composer;
pub use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
pub use state::{Action, Activity, ChatEntry, Clash, Effect, Focus, Notice, Op, Panel, Zone};

/// Messages loaded per page of history.
pub const HISTORY_PAGE: usize = 200;
/// Lines one mouse-wheel step scrolls.
pub const WHEEL_LINES: usize = 3;

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
    /// Relays that hold a reservation for us (others behind NAT can reach us through them).
    pub reserved_relays: BTreeSet<String>,
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
            reserved_relays: BTreeSet::new(),
            focus: Focus::Composer,
            panel: None,
            composer: Composer::default(),
            notice: None,
            scroll: 0,
            activity: Activity {
                starting: true,
                ..Activity::default()
            },
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

    /// The accepted contact other than `peer` whose name is `name` (ignoring case). A peer
    /// id is its identity key, so a changed key arrives as a different peer under a name
    /// the user already knows: this is what the UI warns about.
    pub fn name_clash(&self, peer: &str, name: &str) -> Option<&ContactInfo> {
        let name = name.trim().to_lowercase();
        if name.is_empty() {
            return None;
        }
        self.contacts
            .iter()
            .find(|c| c.peer_id != peer && c.name.trim().to_lowercase() == name)
    }

    /// The clash adding `code` (under `alias`) would make: the code can be read, is not
    /// an existing contact, and its name or the alias is another contact's name.
    pub(super) fn code_clash(&self, code: &str, alias: Option<&str>) -> Option<Clash> {
        let card = ContactCard::from_code(code).ok()?;
        let peer = card.peer_id().ok()?.to_string();
        if self.contacts.iter().any(|c| c.peer_id == peer) {
            return None;
        }
        let existing = alias
            .and_then(|a| self.name_clash(&peer, a))
            .or_else(|| self.name_clash(&peer, &card.name))?;
        Some(Clash {
            code: code.to_owned(),
            alias: alias.map(str::to_owned),
            existing: existing.name.clone(),
        })
    }

    pub(super) fn info(&mut self, text: String) {
        self.notice = Some(Notice { text, error: false });
    }

    pub(super) fn error(&mut self, text: String) {
        self.notice = Some(Notice { text, error: true });
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
