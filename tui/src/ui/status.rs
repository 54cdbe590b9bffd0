//! The status bar: who we are, how connected, and what the node is doing.

use bonghwa_core::event::{Reachability, Via};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::text::{truncate, width};
use crate::app::App;

/// What the node is doing, in a few words.
pub fn activity(app: &App) -> String {
    let a = &app.activity;
    if a.stopped {
        return "node stopped".into();
    }
    if a.starting {
        return "starting the node…".into();
    }
    let mut busy = Vec::new();
    if a.connecting > 0 {
        busy.push("connecting…".to_owned());
    }
    if a.adding > 0 {
        busy.push("adding contact…".to_owned());
    }
    if a.sending > 0 {
        busy.push(format!("sending {}…", a.sending));
    }
    if !busy.is_empty() {
        return busy.join(" ");
    }
    if app.online.is_empty() {
        if app.mdns {
            "looking for peers".into()
        } else {
            "no peers".into()
        }
    } else {
        "online".into()
    }
}

/// LAN / internet / relay connectivity, in a few words.
pub fn connectivity(app: &App) -> String {
    let lan = if app.mdns {
        format!("LAN {}", app.nearby.len())
    } else {
        "LAN off".to_owned()
    };
    let direct = app.online.values().filter(|v| **v == Via::Direct).count();
    let relay = app.online.values().filter(|v| **v == Via::Relay).count();
    format!(
        "{lan} · direct {direct} · relay {relay}{}",
        reach(app, false)
    )
}

/// Whether others can reach us (AutoNAT's verdict, and relays holding a slot for us);
/// empty while nothing is known.
pub fn reach(app: &App, compact: bool) -> String {
    let status = app
        .me
        .as_ref()
        .map_or(Reachability::Unknown, |m| m.reachability);
    let slots = app.reserved_relays.len();
    let verdict = match (status, compact) {
        (Reachability::Public, false) => Some("reachable"),
        (Reachability::Private, false) => Some("behind NAT"),
        (Reachability::Public, true) => Some("pub"),
        (Reachability::Private, true) => Some("NAT"),
        (Reachability::Unknown, _) => None,
    };
    let mut out = String::new();
    if let Some(verdict) = verdict {
        out.push_str(if compact { " " } else { " · " });
        out.push_str(verdict);
    }
    if slots > 0 {
        if compact {
            out.push_str(&format!(" S{slots}"));
        } else {
            let s = if slots == 1 { "" } else { "s" };
            out.push_str(&format!(" · via {slots} relay{s}"));
        }
    }
    out
}

/// The one-line status bar.
#[derive(Debug)]
pub struct StatusBar<'a> {
    /// The state to show.
    pub app: &'a App,
}

impl Widget for StatusBar<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        let bar = Style::new().bg(Color::DarkGray).fg(Color::White);
        buf.set_style(area, bar);
        let help = " ? help ";
        let room = usize::from(area.width).saturating_sub(width(help));
        let name = truncate(app.me.as_ref().map_or("…", |m| m.name.as_str()), 16);
        let peers = app.online.len();
        let peers = format!("{peers} peer{}", if peers == 1 { "" } else { "s" });
        let head = format!(" 봉화 {name}");
        // Drop detail from the connectivity part until the line fits.
        let full = connectivity(app);
        let direct = app.online.values().filter(|v| **v == Via::Direct).count();
        let relay = app.online.values().filter(|v| **v == Via::Relay).count();
        let lan = if app.mdns {
            format!("L{}", app.nearby.len())
        } else {
            "L-".to_owned()
        };
        let compact = format!("{lan} D{direct} R{relay}{}", reach(app, true));
        let busy = activity(app);
        let candidates = [
            format!(" │ {peers} │ {full} │ {busy}"),
            format!(" │ {peers} │ {compact} │ {busy}"),
            format!(" │ {peers} │ {busy}"),
            format!(" │ {busy}"),
        ];
        let head_w = width(&head);
        let tail = candidates
            .iter()
            .find(|c| head_w + width(c) <= room)
            .cloned()
            .unwrap_or_else(|| truncate(&candidates[3], room.saturating_sub(head_w)));
        let line = Line::from(vec![
            Span::styled(" 봉화 ", bar.fg(Color::Yellow).add_modifier(Modifier::BOLD)),
            Span::styled(name, bar.add_modifier(Modifier::BOLD)),
            Span::styled(tail, bar),
        ]);
        buf.set_line(
            area.x,
            area.y,
            &line,
            u16::try_from(room).unwrap_or(area.width),
        );
        if usize::from(area.width) >= width(help) {
            let x = area.right() - u16::try_from(width(help)).unwrap_or(0);
            buf.set_string(x, area.y, help, bar.fg(Color::Yellow));
        }
    }
}
