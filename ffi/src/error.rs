//! Errors of the C functions and the thread-local "last error" that `bh_last_error` reads.
//!
//! A C function cannot return a `Result`, so each one returns a plain error value (`NULL`)
//! and leaves the reason here, per thread, like `errno`. [`FfiError`] is the typed form
//! inside the crate; only its message crosses the boundary.

#![forbid(unsafe_code)]

use std::cell::RefCell;

/// Why a C call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FfiError {
    /// A pointer argument was `NULL`.
    #[error("{0} is NULL")]
    Null(&'static str),
    /// A string argument was not UTF-8.
    #[error("{what} is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// Which argument.
        what: &'static str,
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// The node pointer was never returned by `bh_node_open`.
    #[error("not a node handle returned by bh_node_open")]
    UnknownHandle,
    /// The node handle was closed with `bh_node_close`.
    #[error("the node handle was closed with bh_node_close; open a new node")]
    Closed,
    /// The node stopped (the `shutdown` RPC method) while the handle stays open.
    #[error("the node has stopped (the shutdown method was called); close the handle")]
    Stopped,
    /// `config_json` is wrong; the message says how.
    #[error("config_json: {0}")]
    Config(String),
    /// The node could not start.
    #[error("could not open the node: {0}")]
    Open(String),
    /// Flushing at close failed.
    #[error("closing the node: {0}")]
    Close(String),
    /// The runtime could not start.
    #[error("{0}")]
    Runtime(String),
    /// A returned string would contain a NUL byte (never expected from JSON).
    #[error("the result contains a NUL byte and cannot be a C string")]
    InteriorNul,
    /// `bh_string_free` got a pointer this library does not own (any more).
    #[error("bh_string_free: the pointer was not returned by this library or was already freed")]
    UnknownString,
    /// Too many handles were opened in this process to give each a fresh value.
    #[error("node handle values are exhausted in this process")]
    HandlesExhausted,
    /// A bug: Rust code panicked. The panic was caught at the boundary.
    #[error("internal error (panic in {function}): {message}; please report it")]
    Panic {
        /// The C function that was running.
        function: &'static str,
        /// The panic payload, when it was a string.
        message: String,
    },
}

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

// `try_with` rather than `with` below: a C thread may call in while it is being torn
// down, after this thread-local is gone, and `with` would panic outside any guard.

/// Records `error` as this thread's last error.
pub(crate) fn set_last_error(error: &FfiError) {
    let message = error.to_string();
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(message));
}

/// Forgets this thread's last error (at the start of a call that reports through it).
pub(crate) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = None);
}

/// A copy of this thread's last error, if any.
pub(crate) fn last_error() -> Option<String> {
    LAST_ERROR
        .try_with(|slot| slot.borrow().clone())
        .ok()
        .flatten()
}
