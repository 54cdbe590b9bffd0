//! Drawing: [`draw`] is a pure function of [`App`]; widgets live in the submodules.

pub mod chat_list;
pub mod composer;
pub mod history;
pub mod panel;
pub mod qr;
pub mod status;
pub mod text;

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::app::{App, Focus};
use chat_list::ChatList;
use history::HistoryView;
use status::StatusBar;
use text::{truncate, width};

/// Where each part of the screen goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    /// The chat list pane, with its border.
    pub list: Rect,
    /// The history pane, with its border.
    pub history: Rect,
    /// The request banner inside the history pane, for contact requests.
    pub banner: Option<Rect>,
    /// Where history lines go.
    pub history_text: Rect,
    /// The notice line, when there is a notice.
    pub notice: Option<Rect>,
    /// The composer pane, with its border.
    pub composer: Rect,
    /// The status bar.
    pub status: Rect,
}

/// Splits the screen.
pub fn areas(area: Rect, app: &App) -> Areas {
    let status = Rect::new(
        area.x,
        area.bottom().saturating_sub(1),
        area.width,
        area.height.min(1),
    );
    let inner_w = usize::from(area.width.saturating_sub(2));
    let composer_rows = composer::height(app.composer.text(), app.composer.cursor(), inner_w);
    let composer_h = u16::try_from(composer_rows + 2).unwrap_or(3);
    let composer_y = status.y.saturating_sub(composer_h).max(area.y);
    let composer = Rect::new(area.x, composer_y, area.width, status.y - composer_y);
    let notice = app
        .notice
        .as_ref()
        .filter(|_| composer_y > area.y)
        .map(|_| Rect::new(area.x, composer_y - 1, area.width, 1));
    let main_bottom = notice.map_or(composer_y, |n| n.y);
    let main = Rect::new(area.x, area.y, area.width, main_bottom - area.y);
    let list_w = (area.width / 4).clamp(16, 28).min(main.width);
    let list = Rect::new(main.x, main.y, list_w, main.height);
    let history = Rect::new(main.x + list_w, main.y, main.width - list_w, main.height);
    let inner = Block::bordered().inner(history);
    let (banner, history_text) = if app.open_entry().is_some_and(|e| e.request) && inner.height > 1
    {
        (
            Some(Rect::new(inner.x, inner.y, inner.width, 1)),
            Rect::new(inner.x, inner.y + 1, inner.width, inner.height - 1),
        )
    } else {
        (None, inner)
    };
    Areas {
        list,
        history,
        banner,
        history_text,
        notice,
        composer,
        status,
    }
}

/// The history text area's `(width, height)` on a `width`×`height` screen.
pub fn history_viewport(width: u16, height: u16, app: &App) -> (u16, u16) {
    let text = areas(Rect::new(0, 0, width, height), app).history_text;
    (text.width, text.height)
}

/// Draws the whole screen from the state.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let area = frame.area();
    let a = areas(area, app);
    let focused = Style::new().fg(Color::Cyan);
    let unfocused = Style::new().fg(Color::DarkGray);
    let list_focused = app.focus == Focus::ChatList && app.panel.is_none();

    let list_block = Block::bordered()
        .title(" Chats ")
        .border_style(if list_focused { focused } else { unfocused });
    frame.render_widget(ChatList { app }, list_block.inner(a.list));
    frame.render_widget(list_block, a.list);

    let history_block = Block::bordered()
        .title(history_title(
            app,
            usize::from(a.history.width.saturating_sub(4)),
        ))
        .border_style(unfocused);
    frame.render_widget(history_block, a.history);
    if let (Some(banner), Some(entry)) = (a.banner, app.open_entry()) {
        let text = truncate(
            &match app.name_clash(&entry.id, &entry.name) {
                Some(known) => format!(
                    "⚠ {} is not a contact: {} · y accept · x refuse",
                    entry.name,
                    panel::key_clash_text(&known.name)
                ),
                None => format!("{} is not a contact · y accept · x refuse", entry.name),
            },
            usize::from(banner.width),
        );
        frame.render_widget(
            Paragraph::new(text).style(Style::new().fg(Color::Black).bg(Color::Magenta)),
            banner,
        );
    }
    frame.render_widget(HistoryView { app }, a.history_text);

    if let (Some(rect), Some(notice)) = (a.notice, &app.notice) {
        let (mark, style) = if notice.error {
            (
                "✗ ",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        } else {
            ("• ", Style::new().fg(Color::Green))
        };
        let text = truncate(&format!("{mark}{}", notice.text), usize::from(rect.width));
        frame.render_widget(Paragraph::new(text).style(style), rect);
    }

    draw_composer(frame, app, a.composer);
    frame.render_widget(StatusBar { app }, a.status);
    panel::draw(frame, app, area);
}

fn history_title(app: &App, room: usize) -> Line<'static> {
    let Some(entry) = app.open_entry() else {
        return Line::raw(" Bonghwa ");
    };
    let online = app.online.contains_key(&entry.id);
    let state = if entry.request {
        Span::styled("request · ", Style::new().fg(Color::Magenta))
    } else if online {
        Span::styled("● online · ", Style::new().fg(Color::Green))
    } else {
        Span::styled("○ offline · ", Style::new().fg(Color::DarkGray))
    };
    let verified = if entry.verified {
        Span::styled("✓ verified ", Style::new().fg(Color::Green))
    } else {
        Span::styled("not verified ", Style::new().fg(Color::DarkGray))
    };
    let name_room = room.saturating_sub(width(&state.content) + width(&verified.content) + 2);
    Line::from(vec![
        Span::styled(
            format!(" {} ", truncate(&entry.name, name_room.max(4))),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        state,
        verified,
    ])
}

fn draw_composer(frame: &mut Frame<'_>, app: &App, rect: Rect) {
    let active = app.focus == Focus::Composer && app.panel.is_none();
    let title = match (app.open_entry(), active) {
        (Some(entry), true) => format!(
            " to {} · Enter send · Alt+Enter new line ",
            truncate(&entry.name, 16)
        ),
        (None, true) => " /add CODE to start · ? help ".to_owned(),
        (_, false) => " Tab or i to write ".to_owned(),
    };
    let block = Block::bordered().title(title).border_style(if active {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new().fg(Color::DarkGray)
    });
    let inner = block.inner(rect);
    let (rows, (cx, cy)) = composer::layout(
        app.composer.text(),
        app.composer.cursor(),
        usize::from(inner.width),
    );
    let visible = usize::from(inner.height).max(1);
    let first = cy.saturating_sub(visible - 1);
    let mut lines: Vec<Line<'static>> = rows
        .into_iter()
        .skip(first)
        .take(visible)
        .map(Line::raw)
        .collect();
    if app.composer.is_empty() && !active {
        lines = vec![Line::styled("", Style::new())];
    }
    let matches = crate::app::command::matches(app.composer.text());
    let block =
        if active && !matches.is_empty() && matches.len() < crate::app::command::COMMANDS.len() + 1
        {
            block.title_bottom(format!(" Tab: {} ", matches.join(" ")))
        } else {
            block
        };
    frame.render_widget(Paragraph::new(lines).block(block), rect);
    if active {
        let x = inner.x + u16::try_from(cx).unwrap_or(0);
        let y = inner.y + u16::try_from(cy - first).unwrap_or(0);
        if x < inner.right() && y < inner.bottom() {
            frame.set_cursor_position(Position::new(x, y));
        }
    }
}
