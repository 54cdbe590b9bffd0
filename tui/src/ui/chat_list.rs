//! The chat list: one row per chat with an online marker, the name and the unread count.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::text::{pad, width};
use crate::app::{App, Focus};

/// The list of chats, newest activity first; the open chat is highlighted.
#[derive(Debug)]
pub struct ChatList<'a> {
    /// The state to show.
    pub app: &'a App,
}

impl Widget for ChatList<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        if area.height == 0 || area.width < 4 {
            return;
        }
        if app.list.is_empty() {
            let hint = if app.activity.starting {
                "starting…"
            } else {
                "no chats yet"
            };
            buf.set_string(
                area.x,
                area.y,
                pad(hint, usize::from(area.width)),
                Style::new().fg(Color::DarkGray),
            );
            return;
        }
        let height = usize::from(area.height);
        let selected = app
            .open
            .as_ref()
            .and_then(|id| app.list.iter().position(|e| &e.id == id));
        // Keep the selected row in view.
        let first = selected.map_or(0, |s| s.saturating_sub(height - 1));
        for (row, entry) in app.list.iter().skip(first).take(height).enumerate() {
            let y = area.y + u16::try_from(row).unwrap_or(0);
            let (marker, marker_style) = if entry.request {
                (
                    "?",
                    Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
                )
            } else if app.online.contains_key(&entry.id) {
                ("●", Style::new().fg(Color::Green))
            } else {
                ("○", Style::new().fg(Color::DarkGray))
            };
            let badge = if entry.unread > 0 {
                format!(" {}", entry.unread.min(999))
            } else if entry.request {
                " req".to_owned()
            } else {
                String::new()
            };
            let name_room = usize::from(area.width).saturating_sub(2 + width(&badge));
            let is_selected = selected == Some(first + row);
            let mut style = Style::new();
            if entry.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            if is_selected {
                style = if app.focus == Focus::ChatList && app.panel.is_none() {
                    style.bg(Color::Blue).fg(Color::White)
                } else {
                    style.add_modifier(Modifier::REVERSED)
                };
            }
            let line = Line::from(vec![
                Span::styled(marker, marker_style),
                Span::styled(" ", style),
                Span::styled(pad(&entry.name, name_room), style),
                Span::styled(badge, style.fg(Color::Yellow).add_modifier(Modifier::BOLD)),
            ]);
            buf.set_line(area.x, y, &line, area.width);
        }
    }
}
