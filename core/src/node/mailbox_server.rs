//! The relay side of `/bonghwa/mailbox/1`: hold sealed envelopes for offline recipients.
//!
//! The decisions are `proto::mailbox`'s; this file moves bytes between the network and the
//! store. A deposit is persisted and flushed before it is answered `Stored`; a fetch and an
//! ack only ever touch the mail of the connection's authenticated peer id.
//!
//! [`MailboxServer`] answers each request with the response the actor sends back; the
//! actor checks the frame and the peer's request rate first.

use libp2p::PeerId;
use sha2::{Digest, Sha256};

use crate::model::HeldMail;
use crate::proto::mailbox::{Admission, Held, Limits, Mailbox};
use crate::store::{Store, StoreResult};
use crate::wire::{MailboxRequest, MailboxResponse};

/// A relay's mailbox: the bookkeeping in memory, the envelopes in the store.
#[derive(Debug)]
pub(super) struct MailboxServer {
    /// What is held for whom, and the limits deposits are admitted under.
    mailbox: Mailbox,
}

impl MailboxServer {
    /// An empty mailbox with these limits (see [`MailboxServer::restore`]).
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            mailbox: Mailbox::new(limits),
        }
    }

    /// Reads held mail back from `store` at start; drops what expired meanwhile.
    pub(super) fn restore(&mut self, store: &dyn Store, now: u64) -> StoreResult<()> {
        let mut expired = Vec::new();
        for mail in store.mail_all()? {
            let held = Held {
                recipient: mail.recipient,
                seq: mail.seq,
                depositor: mail.depositor,
                size: mail.envelope.len(),
                digest: mail.digest,
                expires_ms: mail.expires_ms,
            };
            expired.extend(self.mailbox.restore(held, now));
        }
        for held in &expired {
            store.mail_remove(&held.recipient, held.seq)?;
        }
        tracing::info!(
            held = self.mailbox.len(),
            bytes = self.mailbox.total_bytes(),
            expired = expired.len(),
            "mailbox restored"
        );
        Ok(())
    }

    /// When the next held mail expires, if any (the actor wakes then).
    pub(super) fn next_expiry(&self) -> Option<u64> {
        self.mailbox.next_expiry()
    }

    /// Drops mail nobody fetched in time.
    pub(super) fn expire(&mut self, store: &dyn Store, now: u64) {
        for held in self.mailbox.expire(now) {
            if let Err(e) = store.mail_remove(&held.recipient, held.seq) {
                tracing::warn!("cannot drop expired mail: {e:#}");
            }
        }
    }

    /// The answer to `peer`'s request.
    pub(super) fn serve(
        &mut self,
        store: &dyn Store,
        peer: PeerId,
        request: MailboxRequest,
        now: u64,
    ) -> MailboxResponse {
        match request {
            MailboxRequest::Deposit {
                recipient,
                envelope,
            } => self.deposit(store, &peer, recipient, envelope, now),
            MailboxRequest::Fetch { after } => self.fetch(store, &peer, after),
            MailboxRequest::Ack { seqs } => {
                let recipient = peer.to_string();
                for seq in seqs {
                    let removed = self.mailbox.remove(&recipient, seq);
                    if removed.is_some()
                        && let Err(e) = store.mail_remove(&recipient, seq)
                    {
                        // Still held on disk: it comes back after a restart and the
                        // recipient drops it as a duplicate.
                        tracing::warn!("cannot drop acked mail: {e:#}");
                    }
                }
                MailboxResponse::Acked
            }
        }
    }

    fn deposit(
        &mut self,
        store: &dyn Store,
        depositor: &PeerId,
        recipient: String,
        envelope: Vec<u8>,
        now: u64,
    ) -> MailboxResponse {
        if recipient.parse::<PeerId>().is_err() {
            return MailboxResponse::Refused(format!("{recipient:?} is not a peer id"));
        }
        let digest: [u8; 32] = Sha256::digest(&envelope).into();
        let held = match self.mailbox.deposit(
            &recipient,
            &depositor.to_string(),
            envelope.len(),
            digest,
            now,
        ) {
            Admission::Accept(held) => held,
            Admission::Duplicate { .. } => return MailboxResponse::Stored,
            Admission::Refuse(why) => return MailboxResponse::Refused(why.to_string()),
        };
        let mail = HeldMail {
            recipient: held.recipient.clone(),
            seq: held.seq,
            depositor: held.depositor.clone(),
            digest,
            expires_ms: held.expires_ms,
            envelope,
        };
        // Durable before it is acknowledged.
        match store.mail_put(&mail).and_then(|()| store.flush()) {
            Ok(()) => MailboxResponse::Stored,
            Err(e) => {
                tracing::error!("cannot hold mail: {e:#}");
                let _ = store.mail_remove(&held.recipient, held.seq);
                self.mailbox.remove(&held.recipient, held.seq);
                MailboxResponse::Refused("the relay could not store it; try again later".into())
            }
        }
    }

    fn fetch(&self, store: &dyn Store, recipient: &PeerId, after: Option<u64>) -> MailboxResponse {
        let recipient = recipient.to_string();
        let page = self.mailbox.page(&recipient, after);
        let more = page
            .last()
            .is_some_and(|last| self.mailbox.has_after(&recipient, last.seq));
        let mut mail = Vec::with_capacity(page.len());
        for held in page {
            match store.mail(&recipient, held.seq) {
                Ok(Some(stored)) => mail.push((held.seq, stored.envelope)),
                Ok(None) => tracing::warn!(seq = held.seq, "held mail missing from the store"),
                Err(e) => {
                    tracing::error!("cannot read held mail: {e:#}");
                    return MailboxResponse::Refused(
                        "the relay could not read its mailbox; try again later".into(),
                    );
                }
            }
        }
        MailboxResponse::Page { mail, more }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn fetch(relay: &mut MailboxServer, store: &dyn Store, who: PeerId) -> Vec<(u64, Vec<u8>)> {
        match relay.serve(store, who, MailboxRequest::Fetch { after: None }, 2_000) {
            MailboxResponse::Page { mail, more } => {
                assert!(!more);
                mail
            }
            other => panic!("no page: {other:?}"),
        }
    }

    #[test]
    fn mail_is_held_across_a_restart_until_its_recipient_acks_it() {
        let store = MemoryStore::new();
        let mut relay = MailboxServer::new(Limits::default());
        let (bob, courier) = (PeerId::random(), PeerId::random());
        let deposit = MailboxRequest::Deposit {
            recipient: bob.to_string(),
            envelope: b"sealed".to_vec(),
        };
        assert_eq!(
            relay.serve(&store, courier, deposit.clone(), 1_000),
            MailboxResponse::Stored
        );
        // A retried deposit is answered the same and held once.
        assert_eq!(
            relay.serve(&store, courier, deposit, 1_000),
            MailboxResponse::Stored
        );
        assert_eq!(fetch(&mut relay, &store, courier), Vec::new());
        assert_eq!(fetch(&mut relay, &store, bob), [(0, b"sealed".to_vec())]);

        let mut restarted = MailboxServer::new(Limits::default());
        restarted.restore(&store, 1_500).unwrap();
        assert_eq!(
            fetch(&mut restarted, &store, bob),
            [(0, b"sealed".to_vec())]
        );
        let ack = MailboxRequest::Ack { seqs: vec![0] };
        assert_eq!(
            restarted.serve(&store, bob, ack, 2_000),
            MailboxResponse::Acked
        );
        assert_eq!(fetch(&mut restarted, &store, bob), Vec::new());
        assert!(store.mail_all().unwrap().is_empty());
    }

    #[test]
    fn unfetched_mail_expires_from_memory_and_store() {
        let store = MemoryStore::new();
        let limits = Limits::default();
        let ttl = limits.ttl_ms;
        let mut relay = MailboxServer::new(limits);
        let deposit = MailboxRequest::Deposit {
            recipient: PeerId::random().to_string(),
            envelope: vec![1; 8],
        };
        relay.serve(&store, PeerId::random(), deposit, 1_000);
        assert_eq!(relay.next_expiry(), Some(1_000 + ttl));
        relay.expire(&store, 1_000 + ttl);
        assert_eq!(relay.next_expiry(), None);
        assert!(store.mail_all().unwrap().is_empty());
    }

    #[test]
    fn a_deposit_for_what_is_not_a_peer_id_is_refused() {
        let store = MemoryStore::new();
        let mut relay = MailboxServer::new(Limits::default());
        let deposit = MailboxRequest::Deposit {
            recipient: "bob".into(),
            envelope: vec![1; 8],
        };
        let answer = relay.serve(&store, PeerId::random(), deposit, 1_000);
        assert!(matches!(answer, MailboxResponse::Refused(_)), "{answer:?}");
    }
}
