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
//!
//! [`GroupRelay`] decides and keeps the items in the store it is given; the actor joins the
//! topics it names and reports the gossip verdicts it returns.

use std::collections::BTreeSet;

use libp2p::gossipsub::{IdentTopic, MessageAcceptance, TopicHash};

use crate::crypto::group::{GroupId, TOPIC_PREFIX, topic_for};
use crate::model::RelayGroupUsage;
use crate::store::{Store, StoreError};
use crate::wire::group::LogItem;

/// Group topics a relay carries at most.
const MAX_RELAYED_TOPICS: usize = 4_096;
/// Items a relay keeps per group; beyond it, newer items are forwarded but not kept.
const RELAY_GROUP_ITEMS: u64 = 20_000;
/// Bytes of items a relay keeps per group.
const RELAY_GROUP_BYTES: u64 = 32 * 1024 * 1024;

/// The group topics a relay carries for its clients, and what it kept of them.
#[derive(Debug, Default)]
pub(super) struct GroupRelay {
    /// Group topics joined for clients; bounded by [`MAX_RELAYED_TOPICS`].
    relayed: BTreeSet<TopicHash>,
    /// Groups with items kept from gossip since the last flush (flushed with the actor's
    /// batch).
    unflushed: BTreeSet<GroupId>,
}

impl GroupRelay {
    /// A client joined `topic`: the topic to join too, if it is a group topic we do not
    /// carry yet and there is room. That subscription is how a member asks. Report a
    /// successful join with [`GroupRelay::joined`].
    pub(super) fn on_subscribed(&self, topic: &TopicHash) -> Option<IdentTopic> {
        if !topic.as_str().starts_with(TOPIC_PREFIX) || self.relayed.contains(topic) {
            return None;
        }
        if self.relayed.len() >= MAX_RELAYED_TOPICS {
            tracing::warn!(
                "relaying {MAX_RELAYED_TOPICS} group topics already; {topic} not joined"
            );
            return None;
        }
        Some(IdentTopic::new(topic.as_str()))
    }

    /// We joined `topic` to carry it.
    pub(super) fn joined(&mut self, topic: TopicHash) {
        self.relayed.insert(topic);
    }

    /// Whether we carry `topic` for clients.
    pub(super) fn carries(&self, topic: &TopicHash) -> bool {
        self.relayed.contains(topic)
    }

    /// Whether we answer sync for `group` as a relay that carries it.
    pub(super) fn carries_group(&self, group: &GroupId) -> bool {
        self.relayed.contains(&topic_hash(group))
    }

    /// A gossip item on a topic we carry: forwarded if well formed, signed and for the
    /// topic's group, and kept in `store` (not flushed) if it fits the group's quota.
    pub(super) fn on_gossip(
        &mut self,
        store: &dyn Store,
        topic: &TopicHash,
        bytes: &[u8],
    ) -> MessageAcceptance {
        let Ok(item) = LogItem::decode(bytes) else {
            return MessageAcceptance::Reject;
        };
        if topic_hash(&item.group_id) != *topic {
            return MessageAcceptance::Reject;
        }
        if keep(store, &item, bytes) {
            self.unflushed.insert(item.group_id);
        }
        MessageAcceptance::Accept
    }

    /// The groups with items kept since the last call (the batch must flush the store).
    pub(super) fn take_unflushed(&mut self) -> BTreeSet<GroupId> {
        std::mem::take(&mut self.unflushed)
    }

    /// Items a member pushed to us as the group's relay: kept like gossip (checked the
    /// same way), flushed once. Returns how many were new.
    pub(super) fn take_pushed(
        &self,
        store: &dyn Store,
        group: &GroupId,
        items: &[Vec<u8>],
    ) -> usize {
        let mut new = 0;
        for bytes in items {
            let Ok(item) = LogItem::decode(bytes) else {
                continue;
            };
            if item.group_id == *group && keep(store, &item, bytes) {
                new += 1;
            }
        }
        if new > 0
            && let Err(e) = store.flush()
        {
            tracing::error!("cannot make relayed group items durable: {e:#}");
        }
        new
    }
}

/// Adds one item to the group's log if it is new and within the quota (not flushed).
fn keep(store: &dyn Store, item: &LogItem, bytes: &[u8]) -> bool {
    let chat = item.group_id.to_hex();
    let usage = match store.relay_group_usage(&item.group_id) {
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
    match store.group_item_put(&chat, item.hlc, &id, bytes) {
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
    if let Err(e) = store.set_relay_group_usage(&item.group_id, usage) {
        tracing::error!("cannot record a relayed group's usage: {e:#}");
    }
    true
}

fn topic_hash(group: &GroupId) -> TopicHash {
    IdentTopic::new(topic_for(group)).hash()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_relay_joins_each_group_topic_once_and_no_other_topic() {
        let mut relay = GroupRelay::default();
        let group = GroupId([3; 32]);
        let topic = topic_hash(&group);
        let join = relay.on_subscribed(&topic).map(|t| t.hash());
        assert_eq!(join, Some(topic.clone()));
        relay.joined(topic.clone());
        assert!(relay.carries(&topic) && relay.carries_group(&group));
        assert!(relay.on_subscribed(&topic).is_none());
        assert!(
            relay
                .on_subscribed(&IdentTopic::new("chat").hash())
                .is_none()
        );
        assert!(!relay.carries_group(&GroupId([4; 32])));
    }

    #[test]
    fn garbage_on_a_relayed_topic_is_rejected_and_not_kept() {
        let store = MemoryStore::new();
        let mut relay = GroupRelay::default();
        let topic = topic_hash(&GroupId([3; 32]));
        relay.joined(topic.clone());
        let verdict = relay.on_gossip(&store, &topic, b"not an item");
        assert!(matches!(verdict, MessageAcceptance::Reject));
        assert!(relay.take_unflushed().is_empty());
        assert_eq!(
            relay.take_pushed(&store, &GroupId([3; 32]), &[b"x".to_vec()]),
            0
        );
    }
}
