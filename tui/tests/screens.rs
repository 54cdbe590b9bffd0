//! Whole screens drawn with `TestBackend`, compared to text snapshots in
//! `tests/snapshots/`. Set `UPDATE_SNAPSHOTS=1` to rewrite them after a deliberate change
//! (then read the diff).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers panic on setup failure

mod common;

use std::path::PathBuf;

use bonghwa_cli::app::{Action, App, KeyCode};
use bonghwa_cli::ui;
use bonghwa_core::node::ContactInfo;
use common::{JUN, MINJI, key, rows, world};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use unicode_width::UnicodeWidthChar;

fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|frame| ui::draw(frame, app)).expect("draw");
    let mut text = rows(terminal.backend().buffer()).join("\n");
    text.push('\n');
    text
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "screen {name} differs from {}\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[test]
fn chat_screen_80x24() {
    let app = world(80, 24);
    check("chat_80x24", &screen(&app, 80, 24));
}

#[test]
fn chat_screen_60x20() {
    let app = world(60, 20);
    check("chat_60x20", &screen(&app, 60, 20));
}

#[test]
fn help_panel_60x20() {
    let mut app = world(60, 20);
    app.update(key(KeyCode::F(1)));
    check("help_60x20", &screen(&app, 60, 20));
}

#[test]
fn safety_number_80x24() {
    let mut app = world(80, 24);
    for c in "/verify".chars() {
        app.update(key(KeyCode::Char(c)));
    }
    app.update(key(KeyCode::Enter));
    app.update(Action::SafetyNumber {
        peer: common::MINJI.into(),
        number: "12345 67890 12345 67890 12345 67890 12345 67890 12345 67890 12345 67890".into(),
    });
    check("safety_80x24", &screen(&app, 80, 24));
}

#[test]
fn error_notice_and_multiline_composer_60x20() {
    let mut app = world(60, 20);
    app.update(Action::Failed {
        op: bonghwa_cli::app::Op::Connect,
        error: "could not connect to /ip4/10.0.0.1/tcp/1: no answer within 20 s".into(),
    });
    app.update(Action::Paste("첫 줄\n둘째 줄\nthird line".into()));
    check("notice_composer_60x20", &screen(&app, 60, 20));
}

#[test]
fn switching_to_a_chat_with_unread_messages() {
    let mut app = world(80, 24);
    app.update(key(KeyCode::Esc));
    app.update(key(KeyCode::Char('j')));
    assert_eq!(app.open.as_deref(), Some(JUN));
    let text = screen(&app, 80, 24);
    assert!(
        text.contains("No messages yet") || text.contains("Jun"),
        "{text}"
    );
}

#[test]
fn every_size_down_to_60x20_draws_without_panicking() {
    let app = world(60, 20);
    for (w, h) in [(60, 20), (61, 21), (100, 40), (20, 5), (1, 1), (0, 0)] {
        let mut app = app.clone();
        app.update(Action::Resize {
            width: w,
            height: h,
        });
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        terminal.draw(|frame| ui::draw(frame, &app)).expect("draw");
    }
}

/// The words drawn in columns `left..left + width` (a centred panel), borders dropped and
/// rows joined, so a sentence reads the same however the panel wrapped it.
fn words_in(screen: &str, left: usize, width: usize) -> String {
    let mut words = Vec::new();
    for row in screen.lines() {
        let mut column = 0;
        let mut kept = String::new();
        for c in row.chars() {
            if (left..left + width).contains(&column) {
                kept.push(c);
            }
            column += c.width().unwrap_or(0).max(1);
        }
        words.extend(
            kept.replace(['│', '┌', '┐', '└', '┘', '─'], " ")
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    words.join(" ")
}

#[test]
fn adding_a_different_key_under_a_known_name_shows_the_warning() {
    let mut app = world(80, 24);
    let identity = bonghwa_core::identity::Identity::generate().expect("key");
    let code = identity.card("민지", vec![], 1).to_code();
    app.update(Action::Paste(format!("/add {code}")));
    app.update(key(KeyCode::Enter));
    let shown = words_in(&screen(&app, 80, 24), 8, 64);
    assert!(
        shown.contains("⚠ this is a different key than the contact you already have named 민지"),
        "{shown}"
    );
    assert!(
        shown.contains("Enter add as a new contact anyway"),
        "{shown}"
    );
}

#[test]
fn the_safety_number_says_a_new_key_is_a_new_contact_and_warns_of_a_namesake() {
    let mut app = world(80, 24);
    app.update(Action::Paste("/verify".into()));
    app.update(key(KeyCode::Enter));
    let shown = words_in(&screen(&app, 80, 24), 15, 50);
    assert!(
        shown.contains(
            "Their key is their peer id: a new key arrives as a new contact, never as this one."
        ),
        "{shown}"
    );
    assert!(!shown.contains("⚠"), "{shown}");

    let mut contacts = app.contacts.clone();
    contacts.push(ContactInfo {
        peer_id: "12D3KooWImpostorImpostorImpostorImpostorImpostor".into(),
        name: "민지".into(),
        online: false,
        verified: false,
    });
    app.update(Action::Contacts(contacts));
    let shown = words_in(&screen(&app, 80, 24), 15, 50);
    assert!(
        shown.contains("⚠ You have another contact named 민지 with a different key"),
        "{shown}"
    );
    assert_eq!(app.open.as_deref(), Some(MINJI));
}
