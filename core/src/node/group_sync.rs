//! `/bonghwa/sync/1`: group history repair. When a connection to a fellow member opens,
//! and every [`SYNC_INTERVAL_MS`] while connected, we reconcile each shared group's log
//! with that member (range-based set reconciliation, `proto::sync`), fetch the items we
//! lack and push the ones it lacks. The responder answers members, and former members
//! with the membership ops only (see [`Access`]).
//!
//! [`SyncState`] owns the repair. Its methods take one event (a request from a peer, the
//! answer to one of ours or its failure, a connection, a tick) and what they read about
//! our groups through a [`SyncView`], and push what is to be done as [`SyncOut`]; the
//! actor sends the requests and hands their ids back ([`SyncState::sent`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use libp2p::request_response::OutboundRequestId;
use libp2p::{Multiaddr, PeerId};

use crate::crypto::group::GroupId;
use crate::identity::Identity;
use crate::model::MessageId;
use crate::net::SyncFrame;
use crate::proto::group::session::GroupSession;
use crate::proto::sync::{Initiator, Item, Limits, SyncSet, respond};
use crate::store::Store;
use crate::wire::group::{
    LogBody, LogItem, MAX_FETCH_IDS, MAX_SYNC_ENVELOPES, SyncRequest, SyncResponse, pack_envelopes,
};

#[cfg(test)]
mod tests;

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
enum SyncOp {
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

/// What a request [`SyncOut::Request`] asks the actor to send is for; handed back with
/// the request's id ([`SyncState::sent`]) so its answer finds its session. Boxed: a
/// session's [`Initiator`] is large next to the other outputs.
#[derive(Debug)]
pub(super) struct Pending(Box<SyncOp>);

/// A fetch or push waiting for its turn (items to push are read when it is sent, so a
/// long queue holds ids, not item bytes).
#[derive(Debug)]
enum Transfer {
    Fetch(SyncRequest),
    Push { group: GroupId, ids: Vec<MessageId> },
}

/// What sync asks the actor to do.
#[derive(Debug)]
pub(super) enum SyncOut {
    /// Send `request` to `peer`, then hand its id back with `pending` ([`SyncState::sent`]).
    Request {
        peer: PeerId,
        request: SyncRequest,
        pending: Pending,
    },
    /// Items a member sent us (fetched or pushed): take them into our group sessions
    /// like gossip, and make them durable at once.
    Take { from: PeerId, items: Vec<Vec<u8>> },
    /// Items a member pushed to us as the relay of `group`: keep them (`group_relay`).
    KeepRelayed { group: GroupId, items: Vec<Vec<u8>> },
    /// One of our items left for a member (it fetched it, or we pushed it): a chat
    /// message of ours still `pending` is now `sent`.
    HandedOver(MessageId),
    /// `peer` sent a malformed frame: count it against the peer.
    Strike { peer: PeerId, why: String },
    /// Dial a fellow member to keep a group linked.
    Dial(PeerId),
    /// A round is due: publish what still waits for gossip.
    Republish,
}

/// What sync reads about our groups and their logs. The actor answers from the group
/// sessions and the store ([`NodeView`]); unit tests from a table.
pub(super) trait SyncView {
    /// Groups we are a member of, in id order.
    fn our_groups(&self) -> Vec<GroupId>;
    /// Current members of `group`, not counting us, by peer id.
    fn fellows(&self, group: &GroupId) -> Vec<PeerId>;
    /// What `peer` gets from us by sync for `group`.
    fn access(&self, group: &GroupId, peer: &PeerId) -> Access;
    /// A snapshot of `group`'s log as we hold it (as a member, or as its relay).
    fn log(&self, group: &GroupId) -> SyncSet;
    /// One encoded item of `group`'s log.
    fn item(&self, group: &GroupId, id: &MessageId) -> Option<Vec<u8>>;
}

/// [`SyncView`] over our group sessions and the store's group logs.
pub(super) struct NodeView<'a> {
    store: &'a dyn Store,
    sessions: &'a BTreeMap<GroupId, GroupSession>,
    /// Our identity key, to tell the groups we are in from those we left.
    me: [u8; 32],
    /// Our peer id, which is in our groups' member lists too.
    my_peer: PeerId,
}

impl<'a> NodeView<'a> {
    /// A view of `sessions` (our groups) and their logs in `store`.
    pub(super) fn new(
        store: &'a dyn Store,
        sessions: &'a BTreeMap<GroupId, GroupSession>,
        identity: &Identity,
    ) -> Self {
        Self {
            store,
            sessions,
            me: identity.public_key(),
            my_peer: identity.peer_id(),
        }
    }
}

impl SyncView for NodeView<'_> {
    fn our_groups(&self) -> Vec<GroupId> {
        self.sessions
            .iter()
            .filter(|(_, g)| g.is_member(&self.me))
            .map(|(id, _)| *id)
            .collect()
    }

    fn fellows(&self, group: &GroupId) -> Vec<PeerId> {
        self.sessions
            .get(group)
            .map(GroupSession::member_peers)
            .unwrap_or_default()
            .into_iter()
            .filter(|peer| *peer != self.my_peer)
            .collect()
    }

    fn access(&self, group: &GroupId, peer: &PeerId) -> Access {
        match self.sessions.get(group) {
            Some(g) if g.is_member(&self.me) && g.current_member(peer).is_some() => Access::Member,
            Some(g) if g.ever_member(peer).is_some() => Access::Former,
            _ => Access::None,
        }
    }

    fn log(&self, group: &GroupId) -> SyncSet {
        let items = self
            .store
            .group_items(&group.to_hex())
            .unwrap_or_default()
            .into_iter()
            .map(|(hlc, id)| Item { hlc, id });
        SyncSet::new(items)
    }

    fn item(&self, group: &GroupId, id: &MessageId) -> Option<Vec<u8>> {
        self.store.group_item(&group.to_hex(), id).ok().flatten()
    }
}

/// What a peer gets from us by sync for one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// A member (in our view, and we are one): everything.
    Member,
    /// Someone who was a member, or anyone who was while we are out ourselves: the
    /// membership ops only. Views of who is in can differ for a while (ops travel in any
    /// order); without the ops it lacks, a member we think is out could never learn why,
    /// two sides that each think the other is out would refuse each other for good, and
    /// members who think we are in would never learn the op that put us out when we are
    /// the last to hold it (both found by the group simulator).
    Former,
    /// Nothing.
    None,
}

/// Whether an encoded item is a membership op.
fn is_op(bytes: &[u8]) -> bool {
    LogItem::decode(bytes).is_ok_and(|item| matches!(item.body, LogBody::Op(_)))
}

/// Sync bookkeeping: our sessions, their requests in flight, the transfers they queued.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// Our requests on the wire, by id: what each answer is for.
    ops: HashMap<OutboundRequestId, SyncOp>,
    /// Requests handed to the actor whose id has not come back yet; in flight too.
    issued: usize,
    /// Sessions running: (group, peer).
    running: BTreeSet<(GroupId, PeerId)>,
    /// When every connected member was last reconciled with.
    last_round: u64,
    /// Fetches and pushes waiting per peer; at most [`TRANSFERS_IN_FLIGHT`] per peer are
    /// on the wire, so a large repair is a steady stream, not a flood of requests.
    queued: HashMap<PeerId, VecDeque<Transfer>>,
    in_flight: HashMap<PeerId, usize>,
    /// When we last dialled a member to keep a group linked (see `keep_group_links`).
    last_dial: HashMap<PeerId, u64>,
    /// Groups' logs as sync sets, built once and kept until an item is stored in that group
    /// ([`SyncState::log_changed`]): building one reads the group's whole index from the
    /// store and sorts it, and every session needs it for each of its rounds (at 128
    /// members this rebuilding took a quarter of the process's CPU).
    logs: HashMap<GroupId, Arc<SyncSet>>,
}

/// Sync sets kept at most (our groups and the groups we relay); past it the cache starts
/// again from empty.
const MAX_CACHED_LOGS: usize = 1_024;

impl SyncState {
    /// `group`'s log as a sync set, from the cache or built from `view`.
    fn log(&mut self, view: &impl SyncView, group: &GroupId) -> Arc<SyncSet> {
        if let Some(set) = self.logs.get(group) {
            return Arc::clone(set);
        }
        if self.logs.len() >= MAX_CACHED_LOGS {
            self.logs.clear();
        }
        let set = Arc::new(view.log(group));
        self.logs.insert(*group, Arc::clone(&set));
        set
    }

    /// Items were stored in `group`'s log: the next session reads it again.
    pub(super) fn log_changed(&mut self, group: &GroupId) {
        self.logs.remove(group);
    }

    /// When the next round is due, if we are in any group.
    pub(super) fn next_round(&self, in_groups: bool) -> Option<u64> {
        in_groups.then(|| self.last_round.saturating_add(SYNC_INTERVAL_MS))
    }

    /// The actor sent a request we asked for ([`SyncOut::Request`]): its id, and what it
    /// is for.
    pub(super) fn sent(&mut self, id: OutboundRequestId, pending: Pending) {
        self.issued = self.issued.saturating_sub(1);
        self.ops.insert(id, *pending.0);
    }

    /// Starts reconciling `group` with `peer` unless a session is running.
    pub(super) fn start(
        &mut self,
        group: GroupId,
        peer: PeerId,
        view: &impl SyncView,
        out: &mut Vec<SyncOut>,
    ) {
        if self.ops.len() + self.issued >= MAX_SYNCS_IN_FLIGHT
            || !self.running.insert((group, peer))
        {
            return;
        }
        let initiator = Initiator::new(Limits::default());
        let message = initiator.initiate(&self.log(view, &group));
        let request = SyncRequest::Reconcile {
            group_id: group,
            message,
        };
        let op = SyncOp::Reconcile {
            group,
            peer,
            initiator,
        };
        self.request(peer, request, op, out);
    }

    /// A connection to `peer` opened: reconcile every group it shares with us.
    pub(super) fn on_connect(
        &mut self,
        peer: PeerId,
        relays: &[(PeerId, Multiaddr)],
        view: &impl SyncView,
        out: &mut Vec<SyncOut>,
    ) {
        // Our relays keep our groups' items too (`group_relay`): every group is shared
        // with them.
        let relay = relays.iter().any(|(r, _)| *r == peer);
        for group in view.our_groups() {
            if relay || view.access(&group, &peer) != Access::None {
                self.start(group, peer, view, out);
            }
        }
    }

    /// Every [`SYNC_INTERVAL_MS`]: reconcile with every connected member, publish what
    /// waits for gossip, and keep each group linked.
    pub(super) fn tick(
        &mut self,
        now: u64,
        connected: &[PeerId],
        relays: &[(PeerId, Multiaddr)],
        view: &impl SyncView,
        out: &mut Vec<SyncOut>,
    ) {
        if now.saturating_sub(self.last_round) < SYNC_INTERVAL_MS {
            return;
        }
        self.last_round = now;
        for peer in connected {
            self.on_connect(*peer, relays, view, out);
        }
        out.push(SyncOut::Republish);
        let connected: BTreeSet<PeerId> = connected.iter().copied().collect();
        self.keep_group_links(now, &connected, view, out);
    }

    /// Dials fellow members of any group in which we are connected to fewer than
    /// [`GROUP_LINKS`] of them: after a partition, or when the members we were linked to
    /// went away, nothing else would bring the group together again (gossip and sync
    /// need a connection). The members tried longest ago go first, at most
    /// [`MAX_DIALS_PER_ROUND`] a round, so unreachable members cost a few failed dials a
    /// round and the others still get their turn.
    fn keep_group_links(
        &mut self,
        now: u64,
        connected: &BTreeSet<PeerId>,
        view: &impl SyncView,
        out: &mut Vec<SyncOut>,
    ) {
        let mut wanted: BTreeSet<PeerId> = BTreeSet::new();
        for group in view.our_groups() {
            let mut linked = 0;
            let mut unlinked = Vec::new();
            for peer in view.fellows(&group) {
                if connected.contains(&peer) {
                    linked += 1;
                } else {
                    unlinked.push(peer);
                }
            }
            if linked >= GROUP_LINKS {
                continue;
            }
            unlinked.sort_by_key(|peer| self.last_dial.get(peer).copied().unwrap_or(0));
            wanted.extend(unlinked.into_iter().take(GROUP_LINKS - linked));
        }
        let mut wanted: Vec<PeerId> = wanted.into_iter().collect();
        wanted.sort_by_key(|peer| self.last_dial.get(peer).copied().unwrap_or(0));
        if self.last_dial.len() > MAX_DIAL_MEMORY {
            self.last_dial.clear();
        }
        for peer in wanted.into_iter().take(MAX_DIALS_PER_ROUND) {
            tracing::debug!(%peer, "dialling a group member to keep the group linked");
            self.last_dial.insert(peer, now);
            out.push(SyncOut::Dial(peer));
        }
    }

    /// The responder: a request `frame` from `peer` and its answer. Members get
    /// everything, former members the membership ops only (see [`Access`]), and anyone
    /// who names a group we carry as its relay (`relays_group`) that group's log.
    pub(super) fn answer(
        &mut self,
        peer: PeerId,
        frame: SyncFrame,
        view: &impl SyncView,
        relays_group: impl FnOnce(&GroupId) -> bool,
        out: &mut Vec<SyncOut>,
    ) -> SyncResponse {
        let request = match frame {
            Ok(request) => request,
            Err(why) => {
                out.push(SyncOut::Strike {
                    peer,
                    why: format!("malformed sync frame: {why}"),
                });
                return SyncResponse::Refused(why);
            }
        };
        let group = match &request {
            SyncRequest::Reconcile { group_id, .. }
            | SyncRequest::Fetch { group_id, .. }
            | SyncRequest::Push { group_id, .. } => *group_id,
        };
        let access = view.access(&group, &peer);
        let as_relay = access == Access::None && relays_group(&group);
        if access == Access::None && !as_relay {
            return SyncResponse::Refused("not a member of that group".into());
        }
        match request {
            SyncRequest::Reconcile { message, .. } => {
                match respond(&self.log(view, &group), &message, &Limits::default()) {
                    Ok(reply) => SyncResponse::Reconcile(reply),
                    Err(e) => SyncResponse::Refused(format!("reconciliation failed: {e}")),
                }
            }
            SyncRequest::Fetch { ids, .. } => {
                let found: Vec<(MessageId, Vec<u8>)> = ids
                    .iter()
                    .filter_map(|id| {
                        let bytes = view.item(&group, id)?;
                        (access != Access::Former || is_op(&bytes)).then_some((*id, bytes))
                    })
                    .collect();
                let ids: Vec<MessageId> = found.iter().map(|(id, _)| *id).collect();
                let (page, used) = pack_envelopes(found.into_iter().map(|(_, bytes)| bytes));
                out.extend(ids.into_iter().take(used).map(SyncOut::HandedOver));
                SyncResponse::Envelopes(page)
            }
            SyncRequest::Push { envelopes, .. } if as_relay => {
                out.push(SyncOut::KeepRelayed {
                    group,
                    items: envelopes,
                });
                SyncResponse::Accepted
            }
            SyncRequest::Push { envelopes, .. } => {
                out.push(SyncOut::Take {
                    from: peer,
                    items: envelopes,
                });
                SyncResponse::Accepted
            }
        }
    }

    /// `peer`'s answer to our request `id`.
    pub(super) fn on_response(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        response: SyncResponse,
        view: &impl SyncView,
        out: &mut Vec<SyncOut>,
    ) {
        let Some(op) = self.ops.remove(&id) else {
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
                let round = match initiator.reconcile(&self.log(view, &group), &reply) {
                    Ok(round) => round,
                    Err(e) => {
                        tracing::info!(%peer, "sync with peer failed: {e}");
                        self.running.remove(&(group, peer));
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
                self.send_transfers(peer, view, out);
                match round.next {
                    Some(message) => {
                        let request = SyncRequest::Reconcile {
                            group_id: group,
                            message,
                        };
                        let op = SyncOp::Reconcile {
                            group,
                            peer,
                            initiator,
                        };
                        self.request(peer, request, op, out);
                    }
                    None => {
                        self.running.remove(&(group, peer));
                    }
                }
            }
            (SyncOp::Reconcile { group, peer, .. }, other) => {
                tracing::info!(%peer, "sync refused: {other:?}");
                self.running.remove(&(group, peer));
            }
            (SyncOp::Transfer { peer: with, fetch }, response) => {
                if let (true, SyncResponse::Envelopes(items)) = (fetch, response) {
                    out.push(SyncOut::Take { from: peer, items });
                }
                self.transfer_done(with, view, out);
            }
        }
    }

    /// Our request `id` failed: its session ends; a transfer's peer loses its queue.
    pub(super) fn on_failure(
        &mut self,
        id: OutboundRequestId,
        view: &impl SyncView,
        out: &mut Vec<SyncOut>,
    ) {
        match self.ops.remove(&id) {
            Some(SyncOp::Reconcile { group, peer, .. }) => {
                self.running.remove(&(group, peer));
            }
            Some(SyncOp::Transfer { peer, .. }) => {
                // The connection is likely gone: drop the rest; the next sync session
                // starts over from the sets.
                self.queued.remove(&peer);
                self.transfer_done(peer, view, out);
            }
            None => {}
        }
    }

    /// Asks the actor to send `request`; `op` is what its answer is for.
    fn request(&mut self, peer: PeerId, request: SyncRequest, op: SyncOp, out: &mut Vec<SyncOut>) {
        self.issued += 1;
        out.push(SyncOut::Request {
            peer,
            request,
            pending: Pending(Box::new(op)),
        });
    }

    fn queue_transfer(&mut self, peer: PeerId, transfer: Transfer) {
        let queue = self.queued.entry(peer).or_default();
        if queue.len() < MAX_QUEUED_TRANSFERS {
            queue.push_back(transfer);
        }
    }

    /// Sends queued transfers to `peer` while fewer than [`TRANSFERS_IN_FLIGHT`] are out.
    fn send_transfers(&mut self, peer: PeerId, view: &impl SyncView, out: &mut Vec<SyncOut>) {
        loop {
            let in_flight = self.in_flight.get(&peer).copied().unwrap_or(0);
            if in_flight >= TRANSFERS_IN_FLIGHT {
                return;
            }
            let Some(transfer) = self.queued.get_mut(&peer).and_then(VecDeque::pop_front) else {
                self.queued.remove(&peer);
                return;
            };
            let (request, fetch) = match transfer {
                Transfer::Fetch(request) => (request, true),
                Transfer::Push { group, mut ids } => {
                    // A former member gets the ops only (see `Access`).
                    if view.access(&group, &peer) == Access::Former {
                        ids.retain(|id| view.item(&group, id).is_some_and(|b| is_op(&b)));
                    }
                    let items = ids
                        .iter()
                        .map(|id| view.item(&group, id).unwrap_or_default());
                    let (page, used) = pack_envelopes(items);
                    // What did not fit in one frame goes back to the front of the queue.
                    let rest = ids.split_off(used.clamp(1, ids.len().max(1)).min(ids.len()));
                    if !rest.is_empty()
                        && let Some(queue) = self.queued.get_mut(&peer)
                    {
                        queue.push_front(Transfer::Push { group, ids: rest });
                    }
                    let page: Vec<Vec<u8>> = page.into_iter().filter(|p| !p.is_empty()).collect();
                    if page.is_empty() {
                        continue;
                    }
                    out.extend(ids.iter().copied().map(SyncOut::HandedOver));
                    (
                        SyncRequest::Push {
                            group_id: group,
                            envelopes: page,
                        },
                        false,
                    )
                }
            };
            self.request(peer, request, SyncOp::Transfer { peer, fetch }, out);
            self.in_flight.insert(peer, in_flight + 1);
        }
    }

    fn transfer_done(&mut self, peer: PeerId, view: &impl SyncView, out: &mut Vec<SyncOut>) {
        if let Some(n) = self.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 && !self.queued.contains_key(&peer) {
                self.in_flight.remove(&peer);
            }
        }
        self.send_transfers(peer, view, out);
    }
}
