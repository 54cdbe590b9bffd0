//! Panels drawn over the chat: help, add contact, own code with QR, safety number, nearby.

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::qr::qr_rows;
use super::text::{truncate, width, wrap};
use crate::app::command::COMMANDS;
use crate::app::keys::{KEYS, MARKS};
use crate::app::{App, Clash, Composer, Panel};

/// The warning for a code or request whose name is a contact's but whose key (peer id) is
/// not: in Bonghwa a changed key is a different peer, so it is never the contact itself.
pub fn key_clash_text(existing: &str) -> String {
    format!("this is a different key than the contact you already have named {existing}")
}

/// A rectangle of at most `w`×`h` centred in `area`.
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn block(title: &str) -> Block<'static> {
    Block::bordered()
        .title(format!(" {title} "))
        .title_bottom(" Esc close ")
        .border_style(Style::new().fg(Color::Yellow))
}

/// Every line of the help panel for a panel `width` columns wide (inside its border):
/// a table when wide enough, else each key over its description.
pub fn help_lines(width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width);
    let heading = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
    let key_style = Style::new().fg(Color::Cyan);
    let table = width >= 70;
    let mut lines = Vec::new();
    let row = |lines: &mut Vec<Line<'static>>, keys: &str, what: &str, column: usize| {
        if table {
            lines.push(Line::from(vec![
                Span::styled(format!("  {keys:<column$}"), key_style),
                Span::raw(what.to_owned()),
            ]));
        } else {
            lines.push(Line::styled(format!("  {keys}"), key_style));
            for part in wrap(what, width.saturating_sub(6), width.saturating_sub(6)) {
                lines.push(Line::raw(format!("      {part}")));
            }
        }
    };
    let mut context = "";
    for (place, keys, what) in KEYS {
        if *place != context {
            context = place;
            if !lines.is_empty() {
                lines.push(Line::raw(""));
            }
            let title = if *place == "anywhere" {
                "Anywhere".to_owned()
            } else {
                format!("In the {place}")
            };
            lines.push(Line::styled(title, heading));
        }
        row(&mut lines, keys, what, 28);
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Commands (Tab completes)", heading));
    for (name, args, what) in COMMANDS {
        row(&mut lines, &format!("{name} {args}"), what, 28);
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Delivery marks", heading));
    for (mark, what) in MARKS {
        row(&mut lines, mark, what, 10);
    }
    lines
}

/// The help panel's rectangle on a screen of `area`.
pub fn help_area(area: Rect) -> Rect {
    centered(area, 84, area.height)
}

/// Draws the open panel, if any, over `area`.
pub fn draw(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let Some(panel) = &app.panel else { return };
    match panel {
        Panel::Help { scroll } => {
            let rect = help_area(area);
            let lines = help_lines(rect.width.saturating_sub(2));
            let inner_height = usize::from(rect.height.saturating_sub(2));
            let scroll = (*scroll).min(lines.len().saturating_sub(inner_height));
            frame.render_widget(Clear, rect);
            let title = if lines.len() > inner_height {
                "Help · ↑↓ scroll"
            } else {
                "Help"
            };
            frame.render_widget(
                Paragraph::new(lines)
                    .block(block(title))
                    .scroll((u16::try_from(scroll).unwrap_or(u16::MAX), 0)),
                rect,
            );
        }
        Panel::AddContact { input, clash } => draw_add_contact(frame, area, input, clash.as_ref()),
        Panel::MyCode { text_only } => draw_my_code(frame, app, area, *text_only),
        Panel::Safety {
            peer,
            name,
            number,
            verified,
        } => {
            let namesake = app.name_clash(peer, name);
            let rect = centered(area, 50, if namesake.is_some() { 17 } else { 14 });
            let mut lines = vec![
                Line::raw(format!("Compare this number with {name},")),
                Line::raw("in person or on a call you trust:"),
                Line::raw(""),
            ];
            match number {
                Some(number) => {
                    let groups: Vec<&str> = number.split(' ').collect();
                    for row in groups.chunks(4) {
                        lines.push(Line::styled(
                            format!("  {}", row.join("  ")),
                            Style::new().add_modifier(Modifier::BOLD),
                        ));
                    }
                }
                None => lines.push(Line::raw("  asking the node…")),
            }
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                "Their key is their peer id: a new key arrives as a new contact, never as this one.",
                Style::new().fg(Color::DarkGray),
            ));
            if let Some(other) = namesake {
                lines.push(Line::styled(
                    format!(
                        "⚠ You have another contact named {} with a different key: not the same person's key.",
                        other.name
                    ),
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                ));
            }
            lines.push(if *verified {
                Line::styled("✓ verified", Style::new().fg(Color::Green))
            } else {
                Line::styled(
                    "not verified · press v when the numbers match",
                    Style::new().fg(Color::Yellow),
                )
            });
            frame.render_widget(Clear, rect);
            frame.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(block("Safety number")),
                rect,
            );
        }
        Panel::Nearby { cursor } => {
            let rect = centered(area, 56, 14);
            let mut lines = Vec::new();
            if !app.mdns {
                lines.push(Line::raw("LAN discovery is off (started with --no-mdns)."));
            } else if app.nearby.is_empty() {
                lines.push(Line::raw("Nobody found on this LAN yet."));
                lines.push(Line::raw(
                    "Others appear here when they run Bonghwa nearby.",
                ));
            }
            let inner_w = usize::from(rect.width.saturating_sub(4));
            for (i, peer) in app.nearby.iter().enumerate() {
                let known = app.contacts.iter().any(|c| c.peer_id == peer.peer_id);
                let tag = if known { " (contact)" } else { "" };
                let text = truncate(&format!("{}{tag}", peer.name), inner_w);
                let style = if i == *cursor {
                    Style::new().bg(Color::Blue).fg(Color::White)
                } else {
                    Style::new()
                };
                lines.push(Line::styled(format!("  {text}"), style));
            }
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                "Enter add · r refresh · ↑↓ move",
                Style::new().fg(Color::DarkGray),
            ));
            frame.render_widget(Clear, rect);
            frame.render_widget(Paragraph::new(lines).block(block("Nearby")), rect);
        }
    }
}

fn draw_add_contact(frame: &mut Frame<'_>, area: Rect, input: &Composer, clash: Option<&Clash>) {
    // The warning counts only while the code it was about is still the one in the box.
    let clash = clash.filter(|c| c.code == input.text().trim());
    let rect = centered(area, 64, if clash.is_some() { 16 } else { 12 });
    let inner_w = usize::from(rect.width.saturating_sub(2)).max(4);
    let mut lines: Vec<Line<'static>> = wrap(
        "Paste their contact code (it starts with BH1):",
        inner_w,
        inner_w,
    )
    .into_iter()
    .map(Line::raw)
    .collect();
    let prompt_rows = lines.len();
    let (rows, (cx, cy)) = super::composer::layout(input.text(), input.cursor(), inner_w);
    for row in rows {
        lines.push(Line::styled(row, Style::new().fg(Color::Cyan)));
    }
    lines.push(Line::raw(""));
    if let Some(clash) = clash {
        let warning = format!(
            "⚠ {}. A contact's key is their identity: this is not the {} you know.",
            key_clash_text(&clash.existing),
            clash.existing
        );
        for row in wrap(&warning, inner_w, inner_w) {
            lines.push(Line::styled(
                row,
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            ));
        }
        lines.push(Line::raw(""));
    }
    lines.push(Line::styled(
        if clash.is_some() {
            "Enter add as a new contact anyway · Esc cancel"
        } else {
            "Enter add · Esc cancel"
        },
        Style::new().fg(Color::DarkGray),
    ));
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(block("Add contact")), rect);
    let x = rect.x + 1 + u16::try_from(cx).unwrap_or(0);
    let y = rect.y + 1 + u16::try_from(prompt_rows + cy).unwrap_or(0);
    if x < rect.right() && y < rect.bottom() {
        frame.set_cursor_position(Position::new(x, y));
    }
}

fn draw_my_code(frame: &mut Frame<'_>, app: &App, area: Rect, text_only: bool) {
    let Some(me) = &app.me else { return };
    let qr = qr_rows(&me.contact_code).unwrap_or_default();
    let qr_w = qr.first().map_or(0, |r| width(r));
    let inner_w = usize::from(area.width.saturating_sub(2)).min(qr_w.max(60));
    let code_rows = wrap(&me.contact_code, inner_w, inner_w);
    let room = usize::from(area.height).saturating_sub(2);
    let text_h = code_rows.len() + 3;
    let qr_fits = qr_w > 0 && qr_w <= inner_w && qr.len() < room;
    let (show_text, show_qr) = if text_only || !qr_fits {
        (true, false)
    } else {
        (qr.len() + text_h <= room, true)
    };
    let mut lines = Vec::new();
    if show_text {
        lines.push(Line::raw(format!(
            "Give this code to people who should reach {}:",
            me.name
        )));
        for row in code_rows {
            lines.push(Line::styled(row, Style::new().fg(Color::Cyan)));
        }
        lines.push(Line::raw(""));
    }
    if show_qr {
        let qr_style = Style::new().fg(Color::Black).bg(Color::White);
        let pad = " ".repeat((inner_w - qr_w) / 2);
        for row in qr.iter().cloned() {
            lines.push(Line::from(vec![
                Span::raw(pad.clone()),
                Span::styled(row, qr_style),
            ]));
        }
    }
    let qr_h = qr.len();
    let hint = match (show_text, show_qr) {
        (true, true) => "scan the QR code or copy the text".to_owned(),
        (false, true) => "t: show the code as text".to_owned(),
        _ if qr_fits => "t: show the QR code".to_owned(),
        _ => format!(
            "make the window {}×{} or larger for the QR code",
            qr_w + 2,
            qr_h + 3
        ),
    };
    lines.push(Line::styled(hint, Style::new().fg(Color::DarkGray)));
    let rect = centered(
        area,
        u16::try_from(inner_w + 2).unwrap_or(u16::MAX),
        u16::try_from(lines.len() + 2).unwrap_or(u16::MAX),
    );
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(block("Your contact code")),
        rect,
    );
}
