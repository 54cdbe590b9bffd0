//! The `bonghwa` binary as a user runs it: `rpc` over stdin/stdout, `id`, `--help`.

use std::process::Command;

use bonghwa_tests::process::{Launch, RpcProcess};
use serde_json::json;

#[test]
fn two_processes_on_loopback_chat_with_connect() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let launch = Launch::default();
    let mut alice = RpcProcess::spawn(&bin, "alice", &tmp.path().join("alice"), &launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &tmp.path().join("bob"), &launch)?;
    let connected = alice.call("connect", json!({"addr": bob.addr()}))?;
    assert_eq!(connected["peer_id"], bob.peer_id().as_str());
    alice.call("contact_add", json!({"code": bob.code()}))?;
    bob.call(
        "contact_add",
        json!({"code": alice.code(), "name": "Alice (work)"}),
    )?;

    let sent = alice.call(
        "send",
        json!({"to": bob.peer_id(), "text": "hello over loopback"}),
    )?;
    let id = sent["id"].as_str().unwrap_or_default().to_owned();
    let got = bob.wait_event("message", |p| p["kind"] == "message_received")?;
    assert_eq!(got["chat"], alice.peer_id().as_str());
    assert_eq!(got["message"]["id"], id.as_str());
    alice.wait_status(&bob.peer_id(), &id, "delivered")?;
    let reply = bob.call("send", json!({"to": alice.peer_id(), "text": "and back"}))?;
    alice.wait_event("reply", |p| {
        p["kind"] == "message_received" && p["message"]["text"] == "and back"
    })?;
    bob.wait_status(
        &alice.peer_id(),
        reply["id"].as_str().unwrap_or_default(),
        "delivered",
    )?;

    let chats = bob.call("chats", json!({}))?;
    assert_eq!(chats[0]["name"], "Alice (work)");
    assert_eq!(chats[0]["kind"], "direct");
    let contacts = alice.call("contacts", json!({}))?;
    assert_eq!(
        contacts,
        json!([{"peer_id": bob.peer_id(), "name": "bob", "online": true, "verified": false}])
    );
    let peers = alice.call("peers", json!({}))?;
    assert_eq!(peers[0]["via"], "direct");

    // `shutdown` answers, flushes and exits 0; EOF on stdin exits 0 as well.
    assert!(alice.shutdown()?.success());
    assert!(bob.close_stdin()?.success());
    Ok(())
}

#[test]
fn bad_requests_get_json_rpc_errors_and_the_server_keeps_serving() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut node = RpcProcess::spawn(
        &crate::node_bin(),
        "alice",
        &tmp.path().join("a"),
        &Launch::default(),
    )?;

    node.write_raw("this is not json")?;
    let parse = node.response(&json!(null))?;
    assert_eq!(parse["error"]["code"], -32700);

    let unknown = node.call_raw("fly", json!({}))?;
    assert_eq!(unknown["error"]["code"], -32601);
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("methods are")
    );

    let missing = node.call_raw("send", json!({"text": "no recipient"}))?;
    assert_eq!(missing["error"]["code"], -32602);
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("to")
    );

    let extra = node.call_raw("identity", json!({"verbose": true}))?;
    assert_eq!(extra["error"]["code"], -32602);

    let bad_code = node.call_raw("contact_add", json!({"code": "BH1TYPO"}))?;
    assert!(
        bad_code["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("checksum")
    );

    node.write_raw(r#"{"jsonrpc":"1.0","id":9,"method":"identity"}"#)?;
    assert_eq!(node.response(&json!(9))?["error"]["code"], -32600);

    // A batch is answered as a batch.
    node.write_raw(r#"[{"jsonrpc":"2.0","id":"a","method":"contacts"},{"jsonrpc":"2.0","id":"b","method":"nope"}]"#)?;
    let batch = node.next_reply()?;
    let answers = batch.as_array().cloned().unwrap_or_default();
    assert_eq!(answers.len(), 2, "{batch}");
    assert!(answers[0]["result"].is_array());
    assert_eq!(answers[1]["error"]["code"], -32601);

    // Still serving after all that.
    let identity = node.call("identity", json!({}))?;
    assert_eq!(identity["name"], "alice");
    assert!(node.shutdown()?.success());
    Ok(())
}

#[test]
fn id_prints_identity_and_help_explains_flags() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let out = Command::new(&bin)
        .args(["--no-mdns", "--name", "Alice"])
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["id", "--json"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let identity: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(identity["name"], "Alice");
    assert!(
        identity["peer_id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("12D3Koo")
    );
    assert!(
        identity["contact_code"]
            .as_str()
            .unwrap_or_default()
            .starts_with("BH1")
    );

    // The same identity on the next start: the key file was kept.
    let again = Command::new(&bin)
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["--no-mdns", "id"])
        .output()?;
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(
        text.contains(identity["peer_id"].as_str().unwrap_or("?")),
        "{text}"
    );
    assert!(text.contains("Alice"), "{text}");

    let help = Command::new(&bin).arg("--help").output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--bootstrap",
        "--no-mdns",
        "--name",
        "rpc",
        "id",
        "BONGHWA_DATA_DIR",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }

    // BONGHWA_DATA_DIR is honoured when --data-dir is absent.
    let env_dir = tmp.path().join("from-env");
    let out = Command::new(&bin)
        .env("BONGHWA_DATA_DIR", &env_dir)
        .args(["--no-mdns", "id", "--json"])
        .output()?;
    assert!(out.status.success());
    assert!(env_dir.join("identity.key").exists());
    Ok(())
}

#[test]
fn damaged_database_gives_a_clear_error_and_is_left_alone() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let dir = tmp.path().join("alice");
    let node = RpcProcess::spawn(&bin, "alice", &dir, &Launch::default())?;
    assert!(node.shutdown()?.success());
    // Damage every file of the database.
    let db = dir.join("db");
    let mut damaged = Vec::new();
    for entry in walk(&db)? {
        std::fs::write(&entry, b"\x00garbage\xff".repeat(64))?;
        damaged.push((entry.clone(), std::fs::read(&entry)?));
    }
    assert!(!damaged.is_empty());
    let out = Command::new(&bin)
        .arg("--data-dir")
        .arg(&dir)
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "rpc"])
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("damaged") || stderr.contains("corrupt"),
        "{stderr}"
    );
    for (path, bytes) in damaged {
        assert_eq!(
            std::fs::read(&path)?,
            bytes,
            "{} was changed",
            path.display()
        );
    }
    Ok(())
}

fn walk(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// A driver that writes many `send`s without waiting (a paste, a mobile shell flushing its
/// queue) gets them stored and shown in the order it wrote them, on both sides.
#[test]
fn pipelined_sends_keep_their_order() -> anyhow::Result<()> {
    const COUNT: usize = 600;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let launch = Launch::default();
    let mut alice = RpcProcess::spawn(&bin, "alice", &tmp.path().join("alice"), &launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &tmp.path().join("bob"), &launch)?;
    alice.call("connect", json!({"addr": bob.addr()}))?;
    alice.call("contact_add", json!({"code": bob.code()}))?;
    bob.call("contact_add", json!({"code": alice.code()}))?;

    for i in 0..COUNT {
        let request = json!({"jsonrpc": "2.0", "id": format!("p{i}"), "method": "send",
            "params": {"to": bob.peer_id(), "text": format!("line {i}")}});
        alice.write_raw(&request.to_string())?;
    }
    bob.count_events("pipelined messages", COUNT, |p| {
        p["kind"] == "message_received"
    })?;
    let expected: Vec<String> = (0..COUNT).map(|i| format!("line {i}")).collect();
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());
    for (who, node, chat) in [("alice", &mut alice, bob_id), ("bob", &mut bob, alice_id)] {
        let history = node.call("messages", json!({"chat": chat, "limit": COUNT}))?;
        let texts: Vec<String> = history
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m["text"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(texts, expected, "{who}'s history is out of order");
    }
    Ok(())
}
