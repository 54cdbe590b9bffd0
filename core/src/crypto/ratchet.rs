//! Pairwise sessions: X3DH key agreement and the Double Ratchet, after Signal's published
//! specifications (<https://signal.org/docs/specifications/x3dh/>,
//! <https://signal.org/docs/specifications/doubleratchet/>), built from reviewed primitives
//! only: X25519 (`x25519-dalek`), HKDF-SHA256 (`hkdf`), HMAC-SHA256 (`hmac`) and
//! ChaCha20-Poly1305 (`chacha20poly1305`). Pure: no I/O, no clock; every random key is
//! drawn by the caller and passed in, so tests and simulators are deterministic.
//!
//! Why not vodozemac's Olm: it keeps at most 40 skipped message keys per chain and 5
//! receiving chains, fixed at compile time. A message here may arrive directly and through
//! up to four relays, and a sender keeps up to four batches of 64 in flight, so hundreds of
//! messages can overtake each other; with Olm those beyond 40 would be lost for good. The
//! bounds here are Signal's: a chain may jump [`MAX_SKIP`] ahead and [`MAX_SKIPPED_KEYS`]
//! skipped keys are kept per session (oldest dropped first).
//!
//! Key agreement (the initiator Alice, the responder Bob): Bob's card carries his identity
//! X25519 key `IKb` and a signed prekey `SPKb`. Alice draws an ephemeral `EKa` and computes
//! `DH1 = DH(IKa, SPKb)`, `DH2 = DH(EKa, IKb)`, `DH3 = DH(EKa, SPKb)`,
//! `SK = HKDF(0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3)`. X3DH alone does not stop key-compromise
//! impersonation (Bob's secrets let anyone compute `SK` for a forged "Alice"), so the
//! envelope layer signs every message that starts a session with Alice's ed25519 key; once
//! the session exists, only holders of its chain keys can write to it.

use std::collections::VecDeque;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

/// How far one receiving chain may jump ahead of the last message read (Signal's bound).
pub const MAX_SKIP: u32 = 25_000;
/// Skipped message keys kept per session for messages that arrive late; the oldest go first.
pub const MAX_SKIPPED_KEYS: usize = 2_000;

const X3DH_INFO: &[u8] = b"bonghwa-x3dh-v1";
const ROOT_INFO: &[u8] = b"bonghwa-ratchet-root-v1";
const MESSAGE_INFO: &[u8] = b"bonghwa-ratchet-message-v1";
const KEY_LOG_DOMAIN: &[u8] = b"bonghwa-key-log-v1";

/// Why a session could not be started or a message opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RatchetError {
    /// A public key is a low-order point: the DH result would carry no secret.
    #[error("a key in the message is not a usable X25519 key")]
    BadKey,
    /// The message claims to be further ahead in its chain than we follow.
    #[error(
        "message is {jump} messages ahead of the last one read; at most {MAX_SKIP} are followed"
    )]
    TooFarAhead {
        /// How far ahead.
        jump: u32,
    },
    /// The message key is gone: it was used already (a replay) or dropped as too old.
    #[error(
        "message key already used or dropped (a replay, or older than the {MAX_SKIPPED_KEYS} skipped keys kept)"
    )]
    KeyGone,
    /// Decryption failed: tampered, or not written in this session.
    #[error("message does not open in this session: tampered, or from another session")]
    Unauthentic,
    /// The session has no sending chain yet (a responder that has read nothing).
    #[error("the session cannot send before it has read a message")]
    CannotSend,
}

/// An X25519 key pair kept in session state.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyPair {
    secret: [u8; 32],
    /// The public half.
    pub public: [u8; 32],
}

impl KeyPair {
    /// The key pair whose secret is `random` (32 fresh random bytes the caller drew).
    pub fn from_random(random: [u8; 32]) -> Self {
        let secret = StaticSecret::from(random);
        let public = PublicKey::from(&secret).to_bytes();
        Self {
            secret: secret.to_bytes(),
            public,
        }
    }

    /// The secret half (to keep it in the store).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret
    }

    /// The key pair of an existing secret (our identity message key).
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self::from_random(*secret)
    }

    fn dh(&self, their_public: &[u8; 32]) -> Result<[u8; 32], RatchetError> {
        let shared =
            StaticSecret::from(self.secret).diffie_hellman(&PublicKey::from(*their_public));
        if !shared.was_contributory() {
            return Err(RatchetError::BadKey);
        }
        Ok(shared.to_bytes())
    }
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// What travels in the clear (inside the sealed envelope) with each ratchet message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub dh: [u8; 32],
    /// How many messages the sender sent in its previous sending chain.
    pub pn: u32,
    /// This message's number in the current sending chain.
    pub n: u32,
}

/// What the initiator adds to every message until the responder has answered: enough for
/// the responder to run X3DH on its side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Init {
    /// The initiator's ephemeral key `EKa`; it also names the session.
    pub base: [u8; 32],
    /// Which of the responder's signed prekeys was used.
    pub prekey_id: u32,
}

/// A sealed ratchet message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Present until the initiator has read a message from the responder.
    pub init: Option<Init>,
    /// Ratchet public key and counters.
    pub header: Header,
    /// ChaCha20-Poly1305 of the plaintext; the associated data binds both identity keys
    /// and the header.
    pub ciphertext: Vec<u8>,
}

/// A fingerprint of one message key (SHA-256 under a domain), for the key log that tests
/// use to prove that no key is ever used twice. It reveals nothing about the key.
pub type KeyFingerprint = [u8; 32];

#[derive(Clone, Serialize, Deserialize)]
struct Skipped {
    dh: [u8; 32],
    n: u32,
    key: [u8; 32],
}

/// One pairwise session. Serialised as it is (postcard) into the store; its secrets are
/// wiped from memory when it is dropped.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// The initiator's ephemeral key: both sides name the session by it.
    pub id: [u8; 32],
    /// Identity keys of initiator and responder, bound into every message's AEAD.
    ad: ([u8; 32], [u8; 32]),
    root: [u8; 32],
    ours: KeyPair,
    theirs: Option<[u8; 32]>,
    send_chain: Option<[u8; 32]>,
    recv_chain: Option<[u8; 32]>,
    sent: u32,
    received: u32,
    previous_sent: u32,
    /// Sent with each message while we, the initiator, have read nothing in this session.
    init: Option<Init>,
    /// Whether the peer has written in this session (its key agreement is confirmed).
    pub confirmed: bool,
    skipped: VecDeque<Skipped>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.root.zeroize();
        if let Some(key) = self.send_chain.as_mut() {
            key.zeroize();
        }
        if let Some(key) = self.recv_chain.as_mut() {
            key.zeroize();
        }
        for skipped in &mut self.skipped {
            skipped.key.zeroize();
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .field("confirmed", &self.confirmed)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

/// The result of opening a message.
#[derive(Debug)]
pub struct Opened {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// Messages of the sender's chains we have not read yet, after this one (a gap: they
    /// may still arrive late).
    pub missing: usize,
    /// The message key's fingerprint.
    pub key: KeyFingerprint,
}

impl Session {
    /// Alice starts a session with Bob from his card: `our_identity` is Alice's identity
    /// X25519 secret, `their_identity` and `their_prekey` Bob's public keys; `random` gives
    /// the ephemeral key and the first ratchet key.
    pub fn initiate(
        our_identity: &[u8; 32],
        their_identity: &[u8; 32],
        their_prekey: &[u8; 32],
        prekey_id: u32,
        random: [[u8; 32]; 2],
    ) -> Result<Self, RatchetError> {
        let identity = KeyPair::from_secret(our_identity);
        let base = KeyPair::from_random(random[0]);
        let dh1 = identity.dh(their_prekey)?;
        let dh2 = base.dh(their_identity)?;
        let dh3 = base.dh(their_prekey)?;
        let shared = x3dh_secret(&dh1, &dh2, &dh3);
        Self::started(
            &shared,
            associated(&identity.public, their_identity),
            base.public,
            their_prekey,
            prekey_id,
            random[1],
        )
    }

    /// The initiator's session once the X3DH secret is known.
    fn started(
        shared: &[u8; 32],
        ad: ([u8; 32], [u8; 32]),
        base: [u8; 32],
        their_prekey: &[u8; 32],
        prekey_id: u32,
        random: [u8; 32],
    ) -> Result<Self, RatchetError> {
        let ours = KeyPair::from_random(random);
        let (root, send_chain) = kdf_root(shared, &ours.dh(their_prekey)?);
        Ok(Self {
            id: base,
            ad,
            root,
            ours,
            theirs: Some(*their_prekey),
            send_chain: Some(send_chain),
            recv_chain: None,
            sent: 0,
            received: 0,
            previous_sent: 0,
            init: Some(Init { base, prekey_id }),
            confirmed: false,
            skipped: VecDeque::new(),
        })
    }

    /// The initiator's side of a session to the responder *as if* started by the owner of
    /// `claimed_identity`, built from the responder's secrets alone: key-compromise
    /// impersonation against X3DH, which is possible. It exists so that tests can prove
    /// that the signature on a session's start is what stops it.
    #[cfg(feature = "forgery")]
    pub fn forge_initiator(
        claimed_identity: &[u8; 32],
        responder_identity_secret: &[u8; 32],
        responder_prekey_secret: &[u8; 32],
        prekey_id: u32,
        random: [[u8; 32]; 2],
    ) -> Result<Self, RatchetError> {
        let responder = KeyPair::from_secret(responder_identity_secret);
        let prekey = KeyPair::from_secret(responder_prekey_secret);
        let base = KeyPair::from_random(random[0]);
        let dh1 = prekey.dh(claimed_identity)?;
        let dh2 = base.dh(&responder.public)?;
        let dh3 = base.dh(&prekey.public)?;
        let shared = x3dh_secret(&dh1, &dh2, &dh3);
        Self::started(
            &shared,
            associated(claimed_identity, &responder.public),
            base.public,
            &prekey.public,
            prekey_id,
            random[1],
        )
    }

    /// Bob accepts a session Alice started: `our_prekey` is the signed prekey `init`
    /// names. Nothing is read yet; pass the first message to [`Session::decrypt`].
    pub fn accept(
        our_identity: &[u8; 32],
        our_prekey: &KeyPair,
        their_identity: &[u8; 32],
        init: &Init,
    ) -> Result<Self, RatchetError> {
        let identity = KeyPair::from_secret(our_identity);
        let dh1 = our_prekey.dh(their_identity)?;
        let dh2 = identity.dh(&init.base)?;
        let dh3 = our_prekey.dh(&init.base)?;
        let root = x3dh_secret(&dh1, &dh2, &dh3);
        Ok(Self {
            id: init.base,
            ad: associated(their_identity, &identity.public),
            root,
            ours: our_prekey.clone(),
            theirs: None,
            send_chain: None,
            recv_chain: None,
            sent: 0,
            received: 0,
            previous_sent: 0,
            init: None,
            confirmed: false,
            skipped: VecDeque::new(),
        })
    }

    /// Whether we can write in this session now (a responder can once it has read).
    pub fn can_send(&self) -> bool {
        self.send_chain.is_some() || self.theirs.is_some()
    }

    /// How many messages we have sent in this session's current chain (a counter the tests
    /// and the key log use).
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Encrypts `plaintext`, advancing the sending chain. The caller must make the new
    /// state durable before the message leaves, or a restart would reuse the key. `random`
    /// is our next ratchet key, used if the peer turned the ratchet since we last wrote.
    pub fn encrypt(
        &mut self,
        plaintext: &[u8],
        random: [u8; 32],
    ) -> Result<(Message, KeyFingerprint), RatchetError> {
        if self.send_chain.is_none() {
            // Our half of the turn, made only now that we write: a key made when reading
            // and kept unused would be in every copy of the state taken meanwhile, and a
            // copy that holds our next key reads what the peer writes after our answer.
            let theirs = self.theirs.ok_or(RatchetError::CannotSend)?;
            self.ours = KeyPair::from_random(random);
            let (root, send_chain) = kdf_root(&self.root, &self.ours.dh(&theirs)?);
            self.root = root;
            self.send_chain = Some(send_chain);
            self.previous_sent = self.sent;
            self.sent = 0;
        }
        let chain = self.send_chain.as_mut().ok_or(RatchetError::CannotSend)?;
        let (next, message_key) = kdf_chain(chain);
        *chain = next;
        let header = Header {
            dh: self.ours.public,
            pn: self.previous_sent,
            n: self.sent,
        };
        self.sent = self.sent.checked_add(1).ok_or(RatchetError::CannotSend)?;
        let ciphertext = seal(&message_key, &self.ad, &header, plaintext)?;
        Ok((
            Message {
                init: self.init.clone(),
                header,
                ciphertext,
            },
            fingerprint(&message_key),
        ))
    }

    /// Decrypts `message`. All or nothing: if it fails, the session is as it was.
    pub fn decrypt(&mut self, message: &Message) -> Result<Opened, RatchetError> {
        let mut next = self.clone();
        let opened = next.decrypt_in_place(message)?;
        *self = next;
        Ok(opened)
    }

    fn decrypt_in_place(&mut self, message: &Message) -> Result<Opened, RatchetError> {
        let header = &message.header;
        if let Some(at) = self
            .skipped
            .iter()
            .position(|s| s.dh == header.dh && s.n == header.n)
        {
            let mut skipped = self.skipped.remove(at).ok_or(RatchetError::KeyGone)?;
            let plaintext = open(&skipped.key, &self.ad, header, &message.ciphertext);
            let key = fingerprint(&skipped.key);
            skipped.key.zeroize();
            return Ok(Opened {
                plaintext: plaintext?,
                missing: self.skipped.len(),
                key,
            });
        }
        if self.theirs != Some(header.dh) || self.recv_chain.is_none() {
            if self.recv_chain.is_some() {
                self.skip_to(header.pn)?;
            }
            self.turn(&header.dh)?;
        }
        if header.n < self.received {
            return Err(RatchetError::KeyGone);
        }
        self.skip_to(header.n)?;
        let chain = self.recv_chain.as_mut().ok_or(RatchetError::KeyGone)?;
        let (next, message_key) = kdf_chain(chain);
        *chain = next;
        self.received += 1;
        let plaintext = open(&message_key, &self.ad, header, &message.ciphertext)?;
        // The peer wrote in this session: it exists on both sides, stop sending `init`.
        self.confirmed = true;
        self.init = None;
        Ok(Opened {
            plaintext,
            missing: self.skipped.len(),
            key: fingerprint(&message_key),
        })
    }

    /// Keeps the keys of messages `received..until` of the current receiving chain.
    fn skip_to(&mut self, until: u32) -> Result<(), RatchetError> {
        let jump = until.saturating_sub(self.received);
        if jump > MAX_SKIP {
            return Err(RatchetError::TooFarAhead { jump });
        }
        let (Some(theirs), Some(chain)) = (self.theirs, self.recv_chain.as_mut()) else {
            return Ok(());
        };
        while self.received < until {
            let (next, key) = kdf_chain(chain);
            *chain = next;
            self.skipped.push_back(Skipped {
                dh: theirs,
                n: self.received,
                key,
            });
            if self.skipped.len() > MAX_SKIPPED_KEYS
                && let Some(mut oldest) = self.skipped.pop_front()
            {
                oldest.key.zeroize();
            }
            self.received += 1;
        }
        Ok(())
    }

    /// The receiving half of a DH ratchet step on their new key `theirs`; the sending half
    /// waits for our next message ([`Session::encrypt`]).
    fn turn(&mut self, theirs: &[u8; 32]) -> Result<(), RatchetError> {
        self.received = 0;
        self.theirs = Some(*theirs);
        let (root, recv_chain) = kdf_root(&self.root, &self.ours.dh(theirs)?);
        self.root = root;
        self.recv_chain = Some(recv_chain);
        if let Some(mut old) = self.send_chain.take() {
            old.zeroize();
        }
        Ok(())
    }

    /// How many skipped keys the session holds (messages not yet arrived).
    pub fn missing(&self) -> usize {
        self.skipped.len()
    }
}

fn x3dh_secret(dh1: &[u8; 32], dh2: &[u8; 32], dh3: &[u8; 32]) -> [u8; 32] {
    let mut ikm = [0u8; 128];
    ikm[..32].fill(0xFF);
    ikm[32..64].copy_from_slice(dh1);
    ikm[64..96].copy_from_slice(dh2);
    ikm[96..].copy_from_slice(dh3);
    let mut out = [0u8; 32];
    // A 32-byte output is always within HKDF's limit.
    let _ = Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm).expand(X3DH_INFO, &mut out);
    ikm.zeroize();
    out
}

fn associated(initiator: &[u8; 32], responder: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (*initiator, *responder)
}

/// `KDF_RK`: HKDF with the root key as salt → (new root key, chain key).
fn kdf_root(root: &[u8; 32], dh_out: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    let _ = Hkdf::<Sha256>::new(Some(root), dh_out).expand(ROOT_INFO, &mut okm);
    let mut new_root = [0u8; 32];
    let mut chain = [0u8; 32];
    new_root.copy_from_slice(&okm[..32]);
    chain.copy_from_slice(&okm[32..]);
    okm.zeroize();
    (new_root, chain)
}

/// `KDF_CK`: HMAC-SHA256 of the chain key over 0x02 → next chain key, over 0x01 → message key.
fn kdf_chain(chain: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mac = |byte: u8| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(chain)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&[byte]);
        mac.finalize().into_bytes().into()
    };
    (mac(0x02), mac(0x01))
}

/// The AEAD key and nonce of one message key (each message key is used exactly once).
fn message_cipher(message_key: &[u8; 32]) -> (ChaCha20Poly1305, [u8; 12]) {
    let mut okm = [0u8; 44];
    let _ = Hkdf::<Sha256>::new(Some(&[0u8; 32]), message_key).expand(MESSAGE_INFO, &mut okm);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&okm[..32]));
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    okm.zeroize();
    (cipher, nonce)
}

fn aad(ad: &([u8; 32], [u8; 32]), header: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 32 + 8);
    out.extend_from_slice(&ad.0);
    out.extend_from_slice(&ad.1);
    out.extend_from_slice(&header.dh);
    out.extend_from_slice(&header.pn.to_be_bytes());
    out.extend_from_slice(&header.n.to_be_bytes());
    out
}

fn seal(
    message_key: &[u8; 32],
    ad: &([u8; 32], [u8; 32]),
    header: &Header,
    plaintext: &[u8],
) -> Result<Vec<u8>, RatchetError> {
    let (cipher, nonce) = message_cipher(message_key);
    cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad(ad, header),
            },
        )
        .map_err(|_| RatchetError::Unauthentic)
}

fn open(
    message_key: &[u8; 32],
    ad: &([u8; 32], [u8; 32]),
    header: &Header,
    ciphertext: &[u8],
) -> Result<Vec<u8>, RatchetError> {
    let (cipher, nonce) = message_cipher(message_key);
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: ciphertext,
                aad: &aad(ad, header),
            },
        )
        .map_err(|_| RatchetError::Unauthentic)
}

fn fingerprint(message_key: &[u8; 32]) -> KeyFingerprint {
    let mut hash = Sha256::new();
    hash.update(KEY_LOG_DOMAIN);
    hash.update(message_key);
    hash.finalize().into()
}

#[cfg(test)]
mod tests;
