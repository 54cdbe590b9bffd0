//! The arithmetic under reconciliation: where items fall against bounds, the shortest
//! separating bound, exact encoded sizes (for the byte budget) and 256-bit sums (for
//! fingerprints).

use super::{Bound, FINGERPRINT_LEN, Item, Mode, Range};
use crate::model::MessageId;

/// Whether `item` lies below `bound`.
pub(super) fn below(item: &Item, bound: &Bound) -> bool {
    match bound {
        Bound::End => true,
        Bound::At { hlc, prefix } => match item.hlc.cmp(hlc) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            // Equal prefixes mean the id is at or above `prefix ‖ zeros`.
            std::cmp::Ordering::Equal => item.id.0[..prefix.len()] < prefix[..],
        },
    }
}

/// The shortest bound with `previous` below it and `next` not: the HLC alone if they
/// differ there, else the ids' common prefix plus `next`'s first differing byte.
pub(super) fn separator(previous: &Item, next: &Item) -> Bound {
    if previous.hlc != next.hlc {
        return Bound::At {
            hlc: next.hlc,
            prefix: Vec::new(),
        };
    }
    let common = previous
        .id
        .0
        .iter()
        .zip(next.id.0.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let end = (common + 1).min(32);
    Bound::At {
        hlc: next.hlc,
        prefix: next.id.0[..end].to_vec(),
    }
}

pub(super) fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// Exact postcard length of a bound.
pub(super) fn bound_len(bound: &Bound) -> usize {
    match bound {
        Bound::End => 1,
        Bound::At { hlc, prefix } => {
            1 + varint_len(hlc.ms)
                + varint_len(u64::from(hlc.counter))
                + varint_len(prefix.len() as u64)
                + prefix.len()
        }
    }
}

/// Exact postcard length of a range.
pub(super) fn range_len(range: &Range) -> usize {
    bound_len(&range.upper)
        + match &range.mode {
            Mode::Skip => 1,
            Mode::Fingerprint(_) => 1 + FINGERPRINT_LEN,
            Mode::IdList(ids) => 1 + varint_len(ids.len() as u64) + 32 * ids.len(),
        }
}

pub(super) fn limbs(id: &MessageId) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (limb, chunk) in out.iter_mut().zip(id.0.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        *limb = u64::from_le_bytes(bytes);
    }
    out
}

pub(super) fn add256(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut carry = false;
    for i in 0..4 {
        let (sum, c1) = a[i].overflowing_add(b[i]);
        let (sum, c2) = sum.overflowing_add(u64::from(carry));
        out[i] = sum;
        carry = c1 || c2;
    }
    out
}

pub(super) fn sub256(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (diff, b1) = a[i].overflowing_sub(b[i]);
        let (diff, b2) = diff.overflowing_sub(u64::from(borrow));
        out[i] = diff;
        borrow = b1 || b2;
    }
    out
}
