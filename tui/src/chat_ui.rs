//! The terminal UI's event loop: it owns the terminal, the [`App`] and the node handle.
//!
//! Each turn it draws, then waits for whichever comes first: a terminal event (key, paste,
//! mouse, resize), an action sent back by a node call or the node's event stream, or a
//! signal. Node calls run in spawned tasks and report back over one bounded channel, so
//! the draw loop never waits on the network, and nothing redraws without a reason.

use std::time::Duration;

use bonghwa_core::{Config, Node};
use crossterm::event::{Event as TermEvent, KeyEventKind, MouseEventKind};
use futures::StreamExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::app::{Action, App, Effect, HISTORY_PAGE, Op, Zone};
use crate::term::TerminalGuard;
use crate::ui;

/// Actions (node results and events) waiting for the draw loop.
pub const ACTION_CAPACITY: usize = 256;
/// Actions applied at most before the screen is redrawn, so a burst draws once.
const BATCH: usize = 64;
/// How long quitting waits for the node to flush and stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the UI, starts the node with `config` behind it, and runs until the user quits,
/// the terminal goes away, or SIGTERM/SIGHUP arrives. The terminal is restored on every
/// way out.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut guard = TerminalGuard::enter()?;
    let result = event_loop(&mut guard, config).await;
    drop(guard);
    result
}

async fn event_loop(guard: &mut TerminalGuard, config: Config) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<Action>(ACTION_CAPACITY);
    let (node_tx, mut node_rx) = mpsc::channel::<Node>(1);
    let mut app = App::new(config.mdns, Zone::Local);
    let size = guard.terminal.size()?;
    app.update(Action::Resize {
        width: size.width,
        height: size.height,
    });
    spawn_start(config, tx.clone(), node_tx);

    let mut node: Option<Node> = None;
    let mut forwarder = None;
    let mut waiting: Vec<Effect> = Vec::new();
    let mut terminal_events = crossterm::event::EventStream::new();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut start_done = false;

    while app.running {
        guard.terminal.draw(|frame| ui::draw(frame, &app))?;
        let first = tokio::select! {
            event = terminal_events.next() => match event {
                Some(Ok(event)) => translate(event),
                Some(Err(e)) => {
                    tracing::error!("terminal input failed: {e}");
                    app.running = false;
                    None
                }
                None => {
                    app.running = false;
                    None
                }
            },
            Some(action) = rx.recv() => Some(action),
            started = node_rx.recv(), if !start_done => {
                start_done = true;
                if let Some(started) = started {
                    forwarder = Some(spawn_events(&started, tx.clone()));
                    for effect in waiting.drain(..) {
                        spawn_effect(&started, effect, &tx);
                    }
                    node = Some(started);
                }
                None
            }
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: quitting");
                app.running = false;
                None
            }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: quitting");
                app.running = false;
                None
            }
        };
        let mut actions: Vec<Action> = first.into_iter().collect();
        while actions.len() < BATCH {
            match rx.try_recv() {
                Ok(action) => actions.push(action),
                Err(_) => break,
            }
        }
        for action in actions {
            for effect in app.update(action) {
                match &node {
                    Some(node) => spawn_effect(node, effect, &tx),
                    None => waiting.push(effect),
                }
            }
        }
    }

    if let Some(task) = forwarder {
        task.abort();
    }
    if let Some(node) = node {
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, node.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("node shutdown: {e:#}"),
            Err(_) => tracing::warn!("node shutdown took too long; quitting anyway"),
        }
    }
    Ok(())
}

/// A terminal event as an action (`None` for events the UI ignores).
fn translate(event: TermEvent) -> Option<Action> {
    match event {
        TermEvent::Key(key) if key.kind != KeyEventKind::Release => Some(Action::Key(key)),
        TermEvent::Paste(text) => Some(Action::Paste(text)),
        TermEvent::Mouse(mouse) => match mouse.kind {
            MouseEventKind::ScrollUp => Some(Action::ScrollUp),
            MouseEventKind::ScrollDown => Some(Action::ScrollDown),
            _ => None,
        },
        TermEvent::Resize(width, height) => Some(Action::Resize { width, height }),
        _ => None,
    }
}

/// Starts the node off the draw loop; the UI shows "starting" until it reports.
fn spawn_start(config: Config, tx: mpsc::Sender<Action>, node_tx: mpsc::Sender<Node>) {
    tokio::spawn(async move {
        let data_dir = config.data_dir.display().to_string();
        let action = match Node::start(config).await {
            Ok(node) => {
                let identity = node.identity().await;
                let _ = node_tx.send(node).await;
                match identity {
                    Ok(identity) => Action::Started(identity),
                    Err(e) => failed(Op::Start, &e),
                }
            }
            Err(e) => Action::Failed {
                op: Op::Start,
                error: format!("{e} (data dir {data_dir})"),
            },
        };
        let _ = tx.send(action).await;
    });
}

/// Forwards the node's events as actions; back-pressure makes the node report `Lagged`
/// to this subscriber rather than slow down.
fn spawn_events(node: &Node, tx: mpsc::Sender<Action>) -> tokio::task::JoinHandle<()> {
    let mut events = node.subscribe();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if tx.send(Action::Node(event)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Action::NodeStopped).await;
    })
}

fn failed(op: Op, error: &bonghwa_core::NodeError) -> Action {
    Action::Failed {
        op,
        error: error.to_string(),
    }
}

/// Runs one node call in its own task; its result comes back as an action.
fn spawn_effect(node: &Node, effect: Effect, tx: &mpsc::Sender<Action>) {
    let node = node.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let action = match effect {
            Effect::LoadChats => node
                .chats()
                .await
                .map_or_else(|e| failed(Op::Load, &e), Action::Chats),
            Effect::LoadContacts => node
                .contacts()
                .await
                .map_or_else(|e| failed(Op::Load, &e), Action::Contacts),
            Effect::LoadPeers => node
                .peers()
                .await
                .map_or_else(|e| failed(Op::Load, &e), Action::Peers),
            Effect::LoadNearby => node
                .nearby()
                .await
                .map_or_else(|e| failed(Op::Load, &e), Action::Nearby),
            Effect::LoadMessages { chat, before } => {
                let older = before.is_some();
                match node
                    .messages(&chat, Some(HISTORY_PAGE), before.as_deref())
                    .await
                {
                    Ok(messages) => Action::Messages {
                        chat,
                        messages,
                        older,
                    },
                    Err(e) => failed(Op::Load, &e),
                }
            }
            Effect::Send { to, text } => match node.send(&to, &text).await {
                Ok(_) => Action::Sent { chat: to },
                Err(e) => failed(Op::Send, &e),
            },
            Effect::AddContact { code, alias } => {
                match node.contact_add(&code, alias.as_deref()).await {
                    Ok(peer) => Action::ContactAdded {
                        peer_id: peer.to_string(),
                    },
                    Err(e) => failed(Op::AddContact, &e),
                }
            }
            Effect::AcceptRequest(peer) => match node.contact_accept(&peer).await {
                Ok(()) => Action::RequestAccepted { peer_id: peer },
                Err(e) => failed(Op::Accept, &e),
            },
            Effect::RefuseRequest(peer) => match node.contact_refuse(&peer).await {
                Ok(()) => Action::RequestRefused { peer_id: peer },
                Err(e) => failed(Op::Refuse, &e),
            },
            Effect::SetName(name) => match node.set_name(&name).await {
                Ok(()) => Action::NameSet(name),
                Err(e) => failed(Op::SetName, &e),
            },
            Effect::SafetyNumber(peer) => match node.safety_number(&peer).await {
                Ok(number) => Action::SafetyNumber { peer, number },
                Err(e) => failed(Op::SafetyNumber, &e),
            },
            Effect::Verify(peer) => match node.contact_verify(&peer).await {
                Ok(()) => Action::Verified { peer },
                Err(e) => failed(Op::Verify, &e),
            },
            Effect::MarkRead(chat) => match node.mark_read(&chat).await {
                Ok(()) => return,
                Err(e) => failed(Op::MarkRead, &e),
            },
            Effect::Connect(addr) => match node.connect(&addr).await {
                Ok(peer) => Action::Connected {
                    peer_id: peer.to_string(),
                },
                Err(e) => failed(Op::Connect, &e),
            },
            Effect::GroupCreate(name) => match node.group_create(&name, &[]).await {
                Ok(group) => Action::GroupCreated { group },
                Err(e) => failed(Op::Group, &e),
            },
            Effect::GroupAdd { group, member } => match node.group_add(&group, &member).await {
                Ok(()) => {
                    Action::GroupDone("invited; they join when the invite reaches them".into())
                }
                Err(e) => failed(Op::Group, &e),
            },
            Effect::GroupLeave(group) => match node.group_leave(&group).await {
                Ok(()) => Action::GroupDone("you left the group".into()),
                Err(e) => failed(Op::Group, &e),
            },
        };
        let _ = tx.send(action).await;
    });
}
