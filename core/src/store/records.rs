//! The small typed records kept in the `settings` table: where each one lives and how its
//! bytes look. These keys and encodings are the on-disk format of data dirs written since
//! schema version 1 (the `datadir-v1` fixture pins them): change one only with a migration.
//!
//! Every store gets the typed methods of [`Store`](super::Store) from this file on top of
//! its raw `setting`/`set_setting`/`remove_setting`, so the two stores cannot disagree on
//! a key or an encoding.

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{StoreError, StoreResult};
use crate::crypto::group::GroupId;
use crate::model::MessageId;

/// Key of the display name (raw UTF-8).
pub(super) const NAME_KEY: &str = "name";
/// Key of the list of our groups (postcard `Vec<GroupId>`).
pub(super) const GROUPS_KEY: &str = "groups";
/// Key prefix of one group's record, then the group id in hex (postcard `GroupRecord`).
const GROUP_PREFIX: &str = "group/";
/// Key prefix of a control message (an invite) waiting in the outbox, then its id in hex
/// (postcard `wire::Body`). Before removal existed an empty value meant "gone".
const CONTROL_PREFIX: &str = "control/";
/// Key prefix of the port a port-0 listen address got last time, then the address as
/// configured (2 bytes, big-endian).
const PORT_PREFIX: &str = "port/";
/// Key prefix of a peer's last known addresses, then its base58 peer id (postcard
/// `Vec<String>`).
const ADDRS_PREFIX: &str = "addrs/";
/// Key prefix of a relayed group's usage, then the group id in hex (postcard
/// `(items, bytes)`).
const USAGE_PREFIX: &str = "relay-group-usage/";
/// Key of our own signed prekeys and their secrets (bytes as the session layer wrote them,
/// encrypted when a passphrase is set).
pub(super) const OWN_PREKEYS_KEY: &str = "own-prekeys";
/// Key prefix of our sessions with one peer, then its identity key in hex (bytes as the
/// session layer wrote them).
pub(super) const SESSIONS_PREFIX: &str = "sessions/";
/// Key prefix of a peer's newest signed prekey, then its base58 peer id (postcard
/// `SignedPrekey`).
const PEER_PREKEY_PREFIX: &str = "peer-prekey/";
/// Key prefix of the envelope an outgoing message was sealed into, then the message id in
/// hex (the envelope's bytes): every copy of a message is the same bytes.
const SEALED_PREFIX: &str = "sealed/";
/// Key prefix of a received envelope's digest, then the digest in hex (postcard
/// `(MessageId, received ms)`): copies are recognised before they are opened.
const SEEN_PREFIX: &str = "seen/";

pub(super) fn sessions_key(peer: &[u8; 32]) -> String {
    format!("{SESSIONS_PREFIX}{}", data_encoding::HEXLOWER.encode(peer))
}

pub(super) fn peer_prekey_key(peer: &PeerId) -> String {
    format!("{PEER_PREKEY_PREFIX}{peer}")
}

pub(super) fn sealed_key(id: &MessageId) -> String {
    format!("{SEALED_PREFIX}{}", id.to_hex())
}

pub(super) fn seen_key(digest: &[u8; 32]) -> String {
    format!("{SEEN_PREFIX}{}", data_encoding::HEXLOWER.encode(digest))
}

pub(super) fn group_key(id: &GroupId) -> String {
    format!("{GROUP_PREFIX}{}", id.to_hex())
}

pub(super) fn control_key(id: &MessageId) -> String {
    format!("{CONTROL_PREFIX}{}", id.to_hex())
}

pub(super) fn port_key(addr: &Multiaddr) -> String {
    format!("{PORT_PREFIX}{addr}")
}

pub(super) fn addrs_key(peer: &PeerId) -> String {
    format!("{ADDRS_PREFIX}{peer}")
}

pub(super) fn usage_key(group: &GroupId) -> String {
    format!("{USAGE_PREFIX}{}", group.to_hex())
}

/// Postcard bytes of a record.
pub(super) fn encode<T: Serialize>(value: &T, what: &'static str) -> StoreResult<Vec<u8>> {
    postcard::to_stdvec(value)
        .map_err(|err| StoreError::Io(format!("could not encode a {what} record: {err}")))
}

/// A record from its postcard bytes. Bytes after the record are ignored, so that a record
/// a newer version grew at its end still opens.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> StoreResult<T> {
    postcard::from_bytes(bytes).map_err(|_| StoreError::Decode { what })
}
