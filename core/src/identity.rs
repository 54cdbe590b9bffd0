//! Who we are: the ed25519 identity key (also the libp2p identity), the X25519 message key it
//! signs, contact cards and their text form (the contact code), and safety numbers.

use std::fs;
use std::io::Write;
use std::path::Path;

mod addr_record;

pub use addr_record::{AddrRecord, MAX_RECORD_ADDR_BYTES, MAX_RECORD_ADDRS, MAX_RECORD_BYTES};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest display name we accept, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most mailbox relays a card may list.
pub const MAX_RELAYS: usize = 4;
/// Longest relay address a card may carry, in bytes.
pub const MAX_RELAY_BYTES: usize = 256;

const CARD_DOMAIN: &[u8] = b"bonghwa-card-v1";
const PREKEY_DOMAIN: &[u8] = b"bonghwa-prekey-v1";
const CODE_PREFIX: &str = "BH1";
const CHECKSUM_LEN: usize = 4;
const KEY_FILE_VERSION: u8 = 1;
/// An `identity.key` whose secrets are encrypted under a passphrase.
const KEY_FILE_PROTECTED: u8 = 2;
/// Argon2id cost (OWASP's first recommendation: 19 MiB, 2 passes, 1 lane): about a
/// quarter second on a phone, and every guess of an attacker costs the same.
const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2_PASSES: u32 = 2;
const ARGON2_LANES: u32 = 1;

/// Problems with identities, cards and contact codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The code does not start with `BH1`.
    #[error(
        "this is not a Bonghwa contact code (it should start with {CODE_PREFIX}); ask for a fresh code"
    )]
    NotACode,
    /// The code holds characters base32 cannot have.
    #[error("contact code contains characters that cannot appear in a code; check for typos")]
    BadCharacters,
    /// The checksum did not match: mistyped or cut short.
    #[error("contact code has a bad checksum: it was mistyped or cut short; ask for a fresh code")]
    BadChecksum,
    /// The card inside could not be decoded or breaks a limit.
    #[error("contact code is malformed ({0}); ask for a fresh code")]
    Malformed(&'static str),
    /// The card's signature does not verify.
    #[error("contact card signature is invalid: the card was altered or forged")]
    BadSignature,
    /// The name is too long or empty after trimming.
    #[error("names must be 1 to {MAX_NAME_BYTES} bytes of text without control characters")]
    BadName,
    /// The key file could not be read or written.
    #[error("identity key file {path}: {detail}")]
    KeyFile {
        /// Path of the key file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The OS gave no randomness.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// The key file is protected and no passphrase was given.
    #[error(
        "{path} is protected by a passphrase: give it with --passphrase-file FILE or \
         BONGHWA_PASSPHRASE (\"passphrase\" in the C config)"
    )]
    PassphraseNeeded {
        /// Path of the key file.
        path: String,
    },
    /// The passphrase does not open the key file. Nothing was changed.
    #[error("wrong passphrase for {path}; nothing was changed")]
    WrongPassphrase {
        /// Path of the key file.
        path: String,
    },
}

/// The key that encrypts secrets at rest (the identity key file and session state), from
/// the user's passphrase by Argon2id. Records sealed with it are ChaCha20-Poly1305 with a
/// fresh random nonce each.
#[derive(Clone)]
pub struct RestKey([u8; 32]);

impl std::fmt::Debug for RestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestKey(..)")
    }
}

impl Drop for RestKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl RestKey {
    /// Derives the key from `passphrase` and `salt` (Argon2id, the costs above).
    fn derive(passphrase: &str, salt: &[u8; 16]) -> Result<Self, IdentityError> {
        let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, Some(32))
            .map_err(|e| IdentityError::Random(format!("argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), salt, &mut key)
            .map_err(|e| IdentityError::Random(format!("argon2: {e}")))?;
        Ok(Self(key))
    }

    /// Encrypts `plaintext`: nonce ‖ ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, IdentityError> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|e| IdentityError::Random(e.to_string()))?;
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.0.into());
        let sealed = cipher
            .encrypt(&nonce.into(), plaintext)
            .map_err(|_| IdentityError::Random("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    /// Decrypts what [`RestKey::seal`] made; `None` if it was made under another key or
    /// altered.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        if sealed.len() < 12 {
            return None;
        }
        let (nonce, body) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        chacha20poly1305::ChaCha20Poly1305::new(&self.0.into())
            .decrypt(&nonce.into(), body)
            .ok()
    }
}

/// A protected key file: the secrets of [`KeyFile`] sealed under the passphrase's key.
#[derive(Serialize, Deserialize)]
struct ProtectedKeyFile {
    version: u8,
    salt: [u8; 16],
    sealed: Vec<u8>,
}

/// A signed statement "this peer receives messages under this X25519 key, is called this,
/// and keeps mail at these relays". It travels in contact codes and inside every sealed
/// message, so a recipient always has the sender's newest card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactCard {
    /// The ed25519 identity public key; the peer id is derived from it.
    pub identity: [u8; 32],
    /// The X25519 public key that messages to this peer are sealed to.
    pub msg_key: [u8; 32],
    /// Display name chosen by the owner.
    pub name: String,
    /// Multiaddrs of relays that keep mail for the owner (empty until relays exist).
    pub relays: Vec<String>,
    /// When the owner issued this card, in Unix milliseconds; a newer card replaces an older one.
    pub issued_ms: u64,
    /// ed25519 signature by `identity` over the fields above.
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct CardBody<'a> {
    identity: &'a [u8; 32],
    msg_key: &'a [u8; 32],
    name: &'a str,
    relays: &'a [String],
    issued_ms: u64,
}

impl ContactCard {
    /// The relay addresses the card lists that parse as multiaddrs.
    pub fn relay_multiaddrs(&self) -> Vec<libp2p::Multiaddr> {
        self.relays.iter().filter_map(|r| r.parse().ok()).collect()
    }

    fn body_bytes(&self) -> Vec<u8> {
        let body = CardBody {
            identity: &self.identity,
            msg_key: &self.msg_key,
            name: &self.name,
            relays: &self.relays,
            issued_ms: self.issued_ms,
        };
        let mut out = CARD_DOMAIN.to_vec();
        // Serialising plain fields into a Vec cannot fail.
        out.extend(postcard::to_stdvec(&body).unwrap_or_default());
        out
    }

    /// Checks limits and the signature (strictly). A card that passes is safe to store.
    pub fn verify(&self) -> Result<(), IdentityError> {
        check_name(&self.name)?;
        if self.relays.len() > MAX_RELAYS {
            return Err(IdentityError::Malformed("too many relays"));
        }
        if self.relays.iter().any(|r| r.len() > MAX_RELAY_BYTES) {
            return Err(IdentityError::Malformed("relay address too long"));
        }
        let key = VerifyingKey::from_bytes(&self.identity)
            .map_err(|_| IdentityError::Malformed("identity key is not a valid point"))?;
        let sig = Signature::from_slice(&self.signature)
            .map_err(|_| IdentityError::Malformed("signature has the wrong length"))?;
        key.verify_strict(&self.body_bytes(), &sig)
            .map_err(|_| IdentityError::BadSignature)
    }

    /// The peer id derived from the identity key.
    pub fn peer_id(&self) -> Result<PeerId, IdentityError> {
        peer_id_of(&self.identity)
    }

    /// The text form: `BH1` followed by base32 of the card and a checksum.
    pub fn to_code(&self) -> String {
        self.to_code_with(None)
    }

    /// The text form with our signed prekey after the card (so a contact can start a
    /// session while we are offline). Builds before sessions read the card and ignore
    /// the rest, so the code works for them too.
    pub fn to_code_with(&self, prekey: Option<&SignedPrekey>) -> String {
        let mut bytes = postcard::to_stdvec(self).unwrap_or_default();
        if let Some(prekey) = prekey {
            bytes.extend(postcard::to_stdvec(prekey).unwrap_or_default());
        }
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
        format!(
            "{CODE_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes)
        )
    }

    /// Parses and verifies a contact code. Whitespace, dashes and letter case are ignored
    /// so codes survive being read aloud, wrapped or retyped.
    pub fn from_code(code: &str) -> Result<Self, IdentityError> {
        Self::from_code_with_prekey(code).map(|(card, _)| card)
    }

    /// Parses and verifies a contact code and the signed prekey it may carry (checked
    /// against the card's identity key; a prekey that fails is an error, not ignored).
    pub fn from_code_with_prekey(
        code: &str,
    ) -> Result<(Self, Option<SignedPrekey>), IdentityError> {
        let cleaned: String = code
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let body = cleaned
            .strip_prefix(CODE_PREFIX)
            .ok_or(IdentityError::NotACode)?;
        if body.is_empty() {
            return Err(IdentityError::BadChecksum);
        }
        let bytes = match data_encoding::BASE32_NOPAD.decode(body.as_bytes()) {
            Ok(bytes) => bytes,
            Err(e) if matches!(e.kind, data_encoding::DecodeKind::Symbol) => {
                return Err(IdentityError::BadCharacters);
            }
            // A cut-short code usually ends at a length or with bits base32 cannot have.
            Err(_) => return Err(IdentityError::BadChecksum),
        };
        if bytes.len() <= CHECKSUM_LEN {
            return Err(IdentityError::BadChecksum);
        }
        let (card_bytes, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(card_bytes)[..CHECKSUM_LEN] != *sum {
            return Err(IdentityError::BadChecksum);
        }
        let (card, prekey, _) = Self::decode_with_prekey(card_bytes)?;
        Ok((card, prekey))
    }

    /// Decodes a card and the signed prekey that may follow it, checking both signatures;
    /// also returns the bytes after them (a reader decides whether any may follow).
    pub fn decode_with_prekey(
        bytes: &[u8],
    ) -> Result<(Self, Option<SignedPrekey>, &[u8]), IdentityError> {
        let (card, rest): (ContactCard, _) = postcard::take_from_bytes(bytes)
            .map_err(|_| IdentityError::Malformed("card does not decode"))?;
        card.verify()?;
        if rest.is_empty() {
            return Ok((card, None, rest));
        }
        let (prekey, rest): (SignedPrekey, _) = postcard::take_from_bytes(rest)
            .map_err(|_| IdentityError::Malformed("prekey does not decode"))?;
        prekey.verify(&card.identity)?;
        Ok((card, Some(prekey), rest))
    }
}

/// A medium-term X25519 key signed by an identity key: what a contact needs to start a
/// session with us while we are offline (X3DH's signed prekey). It travels after the card
/// in contact codes and inside every message of a session, and is replaced from time to
/// time; the owner keeps the secrets of recent ones so that messages sealed to them open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPrekey {
    /// Names the key among its owner's recent ones; newer keys have larger ids.
    pub id: u32,
    /// The X25519 public key.
    pub key: [u8; 32],
    /// ed25519 signature by the owner's identity key.
    pub signature: Vec<u8>,
}

impl SignedPrekey {
    /// What the signature covers (after [`PREKEY_DOMAIN`]).
    fn signed_bytes(identity: &[u8; 32], id: u32, key: &[u8; 32]) -> Vec<u8> {
        let mut out = identity.to_vec();
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(key);
        out
    }

    /// Checks the signature (strictly) against `identity`.
    pub fn verify(&self, identity: &[u8; 32]) -> Result<(), IdentityError> {
        verify_signature(
            identity,
            PREKEY_DOMAIN,
            &Self::signed_bytes(identity, self.id, &self.key),
            &self.signature,
        )
    }
}

/// Writes `bytes` to `path` (mode 0600) via a temporary file, fsync and rename.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options.open(&tmp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The peer id belonging to an ed25519 public key.
pub fn peer_id_of(identity: &[u8; 32]) -> Result<PeerId, IdentityError> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(identity)
        .map_err(|_| IdentityError::Malformed("identity key is not a valid ed25519 key"))?;
    Ok(libp2p::identity::PublicKey::from(key).to_peer_id())
}

/// Checks an ed25519 signature made with [`Identity::sign`] under `domain`.
pub fn verify_signature(
    identity: &[u8; 32],
    domain: &[u8],
    bytes: &[u8],
    signature: &[u8],
) -> Result<(), IdentityError> {
    let key = VerifyingKey::from_bytes(identity)
        .map_err(|_| IdentityError::Malformed("identity key is not a valid point"))?;
    let sig = Signature::from_slice(signature)
        .map_err(|_| IdentityError::Malformed("signature has the wrong length"))?;
    let mut message = domain.to_vec();
    message.extend_from_slice(bytes);
    key.verify_strict(&message, &sig)
        .map_err(|_| IdentityError::BadSignature)
}

/// Checks a display name: 1–64 bytes, no control characters.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(IdentityError::BadName);
    }
    Ok(())
}

/// Our own secret keys. Loaded from `identity.key` in the data dir, created on first start.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    msg_secret: [u8; 32],
    msg_public: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u8,
    ed25519_secret: [u8; 32],
    x25519_secret: [u8; 32],
    x25519_public: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new identity from 32 bytes of OS randomness (and a fresh X25519 message key).
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; 64];
        getrandom::getrandom(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
        Self::from_random(seed)
    }

    /// The identity made from 64 random bytes the caller drew: the ed25519 key from the
    /// first half, the X25519 message key from the second. A seeded simulator passes its
    /// own; everyone else goes through [`Identity::generate`].
    pub fn from_random(random: [u8; 64]) -> Result<Self, IdentityError> {
        let mut sign_seed = [0u8; 32];
        let mut msg_seed = [0u8; 32];
        sign_seed.copy_from_slice(&random[..32]);
        msg_seed.copy_from_slice(&random[32..]);
        let (msg_secret, msg_public) = crate::crypto::msg_keypair_from(msg_seed)
            .map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&sign_seed),
            msg_secret,
            msg_public,
        })
    }

    /// Loads the identity from `path`, or creates it there (mode 0600) if the file is absent.
    /// A file protected by a passphrase is an error here: use [`Identity::load_or_create_with`].
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        Self::load_or_create_with(path, None).map(|(identity, _)| identity)
    }

    /// Loads (or creates) the identity at `path`. With a passphrase, the file is encrypted
    /// under a key from it (an unprotected file is rewritten protected) and that key is
    /// returned for the rest of the secrets at rest. A protected file without a passphrase,
    /// or with a wrong one, is a clear error and nothing is written.
    pub fn load_or_create_with(
        path: &Path,
        passphrase: Option<&str>,
    ) -> Result<(Self, Option<RestKey>), IdentityError> {
        let err = |detail: String| IdentityError::KeyFile {
            path: path.display().to_string(),
            detail,
        };
        let shown = path.display().to_string();
        let plain = match fs::read(path) {
            Ok(bytes) => match bytes.first() {
                Some(&KEY_FILE_PROTECTED) => {
                    let file: ProtectedKeyFile = postcard::from_bytes(&bytes)
                        .map_err(|_| err("damaged; restore it from a backup".into()))?;
                    let passphrase = passphrase.ok_or(IdentityError::PassphraseNeeded {
                        path: shown.clone(),
                    })?;
                    let key = RestKey::derive(passphrase, &file.salt)?;
                    let inner = key
                        .open(&file.sealed)
                        .ok_or(IdentityError::WrongPassphrase { path: shown })?;
                    let identity = Self::from_key_file(&inner).map_err(err)?;
                    return Ok((identity, Some(key)));
                }
                _ => Some(bytes),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(err(e.to_string())),
        };
        let created = plain.is_none();
        let identity = match plain {
            Some(bytes) => Self::from_key_file(&bytes).map_err(err)?,
            None => Self::generate()?,
        };
        let key = match passphrase {
            Some(passphrase) => {
                let mut salt = [0u8; 16];
                getrandom::getrandom(&mut salt)
                    .map_err(|e| IdentityError::Random(e.to_string()))?;
                let key = RestKey::derive(passphrase, &salt)?;
                let file = ProtectedKeyFile {
                    version: KEY_FILE_PROTECTED,
                    salt,
                    sealed: key
                        .seal(&identity.key_file_bytes().map_err(|e| err(e.to_string()))?)?,
                };
                let bytes = postcard::to_stdvec(&file).map_err(|e| err(e.to_string()))?;
                write_private(path, &bytes).map_err(|e| err(e.to_string()))?;
                Some(key)
            }
            None => {
                if created {
                    identity.write(path).map_err(|e| err(e.to_string()))?;
                }
                None
            }
        };
        Ok((identity, key))
    }

    fn from_key_file(bytes: &[u8]) -> Result<Self, String> {
        let file: KeyFile = postcard::from_bytes(bytes)
            .map_err(|_| "damaged; restore it from a backup".to_owned())?;
        if file.version != KEY_FILE_VERSION {
            return Err(format!("unknown version {}", file.version));
        }
        Ok(Self {
            signing: SigningKey::from_bytes(&file.ed25519_secret),
            msg_secret: file.x25519_secret,
            msg_public: file.x25519_public,
        })
    }

    fn key_file_bytes(&self) -> std::io::Result<Vec<u8>> {
        let file = KeyFile {
            version: KEY_FILE_VERSION,
            ed25519_secret: self.signing.to_bytes(),
            x25519_secret: self.msg_secret,
            x25519_public: self.msg_public,
        };
        postcard::to_stdvec(&file).map_err(std::io::Error::other)
    }

    fn write(&self, path: &Path) -> std::io::Result<()> {
        write_private(path, &self.key_file_bytes()?)
    }

    /// The libp2p keypair (the same ed25519 key).
    pub fn libp2p_keypair(&self) -> libp2p::identity::Keypair {
        let mut secret = self.signing.to_bytes();
        match libp2p::identity::ed25519::SecretKey::try_from_bytes(&mut secret) {
            Ok(sk) => libp2p::identity::Keypair::from(libp2p::identity::ed25519::Keypair::from(sk)),
            // 32 bytes are always a valid ed25519 secret; keep a total function anyway.
            Err(_) => libp2p::identity::Keypair::generate_ed25519(),
        }
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.libp2p_keypair().public().to_peer_id()
    }

    /// The ed25519 public key bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The X25519 secret that opens messages sealed to us.
    pub fn msg_secret(&self) -> &[u8; 32] {
        &self.msg_secret
    }

    /// The X25519 public key others seal to.
    pub fn msg_public(&self) -> &[u8; 32] {
        &self.msg_public
    }

    /// Signs a prekey `key` named `id` with our identity key.
    pub fn sign_prekey(&self, id: u32, key: [u8; 32]) -> SignedPrekey {
        let signed = SignedPrekey::signed_bytes(&self.public_key(), id, &key);
        SignedPrekey {
            id,
            key,
            signature: self.sign(PREKEY_DOMAIN, &signed).to_vec(),
        }
    }

    /// Signs `bytes` under `domain` with our identity key (what sessions use to prove
    /// who started them).
    pub fn sign(&self, domain: &[u8], bytes: &[u8]) -> [u8; 64] {
        let mut message = domain.to_vec();
        message.extend_from_slice(bytes);
        self.signing.sign(&message).to_bytes()
    }

    /// Signs a fresh card with our keys, `name` and `relays`.
    pub fn card(&self, name: &str, relays: Vec<String>, issued_ms: u64) -> ContactCard {
        let mut card = ContactCard {
            identity: self.public_key(),
            msg_key: self.msg_public,
            name: name.to_owned(),
            relays,
            issued_ms,
            signature: Vec::new(),
        };
        card.signature = self.signing.sign(&card.body_bytes()).to_bytes().to_vec();
        card
    }
}

/// The 60-digit number two people compare to verify each other, in 12 groups of 5.
/// It depends only on the two identity keys, not on who computes it.
pub fn safety_number(a: &[u8; 32], b: &[u8; 32]) -> String {
    let mut halves = [fingerprint_digits(a), fingerprint_digits(b)];
    halves.sort();
    let digits = halves.concat();
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// 30 digits from an identity key: 1024 rounds of SHA-256 (so a matching key is costly to
/// grind), then six 5-digit groups from 40-bit chunks.
fn fingerprint_digits(key: &[u8; 32]) -> String {
    let mut hash = Sha256::new()
        .chain_update(b"bonghwa-safety-v1")
        .chain_update(key)
        .finalize();
    for _ in 0..1024 {
        hash = Sha256::new()
            .chain_update(hash)
            .chain_update(key)
            .finalize();
    }
    hash[..30]
        .chunks(5)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::generate().unwrap()
    }

    #[test]
    fn contact_code_round_trips_and_verifies() {
        let id = alice();
        let card = id.card("Alice 앨리스", vec![], 1_700_000_000_000);
        let code = card.to_code();
        assert!(code.starts_with("BH1"));
        let back = ContactCard::from_code(&code).unwrap();
        assert_eq!(back, card);
        assert_eq!(back.peer_id().unwrap(), id.peer_id());
        // Lower case, spaces and line breaks are tolerated.
        let messy = code.to_lowercase().replace("bh1", "bh1 ");
        assert_eq!(ContactCard::from_code(&messy).unwrap(), card);
    }

    #[test]
    fn mistyped_code_is_refused_with_checksum_message() {
        let code = alice().card("Alice", vec![], 1).to_code();
        let mut chars: Vec<char> = code.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        let err = ContactCard::from_code(&typo).unwrap_err();
        assert!(matches!(err, IdentityError::BadChecksum), "{err}");
        assert!(err.to_string().contains("checksum"));
    }

    #[test]
    fn truncated_code_is_refused() {
        let code = alice().card("Alice", vec![], 1).to_code();
        for cut in [4, 10, code.len() / 2, code.len() - 1] {
            let err = ContactCard::from_code(&code[..cut]).unwrap_err();
            assert!(
                matches!(err, IdentityError::BadChecksum),
                "cut at {cut}: {err}"
            );
        }
        assert!(matches!(
            ContactCard::from_code("hello").unwrap_err(),
            IdentityError::NotACode
        ));
        assert!(matches!(
            ContactCard::from_code("BH1!!!!").unwrap_err(),
            IdentityError::BadCharacters
        ));
    }

    #[test]
    fn forged_card_fails_signature() {
        let mut card = alice().card("Alice", vec![], 1);
        card.name = "Mallory".into();
        assert!(matches!(card.verify(), Err(IdentityError::BadSignature)));
        // Re-encoded with a valid checksum, the code is still refused.
        assert!(matches!(
            ContactCard::from_code(&card.to_code()),
            Err(IdentityError::BadSignature)
        ));
    }

    #[test]
    fn a_code_carries_a_signed_prekey_that_older_readers_skip() {
        let id = alice();
        let card = id.card("Alice", vec![], 5);
        let prekey = id.sign_prekey(3, [7u8; 32]);
        let code = card.to_code_with(Some(&prekey));
        let (back, got) = ContactCard::from_code_with_prekey(&code).unwrap();
        assert_eq!(back, card);
        assert_eq!(got, Some(prekey.clone()));
        // A reader that knows only cards (postcard ignores what follows) gets the card.
        assert_eq!(ContactCard::from_code(&code).unwrap(), card);
        // A prekey signed by someone else is refused.
        let forged = alice().sign_prekey(3, [7u8; 32]);
        assert!(matches!(
            ContactCard::from_code_with_prekey(&card.to_code_with(Some(&forged))),
            Err(IdentityError::BadSignature)
        ));
        assert_eq!(
            ContactCard::from_code_with_prekey(&card.to_code())
                .unwrap()
                .1,
            None
        );
    }

    #[test]
    fn safety_number_is_symmetric_and_distinct() {
        let (a, b, c) = (alice(), alice(), alice());
        let ab = safety_number(&a.public_key(), &b.public_key());
        assert_eq!(ab, safety_number(&b.public_key(), &a.public_key()));
        assert_ne!(ab, safety_number(&a.public_key(), &c.public_key()));
        assert_eq!(ab.split(' ').count(), 12);
        assert!(ab.chars().all(|c| c.is_ascii_digit() || c == ' '));
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let first = Identity::load_or_create(&path).unwrap();
        let again = Identity::load_or_create(&path).unwrap();
        assert_eq!(first.peer_id(), again.peer_id());
        assert_eq!(first.msg_public(), again.msg_public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(&path, b"garbage").unwrap();
        assert!(Identity::load_or_create(&path).is_err());
    }

    #[test]
    fn a_passphrase_protects_the_key_file_and_a_wrong_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let plain = Identity::load_or_create(&path).unwrap();
        let secret = plain.signing.to_bytes();
        // Protecting an existing identity keeps it and rewrites the file.
        let (protected, key) = Identity::load_or_create_with(&path, Some("마늘 garlic 7")).unwrap();
        assert!(key.is_some());
        assert_eq!(protected.peer_id(), plain.peer_id());
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes[0], KEY_FILE_PROTECTED);
        assert!(!bytes.windows(32).any(|w| w == secret));
        // Without it, or with a wrong one: a clear error, and the file is unchanged.
        assert!(matches!(
            Identity::load_or_create(&path),
            Err(IdentityError::PassphraseNeeded { .. })
        ));
        let err = Identity::load_or_create_with(&path, Some("wrong")).unwrap_err();
        assert!(
            matches!(err, IdentityError::WrongPassphrase { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("nothing was changed"));
        assert_eq!(fs::read(&path).unwrap(), bytes);
        let (again, _) = Identity::load_or_create_with(&path, Some("마늘 garlic 7")).unwrap();
        assert_eq!(again.peer_id(), plain.peer_id());
        assert_eq!(again.msg_public(), plain.msg_public());
    }
}
