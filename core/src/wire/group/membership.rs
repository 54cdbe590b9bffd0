//! Signed membership operations: the facts a group's member list is folded from.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::WireError;
use crate::crypto::group::{self as keys, GroupId};
use crate::identity::check_name;
use crate::model::Hlc;

/// Most members a group may have, the creator included.
pub const MAX_MEMBERS: usize = 256;
/// Most predecessors an op may name (the author's heads; more are left out).
pub const MAX_DEPS: usize = 32;

const OP_SIGNATURE_DOMAIN: &[u8] = b"bonghwa-group-op-v1";
const OP_ID_DOMAIN: &[u8] = b"bonghwa-group-op-id-v1";

/// A change to a group's membership. New kinds are added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipOp {
    /// Founds the group. Only the key the group id derives from can write it.
    Create {
        /// The group's display name; it travels only inside encrypted payloads.
        name: String,
        /// The random bytes the group id derives from, with the creator's key.
        salt: [u8; 32],
        /// Founding members besides the creator.
        members: Vec<[u8; 32]>,
    },
    /// Adds a member (by ed25519 identity key).
    Add {
        /// The new member.
        member: [u8; 32],
    },
    /// Removes a member; everyone else rotates their sender key.
    Remove {
        /// The member removed.
        member: [u8; 32],
    },
    /// The author leaves; everyone else rotates their sender key.
    Leave,
}

/// A membership change's id: a hash of its signed content, the tie-breaker after the HLC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub [u8; 32]);

/// A membership change signed by its author, who must be a member when it takes effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOp {
    /// The group it changes: an op cannot be replayed into another group.
    pub group_id: GroupId,
    /// The author's ed25519 identity key.
    pub author: [u8; 32],
    /// When the author made it; ops take effect in `(hlc, id)` order.
    pub hlc: Hlc,
    /// The ops the author had seen that no other op it had seen names (its heads), in id
    /// order: what this op knows of. A removal cancels its target's ops it did not know
    /// of (see `proto::group`), so a removed member cannot backdate its way back in.
    pub deps: Vec<OpId>,
    /// The change.
    pub op: MembershipOp,
    /// ed25519 signature by `author` over the fields above.
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct OpBody<'a> {
    group_id: &'a GroupId,
    author: &'a [u8; 32],
    hlc: Hlc,
    deps: &'a [OpId],
    op: &'a MembershipOp,
}

impl SignedOp {
    /// Makes and signs an op with our identity key, after `deps` (at most [`MAX_DEPS`]
    /// are kept: the newest by id order is not meaningful, so the caller passes its
    /// heads newest first).
    pub fn sign(
        signing: &SigningKey,
        group_id: GroupId,
        hlc: Hlc,
        deps: Vec<OpId>,
        op: MembershipOp,
    ) -> Self {
        let mut deps = deps;
        deps.truncate(MAX_DEPS);
        deps.sort();
        deps.dedup();
        let mut signed = Self {
            group_id,
            author: signing.verifying_key().to_bytes(),
            hlc,
            deps,
            op,
            signature: Vec::new(),
        };
        signed.signature = keys::sign(signing, OP_SIGNATURE_DOMAIN, &signed.body_bytes());
        signed
    }

    fn body_bytes(&self) -> Vec<u8> {
        let body = OpBody {
            group_id: &self.group_id,
            author: &self.author,
            hlc: self.hlc,
            deps: &self.deps,
            op: &self.op,
        };
        // Serialising plain fields into a Vec cannot fail.
        postcard::to_stdvec(&body).unwrap_or_default()
    }

    /// The op's id: SHA-256 of its signed content (not the signature, so one op has one id).
    pub fn id(&self) -> OpId {
        let digest = Sha256::new()
            .chain_update(OP_ID_DOMAIN)
            .chain_update(self.body_bytes())
            .finalize();
        OpId(digest.into())
    }

    /// Checks limits, that a `Create` really founds this group id, and the signature
    /// (strictly). An op that passes may be stored and folded.
    pub fn verify(&self) -> Result<(), WireError> {
        if self.deps.len() > MAX_DEPS {
            return Err(WireError::Limit(
                "membership op names too many predecessors",
            ));
        }
        if self.deps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(WireError::Limit(
                "membership op predecessors are not in order",
            ));
        }
        if let MembershipOp::Create {
            name,
            salt,
            members,
        } = &self.op
        {
            check_name(name).map_err(|_| WireError::Limit("group name is empty or too long"))?;
            if members.len() >= MAX_MEMBERS {
                return Err(WireError::Limit("a group is created with too many members"));
            }
            if GroupId::derive(&self.author, salt) != self.group_id {
                return Err(WireError::Limit(
                    "group created by a key it does not belong to",
                ));
            }
        }
        keys::verify(
            &self.author,
            OP_SIGNATURE_DOMAIN,
            &self.body_bytes(),
            &self.signature,
        )
        .map_err(|_| WireError::Limit("membership op signature does not verify"))
    }
}
