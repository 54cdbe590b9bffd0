//! What a `bh_node *` stands for, and the operations on it in safe Rust.
//!
//! A `bh_node *` is not the address of anything: it is a key into [`REGISTRY`], a value
//! the library makes up (`n × HANDLE_STRIDE` for the n-th node opened in the process) and
//! never dereferences. Every call looks the key up under the registry lock and clones the
//! `Arc<Handle>` it finds, so:
//!
//! - a pointer that was never returned by `bh_node_open` (NULL, garbage, another object's
//!   address) is refused with an error instead of being read;
//! - `bh_node_close` removes the key first, so a second close, or any call after close,
//!   finds no handle and gets an error;
//! - keys are never reused, so a stale pointer cannot reach a node opened later;
//! - a call that is already running when another thread closes the node keeps its own
//!   `Arc` and finishes against a stopped node (a JSON-RPC "node has stopped" error),
//!   and the memory goes away when the last such call returns.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bonghwa_core::{EventStream, Node, rpc};
use serde_json::json;
use tokio::sync::watch;

use crate::config;
use crate::error::FfiError;
use crate::runtime::runtime;

/// Handle values are multiples of this, so they look like aligned pointers to C tooling.
pub(crate) const HANDLE_STRIDE: usize = 16;

/// Whether a node still takes calls, as seen by threads waiting for events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halt {
    /// Open and running.
    Running,
    /// Stopped by the `shutdown` RPC method; the handle stays open until closed.
    Stopped,
    /// `bh_node_close` was called.
    Closed,
}

/// One open node, shared by every thread calling into it.
pub(crate) struct Handle {
    /// The node itself (a cheap handle to its actor).
    node: Node,
    /// The node's events, subscribed at open so none are lost before the first
    /// `bh_next_event`. A mutex because concurrent callers take turns: each event goes to
    /// exactly one of them.
    events: tokio::sync::Mutex<EventStream>,
    /// Wakes threads blocked in `bh_next_event` when the node stops or is closed: the
    /// event stream itself never ends while the handle holds the node.
    halt: watch::Sender<Halt>,
}

/// Open nodes by handle value, and how many handle values were issued.
struct Registry {
    live: BTreeMap<usize, Arc<Handle>>,
    issued: usize,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: BTreeMap::new(),
    issued: 0,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Why `value` is not a live handle, when it is not.
    fn check(&self, value: usize) -> Result<(), FfiError> {
        if value == 0 {
            return Err(FfiError::Null("node"));
        }
        if !value.is_multiple_of(HANDLE_STRIDE) || value / HANDLE_STRIDE > self.issued {
            return Err(FfiError::UnknownHandle);
        }
        if self.live.contains_key(&value) {
            Ok(())
        } else {
            Err(FfiError::Closed)
        }
    }
}

/// Starts a node and registers it; returns its handle value.
pub(crate) fn open(data_dir: &str, config_json: Option<&str>) -> Result<usize, FfiError> {
    let config = config::parse(data_dir, config_json)?;
    let rt = runtime()?;
    let (node, events) = rt
        .block_on(Node::start_subscribed(config))
        .map_err(|e| FfiError::Open(format!("{e:#}")))?;
    let handle = Arc::new(Handle {
        events: tokio::sync::Mutex::new(events),
        halt: watch::Sender::new(Halt::Running),
        node,
    });
    let mut registry = registry();
    let value = registry
        .issued
        .checked_add(1)
        .and_then(|n| n.checked_mul(HANDLE_STRIDE).map(|value| (n, value)));
    let Some((n, value)) = value else {
        drop(registry);
        // Best effort: the caller gets the exhaustion error either way.
        let _ = rt.block_on(handle.node.shutdown());
        return Err(FfiError::HandlesExhausted);
    };
    registry.issued = n;
    registry.live.insert(value, handle);
    Ok(value)
}

/// The open node behind a handle value.
pub(crate) fn lookup(value: usize) -> Result<Arc<Handle>, FfiError> {
    let registry = registry();
    registry.check(value)?;
    registry.live.get(&value).cloned().ok_or(FfiError::Closed)
}

/// Unregisters a node, wakes its event waiters and shuts it down (flushing the store).
pub(crate) fn close(value: usize) -> Result<(), FfiError> {
    let handle = {
        let mut registry = registry();
        registry.check(value)?;
        registry.live.remove(&value).ok_or(FfiError::Closed)?
    };
    handle.halt.send_replace(Halt::Closed);
    runtime()?
        .block_on(handle.node.shutdown())
        .map_err(|e| FfiError::Close(format!("{e:#}")))
}

/// One JSON-RPC request (raw bytes from C) → its response text. A request that is not
/// UTF-8 gets a JSON-RPC parse error, like one that is not JSON; a notification (no `id`)
/// gets the text `null`.
pub(crate) fn call(handle: &Handle, request: &[u8]) -> Result<String, FfiError> {
    let rt = runtime()?;
    let text = match std::str::from_utf8(request) {
        Ok(text) => text,
        Err(e) => {
            return Ok(json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {
                    "code": rpc::PARSE_ERROR,
                    "message": format!(
                        "the request is not valid UTF-8 (first bad byte at offset {})",
                        e.valid_up_to()
                    ),
                },
            })
            .to_string());
        }
    };
    let response = rt.block_on(rpc::call(&handle.node, text));
    if response.shutdown {
        handle.halt.send_if_modified(|halt| {
            let running = *halt == Halt::Running;
            if running {
                *halt = Halt::Stopped;
            }
            running
        });
    }
    Ok(response.json.unwrap_or_else(|| "null".to_owned()))
}

/// The next event as JSON (`{"kind": …}`), `Ok(None)` when `timeout_ms` passed first.
/// A negative timeout waits until an event arrives or the node stops or is closed; zero
/// only looks.
pub(crate) fn next_event(handle: &Handle, timeout_ms: i32) -> Result<Option<String>, FfiError> {
    let rt = runtime()?;
    let mut halt = handle.halt.subscribe();
    halted(*halt.borrow())?;
    if timeout_ms == 0 {
        // Another thread waiting holds the stream: nothing is ready for this one.
        let Ok(mut events) = handle.events.try_lock() else {
            return Ok(None);
        };
        return match events.try_next() {
            Ok(event) => Ok(event.map(|e| rpc::event_json(&e).to_string())),
            Err(()) => Err(FfiError::Stopped),
        };
    }
    rt.block_on(async {
        let event = async { handle.events.lock().await.next().await };
        let deadline = async {
            match u64::try_from(timeout_ms) {
                Ok(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            state = wait_for_halt(&mut halt) => halted(state).map(|()| None),
            event = event => match event {
                Some(event) => Ok(Some(rpc::event_json(&event).to_string())),
                None => Err(FfiError::Stopped),
            },
            () = deadline => Ok(None),
        }
    })
}

/// Resolves once the node stops or is closed, with that state.
async fn wait_for_halt(halt: &mut watch::Receiver<Halt>) -> Halt {
    match halt.wait_for(|state| *state != Halt::Running).await {
        Ok(state) => *state,
        // The sender lives in the handle the caller holds; treat its loss as a close.
        Err(_) => Halt::Closed,
    }
}

/// The error for a halted state, `Ok` while running.
fn halted(state: Halt) -> Result<(), FfiError> {
    match state {
        Halt::Running => Ok(()),
        Halt::Stopped => Err(FfiError::Stopped),
        Halt::Closed => Err(FfiError::Closed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: &str = r#"{"mdns": false, "listen": ["/ip4/127.0.0.1/tcp/0"]}"#;

    fn open_temp() -> (tempfile::TempDir, usize) {
        let dir = tempfile::tempdir().unwrap();
        let value = open(dir.path().to_str().unwrap(), Some(LOOPBACK)).unwrap();
        (dir, value)
    }

    #[test]
    fn close_wakes_a_thread_blocked_in_next_event() {
        let (_dir, value) = open_temp();
        let handle = lookup(value).unwrap();
        let waiter = {
            let handle = Arc::clone(&handle);
            std::thread::spawn(move || next_event(&handle, -1))
        };
        // Once the waiter has subscribed to `halt` it can only end through it: an event
        // (none comes on an unconnected node), or the close below.
        while handle.halt.receiver_count() == 0 {
            assert!(!waiter.is_finished(), "the waiter returned before close");
            std::thread::yield_now();
        }
        close(value).unwrap();
        assert!(matches!(waiter.join().unwrap(), Err(FfiError::Closed)));
    }

    #[test]
    fn a_closed_handle_is_refused_and_never_reached_again() {
        let (_dir, value) = open_temp();
        close(value).unwrap();
        assert!(matches!(close(value), Err(FfiError::Closed)));
        assert!(matches!(lookup(value), Err(FfiError::Closed)));
        let (_dir2, newer) = open_temp();
        assert_ne!(newer, value, "handle values are never reused");
        close(newer).unwrap();
    }

    #[test]
    fn values_never_issued_are_unknown() {
        assert!(matches!(lookup(0), Err(FfiError::Null("node"))));
        assert!(matches!(
            lookup(HANDLE_STRIDE + 1),
            Err(FfiError::UnknownHandle)
        ));
        assert!(matches!(
            lookup(usize::MAX & !15),
            Err(FfiError::UnknownHandle)
        ));
    }

    #[test]
    fn the_shutdown_method_stops_events_and_later_calls_get_rpc_errors() {
        let (_dir, value) = open_temp();
        let handle = lookup(value).unwrap();
        let stop = call(&handle, br#"{"jsonrpc":"2.0","id":1,"method":"shutdown"}"#).unwrap();
        let stop: serde_json::Value = serde_json::from_str(&stop).unwrap();
        assert_eq!(stop, json!({"jsonrpc": "2.0", "id": 1, "result": null}));
        assert!(matches!(next_event(&handle, -1), Err(FfiError::Stopped)));
        let after = call(&handle, br#"{"jsonrpc":"2.0","id":2,"method":"identity"}"#).unwrap();
        assert!(after.contains(&rpc::NODE_STOPPED.to_string()), "{after}");
        close(value).unwrap();
    }

    #[test]
    fn bad_requests_get_json_rpc_errors_and_notifications_get_null() {
        let (_dir, value) = open_temp();
        let handle = lookup(value).unwrap();
        let parse_error = rpc::PARSE_ERROR.to_string();
        assert!(call(&handle, b"{not json").unwrap().contains(&parse_error));
        assert!(call(&handle, b"\xff\xfe").unwrap().contains(&parse_error));
        let notification = br#"{"jsonrpc":"2.0","method":"identity"}"#;
        assert_eq!(call(&handle, notification).unwrap(), "null");
        assert_eq!(next_event(&handle, 0).unwrap(), None);
        assert_eq!(next_event(&handle, 1).unwrap(), None);
        close(value).unwrap();
    }
}
