//! The group log: everything a group shares is an item in one set that travels by gossip
//! and by `/bonghwa/sync/1` alike, so members converge on it even when they are not all
//! connected to each other (keys reach a member several hops away). Each item is signed
//! by its author's identity key; its id is the hash of its encoding.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::{WireError, check_size, exact};
use super::{GroupEnvelope, MAX_GROUP_ENVELOPE_BYTES, SignedOp};
use crate::crypto::group::{self as keys, GroupId};
use crate::identity::ContactCard;
use crate::model::{Hlc, MessageId};

/// Version of [`LogItem`] this build writes and reads.
pub const LOG_ITEM_VERSION: u8 = 1;
/// Largest encoded item: one gossipsub message.
pub const MAX_LOG_ITEM_BYTES: usize = MAX_GROUP_ENVELOPE_BYTES;
/// Members one key item is sealed to at most (each sealed copy is ~400 bytes).
pub const MAX_SEALED_KEYS: usize = 128;
/// Largest sealed copy of a key.
pub const MAX_SEALED_KEY_BYTES: usize = 512;

const ITEM_DOMAIN: &[u8] = b"bonghwa-group-log-v1";
const ID_DOMAIN: &[u8] = b"bonghwa-group-log-id-v1";

/// One item of a group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogItem {
    /// [`LOG_ITEM_VERSION`].
    pub version: u8,
    /// The group.
    pub group_id: GroupId,
    /// The author's identity key; the author signs the item.
    pub author: [u8; 32],
    /// The author's clock when it wrote the item (orders the log and the chat).
    pub hlc: Hlc,
    /// What it says.
    pub body: LogBody,
    /// ed25519 signature by `author` over the fields above.
    pub signature: Vec<u8>,
}

/// Kinds of log items. New kinds are added at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogBody {
    /// A chat message, sealed under the author's sender key.
    Message(GroupEnvelope),
    /// A membership change, signed by its author.
    Op(SignedOp),
    /// A member's contact card (signed by its owner), so members can seal keys to it.
    Card(ContactCard),
    /// The author's sender key, sealed to each listed member on its own (Noise X to the
    /// member's message key): `(member identity key, sealed chain state)`.
    Keys(Vec<([u8; 32], Vec<u8>)>),
}

#[derive(Serialize)]
struct ItemBody<'a> {
    version: u8,
    group_id: &'a GroupId,
    author: &'a [u8; 32],
    hlc: Hlc,
    body: &'a LogBody,
}

impl LogItem {
    /// A new item by the holder of `signing`.
    pub fn sign(signing: &SigningKey, group_id: GroupId, hlc: Hlc, body: LogBody) -> Self {
        let mut item = Self {
            version: LOG_ITEM_VERSION,
            group_id,
            author: signing.verifying_key().to_bytes(),
            hlc,
            body,
            signature: Vec::new(),
        };
        item.signature = keys::sign(signing, ITEM_DOMAIN, &item.body_bytes());
        item
    }

    fn body_bytes(&self) -> Vec<u8> {
        let body = ItemBody {
            version: self.version,
            group_id: &self.group_id,
            author: &self.author,
            hlc: self.hlc,
            body: &self.body,
        };
        postcard::to_stdvec(&body).unwrap_or_default()
    }

    /// The item's id: the hash of its encoding (the gossipsub message id too).
    pub fn id_of(encoded: &[u8]) -> MessageId {
        let digest = Sha256::new()
            .chain_update(ID_DOMAIN)
            .chain_update(encoded)
            .finalize();
        MessageId(digest.into())
    }

    /// Encodes for gossip, sync and the store.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes and checks everything that needs no group state: size, version, limits,
    /// the author's signature (`verify_strict`), and that what the body carries was
    /// written by the author for this group. Trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_LOG_ITEM_BYTES)?;
        let item: LogItem = exact(bytes).map_err(|_| WireError::Malformed {
            what: "group log item",
        })?;
        // One item, one encoding: postcard also accepts overlong varints, which would give
        // the same signed item another id (another gossip id, another log entry).
        if item.encode() != bytes {
            return Err(WireError::Malformed {
                what: "group log item (not in canonical form)",
            });
        }
        if item.version != LOG_ITEM_VERSION {
            return Err(WireError::UnknownVersion {
                what: "group log item",
                version: item.version,
            });
        }
        keys::verify(
            &item.author,
            ITEM_DOMAIN,
            &item.body_bytes(),
            &item.signature,
        )
        .map_err(|_| WireError::Limit("group log item signature does not verify"))?;
        match &item.body {
            LogBody::Message(envelope) => {
                if envelope.group_id != item.group_id || envelope.sender != item.author {
                    return Err(WireError::Limit("message of another group or sender"));
                }
                envelope
                    .verify()
                    .map_err(|_| WireError::Limit("message signature does not verify"))?;
            }
            LogBody::Op(op) => {
                if op.group_id != item.group_id || op.author != item.author {
                    return Err(WireError::Limit("op of another group or author"));
                }
                op.verify()?;
            }
            LogBody::Card(card) => {
                card.verify()
                    .map_err(|_| WireError::Limit("card does not verify"))?;
            }
            LogBody::Keys(sealed) => {
                if sealed.len() > MAX_SEALED_KEYS
                    || sealed.iter().any(|(_, s)| s.len() > MAX_SEALED_KEY_BYTES)
                {
                    return Err(WireError::Limit("key item too large"));
                }
            }
        }
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn signing(identity: &Identity) -> SigningKey {
        keys::signing_key_of(identity).unwrap()
    }

    #[test]
    fn items_round_trip_and_forgeries_are_refused() {
        let alice = Identity::generate().unwrap();
        let mallory = Identity::generate().unwrap();
        let (group, _) = GroupId::generate(&alice.public_key()).unwrap();
        let hlc = Hlc { ms: 5, counter: 0 };
        let card = alice.card("Alice", Vec::new(), 1);
        let item = LogItem::sign(&signing(&alice), group, hlc, LogBody::Card(card));
        let bytes = item.encode();
        assert_eq!(LogItem::decode(&bytes).unwrap(), item);
        assert_eq!(LogItem::id_of(&bytes), LogItem::id_of(&item.encode()));

        // Claiming to be alice with mallory's key: the signature fails.
        let mut forged = LogItem::sign(&signing(&mallory), group, hlc, item.body.clone());
        forged.author = alice.public_key();
        assert!(LogItem::decode(&forged.encode()).is_err());
        // A changed field after signing: refused.
        let mut moved = item.clone();
        moved.hlc.ms = 6;
        assert!(LogItem::decode(&moved.encode()).is_err());
        // Trailing bytes, garbage, oversize: refused.
        let mut long = bytes.clone();
        long.push(0);
        assert!(LogItem::decode(&long).is_err());
        assert!(LogItem::decode(&[7; 100]).is_err());
        assert!(LogItem::decode(&vec![0; MAX_LOG_ITEM_BYTES + 1]).is_err());
        // The same item with an overlong varint (another encoding, so another id): refused.
        let mut padded = bytes.clone();
        // The hlc counter (0, one byte `00`) follows version, group, author and hlc.ms.
        let prefix =
            postcard::to_stdvec(&(item.version, item.group_id, item.author, item.hlc.ms)).unwrap();
        assert_eq!(padded[..prefix.len()], prefix[..]);
        assert_eq!(padded[prefix.len()], 0);
        padded.splice(prefix.len()..=prefix.len(), [0x80, 0x00]);
        assert!(
            LogItem::decode(&padded).is_err(),
            "non-canonical encoding accepted"
        );
        // Too many sealed keys.
        let keys_item = LogItem::sign(
            &signing(&alice),
            group,
            hlc,
            LogBody::Keys(vec![([1; 32], vec![0; 10]); MAX_SEALED_KEYS + 1]),
        );
        assert!(LogItem::decode(&keys_item.encode()).is_err());
    }
}
