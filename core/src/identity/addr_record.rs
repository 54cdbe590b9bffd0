//! Address records: "peer X can be reached at these addresses", signed by X's identity key.
//! Clients publish theirs in the DHT under a key derived from their peer id; whoever looks
//! a peer up checks the signature (strictly) and the key, so a DHT server cannot point
//! anyone at a wrong address, only withhold one.

use ed25519_dalek::{Signature, Signer, VerifyingKey};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::{Identity, IdentityError, peer_id_of};

/// Addresses one record lists at most.
pub const MAX_RECORD_ADDRS: usize = 12;
/// Longest address in a record, in bytes.
pub const MAX_RECORD_ADDR_BYTES: usize = 256;
/// The largest encoded record accepted.
pub const MAX_RECORD_BYTES: usize = 2_048;

const RECORD_DOMAIN: &[u8] = b"bonghwa-addrs-v1";
const KEY_PREFIX: &[u8] = b"/bonghwa/addrs/";

/// A signed list of where a peer can be reached, as published in the DHT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRecord {
    /// The ed25519 identity key of the peer the addresses belong to.
    pub identity: [u8; 32],
    /// Multiaddrs (direct and relay-circuit), newest knowledge of the owner.
    pub addrs: Vec<String>,
    /// When the owner made the record; a newer one replaces an older one.
    pub issued_ms: u64,
    /// ed25519 signature by `identity` over the fields above.
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct RecordBody<'a> {
    identity: &'a [u8; 32],
    addrs: &'a [String],
    issued_ms: u64,
}

impl AddrRecord {
    fn body_bytes(&self) -> Vec<u8> {
        let body = RecordBody {
            identity: &self.identity,
            addrs: &self.addrs,
            issued_ms: self.issued_ms,
        };
        let mut out = RECORD_DOMAIN.to_vec();
        // Serialising plain fields into a Vec cannot fail.
        out.extend(postcard::to_stdvec(&body).unwrap_or_default());
        out
    }

    /// The DHT key under which `peer`'s record lives.
    pub fn key_for(peer: &PeerId) -> Vec<u8> {
        let mut key = KEY_PREFIX.to_vec();
        key.extend(peer.to_bytes());
        key
    }

    /// Encodes for the DHT.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a record found under `key` and checks everything: size, limits, that the key
    /// is the one for the signer, and the signature. Trailing bytes are refused.
    pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, IdentityError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(IdentityError::Malformed("address record too large"));
        }
        let record: AddrRecord = match postcard::take_from_bytes(bytes) {
            Ok((record, [])) => record,
            _ => return Err(IdentityError::Malformed("address record does not decode")),
        };
        if record.addrs.len() > MAX_RECORD_ADDRS
            || record.addrs.iter().any(|a| a.len() > MAX_RECORD_ADDR_BYTES)
        {
            return Err(IdentityError::Malformed("address record too long"));
        }
        let peer = record.peer_id()?;
        if key != Self::key_for(&peer).as_slice() {
            return Err(IdentityError::Malformed(
                "address record stored under another peer's key",
            ));
        }
        let key = VerifyingKey::from_bytes(&record.identity)
            .map_err(|_| IdentityError::Malformed("identity key is not a valid point"))?;
        let sig = Signature::from_slice(&record.signature)
            .map_err(|_| IdentityError::Malformed("signature has the wrong length"))?;
        key.verify_strict(&record.body_bytes(), &sig)
            .map_err(|_| IdentityError::BadSignature)?;
        Ok(record)
    }

    /// The peer the record is about.
    pub fn peer_id(&self) -> Result<PeerId, IdentityError> {
        peer_id_of(&self.identity)
    }

    /// The addresses that parse, each ending in `/p2p/<peer>` removed or absent.
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.addrs.iter().filter_map(|a| a.parse().ok()).collect()
    }
}

impl Identity {
    /// Our address record: at most [`MAX_RECORD_ADDRS`] addresses, longer ones dropped.
    pub fn addr_record(&self, addrs: &[Multiaddr], issued_ms: u64) -> AddrRecord {
        let addrs = addrs
            .iter()
            .map(ToString::to_string)
            .filter(|a| a.len() <= MAX_RECORD_ADDR_BYTES)
            .take(MAX_RECORD_ADDRS)
            .collect();
        let mut record = AddrRecord {
            identity: self.public_key(),
            addrs,
            issued_ms,
            signature: Vec::new(),
        };
        record.signature = self.signing.sign(&record.body_bytes()).to_bytes().to_vec();
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<Multiaddr> {
        ["/ip4/10.0.0.1/tcp/4001", "/ip4/1.2.3.4/tcp/1/p2p-circuit"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    #[test]
    fn a_record_round_trips_and_checks_its_key_and_signature() {
        let alice = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        let record = alice.addr_record(&addrs(), 7);
        let key = AddrRecord::key_for(&alice.peer_id());
        let back = AddrRecord::decode(&key, &record.encode()).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.multiaddrs(), addrs());

        // Under bob's key: refused.
        let wrong_key = AddrRecord::key_for(&bob.peer_id());
        assert!(AddrRecord::decode(&wrong_key, &record.encode()).is_err());
        // An address swapped in by a DHT server: the signature fails.
        let mut forged = record.clone();
        forged.addrs[0] = "/ip4/6.6.6.6/tcp/1".into();
        assert!(matches!(
            AddrRecord::decode(&key, &forged.encode()),
            Err(IdentityError::BadSignature)
        ));
        // Trailing bytes and garbage: refused.
        let mut long = record.encode();
        long.push(0);
        assert!(AddrRecord::decode(&key, &long).is_err());
        assert!(AddrRecord::decode(&key, &[0xff; 40]).is_err());
        assert!(AddrRecord::decode(&key, &vec![0; MAX_RECORD_BYTES + 1]).is_err());
    }

    #[test]
    fn a_record_keeps_at_most_its_limit_of_addresses() {
        let alice = Identity::generate().unwrap();
        let many: Vec<Multiaddr> = (0..40u16)
            .filter_map(|p| format!("/ip4/10.0.0.1/tcp/{p}").parse().ok())
            .collect();
        let record = alice.addr_record(&many, 1);
        assert_eq!(record.addrs.len(), MAX_RECORD_ADDRS);
        let key = AddrRecord::key_for(&alice.peer_id());
        assert!(AddrRecord::decode(&key, &record.encode()).is_ok());
    }
}
