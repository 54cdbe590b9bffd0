//! The C ABI of Bonghwa, for mobile shells (ffi/README.md; header `include/bonghwa.h`).
//!
//! Seven functions and one opaque type. Every feature travels as JSON-RPC through
//! [`bh_call`] and [`bh_next_event`], the same protocol `bonghwa rpc` speaks, so this crate
//! stays thin (STYLE rule 7): each function null-checks its arguments, runs on one static
//! tokio runtime ([`runtime`]), catches panics and returns an error value, with the reason
//! in a thread-local last error ([`error`]).
//!
//! This is the only crate of the workspace with `unsafe` code: reading C strings and
//! freeing the strings it handed out ([`strings`]), and the `#[unsafe(no_mangle)]`
//! attribute that exports the symbols. Node handles are registry keys that are never
//! dereferenced ([`handle`]), so they need no `unsafe` at all.

#![allow(unsafe_code)]

mod config;
mod error;
mod handle;
mod runtime;
mod strings;

use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use error::{FfiError, clear_last_error, set_last_error};

/// An open node. Opaque: only ever used through a pointer from `bh_node_open`.
///
/// The pointer is a handle value, not an address: the library never dereferences it, and
/// checks it against its table of open nodes on every call. A pointer that did not come
/// from `bh_node_open`, or whose node was closed, gets an error, never undefined
/// behaviour. Handle values are not reused within a process.
#[allow(non_camel_case_types)]
pub struct bh_node {
    _opaque: [u8; 0],
}

/// The library version as a NUL-terminated string.
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(version) => version,
        Err(_) => panic!("the package version contains a NUL byte"),
    };

/// Runs `body`, turning an error or a panic into `on_error` and the thread's last error.
fn guard<T>(function: &'static str, on_error: T, body: impl FnOnce() -> Result<T, FfiError>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => {
            set_last_error(&error);
            on_error
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            // A payload whose destructor panics must not unwind out of here either.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            set_last_error(&FfiError::Panic { function, message });
            on_error
        }
    }
}

/// The handle value a `bh_node *` carries (its address; never dereferenced).
fn handle_value(node: *const bh_node) -> usize {
    node.addr()
}

/// Opens (creating if needed) the node stored in `data_dir` and starts it: loads or makes
/// the identity key, opens the database, starts listening and dialling.
///
/// - `data_dir`: NUL-terminated UTF-8 path to a directory private to the app (created if
///   missing, permissions 0700). Borrowed for the duration of the call. Must not be NULL.
///   One data dir can be open only once at a time (the second open fails).
/// - `config_json`: NULL, or a NUL-terminated UTF-8 JSON object with any of the keys
///   `"name"` (string), `"listen"` (array of multiaddr strings), `"bootstrap"` (array of
///   multiaddr strings), `"mdns"` (bool). NULL or `"{}"` means the defaults: listen on TCP
///   and QUIC on all interfaces, mDNS on. An unknown key is an error. Borrowed.
///
/// Returns the node, owned by the caller until `bh_node_close`; or NULL on error, with the
/// reason in `bh_last_error()`. Blocks until the node listens (a few seconds at most).
///
/// # Safety
///
/// Each non-NULL argument points to a NUL-terminated string that stays valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bh_node_open(
    data_dir: *const c_char,
    config_json: *const c_char,
) -> *mut bh_node {
    clear_last_error();
    guard("bh_node_open", std::ptr::null_mut(), || {
        // SAFETY: the caller promises NULL or a NUL-terminated string valid for this call.
        let data_dir = unsafe { strings::borrow_str(data_dir, "data_dir") }?;
        let config_json = if config_json.is_null() {
            None
        } else {
            // SAFETY: as above; not NULL.
            Some(unsafe { strings::borrow_str(config_json, "config_json") }?)
        };
        let value = handle::open(data_dir, config_json)?;
        Ok(std::ptr::without_provenance_mut(value))
    })
}

/// Handles one JSON-RPC 2.0 request (or a batch) and returns its response, e.g.
/// `{"jsonrpc":"2.0","id":1,"method":"send","params":{"to":"12D3Koo…","text":"hi"}}` →
/// `{"jsonrpc":"2.0","id":1,"result":{"id":"…"}}`. The methods are listed in the repository's README.md, "The JSON-RPC in brief".
///
/// - `node`: from `bh_node_open`. Borrowed.
/// - `request_json`: NUL-terminated request text. Borrowed for the duration of the call.
///
/// Returns a new string the caller frees with `bh_string_free`:
/// - the JSON-RPC response, which may be an error object (`"error": {"code", "message"}`):
///   text that is not JSON or not UTF-8 gets code -32700, an unknown method -32601, bad
///   params -32602, a node stopped by the `shutdown` method -32001;
/// - the text `null` when the request was a notification (no `"id"`), which has no response.
///
/// Returns NULL, with the reason in `bh_last_error()`, when `node` is NULL, was not returned
/// by `bh_node_open` or was closed, or `request_json` is NULL.
///
/// Blocks until the node answers: usually milliseconds, up to 20 s for `connect`. Do not
/// call it on a UI thread. Safe to call from any thread, concurrently.
///
/// # Safety
///
/// `request_json` is NULL or points to a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bh_call(node: *mut bh_node, request_json: *const c_char) -> *mut c_char {
    clear_last_error();
    guard("bh_call", std::ptr::null_mut(), || {
        let handle = handle::lookup(handle_value(node))?;
        // SAFETY: the caller promises NULL or a NUL-terminated string valid for this call.
        let request = unsafe { strings::borrow_bytes(request_json, "request_json") }?;
        strings::hand_out(handle::call(&handle, request)?)
    })
}

/// Waits for the node's next event and returns it as a JSON object such as
/// `{"kind":"message_received","chat":"12D3Koo…","message":{…}}` (README.md lists the kinds;
/// new kinds may appear, so ignore the ones you do not know). Events queue from
/// `bh_node_open` on; a reader that falls more than 1024 events behind gets
/// `{"kind":"lagged","missed":N}` and should re-read what it shows with `bh_call`.
///
/// - `node`: from `bh_node_open`. Borrowed.
/// - `timeout_ms`: how long to wait. 0 returns at once; a negative value waits until an
///   event arrives or the node is closed.
///
/// Returns a new string the caller frees with `bh_string_free`, or NULL when:
/// - the timeout passed with no event: `bh_last_error()` returns NULL;
/// - the node was closed (also by `bh_node_close` on another thread while this one
///   waited: that wakes it) or stopped by the `shutdown` method, or `node` is not a node:
///   `bh_last_error()` says which.
///
/// Blocks up to `timeout_ms`. Meant for one dedicated event thread per node; several
/// threads may wait at once, each event then goes to exactly one of them.
#[unsafe(no_mangle)]
pub extern "C" fn bh_next_event(node: *mut bh_node, timeout_ms: i32) -> *mut c_char {
    clear_last_error();
    guard("bh_next_event", std::ptr::null_mut(), || {
        let handle = handle::lookup(handle_value(node))?;
        match handle::next_event(&handle, timeout_ms)? {
            Some(event) => strings::hand_out(event),
            None => Ok(std::ptr::null_mut()),
        }
    })
}

/// Frees a string returned by `bh_call`, `bh_next_event` or `bh_last_error`.
///
/// NULL is ignored. A pointer this library did not return, or already freed, is left
/// alone and reported through `bh_last_error()` (it is a bug in the caller). Never pass
/// `bh_version()`'s string. Does not block; any thread.
///
/// # Safety
///
/// `s` is NULL or a string this library returned. The library checks this against its
/// list of outstanding strings before freeing, so a wrong pointer is refused rather than
/// freed; the caller must not use `s` after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bh_string_free(s: *mut c_char) {
    guard("bh_string_free", (), || strings::take_back(s));
}

/// Closes a node: wakes every thread waiting in `bh_next_event` on it (they return NULL),
/// flushes the database, closes every connection and stops the node. Afterwards every
/// call with this `node` returns an error, including a second `bh_node_close` (which does
/// nothing else). Calls already running on other threads finish with an error.
///
/// `node`: from `bh_node_open`; the caller's ownership ends here. NULL or a pointer that is
/// not an open node sets `bh_last_error()` and does nothing.
///
/// Blocks until the node has stopped (usually well under a second). Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn bh_node_close(node: *mut bh_node) {
    clear_last_error();
    guard("bh_node_close", (), || handle::close(handle_value(node)));
}

/// Why the last failing call on this thread failed, as a new string the caller frees
/// with `bh_string_free`; NULL if it did not fail. `bh_node_open`, `bh_call`,
/// `bh_next_event` and `bh_node_close` reset it when they start; `bh_string_free` sets it
/// only for a pointer it refuses. Reading it does not reset it. Does not block.
#[unsafe(no_mangle)]
pub extern "C" fn bh_last_error() -> *mut c_char {
    guard("bh_last_error", std::ptr::null_mut(), || {
        error::last_error().map_or(Ok(std::ptr::null_mut()), strings::hand_out)
    })
}

/// The library version, e.g. `"0.1.0"`. A static string: do not free it. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn bh_version() -> *const c_char {
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_error_value_and_the_last_error() {
        let value = guard("bh_test", 7, || -> Result<i32, FfiError> { panic!("boom") });
        assert_eq!(value, 7);
        let message = error::last_error().unwrap();
        assert!(
            message.contains("panic in bh_test") && message.contains("boom"),
            "{message}"
        );
    }

    #[test]
    fn an_error_sets_the_last_error_and_success_leaves_it() {
        clear_last_error();
        assert_eq!(guard("bh_test", 0, || Ok(1)), 1);
        assert_eq!(error::last_error(), None);
        assert_eq!(guard("bh_test", 0, || Err(FfiError::Closed)), 0);
        assert!(error::last_error().unwrap().contains("closed"));
    }

    #[test]
    fn the_version_is_the_package_version() {
        // SAFETY: `bh_version` returns a static NUL-terminated string.
        let version = unsafe { CStr::from_ptr(bh_version()) };
        assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
