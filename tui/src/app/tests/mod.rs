//! `App::update`, one action at a time.

use bonghwa_core::Event;
use bonghwa_core::event::Reachability;
use bonghwa_core::model::{Hlc, MessageId, MessageStatus, StoredMessage};
use bonghwa_core::node::ChatKind;

use super::*;

mod contacts;

const ME: &str = "12D3KooWMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMe";
const MINJI: &str = "12D3KooWMinjiMinjiMinjiMinjiMinjiMinjiMinjiMinji";
const JUN: &str = "12D3KooWJunJunJunJunJunJunJunJunJunJunJunJunJun";

fn key(code: KeyCode) -> Action {
    Action::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Action {
    Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        app.update(key(KeyCode::Char(c)));
    }
}

fn message(
    n: u8,
    chat: &str,
    from: &str,
    text: &str,
    at: u64,
    status: MessageStatus,
) -> MessageInfo {
    MessageInfo {
        id: format!("{n:064x}"),
        chat: chat.into(),
        from: from.into(),
        text: text.into(),
        sent_at: at,
        status,
    }
}

fn stored(n: u8, chat: &str, from: &str, text: &str, at: u64) -> StoredMessage {
    StoredMessage {
        id: MessageId([n; 32]),
        chat: chat.into(),
        from: from.into(),
        text: text.into(),
        hlc: Hlc { ms: at, counter: 0 },
        status: MessageStatus::Delivered,
        outgoing: from == ME,
    }
}

fn chat(id: &str, name: &str, unread: u32, last: Option<MessageInfo>) -> ChatInfo {
    ChatInfo {
        id: id.into(),
        kind: ChatKind::Direct,
        name: name.into(),
        unread,
        last,
        request: false,
    }
}

fn contact(id: &str, name: &str) -> ContactInfo {
    ContactInfo {
        peer_id: id.into(),
        name: name.into(),
        online: false,
        verified: false,
    }
}

/// Our identity as the node reports it at start.
fn me(keys_protected: bool) -> IdentityInfo {
    IdentityInfo {
        peer_id: ME.into(),
        name: "me".into(),
        contact_code: "BH1CODE".into(),
        addrs: vec![],
        reachability: Reachability::Unknown,
        keys_protected,
    }
}

/// Started, with Minji (older chat, 2 unread) and Jun (newer chat).
fn started() -> App {
    let mut app = App::new(true, Zone::Fixed(0));
    app.update(Action::Started(me(true)));
    app.update(Action::Contacts(vec![
        contact(MINJI, "민지"),
        contact(JUN, "Jun"),
    ]));
    app.update(Action::Chats(vec![
        chat(
            JUN,
            "Jun",
            0,
            Some(message(2, JUN, JUN, "yo", 2_000, MessageStatus::Delivered)),
        ),
        chat(
            MINJI,
            "민지",
            2,
            Some(message(
                1,
                MINJI,
                MINJI,
                "안녕",
                1_000,
                MessageStatus::Delivered,
            )),
        ),
    ]));
    app
}

#[test]
fn starting_loads_everything_and_shows_who_we_are() {
    let mut app = App::new(true, Zone::Fixed(0));
    assert!(app.activity.starting);
    let effects = app.update(Action::Started(me(true)));
    assert!(!app.activity.starting);
    assert_eq!(app.me.as_ref().map(|m| m.name.as_str()), Some("me"));
    for wanted in [
        Effect::LoadChats,
        Effect::LoadContacts,
        Effect::LoadPeers,
        Effect::LoadNearby,
    ] {
        assert!(
            effects.contains(&wanted),
            "{wanted:?} missing from {effects:?}"
        );
    }
}

#[test]
fn chat_list_is_sorted_by_activity_and_opens_the_newest() {
    let app = started();
    let names: Vec<&str> = app.list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["Jun", "민지"]);
    assert_eq!(app.open.as_deref(), Some(JUN));
}

#[test]
fn contacts_without_messages_are_listed_after_chats() {
    let mut app = started();
    app.update(Action::Contacts(vec![
        contact(MINJI, "민지"),
        contact(JUN, "Jun"),
        contact("12D3KooWNew", "Aaron"),
    ]));
    let names: Vec<&str> = app.list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["Jun", "민지", "Aaron"]);
}

#[test]
fn new_message_in_another_chat_counts_unread_and_moves_it_up() {
    let mut app = started();
    app.update(key(KeyCode::Esc));
    let effects = app.update(Action::Node(Event::MessageReceived {
        chat: MINJI.into(),
        message: stored(3, MINJI, MINJI, "밥 먹었어?", 3_000),
    }));
    assert!(
        effects.is_empty(),
        "no mark_read for a chat that is not open: {effects:?}"
    );
    assert_eq!(app.list[0].name, "민지");
    assert_eq!(app.list[0].unread, 3);
    assert_eq!(app.open.as_deref(), Some(JUN), "the open chat stays open");
}

#[test]
fn new_message_in_the_open_chat_is_shown_and_marked_read() {
    let mut app = started();
    app.update(Action::Messages {
        chat: JUN.into(),
        messages: vec![message(2, JUN, JUN, "yo", 2_000, MessageStatus::Delivered)],
        older: false,
    });
    let effects = app.update(Action::Node(Event::MessageReceived {
        chat: JUN.into(),
        message: stored(4, JUN, JUN, "lunch?", 4_000),
    }));
    assert_eq!(effects, vec![Effect::MarkRead(JUN.into())]);
    let texts: Vec<&str> = app.open_history().iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["yo", "lunch?"]);
    assert_eq!(app.list[0].unread, 0);
}

#[test]
fn a_duplicate_message_is_shown_once() {
    let mut app = started();
    app.update(Action::Messages {
        chat: JUN.into(),
        messages: vec![],
        older: false,
    });
    for _ in 0..2 {
        app.update(Action::Node(Event::MessageReceived {
            chat: JUN.into(),
            message: stored(5, JUN, JUN, "once", 5_000),
        }));
    }
    assert_eq!(app.open_history().len(), 1);
}

#[test]
fn status_change_updates_the_mark_and_never_goes_back() {
    let mut app = started();
    let mine = message(6, JUN, ME, "hi", 6_000, MessageStatus::Pending);
    app.update(Action::Messages {
        chat: JUN.into(),
        messages: vec![mine.clone()],
        older: false,
    });
    app.update(Action::Node(Event::MessageStatus {
        id: mine.id.clone(),
        chat: JUN.into(),
        status: MessageStatus::Delivered,
    }));
    assert_eq!(app.open_history()[0].status, MessageStatus::Delivered);
    // A page loaded before the ack arrives late: it must not undo the event.
    app.update(Action::Messages {
        chat: JUN.into(),
        messages: vec![mine],
        older: false,
    });
    assert_eq!(app.open_history()[0].status, MessageStatus::Delivered);
}

#[test]
fn status_for_a_message_not_loaded_yet_reloads_the_chat() {
    let mut app = started();
    app.update(Action::Messages {
        chat: JUN.into(),
        messages: vec![],
        older: false,
    });
    let effects = app.update(Action::Node(Event::MessageStatus {
        id: "ff".repeat(32),
        chat: JUN.into(),
        status: MessageStatus::Sent,
    }));
    assert_eq!(
        effects,
        vec![Effect::LoadMessages {
            chat: JUN.into(),
            before: None
        }]
    );
}

#[test]
fn switching_chats_loads_history_and_marks_read() {
    let mut app = started();
    app.update(Action::Messages {
        chat: JUN.into(),
        messages: vec![],
        older: false,
    });
    let effects = app.update(Action::Key(KeyEvent::new(KeyCode::Down, KeyModifiers::ALT)));
    assert_eq!(app.open.as_deref(), Some(MINJI));
    assert!(effects.contains(&Effect::LoadMessages {
        chat: MINJI.into(),
        before: None
    }));
    assert!(effects.contains(&Effect::MarkRead(MINJI.into())));
    assert_eq!(app.list[1].unread, 0);
    // And back, with the chat list's own keys.
    app.update(key(KeyCode::Esc));
    assert_eq!(app.focus, Focus::ChatList);
    let effects = app.update(key(KeyCode::Char('k')));
    assert_eq!(app.open.as_deref(), Some(JUN));
    assert!(
        effects.is_empty(),
        "history already loaded, nothing unread: {effects:?}"
    );
}

#[test]
fn enter_sends_to_the_open_chat_and_clears_the_composer() {
    let mut app = started();
    type_text(&mut app, "안녕 🙂");
    let effects = app.update(key(KeyCode::Enter));
    assert_eq!(
        effects,
        vec![Effect::Send {
            to: JUN.into(),
            text: "안녕 🙂".into()
        }]
    );
    assert!(app.composer.is_empty());
    assert_eq!(app.activity.sending, 1);
    let effects = app.update(Action::Sent { chat: JUN.into() });
    assert_eq!(app.activity.sending, 0);
    assert!(effects.contains(&Effect::LoadMessages {
        chat: JUN.into(),
        before: None
    }));
}

#[test]
fn alt_enter_adds_a_line_instead_of_sending() {
    let mut app = started();
    type_text(&mut app, "one");
    let effects = app.update(Action::Key(KeyEvent::new(
        KeyCode::Enter,
        KeyModifiers::ALT,
    )));
    assert!(effects.is_empty());
    type_text(&mut app, "two");
    assert_eq!(app.composer.text(), "one\ntwo");
}

#[test]
fn paste_goes_into_the_composer_with_its_lines() {
    let mut app = started();
    app.update(Action::Paste("line 1\r\nline 2".into()));
    assert_eq!(app.composer.text(), "line 1\nline 2");
}

#[test]
fn sending_without_an_open_chat_is_a_readable_error() {
    let mut app = App::new(false, Zone::Fixed(0));
    app.update(Action::Started(me(true)));
    type_text(&mut app, "hello?");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    let notice = app.notice.clone().expect("an error notice");
    assert!(
        notice.error && notice.text.contains("add a contact"),
        "{notice:?}"
    );
    assert_eq!(app.composer.text(), "hello?", "the text is kept");
}

#[test]
fn unprotected_keys_are_pointed_out_at_start() {
    let mut app = App::new(false, Zone::Fixed(0));
    app.update(Action::Started(me(false)));
    let notice = app.notice.clone().expect("a notice");
    assert!(
        notice.text.contains("unprotected") && notice.text.contains("--passphrase-file"),
        "{notice:?}"
    );
}

#[test]
fn failed_calls_show_what_failed() {
    let mut app = started();
    type_text(&mut app, "x");
    app.update(key(KeyCode::Enter));
    app.update(Action::Failed {
        op: Op::Send,
        error: "the message is empty".into(),
    });
    let notice = app.notice.clone().expect("notice");
    assert!(notice.error);
    assert_eq!(notice.text, "could not send: the message is empty");
    assert_eq!(app.activity.sending, 0);
    // Esc clears it.
    app.update(key(KeyCode::Esc));
    assert!(app.notice.is_none());
}

#[test]
fn node_start_failure_is_shown_not_crashed() {
    let mut app = App::new(true, Zone::Fixed(0));
    app.update(Action::Failed {
        op: Op::Start,
        error: "data dir /x: permission denied".into(),
    });
    assert!(app.activity.stopped);
    assert!(
        app.notice
            .as_ref()
            .is_some_and(|n| n.text.contains("could not start the node"))
    );
}

#[test]
fn add_command_adds_and_opens_the_new_chat() {
    let mut app = started();
    type_text(&mut app, "/add BH1XYZ Soo");
    let effects = app.update(key(KeyCode::Enter));
    assert_eq!(
        effects,
        vec![Effect::AddContact {
            code: "BH1XYZ".into(),
            alias: Some("Soo".into())
        }]
    );
    assert_eq!(app.activity.adding, 1);
    let effects = app.update(Action::ContactAdded {
        peer_id: "12D3KooWSoo".into(),
    });
    assert_eq!(app.open.as_deref(), Some("12D3KooWSoo"));
    assert_eq!(app.focus, Focus::Composer, "ready to type");
    assert!(effects.contains(&Effect::LoadChats));
    assert!(effects.contains(&Effect::LoadContacts));
}

#[test]
fn nick_verify_quit_and_help_commands() {
    let mut app = started();
    type_text(&mut app, "/nick 봉화");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::SetName("봉화".into())]
    );
    app.update(Action::NameSet("봉화".into()));
    assert_eq!(app.me.as_ref().map(|m| m.name.as_str()), Some("봉화"));

    type_text(&mut app, "/verify");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::SafetyNumber(JUN.into())]
    );
    assert!(matches!(app.panel, Some(Panel::Safety { .. })));
    app.update(Action::SafetyNumber {
        peer: JUN.into(),
        number: "12345 67890".into(),
    });
    assert!(
        matches!(&app.panel, Some(Panel::Safety { number: Some(n), .. }) if n == "12345 67890")
    );
    assert_eq!(
        app.update(key(KeyCode::Char('v'))),
        vec![Effect::Verify(JUN.into())]
    );
    app.update(Action::Verified { peer: JUN.into() });
    assert!(matches!(
        app.panel,
        Some(Panel::Safety { verified: true, .. })
    ));
    app.update(key(KeyCode::Esc));

    type_text(&mut app, "/help");
    app.update(key(KeyCode::Enter));
    assert!(matches!(app.panel, Some(Panel::Help { .. })));
    app.update(key(KeyCode::Esc));

    type_text(&mut app, "/quit");
    app.update(key(KeyCode::Enter));
    assert!(!app.running);
}

#[test]
fn unknown_command_is_an_error_and_tab_completes() {
    let mut app = started();
    type_text(&mut app, "/frob");
    app.update(key(KeyCode::Enter));
    assert!(app.notice.as_ref().is_some_and(|n| n.error));
    app.composer.take();
    type_text(&mut app, "/ni");
    app.update(key(KeyCode::Tab));
    assert_eq!(app.composer.text(), "/nick ");
}

#[test]
fn question_mark_opens_help_only_when_not_typing() {
    let mut app = started();
    app.update(key(KeyCode::Char('?')));
    assert!(matches!(app.panel, Some(Panel::Help { .. })));
    app.update(key(KeyCode::Esc));
    type_text(&mut app, "why?");
    assert!(app.panel.is_none());
    assert_eq!(app.composer.text(), "why?");
}

#[test]
fn nearby_adds_with_one_key() {
    let mut app = started();
    app.update(key(KeyCode::Esc));
    assert_eq!(
        app.update(key(KeyCode::Char('n'))),
        vec![Effect::LoadNearby]
    );
    app.update(Action::Nearby(vec![NearbyPeer {
        peer_id: "12D3KooWSoo".into(),
        name: "수진".into(),
        contact_code: "BH1SOO".into(),
    }]));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::AddContact {
            code: "BH1SOO".into(),
            alias: None
        }]
    );
}

#[test]
fn add_contact_panel_takes_a_pasted_code() {
    let mut app = started();
    app.update(key(KeyCode::Esc));
    app.update(key(KeyCode::Char('a')));
    app.update(Action::Paste("BH1AB\nCD".into()));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::AddContact {
            code: "BH1ABCD".into(),
            alias: None
        }]
    );
}

#[test]
fn peers_come_and_go() {
    let mut app = started();
    app.update(Action::Node(Event::PeerConnected {
        peer_id: JUN.into(),
        via: Via::Direct,
    }));
    assert!(app.online.contains_key(JUN));
    app.update(Action::Node(Event::PeerDisconnected {
        peer_id: JUN.into(),
    }));
    assert!(!app.online.contains_key(JUN));
}

#[test]
fn the_status_bar_says_whether_others_can_reach_us() {
    let mut app = started();
    let relay = "12D3KooWRelay";
    assert_eq!(
        crate::ui::status::reach(&app, false),
        "",
        "nothing known yet"
    );
    app.update(Action::Node(Event::Reachability {
        status: Reachability::Private,
        addr: None,
    }));
    app.update(Action::Node(Event::RelayReservation {
        peer_id: relay.into(),
        reserved: true,
    }));
    assert_eq!(
        crate::ui::status::connectivity(&app),
        "LAN 0 · direct 0 · relay 0 · behind NAT · via 1 relay"
    );
    assert_eq!(crate::ui::status::reach(&app, true), " NAT S1");
    app.update(Action::Node(Event::RelayReservation {
        peer_id: relay.into(),
        reserved: false,
    }));
    app.update(Action::Node(Event::Reachability {
        status: Reachability::Public,
        addr: Some("/ip4/203.0.113.7/tcp/4001".into()),
    }));
    assert_eq!(crate::ui::status::reach(&app, false), " · reachable");
}

#[test]
fn lagging_reloads_everything() {
    let mut app = started();
    let effects = app.update(Action::Node(Event::Lagged { missed: 10 }));
    assert!(effects.contains(&Effect::LoadChats));
    assert!(effects.contains(&Effect::LoadMessages {
        chat: JUN.into(),
        before: None
    }));
}

#[test]
fn scrolling_is_clamped_and_asks_for_older_pages_at_the_top() {
    let mut app = started();
    app.update(Action::Resize {
        width: 60,
        height: 20,
    });
    let page: Vec<MessageInfo> = (0..HISTORY_PAGE as u8)
        .map(|n| {
            message(
                n,
                JUN,
                JUN,
                "line",
                1_000 + u64::from(n),
                MessageStatus::Delivered,
            )
        })
        .collect();
    app.update(Action::Messages {
        chat: JUN.into(),
        messages: page,
        older: false,
    });
    let max = app.max_scroll();
    assert!(max > 0);
    let mut asked = Vec::new();
    for _ in 0..200 {
        asked.extend(app.update(Action::ScrollUp));
    }
    assert_eq!(app.scroll, max);
    assert!(asked.contains(&Effect::LoadMessages {
        chat: JUN.into(),
        before: Some(format!("{:064x}", 0))
    }));
    app.update(key(KeyCode::PageDown));
    assert!(app.scroll < max);
}

#[test]
fn ctrl_c_quits_from_anywhere() {
    let mut app = started();
    app.update(key(KeyCode::Char('?')));
    app.update(ctrl('c'));
    assert!(!app.running);
}

#[test]
fn group_commands_create_invite_and_leave() {
    let group = "ab".repeat(32);
    let mut app = started();
    type_text(&mut app, "/group 가족");
    let effects = app.update(key(KeyCode::Enter));
    assert_eq!(effects, vec![Effect::GroupCreate("가족".into())]);

    // Not in a group: /invite and /leave explain themselves.
    type_text(&mut app, "/invite Jun");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    assert!(
        notice(&app).contains("open a group first"),
        "{}",
        notice(&app)
    );

    let effects = app.update(Action::GroupCreated {
        group: group.clone(),
    });
    assert!(effects.contains(&Effect::LoadChats));
    let mut chats = vec![chat(&group, "가족", 0, None)];
    chats[0].kind = ChatKind::Group;
    app.update(Action::Chats(chats));
    assert_eq!(app.open.as_deref(), Some(group.as_str()));

    type_text(&mut app, "/invite jun");
    let effects = app.update(key(KeyCode::Enter));
    assert_eq!(
        effects,
        vec![Effect::GroupAdd {
            group: group.clone(),
            member: JUN.into()
        }],
        "a contact by name, any case"
    );
    type_text(&mut app, "/invite nobody");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    assert!(notice(&app).contains("no contact called nobody"));
    type_text(&mut app, "/leave");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::GroupLeave(group)]
    );
}

fn notice(app: &App) -> String {
    app.notice
        .as_ref()
        .map(|n| n.text.clone())
        .unwrap_or_default()
}

#[test]
fn a_gap_in_a_chat_is_shown_until_it_closes() {
    let mut app = started();
    app.update(Action::Node(Event::MessagesMissing {
        chat: MINJI.into(),
        missing: 2,
    }));
    let notice = app.notice.clone().expect("a notice");
    assert!(
        notice
            .text
            .contains("2 message(s) from 민지 have not arrived yet"),
        "{notice:?}"
    );
    app.update(Action::Node(Event::MessagesMissing {
        chat: MINJI.into(),
        missing: 0,
    }));
    assert!(app.notice.is_none());
}
