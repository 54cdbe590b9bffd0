//! A relay's part in group chats. It holds no keys and no membership; it
//!
//! - joins a group topic when one of its clients does, and forwards what is well formed,
//!   signed, and for that topic's group (ciphertext, as far as it can tell);
//! - keeps the items it carried or was pushed, up to [`RELAY_GROUP_ITEMS`] and
//!   [`RELAY_GROUP_BYTES`] per group, in the same group log members use;
//! - answers `/bonghwa/sync/1` for those groups to any client that names the group's id
//!   (the topic is a hash of the id, so the id is what a member knows and a stranger
//!   watching the relay's subscriptions does not).
//!
//! So a member whose fellows are all offline when it comes back catches up from the relay,
//! as with direct messages and the mailbox.

use libp2p::PeerId;
use libp2p::gossipsub::{IdentTopic, MessageAcceptance, TopicHash};

use super::actor::Actor;
use crate::crypto::group::{GroupId, TOPIC_PREFIX, topic_for};
use crate::model::RelayGroupUsage;
use crate::store::StoreError;
use crate::wire::group::LogItem;

/// Group topics a relay carries at most.
const MAX_RELAYED_TOPICS: usize = 4_096;
/// Items a relay keeps per group; beyond it, newer items are forwarded but not kept.
const RELAY_GROUP_ITEMS: u64 = 20_000;
/// Bytes of items a relay keeps per group.
const RELAY_GROUP_BYTES: u64 = 32 * 1024 * 1024;

impl Actor {
    /// A client joined a group topic, so the relay joins it too and carries its traffic
    /// between members that reach each other only through the relay. That subscription
    /// is how a member asks. Bounded by [`MAX_RELAYED_TOPICS`].
    pub(super) fn relay_topic(&mut self, topic: &TopicHash, client: PeerId) {
        if self.mailbox.is_none()
            || !topic.as_str().starts_with(TOPIC_PREFIX)
            || self.groups.relayed.contains(topic)
        {
            return;
        }
        if self.groups.relayed.len() >= MAX_RELAYED_TOPICS {
            tracing::warn!(
                "relaying {MAX_RELAYED_TOPICS} group topics already; {topic} not joined"
            );
            return;
        }
        let joined = IdentTopic::new(topic.as_str());
        match self.subscribe_scored(joined) {
            Ok(_) => {
                tracing::info!(%client, %topic, "relaying a group topic");
                self.groups.relayed.insert(topic.clone());
            }
            Err(e) => tracing::warn!("cannot join group topic {topic}: {e}"),
        }
    }

    /// A gossip item on a topic we relay: forwarded if well formed, signed and for the
    /// topic's group, and kept if it fits the group's quota.
    pub(super) fn relay_item(&mut self, topic: &TopicHash, bytes: &[u8]) -> MessageAcceptance {
        let Ok(item) = LogItem::decode(bytes) else {
            return MessageAcceptance::Reject;
        };
        if topic_hash(&item.group_id) != *topic {
            return MessageAcceptance::Reject;
        }
        if self.keep_relayed(&item, bytes) {
            // Flushed with the batch (`commit_groups`).
            self.groups.dirty = true;
        }
        MessageAcceptance::Accept
    }

    /// Whether we answer sync for `group` as a relay that carries it.
    pub(super) fn relays_group(&self, group: &GroupId) -> bool {
        self.mailbox.is_some() && self.groups.relayed.contains(&topic_hash(group))
    }

    /// Items a member pushed to us as the group's relay: kept like gossip (checked the
    /// same way), flushed once. Returns how many were new.
    pub(super) fn take_relayed(&mut self, group: &GroupId, items: &[Vec<u8>]) -> usize {
        let mut new = 0;
        for bytes in items {
            let Ok(item) = LogItem::decode(bytes) else {
                continue;
            };
            if item.group_id == *group && self.keep_relayed(&item, bytes) {
                new += 1;
            }
        }
        if new > 0
            && let Err(e) = self.store.flush()
        {
            tracing::error!("cannot make relayed group items durable: {e:#}");
        }
        new
    }

    /// Adds one item to the group's log if it is new and within the quota (not flushed).
    fn keep_relayed(&mut self, item: &LogItem, bytes: &[u8]) -> bool {
        let chat = item.group_id.to_hex();
        let usage = match self.store.relay_group_usage(&item.group_id) {
            Ok(usage) => usage.unwrap_or_default(),
            // Counting again from zero lets a damaged record heal on the next write.
            Err(e @ StoreError::Decode { .. }) => {
                tracing::warn!("{e:#}; counting the group's usage from zero");
                RelayGroupUsage::default()
            }
            Err(e) => {
                tracing::error!("cannot read a relayed group's usage: {e:#}");
                return false;
            }
        };
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let used = usage.bytes.saturating_add(size);
        if usage.items >= RELAY_GROUP_ITEMS || used > RELAY_GROUP_BYTES {
            tracing::debug!(group = %chat, "relayed group is at its quota; item not kept");
            return false;
        }
        let id = LogItem::id_of(bytes);
        match self.store.group_item_put(&chat, item.hlc, &id, bytes) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::error!("cannot keep a relayed group item: {e:#}");
                return false;
            }
        }
        let usage = RelayGroupUsage {
            items: usage.items.saturating_add(1),
            bytes: used,
        };
        if let Err(e) = self.store.set_relay_group_usage(&item.group_id, usage) {
            tracing::error!("cannot record a relayed group's usage: {e:#}");
        }
        true
    }
}

fn topic_hash(group: &GroupId) -> TopicHash {
    IdentTopic::new(topic_for(group)).hash()
}
