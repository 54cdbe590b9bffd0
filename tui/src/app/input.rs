//! Keys and pastes: what each key does depends on the open panel, then on the focus.
//! The table in `keys.rs` lists the same keys for the help panel.

use bonghwa_core::node::ChatKind;

use super::command::{self, Command};
use super::{App, Composer, Effect, Focus, KeyCode, KeyEvent, KeyModifiers, Panel};

/// Lines PgUp/PgDn scroll, at least.
const PAGE_LINES: usize = 10;

impl App {
    pub(super) fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('q')) {
            self.running = false;
            return Vec::new();
        }
        if self.notice.as_ref().is_some_and(|n| !n.error) {
            self.notice = None;
        }
        if self.panel.is_some() {
            return self.on_panel_key(key);
        }
        let page = PAGE_LINES.max(usize::from(self.size.1 / 2));
        match key.code {
            KeyCode::F(1) => return self.open_panel(Panel::Help { scroll: 0 }),
            KeyCode::Esc => {
                if self.notice.take().is_none() {
                    self.focus = Focus::ChatList;
                }
                return Vec::new();
            }
            KeyCode::Up if alt => return self.move_selection(-1),
            KeyCode::Down if alt => return self.move_selection(1),
            KeyCode::Char('p') if ctrl => return self.move_selection(-1),
            KeyCode::Char('n') if ctrl => return self.move_selection(1),
            KeyCode::PageUp => return self.scroll_by(page as isize),
            KeyCode::PageDown => return self.scroll_by(-(page as isize)),
            KeyCode::Tab | KeyCode::BackTab => {
                if self.focus == Focus::Composer && self.composer.text().starts_with('/') {
                    if let Some(done) = command::complete(self.composer.text()) {
                        self.composer.set_text(&done);
                    }
                } else {
                    self.focus = match self.focus {
                        Focus::ChatList => Focus::Composer,
                        Focus::Composer => Focus::ChatList,
                    };
                }
                return Vec::new();
            }
            _ => {}
        }
        if let (true, false, KeyCode::Char(_)) = (alt, ctrl, key.code) {
            // Esc followed quickly by a key arrives as Alt+key: treat it as both.
            self.focus = Focus::ChatList;
            return self.on_list_key(KeyEvent::new(key.code, KeyModifiers::NONE));
        }
        match self.focus {
            Focus::ChatList => self.on_list_key(key),
            Focus::Composer => self.on_composer_key(key, ctrl, alt),
        }
    }

    pub(super) fn on_paste(&mut self, text: &str) -> Vec<Effect> {
        match &mut self.panel {
            Some(Panel::AddContact { input, .. }) => {
                // Codes arrive wrapped or with spaces; keep it one line.
                input.insert_str(&text.replace(['\n', '\r'], ""));
            }
            Some(_) => {}
            None => {
                self.focus = Focus::Composer;
                self.composer.insert_str(text);
            }
        }
        Vec::new()
    }

    fn open_panel(&mut self, panel: Panel) -> Vec<Effect> {
        let effects = match &panel {
            Panel::Nearby { .. } => vec![Effect::LoadNearby],
            Panel::Safety { peer, .. } => vec![Effect::SafetyNumber(peer.clone())],
            _ => Vec::new(),
        };
        self.panel = Some(panel);
        effects
    }

    fn on_list_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('i') => {
                self.focus = Focus::Composer;
                Vec::new()
            }
            KeyCode::Char('?') => self.open_panel(Panel::Help { scroll: 0 }),
            KeyCode::Char('a') => self.open_panel(Panel::AddContact {
                input: Composer::default(),
                clash: None,
            }),
            KeyCode::Char('n') => self.open_panel(Panel::Nearby { cursor: 0 }),
            KeyCode::Char('c') => self.show_code(),
            KeyCode::Char('s') => self.show_safety(),
            KeyCode::Char('y') => self.accept_request(),
            KeyCode::Char('x') => self.refuse_request(),
            KeyCode::Char('q') => {
                self.running = false;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn on_composer_key(&mut self, key: KeyEvent, ctrl: bool, alt: bool) -> Vec<Effect> {
        let c = &mut self.composer;
        match key.code {
            KeyCode::Enter if alt => c.insert_char('\n'),
            KeyCode::Char('j') if ctrl => c.insert_char('\n'),
            KeyCode::Enter => return self.submit(),
            KeyCode::Char('?') if c.is_empty() => {
                return self.open_panel(Panel::Help { scroll: 0 });
            }
            KeyCode::Char('a') if ctrl => c.home(),
            KeyCode::Char('e') if ctrl => c.end(),
            KeyCode::Char('w') if ctrl => c.delete_word(),
            KeyCode::Char('u') if ctrl => c.kill_to_start(),
            KeyCode::Char('k') if ctrl => c.kill_to_end(),
            KeyCode::Char('h') if ctrl => c.backspace(),
            KeyCode::Char(ch) if !ctrl => c.insert_char(ch),
            KeyCode::Backspace if alt => c.delete_word(),
            KeyCode::Backspace => c.backspace(),
            KeyCode::Delete => c.delete(),
            KeyCode::Left => c.left(),
            KeyCode::Right => c.right(),
            KeyCode::Home => c.home(),
            KeyCode::End => c.end(),
            KeyCode::Up => c.up(),
            KeyCode::Down => c.down(),
            _ => {}
        }
        Vec::new()
    }

    /// Enter in the composer: run a command or send the text to the open chat.
    fn submit(&mut self) -> Vec<Effect> {
        let text = self.composer.text().to_owned();
        if text.trim().is_empty() {
            return Vec::new();
        }
        if text.starts_with('/') && !text.starts_with("//") {
            return match command::parse(&text) {
                Ok(cmd) => {
                    self.composer.take();
                    self.run_command(cmd)
                }
                Err(e) => {
                    self.error(e);
                    Vec::new()
                }
            };
        }
        // "//text" sends "/text".
        let text = text
            .strip_prefix('/')
            .filter(|t| t.starts_with('/'))
            .map_or(text.clone(), str::to_owned);
        let Some(chat) = self.open.clone() else {
            self.error(
                "no chat is open: add a contact first (press Esc, then a; or /add CODE)".into(),
            );
            return Vec::new();
        };
        if self.activity.stopped || self.activity.starting {
            self.error("the node is not running; your text is kept in the composer".into());
            return Vec::new();
        }
        self.composer.take();
        self.scroll = 0;
        self.activity.sending += 1;
        vec![Effect::Send { to: chat, text }]
    }

    /// The open chat, if it is a group.
    fn open_group(&self) -> Option<String> {
        let open = self.open.as_ref()?;
        self.chats
            .iter()
            .any(|c| &c.id == open && c.kind == ChatKind::Group)
            .then(|| open.clone())
    }

    /// `/invite CONTACT`: a contact's name (any case) or peer id, into the open group.
    fn invite(&mut self, who: &str) -> Vec<Effect> {
        let Some(group) = self.open_group() else {
            self.error("open a group first, then /invite a contact".into());
            return Vec::new();
        };
        let wanted = who.trim();
        let found: Vec<&str> = self
            .contacts
            .iter()
            .filter(|c| c.peer_id == wanted || c.name.to_lowercase() == wanted.to_lowercase())
            .map(|c| c.peer_id.as_str())
            .collect();
        match found.as_slice() {
            [peer] => vec![Effect::GroupAdd {
                group,
                member: (*peer).to_owned(),
            }],
            [] => {
                self.error(format!(
                    "no contact called {wanted}; add them first with /add CODE"
                ));
                Vec::new()
            }
            _ => {
                self.error(format!(
                    "several contacts are called {wanted}; use their peer id"
                ));
                Vec::new()
            }
        }
    }

    fn run_command(&mut self, cmd: Command) -> Vec<Effect> {
        match cmd {
            Command::Add { code, alias } => self.add_contact(code, alias),
            Command::Nick(name) => vec![Effect::SetName(name)],
            Command::Verify => self.show_safety(),
            Command::Connect(addr) => {
                self.activity.connecting += 1;
                vec![Effect::Connect(addr)]
            }
            Command::Group(name) => vec![Effect::GroupCreate(name)],
            Command::Invite(who) => self.invite(&who),
            Command::Leave => match self.open_group() {
                Some(group) => vec![Effect::GroupLeave(group)],
                None => {
                    self.error("open a group first, then /leave".into());
                    Vec::new()
                }
            },
            Command::Code => self.show_code(),
            Command::Nearby => self.open_panel(Panel::Nearby { cursor: 0 }),
            Command::Help => self.open_panel(Panel::Help { scroll: 0 }),
            Command::Quit => {
                self.running = false;
                Vec::new()
            }
        }
    }

    fn show_code(&mut self) -> Vec<Effect> {
        if self.me.is_none() {
            self.error("the node is still starting; your code appears once it is up".into());
            return Vec::new();
        }
        self.open_panel(Panel::MyCode { text_only: false })
    }

    fn show_safety(&mut self) -> Vec<Effect> {
        let Some(entry) = self.open_entry().cloned() else {
            self.error("open a contact's chat first, then press s (or /verify)".into());
            return Vec::new();
        };
        self.open_panel(Panel::Safety {
            peer: entry.id,
            name: entry.name,
            number: None,
            verified: entry.verified,
        })
    }

    /// Adds the contact behind `code`, unless its name (or `alias`) is already another
    /// contact's: a peer id is its key, so that is a different key than the one the user
    /// knows by that name. Then the add panel opens on the code with that warning, and
    /// Enter there adds it anyway.
    fn add_contact(&mut self, code: String, alias: Option<String>) -> Vec<Effect> {
        if let Some(clash) = self.code_clash(&code, alias.as_deref()) {
            let mut input = Composer::default();
            input.insert_str(&code);
            self.panel = Some(Panel::AddContact {
                input,
                clash: Some(clash),
            });
            return Vec::new();
        }
        self.activity.adding += 1;
        vec![Effect::AddContact { code, alias }]
    }

    /// `y` on a request: the node makes the requester a contact, with the card they sent.
    fn accept_request(&mut self) -> Vec<Effect> {
        let Some(entry) = self.open_entry().filter(|e| e.request).cloned() else {
            self.error("the open chat is not a contact request".into());
            return Vec::new();
        };
        self.activity.adding += 1;
        vec![Effect::AcceptRequest(entry.id)]
    }

    /// `x` on a request: the node hides their chat and drops what they send from now on.
    fn refuse_request(&mut self) -> Vec<Effect> {
        let Some(entry) = self.open_entry().filter(|e| e.request).cloned() else {
            self.error("the open chat is not a contact request".into());
            return Vec::new();
        };
        vec![Effect::RefuseRequest(entry.id)]
    }

    fn on_panel_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let help_max = self.help_max_scroll();
        let Some(panel) = &mut self.panel else {
            return Vec::new();
        };
        if key.code == KeyCode::Esc {
            self.panel = None;
            return Vec::new();
        }
        match panel {
            Panel::Help { scroll } => match key.code {
                KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => *scroll = (*scroll + 1).min(help_max),
                KeyCode::PageUp => *scroll = scroll.saturating_sub(PAGE_LINES),
                KeyCode::PageDown => *scroll = (*scroll + PAGE_LINES).min(help_max),
                KeyCode::Char('q') | KeyCode::Char('?') | KeyCode::F(1) | KeyCode::Enter => {
                    self.panel = None;
                }
                _ => {}
            },
            Panel::AddContact { input, clash } => match key.code {
                KeyCode::Enter => {
                    let code = input.text().trim().to_owned();
                    if code.is_empty() {
                        self.error("paste a contact code first (it starts with BH1)".into());
                        return Vec::new();
                    }
                    // Enter on the code we warned about: the user has read the warning.
                    if let Some(warned) = clash.take().filter(|c| c.code == code) {
                        self.activity.adding += 1;
                        return vec![Effect::AddContact {
                            code,
                            alias: warned.alias,
                        }];
                    }
                    return self.add_contact(code, None);
                }
                KeyCode::Backspace => input.backspace(),
                KeyCode::Delete => input.delete(),
                KeyCode::Left => input.left(),
                KeyCode::Right => input.right(),
                KeyCode::Home => input.home(),
                KeyCode::End => input.end(),
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    input.kill_to_start();
                }
                KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                    input.insert_char(c);
                }
                _ => {}
            },
            Panel::MyCode { text_only } => match key.code {
                KeyCode::Char('t') => *text_only = !*text_only,
                KeyCode::Char('q') | KeyCode::Enter | KeyCode::Char('c') => self.panel = None,
                _ => {}
            },
            Panel::Safety { peer, verified, .. } => match key.code {
                KeyCode::Char('v') | KeyCode::Enter if !*verified => {
                    return vec![Effect::Verify(peer.clone())];
                }
                KeyCode::Char('q') | KeyCode::Enter => self.panel = None,
                _ => {}
            },
            Panel::Nearby { cursor } => match key.code {
                KeyCode::Up | KeyCode::Char('k') => *cursor = cursor.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => {
                    *cursor = (*cursor + 1).min(self.nearby.len().saturating_sub(1));
                }
                KeyCode::Char('r') => return vec![Effect::LoadNearby],
                KeyCode::Enter | KeyCode::Char('a') => {
                    let Some(peer) = self.nearby.get(*cursor).cloned() else {
                        self.error("nobody nearby yet; press r to look again".into());
                        return Vec::new();
                    };
                    return self.add_contact(peer.contact_code, None);
                }
                KeyCode::Char('q') => self.panel = None,
                _ => {}
            },
        }
        Vec::new()
    }
}
