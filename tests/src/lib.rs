//! The network harness for Bonghwa's scenarios and benchmarks.
//!
//! - [`TestNode`]: a named in-process node (`alice`, `bob`, …) on loopback, mDNS off.
//! - [`RpcProcess`]: the real `bonghwa rpc` binary as a child process, driven over its
//!   JSON-RPC stdin/stdout, for scenarios that kill, restart or isolate a node.
//! - [`netns`]: network namespaces joined by veth pairs, for LAN (mDNS) scenarios.
//! - [`hostile`]: a raw libp2p peer that speaks `/bonghwa/dm/1` with arbitrary bytes.
//!
//! Waiting is always for an outcome (an event, a status) with a generous upper bound
//! that only turns a hang into a failure; nothing here asserts how fast something was.

// Test infrastructure: a failed expectation here is a failed test.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod bench;
pub mod gossip_attacker;
pub mod hostile;
pub mod netns;
pub mod process;
pub mod relay;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bonghwa_core::model::MessageStatus;
use bonghwa_core::node::MessageInfo;
use bonghwa_core::{Config, Event, EventStream, Node};

pub use process::RpcProcess;

/// Upper bound for any single wait in a scenario: reaching it means the scenario failed.
pub const WAIT: Duration = Duration::from_secs(60);

/// Logs of in-process nodes go to the test's output when `RUST_LOG` is set.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Config for a node on loopback only, with mDNS off (the host namespace must never see
/// multicast from tests).
pub fn loopback_config(dir: &Path, name: &str) -> Config {
    let mut config = Config::new(dir);
    config.name = Some(name.to_owned());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("static multiaddr")];
    config
}

/// A named in-process node with its own data dir and an event subscription.
pub struct TestNode {
    pub name: String,
    pub node: Node,
    pub events: EventStream,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts `name` in a fresh temporary data dir.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join(name);
        let mut node = Self::start_in(name, &dir).await?;
        node._tmp = Some(tmp);
        Ok(node)
    }

    /// Starts `name` in `dir` (kept after the test).
    pub async fn start_in(name: &str, dir: &Path) -> anyhow::Result<Self> {
        init_logging();
        let node = Node::start(loopback_config(dir, name))
            .await
            .with_context(|| format!("starting {name}"))?;
        let events = node.subscribe();
        Ok(Self {
            name: name.to_owned(),
            node,
            events,
            dir: dir.to_owned(),
            _tmp: None,
        })
    }

    /// Shuts the node down cleanly and starts it again on the same data dir.
    pub async fn restart(self) -> anyhow::Result<Self> {
        self.node.shutdown().await?;
        let mut next = Self::start_in(&self.name, &self.dir).await?;
        next._tmp = self._tmp;
        Ok(next)
    }

    /// Stops the node and returns what is needed to start it again later.
    pub async fn stop(self) -> anyhow::Result<Stopped> {
        self.node.shutdown().await?;
        Ok(Stopped {
            name: self.name,
            dir: self.dir,
            _tmp: self._tmp,
        })
    }

    pub fn peer_id(&self) -> String {
        self.node.peer_id().to_string()
    }

    pub async fn code(&self) -> anyhow::Result<String> {
        Ok(self.node.identity().await?.contact_code)
    }

    pub async fn addr(&self) -> anyhow::Result<String> {
        let identity = self.node.identity().await?;
        identity
            .addrs
            .into_iter()
            .next()
            .context("node has no listen address")
    }

    /// Waits for the first event matching `pred`, skipping others.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Event) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .with_context(|| format!("{}: gave up waiting for {what}", self.name))?
                .with_context(|| format!("{}: node stopped while waiting for {what}", self.name))?;
            if let Some(found) = pred(&event) {
                return Ok(found);
            }
        }
    }

    /// Waits until message `id` reaches `status` (or a later one).
    pub async fn wait_status(&mut self, id: &str, status: MessageStatus) -> anyhow::Result<()> {
        // It may already be there.
        if let Some(m) = self.find_message(id).await?
            && status_at_least(m.status, status)
        {
            return Ok(());
        }
        let id = id.to_owned();
        self.wait_for(
            &format!("{id} to become {}", status.as_str()),
            |e| match e {
                Event::MessageStatus {
                    id: got, status: s, ..
                } if *got == id && status_at_least(*s, status) => Some(()),
                _ => None,
            },
        )
        .await
    }

    /// Waits for a message with `text` to arrive.
    pub async fn wait_message(&mut self, text: &str) -> anyhow::Result<MessageInfo> {
        let text = text.to_owned();
        self.wait_for(&format!("message {text:?}"), |e| match e {
            Event::MessageReceived { message, .. } if message.text == text => {
                Some(MessageInfo::from(message))
            }
            _ => None,
        })
        .await
    }

    async fn find_message(&self, id: &str) -> anyhow::Result<Option<MessageInfo>> {
        for chat in self.node.chats().await? {
            let messages = self.node.messages(&chat.id, Some(1000), None).await?;
            if let Some(m) = messages.into_iter().find(|m| m.id == id) {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Whole history of the direct chat with `other`, oldest first.
    pub async fn history_with(&self, other: &TestNode) -> anyhow::Result<Vec<MessageInfo>> {
        Ok(self
            .node
            .messages(&other.peer_id(), Some(1000), None)
            .await?)
    }
}

/// A node that was shut down, ready to start again.
pub struct Stopped {
    pub name: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Stopped {
    pub async fn start(self) -> anyhow::Result<TestNode> {
        let mut node = TestNode::start_in(&self.name, &self.dir).await?;
        node._tmp = self._tmp;
        Ok(node)
    }
}

fn status_at_least(have: MessageStatus, want: MessageStatus) -> bool {
    let rank = |s: MessageStatus| match s {
        MessageStatus::Pending => 0,
        MessageStatus::Sent => 1,
        MessageStatus::Delivered => 2,
        MessageStatus::Read => 3,
        MessageStatus::Failed => -1,
    };
    rank(have) >= rank(want)
}

/// Connects `a` to `b` and makes each the other's contact.
pub async fn befriend(a: &mut TestNode, b: &mut TestNode) -> anyhow::Result<()> {
    a.node.connect(&b.addr().await?).await?;
    a.node.contact_add(&b.code().await?, None).await?;
    b.node.contact_add(&a.code().await?, None).await?;
    Ok(())
}

/// Sends `text` from `from` to `to` and waits until `to` has it and `from` sees it delivered.
pub async fn send_and_wait(
    from: &mut TestNode,
    to: &mut TestNode,
    text: &str,
) -> anyhow::Result<String> {
    let id = from.node.send(&to.peer_id(), text).await?.to_hex();
    let got = to.wait_message(text).await?;
    if got.id != id || got.from != from.peer_id() {
        bail!(
            "{} got {got:?}, expected id {id} from {}",
            to.name,
            from.name
        );
    }
    from.wait_status(&id, MessageStatus::Delivered).await?;
    Ok(id)
}
