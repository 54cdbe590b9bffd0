//! What group chats put on the wire: gossip envelopes, their sealed payloads, membership
//! ops, sender-key distributions (sent pairwise) and `/bonghwa/sync/1` frames.
//!
//! Same rules as the rest of [`crate::wire`]: every decoder checks the frame size first,
//! refuses trailing bytes, and checks every count and size against a named limit.
//! Envelopes, payloads and distributions carry a version byte; sync frames are versioned
//! by their protocol name, as `/bonghwa/dm/1` frames are.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{MAX_TEXT_BYTES, WireError, check_size, exact};
use crate::crypto::group::{
    self as keys, ChainState, GroupCryptoError, GroupId, MAX_GROUP_CIPHERTEXT, Position,
    ReceiverChain, SenderKey,
};
use crate::model::{Hlc, MessageId};

mod log;
mod membership;
mod sync_frames;

pub use log::{
    LOG_ITEM_VERSION, LogBody, LogItem, MAX_LOG_ITEM_BYTES, MAX_SEALED_KEY_BYTES, MAX_SEALED_KEYS,
};
pub use membership::{MAX_DEPS, MAX_MEMBERS, MembershipOp, OpId, SignedOp};
pub use sync_frames::{
    MAX_FETCH_IDS, MAX_RECONCILE_FRAME_BYTES, MAX_SYNC_ENVELOPES, MAX_SYNC_FRAME_BYTES,
    SyncRequest, SyncResponse, pack_envelopes,
};

/// Version of [`GroupEnvelope`] this build writes and reads.
pub const GROUP_ENVELOPE_VERSION: u8 = 1;
/// Version of [`GroupPayload`] this build writes and reads.
pub const GROUP_PAYLOAD_VERSION: u8 = 1;
/// Version of [`SenderKeyDistribution`] this build writes and reads.
pub const DISTRIBUTION_VERSION: u8 = 1;
/// Largest encoded group envelope: the gossipsub payload limit.
pub const MAX_GROUP_ENVELOPE_BYTES: usize = 64 * 1024;
/// Largest encoded distribution, so one fits in a direct message with room to spare.
pub const MAX_DISTRIBUTION_BYTES: usize = 40 * 1024;
/// Most membership ops in one distribution.
pub const MAX_DISTRIBUTION_OPS: usize = 256;

const ENVELOPE_DOMAIN: &[u8] = b"bonghwa-group-envelope-v1";

/// Why a group message could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupError {
    /// A frame or payload breaks the format or its limits.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Keys, signature or decryption failed.
    #[error(transparent)]
    Crypto(#[from] GroupCryptoError),
}

/// What travels over gossipsub: a payload sealed under the sender's sender key, signed by
/// the sender's identity key. Gossip peers see the group id, the sender's key and sizes;
/// never the text or the group's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEnvelope {
    /// [`GROUP_ENVELOPE_VERSION`].
    pub version: u8,
    /// The group; selects the members' state and is bound into the AEAD.
    pub group_id: GroupId,
    /// The sender's ed25519 identity key: selects the receiver chain, checks the signature.
    pub sender: [u8; 32],
    /// The sender key's generation.
    pub generation: u32,
    /// The chain step that sealed it.
    pub iteration: u32,
    /// The sealed, padded [`GroupPayload`].
    pub ciphertext: Vec<u8>,
    /// ed25519 signature by `sender` over the fields above (64 bytes).
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct EnvelopeBody<'a> {
    version: u8,
    group_id: &'a GroupId,
    sender: &'a [u8; 32],
    generation: u32,
    iteration: u32,
    ciphertext: &'a [u8],
}

impl GroupEnvelope {
    /// Seals `payload` with the next step of our sender key and signs the result.
    pub fn seal(
        key: &mut SenderKey,
        signing: &SigningKey,
        group_id: &GroupId,
        payload: &GroupPayload,
    ) -> Result<Self, GroupError> {
        let sender = signing.verifying_key().to_bytes();
        let sealed = key.encrypt(group_id, &sender, &payload.encode())?;
        let mut envelope = Self {
            version: GROUP_ENVELOPE_VERSION,
            group_id: *group_id,
            sender,
            generation: sealed.generation,
            iteration: sealed.iteration,
            ciphertext: sealed.ciphertext,
            signature: Vec::new(),
        };
        envelope.signature = keys::sign(signing, ENVELOPE_DOMAIN, &envelope.body_bytes());
        Ok(envelope)
    }

    fn body_bytes(&self) -> Vec<u8> {
        let body = EnvelopeBody {
            version: self.version,
            group_id: &self.group_id,
            sender: &self.sender,
            generation: self.generation,
            iteration: self.iteration,
            ciphertext: &self.ciphertext,
        };
        postcard::to_stdvec(&body).unwrap_or_default()
    }

    /// Where it sits in the sender's chains.
    pub fn position(&self) -> Position<'_> {
        Position {
            group: &self.group_id,
            sender: &self.sender,
            generation: self.generation,
            iteration: self.iteration,
        }
    }

    /// Checks the sender's signature (strictly). Cheap enough to run before deciding to
    /// forward on gossip, and needs no keys.
    pub fn verify(&self) -> Result<(), GroupError> {
        keys::verify(
            &self.sender,
            ENVELOPE_DOMAIN,
            &self.body_bytes(),
            &self.signature,
        )?;
        Ok(())
    }

    /// Verifies, decrypts with the sender's chain and decodes the payload. The chain must
    /// be the one we hold for `self.sender` in `self.group_id`; it only moves if the
    /// message opens.
    pub fn open(&self, chain: &mut ReceiverChain) -> Result<GroupPayload, GroupError> {
        self.verify()?;
        let plaintext = chain.decrypt(&self.position(), &self.ciphertext)?;
        Ok(GroupPayload::decode(&plaintext)?)
    }

    /// Encodes for gossip, sync and the store.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a gossip message or a fetched envelope and checks its limits (not the
    /// signature: see [`GroupEnvelope::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_GROUP_ENVELOPE_BYTES)?;
        let envelope: GroupEnvelope = exact(bytes).map_err(|_| WireError::Malformed {
            what: "group envelope",
        })?;
        if envelope.version != GROUP_ENVELOPE_VERSION {
            return Err(WireError::UnknownVersion {
                what: "group envelope",
                version: envelope.version,
            });
        }
        if envelope.signature.len() != 64 {
            return Err(WireError::Limit(
                "group envelope signature must be 64 bytes",
            ));
        }
        if envelope.ciphertext.len() > MAX_GROUP_CIPHERTEXT {
            return Err(WireError::Limit("group ciphertext too large"));
        }
        Ok(envelope)
    }

    /// The gossipsub message id of this envelope (see [`gossip_message_id`]).
    pub fn gossip_id(&self) -> [u8; 32] {
        gossip_message_id(&self.encode())
    }
}

/// The gossipsub message id of an encoded envelope: SHA-256 of its bytes. Content-based,
/// so the same envelope relayed by many peers is one message to the mesh; a re-signed or
/// re-sealed copy is a different one (payload ids dedup those after opening).
pub fn gossip_message_id(encoded_envelope: &[u8]) -> [u8; 32] {
    Sha256::digest(encoded_envelope).into()
}

/// The content of a group message, sealed inside a [`GroupEnvelope`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPayload {
    /// [`GROUP_PAYLOAD_VERSION`].
    pub version: u8,
    /// The message id, fixed at creation: dedup and sync key.
    pub id: MessageId,
    /// The sender's clock at creation: every member orders by `(hlc, id)`.
    pub hlc: Hlc,
    /// What the message says.
    pub body: GroupBody,
}

/// Kinds of group-message content. New kinds are added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupBody {
    /// A chat text, at most [`MAX_TEXT_BYTES`].
    Text(String),
    /// A membership change, so every member (and sync) sees it.
    Membership(SignedOp),
}

impl GroupPayload {
    /// A current-version payload.
    pub fn new(id: MessageId, hlc: Hlc, body: GroupBody) -> Self {
        Self {
            version: GROUP_PAYLOAD_VERSION,
            id,
            hlc,
            body,
        }
    }

    /// Encodes for sealing.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes an opened plaintext; checks limits and a membership op's signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), keys::MAX_GROUP_PLAINTEXT)?;
        let payload: GroupPayload = exact(bytes).map_err(|_| WireError::Malformed {
            what: "group payload",
        })?;
        if payload.version != GROUP_PAYLOAD_VERSION {
            return Err(WireError::UnknownVersion {
                what: "group payload",
                version: payload.version,
            });
        }
        match &payload.body {
            GroupBody::Text(text) if text.len() > MAX_TEXT_BYTES => {
                return Err(WireError::Limit("message text too long"));
            }
            GroupBody::Text(_) => {}
            GroupBody::Membership(op) => op.verify()?,
        }
        Ok(payload)
    }
}

/// A member's sender key, sent to one other member over the pairwise channel (it will ride
/// in the direct-message `Body`), with membership ops the recipient may lack. The sealed
/// direct message authenticates the sender, so the key belongs to that sender: install it
/// as the chain for the direct message's proven identity, never for a claimed one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderKeyDistribution {
    /// [`DISTRIBUTION_VERSION`].
    pub version: u8,
    /// The group the key is for.
    pub group_id: GroupId,
    /// The key's generation.
    pub generation: u32,
    /// The step the chain key is at: the recipient reads from here on.
    pub iteration: u32,
    /// The chain key.
    pub chain_key: [u8; 32],
    /// Membership ops (all of them, split over several distributions if large), so a new
    /// member can fold the member list and check who may speak.
    pub ops: Vec<SignedOp>,
}

impl std::fmt::Debug for SenderKeyDistribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKeyDistribution")
            .field("group_id", &self.group_id)
            .field("generation", &self.generation)
            .field("iteration", &self.iteration)
            .field("ops", &self.ops.len())
            .finish_non_exhaustive()
    }
}

impl SenderKeyDistribution {
    /// Distributions of `state` carrying `ops`, as many as needed to keep each within
    /// [`MAX_DISTRIBUTION_BYTES`] and [`MAX_DISTRIBUTION_OPS`] (always at least one). Each
    /// carries the same key, so installing any of them is enough and repeats are harmless.
    pub fn build(group_id: GroupId, state: &ChainState, ops: &[SignedOp]) -> Vec<Self> {
        let empty = Self {
            version: DISTRIBUTION_VERSION,
            group_id,
            generation: state.generation,
            iteration: state.iteration,
            chain_key: state.chain_key,
            ops: Vec::new(),
        };
        let overhead = empty.encode().len() + 4;
        let mut out = Vec::new();
        let mut current = empty.clone();
        let mut size = overhead;
        for op in ops {
            let op_size = postcard::to_stdvec(op).map_or(0, |bytes| bytes.len());
            if !current.ops.is_empty()
                && (size + op_size > MAX_DISTRIBUTION_BYTES
                    || current.ops.len() == MAX_DISTRIBUTION_OPS)
            {
                out.push(std::mem::replace(&mut current, empty.clone()));
                size = overhead;
            }
            size += op_size;
            current.ops.push(op.clone());
        }
        out.push(current);
        out
    }

    /// The chain state to install as the sender's receiver chain.
    pub fn chain_state(&self) -> ChainState {
        ChainState {
            generation: self.generation,
            iteration: self.iteration,
            chain_key: self.chain_key,
        }
    }

    /// Encodes for the pairwise channel.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes and checks limits and every op (signature, and that it is for this group).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_DISTRIBUTION_BYTES)?;
        let distribution: SenderKeyDistribution =
            exact(bytes).map_err(|_| WireError::Malformed {
                what: "sender key distribution",
            })?;
        if distribution.version != DISTRIBUTION_VERSION {
            return Err(WireError::UnknownVersion {
                what: "sender key distribution",
                version: distribution.version,
            });
        }
        if distribution.ops.len() > MAX_DISTRIBUTION_OPS {
            return Err(WireError::Limit("a distribution carries too many ops"));
        }
        for op in &distribution.ops {
            if op.group_id != distribution.group_id {
                return Err(WireError::Limit(
                    "a distribution carries another group's op",
                ));
            }
            op.verify()?;
        }
        Ok(distribution)
    }
}

#[cfg(test)]
mod tests;
