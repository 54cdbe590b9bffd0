//! Shared by the benchmark programs in `src/bin/bench_*.rs`.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// The node binary next to the running benchmark (`bonghwa-node`), or `$BONGHWA_BIN`.
pub fn node_bin() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("BONGHWA_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("no exe dir")?.join("bonghwa-node");
    if !bin.exists() {
        bail!(
            "{} not found; build it with `cargo build --release -p bonghwa-tests --bins`",
            bin.display()
        );
    }
    Ok(bin)
}

/// The number after flag `name` on the command line, else `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A KiB figure from `/proc/<pid>/status`, e.g. `VmRSS:` or `VmHWM:`; 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
