//! End to end: the real `bonghwa` binary in tmux talks to a second node (`bonghwa rpc`).
//!
//! The chat test runs the two on two hosts: network namespaces joined by a veth pair
//! (`netns/mod.rs`), the UI in one (tmux runs `ip netns exec … bonghwa`), the second node
//! in the other, mDNS on as by default. A message typed in the UI must arrive at the other
//! node, and the reply must appear on screen, with our message showing its delivery mark.
//! The SIGTERM test needs no second host: it runs on the host's loopback with mDNS off.
//! Needs tmux, root and iproute2: without them a test is skipped (loudly), or fails when
//! the `CI` variable is set.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers panic on setup failure

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use serde_json::Value;

mod netns;

const BIN: &str = env!("CARGO_BIN_EXE_bonghwa");
const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";
/// Longest wait for any one outcome.
const WAIT: Duration = Duration::from_secs(60);
/// Between two looks at the screen.
const POLL: Duration = Duration::from_millis(100);
/// Most looks at the screen for one outcome.
const MAX_POLLS: usize = 600;
/// Most lines read from the second node while waiting for one outcome.
const MAX_LINES: usize = 10_000;

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips loudly, except in CI, where a missing tool is a failure.
fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("cannot run the end-to-end test in CI: {reason}");
    }
    eprintln!("SKIPPED e2e_tmux: {reason}");
}

/// A private tmux server (its own socket), killed on drop even if the test fails.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(test: &str) -> Self {
        let socket = format!("bonghwa-e2e-{}-{test}", std::process::id());
        Self { socket }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-u"])
            .args(args)
            .env("LANG", "C.UTF-8")
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "ui"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "ui"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success(), "send-keys {keys:?}");
    }

    fn type_text(&self, text: &str) {
        assert!(
            self.run(&["send-keys", "-t", "ui", "-l", text])
                .status
                .success()
        );
    }

    /// `Some(exit status)` once the UI has exited (`signal N` if a signal ended it).
    fn pane_dead(&self) -> Option<String> {
        let out = self.run(&[
            "display-message",
            "-p",
            "-t",
            "ui",
            "#{pane_dead}|#{pane_dead_status}|#{pane_dead_signal}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut parts = text.split('|');
        if parts.next() != Some("1") {
            return None;
        }
        let status = parts.next().unwrap_or_default();
        let signal = parts.next().unwrap_or_default();
        if status.is_empty() && signal.is_empty() {
            // The pty closed but tmux has not reaped the process yet.
            return None;
        }
        Some(if signal.is_empty() {
            status.to_owned()
        } else {
            format!("signal {signal}")
        })
    }

    /// Polls the screen until `done` holds; panics with the last screen after the bound.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut screen = String::new();
        for _ in 0..MAX_POLLS {
            screen = self.screen();
            if done(&screen) {
                return screen;
            }
            if let Some(status) = self.pane_dead() {
                panic!("the UI exited (status {status}) while waiting for {what}:\n{screen}");
            }
            if start.elapsed() > WAIT {
                break;
            }
            std::thread::sleep(POLL);
        }
        panic!("timed out waiting for {what}; the screen was:\n{screen}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// `bonghwa rpc` as the second node; killed on drop.
struct RpcNode {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Value>,
    next_id: u64,
}

impl RpcNode {
    /// Runs `command` (`bonghwa`, or `ip netns exec … bonghwa`) as `bonghwa rpc` for `name`,
    /// listening on `listen`; its log goes to `rpc.log` in its data dir.
    fn start(mut command: Command, data_dir: &Path, name: &str, listen: &str) -> Self {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log = std::fs::File::create(data_dir.join("rpc.log")).expect("log file");
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen, "--name", name, "rpc"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start bonghwa rpc");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            next_id: 1,
        }
    }

    /// The next line matching `want`, skipping others; panics after [`WAIT`] or
    /// [`MAX_LINES`] lines without one.
    fn wait_for(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        // The last few lines seen, for the failure message.
        let mut seen = std::collections::VecDeque::new();
        for _ in 0..MAX_LINES {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(value) if want(&value) => return value,
                Ok(value) => {
                    if seen.len() == 20 {
                        seen.pop_front();
                    }
                    seen.push_back(value);
                }
                Err(e) => panic!("rpc node: no {what} ({e}); last lines: {seen:#?}"),
            }
        }
        panic!("rpc node: no {what} in {MAX_LINES} lines")
    }

    fn call(&mut self, method: &str, params: Value) {
        let request = serde_json::json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        self.next_id += 1;
        writeln!(self.stdin, "{request}").expect("write to rpc node");
        self.stdin.flush().expect("flush");
    }
}

impl Drop for RpcNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the UI for `name` in the tmux session `ui`: `program` is the command line that
/// runs `bonghwa` (the binary, or `ip netns exec … bonghwa`), `flags` the network flags.
/// The pane's shell records its pid and, when the UI ends, the UI's exit status (tmux's own
/// `pane_dead_status` depends on tmux reaping the process, which it does not always do when
/// started from a test).
fn start_ui(tmux: &Tmux, data_dir: &Path, name: &str, program: &str, flags: &str) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let config = data_dir.join("tmux.conf");
    std::fs::write(&config, "set -g remain-on-exit on\n").expect("tmux config");
    let dir = data_dir.display();
    let command = format!(
        "echo $$ > {dir}/shell.pid; {program} --data-dir {dir} {flags} --name {name}; \
         echo $? > {dir}/exit.status"
    );
    let config = config.display().to_string();
    let started = tmux.run(&[
        "-f",
        &config,
        "new-session",
        "-d",
        "-s",
        "ui",
        "-x",
        "100",
        "-y",
        "30",
        &command,
    ]);
    assert!(started.status.success(), "tmux new-session: {started:?}");
}

/// Waits for the UI to exit; its exit status.
fn wait_exit(tmux: &Tmux, data_dir: &Path) -> String {
    let start = Instant::now();
    let file = data_dir.join("exit.status");
    for _ in 0..MAX_POLLS {
        if let Ok(status) = std::fs::read_to_string(&file)
            && status.ends_with('\n')
        {
            return status.trim().to_owned();
        }
        if start.elapsed() > WAIT {
            break;
        }
        std::thread::sleep(POLL);
    }
    panic!("the UI did not quit; screen:\n{}", tmux.screen());
}

/// The terminal modes the UI turns on are off again: alternate screen and mouse reporting.
fn assert_terminal_restored(tmux: &Tmux) {
    let out = tmux.run(&[
        "display-message",
        "-p",
        "-t",
        "ui",
        "#{alternate_on} #{mouse_any_flag}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0 0",
        "terminal modes left on"
    );
}

fn event<'a>(value: &'a Value, kind: &str) -> Option<&'a Value> {
    let params = value.get("params")?;
    (value.get("method")? == "event" && params.get("kind")? == kind).then_some(params)
}

#[test]
fn a_message_typed_in_the_ui_arrives_and_the_reply_shows_with_delivery_marks() {
    const TEST: &str = "a_message_typed_in_the_ui_arrives_and_the_reply_shows_with_delivery_marks";
    if !tmux_available() {
        skip("tmux is not installed");
        return;
    }
    // Declared first, so it is dropped last: the namespaces go once the nodes have.
    let Some(link) = netns::link_or_skip("tui", TEST) else {
        return;
    };
    let dirs = tempfile::tempdir().expect("tempdir");
    let bob_listen = format!("/ip4/{}/tcp/0", link.addrs[1]);
    let mut bob = RpcNode::start(
        link.exec(1, BIN),
        &dirs.path().join("bob"),
        "bob",
        &bob_listen,
    );
    let ready = bob.wait_for("ready line", |v| v.get("method") == Some(&"ready".into()));
    let bob_code = ready["params"]["contact_code"]
        .as_str()
        .expect("code")
        .to_owned();
    let on_link = format!("/ip4/{}/tcp/", link.addrs[1]);
    let bob_addr = ready["params"]["addrs"]
        .as_array()
        .expect("addrs")
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.starts_with(&on_link))
        .unwrap_or_else(|| panic!("bob listens on the link: {ready}"))
        .to_owned();

    let tmux = Tmux::new("chat");
    let alice_dir = dirs.path().join("alice");
    start_ui(
        &tmux,
        &alice_dir,
        "alice",
        &link.exec_line(0, BIN),
        &format!("--listen /ip4/{}/tcp/0", link.addrs[0]),
    );

    // With mDNS on, bob may be found (and dialled) before we ask: the bar may say
    // "looking for peers" or "online".
    tmux.wait_for("the node to start", |s| {
        s.contains("봉화 alice") && !s.contains("starting the node")
    });

    tmux.type_text(&format!("/connect {bob_addr}"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("the connection to bob", |s| s.contains("1 peer"));

    tmux.type_text(&format!("/add {bob_code}"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("bob's chat to open", |s| s.contains("to bob"));

    tmux.type_text("hello from 봉화 🔥");
    tmux.keys(&["Enter"]);
    let received = bob.wait_for("alice's message", |v| {
        event(v, "message_received").is_some()
    });
    let params = event(&received, "message_received").expect("event");
    assert_eq!(params["message"]["text"], "hello from 봉화 🔥");
    let alice_id = params["chat"].as_str().expect("chat id").to_owned();

    tmux.wait_for("the delivered mark on our message", |s| {
        s.contains("hello from 봉화 🔥 ✓✓")
    });

    bob.call(
        "send",
        serde_json::json!({"to": alice_id, "text": "반가워요, alice"}),
    );
    let screen = tmux.wait_for("bob's reply", |s| s.contains("bob: 반가워요, alice"));
    assert!(screen.contains("alice: hello from 봉화 🔥 ✓✓"), "{screen}");
    eprintln!("the screen with the reply:\n{screen}");
    bob.wait_for("the reply's delivered status", |v| {
        event(v, "message_status").is_some_and(|p| p["status"] == "delivered")
    });

    tmux.keys(&["C-c"]);
    assert_eq!(wait_exit(&tmux, &alice_dir), "0", "the UI exits cleanly");
    assert_terminal_restored(&tmux);
    let log = std::fs::read_to_string(alice_dir.join("bonghwa.log")).unwrap_or_default();
    assert!(!log.is_empty(), "logs go to the data dir");
}

#[test]
fn sigterm_restores_the_terminal_and_exits_cleanly() {
    if !tmux_available() {
        skip("tmux is not installed");
        return;
    }
    let dirs = tempfile::tempdir().expect("tempdir");
    let tmux = Tmux::new("sigterm");
    let carol_dir = dirs.path().join("carol");
    // On the host's network: loopback only, mDNS off.
    start_ui(
        &tmux,
        &carol_dir,
        "carol",
        BIN,
        &format!("--no-mdns --listen {LOOPBACK}"),
    );
    tmux.wait_for("the node to start", |s| {
        s.contains("carol") && s.contains("no peers")
    });
    let out = tmux.run(&["display-message", "-p", "-t", "ui", "#{alternate_on}"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "the UI runs on the alternate screen"
    );
    let shell = std::fs::read_to_string(carol_dir.join("shell.pid")).expect("shell pid");
    let children = Command::new("pgrep")
        .args(["-P", shell.trim()])
        .output()
        .expect("pgrep");
    let pid = String::from_utf8_lossy(&children.stdout).trim().to_owned();
    assert!(
        !pid.is_empty() && !pid.contains('\n'),
        "one UI process under the shell: {pid:?}"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert_eq!(wait_exit(&tmux, &carol_dir), "0", "SIGTERM is a clean exit");
    assert_terminal_restored(&tmux);
}
