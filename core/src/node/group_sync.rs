//! `/bonghwa/sync/1`: group history repair. When a connection to a fellow member opens,
//! and every [`SYNC_INTERVAL_MS`] while connected, we reconcile each shared group's log
//! with that member (range-based set reconciliation, `proto::sync`), fetch the items we
//! lack and push the ones it lacks. The responder answers members only.

use std::collections::{BTreeSet, HashMap};

use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId};

use super::actor::Actor;
use super::now_ms;
use crate::crypto::group::GroupId;
use crate::net::SyncFrame;
use crate::proto::sync::{Initiator, Item, Limits, SyncSet, respond};
use crate::wire::group::{MAX_FETCH_IDS, SyncRequest, SyncResponse, pack_envelopes};

/// How often connected members reconcile each shared group.
pub(super) const SYNC_INTERVAL_MS: u64 = 30_000;
/// Sync requests of ours in flight at once.
const MAX_SYNCS_IN_FLIGHT: usize = 256;

/// One of our sync requests awaiting its answer.
#[derive(Debug)]
pub(super) enum SyncOp {
    /// A reconciliation round of a session with `peer`.
    Reconcile {
        group: GroupId,
        peer: PeerId,
        initiator: Initiator,
    },
    /// Fetching items we lack.
    Fetch,
    /// Pushing items the peer lacks.
    Push,
}

/// Sync bookkeeping.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    pub(super) ops: HashMap<OutboundRequestId, SyncOp>,
    /// Sessions running: (group, peer).
    running: BTreeSet<(GroupId, PeerId)>,
    /// When every connected member was last reconciled with.
    pub(super) last_round: u64,
}

impl Actor {
    fn sync_set(&self, group: &GroupId) -> SyncSet {
        let items = self
            .store
            .group_items(&group.to_hex())
            .unwrap_or_default()
            .into_iter()
            .map(|(hlc, id)| Item { hlc, id });
        SyncSet::new(items)
    }

    /// Starts reconciling `group` with `peer` unless a session is running.
    pub(super) fn start_sync(&mut self, group: &GroupId, peer: PeerId) {
        if self.sync.ops.len() >= MAX_SYNCS_IN_FLIGHT || !self.sync.running.insert((*group, peer)) {
            return;
        }
        let initiator = Initiator::new(Limits::default());
        let message = initiator.initiate(&self.sync_set(group));
        let request = SyncRequest::Reconcile {
            group_id: *group,
            message,
        };
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, Ok(request));
        self.sync.ops.insert(
            id,
            SyncOp::Reconcile {
                group: *group,
                peer,
                initiator,
            },
        );
    }

    /// A connection to `peer` opened: reconcile every group it shares with us.
    pub(super) fn sync_on_connect(&mut self, peer: PeerId) {
        let me = self.identity.public_key();
        let shared: Vec<GroupId> = self
            .groups
            .map
            .iter()
            .filter(|(_, g)| g.membership.is_member(&me) && g.member_key_of(&peer).is_some())
            .map(|(id, _)| *id)
            .collect();
        for group in shared {
            self.start_sync(&group, peer);
        }
    }

    /// Every [`SYNC_INTERVAL_MS`]: reconcile with every connected member, and publish what
    /// waits for gossip.
    pub(super) fn sync_tick(&mut self) {
        let now = now_ms();
        if now.saturating_sub(self.sync.last_round) < SYNC_INTERVAL_MS {
            return;
        }
        self.sync.last_round = now;
        let peers: Vec<PeerId> = self.connected_peers();
        for peer in peers {
            self.sync_on_connect(peer);
        }
        self.flush_all_unpublished();
    }

    /// When the next sync round is due (if we are in any group).
    pub(super) fn next_sync(&self) -> Option<u64> {
        (!self.groups.map.is_empty()).then(|| self.sync.last_round.saturating_add(SYNC_INTERVAL_MS))
    }

    pub(super) fn on_sync_event(
        &mut self,
        event: request_response::Event<SyncFrame, SyncResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = match request {
                    Ok(request) => self.answer_sync(peer, request),
                    Err(why) => {
                        self.strike(peer, &format!("malformed sync frame: {why}"));
                        SyncResponse::Refused(why)
                    }
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_sync_response(peer, request_id, response),
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                tracing::debug!(%peer, "sync request failed: {error}");
                if let Some(SyncOp::Reconcile { group, peer, .. }) =
                    self.sync.ops.remove(&request_id)
                {
                    self.sync.running.remove(&(group, peer));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "sync request from peer failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// The responder: members only.
    fn answer_sync(&mut self, peer: PeerId, request: SyncRequest) -> SyncResponse {
        let group = match &request {
            SyncRequest::Reconcile { group_id, .. }
            | SyncRequest::Fetch { group_id, .. }
            | SyncRequest::Push { group_id, .. } => *group_id,
        };
        let me = self.identity.public_key();
        let allowed = self.groups.map.get(&group).is_some_and(|g| {
            g.membership.is_member(&me)
                && g.member_key_of(&peer)
                    .is_some_and(|k| g.membership.is_member(&k))
        });
        if !allowed {
            return SyncResponse::Refused("not a member of that group".into());
        }
        match request {
            SyncRequest::Reconcile { message, .. } => {
                match respond(&self.sync_set(&group), &message, &Limits::default()) {
                    Ok(reply) => SyncResponse::Reconcile(reply),
                    Err(e) => SyncResponse::Refused(format!("reconciliation failed: {e}")),
                }
            }
            SyncRequest::Fetch { ids, .. } => {
                let chat = group.to_hex();
                let items = ids
                    .iter()
                    .filter_map(|id| self.store.group_item(&chat, id).ok().flatten());
                SyncResponse::Envelopes(pack_envelopes(items).0)
            }
            SyncRequest::Push { envelopes, .. } => {
                self.take_synced(&envelopes);
                SyncResponse::Accepted
            }
        }
    }

    fn on_sync_response(
        &mut self,
        peer: PeerId,
        request: OutboundRequestId,
        response: SyncResponse,
    ) {
        let Some(op) = self.sync.ops.remove(&request) else {
            return;
        };
        match (op, response) {
            (
                SyncOp::Reconcile {
                    group,
                    peer: with,
                    mut initiator,
                },
                SyncResponse::Reconcile(reply),
            ) if with == peer => {
                let set = self.sync_set(&group);
                let round = match initiator.reconcile(&set, &reply) {
                    Ok(round) => round,
                    Err(e) => {
                        tracing::info!(%peer, "sync with peer failed: {e}");
                        self.sync.running.remove(&(group, peer));
                        return;
                    }
                };
                for ids in round.need.chunks(MAX_FETCH_IDS) {
                    let id = self.swarm.behaviour_mut().sync.send_request(
                        &peer,
                        Ok(SyncRequest::Fetch {
                            group_id: group,
                            ids: ids.to_vec(),
                        }),
                    );
                    self.sync.ops.insert(id, SyncOp::Fetch);
                }
                let chat = group.to_hex();
                let mut have: Vec<Vec<u8>> = round
                    .have
                    .iter()
                    .filter_map(|id| self.store.group_item(&chat, id).ok().flatten())
                    .collect();
                while !have.is_empty() {
                    let (page, used) = pack_envelopes(have.iter().cloned());
                    have.drain(..used.max(1));
                    if page.is_empty() {
                        continue;
                    }
                    let id = self.swarm.behaviour_mut().sync.send_request(
                        &peer,
                        Ok(SyncRequest::Push {
                            group_id: group,
                            envelopes: page,
                        }),
                    );
                    self.sync.ops.insert(id, SyncOp::Push);
                }
                match round.next {
                    Some(message) => {
                        let id = self.swarm.behaviour_mut().sync.send_request(
                            &peer,
                            Ok(SyncRequest::Reconcile {
                                group_id: group,
                                message,
                            }),
                        );
                        self.sync.ops.insert(
                            id,
                            SyncOp::Reconcile {
                                group,
                                peer,
                                initiator,
                            },
                        );
                    }
                    None => {
                        self.sync.running.remove(&(group, peer));
                    }
                }
            }
            (SyncOp::Reconcile { group, peer, .. }, other) => {
                tracing::info!(%peer, "sync refused: {other:?}");
                self.sync.running.remove(&(group, peer));
            }
            (SyncOp::Fetch, SyncResponse::Envelopes(items)) => {
                let new = self.take_synced(&items);
                tracing::debug!(%peer, new, "group items fetched");
            }
            (SyncOp::Fetch | SyncOp::Push, _) => {}
        }
    }
}
