//! The open chat's history: day separators, `HH:MM name: text` rows wrapped to the width,
//! and a delivery mark after each outgoing message.

use bonghwa_core::model::MessageStatus;
use bonghwa_core::node::MessageInfo;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::text::{Moment, truncate, width, wrap};
use crate::app::App;

/// Columns a continuation line is indented by (the width of `HH:MM `).
const INDENT: usize = 6;
/// Widest sender name shown before it is cut.
const NAME_COLUMNS: usize = 14;

/// The mark after an outgoing message, and its colour.
pub fn delivery_mark(status: MessageStatus) -> (&'static str, Color) {
    match status {
        MessageStatus::Pending => ("…", Color::DarkGray),
        MessageStatus::Sent => ("✓", Color::Gray),
        MessageStatus::Delivered => ("✓✓", Color::Green),
        MessageStatus::Read => ("✓✓ read", Color::Cyan),
        MessageStatus::Failed => ("✗ failed", Color::Red),
    }
}

/// Every line of the open chat's history at `width` columns, oldest first.
pub fn history_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width).max(INDENT + 4);
    let me = app.me.as_ref().map(|m| m.peer_id.as_str());
    let mut lines = Vec::new();
    let mut last_day = None;
    for message in app.open_history() {
        let moment = Moment::at(message.sent_at, app.zone);
        if last_day != Some(moment.day) {
            last_day = Some(moment.day);
            lines.push(day_separator(&moment.date(), width));
        }
        let outgoing = Some(message.from.as_str()) == me;
        let name = truncate(&app.name_of(&message.from), NAME_COLUMNS);
        lines.extend(message_lines(message, &moment, &name, outgoing, width));
    }
    lines
}

fn day_separator(date: &str, width: usize) -> Line<'static> {
    let label = format!(" {date} ");
    let side = width.saturating_sub(super::text::width(&label)) / 2;
    let text = format!("{}{label}{}", "─".repeat(side), "─".repeat(side));
    Line::styled(text, Style::new().fg(Color::DarkGray))
}

fn message_lines(
    message: &MessageInfo,
    moment: &Moment,
    name: &str,
    outgoing: bool,
    width: usize,
) -> Vec<Line<'static>> {
    let time_style = Style::new().fg(Color::DarkGray);
    let name_style = if outgoing {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
    };
    let prefix = format!("{} ", moment.clock());
    let head = format!("{name}: ");
    let first_room = width.saturating_sub(super::text::width(&prefix) + super::text::width(&head));
    let rest_room = width - INDENT;
    let mark = outgoing.then(|| delivery_mark(message.status));
    let mut text = message.text.clone();
    if let Some((mark, _)) = mark {
        text.push(' ');
        text.push_str(mark);
    }
    let mut rows: Vec<String> = Vec::new();
    for (i, paragraph) in text.split('\n').enumerate() {
        let first = if i == 0 { first_room } else { rest_room };
        rows.extend(wrap(paragraph, first, rest_room));
    }
    let last = rows.len() - 1;
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut spans = if i == 0 {
                vec![
                    Span::styled(prefix.clone(), time_style),
                    Span::styled(head.clone(), name_style),
                ]
            } else {
                vec![Span::raw(" ".repeat(INDENT))]
            };
            match mark {
                Some((mark, color)) if i == last && row.ends_with(mark) => {
                    let body = &row[..row.len() - mark.len()];
                    spans.push(Span::raw(body.to_owned()));
                    spans.push(Span::styled(mark.to_owned(), Style::new().fg(color)));
                }
                _ => spans.push(Span::raw(row)),
            }
            Line::from(spans)
        })
        .collect()
}

/// The history pane: the newest lines at the bottom, `scroll` lines up from there.
#[derive(Debug)]
pub struct HistoryView<'a> {
    /// The state to show.
    pub app: &'a App,
}

impl Widget for HistoryView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        if area.height == 0 || area.width == 0 {
            return;
        }
        let lines = history_lines(app, area.width);
        if lines.is_empty() {
            let hint = if app.open.is_none() {
                vec![
                    Line::raw("No chats yet."),
                    Line::raw(""),
                    Line::raw("Add someone: Esc then a, or type /add CODE."),
                    Line::raw("Give yours: Esc then c (text and QR)."),
                    Line::raw("People on this LAN: Esc then n."),
                ]
            } else {
                vec![Line::raw("No messages yet. Say hello!")]
            };
            Paragraph::new(hint)
                .style(Style::new().fg(Color::DarkGray))
                .render(area, buf);
            return;
        }
        let height = usize::from(area.height);
        let max_scroll = lines.len().saturating_sub(height);
        let scroll = app.scroll.min(max_scroll);
        let end = lines.len() - scroll;
        let start = end.saturating_sub(height);
        // Short histories sit at the bottom, next to the composer.
        let top = area.y + u16::try_from(height - (end - start)).unwrap_or(0);
        for (row, line) in lines[start..end].iter().enumerate() {
            let y = top + u16::try_from(row).unwrap_or(0);
            buf.set_line(area.x, y, line, area.width);
        }
        if scroll > 0 {
            let tag = format!(" ↓ {scroll} more ");
            let x = area
                .right()
                .saturating_sub(u16::try_from(width(&tag)).unwrap_or(0));
            buf.set_string(
                x,
                area.bottom() - 1,
                tag,
                Style::new().fg(Color::Black).bg(Color::Yellow),
            );
        }
    }
}
