//! Frames of `/bonghwa/sync/1`: history repair between two members of a group.
//!
//! The requester drives everything (it is the reconciliation's initiator): it sends
//! `Reconcile` rounds until settled, then `Fetch`es the envelopes it needs and `Push`es
//! the ones the responder lacks. The responder answers each request on its own and keeps
//! no session, and answers only for groups the requester is a member of.

use serde::{Deserialize, Serialize};

use super::super::{MAX_REFUSAL_BYTES, WireError, check_size, exact};
use super::MAX_GROUP_ENVELOPE_BYTES;
use crate::crypto::group::GroupId;
use crate::model::MessageId;
use crate::proto::sync::SyncMessage;

/// Largest `/bonghwa/sync/1` frame either way (a page of envelopes).
pub const MAX_SYNC_FRAME_BYTES: usize = 1024 * 1024 + 4 * 1024;
/// Largest frame carrying a reconciliation message (its budget is below this).
pub const MAX_RECONCILE_FRAME_BYTES: usize = 64 * 1024;
/// Most ids in one `Fetch`.
pub const MAX_FETCH_IDS: usize = 64;
/// Most envelopes in one `Push` or `Envelopes` frame.
pub const MAX_SYNC_ENVELOPES: usize = 64;
/// Room in a frame for everything but the envelopes themselves.
const FRAME_OVERHEAD: usize = 4 * 1024;

/// A request on `/bonghwa/sync/1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// One reconciliation round (the initiator's message).
    Reconcile {
        /// The group whose history is compared.
        group_id: GroupId,
        /// The initiator's message.
        message: SyncMessage,
    },
    /// Asks for the envelopes of these messages (ids the reconciliation reported as `need`).
    Fetch {
        /// The group.
        group_id: GroupId,
        /// Payload message ids, at most [`MAX_FETCH_IDS`].
        ids: Vec<MessageId>,
    },
    /// Offers envelopes the responder lacks (ids the reconciliation reported as `have`).
    Push {
        /// The group.
        group_id: GroupId,
        /// Encoded [`super::GroupEnvelope`]s, at most [`MAX_SYNC_ENVELOPES`].
        envelopes: Vec<Vec<u8>>,
    },
}

/// The answer to a [`SyncRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The responder's reconciliation message; empty means settled.
    Reconcile(SyncMessage),
    /// Envelopes for a `Fetch`, in the order asked, skipping unknown ids; may stop early
    /// to stay within the frame limit (fetch the rest again).
    Envelopes(Vec<Vec<u8>>),
    /// A `Push` was taken (each envelope verified, opened and stored, or already held).
    Accepted,
    /// Refused: not a member, unknown group, rate limited, … The text says which.
    Refused(String),
}

impl SyncRequest {
    /// Encodes a request frame body.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a frame body and checks its sizes and counts.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_SYNC_FRAME_BYTES)?;
        let request: SyncRequest = exact(bytes).map_err(|_| WireError::Malformed {
            what: "sync request",
        })?;
        match &request {
            SyncRequest::Reconcile { message, .. } => check_reconcile(bytes.len(), message)?,
            SyncRequest::Fetch { ids, .. } => {
                if ids.is_empty() || ids.len() > MAX_FETCH_IDS {
                    return Err(WireError::Limit("a fetch must name 1 to 64 messages"));
                }
            }
            SyncRequest::Push { envelopes, .. } => {
                if envelopes.is_empty() {
                    return Err(WireError::Limit("a push must carry envelopes"));
                }
                check_envelopes(envelopes)?;
            }
        }
        Ok(request)
    }
}

impl SyncResponse {
    /// Encodes a response frame body.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a frame body and checks its sizes and counts.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_SYNC_FRAME_BYTES)?;
        let response: SyncResponse = exact(bytes).map_err(|_| WireError::Malformed {
            what: "sync response",
        })?;
        match &response {
            SyncResponse::Reconcile(message) => check_reconcile(bytes.len(), message)?,
            SyncResponse::Envelopes(envelopes) => check_envelopes(envelopes)?,
            SyncResponse::Refused(text) if text.len() > MAX_REFUSAL_BYTES => {
                return Err(WireError::Limit("refusal text too long"));
            }
            SyncResponse::Accepted | SyncResponse::Refused(_) => {}
        }
        Ok(response)
    }
}

/// Takes envelopes, in order, while they fit one frame: at most [`MAX_SYNC_ENVELOPES`] and
/// [`MAX_SYNC_FRAME_BYTES`] in total. Envelopes over the envelope limit are skipped.
/// Returns the page and how many envelopes of the input it consumed.
pub fn pack_envelopes(envelopes: impl IntoIterator<Item = Vec<u8>>) -> (Vec<Vec<u8>>, usize) {
    let mut page = Vec::new();
    let mut consumed = 0;
    let mut bytes = FRAME_OVERHEAD;
    for envelope in envelopes {
        if envelope.len() > MAX_GROUP_ENVELOPE_BYTES {
            consumed += 1;
            continue;
        }
        if page.len() == MAX_SYNC_ENVELOPES || bytes + envelope.len() + 4 > MAX_SYNC_FRAME_BYTES {
            break;
        }
        bytes += envelope.len() + 4;
        page.push(envelope);
        consumed += 1;
    }
    (page, consumed)
}

fn check_reconcile(frame: usize, message: &SyncMessage) -> Result<(), WireError> {
    check_size(frame, MAX_RECONCILE_FRAME_BYTES)?;
    message
        .validate()
        .map_err(|_| WireError::Limit("reconciliation message breaks the protocol"))
}

fn check_envelopes(envelopes: &[Vec<u8>]) -> Result<(), WireError> {
    if envelopes.len() > MAX_SYNC_ENVELOPES {
        return Err(WireError::Limit("a sync frame carries too many envelopes"));
    }
    if envelopes
        .iter()
        .any(|e| e.is_empty() || e.len() > MAX_GROUP_ENVELOPE_BYTES)
    {
        return Err(WireError::Limit("an envelope is empty or too large"));
    }
    Ok(())
}
