//! Contact requests (accept, refuse) and the warning for a known name with another key.

use super::*;

/// Started, with a contact request from Eve (newest, so first in the list) open.
fn with_request(stranger: &str) -> App {
    let mut app = started();
    app.update(Action::Node(Event::ContactRequest {
        peer_id: stranger.into(),
        name: "Eve".into(),
    }));
    let mut request = chat(
        stranger,
        "Eve",
        1,
        Some(message(
            9,
            stranger,
            stranger,
            "hi",
            9_000,
            MessageStatus::Delivered,
        )),
    );
    request.request = true;
    let mut chats = app.chats.clone();
    chats.push(request);
    app.update(Action::Chats(chats));
    assert!(app.list[0].request);
    app.update(key(KeyCode::Esc));
    app.update(key(KeyCode::Char('k')));
    assert_eq!(app.open.as_deref(), Some(stranger));
    app
}

#[test]
fn accepting_a_request_asks_the_node_and_opens_the_chat_to_reply() {
    let stranger = "12D3KooWStranger";
    let mut app = with_request(stranger);

    assert_eq!(
        app.update(key(KeyCode::Char('y'))),
        vec![Effect::AcceptRequest(stranger.into())]
    );
    assert_eq!(app.activity.adding, 1, "the status bar shows the accept");
    assert!(app.panel.is_none(), "no code to paste any more");

    let effects = app.update(Action::RequestAccepted {
        peer_id: stranger.into(),
    });
    assert!(effects.contains(&Effect::LoadContacts));
    assert!(effects.contains(&Effect::LoadChats));
    assert_eq!(app.activity.adding, 0);
    assert_eq!(app.open.as_deref(), Some(stranger));
    assert_eq!(app.focus, Focus::Composer, "ready to type the reply");
    assert!(!app.list[0].request, "no longer shown as a request");
    let notice = app.notice.as_ref().expect("a notice");
    assert!(!notice.error && notice.text.contains("Eve is a contact now"));
}

#[test]
fn refusing_a_request_asks_the_node_and_removes_the_chat_once_it_is_done() {
    let stranger = "12D3KooWStranger";
    let mut app = with_request(stranger);

    assert_eq!(
        app.update(key(KeyCode::Char('x'))),
        vec![Effect::RefuseRequest(stranger.into())]
    );
    assert!(
        app.list.iter().any(|e| e.id == stranger),
        "nothing changes before the node has refused"
    );

    let effects = app.update(Action::RequestRefused {
        peer_id: stranger.into(),
    });
    assert!(effects.contains(&Effect::LoadChats));
    assert!(app.list.iter().all(|e| e.id != stranger));
    assert_eq!(
        app.open.as_deref(),
        Some(JUN),
        "the newest chat opens instead"
    );
    assert!(
        app.notice
            .as_ref()
            .is_some_and(|n| n.text.contains("refused Eve"))
    );
}

#[test]
fn a_failed_accept_or_refuse_is_a_readable_error() {
    let stranger = "12D3KooWStranger";
    let mut app = with_request(stranger);
    app.update(key(KeyCode::Char('y')));
    app.update(Action::Failed {
        op: Op::Accept,
        error: "the node has stopped".into(),
    });
    assert_eq!(app.activity.adding, 0);
    let notice = app.notice.clone().expect("a notice");
    assert!(notice.error);
    assert_eq!(
        notice.text,
        "could not accept the contact request: the node has stopped"
    );
    assert!(app.list.iter().any(|e| e.id == stranger && e.request));

    app.update(Action::Failed {
        op: Op::Refuse,
        error: "no such request".into(),
    });
    assert!(
        app.notice
            .as_ref()
            .is_some_and(|n| n.text.contains("refuse"))
    );
    assert!(app.list.iter().any(|e| e.id == stranger));
}

#[test]
fn accept_and_refuse_need_a_request_open() {
    let mut app = started();
    app.update(key(KeyCode::Esc));
    assert_eq!(app.update(key(KeyCode::Char('y'))), vec![]);
    assert!(app.notice.as_ref().is_some_and(|n| n.error));
    app.update(key(KeyCode::Esc));
    assert_eq!(app.update(key(KeyCode::Char('x'))), vec![]);
    assert!(app.notice.as_ref().is_some_and(|n| n.error));
}

/// A real contact code for a fresh key, under `name`.
fn code_named(name: &str) -> (String, String) {
    let identity = bonghwa_core::identity::Identity::generate().unwrap();
    let card = identity.card(name, vec![], 1_000);
    (card.to_code(), identity.peer_id().to_string())
}

#[test]
fn a_code_named_like_a_contact_but_with_another_key_is_a_warning_first() {
    let mut app = started();
    let (code, _) = code_named("민지");
    type_text(&mut app, &format!("/add {code}"));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![],
        "not added on the first Enter"
    );
    match &app.panel {
        Some(Panel::AddContact {
            input,
            clash: Some(clash),
        }) => {
            assert_eq!(input.text(), code);
            assert_eq!(clash.existing, "민지");
        }
        other => panic!("expected the add panel with a warning, got {other:?}"),
    }
    assert_eq!(app.activity.adding, 0);
    // Enter again, on the same code: the user has seen the warning.
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::AddContact {
            code: code.clone(),
            alias: None
        }]
    );
}

#[test]
fn the_key_warning_also_guards_the_add_panel_and_the_alias() {
    let mut app = started();
    // Their own name is new, but the local name asked for is a contact's.
    let (code, _) = code_named("Someone");
    type_text(&mut app, &format!("/add {code} jun"));
    assert_eq!(app.update(key(KeyCode::Enter)), vec![]);
    assert!(matches!(
        &app.panel,
        Some(Panel::AddContact { clash: Some(c), .. }) if c.existing == "Jun"
    ));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::AddContact {
            code,
            alias: Some("jun".into())
        }],
        "the alias survives the warning"
    );

    // Pasted into the panel: warned, and editing the code asks again.
    let (other, _) = code_named("JUN");
    app.update(key(KeyCode::Esc));
    app.update(key(KeyCode::Esc));
    app.update(key(KeyCode::Char('a')));
    app.update(Action::Paste(other.clone()));
    assert_eq!(app.update(key(KeyCode::Enter)), vec![]);
    assert!(matches!(
        &app.panel,
        Some(Panel::AddContact { clash: Some(c), .. }) if c.existing == "Jun"
    ));
    // An edited code is not the one warned about: it is checked again (this one no
    // longer reads as a code, so the node will say what is wrong with it).
    app.update(key(KeyCode::Backspace));
    let edited = other[..other.len() - 1].to_owned();
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::AddContact {
            code: edited,
            alias: None
        }]
    );
}

#[test]
fn codes_with_new_names_or_known_keys_add_at_once() {
    let mut app = started();
    let (code, _) = code_named("Bora");
    type_text(&mut app, &format!("/add {code}"));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::AddContact { code, alias: None }]
    );

    // A contact's own newer code (same key) under the same name is no clash.
    let identity = bonghwa_core::identity::Identity::generate().unwrap();
    let peer = identity.peer_id().to_string();
    let mut contacts = app.contacts.clone();
    contacts.push(contact(&peer, "Dana"));
    app.update(Action::Contacts(contacts));
    let newer = identity.card("Dana", vec![], 2_000).to_code();
    type_text(&mut app, &format!("/add {newer}"));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::AddContact {
            code: newer,
            alias: None
        }]
    );
}

#[test]
fn a_nearby_peer_named_like_a_contact_is_a_warning_first() {
    let mut app = started();
    let (code, peer) = code_named("Jun");
    app.update(Action::Nearby(vec![NearbyPeer {
        peer_id: peer,
        name: "Jun".into(),
        contact_code: code.clone(),
    }]));
    app.update(key(KeyCode::Esc));
    app.update(key(KeyCode::Char('n')));
    assert_eq!(app.update(key(KeyCode::Enter)), vec![]);
    assert!(matches!(
        &app.panel,
        Some(Panel::AddContact { clash: Some(c), .. }) if c.existing == "Jun"
    ));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        vec![Effect::AddContact { code, alias: None }]
    );
}
