//! Shared fixtures for the screen and widget tests: a small, fixed world with Korean names.

#![allow(dead_code, missing_docs)]

use bonghwa_cli::app::{Action, App, KeyCode, KeyEvent, KeyModifiers, Zone};
use bonghwa_core::event::{Reachability, Via};
use bonghwa_core::model::MessageStatus;
use bonghwa_core::node::{ChatInfo, ChatKind, ContactInfo, IdentityInfo, MessageInfo};
use ratatui::buffer::Buffer;
use unicode_width::UnicodeWidthStr;

pub(crate) const ME: &str = "12D3KooWMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMe";
pub(crate) const MINJI: &str = "12D3KooWMinjiMinjiMinjiMinjiMinjiMinjiMinjiMinji";
pub(crate) const JUN: &str = "12D3KooWJunJunJunJunJunJunJunJunJunJunJunJunJun";

/// 2024-05-06 09:00 UTC.
pub(crate) const MORNING: u64 = 1_714_986_000_000;
pub(crate) const DAY: u64 = 86_400_000;

pub(crate) fn message(
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

pub(crate) fn key(code: KeyCode) -> Action {
    Action::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

/// 민지 (verified, online, open) with a Korean conversation over two days, Jun with 2 unread.
pub(crate) fn world(width: u16, height: u16) -> App {
    let mut app = App::new(true, Zone::Fixed(0));
    app.update(Action::Resize { width, height });
    app.update(Action::Started(IdentityInfo {
        peer_id: ME.into(),
        name: "지우".into(),
        contact_code: "BH1TESTCODE".into(),
        addrs: vec![],
        reachability: Reachability::Unknown,
        keys_protected: true,
    }));
    app.update(Action::Contacts(vec![
        ContactInfo {
            peer_id: MINJI.into(),
            name: "민지".into(),
            online: true,
            verified: true,
        },
        ContactInfo {
            peer_id: JUN.into(),
            name: "Jun".into(),
            online: false,
            verified: false,
        },
    ]));
    let history = vec![
        message(
            1,
            MINJI,
            MINJI,
            "안녕! 오늘 회의 몇 시야?",
            MORNING,
            MessageStatus::Delivered,
        ),
        message(
            2,
            MINJI,
            ME,
            "3시에 봐요 🙂",
            MORNING + 60_000,
            MessageStatus::Read,
        ),
        message(
            3,
            MINJI,
            MINJI,
            "카톡이 또 안 돼서 여기로 연락했어. 이 메시지는 조금 길어서 줄이 바뀌어야 해요.",
            MORNING + DAY,
            MessageStatus::Delivered,
        ),
        message(
            4,
            MINJI,
            ME,
            "괜찮아요\nBonghwa works",
            MORNING + DAY + 120_000,
            MessageStatus::Delivered,
        ),
        message(
            5,
            MINJI,
            ME,
            "곧 갈게요",
            MORNING + DAY + 180_000,
            MessageStatus::Pending,
        ),
    ];
    app.update(Action::Chats(vec![
        ChatInfo {
            id: MINJI.into(),
            kind: ChatKind::Direct,
            name: "민지".into(),
            unread: 0,
            last: history.last().cloned(),
            request: false,
        },
        ChatInfo {
            id: JUN.into(),
            kind: ChatKind::Direct,
            name: "Jun".into(),
            unread: 2,
            last: Some(message(
                9,
                JUN,
                JUN,
                "hey",
                MORNING,
                MessageStatus::Delivered,
            )),
            request: false,
        },
    ]));
    app.update(Action::Messages {
        chat: MINJI.into(),
        messages: history,
        older: false,
    });
    app.update(Action::Peers(vec![bonghwa_core::node::PeerInfo {
        peer_id: MINJI.into(),
        addrs: vec![],
        via: Via::Direct,
        name: None,
    }]));
    app
}

/// The buffer's text, one string per row, wide characters counted once.
pub(crate) fn rows(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (area.top()..area.bottom())
        .map(|y| {
            let mut row = String::new();
            let mut x = area.left();
            while x < area.right() {
                let symbol = buffer[(x, y)].symbol();
                row.push_str(symbol);
                x += u16::try_from(symbol.width().max(1)).unwrap_or(1);
            }
            row
        })
        .collect()
}
