//! What the node tells its users, on a bounded broadcast.
//!
//! Events are notices sent after the fact: the store already holds what an event reports.
//! A subscriber that falls behind loses the oldest events and gets [`Event::Lagged`]
//! instead of slowing the network down; it can re-read the store to catch up.

use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::{MessageStatus, StoredMessage};

/// How many events a subscriber may fall behind before it starts losing them.
pub const EVENT_CAPACITY: usize = 1024;

/// How a peer is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A direct connection.
    Direct,
    /// Through a relay circuit.
    Relay,
}

/// Whether others can dial us, as AutoNAT sees it (in `identity` and the `reachability`
/// event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Others can dial one of our addresses directly.
    Public,
    /// Behind NAT: others reach us only through relays.
    Private,
    /// Not probed yet.
    #[default]
    Unknown,
}

/// One notice from the node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new message was stored in `chat`.
    MessageReceived {
        /// The chat id.
        chat: String,
        /// The stored message.
        message: StoredMessage,
    },
    /// An outgoing message changed status.
    MessageStatus {
        /// The message id (hex).
        id: String,
        /// The chat id.
        chat: String,
        /// Its new status.
        status: MessageStatus,
    },
    /// The first connection to a peer opened.
    PeerConnected {
        /// Peer id.
        peer_id: String,
        /// How it is reached.
        via: Via,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// Peer id.
        peer_id: String,
    },
    /// A peer was found (on the LAN by mDNS).
    PeerDiscovered {
        /// Peer id.
        peer_id: String,
        /// How it was found (`"mdns"`).
        source: &'static str,
    },
    /// Someone who is not a contact sent a message; it is stored in their chat.
    ContactRequest {
        /// Their peer id.
        peer_id: String,
        /// The name on their card.
        name: String,
    },
    /// AutoNAT's verdict on whether others can dial us changed.
    Reachability {
        /// The new verdict.
        status: Reachability,
        /// The address confirmed reachable, when public.
        addr: Option<String>,
    },
    /// A relay accepted (or lost) our reservation: peers can (or no longer can) reach us
    /// through it.
    RelayReservation {
        /// The relay's peer id.
        peer_id: String,
        /// Whether we hold a reservation there now.
        reserved: bool,
    },
    /// Our signed address record is in the DHT: anyone who knows our peer id can find us.
    AddressesPublished {
        /// The addresses it lists.
        addrs: Vec<String>,
    },
    /// A hole punch (DCUtR) over a relayed connection finished.
    HolePunch {
        /// The peer at the other end.
        peer_id: String,
        /// True if a direct connection now exists; false if we stay on the relay.
        direct: bool,
    },
    /// Messages of a contact that have not arrived: their session's counter ran ahead of
    /// what we read (a gap; they may still come, late). Sent when the number changes,
    /// with 0 once the gap has closed.
    MessagesMissing {
        /// The chat (the contact's peer id).
        chat: String,
        /// How many of their messages we have not read.
        missing: usize,
    },
    /// A group we are in was created, joined, or changed members.
    GroupChanged {
        /// The group id.
        group: String,
    },
    /// This subscriber fell behind and `missed` events were dropped.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// A subscription to the node's events.
#[derive(Debug)]
pub struct EventStream {
    receiver: broadcast::Receiver<Event>,
}

impl EventStream {
    pub(crate) fn new(receiver: broadcast::Receiver<Event>) -> Self {
        Self { receiver }
    }

    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        match self.receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Event::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting, without blocking. `Ok(None)` means none yet;
    /// `Err(())` means the node has stopped.
    #[allow(clippy::result_unit_err)]
    pub fn try_next(&mut self) -> Result<Option<Event>, ()> {
        match self.receiver.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Ok(Some(Event::Lagged { missed }))
            }
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Closed) => Err(()),
        }
    }
}
