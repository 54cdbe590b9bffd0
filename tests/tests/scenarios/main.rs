//! Multi-node scenarios over real sockets: in-process nodes on loopback, real `bonghwa`
//! processes, and network namespaces for the LAN. One binary, a module per capability.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod compat;
mod direct;
mod group;
mod group_net;
mod hostile;
mod lan;
mod nat;
mod persistence;
mod reach;
mod relay;
mod rpc_cli;
mod sessions;

use std::path::PathBuf;

/// The `bonghwa` CLI built by this package (same code as the shipped binary).
pub fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bonghwa-node"))
}
