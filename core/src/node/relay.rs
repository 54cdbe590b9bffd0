//! The relay side of `/bonghwa/mailbox/1`: hold sealed envelopes for offline recipients.
//!
//! The decisions are `proto::mailbox`'s; this file moves bytes between the network and the
//! store. A deposit is persisted and flushed before it is answered `Stored`; a fetch and an
//! ack only ever touch the mail of the connection's authenticated peer id.

use libp2p::PeerId;
use libp2p::request_response;
use sha2::{Digest, Sha256};

use super::NodeResult;
use super::actor::Actor;
use super::now_ms;
use crate::model::HeldMail;
use crate::net::MailboxFrame;
use crate::proto::mailbox::{Admission, Held};
use crate::wire::{MailboxRequest, MailboxResponse};

impl Actor {
    /// Reads held mail back into the mailbox at start; drops what expired meanwhile.
    pub(super) fn restore_mailbox(&mut self) -> NodeResult<()> {
        let Some(mailbox) = self.mailbox.as_mut() else {
            return Ok(());
        };
        let now = now_ms();
        let mut expired = Vec::new();
        for mail in self.store.mail_all()? {
            let held = Held {
                recipient: mail.recipient,
                seq: mail.seq,
                depositor: mail.depositor,
                size: mail.envelope.len(),
                digest: mail.digest,
                expires_ms: mail.expires_ms,
            };
            expired.extend(mailbox.restore(held, now));
        }
        for held in &expired {
            self.store.mail_remove(&held.recipient, held.seq)?;
        }
        tracing::info!(
            held = mailbox.len(),
            bytes = mailbox.total_bytes(),
            expired = expired.len(),
            "mailbox restored"
        );
        Ok(())
    }

    /// Drops mail nobody fetched in time.
    pub(super) fn expire_mail(&mut self) {
        let Some(mailbox) = self.mailbox.as_mut() else {
            return;
        };
        for held in mailbox.expire(now_ms()) {
            if let Err(e) = self.store.mail_remove(&held.recipient, held.seq) {
                tracing::warn!("cannot drop expired mail: {e:#}");
            }
        }
    }

    pub(super) fn on_mailbox_event(
        &mut self,
        event: request_response::Event<MailboxFrame, MailboxResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = self.serve_mailbox(peer, request);
                if self
                    .swarm
                    .behaviour_mut()
                    .mailbox
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!(%peer, "mailbox response not delivered: stream closed");
                }
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_mail_response(request_id, Some(response)),
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                tracing::debug!("mailbox request failed: {error}");
                self.on_mail_response(request_id, None);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "mailbox inbound failure: {error}");
            }
            other => tracing::debug!(?other, "mailbox event"),
        }
    }

    fn serve_mailbox(&mut self, peer: PeerId, request: MailboxFrame) -> MailboxResponse {
        let request = match request {
            Ok(request) => request,
            Err(why) => return MailboxResponse::Refused(format!("malformed request: {why}")),
        };
        if self.mailbox.is_none() {
            return MailboxResponse::Refused("this node is not a relay".into());
        }
        if !self.peers.allow(&peer, now_ms()) {
            return MailboxResponse::Refused("too many requests; slow down".into());
        }
        match request {
            MailboxRequest::Deposit {
                recipient,
                envelope,
            } => self.deposit(&peer, recipient, envelope),
            MailboxRequest::Fetch { after } => self.fetch(&peer, after),
            MailboxRequest::Ack { seqs } => {
                let recipient = peer.to_string();
                for seq in seqs {
                    let removed = self
                        .mailbox
                        .as_mut()
                        .and_then(|m| m.remove(&recipient, seq));
                    if removed.is_some()
                        && let Err(e) = self.store.mail_remove(&recipient, seq)
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
        depositor: &PeerId,
        recipient: String,
        envelope: Vec<u8>,
    ) -> MailboxResponse {
        if recipient.parse::<PeerId>().is_err() {
            return MailboxResponse::Refused(format!("{recipient:?} is not a peer id"));
        }
        let digest: [u8; 32] = Sha256::digest(&envelope).into();
        let now = now_ms();
        let Some(mailbox) = self.mailbox.as_mut() else {
            return MailboxResponse::Refused("this node is not a relay".into());
        };
        let held = match mailbox.deposit(
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
        match self.store.mail_put(&mail).and_then(|()| self.store.flush()) {
            Ok(()) => MailboxResponse::Stored,
            Err(e) => {
                tracing::error!("cannot hold mail: {e:#}");
                let _ = self.store.mail_remove(&held.recipient, held.seq);
                if let Some(mailbox) = self.mailbox.as_mut() {
                    mailbox.remove(&held.recipient, held.seq);
                }
                MailboxResponse::Refused("the relay could not store it; try again later".into())
            }
        }
    }

    fn fetch(&mut self, recipient: &PeerId, after: Option<u64>) -> MailboxResponse {
        let recipient = recipient.to_string();
        let Some(mailbox) = self.mailbox.as_ref() else {
            return MailboxResponse::Refused("this node is not a relay".into());
        };
        let page = mailbox.page(&recipient, after);
        let more = page
            .last()
            .is_some_and(|last| mailbox.has_after(&recipient, last.seq));
        let mut mail = Vec::with_capacity(page.len());
        for held in page {
            match self.store.mail(&recipient, held.seq) {
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
