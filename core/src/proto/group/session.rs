//! One group as one member holds it, sans-IO: membership, our sender key and its
//! checkpoints, the other members' chains, their cards, who holds our key, and chat items
//! waiting for their author's key.
//!
//! The node feeds it items (from gossip, sync or an invite) and commands (send, add,
//! remove, leave) with a [`Ctx`] (who we are, the clock, `now`, randomness) and applies
//! the [`Output`]s it returns, in order: store this item, publish it, show this message,
//! read these held items back, join or leave the topic, membership changed. It never
//! touches a socket, a file or the wall clock, so `sim.rs` runs thousands of seeded
//! groups with lost, doubled, reordered and delayed items.
//!
//! Two things are deferred:
//! - **sealing our key** to members that lack it, until they need it: at our next send
//!   (one `Keys` item for everyone owed, just before the message), or at the end of the
//!   batch ([`GroupSession::flush`]) for a member whose card arrives after we sent
//!   something it should read. Cards and ops arrive one at a time; sealing at each
//!   arrival made one `Keys` item per member per newcomer (a group of 128 set up with
//!   some 16,000 key items, each gossiped to everyone), and sealing once per batch still
//!   made one per member per batch (128 members listed each other after 143 s). A member
//!   that never sends never seals;
//! - **saving the record**: [`GroupSession::take_dirty`] says it changed, and the node
//!   writes it once per batch of work (a round of swarm events, an invite, a command),
//!   before the batch's items (crash order: an item is stored after what it caused).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ed25519_dalek::SigningKey;
use libp2p::PeerId;

use crate::crypto;
use crate::crypto::group::{ChainState, GroupCryptoError, GroupId, ReceiverChain, SenderKey};
use crate::identity::{self, ContactCard};
use crate::model::{GroupRecord, Hlc, HlcClock, MessageId};
use crate::proto::group::{KeyAction, Membership};
use crate::wire::group::{
    GroupBody, GroupEnvelope, GroupPayload, LogBody, LogItem, MAX_SEALED_KEYS, MembershipOp,
    SignedOp,
};

/// Members a group may have in this version (one key item seals to all of them).
pub const MAX_GROUP_MEMBERS: usize = MAX_SEALED_KEYS;
/// Cards kept per group (members' and those about to be added).
pub const MAX_CARDS: usize = 2 * MAX_GROUP_MEMBERS;
/// Our sends whose chain state we keep, per group, for members we learn of late.
pub const MAX_CHECKPOINTS: usize = 64;
/// Chat items kept while their author's key has not arrived, per author.
pub const MAX_UNOPENED: usize = 4_096;
/// Clock skew we accept from an item's author before ignoring its timestamp for our clock.
pub const MAX_SKEW_MS: u64 = 10 * 60 * 1000;

/// Who we are in every group: the keys we sign items with and open sealed keys with.
pub struct Me {
    /// Our identity key (public).
    pub key: [u8; 32],
    /// Signs our items and ops.
    pub signing: SigningKey,
    /// Opens the keys members seal to us (X25519).
    pub msg_secret: [u8; 32],
}

/// Fresh secrets for new sender keys and group ids: the OS in the node, a seeded
/// generator in the simulator.
pub trait Random {
    /// 32 fresh random bytes.
    fn bytes32(&mut self) -> Result<[u8; 32], GroupCryptoError>;
}

/// The OS's randomness.
#[derive(Debug, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn bytes32(&mut self) -> Result<[u8; 32], GroupCryptoError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| GroupCryptoError::Random(e.to_string()))?;
        Ok(bytes)
    }
}

/// What one call needs from outside.
pub struct Ctx<'a> {
    /// Who we are.
    pub me: &'a Me,
    /// The node's clock (shared with direct messages, so our stamps keep one order).
    pub clock: &'a mut HlcClock,
    /// Wall-clock time, Unix ms.
    pub now: u64,
    /// Where new secrets come from.
    pub random: &'a mut dyn Random,
}

/// What the node does for a session, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Put this item into the group's log, after the record (see the module doc).
    Store {
        /// The item's id.
        id: MessageId,
        /// Its HLC (the log's order).
        hlc: Hlc,
        /// Its encoding.
        bytes: Vec<u8>,
    },
    /// An item of ours for the members: hand it to gossip.
    Publish {
        /// The item's id.
        id: MessageId,
        /// Its encoding.
        bytes: Vec<u8>,
    },
    /// A member's chat message, opened: store it for display and tell the user.
    Show(GroupMessage),
    /// Chat items of `author` held while its key was missing: the key came, so read them
    /// back from the log and give them to [`GroupSession::open_held`].
    NeedItems {
        /// Whose items.
        author: [u8; 32],
        /// Which, by item id.
        ids: Vec<MessageId>,
    },
    /// We are a member now: subscribe to the group's topic.
    JoinTopic,
    /// We are out: leave the topic.
    LeaveTopic,
    /// Membership changed (someone joined, left or was removed).
    Changed,
}

/// A chat message opened in a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMessage {
    /// The message id the author gave it.
    pub id: MessageId,
    /// The author.
    pub from: PeerId,
    /// The author's HLC.
    pub hlc: Hlc,
    /// The text.
    pub text: String,
}

/// What a received item did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// New and valid: its effects are applied and it is to be stored.
    New,
    /// Not from a member as far as we know (the op admitting its author may still be on
    /// its way): neither kept nor forwarded; sync brings it again later.
    Ignored,
    /// Invalid: rejected (and the sender's gossip score lowered).
    Rejected(&'static str),
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// We left or were removed.
    #[error("you are not a member of this group any more")]
    NotAMember,
    /// The group is full.
    #[error("a group has at most {MAX_GROUP_MEMBERS} members")]
    Full,
    /// The member to remove is not in the group.
    #[error("{0} is not in the group")]
    NotInGroup(PeerId),
    /// Sealing, key generation or randomness failed.
    #[error("group crypto failed: {0}")]
    Crypto(String),
}

/// One group as this member holds it.
#[derive(Debug)]
pub struct GroupSession {
    membership: Membership,
    /// Our sending chain; `None` once we left or were removed.
    my_key: Option<SenderKey>,
    /// The chain as it was before each of our latest sends (≤ [`MAX_CHECKPOINTS`], this
    /// generation only), with the send's HLC: a member we learn of late gets our key from
    /// the first message we sent after it was added, not from now (see `checkpoint_for`).
    checkpoints: VecDeque<(Hlc, ChainState)>,
    /// Other members' chains, by identity key.
    chains: BTreeMap<[u8; 32], ReceiverChain>,
    /// Members' cards, by identity key (to seal keys to them).
    cards: BTreeMap<[u8; 32], ContactCard>,
    /// Members that hold our current key.
    shared: BTreeSet<[u8; 32]>,
    /// Chat items whose author's key we lack, by author.
    unopened: BTreeMap<[u8; 32], BTreeSet<MessageId>>,
    /// Everyone who was ever a member, with their peer id: their items stay valid history.
    /// Derived from the ops, kept so that each item and each connection does not refold.
    ever: BTreeMap<[u8; 32], Option<PeerId>>,
    /// Authors with a key item held aside (see `take_keys`); not persisted: after a
    /// restart every author with held items counts.
    held_keys: BTreeSet<[u8; 32]>,
    /// Some member may lack our key: [`GroupSession::flush`] looks whether it needs it now.
    owes_keys: bool,
    /// The record changed since [`GroupSession::take_dirty`].
    dirty: bool,
}

/// Which members lacking our key to seal it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owed {
    /// All of them: we are about to send.
    Everyone,
    /// Those that should read something we already sent.
    ReadersOfWhatWeSent,
}

impl GroupSession {
    /// An empty group we are about to learn (from an invite).
    pub fn new(id: GroupId, me: [u8; 32]) -> Self {
        Self {
            membership: Membership::new(id, me),
            my_key: None,
            checkpoints: VecDeque::new(),
            chains: BTreeMap::new(),
            cards: BTreeMap::new(),
            shared: BTreeSet::new(),
            unopened: BTreeMap::new(),
            ever: BTreeMap::new(),
            held_keys: BTreeSet::new(),
            owes_keys: false,
            dirty: true,
        }
    }

    /// A new group founded by us (`mine`: our card) with `members` (their cards), named
    /// `name`. Returns the
    /// session and what to do (store and publish the founding items, join the topic).
    pub fn create(
        ctx: &mut Ctx<'_>,
        name: &str,
        mine: &ContactCard,
        members: &[ContactCard],
    ) -> Result<(Self, Vec<Output>), SessionError> {
        if members.len() + 1 > MAX_GROUP_MEMBERS {
            return Err(SessionError::Full);
        }
        let salt = ctx.random.bytes32().map_err(crypto_err)?;
        let id = GroupId::derive(&ctx.me.key, &salt);
        let mut keys: Vec<[u8; 32]> = members.iter().map(|c| c.identity).collect();
        keys.sort_unstable();
        keys.dedup();
        let create = SignedOp::sign(
            &ctx.me.signing,
            id,
            ctx.clock.tick(ctx.now),
            Vec::new(),
            MembershipOp::Create {
                name: name.to_owned(),
                salt,
                members: keys,
            },
        );
        let mut session = Self::new(id, ctx.me.key);
        let mut out = Vec::new();
        session.author(ctx, LogBody::Op(create), &mut out)?;
        session.author(ctx, LogBody::Card(mine.clone()), &mut out)?;
        for card in members {
            session.author(ctx, LogBody::Card(card.clone()), &mut out)?;
        }
        Ok((session, out))
    }

    /// A group as it was saved. `Err` if its ops do not verify.
    pub fn restore(id: GroupId, me: [u8; 32], record: GroupRecord) -> Result<Self, String> {
        let mut session = Self::new(id, me);
        session
            .membership
            .apply_all(record.ops)
            .map_err(|e| e.to_string())?;
        session.my_key = record.my_key;
        session.checkpoints = record.checkpoints.into_iter().collect();
        session.chains = record.chains.into_iter().collect();
        session.cards = record.cards.into_iter().map(|c| (c.identity, c)).collect();
        session.shared = record.shared.into_iter().collect();
        session.unopened = record
            .unopened
            .into_iter()
            .map(|(k, ids)| (k, ids.into_iter().collect()))
            .collect();
        session.refresh_ever();
        session.held_keys = session.unopened.keys().copied().collect();
        // A member whose card came just before a crash may still lack our key.
        session.owes_keys = true;
        session.dirty = false;
        Ok(session)
    }

    /// What is persisted (the log itself is in the store's group log).
    pub fn record(&self) -> GroupRecord {
        GroupRecord {
            ops: self.membership.ops().cloned().collect(),
            my_key: self.my_key.clone(),
            checkpoints: self.checkpoints.iter().cloned().collect(),
            chains: self.chains.iter().map(|(k, c)| (*k, c.clone())).collect(),
            cards: self.cards.values().cloned().collect(),
            shared: self.shared.iter().copied().collect(),
            unopened: self
                .unopened
                .iter()
                .map(|(k, ids)| (*k, ids.iter().copied().collect()))
                .collect(),
        }
    }

    /// Whether the record changed since the last call (and must be saved).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The group's id.
    pub fn id(&self) -> GroupId {
        *self.membership.group_id()
    }

    /// The group's name (from its founding op), or "group" before it is known.
    pub fn name(&self) -> String {
        self.membership
            .state()
            .name
            .clone()
            .unwrap_or_else(|| "group".to_owned())
    }

    /// Whether `key` is a member now.
    pub fn is_member(&self, key: &[u8; 32]) -> bool {
        self.membership.is_member(key)
    }

    /// Current members' peer ids, in key order.
    pub fn member_peers(&self) -> Vec<PeerId> {
        self.membership
            .state()
            .members
            .iter()
            .filter_map(|k| self.ever.get(k).copied().flatten())
            .collect()
    }

    /// The identity key of `peer` if it is a member now.
    pub fn current_member(&self, peer: &PeerId) -> Option<[u8; 32]> {
        self.ever_member(peer).filter(|k| self.is_member(k))
    }

    /// The identity key of `peer` if it was ever a member.
    pub fn ever_member(&self, peer: &PeerId) -> Option<[u8; 32]> {
        self.ever
            .iter()
            .find(|(_, p)| p.as_ref() == Some(peer))
            .map(|(k, _)| *k)
    }

    /// Whether we hold `key`'s card (so we can seal our key to it).
    pub fn has_card(&self, key: &[u8; 32]) -> bool {
        self.cards.contains_key(key)
    }

    /// The generation of `author`'s chain we read now.
    #[cfg(test)]
    pub(crate) fn chain_generation(&self, author: &[u8; 32]) -> Option<u32> {
        self.chains.get(author).map(ReceiverChain::generation)
    }

    /// For the simulator's reports: what we hold of `author`'s chain.
    #[cfg(test)]
    pub(crate) fn debug_chain(&self, author: &[u8; 32]) -> String {
        format!(
            "chain generation {:?}, unopened {}, member {}",
            self.chains.get(author).map(ReceiverChain::generation),
            self.unopened.get(author).map_or(0, BTreeSet::len),
            self.is_member(author),
        )
    }

    /// Whether `key` holds our current key (we sealed it to them).
    pub fn shares_with(&self, key: &[u8; 32]) -> bool {
        self.shared.contains(key)
    }

    /// Whether `key` was ever a member.
    pub fn ever_key(&self, key: &[u8; 32]) -> bool {
        self.ever.contains_key(key)
    }

    /// The held ops that remove `key`, in effect or not (for the simulator's checks).
    #[cfg(test)]
    pub(crate) fn removals_of(&self, key: &[u8; 32]) -> BTreeSet<crate::wire::group::OpId> {
        self.membership.removals_of(key)
    }

    /// The removals in effect in our fold (for the simulator's checks).
    #[cfg(test)]
    pub(crate) fn removals_in_effect(&self) -> BTreeSet<crate::wire::group::OpId> {
        self.membership.removals_in_effect()
    }

    /// The membership ops no other op names (what a new op names as its `deps`).
    pub fn heads(&self) -> Vec<crate::wire::group::OpId> {
        self.membership.heads()
    }

    /// Takes one verified item that the log does not hold yet (from gossip, sync or an
    /// invite): applies it (membership, cards, keys, messages) and says to store it.
    pub fn take(
        &mut self,
        ctx: &mut Ctx<'_>,
        bytes: &[u8],
        item: LogItem,
        out: &mut Vec<Output>,
    ) -> Taken {
        if item.group_id != self.id() {
            return Taken::Rejected("item for another group");
        }
        if !is_founding(&item.body) && !self.ever.contains_key(&item.author) {
            return Taken::Ignored;
        }
        ctx.clock.observe(item.hlc, ctx.now, MAX_SKEW_MS);
        let id = LogItem::id_of(bytes);
        let hlc = item.hlc;
        match item.body {
            LogBody::Op(op) => self.apply_op(ctx, op, out),
            LogBody::Card(card) => self.take_card(card),
            LogBody::Keys(sealed) => self.take_keys(ctx.me, id, item.author, &sealed, out),
            LogBody::Message(envelope) => {
                if !self.open(ctx, item.author, &envelope, out) {
                    let held = self.unopened.entry(item.author).or_default();
                    if held.len() < MAX_UNOPENED {
                        held.insert(id);
                    }
                    // A key of an older generation may be held aside for it.
                    if self.held_keys.contains(&item.author) && self.is_member(&item.author) {
                        self.ask_held(item.author, out);
                    }
                }
            }
        }
        self.dirty = true;
        out.push(Output::Store {
            id,
            hlc,
            bytes: bytes.to_vec(),
        });
        Taken::New
    }

    /// Held chat items of `author`, read back after [`Output::NeedItems`]: opens what the
    /// author's chain now opens, oldest first, and shows it.
    pub fn open_held(
        &mut self,
        me: &Me,
        author: [u8; 32],
        items: Vec<(MessageId, Vec<u8>)>,
        out: &mut Vec<Output>,
    ) {
        let mut envelopes = Vec::new();
        // Generations older than the chain keeps, from held key items.
        let mut old: BTreeMap<u32, ReceiverChain> = BTreeMap::new();
        for (id, bytes) in items {
            match LogItem::decode(&bytes).map(|item| item.body) {
                Ok(LogBody::Message(envelope)) => envelopes.push((id, envelope)),
                Ok(LogBody::Keys(sealed)) if self.is_member(&author) => {
                    let Some(state) = self.unseal(me, author, &sealed) else {
                        continue;
                    };
                    let chain = self
                        .chains
                        .entry(author)
                        .or_insert_with(|| ReceiverChain::new(&state));
                    if chain.install(&state).is_ok() {
                        if let Some(held) = self.unopened.get_mut(&author) {
                            held.remove(&id);
                        }
                        self.dirty = true;
                    } else {
                        old.insert(state.generation, ReceiverChain::new(&state));
                    }
                }
                _ => {}
            }
        }
        // Oldest first, so the chain moves forward.
        envelopes.sort_by_key(|(_, e)| (e.generation, e.iteration));
        for (id, envelope) in envelopes {
            if !self.is_member(&author) {
                break;
            }
            let Some(chain) = self.chains.get_mut(&author) else {
                break;
            };
            let opened = match envelope.open(chain) {
                Ok(payload) => Some(payload),
                Err(_) => old
                    .get_mut(&envelope.generation)
                    .and_then(|chain| envelope.open(chain).ok()),
            };
            let Some(payload) = opened else {
                continue;
            };
            if let Some(held) = self.unopened.get_mut(&author) {
                held.remove(&id);
            }
            self.dirty = true;
            self.show(author, payload, out);
        }
        self.unopened.retain(|_, ids| !ids.is_empty());
    }

    /// Our chat message: sealed under our key and signed. Says to store and publish it;
    /// the node stores the message itself (pending) with the item. Returns the item's id.
    pub fn send(
        &mut self,
        ctx: &mut Ctx<'_>,
        message_id: MessageId,
        hlc: Hlc,
        text: &str,
        out: &mut Vec<Output>,
    ) -> Result<MessageId, SessionError> {
        let id = self.id();
        self.check_member(ctx)?;
        // Whoever lacks our key gets it now, in the state this message is sealed with.
        self.seal_owed(ctx, Owed::Everyone, out)?;
        let key = self.my_key.as_mut().ok_or(SessionError::NotAMember)?;
        if self.checkpoints.len() >= MAX_CHECKPOINTS {
            self.checkpoints.pop_front();
        }
        self.checkpoints.push_back((hlc, key.state().clone()));
        let payload = GroupPayload::new(message_id, hlc, GroupBody::Text(text.to_owned()));
        let envelope = GroupEnvelope::seal(key, &ctx.me.signing, &id, &payload)
            .map_err(|e| SessionError::Crypto(e.to_string()))?;
        let item = LogItem::sign(&ctx.me.signing, id, hlc, LogBody::Message(envelope));
        let bytes = item.encode();
        let item_id = LogItem::id_of(&bytes);
        // The advanced chain is saved before the item: a message key is never used twice.
        self.dirty = true;
        out.push(Output::Store {
            id: item_id,
            hlc,
            bytes: bytes.clone(),
        });
        out.push(Output::Publish { id: item_id, bytes });
        Ok(item_id)
    }

    /// Adds `card`'s owner (its card goes into the log too). `Ok(false)` if already in.
    pub fn add(
        &mut self,
        ctx: &mut Ctx<'_>,
        card: &ContactCard,
        out: &mut Vec<Output>,
    ) -> Result<bool, SessionError> {
        self.check_member(ctx)?;
        if self.is_member(&card.identity) {
            return Ok(false);
        }
        if self.membership.state().members.len() >= MAX_GROUP_MEMBERS {
            return Err(SessionError::Full);
        }
        let op = self.sign_op(
            ctx,
            MembershipOp::Add {
                member: card.identity,
            },
        );
        self.author(ctx, LogBody::Op(op), out)?;
        self.author(ctx, LogBody::Card(card.clone()), out)?;
        Ok(true)
    }

    /// Removes the member `peer`.
    pub fn remove(
        &mut self,
        ctx: &mut Ctx<'_>,
        peer: &PeerId,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        self.check_member(ctx)?;
        let member = self
            .current_member(peer)
            .ok_or(SessionError::NotInGroup(*peer))?;
        let op = self.sign_op(ctx, MembershipOp::Remove { member });
        self.author(ctx, LogBody::Op(op), out)
    }

    /// We leave.
    pub fn leave(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Output>) -> Result<(), SessionError> {
        self.check_member(ctx)?;
        let op = self.sign_op(ctx, MembershipOp::Leave);
        self.author(ctx, LogBody::Op(op), out)
    }

    /// Our card in the log (when we create a group), or a newer one.
    pub fn publish_card(
        &mut self,
        ctx: &mut Ctx<'_>,
        card: &ContactCard,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        self.author(ctx, LogBody::Card(card.clone()), out)
    }

    /// End of a batch: seals our key, in one `Keys` item, to every member that lacks it,
    /// whose card we hold and that should read something we already sent. The others get
    /// it with our next send.
    pub fn flush(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Output>) -> Result<(), SessionError> {
        if !std::mem::take(&mut self.owes_keys) {
            return Ok(());
        }
        self.seal_owed(ctx, Owed::ReadersOfWhatWeSent, out)
    }

    /// Seals our key to the members `who` names that lack it and whose card we hold, in
    /// one `Keys` item (none if no one is owed).
    fn seal_owed(
        &mut self,
        ctx: &mut Ctx<'_>,
        who: Owed,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        let me = ctx.me.key;
        let Some(key) = self.my_key.as_ref().filter(|_| self.is_member(&me)) else {
            return Ok(());
        };
        let owed: Vec<(&ContactCard, ChainState)> = self
            .membership
            .state()
            .members
            .iter()
            .filter(|m| **m != me && !self.shared.contains(*m))
            .filter_map(|m| {
                let card = self.cards.get(m)?;
                match (self.checkpoint_for(m), who) {
                    (Some(state), _) => Some((card, state)),
                    (None, Owed::Everyone) => Some((card, key.state().clone())),
                    (None, Owed::ReadersOfWhatWeSent) => None,
                }
            })
            .collect();
        if owed.is_empty() {
            return Ok(());
        }
        let mut sealed = Vec::with_capacity(owed.len());
        for (card, state) in owed {
            let plain = postcard::to_stdvec(&state).map_err(|e| crypto_err(e.to_string()))?;
            let random = ctx.random.bytes32().map_err(crypto_err)?;
            let copy = crypto::seal_with(&ctx.me.msg_secret, &card.msg_key, &plain, random)
                .map_err(|e| crypto_err(e.to_string()))?;
            sealed.push((card.identity, copy));
        }
        self.shared.extend(sealed.iter().map(|(to, _)| *to));
        self.dirty = true;
        self.author(ctx, LogBody::Keys(sealed), out)
    }

    /// Signs a membership op after every op we hold (our heads as its `deps`, and an HLC
    /// above theirs, or the fold would ignore it).
    fn sign_op(&self, ctx: &mut Ctx<'_>, op: MembershipOp) -> SignedOp {
        if let Some(latest) = self.membership.ops().map(|op| op.hlc).max() {
            ctx.clock.observe(latest, ctx.now, MAX_SKEW_MS);
        }
        let hlc = ctx.clock.tick(ctx.now);
        SignedOp::sign(&ctx.me.signing, self.id(), hlc, self.membership.heads(), op)
    }

    /// Signs one item of ours, takes it ourselves and says to publish it.
    fn author(
        &mut self,
        ctx: &mut Ctx<'_>,
        body: LogBody,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        let item = LogItem::sign(&ctx.me.signing, self.id(), ctx.clock.tick(ctx.now), body);
        let bytes = item.encode();
        match self.take(ctx, &bytes, item, out) {
            Taken::New => {}
            Taken::Ignored | Taken::Rejected(_) => return Err(SessionError::NotAMember),
        }
        out.push(Output::Publish {
            id: LogItem::id_of(&bytes),
            bytes,
        });
        Ok(())
    }

    fn check_member(&self, ctx: &Ctx<'_>) -> Result<(), SessionError> {
        if self.is_member(&ctx.me.key) {
            Ok(())
        } else {
            Err(SessionError::NotAMember)
        }
    }

    fn take_card(&mut self, card: ContactCard) {
        // Kept even before the op that adds its owner arrives (gossip may bring them in
        // either order); keys are only ever sealed to current members.
        if self.cards.len() < MAX_CARDS || self.cards.contains_key(&card.identity) {
            let newer = self
                .cards
                .get(&card.identity)
                .is_none_or(|old| card.issued_ms > old.issued_ms);
            if newer {
                self.cards.insert(card.identity, card);
                self.owes_keys = true;
            }
        }
    }

    fn apply_op(&mut self, ctx: &mut Ctx<'_>, op: SignedOp, out: &mut Vec<Output>) {
        let change = match self.membership.apply(op) {
            Ok(change) => change,
            Err(e) => {
                tracing::info!("group op refused: {e}");
                return;
            }
        };
        self.refresh_ever();
        // A member that is out keeps its chain: views of who is in change as ops arrive
        // in any order, and one that comes back must still read what it sent. Its items
        // are held, not opened, while it is out (see `open`).
        for gone in &change.removed {
            self.shared.remove(gone);
        }
        match change.key {
            KeyAction::Start { .. } => {
                // Back in after being out (views can say so for a while): a new
                // generation, never one members already hold; else our first key.
                let generation = self
                    .my_key
                    .as_ref()
                    .map_or(Some(0), |key| key.state().generation.checked_add(1));
                match (generation, ctx.random.bytes32()) {
                    (Some(generation), Ok(chain_key)) => {
                        self.my_key = Some(SenderKey::from_state(ChainState {
                            generation,
                            iteration: 0,
                            chain_key,
                        }));
                    }
                    _ => tracing::error!("no sender key for a group we joined"),
                }
                self.checkpoints.clear();
                self.shared.clear();
                out.push(Output::JoinTopic);
            }
            KeyAction::Rotate { .. } => {
                if let Some(key) = &self.my_key
                    && let Some(generation) = key.state().generation.checked_add(1)
                    && let Ok(chain_key) = ctx.random.bytes32()
                {
                    self.my_key = Some(SenderKey::from_state(ChainState {
                        generation,
                        iteration: 0,
                        chain_key,
                    }));
                    self.checkpoints.clear();
                    self.shared.clear();
                }
            }
            KeyAction::Stop => {
                // We are out. Our key stays (unused: `send` needs membership) so that if
                // later ops put us back, the next key is a newer generation. Others'
                // chains stay too: they open only what was sent to us while we were in.
                self.checkpoints.clear();
                self.shared.clear();
                out.push(Output::LeaveTopic);
            }
            KeyAction::Share { .. } | KeyAction::None => {}
        }
        self.owes_keys = true;
        let now_in: Vec<[u8; 32]> = self
            .unopened
            .keys()
            .filter(|a| self.is_member(a))
            .copied()
            .collect();
        for author in now_in {
            self.ask_held(author, out);
        }
        out.push(Output::Changed);
    }

    /// A key item: if one copy is sealed to us, install it as the author's chain, and
    /// ask for the author's held items. The item itself is held with the author's chat
    /// items (by id, in `unopened`) while the author is not a member in our view (the op
    /// admitting it may still be on its way; a stored item is never delivered again), and
    /// when its generation is older than the two a chain keeps (keys reordered across
    /// rotations): its messages are then opened from it (see `open_held`).
    fn take_keys(
        &mut self,
        me: &Me,
        item: MessageId,
        author: [u8; 32],
        sealed: &[([u8; 32], Vec<u8>)],
        out: &mut Vec<Output>,
    ) {
        if !sealed.iter().any(|(to, _)| *to == me.key) {
            return;
        }
        if !self.is_member(&author) {
            self.hold(author, item);
            return;
        }
        let Some(state) = self.unseal(me, author, sealed) else {
            return;
        };
        match self.chains.get_mut(&author) {
            Some(chain) => {
                if let Err(e) = chain.install(&state) {
                    tracing::debug!("group key kept aside: {e}");
                    self.hold(author, item);
                }
            }
            None => {
                self.chains.insert(author, ReceiverChain::new(&state));
            }
        }
        self.ask_held(author, out);
    }

    /// Keeps an item of `author` to look at again (see `take_keys`).
    fn hold(&mut self, author: [u8; 32], item: MessageId) {
        let held = self.unopened.entry(author).or_default();
        if held.len() < MAX_UNOPENED {
            held.insert(item);
            self.held_keys.insert(author);
        }
    }

    /// The chain state sealed to us in a key item of `author`, if it opens and was
    /// sealed by the author's message key.
    fn unseal(
        &self,
        me: &Me,
        author: [u8; 32],
        sealed: &[([u8; 32], Vec<u8>)],
    ) -> Option<ChainState> {
        let (_, copy) = sealed.iter().find(|(to, _)| *to == me.key)?;
        let Ok(opened) = crypto::open(&me.msg_secret, copy) else {
            tracing::info!("a group key sealed to us does not open");
            return None;
        };
        if let Some(card) = self.cards.get(&author)
            && card.msg_key != opened.sender_msg_key
        {
            tracing::info!("a group key not sealed by its author; ignored");
            return None;
        }
        postcard::from_bytes::<ChainState>(&opened.plaintext).ok()
    }

    /// Asks for `author`'s held items (a key of theirs came, or they became a member).
    fn ask_held(&self, author: [u8; 32], out: &mut Vec<Output>) {
        if let Some(held) = self.unopened.get(&author) {
            out.push(Output::NeedItems {
                author,
                ids: held.iter().copied().collect(),
            });
        }
    }

    /// Opens one chat item with its author's chain and shows it; false if it cannot be
    /// opened yet (no key from the author). Ours need no opening (stored when sent).
    fn open(
        &mut self,
        ctx: &Ctx<'_>,
        author: [u8; 32],
        envelope: &GroupEnvelope,
        out: &mut Vec<Output>,
    ) -> bool {
        if author == ctx.me.key {
            return true;
        }
        if !self.is_member(&author) {
            return false;
        }
        let Some(chain) = self.chains.get_mut(&author) else {
            return false;
        };
        match envelope.open(chain) {
            Ok(payload) => {
                self.show(author, payload, out);
                true
            }
            Err(e) => {
                tracing::debug!("group message not opened yet: {e}");
                false
            }
        }
    }

    fn show(&self, author: [u8; 32], payload: GroupPayload, out: &mut Vec<Output>) {
        let GroupBody::Text(text) = payload.body else {
            return;
        };
        let Some(from) = self.ever.get(&author).copied().flatten() else {
            return;
        };
        out.push(Output::Show(GroupMessage {
            id: payload.id,
            from,
            hlc: payload.hlc,
            text,
        }));
    }

    /// The state of our chain to give `member` if we sent since the op that (last)
    /// admitted it: from the first of those sends still kept, so that what we sent before
    /// we knew of it is readable there too, and nothing from before it was admitted. `None`
    /// if we have not sent since (or that send is no longer kept): our current state is
    /// the one to give it then.
    fn checkpoint_for(&self, member: &[u8; 32]) -> Option<ChainState> {
        let admitted = self
            .membership
            .ops()
            .filter(|op| match &op.op {
                MembershipOp::Add { member: added } => added == member,
                MembershipOp::Create { members, .. } => members.contains(member),
                _ => false,
            })
            .map(|op| op.hlc)
            .max();
        admitted.and_then(|at| {
            self.checkpoints
                .iter()
                .find(|(sent, _)| *sent > at)
                .map(|(_, state)| state.clone())
        })
    }

    /// Recomputes who was ever a member (and their peer ids) from the ops.
    fn refresh_ever(&mut self) {
        let mut keys = BTreeSet::new();
        for op in self.membership.ops() {
            keys.insert(op.author);
            match &op.op {
                MembershipOp::Create { members, .. } => keys.extend(members.iter().copied()),
                MembershipOp::Add { member } => {
                    keys.insert(*member);
                }
                _ => {}
            }
        }
        for key in keys {
            self.ever
                .entry(key)
                .or_insert_with(|| identity::peer_id_of(&key).ok());
        }
    }
}

/// Whether an item is a group's founding op (valid before any membership is known).
pub fn is_founding(body: &LogBody) -> bool {
    matches!(
        body,
        LogBody::Op(SignedOp {
            op: MembershipOp::Create { .. },
            ..
        })
    )
}

fn crypto_err(e: impl std::fmt::Display) -> SessionError {
    SessionError::Crypto(e.to_string())
}
