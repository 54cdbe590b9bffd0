//! A relay's mailbox policy, without I/O: what to accept, what to hand out, what to drop.
//!
//! A mailbox holds sealed envelopes for recipients who are offline. It never sees who wrote
//! an envelope (deposits travel under a throwaway peer id), only the depositing peer id,
//! the recipient and the size. This machine decides admission (size, per-recipient and
//! per-depositor quotas, duplicates), numbers accepted mail per recipient so it is fetched
//! in order, pages it out, and expires it. The relay persists what this machine accepts
//! (and flushes) before it answers the depositor; at start it replays the stored mail
//! through [`Mailbox::restore`].

use std::collections::{BTreeMap, BTreeSet};

/// Limits of one mailbox; [`Limits::default`] suits a small always-on machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest envelope accepted, in bytes.
    pub max_envelope: usize,
    /// Envelopes held for one recipient.
    pub per_recipient_count: usize,
    /// Bytes held for one recipient.
    pub per_recipient_bytes: u64,
    /// Envelopes held from one depositing peer id.
    pub per_depositor_count: usize,
    /// Bytes held from one depositing peer id.
    pub per_depositor_bytes: u64,
    /// Bytes held in total.
    pub total_bytes: u64,
    /// How long mail is kept unfetched, in ms.
    pub ttl_ms: u64,
    /// Envelopes per fetched page.
    pub page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope: 65_536,
            per_recipient_count: 10_000,
            per_recipient_bytes: 64 << 20,
            per_depositor_count: 2_000,
            per_depositor_bytes: 16 << 20,
            total_bytes: 4 << 30,
            ttl_ms: 7 * 24 * 3_600_000,
            page: 64,
        }
    }
}

/// Why a deposit was refused; each says which limit, so the depositor can tell its user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The envelope is empty or larger than the mailbox accepts.
    #[error("envelope of {size} bytes refused: the mailbox accepts 1 to {max} bytes")]
    Size {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The recipient's mailbox is full.
    #[error("the recipient's mailbox is full ({held} envelopes, {bytes} bytes held)")]
    RecipientFull {
        /// Envelopes held for them.
        held: usize,
        /// Bytes held for them.
        bytes: u64,
    },
    /// This depositor has used its share.
    #[error("over this relay's quota for one sender ({held} envelopes, {bytes} bytes held)")]
    DepositorQuota {
        /// Envelopes held from it.
        held: usize,
        /// Bytes held from it.
        bytes: u64,
    },
    /// The relay's disk budget is used up.
    #[error("the relay's mailbox storage is full")]
    RelayFull,
}

/// One held envelope's bookkeeping (the bytes themselves live in the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Recipient peer id.
    pub recipient: String,
    /// Position in the recipient's mailbox; fetches come in this order.
    pub seq: u64,
    /// Depositing peer id (not the author: deposits use a throwaway identity).
    pub depositor: String,
    /// Envelope size in bytes.
    pub size: usize,
    /// A digest of the envelope, so a retried deposit is not held twice.
    pub digest: [u8; 32],
    /// When it is dropped unfetched (Unix ms).
    pub expires_ms: u64,
}

/// What a deposit came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// New mail: persist it under this entry, flush, then answer "stored".
    Accept(Held),
    /// The same envelope is already held (a retry): answer "stored", store nothing.
    Duplicate {
        /// Where it is held.
        seq: u64,
    },
    /// Answer with this refusal; nothing changes.
    Refuse(Refusal),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Usage {
    count: usize,
    bytes: u64,
}

impl Usage {
    fn add(&mut self, size: usize) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(size as u64);
    }

    fn remove(&mut self, size: usize) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size as u64);
    }
}

/// The bookkeeping of every held envelope. Every operation is O(log n).
#[derive(Debug)]
pub struct Mailbox {
    limits: Limits,
    /// (recipient, seq) → entry.
    held: BTreeMap<(String, u64), Held>,
    /// (recipient, digest) → seq: the duplicate check.
    digests: BTreeMap<(String, [u8; 32]), u64>,
    /// (expires, recipient, seq): what to drop when.
    expiries: BTreeSet<(u64, String, u64)>,
    recipients: BTreeMap<String, Usage>,
    depositors: BTreeMap<String, Usage>,
    total_bytes: u64,
    /// Next seq per recipient; never reused, so an ack can't remove newer mail.
    next_seq: BTreeMap<String, u64>,
}

impl Mailbox {
    /// An empty mailbox with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            held: BTreeMap::new(),
            digests: BTreeMap::new(),
            expiries: BTreeSet::new(),
            recipients: BTreeMap::new(),
            depositors: BTreeMap::new(),
            total_bytes: 0,
            next_seq: BTreeMap::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Envelopes held in total.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Bytes held in total.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Decides a deposit. An `Accept` is already counted here: if persisting it fails, the
    /// caller must [`Mailbox::remove`] it again before answering with an error.
    pub fn deposit(
        &mut self,
        recipient: &str,
        depositor: &str,
        size: usize,
        digest: [u8; 32],
        now_ms: u64,
    ) -> Admission {
        if size == 0 || size > self.limits.max_envelope {
            return Admission::Refuse(Refusal::Size {
                size,
                max: self.limits.max_envelope,
            });
        }
        if let Some(seq) = self.digests.get(&(recipient.to_owned(), digest)) {
            return Admission::Duplicate { seq: *seq };
        }
        let to = self.recipients.get(recipient).copied().unwrap_or_default();
        if to.count >= self.limits.per_recipient_count
            || to.bytes.saturating_add(size as u64) > self.limits.per_recipient_bytes
        {
            return Admission::Refuse(Refusal::RecipientFull {
                held: to.count,
                bytes: to.bytes,
            });
        }
        let from = self.depositors.get(depositor).copied().unwrap_or_default();
        if from.count >= self.limits.per_depositor_count
            || from.bytes.saturating_add(size as u64) > self.limits.per_depositor_bytes
        {
            return Admission::Refuse(Refusal::DepositorQuota {
                held: from.count,
                bytes: from.bytes,
            });
        }
        if self.total_bytes.saturating_add(size as u64) > self.limits.total_bytes {
            return Admission::Refuse(Refusal::RelayFull);
        }
        let next = self.next_seq.entry(recipient.to_owned()).or_insert(0);
        let held = Held {
            recipient: recipient.to_owned(),
            seq: *next,
            depositor: depositor.to_owned(),
            size,
            digest,
            expires_ms: now_ms.saturating_add(self.limits.ttl_ms),
        };
        *next += 1;
        self.insert(held.clone());
        Admission::Accept(held)
    }

    /// Re-admits mail read back from the store at start, whatever the limits say now
    /// (it was acknowledged, so it is kept). Mail already expired is returned for removal.
    pub fn restore(&mut self, held: Held, now_ms: u64) -> Option<Held> {
        let next = self.next_seq.entry(held.recipient.clone()).or_insert(0);
        *next = (*next).max(held.seq.saturating_add(1));
        if held.expires_ms <= now_ms {
            return Some(held);
        }
        self.insert(held);
        None
    }

    fn insert(&mut self, held: Held) {
        let key = (held.recipient.clone(), held.seq);
        self.recipients
            .entry(held.recipient.clone())
            .or_default()
            .add(held.size);
        self.depositors
            .entry(held.depositor.clone())
            .or_default()
            .add(held.size);
        self.total_bytes = self.total_bytes.saturating_add(held.size as u64);
        self.digests
            .insert((held.recipient.clone(), held.digest), held.seq);
        self.expiries
            .insert((held.expires_ms, held.recipient.clone(), held.seq));
        self.held.insert(key, held);
    }

    /// The next page of `recipient`'s mail after `after` (exclusive), oldest first. Only
    /// the recipient's own authenticated peer id may be passed here.
    pub fn page(&self, recipient: &str, after: Option<u64>) -> Vec<Held> {
        let start = after.map_or(0, |seq| seq.saturating_add(1));
        self.held
            .range((recipient.to_owned(), start)..)
            .take_while(|((r, _), _)| r == recipient)
            .take(self.limits.page)
            .map(|(_, held)| held.clone())
            .collect()
    }

    /// Whether `recipient` has mail after seq `after` (another page to fetch).
    pub fn has_after(&self, recipient: &str, after: u64) -> bool {
        self.held
            .range((recipient.to_owned(), after.saturating_add(1))..)
            .next()
            .is_some_and(|((r, _), _)| r == recipient)
    }

    /// Drops one envelope (fetched and acked by its recipient, or failed to persist).
    /// Returns it if it was held.
    pub fn remove(&mut self, recipient: &str, seq: u64) -> Option<Held> {
        let held = self.held.remove(&(recipient.to_owned(), seq))?;
        self.digests.remove(&(held.recipient.clone(), held.digest));
        self.expiries
            .remove(&(held.expires_ms, held.recipient.clone(), held.seq));
        forget(&mut self.recipients, &held.recipient, held.size);
        forget(&mut self.depositors, &held.depositor, held.size);
        self.total_bytes = self.total_bytes.saturating_sub(held.size as u64);
        Some(held)
    }

    /// Drops everything expired by `now_ms` and returns it, so the store can delete it.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Held> {
        let mut dropped = Vec::new();
        while let Some((at, recipient, seq)) = self.expiries.first().cloned() {
            if at > now_ms {
                break;
            }
            if let Some(held) = self.remove(&recipient, seq) {
                dropped.push(held);
            } else {
                self.expiries.remove(&(at, recipient, seq));
            }
        }
        dropped
    }

    /// When [`Mailbox::expire`] next has something to do.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _, _)| *at)
    }
}

/// Takes one envelope off a usage table, forgetting keys that reach zero so the table
/// only holds peers with mail.
fn forget(table: &mut BTreeMap<String, Usage>, key: &str, size: usize) {
    if let Some(usage) = table.get_mut(key) {
        usage.remove(size);
        if usage.count == 0 {
            table.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> [u8; 32] {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&n.to_be_bytes());
        d
    }

    fn small() -> Limits {
        Limits {
            max_envelope: 1_000,
            per_recipient_count: 5,
            per_recipient_bytes: 10_000,
            per_depositor_count: 3,
            per_depositor_bytes: 10_000,
            total_bytes: 100_000,
            ttl_ms: 1_000,
            page: 2,
        }
    }

    fn accept(m: &mut Mailbox, to: &str, from: &str, n: u32, now: u64) -> Held {
        match m.deposit(to, from, 100, digest(n), now) {
            Admission::Accept(held) => held,
            other => panic!("expected accept, got {other:?}"),
        }
    }

    #[test]
    fn mail_is_paged_in_order_and_removed_on_ack() {
        let mut m = Mailbox::new(small());
        for n in 0..3 {
            accept(&mut m, "bob", &format!("d{n}"), n, 0);
        }
        accept(&mut m, "carol", "d9", 9, 0);
        let first = m.page("bob", None);
        assert_eq!(first.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![0, 1]);
        let second = m.page("bob", Some(1));
        assert_eq!(second.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![2]);
        assert!(m.page("bob", Some(2)).is_empty());
        assert!(m.has_after("bob", 1) && !m.has_after("bob", 2));
        // Bob sees only his own mail.
        assert!(second.iter().chain(&first).all(|h| h.recipient == "bob"));
        assert!(m.remove("bob", 0).is_some());
        assert!(m.remove("bob", 0).is_none(), "a second ack removes nothing");
        assert_eq!(m.len(), 3);
        assert_eq!(m.total_bytes(), 300);
    }

    #[test]
    fn a_retried_deposit_is_not_held_twice() {
        let mut m = Mailbox::new(small());
        let held = accept(&mut m, "bob", "d", 1, 0);
        assert_eq!(
            m.deposit("bob", "other", 100, digest(1), 5),
            Admission::Duplicate { seq: held.seq }
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn quotas_refuse_clearly_and_change_nothing() {
        let mut m = Mailbox::new(small());
        assert!(matches!(
            m.deposit("bob", "d", 0, digest(0), 0),
            Admission::Refuse(Refusal::Size { .. })
        ));
        assert!(matches!(
            m.deposit("bob", "d", 1_001, digest(0), 0),
            Admission::Refuse(Refusal::Size {
                size: 1_001,
                max: 1_000
            })
        ));
        for n in 0..3 {
            accept(&mut m, "bob", "flooder", n, 0);
        }
        let refused = m.deposit("bob", "flooder", 100, digest(3), 0);
        assert_eq!(
            refused,
            Admission::Refuse(Refusal::DepositorQuota {
                held: 3,
                bytes: 300
            })
        );
        if let Admission::Refuse(r) = refused {
            assert!(r.to_string().contains("quota"), "{r}");
        }
        // Others are still served.
        accept(&mut m, "bob", "friend", 4, 0);
        accept(&mut m, "bob", "friend", 5, 0);
        assert_eq!(
            m.deposit("bob", "third", 100, digest(6), 0),
            Admission::Refuse(Refusal::RecipientFull {
                held: 5,
                bytes: 500
            })
        );
        assert_eq!(m.len(), 5);
        // A fetch frees room again.
        m.remove("bob", 0);
        accept(&mut m, "bob", "third", 6, 0);
    }

    #[test]
    fn unfetched_mail_expires_and_seqs_are_never_reused() {
        let mut m = Mailbox::new(small());
        accept(&mut m, "bob", "d", 1, 0);
        accept(&mut m, "bob", "d", 2, 500);
        assert_eq!(m.next_expiry(), Some(1_000));
        let dropped = m.expire(1_000);
        assert_eq!(dropped.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![0]);
        assert_eq!(m.next_expiry(), Some(1_500));
        m.expire(2_000);
        assert!(m.is_empty());
        assert_eq!(m.total_bytes(), 0);
        assert_eq!(accept(&mut m, "bob", "d", 3, 2_000).seq, 2);
    }

    #[test]
    fn restored_mail_keeps_its_order_and_expired_mail_is_handed_back() {
        let mut m = Mailbox::new(small());
        let a = accept(&mut m, "bob", "d", 1, 0);
        let b = accept(&mut m, "bob", "d", 2, 900);
        let mut again = Mailbox::new(small());
        assert_eq!(again.restore(b.clone(), 1_200), None);
        assert_eq!(again.restore(a.clone(), 1_200), Some(a));
        assert_eq!(again.page("bob", None), vec![b]);
        assert_eq!(accept(&mut again, "bob", "d", 3, 1_200).seq, 2);
    }
}
