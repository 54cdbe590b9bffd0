//! [`MemoryStore`]: the whole store in ordered maps, for unit tests of the layers above.
//!
//! It follows the same rules as [`SledStore`](super::SledStore) (the shared conformance
//! suite checks both) but forgets everything when dropped, and `flush` does nothing.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{Store, StoreError, StoreResult};
use crate::model::{
    ChatMeta, Contact, HeldMail, Hlc, MessageId, MessageStatus, OutboxEntry, StoredMessage,
};

/// A store that lives in memory only. Test infrastructure: fine for unit tests and
/// simulations, useless for a real node, which must survive restarts.
#[derive(Debug, Default)]
pub struct MemoryStore {
    maps: Mutex<Maps>,
}

/// Every table of the store. One lock around all of them makes each operation atomic.
#[derive(Debug, Default)]
struct Maps {
    settings: BTreeMap<String, Vec<u8>>,
    contacts: BTreeMap<String, Contact>,
    /// Messages keyed the way the sled store orders them: chat, then HLC, then id.
    messages: BTreeMap<(String, Hlc, MessageId), StoredMessage>,
    /// Where each message lives in `messages`; also the dedup set.
    msg_index: BTreeMap<MessageId, (String, Hlc, MessageId)>,
    chat_meta: BTreeMap<String, ChatMeta>,
    outbox: BTreeMap<MessageId, OutboxEntry>,
    mail: BTreeMap<(String, u64), HeldMail>,
    /// Group logs: group, then HLC, then id.
    group_log: BTreeMap<(String, Hlc, MessageId), Vec<u8>>,
    /// Where each group item lives in `group_log`.
    group_index: BTreeMap<(String, MessageId), Hlc>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The maps, even if a test thread panicked while holding the lock: every
    /// operation leaves them consistent before it can panic, so the data is still good.
    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.maps().settings.get(key).cloned())
    }

    fn set_setting(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.maps().settings.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn remove_setting(&self, key: &str) -> StoreResult<()> {
        self.maps().settings.remove(key);
        Ok(())
    }

    fn settings_with_prefix(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        Ok(self
            .maps()
            .settings
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn contact(&self, peer_id: &str) -> StoreResult<Option<Contact>> {
        Ok(self.maps().contacts.get(peer_id).cloned())
    }

    fn put_contact(&self, contact: &Contact) -> StoreResult<()> {
        self.maps()
            .contacts
            .insert(contact.peer_id.clone(), contact.clone());
        Ok(())
    }

    fn contacts(&self) -> StoreResult<Vec<Contact>> {
        Ok(self.maps().contacts.values().cloned().collect())
    }

    fn insert_message(&self, message: &StoredMessage) -> StoreResult<bool> {
        let mut maps = self.maps();
        if maps.msg_index.contains_key(&message.id) {
            return Ok(false);
        }
        let key = (message.chat.clone(), message.hlc, message.id);
        maps.msg_index.insert(message.id, key.clone());
        maps.messages.insert(key, message.clone());
        let meta = maps.chat_meta.entry(message.chat.clone()).or_default();
        if !message.outgoing {
            meta.unread = meta.unread.saturating_add(1);
        }
        let is_newest = meta
            .last
            .as_ref()
            .is_none_or(|last| (message.hlc, message.id) > (last.hlc, last.id));
        if is_newest {
            meta.last = Some(message.clone());
        }
        Ok(true)
    }

    fn message(&self, id: &MessageId) -> StoreResult<Option<StoredMessage>> {
        let maps = self.maps();
        Ok(maps
            .msg_index
            .get(id)
            .and_then(|key| maps.messages.get(key))
            .cloned())
    }

    fn set_status(
        &self,
        id: &MessageId,
        status: MessageStatus,
    ) -> StoreResult<Option<StoredMessage>> {
        let mut maps = self.maps();
        let Some(key) = maps.msg_index.get(id).cloned() else {
            return Ok(None);
        };
        let Some(message) = maps.messages.get_mut(&key) else {
            // The index points nowhere: the maps were edited behind our back.
            return Err(StoreError::Decode { what: "message" });
        };
        if !message.status.can_become(status) {
            return Ok(None);
        }
        message.status = status;
        let updated = message.clone();
        if let Some(meta) = maps.chat_meta.get_mut(&updated.chat)
            && let Some(last) = &mut meta.last
            && last.id == updated.id
        {
            *last = updated.clone();
        }
        Ok(Some(updated))
    }

    fn messages(
        &self,
        chat: &str,
        limit: usize,
        before: Option<(Hlc, MessageId)>,
    ) -> StoreResult<Vec<StoredMessage>> {
        let maps = self.maps();
        let oldest = (chat.to_owned(), Hlc::default(), MessageId([0; 32]));
        let range = match before {
            Some((hlc, id)) => maps.messages.range(oldest..(chat.to_owned(), hlc, id)),
            None => {
                let newest = Hlc {
                    ms: u64::MAX,
                    counter: u32::MAX,
                };
                maps.messages
                    .range(oldest..=(chat.to_owned(), newest, MessageId([u8::MAX; 32])))
            }
        };
        let mut newest_first: Vec<StoredMessage> = range
            .rev()
            .take(limit)
            .map(|(_, message)| message.clone())
            .collect();
        newest_first.reverse();
        Ok(newest_first)
    }

    fn chats(&self) -> StoreResult<Vec<(String, ChatMeta)>> {
        Ok(self
            .maps()
            .chat_meta
            .iter()
            .map(|(chat, meta)| (chat.clone(), meta.clone()))
            .collect())
    }

    fn mark_read(&self, chat: &str) -> StoreResult<()> {
        if let Some(meta) = self.maps().chat_meta.get_mut(chat) {
            meta.unread = 0;
        }
        Ok(())
    }

    fn outbox_put(&self, entry: &OutboxEntry) -> StoreResult<()> {
        self.maps().outbox.insert(entry.id, entry.clone());
        Ok(())
    }

    fn outbox_remove(&self, id: &MessageId) -> StoreResult<()> {
        self.maps().outbox.remove(id);
        Ok(())
    }

    fn outbox(&self) -> StoreResult<Vec<OutboxEntry>> {
        Ok(self.maps().outbox.values().cloned().collect())
    }

    fn mail_put(&self, mail: &HeldMail) -> StoreResult<()> {
        self.maps()
            .mail
            .insert((mail.recipient.clone(), mail.seq), mail.clone());
        Ok(())
    }

    fn mail(&self, recipient: &str, seq: u64) -> StoreResult<Option<HeldMail>> {
        Ok(self.maps().mail.get(&(recipient.to_owned(), seq)).cloned())
    }

    fn mail_remove(&self, recipient: &str, seq: u64) -> StoreResult<()> {
        self.maps().mail.remove(&(recipient.to_owned(), seq));
        Ok(())
    }

    fn mail_all(&self) -> StoreResult<Vec<HeldMail>> {
        Ok(self.maps().mail.values().cloned().collect())
    }

    fn group_item_put(
        &self,
        group: &str,
        hlc: Hlc,
        id: &MessageId,
        item: &[u8],
    ) -> StoreResult<bool> {
        let mut maps = self.maps();
        let index = (group.to_owned(), *id);
        if maps.group_index.contains_key(&index) {
            return Ok(false);
        }
        maps.group_index.insert(index, hlc);
        maps.group_log
            .insert((group.to_owned(), hlc, *id), item.to_vec());
        Ok(true)
    }

    fn group_item(&self, group: &str, id: &MessageId) -> StoreResult<Option<Vec<u8>>> {
        let maps = self.maps();
        let Some(hlc) = maps.group_index.get(&(group.to_owned(), *id)) else {
            return Ok(None);
        };
        Ok(maps.group_log.get(&(group.to_owned(), *hlc, *id)).cloned())
    }

    fn group_items(&self, group: &str) -> StoreResult<Vec<(Hlc, MessageId)>> {
        Ok(self
            .maps()
            .group_log
            .keys()
            .filter(|(g, _, _)| g == group)
            .map(|(_, hlc, id)| (*hlc, *id))
            .collect())
    }

    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    super::super::conformance::conformance_tests!(|| (MemoryStore::new(), ()));
}
