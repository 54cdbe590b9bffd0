//! Shared by the benchmark programs in `src/bin/bench_*.rs`.

use std::path::PathBuf;
use std::time::Duration;

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

/// With `-h` or `--help` on the command line: prints the `//!` doc at the top of `source`
/// (a benchmark passes its own file, `include_str!("bench_x.rs")`) and exits; otherwise
/// returns, so a benchmark never starts when someone only asked how to run it.
pub fn exit_on_help(source: &str) {
    if !std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        return;
    }
    for line in source.lines().map_while(|l| l.strip_prefix("//!")) {
        println!("{}", line.strip_prefix(' ').unwrap_or(line));
    }
    std::process::exit(0);
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

/// The `p`-th percentile (0–100) of `sorted` (ascending), by nearest rank; NaN if empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A duration in milliseconds, for JSON output.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
