//! Groups across network shapes built from network namespaces: five hosts in a line (each
//! reaches only its neighbours) and two sites that lose their link for a while.

use std::time::Duration;

use bonghwa_tests::WAIT;
use bonghwa_tests::netns::{self, Chain};
use bonghwa_tests::process::{Launch, RpcProcess};
use serde_json::json;

/// How long a node may take to notice a dead link: a ping every 15 s, answered within
/// 20 s (libp2p-ping's defaults), plus margin for a loaded machine.
const DEAD_LINK: Duration = Duration::from_secs(90);
/// How long after a heal the other side's messages may take: the next sync round (every
/// 30 s) redials, then reconciles; plus margin.
const HEAL: Duration = Duration::from_secs(90);

fn spawn_in(host: &str, name: &str, dir: &std::path::Path) -> anyhow::Result<RpcProcess> {
    let launch = Launch {
        netns: Some(host.to_owned()),
        listen: Some(String::new()),
        ..Launch::default()
    };
    RpcProcess::spawn(&crate::node_bin(), name, dir, &launch)
}

/// `a` and `b` add each other's codes and `a` dials `b` at `b_addr`.
fn pair(a: &mut RpcProcess, b: &mut RpcProcess, b_addr: &str) -> anyhow::Result<()> {
    a.call("contact_add", json!({"code": b.code()}))?;
    b.call("contact_add", json!({"code": a.code()}))?;
    a.call("connect", json!({"addr": b_addr}))?;
    Ok(())
}

fn joined(node: &mut RpcProcess, group: &str) -> anyhow::Result<()> {
    node.wait_event("the invite", |p| {
        p["kind"] == "group_changed" && p["group"] == group
    })?;
    Ok(())
}

fn received(node: &mut RpcProcess, group: &str, text: &str) -> anyhow::Result<()> {
    received_within(node, group, text, WAIT)
}

fn received_within(
    node: &mut RpcProcess,
    group: &str,
    text: &str,
    within: Duration,
) -> anyhow::Result<()> {
    node.wait_event_within(&format!("{text:?} in the group"), within, |p| {
        p["kind"] == "message_received" && p["chat"] == group && p["message"]["text"] == text
    })?;
    Ok(())
}

/// A real partition: every node notices that every node on the other side (`side_of`) is
/// gone (a ping times out and the node closes the connection; TCP alone would hold it for
/// many minutes).
fn wait_split(nodes: &mut [RpcProcess], side_of: impl Fn(usize) -> usize) -> anyhow::Result<()> {
    let ids: Vec<String> = nodes.iter().map(RpcProcess::peer_id).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, far) in ids.iter().enumerate() {
            if side_of(i) != side_of(j) {
                node.wait_event_within(&format!("{far} gone"), DEAD_LINK, |p| {
                    p["kind"] == "peer_disconnected" && p["peer_id"] == *far
                })?;
            }
        }
    }
    Ok(())
}

/// Spawns `names` on `sites` (name i on host `site_of(i)`), each pair contacts and
/// connected.
fn spawn_paired(
    sites: &Chain,
    dir: &std::path::Path,
    names: &[&str],
    site_of: impl Fn(usize) -> usize,
) -> anyhow::Result<Vec<RpcProcess>> {
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        nodes.push(spawn_in(&sites.hosts[site_of(i)], name, &dir.join(name))?);
    }
    for i in 0..nodes.len() {
        for j in (i + 1)..nodes.len() {
            let site = site_of(j);
            let addr = nodes[j].tcp_addr_on(&sites.ip_of(site, site == 0))?;
            let (left, right) = nodes.split_at_mut(j);
            pair(&mut left[i], &mut right[0], &addr)?;
        }
    }
    Ok(nodes)
}

fn history(node: &mut RpcProcess, group: &str) -> anyhow::Result<Vec<(String, String)>> {
    let messages = node.call("messages", json!({"chat": group, "limit": 1000}))?;
    Ok(messages
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["id"].as_str().unwrap_or_default().to_owned(),
                        m["text"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

#[test]
fn five_nodes_in_a_line_reach_each_other_end_to_end() -> anyhow::Result<()> {
    if !netns::available("five_nodes_in_a_line_reach_each_other_end_to_end") {
        return Ok(());
    }
    let chain = Chain::create(5)?;
    let tmp = tempfile::tempdir()?;
    let names = ["ana", "ben", "cho", "dan", "eun"];
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        nodes.push(spawn_in(&chain.hosts[i], name, &tmp.path().join(name))?);
    }
    for i in 0..4 {
        let addr = nodes[i + 1].tcp_addr_on(&chain.ip_of(i + 1, false))?;
        let (left, right) = nodes.split_at_mut(i + 1);
        pair(&mut left[i], &mut right[0], &addr)?;
    }
    // Each member adds its right-hand neighbour: every invite goes one hop.
    let first = nodes[1].peer_id();
    let created = nodes[0].call("group_create", json!({"name": "line", "members": [first]}))?;
    let group = created["group_id"].as_str().unwrap_or_default().to_owned();
    joined(&mut nodes[1], &group)?;
    for i in 1..4 {
        let next = nodes[i + 1].peer_id();
        nodes[i].call("group_add", json!({"group": group, "member": next}))?;
        joined(&mut nodes[i + 1], &group)?;
    }
    // Only neighbours are connected.
    let peers = nodes[0].call("peers", json!({}))?;
    for far in &nodes[2..] {
        assert!(!peers.to_string().contains(&far.peer_id()), "{peers}");
    }

    nodes[0].call("send", json!({"to": group, "text": "from one end"}))?;
    received(&mut nodes[4], &group, "from one end")?;
    nodes[4].call("send", json!({"to": group, "text": "from the other end"}))?;
    received(&mut nodes[0], &group, "from the other end")?;
    for node in &mut nodes[1..4] {
        received(node, &group, "from one end")?;
        received(node, &group, "from the other end")?;
    }
    let reference = history(&mut nodes[0], &group)?;
    for node in &mut nodes[1..] {
        assert_eq!(history(node, &group)?, reference, "{}", node.name);
    }
    Ok(())
}

#[test]
fn a_partitioned_group_converges_after_the_link_comes_back() -> anyhow::Result<()> {
    if !netns::available("a_partitioned_group_converges_after_the_link_comes_back") {
        return Ok(());
    }
    // Site 0: ana, ben. Site 1: cho, dan, eun. One link between the sites.
    let sites = Chain::create(2)?;
    let tmp = tempfile::tempdir()?;
    let names = ["ana", "ben", "cho", "dan", "eun"];
    let mut nodes = spawn_paired(&sites, tmp.path(), &names, |i| usize::from(i >= 2))?;
    let others: Vec<String> = nodes[1..].iter().map(RpcProcess::peer_id).collect();
    let created = nodes[0].call("group_create", json!({"name": "split", "members": others}))?;
    let group = created["group_id"].as_str().unwrap_or_default().to_owned();
    for node in &mut nodes[1..] {
        joined(node, &group)?;
    }
    // Everyone has everyone's key before the split.
    for (i, name) in names.iter().enumerate() {
        let text = format!("hello from {name}");
        nodes[i].call("send", json!({"to": group, "text": text}))?;
        for (j, node) in nodes.iter_mut().enumerate() {
            if i != j {
                received(node, &group, &text)?;
            }
        }
    }

    sites.cut(0)?;
    wait_split(&mut nodes, |i| usize::from(i >= 2))?;
    // Both sides keep chatting among themselves.
    for (i, text) in [
        (0, "ana, split"),
        (1, "ben, split"),
        (2, "cho, split"),
        (4, "eun, split"),
    ] {
        nodes[i].call("send", json!({"to": group, "text": text}))?;
        let side: Vec<usize> = if i < 2 { vec![0, 1] } else { vec![2, 3, 4] };
        for j in side {
            if j != i {
                received(&mut nodes[j], &group, text)?;
            }
        }
    }
    // The split is real: nothing crossed it.
    let ana_saw = history(&mut nodes[0], &group)?;
    assert!(
        !ana_saw
            .iter()
            .any(|(_, t)| t.ends_with(", split") && !t.starts_with("ana") && !t.starts_with("ben")),
        "{ana_saw:?}"
    );
    sites.mend(0)?;
    // After the heal every member gets what the other side said, with nobody asked to
    // connect: members redial fellow members at their next sync round.
    for (j, node) in nodes.iter_mut().enumerate() {
        let missed: &[&str] = if j < 2 {
            &["cho, split", "eun, split"]
        } else {
            &["ana, split", "ben, split"]
        };
        for text in missed {
            received_within(node, &group, text, HEAL)?;
        }
    }
    let reference = history(&mut nodes[0], &group)?;
    assert_eq!(reference.len(), 9, "{reference:?}");
    for node in &mut nodes[1..] {
        assert_eq!(
            history(node, &group)?,
            reference,
            "{}: same messages, same order, once",
            node.name
        );
    }
    Ok(())
}

#[test]
fn a_member_added_during_a_partition_reads_what_the_other_side_said_after_the_add()
-> anyhow::Result<()> {
    if !netns::available(
        "a_member_added_during_a_partition_reads_what_the_other_side_said_after_the_add",
    ) {
        return Ok(());
    }
    // Site 0: ana, cho, dan. Site 1: ben.
    let sites = Chain::create(2)?;
    let tmp = tempfile::tempdir()?;
    let names = ["ana", "ben", "cho", "dan"];
    let side_of = |i: usize| usize::from(i == 1);
    let mut nodes = spawn_paired(&sites, tmp.path(), &names, side_of)?;
    let first = [nodes[1].peer_id(), nodes[2].peer_id()];
    let created = nodes[0].call("group_create", json!({"name": "site", "members": first}))?;
    let group = created["group_id"].as_str().unwrap_or_default().to_owned();
    joined(&mut nodes[1], &group)?;
    joined(&mut nodes[2], &group)?;
    for i in 0..3 {
        let text = format!("hello from {}", names[i]);
        nodes[i].call("send", json!({"to": group, "text": text}))?;
        for j in (0..3).filter(|j| *j != i) {
            received(&mut nodes[j], &group, &text)?;
        }
    }

    sites.cut(0)?;
    wait_split(&mut nodes, side_of)?;
    // Ana adds dan; ben, cut off, cannot know, and keeps talking.
    let dan = nodes[3].peer_id();
    nodes[0].call("group_add", json!({"group": group, "member": dan}))?;
    joined(&mut nodes[3], &group)?;
    nodes[1].call("send", json!({"to": group, "text": "said in the dark"}))?;
    sites.mend(0)?;

    // After the heal ben learns of dan and gives him his key from the first message he
    // sent after dan was added: dan reads it, though ben wrote it before he knew.
    for i in [0, 2, 3] {
        received_within(&mut nodes[i], &group, "said in the dark", HEAL)?;
    }
    // Nothing from before dan was added.
    let dan_saw: Vec<String> = history(&mut nodes[3], &group)?
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(dan_saw, vec!["said in the dark".to_owned()]);
    Ok(())
}
