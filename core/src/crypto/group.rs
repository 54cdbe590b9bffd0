//! Group keys: per-sender hash ratchets ("sender keys"), group ids, topics and signatures.
//! Pure functions and plain state: no I/O, no clocks.
//!
//! Each member encrypts its group messages under its own **sender key**, the construction of
//! Signal's sender keys: a 32-byte chain key that advances one step per message,
//! `message_key = HMAC-SHA256(chain_key, 0x01)` and `chain_key' = HMAC-SHA256(chain_key, 0x02)`.
//! The chain only moves forward, so a member who receives our chain key today cannot read
//! what we sent before it. A member shares its current chain key with every other member
//! over the pairwise (Noise-sealed) channel, and makes a fresh chain — a new
//! **generation** — whenever someone leaves or is removed, so that person cannot read on.
//!
//! Each message key is used for exactly one message, then forgotten. From it, HMAC with two
//! distinct labels derives the ChaCha20-Poly1305 key and nonce; since the key never repeats,
//! the derived nonce never repeats under it either. The AEAD's associated data binds the
//! group id, the sender's identity key, the generation and the iteration, so a ciphertext
//! cannot be replayed into another group, under another sender or at another position.
//!
//! The encrypted envelope is also signed by the sender's ed25519 identity key (a chain key
//! is shared with the whole group, so the AEAD alone proves only "some member"); signatures
//! are checked with `verify_strict`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::Identity;

type HmacSha256 = Hmac<Sha256>;

/// Most message keys a receiver keeps for messages that arrive out of order, per chain,
/// and the largest forward jump it will ratchet through for one message. Both bound the
/// work and memory a single (even authentic) message can cause.
pub const MAX_SKIPPED_KEYS: usize = 2_000;
/// Plaintext sizes after padding, so ciphertext lengths reveal only a bucket. Smaller than
/// the direct-message buckets: a group envelope plus gossipsub's framing must stay under
/// the 64 KiB gossip payload limit.
pub const GROUP_PAD_BUCKETS: [usize; 5] = [256, 1024, 4096, 16_384, 49_152];
/// Length prefix inside the padded plaintext.
const LEN_PREFIX: usize = 4;
/// The largest group plaintext that can be sealed.
pub const MAX_GROUP_PLAINTEXT: usize = GROUP_PAD_BUCKETS[GROUP_PAD_BUCKETS.len() - 1] - LEN_PREFIX;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// The largest ciphertext a sender key produces.
pub const MAX_GROUP_CIPHERTEXT: usize = GROUP_PAD_BUCKETS[GROUP_PAD_BUCKETS.len() - 1] + TAG_LEN;

const AAD_DOMAIN: &[u8] = b"bonghwa-group-message-v1";
const KEY_LABEL: &[u8] = b"bonghwa-group-v1 cipher key";
const NONCE_LABEL: &[u8] = b"bonghwa-group-v1 nonce";
const TOPIC_DOMAIN: &[u8] = b"bonghwa-group-topic-v1";
const GROUP_ID_DOMAIN: &[u8] = b"bonghwa-group-id-v1";
/// Prefix of every group topic, so a topic is recognisably ours but names nothing.
pub const TOPIC_PREFIX: &str = "/bonghwa/group/1/";

/// Why a group key operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupCryptoError {
    /// The OS gave no randomness.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// The plaintext is larger than [`MAX_GROUP_PLAINTEXT`].
    #[error("group message too large to seal: {size} bytes, the limit is {MAX_GROUP_PLAINTEXT}")]
    TooLarge {
        /// Plaintext size in bytes.
        size: usize,
    },
    /// The chain has used all 2^32 iterations, or generations ran out; rotate.
    #[error("sender key exhausted; rotate to a new generation")]
    Exhausted,
    /// The message is further ahead of our chain than [`MAX_SKIPPED_KEYS`].
    #[error("message is {jump} steps ahead of the sender's chain; the limit is {MAX_SKIPPED_KEYS}")]
    TooFarAhead {
        /// Steps between our chain and the message.
        jump: u32,
    },
    /// The message's key was already used (a replay) or dropped as too old.
    #[error("message key already used or expired: a replay, or too old to open")]
    KeyUsed,
    /// We hold no chain of that generation for this sender.
    #[error("no sender key of generation {generation}; wait for the sender's key")]
    UnknownGeneration {
        /// The generation the message named.
        generation: u32,
    },
    /// A distributed key is older than the one we hold.
    #[error("sender key generation {got} is older than the one held ({held})")]
    StaleGeneration {
        /// Generation offered.
        got: u32,
        /// Generation held.
        held: u32,
    },
    /// Decryption failed: tampered, or under another key.
    #[error("group message does not open: tampered, or sealed under another key")]
    Unauthentic,
    /// The padding inside a decrypted message is inconsistent.
    #[error("group message padding is malformed")]
    BadPadding,
    /// The signature does not verify (strictly) under the claimed key.
    #[error("signature does not verify: forged or altered")]
    BadSignature,
    /// A public key is not a valid ed25519 point, or a signature has the wrong length.
    #[error("malformed key or signature: {0}")]
    Malformed(&'static str),
}

/// A group's id: 32 bytes derived from the creator's key and 32 random bytes.
///
/// Deriving it (rather than drawing it outright) lets every member check that the group's
/// founding `Create` op really comes from the creator: no other member can forge a
/// competing `Create` for the same id. It is as unpredictable as 32 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub [u8; 32]);

impl GroupId {
    /// The id of the group `creator` founds with `salt`.
    pub fn derive(creator: &[u8; 32], salt: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(GROUP_ID_DOMAIN)
            .chain_update(creator)
            .chain_update(salt)
            .finalize();
        Self(digest.into())
    }

    /// A fresh id for a group `creator` founds: returns the id and the random salt, which
    /// travels in the `Create` op.
    pub fn generate(creator: &[u8; 32]) -> Result<(Self, [u8; 32]), GroupCryptoError> {
        let salt = random32()?;
        Ok((Self::derive(creator, &salt), salt))
    }

    /// Lower-case hex, the form used in JSON.
    pub fn to_hex(&self) -> String {
        crate::model::hex32(&self.0)
    }

    /// Parses the hex form; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        crate::model::parse_hex32(text).map(Self)
    }
}

impl std::fmt::Debug for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupId({})", &self.to_hex()[..12])
    }
}

/// The gossipsub topic of a group: a domain-separated SHA-256 of the id, in hex. It names
/// neither the group nor its id, so the mesh learns only "some Bonghwa group".
pub fn topic_for(group: &GroupId) -> String {
    let digest = Sha256::new()
        .chain_update(TOPIC_DOMAIN)
        .chain_update(group.0)
        .finalize();
    format!("{TOPIC_PREFIX}{}", data_encoding::HEXLOWER.encode(&digest))
}

/// The ed25519 signing key behind an [`Identity`], for signing group envelopes and
/// membership ops. (The identity keeps its key private; the libp2p keypair is the same key.)
pub fn signing_key_of(identity: &Identity) -> Result<SigningKey, GroupCryptoError> {
    let keypair = identity
        .libp2p_keypair()
        .try_into_ed25519()
        .map_err(|_| GroupCryptoError::Malformed("identity is not an ed25519 key"))?;
    let secret: [u8; 32] = keypair
        .secret()
        .as_ref()
        .try_into()
        .map_err(|_| GroupCryptoError::Malformed("identity secret has the wrong length"))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// Signs `message` under `domain` (so a group signature can never pass for another kind).
pub fn sign(key: &SigningKey, domain: &[u8], message: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(domain.len() + message.len());
    bytes.extend_from_slice(domain);
    bytes.extend_from_slice(message);
    key.sign(&bytes).to_bytes().to_vec()
}

/// Checks a signature from [`sign`] with `verify_strict` (no malleable or small-order keys).
pub fn verify(
    identity: &[u8; 32],
    domain: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), GroupCryptoError> {
    let key = VerifyingKey::from_bytes(identity)
        .map_err(|_| GroupCryptoError::Malformed("identity key is not a valid point"))?;
    let signature = Signature::from_slice(signature)
        .map_err(|_| GroupCryptoError::Malformed("signature has the wrong length"))?;
    let mut bytes = Vec::with_capacity(domain.len() + message.len());
    bytes.extend_from_slice(domain);
    bytes.extend_from_slice(message);
    key.verify_strict(&bytes, &signature)
        .map_err(|_| GroupCryptoError::BadSignature)
}

fn random32() -> Result<[u8; 32], GroupCryptoError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| GroupCryptoError::Random(e.to_string()))?;
    Ok(bytes)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; keep the function total anyway.
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0u8; 32],
    }
}

/// One step of the chain: (message key, next chain key).
fn step(chain_key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (hmac(chain_key, &[0x01]), hmac(chain_key, &[0x02]))
}

/// Where a message sits in its sender's chains; bound into the AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position<'a> {
    /// The group the message belongs to.
    pub group: &'a GroupId,
    /// The sender's ed25519 identity key.
    pub sender: &'a [u8; 32],
    /// The sender key's generation.
    pub generation: u32,
    /// The step of the chain that produced the message key.
    pub iteration: u32,
}

impl Position<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 72);
        aad.extend_from_slice(AAD_DOMAIN);
        aad.extend_from_slice(&self.group.0);
        aad.extend_from_slice(self.sender);
        aad.extend_from_slice(&self.generation.to_be_bytes());
        aad.extend_from_slice(&self.iteration.to_be_bytes());
        aad
    }
}

fn cipher(message_key: &[u8; 32]) -> (ChaCha20Poly1305, [u8; 12]) {
    let key = hmac(message_key, KEY_LABEL);
    let nonce_bytes = hmac(message_key, NONCE_LABEL);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&nonce_bytes[..12]);
    (ChaCha20Poly1305::new(Key::from_slice(&key)), nonce)
}

fn pad(plaintext: &[u8]) -> Result<Vec<u8>, GroupCryptoError> {
    let size = plaintext.len();
    let bucket = GROUP_PAD_BUCKETS
        .iter()
        .copied()
        .find(|bucket| size + LEN_PREFIX <= *bucket)
        .ok_or(GroupCryptoError::TooLarge { size })?;
    let len = u32::try_from(size).map_err(|_| GroupCryptoError::TooLarge { size })?;
    let mut out = Vec::with_capacity(bucket);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(plaintext);
    out.resize(bucket, 0);
    Ok(out)
}

fn unpad(mut padded: Vec<u8>) -> Result<Vec<u8>, GroupCryptoError> {
    if !GROUP_PAD_BUCKETS.contains(&padded.len()) {
        return Err(GroupCryptoError::BadPadding);
    }
    let mut len = [0u8; LEN_PREFIX];
    len.copy_from_slice(&padded[..LEN_PREFIX]);
    let len = u32::from_be_bytes(len) as usize;
    if len > padded.len() - LEN_PREFIX {
        return Err(GroupCryptoError::BadPadding);
    }
    padded.truncate(LEN_PREFIX + len);
    padded.drain(..LEN_PREFIX);
    Ok(padded)
}

fn seal_with(
    message_key: &[u8; 32],
    position: &Position<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, GroupCryptoError> {
    let padded = pad(plaintext)?;
    let (cipher, nonce) = cipher(message_key);
    cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &padded,
                aad: &position.aad(),
            },
        )
        .map_err(|_| GroupCryptoError::TooLarge { size: padded.len() })
}

fn open_with(
    message_key: &[u8; 32],
    position: &Position<'_>,
    ciphertext: &[u8],
) -> Result<Vec<u8>, GroupCryptoError> {
    if ciphertext.len() > MAX_GROUP_CIPHERTEXT {
        return Err(GroupCryptoError::Unauthentic);
    }
    let (cipher, nonce) = cipher(message_key);
    let padded = cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: ciphertext,
                aad: &position.aad(),
            },
        )
        .map_err(|_| GroupCryptoError::Unauthentic)?;
    unpad(padded)
}

/// What a member shares so others can read its messages from now on: the chain key at
/// `iteration` of `generation`. It rides in a `SenderKeyDistribution` over the pairwise
/// channel, never over gossip.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    /// Which chain: bumped on every rotation.
    pub generation: u32,
    /// The step `chain_key` belongs to: the next message uses this iteration.
    pub iteration: u32,
    /// The chain key at that step.
    pub chain_key: [u8; 32],
}

impl std::fmt::Debug for ChainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainState")
            .field("generation", &self.generation)
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}

/// Our own sending chain in one group.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderKey {
    state: ChainState,
}

impl std::fmt::Debug for SenderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKey")
            .field("state", &self.state)
            .finish()
    }
}

/// A sealed group message: where it sits in the chain and its ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The sender key's generation.
    pub generation: u32,
    /// The chain step used.
    pub iteration: u32,
    /// ChaCha20-Poly1305 ciphertext of the padded plaintext.
    pub ciphertext: Vec<u8>,
}

impl SenderKey {
    /// A fresh chain of generation 0, from the OS's randomness.
    pub fn generate() -> Result<Self, GroupCryptoError> {
        Ok(Self::from_state(ChainState {
            generation: 0,
            iteration: 0,
            chain_key: random32()?,
        }))
    }

    /// Restores a chain (e.g. from the store).
    pub fn from_state(state: ChainState) -> Self {
        Self { state }
    }

    /// A fresh random chain of the next generation: what we switch to when a member leaves.
    pub fn rotate(&self) -> Result<Self, GroupCryptoError> {
        let generation = self
            .state
            .generation
            .checked_add(1)
            .ok_or(GroupCryptoError::Exhausted)?;
        Ok(Self::from_state(ChainState {
            generation,
            iteration: 0,
            chain_key: random32()?,
        }))
    }

    /// The current state: what to persist, and what to distribute to members (they can
    /// read from this iteration on, never before).
    pub fn state(&self) -> &ChainState {
        &self.state
    }

    /// Encrypts the next message and advances the chain. The message key is gone after.
    pub fn encrypt(
        &mut self,
        group: &GroupId,
        sender: &[u8; 32],
        plaintext: &[u8],
    ) -> Result<Sealed, GroupCryptoError> {
        let iteration = self.state.iteration;
        let next_iteration = iteration
            .checked_add(1)
            .ok_or(GroupCryptoError::Exhausted)?;
        let (message_key, next_chain) = step(&self.state.chain_key);
        let position = Position {
            group,
            sender,
            generation: self.state.generation,
            iteration,
        };
        let ciphertext = seal_with(&message_key, &position, plaintext)?;
        self.state.chain_key = next_chain;
        self.state.iteration = next_iteration;
        Ok(Sealed {
            generation: self.state.generation,
            iteration,
            ciphertext,
        })
    }
}

/// One generation of a sender's chain as a receiver holds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Chain {
    generation: u32,
    /// The next iteration we can derive.
    iteration: u32,
    chain_key: [u8; 32],
    /// Keys of steps we passed without seeing their message, by iteration.
    skipped: std::collections::BTreeMap<u32, [u8; 32]>,
}

impl Chain {
    fn from_state(state: &ChainState) -> Self {
        Self {
            generation: state.generation,
            iteration: state.iteration,
            chain_key: state.chain_key,
            skipped: std::collections::BTreeMap::new(),
        }
    }

    /// Opens a message of this generation. Nothing changes unless it opens, so a forged
    /// or corrupt message cannot burn keys or move the chain.
    fn open(
        &mut self,
        position: &Position<'_>,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, GroupCryptoError> {
        let target = position.iteration;
        if target < self.iteration {
            let key = self.skipped.get(&target).ok_or(GroupCryptoError::KeyUsed)?;
            let plaintext = open_with(key, position, ciphertext)?;
            self.skipped.remove(&target);
            return Ok(plaintext);
        }
        let jump = target - self.iteration;
        if jump as usize > MAX_SKIPPED_KEYS {
            return Err(GroupCryptoError::TooFarAhead { jump });
        }
        let next_iteration = target.checked_add(1).ok_or(GroupCryptoError::Exhausted)?;
        let mut chain_key = self.chain_key;
        let mut passed = Vec::with_capacity(jump as usize);
        for iteration in self.iteration..target {
            let (message_key, next) = step(&chain_key);
            passed.push((iteration, message_key));
            chain_key = next;
        }
        let (message_key, next) = step(&chain_key);
        let plaintext = open_with(&message_key, position, ciphertext)?;
        self.skipped.extend(passed);
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            // The oldest skipped messages are the least likely to still arrive.
            self.skipped.pop_first();
        }
        self.chain_key = next;
        self.iteration = next_iteration;
        Ok(plaintext)
    }
}

/// Another member's sending chain as we hold it: the current generation, plus the previous
/// one so messages sent just before a rotation still open. Older generations are dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverChain {
    current: Chain,
    previous: Option<Chain>,
}

impl std::fmt::Debug for ReceiverChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverChain")
            .field("generation", &self.current.generation)
            .field("iteration", &self.current.iteration)
            .field("skipped", &self.current.skipped.len())
            .field("previous", &self.previous.as_ref().map(|c| c.generation))
            .finish()
    }
}

impl ReceiverChain {
    /// Starts from a distributed chain state.
    pub fn new(state: &ChainState) -> Self {
        Self {
            current: Chain::from_state(state),
            previous: None,
        }
    }

    /// The generation we read now.
    pub fn generation(&self) -> u32 {
        self.current.generation
    }

    /// How many skipped keys are held, over both generations (for tests and metrics).
    pub fn skipped_keys(&self) -> usize {
        self.current.skipped.len() + self.previous.as_ref().map_or(0, |c| c.skipped.len())
    }

    /// Takes a newly distributed state. A newer generation becomes current and the current
    /// one becomes the previous; the same generation re-sent is ignored unless it is
    /// behind what we hold (a re-sent key never rewinds the chain, so it cannot reopen
    /// used keys); an older generation arriving late becomes the previous one if it is
    /// newer than the previous we hold, and is refused otherwise.
    pub fn install(&mut self, state: &ChainState) -> Result<(), GroupCryptoError> {
        let held = self.current.generation;
        if state.generation > held {
            let old = std::mem::replace(&mut self.current, Chain::from_state(state));
            self.previous = Some(old);
            return Ok(());
        }
        if state.generation == held {
            return Ok(());
        }
        // An older generation that arrives late (keys items reordered across a partition,
        // or fetched by sync in any order) becomes the previous one if it is newer than
        // what we keep there: messages sent under it still open.
        match &self.previous {
            Some(previous) if previous.generation >= state.generation => {
                Err(GroupCryptoError::StaleGeneration {
                    got: state.generation,
                    held,
                })
            }
            _ => {
                self.previous = Some(Chain::from_state(state));
                Ok(())
            }
        }
    }

    /// Opens a message at `position` (whose sender must be the one this chain belongs to).
    pub fn decrypt(
        &mut self,
        position: &Position<'_>,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, GroupCryptoError> {
        if position.generation == self.current.generation {
            return self.current.open(position, ciphertext);
        }
        match &mut self.previous {
            Some(previous) if previous.generation == position.generation => {
                previous.open(position, ciphertext)
            }
            _ => Err(GroupCryptoError::UnknownGeneration {
                generation: position.generation,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
