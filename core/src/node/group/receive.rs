//! Taking group items from gossip, sync and invites.

use libp2p::PeerId;

use super::{GroupIo, GroupOut, Groups, MAX_GROUPS, Received};
use crate::model::ContactState;
use crate::proto::group::invite::read_invite;
use crate::proto::group::session::{GroupSession, Taken};
use crate::wire::group::LogItem;

impl Groups {
    /// Takes one encoded item from gossip or sync (staged; the batch's commit stores it).
    pub(in crate::node) fn take_bytes(
        &mut self,
        io: &mut GroupIo<'_>,
        bytes: &[u8],
        out: &mut Vec<GroupOut>,
    ) -> Received {
        match LogItem::decode(bytes) {
            Ok(item) => self.take_decoded(io, bytes, item, out),
            Err(_) => Received::Taken(Taken::Rejected("malformed or forged item")),
        }
    }

    fn take_decoded(
        &mut self,
        io: &mut GroupIo<'_>,
        bytes: &[u8],
        item: LogItem,
        out: &mut Vec<GroupOut>,
    ) -> Received {
        let id = item.group_id;
        if !self.sessions.contains_key(&id) {
            return Received::Unknown;
        }
        if self
            .item_bytes(io.store, &id, &LogItem::id_of(bytes))
            .is_some()
        {
            return Received::Duplicate;
        }
        match self.with_session(io, &id, out, |s, ctx, o| s.take(ctx, bytes, item, o)) {
            Some(taken) => Received::Taken(taken),
            None => Received::Unknown,
        }
    }

    /// Items from a sync peer: taken like gossip, and made durable at once. Returns how
    /// many were new.
    pub(in crate::node) fn take_synced(
        &mut self,
        io: &mut GroupIo<'_>,
        items: &[Vec<u8>],
        out: &mut Vec<GroupOut>,
    ) -> usize {
        let new = items
            .iter()
            .filter(|bytes| matches!(self.take_bytes(io, bytes, out), Received::Taken(Taken::New)))
            .count();
        if let Err(e) = self.commit(io, false, out) {
            tracing::error!("cannot make synced group items durable: {e:#}");
        }
        new
    }

    /// An invite from `from` (a contact we accepted): take the items, join if we are in.
    pub(in crate::node) fn take_invite(
        &mut self,
        io: &mut GroupIo<'_>,
        from: &str,
        items: &[Vec<u8>],
        out: &mut Vec<GroupOut>,
    ) {
        let accepted = matches!(
            io.store.contact(from),
            Ok(Some(c)) if c.state == ContactState::Accepted
        );
        if !accepted {
            tracing::info!(%from, "group invite from someone who is not a contact; ignored");
            return;
        }
        let Some((id, ordered)) = read_invite(items) else {
            tracing::info!(%from, "group invite without its founding op; ignored");
            return;
        };
        if !self.sessions.contains_key(&id) {
            if self.sessions.len() >= MAX_GROUPS {
                tracing::warn!("group invite ignored: in {MAX_GROUPS} groups already");
                return;
            }
            self.sessions.insert(id, GroupSession::new(id, self.me.key));
            self.list_dirty = true;
        }
        for (bytes, item) in ordered {
            self.take_decoded(io, bytes, item, out);
        }
        if !self
            .sessions
            .get(&id)
            .is_some_and(|s| s.is_member(&self.me.key))
        {
            self.sessions.remove(&id);
            self.staged.retain(|(group, _), _| *group != id);
            self.touched.remove(&id);
            return;
        }
        // Durable before the invite's envelope is acknowledged.
        if let Err(e) = self.commit(io, false, out) {
            tracing::error!("cannot store group {}: {e:#}", id.to_hex());
        }
        if let Ok(peer) = from.parse::<PeerId>() {
            out.push(GroupOut::Sync(id, peer));
        }
    }
}
