//! `/bonghwa/sync/1`: group history repair. When a connection to a fellow member opens,
//! and every [`SYNC_INTERVAL_MS`] while connected, we reconcile each shared group's log
//! with that member (range-based set reconciliation, `proto::sync`), fetch the items we
//! lack and push the ones it lacks. The responder answers members, and former members
//! with the membership ops only (see [`Access`]).

use std::collections::{BTreeSet, HashMap, VecDeque};

use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId};

use super::actor::Actor;
use super::now_ms;
use crate::crypto::group::GroupId;
use crate::model::MessageId;
use crate::net::SyncFrame;
use crate::proto::sync::{Initiator, Item, Limits, SyncSet, respond};
use crate::wire::group::{
    LogBody, LogItem, MAX_FETCH_IDS, MAX_SYNC_ENVELOPES, SyncRequest, SyncResponse, pack_envelopes,
};

/// How often connected members reconcile each shared group.
pub(super) const SYNC_INTERVAL_MS: u64 = 30_000;
/// Sync requests of ours in flight at once.
const MAX_SYNCS_IN_FLIGHT: usize = 256;
/// Fetch and push requests on the wire per peer.
const TRANSFERS_IN_FLIGHT: usize = 4;
/// Transfers queued per peer at most (each ≤ 64 items).
const MAX_QUEUED_TRANSFERS: usize = 4_096;
/// A group member keeps connections to at least this many fellow members (when it can
/// reach them); gossip and sync flow along them.
const GROUP_LINKS: usize = 3;
/// Dials a sync round may start to keep groups linked.
const MAX_DIALS_PER_ROUND: usize = 8;
/// Peers whose last dial we remember (forgotten all at once beyond it).
const MAX_DIAL_MEMORY: usize = 4_096;

/// One of our sync requests awaiting its answer.
#[derive(Debug)]
pub(super) enum SyncOp {
    /// A reconciliation round of a session with `peer`.
    Reconcile {
        group: GroupId,
        peer: PeerId,
        initiator: Initiator,
    },
    /// Fetching items we lack, or pushing items the peer lacks: one of the transfers
    /// queued for `peer`, whose answer lets the next one go.
    Transfer { peer: PeerId, fetch: bool },
}

/// A fetch or push waiting for its turn (items to push are read when it is sent, so a
/// long queue holds ids, not item bytes).
#[derive(Debug)]
enum Transfer {
    Fetch(SyncRequest),
    Push { group: GroupId, ids: Vec<MessageId> },
}

/// Sync bookkeeping.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    pub(super) ops: HashMap<OutboundRequestId, SyncOp>,
    /// Sessions running: (group, peer).
    running: BTreeSet<(GroupId, PeerId)>,
    /// When every connected member was last reconciled with.
    pub(super) last_round: u64,
    /// Fetches and pushes waiting per peer; at most [`TRANSFERS_IN_FLIGHT`] per peer are
    /// on the wire, so a large repair is a steady stream, not a flood of requests.
    queued: HashMap<PeerId, VecDeque<Transfer>>,
    in_flight: HashMap<PeerId, usize>,
    /// When we last dialled a member to keep a group linked (see `keep_group_links`).
    last_dial: HashMap<PeerId, u64>,
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
        // Our relays keep our groups' items too (`group_relay`): every group is shared
        // with them.
        let relay = self.mail.is_relay(&peer);
        let shared: Vec<GroupId> = self
            .groups
            .map
            .iter()
            .filter(|(_, g)| g.is_member(&me) && (relay || g.ever_member(&peer).is_some()))
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
        self.keep_group_links(now);
    }

    /// Dials fellow members of any group in which we are connected to fewer than
    /// [`GROUP_LINKS`] of them: after a partition, or when the members we were linked to
    /// went away, nothing else would bring the group together again (gossip and sync
    /// need a connection). The members tried longest ago go first, at most
    /// [`MAX_DIALS_PER_ROUND`] a round, so unreachable members cost a few failed dials a
    /// round and the others still get their turn.
    fn keep_group_links(&mut self, now: u64) {
        let me = self.identity.public_key();
        let mut wanted: BTreeSet<PeerId> = BTreeSet::new();
        for group in self.groups.map.values() {
            if !group.is_member(&me) {
                continue;
            }
            let mut linked = 0;
            let mut unlinked = Vec::new();
            for peer in group.member_peers() {
                if peer == self.identity.peer_id() {
                    continue;
                }
                if self.is_connected(&peer) {
                    linked += 1;
                } else {
                    unlinked.push(peer);
                }
            }
            if linked >= GROUP_LINKS {
                continue;
            }
            unlinked.sort_by_key(|peer| self.sync.last_dial.get(peer).copied().unwrap_or(0));
            wanted.extend(unlinked.into_iter().take(GROUP_LINKS - linked));
        }
        let mut wanted: Vec<PeerId> = wanted.into_iter().collect();
        wanted.sort_by_key(|peer| self.sync.last_dial.get(peer).copied().unwrap_or(0));
        if self.sync.last_dial.len() > MAX_DIAL_MEMORY {
            self.sync.last_dial.clear();
        }
        for peer in wanted.into_iter().take(MAX_DIALS_PER_ROUND) {
            tracing::debug!(%peer, "dialling a group member to keep the group linked");
            self.sync.last_dial.insert(peer, now);
            self.dial_peer(peer);
        }
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
                match self.sync.ops.remove(&request_id) {
                    Some(SyncOp::Reconcile { group, peer, .. }) => {
                        self.sync.running.remove(&(group, peer));
                    }
                    Some(SyncOp::Transfer { peer, .. }) => {
                        // The connection is likely gone: drop the rest; the next sync
                        // session starts over from the sets.
                        self.sync.queued.remove(&peer);
                        self.transfer_done(peer);
                    }
                    None => {}
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
        let access = self.sync_access(&group, &peer);
        let as_relay = access == Access::None && self.relays_group(&group);
        if access == Access::None && !as_relay {
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
                let found: Vec<(MessageId, Vec<u8>)> = ids
                    .iter()
                    .filter_map(|id| {
                        let bytes = self.store.group_item(&chat, id).ok().flatten()?;
                        (access != Access::Former || is_op(&bytes)).then_some((*id, bytes))
                    })
                    .collect();
                let ids: Vec<MessageId> = found.iter().map(|(id, _)| *id).collect();
                let (page, used) = pack_envelopes(found.into_iter().map(|(_, bytes)| bytes));
                for id in ids.iter().take(used) {
                    self.handed_over(id);
                }
                SyncResponse::Envelopes(page)
            }
            SyncRequest::Push { envelopes, .. } if as_relay => {
                self.take_relayed(&group, &envelopes);
                SyncResponse::Accepted
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
                    self.queue_transfer(
                        peer,
                        Transfer::Fetch(SyncRequest::Fetch {
                            group_id: group,
                            ids: ids.to_vec(),
                        }),
                    );
                }
                for ids in round.have.chunks(MAX_SYNC_ENVELOPES) {
                    self.queue_transfer(
                        peer,
                        Transfer::Push {
                            group,
                            ids: ids.to_vec(),
                        },
                    );
                }
                self.send_transfers(peer);
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
            (SyncOp::Transfer { peer: with, fetch }, response) => {
                if let (true, SyncResponse::Envelopes(items)) = (fetch, response) {
                    let new = self.take_synced(&items);
                    tracing::debug!(%peer, new, "group items fetched");
                }
                self.transfer_done(with);
            }
        }
    }
}

/// What a peer gets from us by sync for one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// A member (in our view, and we are one): everything.
    Member,
    /// Someone who was a member: the membership ops only. Views of who is in can differ
    /// for a while (ops travel in any order); without the ops it lacks, a member we think
    /// is out could never learn why, and two sides that each think the other is out would
    /// refuse each other for good (found by the group simulator).
    Former,
    /// Nothing.
    None,
}

/// Whether an encoded item is a membership op.
fn is_op(bytes: &[u8]) -> bool {
    LogItem::decode(bytes).is_ok_and(|item| matches!(item.body, LogBody::Op(_)))
}

impl Actor {
    fn sync_access(&self, group: &GroupId, peer: &PeerId) -> Access {
        let me = self.identity.public_key();
        match self.groups.map.get(group) {
            Some(g) if g.is_member(&me) && g.current_member(peer).is_some() => Access::Member,
            Some(g) if g.is_member(&me) && g.ever_member(peer).is_some() => Access::Former,
            _ => Access::None,
        }
    }

    fn queue_transfer(&mut self, peer: PeerId, transfer: Transfer) {
        let queue = self.sync.queued.entry(peer).or_default();
        if queue.len() < MAX_QUEUED_TRANSFERS {
            queue.push_back(transfer);
        }
    }

    /// Sends queued transfers to `peer` while fewer than [`TRANSFERS_IN_FLIGHT`] are out.
    fn send_transfers(&mut self, peer: PeerId) {
        loop {
            let in_flight = self.sync.in_flight.get(&peer).copied().unwrap_or(0);
            if in_flight >= TRANSFERS_IN_FLIGHT {
                return;
            }
            let Some(transfer) = self
                .sync
                .queued
                .get_mut(&peer)
                .and_then(VecDeque::pop_front)
            else {
                self.sync.queued.remove(&peer);
                return;
            };
            let (request, fetch) = match transfer {
                Transfer::Fetch(request) => (request, true),
                Transfer::Push { group, mut ids } => {
                    let chat = group.to_hex();
                    // A former member gets the ops only (see `Access`).
                    if self.sync_access(&group, &peer) == Access::Former {
                        ids.retain(|id| {
                            matches!(self.store.group_item(&chat, id), Ok(Some(b)) if is_op(&b))
                        });
                    }
                    let items = ids.iter().map(|id| {
                        self.store
                            .group_item(&chat, id)
                            .ok()
                            .flatten()
                            .unwrap_or_default()
                    });
                    let (page, used) = pack_envelopes(items);
                    // What did not fit in one frame goes back to the front of the queue.
                    let rest = ids.split_off(used.clamp(1, ids.len().max(1)).min(ids.len()));
                    if !rest.is_empty()
                        && let Some(queue) = self.sync.queued.get_mut(&peer)
                    {
                        queue.push_front(Transfer::Push { group, ids: rest });
                    }
                    let page: Vec<Vec<u8>> = page.into_iter().filter(|p| !p.is_empty()).collect();
                    if page.is_empty() {
                        continue;
                    }
                    for id in &ids {
                        self.handed_over(id);
                    }
                    (
                        SyncRequest::Push {
                            group_id: group,
                            envelopes: page,
                        },
                        false,
                    )
                }
            };
            let id = self
                .swarm
                .behaviour_mut()
                .sync
                .send_request(&peer, Ok(request));
            self.sync.ops.insert(id, SyncOp::Transfer { peer, fetch });
            self.sync.in_flight.insert(peer, in_flight + 1);
        }
    }

    fn transfer_done(&mut self, peer: PeerId) {
        if let Some(n) = self.sync.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 && !self.sync.queued.contains_key(&peer) {
                self.sync.in_flight.remove(&peer);
            }
        }
        self.send_transfers(peer);
    }
}
