//! A `bonghwa relay` process, as an operator runs it: one JSON line out, then logs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::sync_channel;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::WAIT;

/// A running relay.
pub struct RelayProcess {
    child: Child,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The line it printed at start.
    pub info: Value,
}

impl RelayProcess {
    /// Starts `bin relay` on loopback with mDNS off (host namespace) and waits for its line.
    /// `args` go after `relay` (its own flags, and global ones such as `--bootstrap`).
    pub fn spawn(bin: &Path, data_dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_in(bin, data_dir, None, &["/ip4/127.0.0.1/tcp/0"], args)
    }

    /// Starts `bin relay` inside network namespace `netns` (or the host's, with `None`),
    /// listening on `listen`, mDNS off.
    pub fn spawn_in(
        bin: &Path,
        data_dir: &Path,
        netns: Option<&str>,
        listen: &[&str],
        args: &[&str],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))?;
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command.arg("--data-dir").arg(data_dir).arg("--no-mdns");
        for addr in listen {
            command.args(["--listen", addr]);
        }
        let mut child = command
            .arg("relay")
            .args(args)
            .env("RUST_LOG", "info,bonghwa_core=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = sync_channel(1);
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(read.map(|_| line));
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(Ok(line)) if !line.is_empty() => line,
            other => {
                let _ = child.kill();
                bail!("relay printed no start line: {other:?}");
            }
        };
        let info: Value = serde_json::from_str(&line).context("relay start line is not JSON")?;
        Ok(Self {
            child,
            data_dir: data_dir.to_owned(),
            info,
        })
    }

    /// The first address it announced (with `/p2p/<id>`).
    pub fn addr(&self) -> String {
        self.info["addrs"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Its peer id.
    pub fn peer_id(&self) -> String {
        self.info["peer_id"].as_str().unwrap_or_default().to_owned()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// SIGTERM, as a service manager stops it; waits for the exit.
    pub fn terminate(mut self) -> anyhow::Result<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        Ok(self.child.wait()?)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
