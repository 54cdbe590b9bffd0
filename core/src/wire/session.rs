//! What a version-2 envelope holds once its sealed-sender layer is opened: who wrote it, in
//! which session, and the ratchet message; and what the ratchet message holds once read.

use serde::{Deserialize, Serialize};

use super::{DmPayload, WireError, exact};
use crate::crypto::MAX_ENVELOPE;
use crate::crypto::ratchet::Message;
use crate::identity::{ContactCard, SignedPrekey};

/// Domain of the signature that proves who started a session.
pub const SESSION_START_DOMAIN: &[u8] = b"bonghwa-session-start-v1";

/// The inside of a version-2 envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnvelope {
    /// The sender's ed25519 identity key: which of our sessions to look in.
    pub sender: [u8; 32],
    /// The session's name (its initiator's ephemeral key).
    pub session: [u8; 32],
    /// With every message that may start a session on the recipient's side.
    pub start: Option<SessionStart>,
    /// The ratchet message.
    pub message: Message,
}

/// Proof that the sender, and nobody holding only the recipient's keys, starts this
/// session: the sender's card and its ed25519 signature over the recipient's identity,
/// the session id and the message (see [`SessionEnvelope::start_bytes`]). Without it,
/// X3DH would let whoever stole the recipient's keys write as anyone (key-compromise
/// impersonation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    /// The sender's card (a stranger's first message must say who it is).
    pub card: ContactCard,
    /// ed25519 signature by `card.identity`.
    pub signature: Vec<u8>,
}

impl SessionEnvelope {
    /// Encodes for sealing.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes an opened envelope and checks its sizes (the card's signature and the start
    /// signature are checked by the session layer, which knows the recipient).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let envelope: SessionEnvelope = exact(bytes).map_err(|_| WireError::Malformed {
            what: "session envelope",
        })?;
        if envelope.message.ciphertext.len() > MAX_ENVELOPE {
            return Err(WireError::Limit("session message too long"));
        }
        Ok(envelope)
    }

    /// The bytes a session start signs: the recipient, the session and the message.
    pub fn start_bytes(recipient: &[u8; 32], session: &[u8; 32], message: &Message) -> Vec<u8> {
        let mut out = recipient.to_vec();
        out.extend_from_slice(session);
        out.extend(postcard::to_stdvec(message).unwrap_or_default());
        out
    }
}

/// What a ratchet message of a direct chat holds: the payload (as in version 1) and the
/// sender's current signed prekey, so contacts always have a recent one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPlaintext {
    /// Id, time, sender card, recipient and body.
    pub payload: DmPayload,
    /// The sender's newest signed prekey.
    pub prekey: Option<SignedPrekey>,
}

impl SessionPlaintext {
    /// Encodes for the ratchet.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a read ratchet message and checks the payload as version 1 does; the
    /// prekey's signature is checked against the payload's sender card.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let plain = Self::decode_unsigned(bytes)?;
        plain.verify_signatures()?;
        Ok(plain)
    }

    /// Decodes and checks limits, but not the card's and prekey's signatures: for a
    /// reader that has verified these very bytes before (see [`SessionPlaintext::verify_signatures`]).
    pub fn decode_unsigned(bytes: &[u8]) -> Result<Self, WireError> {
        let plain: SessionPlaintext = exact(bytes).map_err(|_| WireError::Malformed {
            what: "session payload",
        })?;
        Ok(Self {
            payload: plain.payload.checked_limits()?,
            prekey: plain.prekey,
        })
    }

    /// Checks the sender card's signature and the prekey's against that card.
    pub fn verify_signatures(&self) -> Result<(), WireError> {
        self.payload
            .sender
            .verify()
            .map_err(|_| WireError::Limit("sender card does not verify"))?;
        if let Some(prekey) = &self.prekey {
            prekey
                .verify(&self.payload.sender.identity)
                .map_err(|_| WireError::Limit("sender prekey does not verify"))?;
        }
        Ok(())
    }

    /// A digest of the sender's card and prekey, to remember which were verified.
    pub fn signed_digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let card = postcard::to_stdvec(&self.payload.sender).unwrap_or_default();
        let prekey = postcard::to_stdvec(&self.prekey).unwrap_or_default();
        sha2::Sha256::new()
            .chain_update(&card)
            .chain_update(&prekey)
            .finalize()
            .into()
    }
}
