//! Data dirs written by earlier versions open unchanged: what the user saw is still there.

use std::path::{Path, PathBuf};

use bonghwa_core::node::{ChatKind, MessageInfo};
use bonghwa_core::store::{SledConfig, SledStore, Store};
use bonghwa_core::wire::Body;
use bonghwa_core::{Config, Multiaddr, Node, PeerId};

/// Alice's data dir as commit 64d933a wrote it (see its README).
fn fixture_v1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/datadir-v1/alice")
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The port Alice's `/ip4/127.0.0.1/tcp/0` got when the fixture was made.
const FIXTURE_PORT: u16 = 43891;
/// The port Bob listened on then, which Alice remembered.
const BOB_PORT: u16 = 36973;

/// (text, status) of each message, oldest first.
fn view(messages: &[MessageInfo]) -> Vec<(&str, &str)> {
    messages
        .iter()
        .map(|m| (m.text.as_str(), m.status.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadir_v1_opens_unchanged() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("alice");
    copy_dir(&fixture_v1(), &dir)?;
    // What the user does not see but the next run relies on, read through the typed records
    // before the node runs (it rewrites some of them).
    let store = SledStore::open(&dir.join("db"), &SledConfig::default())?;
    let peer_of = |name: &str| -> String {
        let contacts = store.contacts().unwrap_or_default();
        let found = contacts.iter().find(|c| c.card.name == name);
        found.map(|c| c.peer_id.clone()).unwrap_or_default()
    };
    let (bob, carol) = (peer_of("bob"), peer_of("carol"));
    let groups = store.group_ids()?;
    assert_eq!(groups.len(), 1);
    let group_id = groups[0].to_hex();
    let record = store.group_record(&groups[0])?.expect("the group's record");
    assert_eq!(record.cards.len(), 3);
    assert!(record.my_key.is_some());
    let any_port: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    assert_eq!(store.listen_port(&any_port)?, Some(FIXTURE_PORT));
    let bob_addrs: Vec<String> = store
        .peer_addrs(&bob.parse::<PeerId>()?)?
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        bob_addrs,
        [
            format!("/ip4/127.0.0.1/tcp/{BOB_PORT}"),
            format!("/ip4/127.0.0.1/tcp/{BOB_PORT}/p2p/{bob}"),
        ]
    );
    // Carol's invite and message wait for her; only the invite has a control body.
    let outbox = store.outbox()?;
    assert!(outbox.iter().all(|entry| entry.to == carol));
    let mut controls = Vec::new();
    for entry in &outbox {
        controls.push(store.control(&entry.id)?);
    }
    assert_eq!(controls.len(), 2);
    assert_eq!(controls.iter().flatten().count(), 1);
    assert!(
        controls
            .iter()
            .flatten()
            .all(|body| matches!(body, Body::GroupInvite(_)))
    );
    drop(store);

    let mut config = Config::new(&dir);
    // No name in the config: the one on disk must show.
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    let alice = Node::start(config).await?;

    assert_eq!(alice.identity().await?.name, "alice");
    let contacts = alice.contacts().await?;
    let names: Vec<&str> = contacts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let id_of = |name: &str| {
        contacts
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.peer_id.clone())
            .unwrap_or_else(|| panic!("{name} is not among the contacts {names:?}"))
    };
    assert_eq!((id_of("bob"), id_of("carol")), (bob.clone(), carol.clone()));

    // Most recent activity first, as the chat list shows them.
    let chats = alice.chats().await?;
    let list: Vec<(&str, &str, bool, u32)> = chats
        .iter()
        .map(|c| {
            let kind = match c.kind {
                ChatKind::Direct => "direct",
                ChatKind::Group => "group",
            };
            (c.name.as_str(), kind, c.request, c.unread)
        })
        .collect();
    assert_eq!(
        list,
        [
            ("hikers", "group", false, 1),
            ("carol", "direct", false, 0),
            ("dave", "direct", true, 1),
            ("bob", "direct", false, 0),
        ]
    );
    assert_eq!(
        view(&alice.messages(&bob, None, None).await?),
        [
            ("hello bob", "delivered"),
            ("hi alice", "delivered"),
            ("lunch on friday?", "delivered"),
        ]
    );
    let dave = &chats[2].id;
    assert_eq!(
        view(&alice.messages(dave, None, None).await?),
        [("hi, I'm dave", "delivered")]
    );
    // Carol was offline: the message waits in the outbox, still pending.
    assert_eq!(
        view(&alice.messages(&carol, None, None).await?),
        [("call me when you are back", "pending")]
    );

    let group = &chats[0].id;
    assert_eq!(*group, group_id);
    let mut members = alice.group_members(group).await?;
    members.sort();
    let mut expected = vec![alice.peer_id().to_string(), bob.clone(), carol.clone()];
    expected.sort();
    assert_eq!(members, expected);
    assert_eq!(
        view(&alice.messages(group, None, None).await?),
        [("trail at nine", "sent"), ("bringing snacks", "delivered")]
    );
    alice.shutdown().await?;

    Ok(())
}
