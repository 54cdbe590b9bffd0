//! The real `bonghwa rpc` binary as a child process, driven over JSON lines.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::WAIT;

/// Lines buffered between the reader thread and the test.
const LINE_BUFFER: usize = 65_536;

/// One `bonghwa rpc` child process.
pub struct RpcProcess {
    pub name: String,
    pub data_dir: PathBuf,
    /// The `ready` notification's params: peer_id, name, contact_code, addrs.
    pub identity: Value,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// Notifications read while waiting for a response, kept for `wait_event`.
    backlog: VecDeque<Value>,
    next_id: u64,
}

/// How to launch a node process.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Extra CLI flags (before `rpc`).
    pub args: Vec<String>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Turn mDNS on (only allowed inside a namespace).
    pub mdns: bool,
    /// Listen address; default `/ip4/127.0.0.1/tcp/0`. Empty string: no `--listen` flag.
    pub listen: Option<String>,
    /// Extra environment variables (such as `BONGHWA_KEY_LOG`).
    pub env: Vec<(String, String)>,
}

/// Runs `bin [args] id --json` on `data_dir` (creating the identity if new) and returns
/// what it printed: `{peer_id, name, contact_code, addrs}`. The node goes nowhere online.
pub fn identity_of(bin: &Path, data_dir: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let output = Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--no-mdns"])
        .args(args)
        .args(["id", "--json"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} id", bin.display()))?;
    if !output.status.success() {
        bail!(
            "id failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

impl RpcProcess {
    /// Starts `bin rpc` for `name` with its data dir at `data_dir`, and waits for `ready`.
    pub fn spawn(bin: &Path, name: &str, data_dir: &Path, launch: &Launch) -> anyhow::Result<Self> {
        assert!(
            launch.netns.is_some() || !launch.mdns,
            "mDNS is only allowed inside a test network namespace"
        );
        let mut command = match &launch.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--name", name]);
        if !launch.mdns {
            command.arg("--no-mdns");
        }
        match launch.listen.as_deref() {
            Some("") => {}
            Some(addr) => {
                command.args(["--listen", addr]);
            }
            None => {
                command.args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
            }
        }
        command.args(&launch.args).arg("rpc");
        std::fs::create_dir_all(data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))?;
        command.envs(launch.env.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .env("RUST_LOG", "info,bonghwa_core=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = sync_channel(LINE_BUFFER);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value =
                    serde_json::from_str(&line).unwrap_or_else(|_| json!({"unparsable": line}));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut process = Self {
            name: name.to_owned(),
            data_dir: data_dir.to_owned(),
            identity: Value::Null,
            child,
            stdin,
            lines,
            backlog: VecDeque::new(),
            next_id: 1,
        };
        let ready = process
            .next_line(WAIT)
            .with_context(|| format!("{name}: no ready line"))?;
        if ready["method"] != "ready" {
            bail!("{name}: first line was not ready: {ready}");
        }
        process.identity = ready["params"].clone();
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn peer_id(&self) -> String {
        self.identity["peer_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn code(&self) -> String {
        self.identity["contact_code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The TCP listen address on `ip` (with `/p2p/…`): for hosts with several links.
    pub fn tcp_addr_on(&self, ip: &str) -> anyhow::Result<String> {
        let addrs = self.identity["addrs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        addrs
            .iter()
            .filter_map(Value::as_str)
            .find(|a| a.starts_with(&format!("/ip4/{ip}/tcp/")))
            .map(str::to_owned)
            .with_context(|| format!("{} has no tcp address on {ip}: {addrs:?}", self.name))
    }

    /// The first listen address (with `/p2p/…`).
    pub fn addr(&self) -> String {
        self.identity["addrs"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn next_line(&mut self, within: Duration) -> anyhow::Result<Value> {
        match self.lines.recv_timeout(within) {
            Ok(v) => Ok(v),
            Err(RecvTimeoutError::Timeout) => bail!(
                "{}: no output within {within:?}\n{}",
                self.name,
                self.log_tail()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                bail!(
                    "{}: process closed its output\n{}",
                    self.name,
                    self.log_tail()
                )
            }
        }
    }

    /// The last lines of the process's log (its stderr), so that a failure in CI shows
    /// what the node was doing without the temporary directory, which is gone by then.
    pub fn log_tail(&self) -> String {
        const LINES: usize = 60;
        let path = self.data_dir.with_extension("log");
        match std::fs::read_to_string(&path) {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LINES)..];
                format!(
                    "--- last {} lines of {} ---\n{}",
                    tail.len(),
                    path.display(),
                    tail.join("\n")
                )
            }
            Err(e) => format!("(no log at {}: {e})", path.display()),
        }
    }

    /// Writes one raw line to stdin.
    pub fn write_raw(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Reads until the response with `id` arrives; notifications go to the backlog.
    pub fn response(&mut self, id: &Value) -> anyhow::Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left)?;
            if line.get("id") == Some(id) {
                return Ok(line);
            }
            if line.get("method").is_some() {
                self.backlog.push_back(line);
            }
        }
    }

    /// The next line that is not a notification (a response or a batch of them).
    pub fn next_reply(&mut self) -> anyhow::Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left)?;
            if line.get("method").is_none() {
                return Ok(line);
            }
            self.backlog.push_back(line);
        }
    }

    /// Calls `method` and returns its full response object (result or error).
    pub fn call_raw(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = json!(self.next_id);
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.write_raw(&request.to_string())?;
        self.response(&id)
    }

    /// Calls `method`; an error response becomes `Err`.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let response = self.call_raw(method, params)?;
        if let Some(error) = response.get("error") {
            bail!("{}: {method} failed: {error}", self.name);
        }
        Ok(response["result"].clone())
    }

    /// Waits for an event notification whose params match `pred`.
    pub fn wait_event(
        &mut self,
        what: &str,
        pred: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        self.wait_event_within(what, WAIT, pred)
    }

    /// [`RpcProcess::wait_event`] for events that take longer by design (a dead link is
    /// noticed when a ping times out; a partitioned group redials at its next sync round).
    pub fn wait_event_within(
        &mut self,
        what: &str,
        within: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|n| n["method"] == "event" && pred(&n["params"]))
        {
            return Ok(self
                .backlog
                .remove(i)
                .map(|n| n["params"].clone())
                .unwrap_or_default());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .next_line(left)
                .with_context(|| format!("{}: waiting for {what}", self.name))?;
            if line["method"] == "event" && pred(&line["params"]) {
                return Ok(line["params"].clone());
            }
            if line.get("method").is_some() {
                self.backlog.push_back(line);
            }
        }
    }

    /// The next event matching `pred` if one arrives within `within` (the backlog first);
    /// `None` if none did. For waiting on whichever of several nodes reports first.
    pub fn try_event(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Option<Value>> {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|n| n["method"] == "event" && pred(&n["params"]))
        {
            return Ok(self.backlog.remove(i).map(|n| n["params"].clone()));
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => bail!("{}: exited", self.name),
            };
            if line["method"] == "event" && pred(&line["params"]) {
                return Ok(Some(line["params"].clone()));
            }
            if line.get("method").is_some() {
                self.backlog.push_back(line);
            }
        }
    }

    /// Waits until `count` event notifications matching `pred` have arrived (the backlog
    /// counts too), in one pass: for benchmarks, where thousands of events stream by.
    /// Matching events are consumed; others stay in the backlog.
    pub fn count_events(
        &mut self,
        what: &str,
        count: usize,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let mut seen = 0;
        self.backlog.retain(|n| {
            let hit = seen < count && n["method"] == "event" && pred(&n["params"]);
            seen += usize::from(hit);
            !hit
        });
        let deadline = Instant::now() + WAIT;
        while seen < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left).with_context(|| {
                format!("{}: waiting for {what} ({seen} of {count})", self.name)
            })?;
            if line["method"] == "event" && pred(&line["params"]) {
                seen += 1;
            } else if line.get("method").is_some() {
                self.backlog.push_back(line);
            }
        }
        Ok(())
    }

    /// Sends `text` to `to` and waits until `to` has received it (from us, with that text)
    /// and we see it `delivered`; returns its id.
    pub fn send_and_wait(&mut self, to: &mut RpcProcess, text: &str) -> anyhow::Result<String> {
        let (me, them) = (self.peer_id(), to.peer_id());
        let sent = self.call("send", json!({"to": them, "text": text}))?;
        let id = sent["id"].as_str().unwrap_or_default().to_owned();
        to.wait_event(&format!("{text:?} from {}", self.name), |p| {
            p["kind"] == "message_received"
                && p["message"]["from"] == me.as_str()
                && p["message"]["text"] == text
        })?;
        self.wait_status(&them, &id, "delivered")?;
        Ok(id)
    }

    /// Waits until message `id` has `status` (checked in the history first).
    pub fn wait_status(&mut self, chat: &str, id: &str, status: &str) -> anyhow::Result<()> {
        let history = self.call("messages", json!({"chat": chat, "limit": 1000}))?;
        if history
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["id"] == id && m["status"] == status))
        {
            return Ok(());
        }
        self.wait_event(&format!("{id} {status}"), |p| {
            p["kind"] == "message_status" && p["id"] == id && p["status"] == status
        })?;
        Ok(())
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// `shutdown` over RPC, then waits for a clean exit.
    pub fn shutdown(mut self) -> anyhow::Result<ExitStatus> {
        self.call("shutdown", json!({}))?;
        self.wait_exit()
    }

    /// Closes stdin (EOF) and waits for the exit.
    pub fn close_stdin(mut self) -> anyhow::Result<ExitStatus> {
        drop(self.stdin.take());
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{}: did not exit", self.name);
            }
            // Polling a child's exit has no event to wait on; this only paces the poll.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RpcProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
