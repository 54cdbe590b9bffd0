//! What a group invite carries, and how a newcomer reads one: pure functions over encoded
//! log items.

use crate::crypto::group::GroupId;
use crate::proto::group::session::is_founding;
use crate::wire;
use crate::wire::group::{LogBody, LogItem};

/// What an invite carries, chosen from the log's items (oldest first) within `budget`
/// bytes (each item costs its length and 4) and [`wire::MAX_INVITE_ITEMS`] items: every op,
/// without which the newcomer cannot tell who is in (if they alone do not fit, `Err` with
/// their size), then the key items that hold a copy for `invitee` (keys sealed to others
/// are of no use to it), then cards, as many as fit. What is left out comes by sync once
/// the newcomer is in (members answer sync to a member).
pub fn invite_items(
    log: impl IntoIterator<Item = Vec<u8>>,
    invitee: &[u8; 32],
    budget: usize,
) -> Result<Vec<Vec<u8>>, usize> {
    let (mut ops, mut keys, mut cards) = (Vec::new(), Vec::new(), Vec::new());
    for bytes in log {
        match LogItem::decode(&bytes).map(|i| i.body) {
            Ok(LogBody::Op(_)) => ops.push(bytes),
            Ok(LogBody::Keys(sealed)) if sealed.iter().any(|(to, _)| to == invitee) => {
                keys.push(bytes);
            }
            Ok(LogBody::Card(_)) => cards.push(bytes),
            _ => {}
        }
    }
    pack_invite(ops, keys, cards, budget)
}

/// The packing rule of [`invite_items`] over items already sorted by kind.
fn pack_invite(
    ops: Vec<Vec<u8>>,
    keys: Vec<Vec<u8>>,
    cards: Vec<Vec<u8>>,
    budget: usize,
) -> Result<Vec<Vec<u8>>, usize> {
    let cost = |item: &Vec<u8>| item.len() + 4;
    let ops_size: usize = ops.iter().map(cost).sum();
    if ops.len() > wire::MAX_INVITE_ITEMS || ops_size > budget {
        return Err(ops_size);
    }
    let mut size = ops_size;
    let mut items = ops;
    for item in keys.into_iter().chain(cards) {
        if items.len() >= wire::MAX_INVITE_ITEMS {
            break;
        }
        if size + cost(&item) <= budget {
            size += cost(&item);
            items.push(item);
        }
    }
    Ok(items)
}

/// An item as it came (its encoding) and decoded.
pub type Decoded<'a> = (&'a [u8], LogItem);

/// An invite's items decoded (each signature checked once), ops first so that the rest is
/// judged against the right membership, with the group named by its founding op. `None`
/// if the invite has no founding op.
pub fn read_invite(items: &[Vec<u8>]) -> Option<(GroupId, Vec<Decoded<'_>>)> {
    let decoded: Vec<(&[u8], LogItem)> = items
        .iter()
        .filter_map(|b| LogItem::decode(b).ok().map(|i| (b.as_slice(), i)))
        .collect();
    let id = decoded
        .iter()
        .find(|(_, i)| is_founding(&i.body))
        .map(|(_, i)| i.group_id)?;
    let (mut ordered, rest): (Vec<_>, Vec<_>) = decoded
        .into_iter()
        .filter(|(_, i)| i.group_id == id)
        .partition(|(_, i)| matches!(i.body, LogBody::Op(_)));
    ordered.extend(rest);
    Some((id, ordered))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(count: usize, len: usize, tag: u8) -> Vec<Vec<u8>> {
        (0..count).map(|_| vec![tag; len]).collect()
    }

    #[test]
    fn an_invite_keeps_every_op_and_fills_up_with_keys_then_cards() {
        // Room for 10 items of 96 bytes (+4 each).
        let packed = pack_invite(items(4, 96, 1), items(3, 96, 2), items(8, 96, 3), 1_000);
        let packed = packed.expect("the ops fit");
        let count = |tag: u8| packed.iter().filter(|i| i[0] == tag).count();
        assert_eq!((count(1), count(2), count(3)), (4, 3, 3));
        // Everything fits: everything goes.
        let all = pack_invite(items(2, 10, 1), items(2, 10, 2), items(2, 10, 3), 1_000);
        assert_eq!(all.map(|i| i.len()), Ok(6));
    }

    #[test]
    fn an_invite_whose_ops_do_not_fit_is_refused_with_their_size() {
        assert_eq!(
            pack_invite(items(11, 96, 1), Vec::new(), Vec::new(), 1_000),
            Err(1_100)
        );
        let too_many = items(wire::MAX_INVITE_ITEMS + 1, 1, 1);
        assert!(pack_invite(too_many, Vec::new(), Vec::new(), usize::MAX).is_err());
    }
}
