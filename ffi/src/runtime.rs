//! The one tokio runtime every C call runs on.
//!
//! C callers have no runtime of their own, so the library keeps a single multi-thread
//! runtime with [`WORKER_THREADS`] workers, created on first use and kept for the life of
//! the process. Every exported function blocks its calling thread on this runtime with
//! `block_on`, which is allowed from any number of foreign threads at once.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::error::FfiError;

/// Worker threads of the runtime: a phone has few cores and the node is I/O bound.
pub(crate) const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The shared runtime, built on first use. Fails (every time, with the same message) if
/// the OS refused to start its threads.
pub(crate) fn runtime() -> Result<&'static Runtime, FfiError> {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("bonghwa-worker")
                .enable_all()
                .build()
                .map_err(|e| format!("could not start the tokio runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| FfiError::Runtime(e.clone()))
}
