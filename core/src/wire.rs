//! What travels between nodes, versioned and capped.
//!
//! Every decoder here takes a byte slice whose length the caller already bounded, and
//! checks every count and size against a named limit before trusting it: a length field is
//! a claim, never an allocation size.

pub mod group;
pub mod session;

use serde::{Deserialize, Serialize};

use crate::crypto::MAX_ENVELOPE;
use crate::identity::ContactCard;
use crate::model::{Hlc, MessageId};

/// Version of [`DmPayload`] this build writes and reads.
pub const PAYLOAD_VERSION: u8 = 1;
/// Longest message text, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;
/// Message ids one receipt acknowledges at most (a fetched mail page is smaller).
pub const MAX_RECEIPT_IDS: usize = 256;
/// Log items one group invite carries at most.
pub const MAX_INVITE_ITEMS: usize = 512;
/// Most envelopes in one `/bonghwa/dm/1` request.
pub const MAX_BATCH: usize = 64;
/// Largest `/bonghwa/dm/1` request frame.
pub const MAX_DM_REQUEST_BYTES: usize = 2 * 1024 * 1024;
/// Largest `/bonghwa/dm/1` response frame.
pub const MAX_DM_RESPONSE_BYTES: usize = 8 * 1024;
/// Largest `/bonghwa/card/1` frame either way.
pub const MAX_CARD_BYTES: usize = 4 * 1024;

/// Why a frame or payload was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The frame is larger than its protocol allows.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size found or claimed.
        size: usize,
        /// The protocol's limit.
        limit: usize,
    },
    /// The bytes do not decode as the expected type.
    #[error("malformed {what}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
    },
    /// A decoded value breaks a limit (too many envelopes, text too long, …).
    #[error("{0}")]
    Limit(&'static str),
    /// A version this build does not know.
    #[error("unknown {what} version {version}")]
    UnknownVersion {
        /// What carried the version.
        what: &'static str,
        /// The version found.
        version: u8,
    },
}

/// The content of a direct message, sealed inside an envelope. The sender's card travels
/// with every message, so the recipient can check who sent it (the card's message key must
/// equal the key the Noise handshake proved) and can answer a stranger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmPayload {
    /// [`PAYLOAD_VERSION`].
    pub version: u8,
    /// The message id, fixed at creation.
    pub id: MessageId,
    /// The sender's clock at creation.
    pub hlc: Hlc,
    /// The sender's newest signed card.
    pub sender: ContactCard,
    /// The recipient's identity key: a message re-sealed to someone else is refused.
    pub recipient: [u8; 32],
    /// What the message says.
    pub body: Body,
}

/// Kinds of direct-message content. New kinds are added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A chat text.
    Text(String),
    /// "I hold these messages of yours": the recipient's acknowledgement for mail it fetched
    /// from a relay, sent back directly or through the sender's mailboxes, so the sender sees
    /// `delivered` even when the two are never online together. At most [`MAX_RECEIPT_IDS`].
    Receipt(Vec<MessageId>),
    /// "You are in this group": the group's log so far without its chat messages (ops,
    /// cards, keys; encoded [`group::LogItem`]s), at most [`MAX_INVITE_ITEMS`]. The rest
    /// comes by sync from any member.
    GroupInvite(Vec<Vec<u8>>),
}

impl DmPayload {
    /// Encodes for sealing.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes an opened plaintext and checks its limits and the sender card's signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let payload: DmPayload = exact(bytes).map_err(|_| WireError::Malformed {
            what: "message payload",
        })?;
        payload.checked()
    }

    /// Checks a decoded payload's version, limits and sender card.
    fn checked(self) -> Result<Self, WireError> {
        let payload = self.checked_limits()?;
        payload
            .sender
            .verify()
            .map_err(|_| WireError::Limit("sender card does not verify"))?;
        Ok(payload)
    }

    /// Checks a decoded payload's version and limits, not its card's signature.
    fn checked_limits(self) -> Result<Self, WireError> {
        let payload = self;
        if payload.version != PAYLOAD_VERSION {
            return Err(WireError::UnknownVersion {
                what: "message payload",
                version: payload.version,
            });
        }
        match &payload.body {
            Body::Text(text) if text.len() > MAX_TEXT_BYTES => {
                return Err(WireError::Limit("message text too long"));
            }
            Body::Text(_) => {}
            Body::Receipt(ids) if ids.len() > MAX_RECEIPT_IDS => {
                return Err(WireError::Limit("receipt lists too many messages"));
            }
            Body::Receipt(_) => {}
            Body::GroupInvite(items) if items.len() > MAX_INVITE_ITEMS => {
                return Err(WireError::Limit("group invite carries too many items"));
            }
            Body::GroupInvite(_) => {}
        }
        Ok(payload)
    }
}

/// A `/bonghwa/dm/1` request: sealed envelopes for the responding peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmRequest {
    /// One to [`MAX_BATCH`] envelopes, each at most [`MAX_ENVELOPE`] bytes.
    pub envelopes: Vec<Vec<u8>>,
}

/// The answer to a [`DmRequest`]: one verdict per envelope, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmResponse {
    /// Verdicts, index-aligned with the request's envelopes.
    pub acks: Vec<Ack>,
}

/// The recipient's verdict on one envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ack {
    /// Stored durably (or already held): the sender may mark it delivered.
    Stored(MessageId),
    /// Refused for good; retrying the same envelope will not help.
    Rejected(Reject),
    /// Refused for now (the recipient's disk is full, …); try again later.
    Retry,
}

/// Why an envelope was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reject {
    /// It does not open with the recipient's key, or is tampered with.
    Undecryptable,
    /// It opened but the content is malformed or breaks a limit.
    Malformed,
    /// The sender card does not match the key that sealed it, or names another recipient.
    Forged,
}

impl DmRequest {
    /// Encodes a request frame body.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a frame body and checks counts and sizes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_DM_REQUEST_BYTES)?;
        let request: DmRequest =
            exact(bytes).map_err(|_| WireError::Malformed { what: "dm request" })?;
        if request.envelopes.is_empty() || request.envelopes.len() > MAX_BATCH {
            return Err(WireError::Limit("dm request must hold 1 to 64 envelopes"));
        }
        if request.envelopes.iter().any(|e| e.len() > MAX_ENVELOPE) {
            return Err(WireError::Limit("envelope larger than the envelope limit"));
        }
        Ok(request)
    }
}

impl DmResponse {
    /// Encodes a response frame body.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a frame body and checks counts.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_DM_RESPONSE_BYTES)?;
        let response: DmResponse = exact(bytes).map_err(|_| WireError::Malformed {
            what: "dm response",
        })?;
        if response.acks.len() > MAX_BATCH {
            return Err(WireError::Limit("dm response holds too many acks"));
        }
        Ok(response)
    }
}

/// Encodes a card for `/bonghwa/card/1`.
pub fn encode_card(card: &ContactCard) -> Vec<u8> {
    postcard::to_stdvec(card).unwrap_or_default()
}

/// Decodes and verifies a card from `/bonghwa/card/1`.
pub fn decode_card(bytes: &[u8]) -> Result<ContactCard, WireError> {
    check_size(bytes.len(), MAX_CARD_BYTES)?;
    let card: ContactCard = exact(bytes).map_err(|_| WireError::Malformed { what: "card" })?;
    card.verify()
        .map_err(|_| WireError::Limit("card does not verify"))?;
    Ok(card)
}

/// Decodes and verifies a card from `/bonghwa/card/2`: the card, then the signed prekey
/// if the peer has one (checked against the card's identity key).
pub fn decode_card_and_prekey(
    bytes: &[u8],
) -> Result<(ContactCard, Option<crate::identity::SignedPrekey>), WireError> {
    check_size(bytes.len(), MAX_CARD_BYTES)?;
    let (card, prekey, rest) = ContactCard::decode_with_prekey(bytes).map_err(|e| match e {
        crate::identity::IdentityError::BadSignature => {
            WireError::Limit("card or prekey does not verify")
        }
        _ => WireError::Malformed { what: "card" },
    })?;
    if !rest.is_empty() {
        return Err(WireError::Malformed { what: "prekey" });
    }
    Ok((card, prekey))
}

/// Most envelopes in one `/bonghwa/mailbox/1` page.
pub const MAX_MAIL_PAGE: usize = 64;
/// Largest `/bonghwa/mailbox/1` request frame (a deposit of one envelope, with room).
pub const MAX_MAILBOX_REQUEST_BYTES: usize = MAX_ENVELOPE + 1024;
/// Largest `/bonghwa/mailbox/1` response frame (a full page).
pub const MAX_MAILBOX_RESPONSE_BYTES: usize = MAX_MAIL_PAGE * (MAX_ENVELOPE + 16) + 1024;
/// Longest refusal text a relay may send.
pub const MAX_REFUSAL_BYTES: usize = 256;

/// A request to a relay's mailbox, `/bonghwa/mailbox/1`. The relay answers for the
/// connection's authenticated peer id: `Fetch` and `Ack` only ever touch the caller's mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxRequest {
    /// Hold this sealed envelope for `recipient` (a peer id). Sent from a throwaway identity,
    /// so the relay does not learn who wrote it.
    Deposit {
        /// The recipient's peer id.
        recipient: String,
        /// The sealed envelope.
        envelope: Vec<u8>,
    },
    /// The caller's held mail after seq `after` (exclusive; `None`: from the start).
    Fetch {
        /// Last seq already seen.
        after: Option<u64>,
    },
    /// The caller stored these durably; the relay may drop them.
    Ack {
        /// Seqs from fetched pages, at most [`MAX_MAIL_PAGE`].
        seqs: Vec<u64>,
    },
}

/// A mailbox's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxResponse {
    /// The deposit is held durably (or was already).
    Stored,
    /// The deposit was refused; the text says which limit.
    Refused(String),
    /// A page of the caller's mail, oldest first; `more` if another page follows.
    Page {
        /// (seq, envelope) pairs.
        mail: Vec<(u64, Vec<u8>)>,
        /// Whether to fetch again after the last seq.
        more: bool,
    },
    /// The acked mail is gone from the relay.
    Acked,
}

impl MailboxRequest {
    /// Encodes a request frame body.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a frame body and checks its sizes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_MAILBOX_REQUEST_BYTES)?;
        let request: MailboxRequest = exact(bytes).map_err(|_| WireError::Malformed {
            what: "mailbox request",
        })?;
        match &request {
            MailboxRequest::Deposit {
                recipient,
                envelope,
            } => {
                if recipient.is_empty() || recipient.len() > 128 {
                    return Err(WireError::Limit("a deposit must name a recipient peer id"));
                }
                if envelope.is_empty() || envelope.len() > MAX_ENVELOPE {
                    return Err(WireError::Limit("deposited envelope is empty or too large"));
                }
            }
            MailboxRequest::Fetch { .. } => {}
            MailboxRequest::Ack { seqs } => {
                if seqs.len() > MAX_MAIL_PAGE {
                    return Err(WireError::Limit("an ack names too many envelopes"));
                }
            }
        }
        Ok(request)
    }
}

impl MailboxResponse {
    /// Encodes a response frame body.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a frame body and checks its counts and sizes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_MAILBOX_RESPONSE_BYTES)?;
        let response: MailboxResponse = exact(bytes).map_err(|_| WireError::Malformed {
            what: "mailbox response",
        })?;
        match &response {
            MailboxResponse::Refused(text) if text.len() > MAX_REFUSAL_BYTES => {
                return Err(WireError::Limit("refusal text too long"));
            }
            MailboxResponse::Page { mail, .. } => {
                if mail.len() > MAX_MAIL_PAGE {
                    return Err(WireError::Limit("a mail page holds too many envelopes"));
                }
                if mail
                    .iter()
                    .any(|(_, e)| e.is_empty() || e.len() > MAX_ENVELOPE)
                {
                    return Err(WireError::Limit("a fetched envelope is empty or too large"));
                }
            }
            _ => {}
        }
        Ok(response)
    }
}

/// Decodes a whole frame: trailing bytes make it malformed, so one frame has one reading.
fn exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

fn check_size(size: usize, limit: usize) -> Result<(), WireError> {
    if size > limit {
        return Err(WireError::TooLarge { size, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn payload(text: &str) -> DmPayload {
        let alice = Identity::generate().unwrap();
        DmPayload {
            version: PAYLOAD_VERSION,
            id: MessageId([7; 32]),
            hlc: Hlc { ms: 1, counter: 2 },
            sender: alice.card("Alice", vec![], 5),
            recipient: [1; 32],
            body: Body::Text(text.into()),
        }
    }

    #[test]
    fn payload_round_trips() {
        let p = payload("안녕하세요 👋");
        assert_eq!(DmPayload::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn payload_limits_are_enforced() {
        let long = payload(&"x".repeat(MAX_TEXT_BYTES + 1));
        assert_eq!(
            DmPayload::decode(&long.encode()),
            Err(WireError::Limit("message text too long"))
        );
        let mut future = payload("hi");
        future.version = 2;
        assert!(matches!(
            DmPayload::decode(&future.encode()),
            Err(WireError::UnknownVersion { version: 2, .. })
        ));
        let mut forged = payload("hi");
        forged.sender.name = "Mallory".into();
        assert!(DmPayload::decode(&forged.encode()).is_err());
    }

    #[test]
    fn garbage_never_decodes_or_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = DmPayload::decode(&bytes);
            let _ = DmRequest::decode(&bytes);
            let _ = DmResponse::decode(&bytes);
            let _ = decode_card(&bytes);
        }
    }

    #[test]
    fn request_counts_and_sizes_are_checked() {
        let empty = DmRequest { envelopes: vec![] };
        assert!(DmRequest::decode(&empty.encode()).is_err());
        let too_many = DmRequest {
            envelopes: vec![vec![1]; MAX_BATCH + 1],
        };
        assert!(DmRequest::decode(&too_many.encode()).is_err());
        let too_big = DmRequest {
            envelopes: vec![vec![0; MAX_ENVELOPE + 1]],
        };
        assert!(DmRequest::decode(&too_big.encode()).is_err());
        assert!(matches!(
            DmRequest::decode(&vec![0; MAX_DM_REQUEST_BYTES + 1]),
            Err(WireError::TooLarge { .. })
        ));
        // A length prefix claiming a huge vector in a tiny frame is just malformed.
        assert!(DmRequest::decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let ok = DmRequest {
            envelopes: vec![vec![1, 2, 3]],
        };
        assert_eq!(DmRequest::decode(&ok.encode()).unwrap(), ok);
    }

    #[test]
    fn mailbox_frames_round_trip_and_limits_hold() {
        let deposit = MailboxRequest::Deposit {
            recipient: "12D3KooWBob".into(),
            envelope: vec![1; 300],
        };
        assert_eq!(MailboxRequest::decode(&deposit.encode()), Ok(deposit));
        let empty = MailboxRequest::Deposit {
            recipient: "12D3KooWBob".into(),
            envelope: Vec::new(),
        };
        assert!(matches!(
            MailboxRequest::decode(&empty.encode()),
            Err(WireError::Limit(_))
        ));
        let big_ack = MailboxRequest::Ack {
            seqs: (0..=MAX_MAIL_PAGE as u64).collect(),
        };
        assert!(MailboxRequest::decode(&big_ack.encode()).is_err());
        assert!(matches!(
            MailboxRequest::decode(&vec![0; MAX_MAILBOX_REQUEST_BYTES + 1]),
            Err(WireError::TooLarge { .. })
        ));

        let page = MailboxResponse::Page {
            mail: vec![(3, vec![9; 256]), (4, vec![8; 256])],
            more: true,
        };
        assert_eq!(MailboxResponse::decode(&page.encode()), Ok(page));
        let long = MailboxResponse::Refused("x".repeat(MAX_REFUSAL_BYTES + 1));
        assert!(MailboxResponse::decode(&long.encode()).is_err());
        for garbage in [&b""[..], &[0xff; 7][..], &[3, 200, 200, 200][..]] {
            assert!(MailboxRequest::decode(garbage).is_err());
            assert!(MailboxResponse::decode(garbage).is_err());
        }
    }
}
