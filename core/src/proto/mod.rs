//! Protocol logic as sans-IO state machines: `handle(input, now) -> outputs`.
//!
//! Nothing here touches a socket, a file or a clock, so each machine is tested with a
//! seeded simulator long before a network exists.

pub mod group;
pub mod mailbox;
pub mod outbox;
pub mod rate;
pub mod sync;
