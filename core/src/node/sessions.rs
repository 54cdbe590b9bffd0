//! Pairwise sessions (`crypto::ratchet`) as the node keeps them: our signed prekeys, the
//! sessions with each peer, sealing a payload into a version-2 envelope and opening one.
//!
//! `Sessions` owns the in-memory copies; the store holds the durable ones. Writing order is
//! the durability argument: when sealing, the advanced session is written before the caller
//! writes the envelope, so an envelope on disk implies its key's advance on disk (sled
//! recovers a prefix of its writes in order), and a restart can never seal again with a key
//! that sealed a kept envelope. When opening, the caller stores the message first and then
//! commits the session ([`Sessions::commit`]), so a session that moved past a key implies
//! the message that key opened is kept.

use std::collections::HashMap;
use std::io::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{NodeError, NodeResult};
use crate::crypto::{self, ratchet};
use crate::identity::{self, ContactCard, Identity, RestKey, SignedPrekey};
use crate::store::Store;
use crate::wire::session::{SESSION_START_DOMAIN, SessionEnvelope, SessionPlaintext, SessionStart};
use crate::wire::{DmPayload, Reject};

/// Sessions kept per peer: the one we write in and older ones for messages still in flight
/// (or started by both sides at once).
pub(super) const MAX_SESSIONS_PER_PEER: usize = 4;
/// How long one signed prekey is handed out before a new one replaces it.
pub(super) const PREKEY_ROTATE_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Our prekeys kept (newest first): a contact holding an older card can still reach us for
/// this many rotations (4 weeks). Older secrets are deleted, which is what makes the first
/// messages of a session (sealed to a prekey) unreadable with a later copy of the data dir.
pub(super) const MAX_OWN_PREKEYS: usize = 4;
/// Peers whose sessions are kept in memory at most; beyond it the cache starts over (the
/// store has them all).
const MAX_CACHED_PEERS: usize = 4_096;
/// The environment variable naming a file where the node appends a line for every session
/// envelope it seals (`sealed <envelope hex>`: what any observer of the wire or a relay
/// sees; written once the envelope is durable and may leave, as `sealed <key fingerprint>
/// <outer ephemeral key> <envelope hex>`) and opens (`opened <key fingerprint> <outer
/// ephemeral key> <envelope digest>`).
/// The scenario tests use it to play the attacker who captured every envelope and to prove
/// that no message key and no outer key is ever used for two different envelopes.
/// Fingerprints reveal nothing about the keys; envelopes are ciphertext.
pub(super) const KEY_LOG_ENV: &str = "BONGHWA_KEY_LOG";

#[derive(Clone, Serialize, Deserialize)]
struct OwnPrekey {
    secret: [u8; 32],
    signed: SignedPrekey,
    created_ms: u64,
}

impl Drop for OwnPrekey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

/// Our sessions with one peer, most recently used first; `active` is the one we write in.
#[derive(Clone, Default, Serialize, Deserialize)]
struct PeerSessions {
    active: Option<[u8; 32]>,
    sessions: Vec<ratchet::Session>,
}

impl PeerSessions {
    fn position(&self, id: &[u8; 32]) -> Option<usize> {
        self.sessions.iter().position(|s| &s.id == id)
    }

    /// Moves session `at` to the front, dropping the oldest beyond the bound.
    fn promote(&mut self, at: usize) {
        let session = self.sessions.remove(at);
        self.sessions.insert(0, session);
        self.sessions.truncate(MAX_SESSIONS_PER_PEER);
        if self.active.is_some_and(|id| self.position(&id).is_none()) {
            self.active = None;
        }
    }
}

/// A version-2 envelope opened and read: what to store, and the session state to commit
/// once it is stored.
pub(super) struct OpenedSession {
    /// The payload, checked.
    pub(super) payload: DmPayload,
    /// The sender's newest signed prekey, if it sent one.
    pub(super) prekey: Option<SignedPrekey>,
    /// Messages of this peer's chains not read yet (a gap, unless they arrive late).
    pub(super) missing: usize,
    /// The session state to write after the message.
    pub(super) commit: SessionCommit,
}

/// Session state to write once what it opened is stored.
pub(super) struct SessionCommit {
    peer: [u8; 32],
    sessions: PeerSessions,
}

/// Our prekeys and the sessions with our peers.
pub(super) struct Sessions {
    /// Encrypts our prekeys and the sessions in the store, if a passphrase was given.
    rest: Option<RestKey>,
    prekeys: Vec<OwnPrekey>,
    peers: HashMap<[u8; 32], PeerSessions>,
    key_log: Option<std::fs::File>,
    /// Per sender, the digest of the card and prekey whose signatures we last checked:
    /// the same bytes again (every message carries them) are not checked again.
    verified: HashMap<[u8; 32], [u8; 32]>,
    /// Key log lines of envelopes sealed since the last flush.
    unflushed_log: Vec<String>,
}

impl Sessions {
    /// Loads our prekeys (making the first one, or a new one when the newest is older than
    /// [`PREKEY_ROTATE_MS`]). Written but not flushed: the caller flushes at start.
    pub(super) fn load(
        store: &dyn Store,
        identity: &Identity,
        rest: Option<RestKey>,
        now: u64,
    ) -> NodeResult<Self> {
        let stored = store.own_prekeys()?;
        let mut prekeys: Vec<OwnPrekey> = match &stored {
            Some(bytes) => {
                postcard::from_bytes(&open_record(rest.as_ref(), bytes)?).map_err(|_| {
                    NodeError::Internal("the stored session prekeys are damaged".into())
                })?
            }
            None => Vec::new(),
        };
        let rotate = prekeys
            .first()
            .is_none_or(|newest| now.saturating_sub(newest.created_ms) >= PREKEY_ROTATE_MS);
        if rotate {
            let id = prekeys
                .first()
                .map_or(1, |newest| newest.signed.id.wrapping_add(1));
            let pair = ratchet::KeyPair::from_random(random()?);
            prekeys.insert(
                0,
                OwnPrekey {
                    secret: pair.secret_bytes(),
                    signed: identity.sign_prekey(id, pair.public),
                    created_ms: now,
                },
            );
            prekeys.truncate(MAX_OWN_PREKEYS);
        }
        // A passphrase set on a data dir that had none (its prekeys were stored plain):
        // every session is written again encrypted, and the prekeys last, so that a start
        // cut short does it again.
        let unprotected = |bytes: &[u8]| bytes.first() == Some(&RECORD_PLAIN);
        let protect = rest.is_some() && stored.as_deref().is_some_and(unprotected);
        if let (true, Some(key)) = (protect, &rest) {
            for (name, bytes) in store.all_sessions()? {
                if unprotected(&bytes) {
                    let sealed = seal_record(Some(key), bytes[1..].to_vec())?;
                    store.set_setting(&name, &sealed)?;
                }
            }
        }
        if rotate || protect {
            let bytes = postcard::to_stdvec(&prekeys)
                .map_err(|e| NodeError::Internal(format!("encoding prekeys: {e}")))?;
            store.set_own_prekeys(&seal_record(rest.as_ref(), bytes)?)?;
        }
        let key_log = std::env::var_os(KEY_LOG_ENV).and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        Ok(Self {
            rest,
            prekeys,
            peers: HashMap::new(),
            key_log,
            verified: HashMap::new(),
            unflushed_log: Vec::new(),
        })
    }

    /// Whether our secrets at rest are encrypted under a passphrase.
    pub(super) fn protected(&self) -> bool {
        self.rest.is_some()
    }

    /// The signed prekey we hand out now (in our contact code and our messages).
    pub(super) fn prekey(&self) -> Option<&SignedPrekey> {
        self.prekeys.first().map(|p| &p.signed)
    }

    fn peer(&mut self, store: &dyn Store, peer: &[u8; 32]) -> NodeResult<&mut PeerSessions> {
        if !self.peers.contains_key(peer) {
            let loaded = match store.sessions(peer)? {
                Some(bytes) => postcard::from_bytes(&open_record(self.rest.as_ref(), &bytes)?)
                    .map_err(|_| NodeError::Internal("a stored session is damaged".into()))?,
                None => PeerSessions::default(),
            };
            if self.peers.len() >= MAX_CACHED_PEERS {
                self.peers.clear();
            }
            self.peers.insert(*peer, loaded);
        }
        self.peers
            .get_mut(peer)
            .ok_or_else(|| NodeError::Internal("session cache".into()))
    }

    /// Our sessions with `peer`, out of the cache (put back by [`Sessions::save`]).
    fn take_peer(&mut self, store: &dyn Store, peer: &[u8; 32]) -> NodeResult<PeerSessions> {
        self.peer(store, peer)?;
        Ok(self.peers.remove(peer).unwrap_or_default())
    }

    fn save(
        &mut self,
        store: &dyn Store,
        peer: &[u8; 32],
        sessions: PeerSessions,
    ) -> NodeResult<()> {
        let bytes = postcard::to_stdvec(&sessions)
            .map_err(|e| NodeError::Internal(format!("encoding a session: {e}")))?;
        store.set_sessions(peer, &seal_record(self.rest.as_ref(), bytes)?)?;
        self.peers.insert(*peer, sessions);
        Ok(())
    }

    /// Seals `payload` for the owner of `card` in our session with them (started from
    /// `their_prekey` if we have none): a version-2 envelope. The advanced session is
    /// written to the store (not flushed) before this returns.
    pub(super) fn seal(
        &mut self,
        store: &dyn Store,
        identity: &Identity,
        our_card: &ContactCard,
        card: &ContactCard,
        their_prekey: &SignedPrekey,
        payload: DmPayload,
    ) -> NodeResult<Vec<u8>> {
        let our_prekey = self.prekey().cloned();
        // Taken out of the cache, not copied: if sealing fails it is read again from the
        // store, whose state no kept envelope has used.
        let mut peer = self.take_peer(store, &card.identity)?;
        let at = match peer.active.and_then(|id| peer.position(&id)) {
            Some(at) if peer.sessions[at].can_send() => at,
            _ => {
                let session = ratchet::Session::initiate(
                    identity.msg_secret(),
                    &card.msg_key,
                    &their_prekey.key,
                    their_prekey.id,
                    [random()?, random()?],
                )
                .map_err(|e| NodeError::Crypto(format!("starting a session: {e}")))?;
                peer.active = Some(session.id);
                peer.sessions.insert(0, session);
                0
            }
        };
        peer.promote(at);
        let session = &mut peer.sessions[0];
        let plaintext = SessionPlaintext {
            payload,
            prekey: our_prekey,
        }
        .encode();
        let (message, key) = session
            .encrypt(&plaintext, random()?)
            .map_err(|e| NodeError::Crypto(format!("sealing in a session: {e}")))?;
        let start = match message.init {
            Some(_) => {
                let signed = SessionEnvelope::start_bytes(&card.identity, &session.id, &message);
                Some(SessionStart {
                    card: our_card.clone(),
                    signature: identity.sign(SESSION_START_DOMAIN, &signed).to_vec(),
                })
            }
            None => None,
        };
        let inner = SessionEnvelope {
            sender: identity.public_key(),
            session: session.id,
            start,
            message,
        }
        .encode();
        let envelope = crypto::seal_v2(&their_prekey.key, &inner, random()?)
            .map_err(|e| NodeError::Crypto(format!("sealing an envelope: {e}")))?;
        self.save(store, &card.identity, peer)?;
        if self.key_log.is_some() {
            self.unflushed_log.push(format!(
                "sealed {} {} {}\n",
                hex(&key),
                hex(envelope.get(1..33).unwrap_or_default()),
                hex(&envelope)
            ));
        }
        Ok(envelope)
    }

    /// Opens a version-2 envelope and reads it in its session (accepting a new session
    /// only if its start is signed by the sender). Nothing is written: commit the returned
    /// state after storing what it opened.
    pub(super) fn open(
        &mut self,
        store: &dyn Store,
        identity: &Identity,
        envelope: &[u8],
    ) -> Result<OpenedSession, Reject> {
        let inner = self
            .prekeys
            .iter()
            .find_map(|p| crypto::open_v2(&p.secret, envelope).ok())
            .ok_or(Reject::Undecryptable)?;
        let inner = SessionEnvelope::decode(&inner).map_err(|_| Reject::Malformed)?;
        let me = identity.public_key();
        // Taken out of the cache: it goes back when the caller commits what this opened;
        // if not (a refusal, a store that could not keep the message), it is read again
        // from the store as it was.
        let mut peer = self.take_peer(store, &inner.sender).map_err(|e| {
            tracing::error!("cannot read sessions: {e:#}");
            Reject::Undecryptable
        })?;
        let at = match peer.position(&inner.session) {
            Some(at) => at,
            None => {
                let session = self.accept(identity, &inner)?;
                peer.sessions.insert(0, session);
                0
            }
        };
        let opened = peer.sessions[at].decrypt(&inner.message).map_err(|e| {
            tracing::debug!("session message refused: {e}");
            Reject::Undecryptable
        })?;
        let plain =
            SessionPlaintext::decode_unsigned(&opened.plaintext).map_err(|_| Reject::Malformed)?;
        let digest = plain.signed_digest();
        if self.verified.get(&inner.sender) != Some(&digest) {
            plain.verify_signatures().map_err(|_| Reject::Malformed)?;
            if self.verified.len() >= MAX_CACHED_PEERS {
                self.verified.clear();
            }
            self.verified.insert(inner.sender, digest);
        }
        if plain.payload.sender.identity != inner.sender || plain.payload.recipient != me {
            return Err(Reject::Forged);
        }
        if self.key_log.is_some() {
            let line = format!(
                "opened {} {} {}\n",
                hex(&opened.key),
                hex(envelope.get(1..33).unwrap_or_default()),
                hex(&envelope_digest(envelope))
            );
            self.log(&line);
        }
        peer.promote(at);
        // Signal's rule: we write in the session we last read from, so two sessions
        // started at once converge on the one each side heard last.
        if peer.sessions[0].can_send() {
            peer.active = Some(peer.sessions[0].id);
        }
        Ok(OpenedSession {
            payload: plain.payload,
            prekey: plain.prekey,
            missing: opened.missing,
            commit: SessionCommit {
                peer: inner.sender,
                sessions: peer,
            },
        })
    }

    /// The store was flushed: what was sealed before is durable and may leave.
    pub(super) fn flushed(&mut self) {
        for line in std::mem::take(&mut self.unflushed_log) {
            self.log(&line);
        }
    }

    fn log(&mut self, line: &str) {
        if let Some(log) = self.key_log.as_mut() {
            // One write of one line to a file opened for appending: lines of several
            // processes do not interleave.
            let _ = log.write_all(line.as_bytes());
        }
    }

    /// A session the sender starts: only with its signed start, on a prekey we hold.
    fn accept(
        &self,
        identity: &Identity,
        inner: &SessionEnvelope,
    ) -> Result<ratchet::Session, Reject> {
        let (Some(start), Some(init)) = (&inner.start, &inner.message.init) else {
            // A message in a session we do not have (we lost it, or dropped it as old).
            return Err(Reject::Undecryptable);
        };
        if start.card.identity != inner.sender || start.card.verify().is_err() {
            return Err(Reject::Forged);
        }
        let signed =
            SessionEnvelope::start_bytes(&identity.public_key(), &inner.session, &inner.message);
        identity::verify_signature(
            &inner.sender,
            SESSION_START_DOMAIN,
            &signed,
            &start.signature,
        )
        .map_err(|_| Reject::Forged)?;
        let prekey = self
            .prekeys
            .iter()
            .find(|p| p.signed.id == init.prekey_id)
            .ok_or(Reject::Undecryptable)?;
        let pair = ratchet::KeyPair::from_secret(&prekey.secret);
        let session =
            ratchet::Session::accept(identity.msg_secret(), &pair, &start.card.msg_key, init)
                .map_err(|_| Reject::Undecryptable)?;
        if session.id != inner.session {
            return Err(Reject::Forged);
        }
        Ok(session)
    }

    /// Writes the session state an [`OpenedSession`] left (after its message is stored).
    pub(super) fn commit(&mut self, store: &dyn Store, commit: SessionCommit) -> NodeResult<()> {
        self.save(store, &commit.peer, commit.sessions)
    }

    /// Whether the peer with identity key `peer` has written to us in a session: a
    /// version-1 envelope claiming to come from it is then a downgrade, refused.
    pub(super) fn heard_in_session(&mut self, store: &dyn Store, peer: &[u8; 32]) -> bool {
        match self.peer(store, peer) {
            Ok(sessions) => sessions.sessions.iter().any(|s| s.confirmed),
            // Unreadable session state: refuse rather than accept an unauthenticated
            // envelope.
            Err(_) => true,
        }
    }
}

/// Reads envelopes with the keys and sessions in a copy of a data dir, as whoever copied
/// it could: what a seized phone or a stolen backup opens. The copy's sessions advance in
/// memory only (the attacker keeps up with what it reads); nothing is written back.
pub struct DataDirReader {
    identity: Identity,
    store: crate::store::SledStore,
    sessions: Sessions,
}

impl DataDirReader {
    /// Opens the copy at `data_dir` (its `identity.key` and `db`), with the passphrase if
    /// the copy is protected by one.
    pub fn open(data_dir: &std::path::Path, passphrase: Option<&str>) -> NodeResult<Self> {
        let (identity, rest) =
            Identity::load_or_create_with(&data_dir.join("identity.key"), passphrase)?;
        let store = crate::store::SledStore::open(
            &data_dir.join("db"),
            &crate::store::SledConfig::default(),
        )?;
        let sessions = Sessions::load(&store, &identity, rest, 0)?;
        Ok(Self {
            identity,
            store,
            sessions,
        })
    }

    /// The secrets a thief of this data dir holds: the identity message key, and each
    /// prekey's id and secret (for tests that forge what such a thief could).
    #[cfg(feature = "forgery")]
    pub fn stolen_secrets(&self) -> ([u8; 32], Vec<(u32, [u8; 32])>) {
        (
            *self.identity.msg_secret(),
            self.sessions
                .prekeys
                .iter()
                .map(|p| (p.signed.id, p.secret))
                .collect(),
        )
    }

    /// The text `envelope` carries, if this copy opens it (either version).
    pub fn read(&mut self, envelope: &[u8]) -> Option<String> {
        let payload = if crypto::envelope_version(envelope) == Some(crypto::ENVELOPE_V2) {
            let opened = self
                .sessions
                .open(&self.store, &self.identity, envelope)
                .ok()?;
            let peer = opened.commit.peer;
            self.sessions.peers.insert(peer, opened.commit.sessions);
            opened.payload
        } else {
            let opened = crypto::open(self.identity.msg_secret(), envelope).ok()?;
            DmPayload::decode(&opened.plaintext).ok()?
        };
        match payload.body {
            crate::wire::Body::Text(text) => Some(text),
            _ => Some(String::new()),
        }
    }
}

/// Keeps `prekey` as `peer`'s newest if it is newer than the one we hold.
pub(super) fn keep_newer_prekey(
    store: &dyn Store,
    peer: &libp2p::PeerId,
    prekey: &SignedPrekey,
) -> NodeResult<()> {
    let newer = store
        .peer_prekey(peer)?
        .is_none_or(|held| prekey.id > held.id);
    if newer {
        store.set_peer_prekey(peer, prekey)?;
    }
    Ok(())
}

/// Tag of a secret record stored as it is (no passphrase).
const RECORD_PLAIN: u8 = 0;
/// Tag of a secret record encrypted under the passphrase's key.
const RECORD_SEALED: u8 = 1;

/// A secret record as stored: tagged, and encrypted when there is a passphrase.
fn seal_record(rest: Option<&RestKey>, plain: Vec<u8>) -> NodeResult<Vec<u8>> {
    match rest {
        Some(key) => {
            let mut out = vec![RECORD_SEALED];
            out.extend(key.seal(&plain)?);
            Ok(out)
        }
        None => {
            let mut out = Vec::with_capacity(plain.len() + 1);
            out.push(RECORD_PLAIN);
            out.extend(plain);
            Ok(out)
        }
    }
}

/// The plain bytes of a stored secret record.
fn open_record(rest: Option<&RestKey>, stored: &[u8]) -> NodeResult<Vec<u8>> {
    match (stored.split_first(), rest) {
        (Some((&RECORD_PLAIN, plain)), _) => Ok(plain.to_vec()),
        (Some((&RECORD_SEALED, sealed)), Some(key)) => key.open(sealed).ok_or_else(|| {
            NodeError::Internal("session state does not open with this passphrase".into())
        }),
        (Some((&RECORD_SEALED, _)), None) => Err(NodeError::Internal(
            "session state is protected by a passphrase, and none was given".into(),
        )),
        _ => Err(NodeError::Internal(
            "stored session state is damaged".into(),
        )),
    }
}

/// The digest copies of an envelope are recognised by.
pub(super) fn envelope_digest(envelope: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"bonghwa-envelope-v1")
        .chain_update(envelope)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn random() -> NodeResult<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| NodeError::Internal(format!("no randomness: {e}")))?;
    Ok(bytes)
}
