//! A seeded simulator of whole groups: 3–8 members run [`GroupSession`]s over a network
//! that drops, doubles, reorders and delays items, splits into partitions and heals, while
//! members send, add, remove, restart from their saved state, and a removed member tries
//! to sign its way back. At the end the network heals and sync runs until nothing moves;
//! then the rules are checked (see [`check`]). A failing seed is printed; rerun one with
//! `BONGHWA_SIM_SEED=<seed> cargo test -p bonghwa-core group_sim`.
//! Everything random (identities, keys, the ephemeral keys that seal them, the schedule)
//! comes from the seed, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};

use libp2p::PeerId;

use super::invite::{invite_items, read_invite};
use super::session::{Ctx, GroupSession, Me, Output, Random, Taken};
use crate::crypto::group::{GroupCryptoError, GroupId, signing_key_of};
use crate::identity::{ContactCard, Identity};
use crate::model::{GroupRecord, Hlc, HlcClock, MessageId};
use crate::wire::group::{LogItem, MembershipOp, SignedOp};

/// A seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

impl Random for Rng {
    fn bytes32(&mut self) -> Result<[u8; 32], GroupCryptoError> {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        Ok(out)
    }
}

/// One simulated node: its keys, clock, session, and what its store would hold.
struct Member {
    me: Me,
    peer: PeerId,
    card: ContactCard,
    clock: HlcClock,
    random: Rng,
    session: Option<GroupSession>,
    /// The saved record (what a restart comes back with).
    saved: Option<GroupRecord>,
    /// The group log: item id → (hlc, bytes).
    log: BTreeMap<MessageId, (Hlc, Vec<u8>)>,
    /// Messages shown: id → (hlc, text).
    shown: BTreeMap<MessageId, (Hlc, String)>,
    /// Items this member published since the network last took them.
    outbox: Vec<Vec<u8>>,
}

/// A message someone sent, and what its author believed when it did.
struct Sent {
    id: MessageId,
    item: MessageId,
    author: usize,
    text: String,
    /// Members (identity keys) in the author's view, whose card the author held.
    readers: BTreeSet<[u8; 32]>,
    /// Ever-members the author knew to be out.
    excluded: BTreeSet<[u8; 32]>,
}

/// An item in flight.
struct Flight {
    to: usize,
    due: u64,
    bytes: Vec<u8>,
}

struct World {
    rng: Rng,
    now: u64,
    step: u64,
    members: Vec<Member>,
    flights: Vec<Flight>,
    /// Invites in flight (reliable: the real ones ride the outbox).
    invites: Vec<(usize, u64, Vec<Vec<u8>>)>,
    /// Partition side of each member (all 0 = healed).
    side: Vec<u8>,
    sent: Vec<Sent>,
    /// Members removed (or left) at some point; never re-added.
    removed: BTreeSet<usize>,
    /// (author, removed member): the author sealed its key to the member after the
    /// removal (its view had the member back in for a while, as ops arrived).
    reshared: BTreeSet<(usize, usize)>,
    /// Keys no honest op ever admitted (puppets a removed member tried to add), with the
    /// attacker and the ops removing it that it knew of when it signed.
    puppets: BTreeMap<[u8; 32], (usize, BTreeSet<crate::wire::group::OpId>)>,
    /// The group once created.
    group: Option<GroupId>,
}

const PERCENT_DROP: u64 = 15;
const PERCENT_DUP: u64 = 10;
const MAX_DELAY_STEPS: u64 = 6;
const MESSAGES_PER_RUN: usize = 40;

impl Member {
    fn new(seed: u64) -> Self {
        let mut random = Rng(seed | 1);
        let mut bytes = [0u8; 64];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&random.next().to_le_bytes());
        }
        let identity = Identity::from_random(bytes).expect("an identity from any bytes");
        let signing = signing_key_of(&identity).expect("signing key");
        let card = identity.card("sim", Vec::new(), 1);
        Self {
            me: Me {
                key: identity.public_key(),
                signing,
                msg_secret: *identity.msg_secret(),
            },
            peer: identity.peer_id(),
            card,
            clock: HlcClock::default(),
            random,
            session: None,
            saved: None,
            log: BTreeMap::new(),
            shown: BTreeMap::new(),
            outbox: Vec::new(),
        }
    }

    fn in_group(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.is_member(&self.me.key))
    }

    /// Founds a group with the members whose `cards` are given, as the node does (the
    /// outputs applied, the batch ended).
    fn found(&mut self, now: u64, name: &str, cards: &[ContactCard]) -> GroupId {
        let card = self.card.clone();
        let (session, out) =
            GroupSession::create(&mut self.ctx(now), name, &card, cards).expect("create");
        let group = session.id();
        self.session = Some(session);
        let mut out = Some(out);
        self.batch(now, |_, _, o| o.extend(out.take().unwrap_or_default()));
        group
    }

    /// Runs `f` on the session with a context, applies its outputs, and ends the batch
    /// (keys sealed, record saved) as the node does.
    fn batch<T>(
        &mut self,
        now: u64,
        f: impl FnOnce(&mut GroupSession, &mut Ctx<'_>, &mut Vec<Output>) -> T,
    ) -> Option<T> {
        let mut session = self.session.take()?;
        let mut out = Vec::new();
        let result = f(&mut session, &mut self.ctx(now), &mut out);
        self.apply(&mut session, out);
        let mut out = Vec::new();
        session.flush(&mut self.ctx(now), &mut out).expect("flush");
        self.apply(&mut session, out);
        if session.take_dirty() {
            self.saved = Some(session.record());
        }
        self.session = Some(session);
        Some(result)
    }

    fn ctx(&mut self, now: u64) -> Ctx<'_> {
        Ctx {
            me: &self.me,
            clock: &mut self.clock,
            now,
            random: &mut self.random,
        }
    }

    fn apply(&mut self, session: &mut GroupSession, out: Vec<Output>) {
        let mut queue = out;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for output in queue {
                match output {
                    Output::Store { id, hlc, bytes } => {
                        self.log.insert(id, (hlc, bytes));
                    }
                    Output::Publish { bytes, .. } => self.outbox.push(bytes),
                    Output::Show(m) => {
                        self.shown.insert(m.id, (m.hlc, m.text));
                    }
                    Output::NeedItems { author, ids } => {
                        let items = ids
                            .iter()
                            .filter_map(|id| Some((*id, self.log.get(id)?.1.clone())))
                            .collect();
                        session.open_held(&self.me, author, items, &mut next);
                    }
                    Output::JoinTopic | Output::LeaveTopic | Output::Changed => {}
                }
            }
            queue = next;
        }
    }

    /// An item from the network: taken unless held or undecodable.
    fn receive(&mut self, now: u64, bytes: &[u8]) -> Option<Taken> {
        let id = LogItem::id_of(bytes);
        if self.session.is_none() || self.log.contains_key(&id) {
            return None;
        }
        let Ok(item) = LogItem::decode(bytes) else {
            return Some(Taken::Rejected("malformed"));
        };
        self.batch(now, |s, ctx, out| s.take(ctx, bytes, item, out))
    }

    fn restart(&mut self) {
        let Some(session) = &self.session else {
            return;
        };
        let id = session.id();
        self.session = match self.saved.clone() {
            Some(record) => Some(GroupSession::restore(id, self.me.key, record).expect("restore")),
            None => None,
        };
    }
}

impl World {
    fn new(seed: u64, size: usize) -> Self {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let members = (0..size).map(|_| Member::new(rng.next())).collect();
        Self {
            rng,
            now: 1_000_000,
            step: 0,
            members,
            flights: Vec::new(),
            invites: Vec::new(),
            side: vec![0; size],
            sent: Vec::new(),
            removed: BTreeSet::new(),
            puppets: BTreeMap::new(),
            reshared: BTreeSet::new(),
            group: None,
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.side[a] == self.side[b]
    }

    /// Takes what members published and puts it on the wire to everyone on the topic.
    fn gossip(&mut self) {
        for from in 0..self.members.len() {
            let items = std::mem::take(&mut self.members[from].outbox);
            for bytes in items {
                for to in 0..self.members.len() {
                    if to == from || !self.members[to].in_group() || !self.linked(from, to) {
                        continue;
                    }
                    if self.rng.chance(PERCENT_DROP) {
                        continue;
                    }
                    let copies = if self.rng.chance(PERCENT_DUP) { 2 } else { 1 };
                    for _ in 0..copies {
                        let due = self.step + self.rng.below(MAX_DELAY_STEPS as usize) as u64;
                        self.flights.push(Flight {
                            to,
                            due,
                            bytes: bytes.clone(),
                        });
                    }
                }
            }
        }
    }

    /// Delivers what is due, in a random order.
    fn deliver(&mut self) {
        let mut due = Vec::new();
        let mut later = Vec::new();
        for flight in self.flights.drain(..) {
            if flight.due <= self.step {
                due.push(flight);
            } else {
                later.push(flight);
            }
        }
        self.flights = later;
        while !due.is_empty() {
            let flight = due.swap_remove(self.rng.below(due.len()));
            let taken = self.members[flight.to].receive(self.now, &flight.bytes);
            assert!(
                !matches!(taken, Some(Taken::Rejected(_))),
                "an honest item was rejected"
            );
        }
        let mut invites = Vec::new();
        for (to, due, items) in std::mem::take(&mut self.invites) {
            if due > self.step {
                invites.push((to, due, items));
                continue;
            }
            self.take_invite(to, &items);
        }
        self.invites.extend(invites);
    }

    fn take_invite(&mut self, to: usize, items: &[Vec<u8>]) {
        let now = self.now;
        let member = &mut self.members[to];
        let Some((id, ordered)) = read_invite(items) else {
            return;
        };
        if member.session.is_none() {
            member.session = Some(GroupSession::new(id, member.me.key));
        }
        member.batch(now, |s, ctx, out| {
            for (bytes, item) in ordered {
                s.take(ctx, bytes, item, out);
            }
        });
        // Outputs stored the items; drop held duplicates was done by `take` on new ones
        // only: an invite may repeat what we hold, which `take` would store again, so the
        // log is a map and stays the same.
        if !member.in_group() && member.saved.is_none() {
            member.session = None;
        }
    }

    /// Reconciles every linked pair in which each side answers the other (as
    /// `/bonghwa/sync/1` does: only members are answered).
    fn sync_round(&mut self) -> usize {
        let mut moved = 0;
        for a in 0..self.members.len() {
            for b in 0..self.members.len() {
                if a == b || !self.linked(a, b) {
                    continue;
                }
                let (ma, mb) = (&self.members[a], &self.members[b]);
                let Some(sb) = &mb.session else { continue };
                // As `node/group_sync.rs`: members get everything, former members the ops,
                // and a member that is out itself answers with the ops only.
                if ma.session.is_none() || sb.ever_member(&ma.peer).is_none() {
                    continue;
                }
                let everything = mb.in_group() && sb.current_member(&ma.peer).is_some();
                let mut missing: Vec<Vec<u8>> = mb
                    .log
                    .iter()
                    .filter(|(id, _)| !ma.log.contains_key(id))
                    .map(|(_, (_, bytes))| bytes.clone())
                    .filter(|bytes| everything || is_op(bytes))
                    .collect();
                // Any order: what is not yet valid (its admitting op comes later) waits
                // for the next round.
                for i in (1..missing.len()).rev() {
                    missing.swap(i, self.rng.below(i + 1));
                }
                for bytes in missing {
                    if matches!(self.members[a].receive(self.now, &bytes), Some(Taken::New)) {
                        moved += 1;
                    }
                }
            }
        }
        moved
    }

    fn members_now(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].in_group())
            .collect()
    }

    fn invite(&mut self, by: usize, to: usize) {
        let invitee = self.members[to].me.key;
        let log: Vec<Vec<u8>> = {
            let mut items: Vec<_> = self.members[by].log.iter().collect();
            items.sort_by_key(|(id, (hlc, _))| (*hlc, **id));
            items.into_iter().map(|(_, (_, b))| b.clone()).collect()
        };
        let items = invite_items(log, &invitee, 60_000).expect("invite fits");
        let due = self.step + self.rng.below(8) as u64;
        self.invites.push((to, due, items));
    }

    fn act(&mut self) {
        let now = self.now;
        let inside = self.members_now();
        let roll = self.rng.below(100);
        match roll {
            0..40 if !inside.is_empty() && self.sent.len() < MESSAGES_PER_RUN => {
                let author = inside[self.rng.below(inside.len())];
                let text = format!("m{} by {author}", self.sent.len());
                let id = MessageId([self.sent.len() as u8 + 1; 32]);
                let (readers, excluded) = {
                    let s = self.members[author].session.as_ref().expect("in group");
                    let readers = s
                        .member_peers()
                        .iter()
                        .filter_map(|p| s.current_member(p))
                        .filter(|k| s.has_card(k))
                        .collect();
                    let excluded = self
                        .removed
                        .iter()
                        .map(|i| self.members[*i].me.key)
                        .filter(|k| !s.is_member(k) && s.ever_key(k))
                        .collect();
                    (readers, excluded)
                };
                let m = &mut self.members[author];
                let sent = m.batch(now, |s, ctx, out| {
                    let hlc = ctx.clock.tick(ctx.now);
                    s.send(ctx, id, hlc, &text, out).map(|item| (hlc, item))
                });
                if let Some(Ok((hlc, item))) = sent {
                    m.shown.insert(id, (hlc, text.clone()));
                    self.sent.push(Sent {
                        id,
                        item,
                        author,
                        text,
                        readers,
                        excluded,
                    });
                }
            }
            40..48 if !inside.is_empty() => {
                let candidates: Vec<usize> = (0..self.members.len())
                    .filter(|i| !inside.contains(i) && !self.removed.contains(i))
                    .collect();
                if candidates.is_empty() {
                    return;
                }
                let by = inside[self.rng.below(inside.len())];
                let to = candidates[self.rng.below(candidates.len())];
                let card = self.members[to].card.clone();
                let added = self.members[by].batch(now, |s, ctx, out| s.add(ctx, &card, out));
                if let Some(Ok(true)) = added {
                    self.invite(by, to);
                }
            }
            48..52 if inside.len() > 2 => {
                let by = inside[self.rng.below(inside.len())];
                let gone = inside[self.rng.below(inside.len())];
                let peer = self.members[gone].peer;
                let done = if by == gone {
                    self.members[by].batch(now, |s, ctx, out| s.leave(ctx, out))
                } else {
                    self.members[by].batch(now, |s, ctx, out| s.remove(ctx, &peer, out))
                };
                if let Some(Ok(())) = done {
                    self.removed.insert(gone);
                }
            }
            52..56 => {
                for side in self.side.iter_mut() {
                    *side = u8::from(self.rng.chance(50));
                }
            }
            56..62 => self.side.iter_mut().for_each(|s| *s = 0),
            62..65 => {
                let who = self.rng.below(self.members.len());
                self.members[who].restart();
            }
            65..75 => {
                self.sync_round();
            }
            75..78 => self.attack(),
            _ => {}
        }
    }

    /// A removed member who still holds the group signs "add my puppet" after every op it
    /// knows (its removal included, or not yet) and publishes it to everyone linked.
    fn attack(&mut self) {
        // One that knows it is out: its op names its removal among what it follows.
        let Some(&bad) = self
            .removed
            .iter()
            .find(|i| self.members[**i].session.is_some() && !self.members[**i].in_group())
        else {
            return;
        };
        let Some(group) = self.group else { return };
        let m = &mut self.members[bad];
        let Some(session) = &m.session else { return };
        let puppet = Member::new(self.rng.next());
        let known = session.removals_of(&m.me.key);
        self.puppets.insert(puppet.me.key, (bad, known));
        let op = SignedOp::sign(
            &m.me.signing,
            group,
            m.clock.tick(self.now),
            session.heads(),
            MembershipOp::Add {
                member: puppet.me.key,
            },
        );
        let item = LogItem::sign(
            &m.me.signing,
            group,
            m.clock.tick(self.now),
            crate::wire::group::LogBody::Op(op),
        );
        m.outbox.push(item.encode());
    }

    fn note_reshares(&mut self) {
        for (a, m) in self.members.iter().enumerate() {
            let Some(s) = &m.session else { continue };
            for gone in &self.removed {
                if s.shares_with(&self.members[*gone].me.key) {
                    self.reshared.insert((a, *gone));
                }
            }
        }
    }

    fn run(&mut self, steps: u64) {
        // Alice founds the group with the first few.
        let founders = 2 + self.rng.below(self.members.len() - 2);
        let cards: Vec<ContactCard> = (1..founders)
            .map(|i| self.members[i].card.clone())
            .collect();
        let now = self.now;
        self.group = Some(self.members[0].found(now, "sim", &cards));
        for to in 1..founders {
            self.invite(0, to);
        }
        for _ in 0..steps {
            self.step += 1;
            self.now += 1 + self.rng.below(50) as u64;
            self.act();
            self.gossip();
            self.deliver();
            self.note_reshares();
        }
        // Heal, deliver everything, and sync until nothing moves.
        self.side.iter_mut().for_each(|s| *s = 0);
        for _ in 0..200 {
            self.step += MAX_DELAY_STEPS + 8;
            self.now += 100;
            self.gossip();
            self.deliver();
            let moved = self.sync_round();
            self.gossip();
            self.note_reshares();
            if moved == 0 && self.flights.is_empty() && self.invites.is_empty() {
                break;
            }
        }
    }
}

/// The rules every run must keep.
fn check(world: &World) -> Result<(), String> {
    // Members now, as they see it. A removed member need not learn of its removal (members
    // stop answering its sync, and gossip may lose the op), so it is judged separately.
    let finals: Vec<usize> = world
        .members_now()
        .into_iter()
        .filter(|i| !world.removed.contains(i))
        .collect();
    let views: BTreeSet<Vec<[u8; 32]>> = finals
        .iter()
        .map(|i| {
            let s = world.members[*i].session.as_ref().expect("member");
            s.member_peers()
                .iter()
                .filter_map(|p| s.current_member(p))
                .collect()
        })
        .collect();
    if views.len() > 1 {
        let index = |k: &[u8; 32]| world.members.iter().position(|m| m.me.key == *k);
        let described: Vec<String> = finals
            .iter()
            .map(|i| {
                let m = &world.members[*i];
                let s = m.session.as_ref().expect("member");
                let view: Vec<Option<usize>> = s
                    .member_peers()
                    .iter()
                    .filter_map(|p| s.current_member(p))
                    .map(|k| index(&k))
                    .collect();
                format!("{i} sees {view:?} (log {})", m.log.len())
            })
            .collect();
        return Err(format!(
            "members disagree on who is in: {}; removed {:?}",
            described.join(", "),
            world.removed
        ));
    }
    // Every member holds the same log.
    let logs: BTreeSet<Vec<&MessageId>> = finals
        .iter()
        .map(|i| world.members[*i].log.keys().collect())
        .collect();
    if logs.len() > 1 {
        return Err(format!(
            "members hold different logs ({} variants)",
            logs.len()
        ));
    }
    let agreed: BTreeSet<[u8; 32]> = views
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .collect();
    for sent in &world.sent {
        // An author that is out in the end (removed, or its admission cancelled by a
        // removal of whoever added it) owes no one its messages.
        if world.removed.contains(&sent.author)
            || !agreed.contains(&world.members[sent.author].me.key)
        {
            continue;
        }
        for i in &finals {
            let m = &world.members[*i];
            let shown = m.shown.get(&sent.id);
            if sent.readers.contains(&m.me.key) && !world.removed.contains(i) {
                // The known limit: a receiving chain keeps two generations, so a message
                // that reaches a member after its author rotated twice more stays closed.
                let s = m.session.as_ref().expect("member");
                let author = world.members[sent.author].me.key;
                if let (Some((generation, _)), Some(current)) =
                    (generation_of(m, &sent.item), s.chain_generation(&author))
                    && generation + 1 < current
                    && !m.shown.contains_key(&sent.id)
                {
                    continue;
                }
                match shown {
                    Some((_, text)) if *text == sent.text => {}
                    Some(_) => return Err(format!("member {i} shows {:?} altered", sent.text)),
                    None => {
                        let s = m.session.as_ref().expect("member");
                        let author = world.members[sent.author].me.key;
                        return Err(format!(
                            "member {i} never shows {:?}, sent while it was in (item held: {}, \
                             by its author: {}; members now {finals:?}; \
                             {}; message generation {:?}, keys for it {:?})",
                            sent.text,
                            m.log.contains_key(&sent.item),
                            world.members[sent.author].log.contains_key(&sent.item),
                            s.debug_chain(&author),
                            generation_of(m, &sent.item),
                            keys_for(m, &author),
                        ));
                    }
                }
            }
        }
    }
    // A removed member opens nothing sent by someone who knew it was out.
    for sent in &world.sent {
        for gone in world.removed.iter().filter(|g| !finals.contains(g)) {
            let m = &world.members[*gone];
            if sent.excluded.contains(&m.me.key)
                && m.shown.contains_key(&sent.id)
                && !world.reshared.contains(&(sent.author, *gone))
            {
                return Err(format!(
                    "removed member {gone} reads {:?}, sent after its removal",
                    sent.text
                ));
            }
        }
    }
    // No op of a non-member is accepted: a puppet is let in only where none of the
    // attacker's removals it knew of when it signed stands in the fold. (One can fall: a
    // removal made by someone whom a concurrent removal put out first is cancelled with
    // the rest of its author's concurrent ops, and its target was never out.)
    for i in 0..world.members.len() {
        let Some(s) = &world.members[i].session else {
            continue;
        };
        let in_effect = s.removals_in_effect();
        if let Some((_, (by, known))) = world
            .puppets
            .iter()
            .find(|(k, (_, known))| s.is_member(k) && !known.is_disjoint(&in_effect))
        {
            let attacker = world.members[*by].me.key;
            return Err(format!(
                "member {i} lets in a puppet of member {by}, signed after a removal that \
                 stands (attacker a member there: {}; removals it knew {}; removed: {:?})",
                s.is_member(&attacker),
                known.len(),
                world.removed,
            ));
        }
    }
    Ok(())
}

fn generation_of(m: &Member, item: &MessageId) -> Option<(u32, u32)> {
    let (_, bytes) = m.log.get(item)?;
    match LogItem::decode(bytes).ok()?.body {
        crate::wire::group::LogBody::Message(e) => Some((e.generation, e.iteration)),
        _ => None,
    }
}

/// The (generation, iteration) of every key `author` sealed to `m`, from `m`'s log.
fn keys_for(m: &Member, author: &[u8; 32]) -> Vec<(u32, u32)> {
    m.log
        .values()
        .filter_map(|(_, bytes)| LogItem::decode(bytes).ok())
        .filter(|item| item.author == *author)
        .filter_map(|item| match item.body {
            crate::wire::group::LogBody::Keys(sealed) => {
                let (_, copy) = sealed.into_iter().find(|(to, _)| *to == m.me.key)?;
                let opened = crate::crypto::open(&m.me.msg_secret, &copy).ok()?;
                let state: crate::crypto::group::ChainState =
                    postcard::from_bytes(&opened.plaintext).ok()?;
                Some((state.generation, state.iteration))
            }
            _ => None,
        })
        .collect()
}

fn is_op(bytes: &[u8]) -> bool {
    LogItem::decode(bytes).is_ok_and(|i| matches!(i.body, crate::wire::group::LogBody::Op(_)))
}

fn run_seed(seed: u64) -> Result<(), String> {
    check(&world_after(seed))
}

fn world_after(seed: u64) -> World {
    let size = 3 + (seed % 6) as usize;
    let mut world = World::new(seed, size);
    world.run(150);
    world
}

/// A seed replays exactly: the same logs, item for item, at every member.
#[test]
fn group_sim_a_seed_replays_exactly() {
    let logs = |world: &World| -> Vec<Vec<MessageId>> {
        world
            .members
            .iter()
            .map(|m| m.log.keys().copied().collect())
            .collect()
    };
    for seed in [3, 41] {
        let first = logs(&world_after(seed));
        assert!(
            first.iter().any(|log| !log.is_empty()),
            "seed {seed} did nothing"
        );
        assert_eq!(
            first,
            logs(&world_after(seed)),
            "seed {seed} ran differently"
        );
    }
}

/// Runs `count` seeds from `first` (or the one in `BONGHWA_SIM_SEED`); panics with the
/// first failing seed.
fn run_seeds(first: u64, count: u64) {
    let seeds: Vec<u64> = match std::env::var("BONGHWA_SIM_SEED") {
        Ok(one) => vec![one.parse().expect("a seed number")],
        Err(_) => {
            let count = std::env::var("BONGHWA_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(count);
            (first..first + count).collect()
        }
    };
    let mut failed = Vec::new();
    for seed in seeds {
        if let Err(e) = run_seed(seed) {
            eprintln!(
                "group simulation failed with seed {seed}: {e}\n\
                 replay: BONGHWA_SIM_SEED={seed} cargo test -p bonghwa-core group_sim"
            );
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "group simulation failed with seeds {failed:?} (see above)"
    );
}

#[test]
fn group_sim_members_converge_and_removed_members_read_nothing_new() {
    run_seeds(0, DEFAULT_SEEDS / 2);
}

/// The same with the second half of the seeds (the two run in parallel).
#[test]
fn group_sim_second_half_of_the_seeds() {
    run_seeds(DEFAULT_SEEDS / 2, DEFAULT_SEEDS / 2);
}

/// Seeds one `cargo test` runs.
const DEFAULT_SEEDS: u64 = 2_000;

/// A member that sent before it held a fellow member's card seals its key to that member
/// when the card comes, without waiting for its next send: otherwise what it sent stays
/// closed there until it speaks again (perhaps never).
#[test]
fn a_card_that_comes_after_a_send_still_lets_that_send_be_read() {
    let now = 1_000;
    let (mut a, mut b, mut c) = (Member::new(11), Member::new(21), Member::new(31));
    let group = a.found(now, "late card", &[b.card.clone(), c.card.clone()]);
    let mut log: Vec<(Hlc, Vec<u8>)> = a.log.values().cloned().collect();
    log.sort();
    let is_card_of = |bytes: &[u8], key: &[u8; 32]| {
        LogItem::decode(bytes).is_ok_and(|item| {
            matches!(item.body, crate::wire::group::LogBody::Card(ref card) if card.identity == *key)
        })
    };
    // b learns the group without c's card (gossip lost it), then sends.
    b.session = Some(GroupSession::new(group, b.me.key));
    let (c_card, rest): (Vec<_>, Vec<_>) = log
        .iter()
        .map(|(_, bytes)| bytes.clone())
        .partition(|bytes| is_card_of(bytes, &c.me.key));
    for bytes in &rest {
        b.receive(now, bytes);
    }
    assert!(b.in_group(), "b took the group");
    let id = MessageId([7; 32]);
    let sent = b.batch(now + 1, |s, ctx, out| {
        let hlc = ctx.clock.tick(ctx.now);
        s.send(ctx, id, hlc, "before the card", out)
    });
    assert!(matches!(sent, Some(Ok(_))), "b sent: {sent:?}");
    // Now c's card reaches b; b does not send again.
    for bytes in &c_card {
        b.receive(now + 2, bytes);
    }
    // c holds the whole group and everything b published.
    c.session = Some(GroupSession::new(group, c.me.key));
    for (_, bytes) in &log {
        c.receive(now + 3, bytes);
    }
    for bytes in std::mem::take(&mut b.outbox) {
        c.receive(now + 3, &bytes);
    }
    assert_eq!(
        c.shown.get(&id).map(|(_, text)| text.as_str()),
        Some("before the card"),
        "c reads what b sent before b held c's card"
    );
}
