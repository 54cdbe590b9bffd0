//! Whole screens drawn with `TestBackend`, compared to text snapshots in
//! `tests/snapshots/`. Set `UPDATE_SNAPSHOTS=1` to rewrite them after a deliberate change
//! (then read the diff).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers panic on setup failure

mod common;

use std::path::PathBuf;

use bonghwa_cli::app::{Action, App, KeyCode};
use bonghwa_cli::ui;
use common::{JUN, key, rows, world};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

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
