//! [`App::update`]: node results and node events change the state here; keys and pastes
//! are handed to `input.rs`.

use std::collections::BTreeSet;

use bonghwa_core::Event;
use bonghwa_core::model::MessageStatus;
use bonghwa_core::node::MessageInfo;

use super::{Action, App, Effect, Focus, HISTORY_PAGE, Op, Panel, WHEEL_LINES};

impl App {
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
                if !identity.keys_protected {
                    self.info(
                        "keys are stored unprotected on this device; start with \
                         --passphrase-file FILE (or BONGHWA_PASSPHRASE) to encrypt them"
                            .to_owned(),
                    );
                }
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
            Action::RequestAccepted { peer_id } => {
                self.activity.adding = self.activity.adding.saturating_sub(1);
                for chat in self.chats.iter_mut().filter(|c| c.id == peer_id) {
                    chat.request = false;
                }
                self.rebuild_list();
                self.focus = Focus::Composer;
                self.info(format!(
                    "{} is a contact now; write your reply",
                    self.name_of(&peer_id)
                ));
                let mut effects = vec![Effect::LoadContacts, Effect::LoadChats];
                effects.extend(self.open_chat(peer_id));
                effects
            }
            Action::RequestRefused { peer_id } => {
                let name = self.name_of(&peer_id);
                self.chats.retain(|c| c.id != peer_id);
                let mut effects = self.rebuild_list();
                if self.open.as_ref() == Some(&peer_id) {
                    // The list is empty: nothing else to open.
                    self.open = None;
                }
                self.info(format!(
                    "refused {name}: their chat is gone and what they send is dropped \
                     (adding their code later undoes this)"
                ));
                effects.push(Effect::LoadChats);
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
                    Op::AddContact | Op::Accept => {
                        self.activity.adding = self.activity.adding.saturating_sub(1)
                    }
                    _ => {}
                }
                if error.starts_with("could not") {
                    self.error(error);
                } else {
                    self.error(format!("could not {op}: {error}"));
                }
                Vec::new()
            }
            Action::GroupCreated { group } => {
                self.info("group created; /invite a contact into it".into());
                let mut effects = vec![Effect::LoadChats];
                effects.extend(self.open_chat(group));
                effects
            }
            Action::GroupDone(note) => {
                self.info(note);
                vec![Effect::LoadChats]
            }
            Action::NodeStopped => {
                self.activity.stopped = true;
                self.error("the node has stopped; press Ctrl+C to quit".into());
                Vec::new()
            }
        }
    }

    pub(super) fn on_event(&mut self, event: Event) -> Vec<Effect> {
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
                    m.status = status;
                    found = true;
                }
                if let Some(last) = self
                    .chats
                    .iter_mut()
                    .filter_map(|c| c.last.as_mut())
                    .find(|m| m.id == id)
                {
                    last.status = status;
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
            Event::GroupChanged { .. } => vec![Effect::LoadChats],
            Event::Reachability { status, .. } => {
                if let Some(me) = &mut self.me {
                    me.reachability = status;
                }
                Vec::new()
            }
            Event::RelayReservation { peer_id, reserved } => {
                if reserved {
                    self.reserved_relays.insert(peer_id);
                } else {
                    self.reserved_relays.remove(&peer_id);
                }
                Vec::new()
            }
            Event::MessagesMissing { chat, missing } if missing > 0 => {
                let name = self.name_of(&chat);
                self.info(format!(
                    "{missing} message(s) from {name} have not arrived yet; they may still come"
                ));
                Vec::new()
            }
            Event::MessagesMissing { .. } => {
                // The gap closed: a notice about it is stale now.
                if self
                    .notice
                    .as_ref()
                    .is_some_and(|n| n.text.contains("have not arrived yet"))
                {
                    self.notice = None;
                }
                Vec::new()
            }
            Event::ContactRequest { name, .. } => {
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

    pub(super) fn insert_message(&mut self, chat: &str, info: MessageInfo) {
        let Some(history) = self.histories.get_mut(chat) else {
            return;
        };
        if history.iter().any(|m| m.id == info.id) {
            return;
        }
        let at = history.partition_point(|m| m.sent_at <= info.sent_at);
        history.insert(at, info);
    }

    pub(super) fn on_messages(&mut self, chat: String, messages: Vec<MessageInfo>, older: bool) {
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
}

/// How far along a delivery status is; statuses only move forward.
/// (`Failed` ranks below `Delivered`: a late ack still moves a failed message on.)
fn status_rank(status: MessageStatus) -> u8 {
    match status {
        MessageStatus::Pending => 0,
        MessageStatus::Sent => 1,
        MessageStatus::Failed => 2,
        MessageStatus::Delivered => 3,
        MessageStatus::Read => 4,
    }
}
