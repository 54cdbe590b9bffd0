//! `Node`: a cheap, cloneable handle to one running Bonghwa node.
//!
//! [`Node::start`] opens the data dir (identity key, sled store), builds the swarm,
//! starts listening and spawns the actor task that owns both. Every method sends a
//! command over a bounded channel and awaits its reply on a oneshot; once the actor has
//! stopped, methods return [`NodeError::NodeStopped`].

mod actor;
mod contacts;
mod direct;
mod group;
mod group_relay;
mod group_sync;
mod listen;
mod mail_client;
mod mailbox_server;
mod peers;
mod reach;
mod sessions;
mod types;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use sessions::DataDirReader;
pub use types::{
    ChatInfo, ChatKind, ContactInfo, IdentityInfo, MailboxState, MessageInfo, NearbyPeer, PeerInfo,
    RelayInfo,
};

use crate::crypto::group::GroupId;
use crate::event::{EVENT_CAPACITY, EventStream};
use crate::identity::{Identity, IdentityError};
use crate::model::{ChatId, MessageId};
use crate::net::NetError;
use crate::store::{SledConfig, SledStore, StoreError};

/// Commands waiting for the actor, at most.
pub const COMMAND_CAPACITY: usize = 256;
/// How long unacknowledged messages are retried before they fail.
pub const DEFAULT_MESSAGE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long `connect` waits for the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `start` waits for its listeners to report addresses.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages `messages` returns when no limit is given.
pub const DEFAULT_PAGE: usize = 100;
/// Most messages one `messages` call returns.
pub const MAX_PAGE: usize = 1000;

/// How to start a node. Mirrors the CLI flags and the FFI's `config_json`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the identity key and the database live; created if missing.
    pub data_dir: PathBuf,
    /// Display name to set at start (kept for later starts); `None` keeps the stored one.
    pub name: Option<String>,
    /// Addresses to listen on; empty means [`crate::net::default_listen_addrs`].
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (relays, friends).
    pub bootstrap: Vec<Multiaddr>,
    /// Find peers on the LAN with mDNS.
    pub mdns: bool,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// How long outgoing messages are retried.
    pub message_ttl: Duration,
    /// Dial known contacts and bootstrap peers at start (off for one-shot commands such
    /// as `bonghwa id`).
    pub dial_on_start: bool,
    /// Serve as a relay: relay v2 server and a mailbox with these limits (`bonghwa relay`).
    pub relay: Option<crate::proto::mailbox::Limits>,
    /// Public addresses to announce (a relay behind port forwarding or on a VPS).
    pub external_addrs: Vec<Multiaddr>,
    /// Encrypts the identity key and session state at rest (Argon2id); `None` stores them
    /// unprotected (the node says so when it starts).
    pub passphrase: Option<Passphrase>,
}

/// A passphrase; never printed.
#[derive(Clone)]
pub struct Passphrase(pub String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Config {
    /// Defaults for a data dir: default listen addresses, mDNS on, 8 MiB cache, 7-day TTL.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            name: None,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: true,
            cache_bytes: SledConfig::default().cache_bytes,
            message_ttl: DEFAULT_MESSAGE_TTL,
            dial_on_start: true,
            relay: None,
            external_addrs: Vec::new(),
            passphrase: None,
        }
    }
}

/// What can go wrong in a node operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has shut down.
    #[error("the node has stopped")]
    NodeStopped,
    /// A store failure (disk full, damaged database, …).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Identity or contact-code problem.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Network setup failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A parameter is wrong; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// A peer, chat or message is unknown.
    #[error("{0}")]
    NotFound(String),
    /// The peer is not in our contacts, so we hold no key to write to them.
    #[error("{0} is not a contact; add them with their contact code first")]
    NotAContact(PeerId),
    /// We are in no group with this id (never joined, or a typo).
    #[error("no group {}; the chats list shows the groups you are in", .0.to_hex())]
    NoSuchGroup(GroupId),
    /// We were in this group but left or were removed: we can read it, not change it.
    #[error("you are not a member of this group any more")]
    NotAMember(GroupId),
    /// Sealing or opening failed on our side (a key or the cipher refused): not the
    /// caller's fault, and retrying will not help.
    #[error("encryption failed: {0}")]
    Crypto(String),
    /// A failure inside the node that no parameter causes: encoding our own data,
    /// no randomness from the operating system.
    #[error("internal error: {0}")]
    Internal(String),
    /// Dialling failed.
    #[error("could not connect to {addr}: {detail}")]
    Dial {
        /// Where we tried.
        addr: String,
        /// Why it failed.
        detail: String,
    },
    /// The data dir is unusable.
    #[error("data dir {path}: {detail}")]
    DataDir {
        /// The path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The outbox is full; wait until queued messages are delivered.
    #[error("too many undelivered messages ({0}); wait until some are delivered")]
    OutboxFull(usize),
    /// Too much is under way already; try again shortly.
    #[error("busy: {0}; try again shortly")]
    Busy(String),
}

/// The result type of node operations.
pub type NodeResult<T> = Result<T, NodeError>;

type Reply<T> = oneshot::Sender<NodeResult<T>>;

/// A request to the actor, with the channel its answer goes back on.
#[derive(Debug)]
pub(crate) enum Command {
    Identity(Reply<IdentityInfo>),
    SetName(String, Reply<()>),
    Connect(Multiaddr, Reply<PeerId>),
    Peers(Reply<Vec<PeerInfo>>),
    Relays(Reply<Vec<RelayInfo>>),
    FindPeer(PeerId, Reply<Vec<String>>),
    Nearby(Reply<Vec<NearbyPeer>>),
    ContactAdd {
        code: String,
        name: Option<String>,
        reply: Reply<PeerId>,
    },
    Contacts(Reply<Vec<ContactInfo>>),
    ContactAccept(PeerId, Reply<()>),
    ContactRefuse(PeerId, Reply<()>),
    SafetyNumber(PeerId, Reply<String>),
    ContactVerify(PeerId, Reply<()>),
    Send {
        to: ChatId,
        text: String,
        reply: Reply<MessageId>,
    },
    Chats(Reply<Vec<ChatInfo>>),
    Messages {
        chat: ChatId,
        limit: usize,
        before: Option<MessageId>,
        reply: Reply<Vec<MessageInfo>>,
    },
    MarkRead(ChatId, Reply<()>),
    GroupCreate {
        name: String,
        members: Vec<PeerId>,
        reply: Reply<GroupId>,
    },
    GroupAdd {
        group: GroupId,
        member: PeerId,
        reply: Reply<()>,
    },
    GroupRemove {
        group: GroupId,
        /// `None`: we leave.
        member: Option<PeerId>,
        reply: Reply<()>,
    },
    GroupMembers(GroupId, Reply<Vec<String>>),
    Shutdown(Reply<()>),
}

struct Inner {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<crate::event::Event>,
    peer_id: PeerId,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A handle to a running node. Clone it freely; all clones talk to the same actor.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.inner.peer_id)
            .finish_non_exhaustive()
    }
}

fn prepare_data_dir(dir: &Path) -> NodeResult<()> {
    let err = |detail: String| NodeError::DataDir {
        path: dir.display().to_string(),
        detail,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

impl Node {
    /// Opens the data dir, starts listening and spawns the actor. Returns once every
    /// listener has an address (or `LISTEN_TIMEOUT` passed). Must run inside a tokio runtime.
    pub async fn start(config: Config) -> NodeResult<Node> {
        Ok(Self::start_subscribed(config).await?.0)
    }

    /// Like [`Node::start`], and subscribes to events before the actor runs, so that not even
    /// the first event (a contact connecting right at start) can be missed.
    pub async fn start_subscribed(config: Config) -> NodeResult<(Node, EventStream)> {
        prepare_data_dir(&config.data_dir)?;
        let (identity, rest) = Identity::load_or_create_with(
            &config.data_dir.join("identity.key"),
            config.passphrase.as_ref().map(|p| p.0.as_str()),
        )?;
        if rest.is_none() {
            tracing::warn!(
                "keys are stored unprotected in {}: anyone who copies it can read new \
                 messages until the next exchange; set a passphrase with --passphrase-file \
                 or BONGHWA_PASSPHRASE",
                config.data_dir.display()
            );
        }
        let db_dir = config.data_dir.join("db");
        let sled_config = SledConfig {
            cache_bytes: config.cache_bytes,
        };
        let store = tokio::task::spawn_blocking(move || SledStore::open(&db_dir, &sled_config))
            .await
            .map_err(|e| NodeError::Store(StoreError::Io(e.to_string())))??;
        let (events, first) = broadcast::channel(EVENT_CAPACITY);
        let (commands, receiver) = mpsc::channel(COMMAND_CAPACITY);
        let peer_id = identity.peer_id();
        let actor = actor::Actor::new(
            config,
            identity,
            rest,
            Box::new(store),
            receiver,
            events.clone(),
        )
        .await?;
        let task = tokio::spawn(actor.run());
        let node = Node {
            inner: Arc::new(Inner {
                commands,
                events,
                peer_id,
                task: Mutex::new(Some(task)),
            }),
        };
        Ok((node, EventStream::new(first)))
    }

    /// Our peer id (known without asking the actor).
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// Subscribes to events from now on.
    pub fn subscribe(&self) -> EventStream {
        EventStream::new(self.inner.events.subscribe())
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> NodeResult<T> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(make(reply))
            .await
            .map_err(|_| NodeError::NodeStopped)?;
        answer.await.map_err(|_| NodeError::NodeStopped)?
    }

    /// Our peer id, name, contact code and listen addresses.
    pub async fn identity(&self) -> NodeResult<IdentityInfo> {
        self.ask(Command::Identity).await
    }

    /// Changes our display name (carried in our card from the next message on).
    pub async fn set_name(&self, name: &str) -> NodeResult<()> {
        self.ask(|r| Command::SetName(name.to_owned(), r)).await
    }

    /// The addresses `peer` published in the DHT (a lookup through our relays).
    pub async fn find_peer(&self, peer: &str) -> NodeResult<Vec<String>> {
        let peer = parse_peer(peer)?;
        self.ask(|r| Command::FindPeer(peer, r)).await
    }

    /// Dials `addr` and returns the peer id that answered. An address that is only
    /// `/p2p/<peer id>` is looked up in the DHT first.
    pub async fn connect(&self, addr: &str) -> NodeResult<PeerId> {
        let parsed: Multiaddr = addr.parse().map_err(|e| {
            NodeError::InvalidArgument(format!(
                "{addr:?} is not a multiaddr ({e}); expected e.g. /ip4/127.0.0.1/tcp/4001"
            ))
        })?;
        match tokio::time::timeout(CONNECT_TIMEOUT, self.ask(|r| Command::Connect(parsed, r))).await
        {
            Ok(result) => result,
            Err(_) => Err(NodeError::Dial {
                addr: addr.to_owned(),
                detail: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Peers we hold a connection to.
    pub async fn peers(&self) -> NodeResult<Vec<PeerInfo>> {
        self.ask(Command::Peers).await
    }

    /// Our relays and the state of our mailbox at each.
    pub async fn relays(&self) -> NodeResult<Vec<RelayInfo>> {
        self.ask(Command::Relays).await
    }

    /// LAN peers found by mDNS that told us their card.
    pub async fn nearby(&self) -> NodeResult<Vec<NearbyPeer>> {
        self.ask(Command::Nearby).await
    }

    /// Adds (or accepts) a contact from their contact code; `name` is a local alias.
    pub async fn contact_add(&self, code: &str, name: Option<&str>) -> NodeResult<PeerId> {
        self.ask(|reply| Command::ContactAdd {
            code: code.to_owned(),
            name: name.map(str::to_owned),
            reply,
        })
        .await
    }

    /// Accepts a contact request: the stranger becomes a contact, with the card they sent.
    pub async fn contact_accept(&self, peer: &str) -> NodeResult<()> {
        let peer = parse_peer(peer)?;
        self.ask(|r| Command::ContactAccept(peer, r)).await
    }

    /// Refuses a contact request: their chat is hidden and later messages are dropped.
    /// Adding their contact code later undoes it.
    pub async fn contact_refuse(&self, peer: &str) -> NodeResult<()> {
        let peer = parse_peer(peer)?;
        self.ask(|r| Command::ContactRefuse(peer, r)).await
    }

    /// Accepted contacts.
    pub async fn contacts(&self) -> NodeResult<Vec<ContactInfo>> {
        self.ask(Command::Contacts).await
    }

    /// The safety number shared with a contact.
    pub async fn safety_number(&self, peer: &str) -> NodeResult<String> {
        let peer = parse_peer(peer)?;
        self.ask(|r| Command::SafetyNumber(peer, r)).await
    }

    /// Records that the user compared safety numbers with a contact.
    pub async fn contact_verify(&self, peer: &str) -> NodeResult<()> {
        let peer = parse_peer(peer)?;
        self.ask(|r| Command::ContactVerify(peer, r)).await
    }

    /// Queues a text for a contact or a group (`to`: a peer id or a group id). Returns once
    /// it is durably in the outbox (or, for a group, stored and published).
    pub async fn send(&self, to: &str, text: &str) -> NodeResult<MessageId> {
        let to = parse_chat(to)?;
        self.ask(|reply| Command::Send {
            to,
            text: text.to_owned(),
            reply,
        })
        .await
    }

    /// All chats, most recent activity first.
    pub async fn chats(&self) -> NodeResult<Vec<ChatInfo>> {
        self.ask(Command::Chats).await
    }

    /// A page of a chat's history, oldest first: up to `limit` messages before `before`.
    pub async fn messages(
        &self,
        chat: &str,
        limit: Option<usize>,
        before: Option<&str>,
    ) -> NodeResult<Vec<MessageInfo>> {
        let chat = parse_chat(chat)?;
        let before = before
            .map(|b| {
                MessageId::from_hex(b).ok_or_else(|| {
                    NodeError::InvalidArgument(format!("{b:?} is not a message id (64 hex digits)"))
                })
            })
            .transpose()?;
        let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        self.ask(|reply| Command::Messages {
            chat,
            limit,
            before,
            reply,
        })
        .await
    }

    /// Marks every message of a chat read.
    pub async fn mark_read(&self, chat: &str) -> NodeResult<()> {
        let chat = parse_chat(chat)?;
        self.ask(|r| Command::MarkRead(chat, r)).await
    }

    /// Creates a group with us and `members` (contacts, who are invited); its id.
    pub async fn group_create(&self, name: &str, members: &[String]) -> NodeResult<String> {
        let members = members
            .iter()
            .map(|m| parse_peer(m))
            .collect::<NodeResult<Vec<_>>>()?;
        let id = self
            .ask(|reply| Command::GroupCreate {
                name: name.to_owned(),
                members,
                reply,
            })
            .await?;
        Ok(id.to_hex())
    }

    /// Adds a contact to a group we are in (they are invited).
    pub async fn group_add(&self, group: &str, member: &str) -> NodeResult<()> {
        let group = parse_group(group)?;
        let member = parse_peer(member)?;
        self.ask(|reply| Command::GroupAdd {
            group,
            member,
            reply,
        })
        .await
    }

    /// Removes a member from a group we are in; everyone else moves to new keys.
    pub async fn group_remove(&self, group: &str, member: &str) -> NodeResult<()> {
        let group = parse_group(group)?;
        let member = parse_peer(member)?;
        self.ask(|reply| Command::GroupRemove {
            group,
            member: Some(member),
            reply,
        })
        .await
    }

    /// Leaves a group; the others move to new keys.
    pub async fn group_leave(&self, group: &str) -> NodeResult<()> {
        let group = parse_group(group)?;
        self.ask(|reply| Command::GroupRemove {
            group,
            member: None,
            reply,
        })
        .await
    }

    /// A group's current members (peer ids).
    pub async fn group_members(&self, group: &str) -> NodeResult<Vec<String>> {
        let group = parse_group(group)?;
        self.ask(|reply| Command::GroupMembers(group, reply)).await
    }

    /// Flushes the store, closes every connection and stops the actor. Idempotent.
    pub async fn shutdown(&self) -> NodeResult<()> {
        let result = self.ask(Command::Shutdown).await;
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        match result {
            Err(NodeError::NodeStopped) => Ok(()),
            other => other,
        }
    }
}

fn parse_peer(peer: &str) -> NodeResult<PeerId> {
    peer.parse().map_err(|_| {
        NodeError::InvalidArgument(format!("{peer:?} is not a peer id (expected 12D3Koo…)"))
    })
}

fn parse_group(group: &str) -> NodeResult<GroupId> {
    GroupId::from_hex(group).ok_or_else(|| {
        NodeError::InvalidArgument(format!("{group:?} is not a group id (64 hex digits)"))
    })
}

fn parse_chat(chat: &str) -> NodeResult<ChatId> {
    chat.parse()
        .map_err(|e: crate::model::BadChatId| NodeError::InvalidArgument(e.to_string()))
}

/// A chat message's text must say something and fit [`crate::wire::MAX_TEXT_BYTES`].
fn check_text(text: &str) -> NodeResult<()> {
    if text.trim().is_empty() {
        return Err(NodeError::InvalidArgument("the message is empty".into()));
    }
    if text.len() > crate::wire::MAX_TEXT_BYTES {
        return Err(NodeError::InvalidArgument(format!(
            "the message is {} bytes; the limit is {} bytes",
            text.len(),
            crate::wire::MAX_TEXT_BYTES
        )));
    }
    Ok(())
}

/// The relays among `addrs`: addresses that end in `/p2p/<peer id>`.
fn relay_addrs(addrs: &[Multiaddr]) -> Vec<(PeerId, Multiaddr)> {
    addrs
        .iter()
        .filter_map(|addr| match addr.iter().last() {
            Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some((peer, addr.clone())),
            _ => None,
        })
        .take(mail_client::MAX_CARD_RELAYS)
        .collect()
}

/// Milliseconds since the Unix epoch, from the system clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
