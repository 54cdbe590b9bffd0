//! The `bonghwa` command: terminal UI (default), `rpc` (JSON-RPC on stdin/stdout) and `id`.
//!
//! The binary is a thin `main` over [`cli::main`], so tests and the benchmark harness can
//! run exactly the same code.

#![forbid(unsafe_code)]

pub mod app;
pub mod chat_ui;
pub mod cli;
pub mod relay_cmd;
pub mod rpc_server;
pub mod term;
pub mod ui;
