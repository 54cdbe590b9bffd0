//! The chat list as shown, which chat is open, and how far things are scrolled.

use std::collections::BTreeMap;

use super::{App, ChatEntry, Effect, Panel};

impl App {
    /// Rebuilds the chat list from chats and contacts. If the open chat is gone (a refused
    /// request), the newest chat opens instead.
    pub(super) fn rebuild_list(&mut self) -> Vec<Effect> {
        let verified: BTreeMap<&str, bool> = self
            .contacts
            .iter()
            .map(|c| (c.peer_id.as_str(), c.verified))
            .collect();
        let mut list: Vec<ChatEntry> = self
            .chats
            .iter()
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
    pub(super) fn open_chat(&mut self, id: String) -> Vec<Effect> {
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
    pub(super) fn move_selection(&mut self, delta: isize) -> Vec<Effect> {
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

    pub(super) fn scroll_by(&mut self, delta: isize) -> Vec<Effect> {
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
}
