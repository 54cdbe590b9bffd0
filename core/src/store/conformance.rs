//! One behaviour suite for every [`Store`]: each implementation's test module calls
//! [`conformance_tests!`] with a function that makes an empty store, and gets one test per
//! scenario below. The scenarios are what the node relies on; a store that passes them can
//! replace another.
//!
//! In the scenarios Alice is the local user; Bob and Carol write to her.

use libp2p::{Multiaddr, PeerId};

use crate::crypto::group::GroupId;
use crate::identity::ContactCard;
use crate::model::{
    ChatMeta, Contact, ContactState, GroupRecord, HeldMail, Hlc, MessageId, MessageStatus,
    OutboxEntry, RelayGroupUsage, StoredMessage,
};
use crate::wire::Body;

use super::{Store, StoreError};

/// Expands to one `#[test]` per scenario, each on a store made by `$make`, a closure
/// returning `(store, keep_alive)`; `keep_alive` (a temporary directory, say) lives
/// until the test ends.
macro_rules! conformance_tests {
    ($make:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::store::conformance::conformance_tests!(@tests $make;
                duplicate_insert_changes_nothing,
                messages_are_ordered_by_hlc_then_id,
                paging_walks_back_through_history,
                chats_do_not_leak_into_each_other,
                incoming_messages_raise_unread_until_marked_read,
                last_is_the_newest_message_whatever_the_arrival_order,
                status_only_moves_forward,
                status_change_of_last_message_shows_in_chat_list,
                outbox_entries_are_added_replaced_and_removed,
                mail_is_held_per_recipient_in_seq_order,
                group_logs_dedup_and_list_in_hlc_order,
                contacts_are_added_replaced_and_listed_by_peer_id,
                settings_are_saved_and_replaced,
                name_round_trips_as_raw_utf8,
                group_records_and_list_round_trip_and_are_removed,
                controls_round_trip_and_read_as_gone_when_removed_or_empty,
                listen_ports_round_trip_as_two_big_endian_bytes,
                peer_addrs_round_trip_and_are_removed,
                relay_group_usage_round_trips_and_is_removed,
                damaged_records_are_decode_errors,
                empty_store_has_nothing,
            );
        }
    };
    (@tests $make:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                let (store, _keep_alive) = ($make)();
                $crate::store::conformance::$name(&store);
            }
        )*
    };
}
pub(super) use conformance_tests;

const ALICE: &str = "12D3KooWAlice";
const BOB: &str = "12D3KooWBob";
const CAROL: &str = "12D3KooWCarol";

fn id(n: u8) -> MessageId {
    MessageId([n; 32])
}

fn hlc(ms: u64, counter: u32) -> Hlc {
    Hlc { ms, counter }
}

/// A message from `from` in the direct chat with `peer`; outgoing when Alice wrote it.
fn message(peer: &str, from: &str, n: u8, at: Hlc) -> StoredMessage {
    let outgoing = from == ALICE;
    StoredMessage {
        id: id(n),
        chat: peer.to_owned(),
        from: from.to_owned(),
        text: format!("message {n} from {from}"),
        hlc: at,
        status: if outgoing {
            MessageStatus::Pending
        } else {
            MessageStatus::Delivered
        },
        outgoing,
    }
}

fn contact(peer_id: &str, name: &str) -> Contact {
    Contact {
        peer_id: peer_id.to_owned(),
        card: ContactCard {
            identity: [1; 32],
            msg_key: [2; 32],
            name: name.to_owned(),
            relays: vec!["/ip4/127.0.0.1/tcp/4001".to_owned()],
            issued_ms: 1_700_000_000_000,
            signature: vec![3; 64],
        },
        alias: None,
        verified: false,
        state: ContactState::Accepted,
    }
}

fn ids(messages: &[StoredMessage]) -> Vec<MessageId> {
    messages.iter().map(|message| message.id).collect()
}

fn chat(store: &dyn Store, peer: &str) -> Option<ChatMeta> {
    store
        .chats()
        .unwrap()
        .into_iter()
        .find(|(chat, _)| chat == peer)
        .map(|(_, meta)| meta)
}

pub(super) fn duplicate_insert_changes_nothing(store: &dyn Store) {
    let original = message(BOB, BOB, 1, hlc(100, 0));
    assert!(store.insert_message(&original).unwrap());

    // The same message arrives again by another route, even with other content and time.
    let mut again = message(BOB, BOB, 1, hlc(200, 0));
    again.text = "tampered".to_owned();
    assert!(!store.insert_message(&again).unwrap());
    assert!(!store.insert_message(&original).unwrap());

    assert_eq!(store.message(&id(1)).unwrap(), Some(original.clone()));
    assert_eq!(
        store.messages(BOB, 10, None).unwrap(),
        vec![original.clone()]
    );
    let meta = chat(store, BOB).unwrap();
    assert_eq!(meta.unread, 1, "a duplicate must not count as unread");
    assert_eq!(meta.last, Some(original));
}

pub(super) fn messages_are_ordered_by_hlc_then_id(store: &dyn Store) {
    // Inserted out of order; 3 and 2 share a timestamp, so the id decides.
    for (n, at) in [
        (5, hlc(300, 0)),
        (3, hlc(200, 1)),
        (1, hlc(100, 0)),
        (2, hlc(200, 1)),
        (4, hlc(200, 2)),
        (6, hlc(256, 0)),
    ] {
        assert!(store.insert_message(&message(BOB, BOB, n, at)).unwrap());
    }
    assert_eq!(
        ids(&store.messages(BOB, 100, None).unwrap()),
        vec![id(1), id(2), id(3), id(4), id(6), id(5)]
    );
}

pub(super) fn paging_walks_back_through_history(store: &dyn Store) {
    for n in 1..=10 {
        let from = if n % 2 == 0 { ALICE } else { BOB };
        let at = hlc(1_000 + u64::from(n) * 10, 0);
        assert!(store.insert_message(&message(BOB, from, n, at)).unwrap());
    }

    // Newest page first, each page oldest first, like a chat window scrolling up.
    let page = store.messages(BOB, 4, None).unwrap();
    assert_eq!(ids(&page), vec![id(7), id(8), id(9), id(10)]);
    let page = store
        .messages(BOB, 4, Some((page[0].hlc, page[0].id)))
        .unwrap();
    assert_eq!(ids(&page), vec![id(3), id(4), id(5), id(6)]);
    let page = store
        .messages(BOB, 4, Some((page[0].hlc, page[0].id)))
        .unwrap();
    assert_eq!(ids(&page), vec![id(1), id(2)]);
    let page = store
        .messages(BOB, 4, Some((page[0].hlc, page[0].id)))
        .unwrap();
    assert!(page.is_empty());

    // `before` is strict and compares the id when the HLC ties.
    let eight = store.message(&id(8)).unwrap().unwrap();
    assert_eq!(
        ids(&store.messages(BOB, 2, Some((eight.hlc, eight.id))).unwrap()),
        vec![id(6), id(7)]
    );
    assert_eq!(
        ids(&store.messages(BOB, 2, Some((eight.hlc, id(9)))).unwrap()),
        vec![id(7), id(8)]
    );
    // A bound between messages, or past the newest, works too.
    assert_eq!(
        ids(&store
            .messages(BOB, 1, Some((hlc(1_065, 0), id(0))))
            .unwrap()),
        vec![id(6)]
    );
    assert_eq!(
        ids(&store
            .messages(BOB, 1, Some((hlc(u64::MAX, u32::MAX), id(255))))
            .unwrap()),
        vec![id(10)]
    );
    assert!(store.messages(BOB, 0, None).unwrap().is_empty());
    assert_eq!(store.messages(BOB, usize::MAX, None).unwrap().len(), 10);
}

pub(super) fn chats_do_not_leak_into_each_other(store: &dyn Store) {
    // Chat ids where one is a prefix of another, and one that continues with a 0 byte,
    // must still be separate chats.
    let bob_too = format!("{BOB}2");
    let bob_nul = format!("{BOB}\0x");
    store
        .insert_message(&message(BOB, BOB, 1, hlc(10, 0)))
        .unwrap();
    store
        .insert_message(&message(&bob_too, &bob_too, 2, hlc(20, 0)))
        .unwrap();
    store
        .insert_message(&message(&bob_nul, &bob_nul, 3, hlc(30, 0)))
        .unwrap();
    store
        .insert_message(&message(CAROL, CAROL, 4, hlc(5, 0)))
        .unwrap();
    store
        .insert_message(&message(BOB, ALICE, 5, hlc(40, 0)))
        .unwrap();

    assert_eq!(
        ids(&store.messages(BOB, 10, None).unwrap()),
        vec![id(1), id(5)]
    );
    assert_eq!(
        ids(&store
            .messages(BOB, 10, Some((hlc(u64::MAX, 0), id(0))))
            .unwrap()),
        vec![id(1), id(5)]
    );
    assert_eq!(
        ids(&store.messages(&bob_too, 10, None).unwrap()),
        vec![id(2)]
    );
    assert_eq!(
        ids(&store.messages(&bob_nul, 10, None).unwrap()),
        vec![id(3)]
    );
    assert_eq!(ids(&store.messages(CAROL, 10, None).unwrap()), vec![id(4)]);
    assert!(store.messages("nobody", 10, None).unwrap().is_empty());

    let chats: Vec<String> = store.chats().unwrap().into_iter().map(|(c, _)| c).collect();
    let mut expected = vec![BOB.to_owned(), bob_nul, bob_too, CAROL.to_owned()];
    expected.sort();
    assert_eq!(chats, expected, "chats are listed by id");
}

pub(super) fn incoming_messages_raise_unread_until_marked_read(store: &dyn Store) {
    store
        .insert_message(&message(BOB, BOB, 1, hlc(10, 0)))
        .unwrap();
    store
        .insert_message(&message(BOB, ALICE, 2, hlc(20, 0)))
        .unwrap();
    store
        .insert_message(&message(BOB, BOB, 3, hlc(30, 0)))
        .unwrap();
    store
        .insert_message(&message(CAROL, CAROL, 4, hlc(40, 0)))
        .unwrap();
    assert_eq!(
        chat(store, BOB).unwrap().unread,
        2,
        "Alice's own message is not unread"
    );
    assert_eq!(chat(store, CAROL).unwrap().unread, 1);

    store.mark_read(BOB).unwrap();
    assert_eq!(chat(store, BOB).unwrap().unread, 0);
    assert_eq!(
        chat(store, CAROL).unwrap().unread,
        1,
        "other chats keep their count"
    );

    store
        .insert_message(&message(BOB, BOB, 5, hlc(50, 0)))
        .unwrap();
    assert_eq!(chat(store, BOB).unwrap().unread, 1);

    // Marking a chat without messages read does not invent it.
    store.mark_read("nobody").unwrap();
    assert!(chat(store, "nobody").is_none());
    assert_eq!(store.chats().unwrap().len(), 2);
}

pub(super) fn last_is_the_newest_message_whatever_the_arrival_order(store: &dyn Store) {
    let newest = message(BOB, BOB, 2, hlc(200, 0));
    store.insert_message(&newest).unwrap();
    // An older message arrives late (say, from a mailbox): it does not become the preview.
    store
        .insert_message(&message(BOB, ALICE, 1, hlc(100, 0)))
        .unwrap();
    assert_eq!(chat(store, BOB).unwrap().last, Some(newest));
    // Same HLC, higher id: the id breaks the tie.
    let tie = message(BOB, ALICE, 3, hlc(200, 0));
    store.insert_message(&tie).unwrap();
    assert_eq!(chat(store, BOB).unwrap().last, Some(tie));
    // Same HLC, lower id: stays.
    store
        .insert_message(&message(BOB, BOB, 0, hlc(200, 0)))
        .unwrap();
    assert_eq!(chat(store, BOB).unwrap().last.unwrap().id, id(3));
}

pub(super) fn status_only_moves_forward(store: &dyn Store) {
    use MessageStatus::{Delivered, Failed, Pending, Read, Sent};

    let sent = message(BOB, ALICE, 1, hlc(10, 0));
    store.insert_message(&sent).unwrap();
    // Walk every pair through the store and check it against the model's rule.
    let all = [Pending, Sent, Delivered, Read, Failed];
    for from in all {
        for to in all {
            let mut start = store.message(&id(1)).unwrap().unwrap();
            start.status = from;
            let fresh = MessageId([from as u8 * 8 + to as u8 + 100; 32]);
            start.id = fresh;
            assert!(store.insert_message(&start).unwrap());
            let changed = store.set_status(&fresh, to).unwrap();
            let after = store.message(&fresh).unwrap().unwrap().status;
            if from.can_become(to) {
                assert_eq!(changed.map(|m| m.status), Some(to), "{from:?} -> {to:?}");
                assert_eq!(after, to, "{from:?} -> {to:?} is stored");
            } else {
                assert_eq!(changed, None, "{from:?} -> {to:?} is refused");
                assert_eq!(after, from, "{from:?} -> {to:?} leaves the message alone");
            }
        }
    }

    // A message's life: sent, acked, a late retry's ack changes nothing.
    assert_eq!(
        store.set_status(&id(1), Sent).unwrap().unwrap().status,
        Sent
    );
    assert_eq!(
        store.set_status(&id(1), Delivered).unwrap().unwrap().status,
        Delivered
    );
    assert_eq!(store.set_status(&id(1), Delivered).unwrap(), None);
    assert_eq!(store.set_status(&id(1), Failed).unwrap(), None);
    let read = store.set_status(&id(1), Read).unwrap().unwrap();
    assert_eq!(
        read,
        StoredMessage {
            status: Read,
            ..sent
        }
    );
    assert_eq!(store.message(&id(1)).unwrap(), Some(read));
    // Unknown ids are not an error.
    assert_eq!(store.set_status(&id(99), Read).unwrap(), None);
}

pub(super) fn status_change_of_last_message_shows_in_chat_list(store: &dyn Store) {
    store
        .insert_message(&message(BOB, ALICE, 1, hlc(10, 0)))
        .unwrap();
    store
        .insert_message(&message(BOB, ALICE, 2, hlc(20, 0)))
        .unwrap();

    store.set_status(&id(2), MessageStatus::Sent).unwrap();
    let last = chat(store, BOB).unwrap().last.unwrap();
    assert_eq!((last.id, last.status), (id(2), MessageStatus::Sent));

    // An older message's status does not disturb the preview.
    store.set_status(&id(1), MessageStatus::Failed).unwrap();
    let last = chat(store, BOB).unwrap().last.unwrap();
    assert_eq!((last.id, last.status), (id(2), MessageStatus::Sent));
    assert_eq!(
        store.message(&id(1)).unwrap().unwrap().status,
        MessageStatus::Failed
    );
}

pub(super) fn outbox_entries_are_added_replaced_and_removed(store: &dyn Store) {
    let entry = |n: u8, to: &str, created_ms: u64| OutboxEntry {
        id: id(n),
        to: to.to_owned(),
        created_ms,
        expires_ms: created_ms + 1_000,
    };
    store.outbox_put(&entry(3, BOB, 30)).unwrap();
    store.outbox_put(&entry(1, CAROL, 10)).unwrap();
    store.outbox_put(&entry(2, BOB, 20)).unwrap();
    assert_eq!(
        store.outbox().unwrap(),
        vec![entry(1, CAROL, 10), entry(2, BOB, 20), entry(3, BOB, 30)],
        "listed by id"
    );

    store.outbox_put(&entry(2, BOB, 25)).unwrap();
    store.outbox_remove(&id(1)).unwrap();
    store.outbox_remove(&id(42)).unwrap();
    assert_eq!(
        store.outbox().unwrap(),
        vec![entry(2, BOB, 25), entry(3, BOB, 30)]
    );

    store.outbox_remove(&id(2)).unwrap();
    store.outbox_remove(&id(3)).unwrap();
    assert!(store.outbox().unwrap().is_empty());
}

pub(super) fn mail_is_held_per_recipient_in_seq_order(store: &dyn Store) {
    let mail = |to: &str, seq: u64| HeldMail {
        recipient: to.to_owned(),
        seq,
        depositor: "12D3KooWThrowaway".to_owned(),
        digest: [seq as u8; 32],
        expires_ms: 1_000 + seq,
        envelope: vec![seq as u8; 300],
    };
    // seq 256 sorts after 2 only if the key is big-endian.
    for (to, seq) in [(CAROL, 1), (BOB, 256), (BOB, 2), (ALICE, 7)] {
        store.mail_put(&mail(to, seq)).unwrap();
    }
    assert_eq!(
        store.mail_all().unwrap(),
        vec![mail(ALICE, 7), mail(BOB, 2), mail(BOB, 256), mail(CAROL, 1)]
    );
    assert_eq!(store.mail(BOB, 256).unwrap(), Some(mail(BOB, 256)));
    assert_eq!(store.mail(BOB, 3).unwrap(), None);
    store.mail_remove(BOB, 2).unwrap();
    store.mail_remove(BOB, 99).unwrap();
    assert_eq!(store.mail(BOB, 2).unwrap(), None);
    assert_eq!(store.mail_all().unwrap().len(), 3);
}

pub(super) fn group_logs_dedup_and_list_in_hlc_order(store: &dyn Store) {
    let (g1, g2) = ("a".repeat(64), "b".repeat(64));
    let at = |ms: u64| Hlc { ms, counter: 0 };
    assert!(store.group_item_put(&g1, at(20), &id(1), b"one").unwrap());
    assert!(store.group_item_put(&g1, at(10), &id(2), b"two").unwrap());
    assert!(store.group_item_put(&g2, at(5), &id(3), b"other").unwrap());
    // Same id again (even with another time): nothing changes.
    assert!(!store.group_item_put(&g1, at(1), &id(1), b"forged").unwrap());
    assert_eq!(
        store.group_items(&g1).unwrap(),
        vec![(at(10), id(2)), (at(20), id(1))]
    );
    assert_eq!(
        store.group_item(&g1, &id(1)).unwrap(),
        Some(b"one".to_vec())
    );
    assert_eq!(
        store.group_item(&g1, &id(3)).unwrap(),
        None,
        "another group's"
    );
    assert_eq!(store.group_items(&g2).unwrap(), vec![(at(5), id(3))]);
}

pub(super) fn contacts_are_added_replaced_and_listed_by_peer_id(store: &dyn Store) {
    let carol = contact(CAROL, "Carol");
    let mut bob = contact(BOB, "Bob");
    bob.state = ContactState::Request;
    store.put_contact(&carol).unwrap();
    store.put_contact(&bob).unwrap();
    assert_eq!(store.contact(BOB).unwrap(), Some(bob.clone()));
    assert_eq!(store.contacts().unwrap(), vec![bob.clone(), carol.clone()]);

    // Alice accepts Bob's request and names him.
    bob.state = ContactState::Accepted;
    bob.alias = Some("Bobby".to_owned());
    bob.verified = true;
    store.put_contact(&bob).unwrap();
    assert_eq!(store.contact(BOB).unwrap(), Some(bob.clone()));
    assert_eq!(store.contacts().unwrap(), vec![bob, carol]);
    assert_eq!(store.contact("nobody").unwrap(), None);
}

pub(super) fn settings_are_saved_and_replaced(store: &dyn Store) {
    assert_eq!(store.setting("display_name").unwrap(), None);
    store.set_setting("display_name", b"Alice").unwrap();
    store.set_setting("empty", b"").unwrap();
    assert_eq!(
        store.setting("display_name").unwrap(),
        Some(b"Alice".to_vec())
    );
    assert_eq!(store.setting("empty").unwrap(), Some(Vec::new()));
    store
        .set_setting("display_name", "앨리스".as_bytes())
        .unwrap();
    assert_eq!(
        store.setting("display_name").unwrap(),
        Some("앨리스".as_bytes().to_vec())
    );
}

pub(super) fn empty_store_has_nothing(store: &dyn Store) {
    assert!(store.chats().unwrap().is_empty());
    assert!(store.contacts().unwrap().is_empty());
    assert!(store.outbox().unwrap().is_empty());
    assert!(store.messages(BOB, 10, None).unwrap().is_empty());
    assert_eq!(store.message(&id(1)).unwrap(), None);
    store.flush().unwrap();
}

/// The address a test listens on, with port 0.
fn any_port() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

fn group_record(name: &str) -> GroupRecord {
    GroupRecord {
        ops: Vec::new(),
        my_key: None,
        checkpoints: Vec::new(),
        chains: Vec::new(),
        cards: vec![contact(BOB, name).card],
        shared: vec![[4; 32]],
        unopened: vec![([5; 32], vec![id(6)])],
    }
}

fn is_decode_error<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Decode { .. }))
}

// The raw bytes asserted below are the on-disk format of existing data dirs.

pub(super) fn name_round_trips_as_raw_utf8(store: &dyn Store) {
    assert_eq!(store.name().unwrap(), None);
    store.set_name("앨리스").unwrap();
    assert_eq!(store.name().unwrap().as_deref(), Some("앨리스"));
    assert_eq!(
        store.setting("name").unwrap(),
        Some("앨리스".as_bytes().to_vec())
    );
}

pub(super) fn group_records_and_list_round_trip_and_are_removed(store: &dyn Store) {
    let (hikers, family) = (GroupId([7; 32]), GroupId([9; 32]));
    assert!(store.group_ids().unwrap().is_empty());
    assert!(store.group_record(&hikers).unwrap().is_none());

    store.set_group_ids(&[hikers, family]).unwrap();
    assert_eq!(store.group_ids().unwrap(), [hikers, family]);
    let mut list = vec![2];
    list.extend([7; 32]);
    list.extend([9; 32]);
    assert_eq!(store.setting("groups").unwrap(), Some(list));

    store
        .put_group_record(&hikers, &group_record("bob"))
        .unwrap();
    store
        .put_group_record(&family, &group_record("mum"))
        .unwrap();
    assert!(store.group_record(&hikers).unwrap() == Some(group_record("bob")));
    let key = format!("group/{}", hikers.to_hex());
    assert_eq!(
        store.setting(&key).unwrap(),
        Some(postcard::to_stdvec(&group_record("bob")).unwrap())
    );

    store.remove_group_record(&hikers).unwrap();
    store.remove_group_record(&GroupId([1; 32])).unwrap();
    assert!(store.group_record(&hikers).unwrap().is_none());
    assert!(store.group_record(&family).unwrap() == Some(group_record("mum")));
}

pub(super) fn controls_round_trip_and_read_as_gone_when_removed_or_empty(store: &dyn Store) {
    let invite = Body::GroupInvite(vec![vec![1, 2, 3]]);
    assert_eq!(store.control(&id(1)).unwrap(), None);
    store.put_control(&id(1), &invite).unwrap();
    store
        .put_control(&id(2), &Body::Text("hi".to_owned()))
        .unwrap();
    assert_eq!(store.control(&id(1)).unwrap(), Some(invite.clone()));
    assert_eq!(
        store
            .setting(&format!("control/{}", id(1).to_hex()))
            .unwrap(),
        Some(postcard::to_stdvec(&invite).unwrap())
    );

    store.remove_control(&id(1)).unwrap();
    store.remove_control(&id(9)).unwrap();
    assert_eq!(store.control(&id(1)).unwrap(), None);
    assert_eq!(
        store
            .setting(&format!("control/{}", id(1).to_hex()))
            .unwrap(),
        None
    );
    assert_eq!(
        store.control(&id(2)).unwrap(),
        Some(Body::Text("hi".to_owned()))
    );

    // Data dirs from before removal existed mark a sent control with an empty value.
    store
        .set_setting(&format!("control/{}", id(3).to_hex()), b"")
        .unwrap();
    assert_eq!(store.control(&id(3)).unwrap(), None);
}

pub(super) fn listen_ports_round_trip_as_two_big_endian_bytes(store: &dyn Store) {
    let other: Multiaddr = "/ip6/::1/tcp/0".parse().unwrap();
    assert_eq!(store.listen_port(&any_port()).unwrap(), None);
    store.set_listen_port(&any_port(), 8080).unwrap();
    store.set_listen_port(&other, 9).unwrap();
    assert_eq!(store.listen_port(&any_port()).unwrap(), Some(8080));
    assert_eq!(store.listen_port(&other).unwrap(), Some(9));
    assert_eq!(
        store.setting("port//ip4/127.0.0.1/tcp/0").unwrap(),
        Some(vec![0x1f, 0x90])
    );
    store.set_listen_port(&any_port(), 8081).unwrap();
    assert_eq!(store.listen_port(&any_port()).unwrap(), Some(8081));
}

pub(super) fn peer_addrs_round_trip_and_are_removed(store: &dyn Store) {
    let (bob, carol) = (PeerId::random(), PeerId::random());
    let addrs: Vec<Multiaddr> = vec![
        "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
        "/ip6/::1/udp/4001/quic-v1".parse().unwrap(),
    ];
    assert!(store.peer_addrs(&bob).unwrap().is_empty());
    store.set_peer_addrs(&bob, &addrs).unwrap();
    store.set_peer_addrs(&carol, &addrs[..1]).unwrap();
    assert_eq!(store.peer_addrs(&bob).unwrap(), addrs);
    let text: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    assert_eq!(
        store.setting(&format!("addrs/{bob}")).unwrap(),
        Some(postcard::to_stdvec(&text).unwrap())
    );

    // An address this version cannot parse is left out, not an error.
    let with_unknown = vec!["/ip4/127.0.0.1/tcp/1".to_owned(), "/future/1".to_owned()];
    store
        .set_setting(
            &format!("addrs/{carol}"),
            &postcard::to_stdvec(&with_unknown).unwrap(),
        )
        .unwrap();
    assert_eq!(
        store.peer_addrs(&carol).unwrap(),
        ["/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap()]
    );

    store.remove_peer_addrs(&bob).unwrap();
    store.remove_peer_addrs(&PeerId::random()).unwrap();
    assert!(store.peer_addrs(&bob).unwrap().is_empty());
    assert_eq!(store.peer_addrs(&carol).unwrap().len(), 1);
}

pub(super) fn relay_group_usage_round_trips_and_is_removed(store: &dyn Store) {
    let (hikers, family) = (GroupId([7; 32]), GroupId([9; 32]));
    let usage = RelayGroupUsage {
        items: 3,
        bytes: 1000,
    };
    assert_eq!(store.relay_group_usage(&hikers).unwrap(), None);
    store.set_relay_group_usage(&hikers, usage).unwrap();
    store
        .set_relay_group_usage(&family, RelayGroupUsage::default())
        .unwrap();
    assert_eq!(store.relay_group_usage(&hikers).unwrap(), Some(usage));
    // postcard (u64, u64): two varints.
    assert_eq!(
        store
            .setting(&format!("relay-group-usage/{}", hikers.to_hex()))
            .unwrap(),
        Some(vec![3, 0xe8, 0x07])
    );
    store.remove_relay_group_usage(&hikers).unwrap();
    assert_eq!(store.relay_group_usage(&hikers).unwrap(), None);
    assert_eq!(
        store.relay_group_usage(&family).unwrap(),
        Some(RelayGroupUsage::default())
    );
}

pub(super) fn damaged_records_are_decode_errors(store: &dyn Store) {
    let group = GroupId([7; 32]);
    let peer = PeerId::random();
    store.set_setting("name", &[0xff, 0xfe]).unwrap();
    assert!(is_decode_error(store.name()));
    // A list that announces five groups and holds none.
    store.set_setting("groups", &[5]).unwrap();
    assert!(is_decode_error(store.group_ids()));
    store
        .set_setting(&format!("group/{}", group.to_hex()), &[0xff])
        .unwrap();
    assert!(is_decode_error(
        store.group_record(&group).map(|r| r.is_some())
    ));
    // A body kind no version has.
    store
        .set_setting(&format!("control/{}", id(1).to_hex()), &[200])
        .unwrap();
    assert!(is_decode_error(store.control(&id(1))));
    store
        .set_setting("port//ip4/127.0.0.1/tcp/0", &[1, 2, 3])
        .unwrap();
    assert!(is_decode_error(store.listen_port(&any_port())));
    store.set_setting(&format!("addrs/{peer}"), &[3]).unwrap();
    assert!(is_decode_error(store.peer_addrs(&peer)));
    store
        .set_setting(&format!("relay-group-usage/{}", group.to_hex()), &[0xff])
        .unwrap();
    assert!(is_decode_error(store.relay_group_usage(&group)));
}
