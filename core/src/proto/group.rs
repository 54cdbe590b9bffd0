//! Group membership as a deterministic fold of signed ops, sans-IO.
//!
//! Members learn membership ops in any order (over gossip, inside sender-key
//! distributions, through history sync). Each member keeps the **set** of valid ops it has
//! seen and folds it in `(hlc, op id)` order, so any two members holding the same ops
//! compute the same members, whatever order the ops arrived in. The rules of the fold:
//!
//! - the first `Create` founds the group (only the key the group id derives from can sign
//!   one, see [`SignedOp::verify`]); every op before it, and every later `Create`, is
//!   ignored;
//! - only a current member may `Add` or `Remove`; an op whose author is not a member at
//!   that point is ignored, so a removed member's later ops change nothing;
//! - `Leave` removes its author; `Add` beyond [`MAX_MEMBERS`] is ignored;
//! - an op must come after what it names: one whose HLC is not above that of every held
//!   op it names (`deps`) is ignored;
//! - **a removal cancels its target's ops it did not know of**: when a `Remove` of A (or
//!   A's `Leave`) takes effect, A's earlier ops (in fold order) that are not among the
//!   removal's ancestors (through `deps`) are ignored, and the fold runs again without
//!   them until nothing more is cancelled. So a removed member cannot sign its way back
//!   with a backdated op: one that names the removal comes after it (A is out by then),
//!   and one that does not is unknown to the removal and cancelled by it. The price: an
//!   op A made during a partition that the remover never saw is cancelled too (removal
//!   wins over what its target did concurrently).
//!
//! After each change the machine tells us what to do with **our** sender key: share it
//! with new members, rotate it when someone left or was removed (so they cannot read on),
//! start one when we joined, or drop it when we are out.
//!
//! Ops name at most [`crate::wire::group::MAX_DEPS`] heads; an author with more heads
//! than that leaves the oldest out, and a removal made then could cancel ops it did know
//! of. It takes that many concurrent membership changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::crypto::group::GroupId;
use crate::model::Hlc;
use crate::wire::WireError;
use crate::wire::group::{MAX_MEMBERS, MembershipOp, OpId, SignedOp};

/// Most ops one group may accumulate; past this, new ops are refused (make a new group).
pub const MAX_OPS: usize = 4_096;

/// Why an op was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipError {
    /// The op is for another group.
    #[error("membership op is for another group")]
    WrongGroup,
    /// The op breaks a limit or its signature does not verify.
    #[error("membership op refused: {0}")]
    Invalid(#[from] WireError),
    /// The group already holds [`MAX_OPS`] ops.
    #[error("the group has reached its limit of {MAX_OPS} membership changes")]
    TooManyOps,
}

/// The folded state of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// The name from the founding `Create`; `None` until it is known.
    pub name: Option<String>,
    /// Who founded the group.
    pub creator: Option<[u8; 32]>,
    /// Current members' identity keys, in key order.
    pub members: BTreeSet<[u8; 32]>,
}

/// What to do with our own sender key after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// Nothing changed for us.
    None,
    /// New members joined: send them our current key (they read from now on).
    Share {
        /// Members to send our current key to.
        to: Vec<[u8; 32]>,
    },
    /// Someone left or was removed: make a new generation and send it to every remaining
    /// member (`to`), so the departed cannot read what follows.
    Rotate {
        /// All members except us.
        to: Vec<[u8; 32]>,
    },
    /// We are a member now (we founded the group or were added): make our first key and
    /// send it to every other member.
    Start {
        /// All members except us.
        to: Vec<[u8; 32]>,
    },
    /// We are no longer a member: drop our key and the group's receiver chains, and leave
    /// the topic.
    Stop,
}

/// The effect of taking one or more ops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Members who joined.
    pub added: Vec<[u8; 32]>,
    /// Members who left or were removed: drop their receiver chains.
    pub removed: Vec<[u8; 32]>,
    /// What to do with our sender key.
    pub key: KeyAction,
}

impl Change {
    fn none() -> Self {
        Self {
            added: Vec::new(),
            removed: Vec::new(),
            key: KeyAction::None,
        }
    }
}

/// One group's membership as seen by one member (`me`).
#[derive(Clone, Debug)]
pub struct Membership {
    group_id: GroupId,
    me: [u8; 32],
    ops: BTreeMap<(Hlc, OpId), SignedOp>,
    state: GroupState,
}

impl Membership {
    /// An empty membership for `group_id`, seen by the member with identity key `me`.
    pub fn new(group_id: GroupId, me: [u8; 32]) -> Self {
        Self {
            group_id,
            me,
            ops: BTreeMap::new(),
            state: GroupState::default(),
        }
    }

    /// The group.
    pub fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The folded state.
    pub fn state(&self) -> &GroupState {
        &self.state
    }

    /// Whether `key` is a member now (and so may speak and change membership).
    pub fn is_member(&self, key: &[u8; 32]) -> bool {
        self.state.members.contains(key)
    }

    /// The ops held, in fold order: what to persist, and what a distribution carries.
    pub fn ops(&self) -> impl Iterator<Item = &SignedOp> {
        self.ops.values()
    }

    /// The held ops that no other held op names, newest first: what a new op of ours
    /// names as its `deps`.
    pub fn heads(&self) -> Vec<OpId> {
        let named: BTreeSet<OpId> = self
            .ops
            .values()
            .flat_map(|op| op.deps.iter().copied())
            .collect();
        self.ops
            .keys()
            .rev()
            .map(|(_, id)| *id)
            .filter(|id| !named.contains(id))
            .collect()
    }

    /// The held ops that remove `key` (its removals and its leave), whether or not they
    /// took effect.
    #[cfg(test)]
    pub(crate) fn removals_of(&self, key: &[u8; 32]) -> BTreeSet<OpId> {
        self.ops
            .iter()
            .filter(|(_, op)| match op.op {
                MembershipOp::Remove { member } => member == *key,
                MembershipOp::Leave => op.author == *key,
                _ => false,
            })
            .map(|((_, id), _)| *id)
            .collect()
    }

    /// The removals and leaves that take effect in the fold of the held ops (one that a
    /// removal of its author cancelled, or whose author was no longer a member, does not).
    #[cfg(test)]
    pub(crate) fn removals_in_effect(&self) -> BTreeSet<OpId> {
        fold_with_removals(&self.ops)
            .1
            .into_iter()
            .map(|((_, id), _)| id)
            .collect()
    }

    /// Verifies and takes one op; a repeat changes nothing.
    pub fn apply(&mut self, op: SignedOp) -> Result<Change, MembershipError> {
        self.apply_all([op])
    }

    /// Verifies and takes several ops at once (a distribution's ops, a restore from the
    /// store). All or nothing: if any op is invalid, none is taken.
    pub fn apply_all(
        &mut self,
        ops: impl IntoIterator<Item = SignedOp>,
    ) -> Result<Change, MembershipError> {
        let mut fresh = BTreeMap::new();
        for op in ops {
            if op.group_id != self.group_id {
                return Err(MembershipError::WrongGroup);
            }
            let key = (op.hlc, op.id());
            if self.ops.contains_key(&key) || fresh.contains_key(&key) {
                continue;
            }
            op.verify()?;
            fresh.insert(key, op);
            if self.ops.len() + fresh.len() > MAX_OPS {
                return Err(MembershipError::TooManyOps);
            }
        }
        if fresh.is_empty() {
            return Ok(Change::none());
        }
        self.ops.extend(fresh);
        let before = std::mem::replace(&mut self.state, fold(&self.ops));
        Ok(self.diff(&before))
    }

    fn diff(&self, before: &GroupState) -> Change {
        let after = &self.state.members;
        let added: Vec<[u8; 32]> = after.difference(&before.members).copied().collect();
        let removed: Vec<[u8; 32]> = before.members.difference(after).copied().collect();
        let others = || after.iter().filter(|m| **m != self.me).copied().collect();
        let key = match (before.members.contains(&self.me), after.contains(&self.me)) {
            (true, false) => KeyAction::Stop,
            (false, false) => KeyAction::None,
            (false, true) => KeyAction::Start { to: others() },
            (true, true) if !removed.is_empty() => KeyAction::Rotate { to: others() },
            (true, true) if !added.is_empty() => KeyAction::Share { to: added.clone() },
            (true, true) => KeyAction::None,
        };
        Change {
            added,
            removed,
            key,
        }
    }
}

type Ops = BTreeMap<(Hlc, OpId), SignedOp>;
/// A removal that took effect: where it sits in the fold, and whom it removed.
type Removal = ((Hlc, OpId), [u8; 32]);

/// Folds the held ops into a state, cancelling what removals did not know of (see the
/// module's rules) until nothing more is cancelled. Pure and total: invalid steps are
/// skipped, never errors, so every member holding the same ops gets the same state.
fn fold(ops: &Ops) -> GroupState {
    fold_with_removals(ops).0
}

/// [`fold`], with the removals that took effect in it.
fn fold_with_removals(ops: &Ops) -> (GroupState, Vec<Removal>) {
    let hlc_of: HashMap<OpId, Hlc> = ops.keys().map(|(hlc, id)| (*id, *hlc)).collect();
    let mut cancelled: BTreeSet<OpId> = BTreeSet::new();
    loop {
        let (state, removals) = fold_once(ops, &hlc_of, &cancelled);
        let mut more = false;
        for &(at, gone) in &removals {
            let known = ancestors(ops, &hlc_of, at);
            for ((_, id), op) in ops.range(..at) {
                let founding = matches!(op.op, MembershipOp::Create { .. });
                if op.author == gone && !founding && !known.contains(id) && cancelled.insert(*id) {
                    more = true;
                }
            }
        }
        // Each round cancels at least one more op, so this ends.
        if !more {
            return (state, removals);
        }
    }
}

/// One pass in `(hlc, op id)` order without the `cancelled` ops; also returns the
/// removals that took effect (where, and whom they removed).
fn fold_once(
    ops: &Ops,
    hlc_of: &HashMap<OpId, Hlc>,
    cancelled: &BTreeSet<OpId>,
) -> (GroupState, Vec<Removal>) {
    let mut state = GroupState::default();
    let mut removals = Vec::new();
    for (key, signed) in ops {
        let (hlc, id) = key;
        if cancelled.contains(id)
            || signed
                .deps
                .iter()
                .any(|dep| hlc_of.get(dep).is_some_and(|at| at >= hlc))
        {
            continue;
        }
        let author = signed.author;
        match &signed.op {
            MembershipOp::Create { name, members, .. } => {
                if state.creator.is_some() {
                    continue;
                }
                state.creator = Some(author);
                state.name = Some(name.clone());
                state.members.insert(author);
                for member in members {
                    if state.members.len() < MAX_MEMBERS {
                        state.members.insert(*member);
                    }
                }
            }
            _ if !state.members.contains(&author) => {}
            MembershipOp::Add { member } => {
                if state.members.len() < MAX_MEMBERS {
                    state.members.insert(*member);
                }
            }
            MembershipOp::Remove { member } => {
                if state.members.remove(member) {
                    removals.push((*key, *member));
                }
            }
            MembershipOp::Leave => {
                state.members.remove(&author);
                removals.push((*key, author));
            }
        }
    }
    (state, removals)
}

/// The ids of the held ops that the op at `from` names, directly or through others.
fn ancestors(ops: &Ops, hlc_of: &HashMap<OpId, Hlc>, from: (Hlc, OpId)) -> BTreeSet<OpId> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<OpId> = ops.get(&from).map(|op| op.deps.clone()).unwrap_or_default();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(op) = hlc_of.get(&id).and_then(|hlc| ops.get(&(*hlc, id))) {
            todo.extend(op.deps.iter().copied());
        }
    }
    seen
}

pub mod invite;
pub mod session;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
