//! Bonghwa's engine: everything that is not a screen or a C symbol.
//!
//! Layers, from the bottom: [`identity`] and [`crypto`] (pure), [`wire`] (capped,
//! versioned formats), [`store`] (the only code that knows sled), [`proto`] (sans-IO state
//! machines), [`net`] (libp2p behaviours), [`node`] (the actor that owns the swarm and the
//! store, behind a cloneable handle), [`event`] (bounded broadcast) and [`rpc`] (JSON-RPC
//! over a node). Data flows network → actor → store → event; commands flow back through
//! the handle.

pub mod crypto;
pub mod event;
pub mod identity;
pub mod model;
pub mod net;
pub mod node;
pub mod proto;
pub mod rpc;
pub mod store;
pub mod wire;

pub use event::{Event, EventStream};
pub use libp2p::{Multiaddr, PeerId};
pub use node::{Config, Node, NodeError};
