//! Widgets rendered into a ratatui `Buffer` on their own.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers panic on setup failure

mod common;

use bonghwa_cli::app::{Action, KeyCode};
use bonghwa_cli::ui::chat_list::ChatList;
use bonghwa_cli::ui::history::HistoryView;
use bonghwa_cli::ui::qr::qr_rows;
use bonghwa_cli::ui::status::StatusBar;
use common::{JUN, MINJI, key, rows, world};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::widgets::Widget;

fn render(widget: impl Widget, width: u16, height: u16) -> Buffer {
    let mut buffer = Buffer::empty(Rect::new(0, 0, width, height));
    widget.render(buffer.area, &mut buffer);
    buffer
}

#[test]
fn chat_list_shows_online_marker_names_and_unread_counts() {
    let app = world(80, 24);
    let buffer = render(ChatList { app: &app }, 16, 3);
    assert_eq!(
        rows(&buffer),
        ["● 민지          ", "○ Jun          2", "                "]
    );
    assert_eq!(buffer[(0, 0)].fg, Color::Green, "online marker is green");
}

#[test]
fn chat_list_marks_requests_and_keeps_the_selection_visible() {
    let mut app = world(80, 24);
    let mut chats = app.chats.clone();
    for n in 0..5u8 {
        let id = format!("12D3KooWStranger{n}");
        chats.push(bonghwa_core::node::ChatInfo {
            id: id.clone(),
            kind: bonghwa_core::node::ChatKind::Direct,
            name: format!("낯선 사람 {n}"),
            unread: 0,
            last: None,
            request: true,
        });
    }
    app.update(Action::Chats(chats));
    app.update(key(KeyCode::Esc));
    for _ in 0..6 {
        app.update(key(KeyCode::Char('j')));
    }
    let lines = rows(&render(ChatList { app: &app }, 20, 3));
    assert!(lines[2].starts_with("? 낯선 사람 4"), "{lines:?}");
    assert!(lines[2].ends_with("req"), "{lines:?}");
}

#[test]
fn history_shows_day_separators_names_and_marks_wrapped_by_width() {
    let app = world(80, 24);
    let lines = rows(&render(HistoryView { app: &app }, 30, 14));
    let text = lines.join("\n");
    assert!(text.contains(" Mon 6 May 2024 "), "{text}");
    assert!(text.contains("09:01 지우: 3시에 봐요 🙂 ✓✓"), "{text}");
    assert!(text.contains("곧 갈게요 …"), "pending mark:\n{text}");
    for line in &lines {
        assert!(
            unicode_width::UnicodeWidthStr::width(line.as_str()) <= 30,
            "{line:?}"
        );
    }
}

#[test]
fn history_scrolled_up_says_how_much_is_below() {
    let mut app = world(60, 20);
    app.scroll = 3;
    let lines = rows(&render(HistoryView { app: &app }, 40, 4));
    assert!(lines[3].contains("↓ 3 more"), "{lines:?}");
}

#[test]
fn failed_mark_is_red() {
    let mut app = world(80, 24);
    app.update(Action::Messages {
        chat: JUN.into(),
        messages: vec![common::message(
            7,
            JUN,
            common::ME,
            "gone",
            common::MORNING,
            bonghwa_core::model::MessageStatus::Failed,
        )],
        older: false,
    });
    app.update(Action::Key(bonghwa_cli::app::KeyEvent::new(
        KeyCode::Down,
        bonghwa_cli::app::KeyModifiers::ALT,
    )));
    assert_eq!(app.open.as_deref(), Some(JUN));
    let buffer = render(HistoryView { app: &app }, 40, 2);
    let lines = rows(&buffer);
    assert!(lines[1].contains("gone ✗ failed"), "{lines:?}");
    let x = lines[1]
        .find('✗')
        .map(|i| unicode_width::UnicodeWidthStr::width(&lines[1][..i]))
        .expect("mark");
    assert_eq!(buffer[(u16::try_from(x).expect("x"), 1)].fg, Color::Red);
}

#[test]
fn status_bar_says_who_how_connected_and_what_is_happening() {
    let app = world(80, 24);
    let line = rows(&render(StatusBar { app: &app }, 80, 1)).remove(0);
    assert!(
        line.starts_with(" 봉화 지우 │ 1 peer │ LAN 0 · direct 1 · relay 0 │ online"),
        "{line}"
    );
    assert!(line.ends_with("? help "), "{line}");
    let narrow = rows(&render(StatusBar { app: &app }, 40, 1)).remove(0);
    assert!(
        narrow.contains("online"),
        "activity survives narrowing: {narrow}"
    );

    let mut starting = bonghwa_cli::app::App::new(true, bonghwa_cli::app::Zone::Fixed(0));
    starting.update(Action::Resize {
        width: 80,
        height: 24,
    });
    let line = rows(&render(StatusBar { app: &starting }, 80, 1)).remove(0);
    assert!(line.contains("starting the node…"), "{line}");
    let _ = MINJI;
}

#[test]
fn qr_code_is_square_and_framed_by_a_quiet_zone() {
    let rows = qr_rows("BH1FJFQKOK35WQOIIKV7RNU6DTPODQ6SPNANPMORLEY5LS6DM6LIRAZI4NX7").expect("qr");
    let width = rows[0].chars().count();
    assert!(rows.iter().all(|r| r.chars().count() == width));
    assert_eq!(rows.len(), width.div_ceil(2));
    assert!(
        rows.iter()
            .all(|r| r.starts_with("  ") && r.ends_with("  ")),
        "side quiet zone"
    );
}
