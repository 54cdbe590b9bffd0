//! `bonghwa relay`: a headless relay node. It prints one JSON line with its peer id and
//! addresses once it listens, then serves until SIGTERM or SIGINT, flushes and exits 0.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bonghwa_core::proto::mailbox::Limits;
use bonghwa_core::{Config, Multiaddr, Node};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

/// Days that unfetched mail is kept, by default.
const DEFAULT_MAIL_DAYS: u64 = 7;
/// Megabytes held for one recipient, by default.
const DEFAULT_MAIL_MB_PER_RECIPIENT: u64 = 64;
/// Megabytes held in total, by default.
const DEFAULT_MAIL_MB_TOTAL: u64 = 4096;
/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// `bonghwa relay --config FILE`: what the flags set, for a service manager to keep in a
/// file. Every key is optional; a flag given on the command line wins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
    #[serde(default)]
    external_addr: Vec<String>,
    mail_days: Option<u64>,
    mail_mb_per_recipient: Option<u64>,
    mail_mb_total: Option<u64>,
}

/// The relay's own flags as given on the command line.
#[derive(Debug)]
pub struct RelayFlags {
    /// `--external-addr`.
    pub external_addr: Vec<Multiaddr>,
    /// `--mail-days`.
    pub mail_days: Option<u64>,
    /// `--mail-mb-per-recipient`.
    pub mail_mb_per_recipient: Option<u64>,
    /// `--mail-mb-total`.
    pub mail_mb_total: Option<u64>,
}

impl RelayFile {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?
            .len();
        anyhow::ensure!(
            size <= MAX_CONFIG_BYTES,
            "the config file {} is {size} bytes; the limit is {MAX_CONFIG_BYTES}",
            path.display()
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the config file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// The node configuration: command-line flags first, then this file, then defaults.
    pub fn apply(self, cli: &crate::cli::Cli, flags: &RelayFlags) -> anyhow::Result<Config> {
        let mut config = cli.node_config()?;
        if cli.data_dir.is_none()
            && let Some(dir) = self.data_dir
        {
            config.data_dir = dir;
        }
        let parse = |key: &str, list: &[String]| -> anyhow::Result<Vec<Multiaddr>> {
            list.iter()
                .map(|a| {
                    a.parse()
                        .with_context(|| format!("{key}: {a:?} is not a multiaddr"))
                })
                .collect()
        };
        if config.listen.is_empty() {
            config.listen = parse("listen", &self.listen)?;
        }
        if config.bootstrap.is_empty() {
            config.bootstrap = parse("bootstrap", &self.bootstrap)?;
        }
        config.external_addrs = if flags.external_addr.is_empty() {
            parse("external_addr", &self.external_addr)?
        } else {
            flags.external_addr.clone()
        };
        let days = flags
            .mail_days
            .or(self.mail_days)
            .unwrap_or(DEFAULT_MAIL_DAYS);
        let per_recipient = flags
            .mail_mb_per_recipient
            .or(self.mail_mb_per_recipient)
            .unwrap_or(DEFAULT_MAIL_MB_PER_RECIPIENT);
        let total = flags
            .mail_mb_total
            .or(self.mail_mb_total)
            .unwrap_or(DEFAULT_MAIL_MB_TOTAL);
        config.relay = Some(Limits {
            ttl_ms: days.saturating_mul(24 * 3_600_000),
            per_recipient_bytes: per_recipient.saturating_mul(1 << 20),
            total_bytes: total.saturating_mul(1 << 20),
            ..Limits::default()
        });
        Ok(config)
    }
}

/// Runs the relay until a termination signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.display().to_string();
    let external = config.external_addrs.clone();
    // Install the handlers before announcing, so a signal right after the line is handled.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let node = Node::start(config)
        .await
        .with_context(|| format!("cannot start the relay in {data_dir}"))?;
    let identity = node.identity().await?;
    let peer_id = identity.peer_id.clone();
    let mut addrs: Vec<String> = external
        .iter()
        .map(|a| format!("{a}/p2p/{peer_id}"))
        .collect();
    addrs.extend(identity.addrs);
    let line = serde_json::json!({"peer_id": peer_id, "addrs": addrs});
    println!("{line}");
    tracing::info!(%peer_id, "relay ready");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    node.shutdown().await?;
    tracing::info!("relay stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> crate::cli::Cli {
        crate::cli::Cli::parse_from(args)
    }

    fn no_flags() -> RelayFlags {
        RelayFlags {
            external_addr: Vec::new(),
            mail_days: None,
            mail_mb_per_recipient: None,
            mail_mb_total: None,
        }
    }

    #[test]
    fn the_file_sets_what_the_flags_set_and_flags_win() {
        let file = RelayFile::parse(
            r#"
            data_dir = "/srv/bonghwa"
            listen = ["/ip4/0.0.0.0/tcp/4001"]
            external_addr = ["/ip4/203.0.113.7/tcp/4001"]
            mail_days = 3
            mail_mb_total = 100
            "#,
        )
        .unwrap();
        let flags = RelayFlags {
            mail_days: Some(1),
            ..no_flags()
        };
        let config = file.apply(&cli(&["bonghwa", "relay"]), &flags).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/bonghwa"));
        assert_eq!(config.listen[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
        assert_eq!(
            config.external_addrs[0].to_string(),
            "/ip4/203.0.113.7/tcp/4001"
        );
        let limits = config.relay.unwrap();
        assert_eq!(limits.ttl_ms, 24 * 3_600_000, "the flag wins");
        assert_eq!(limits.total_bytes, 100 << 20, "from the file");
        assert_eq!(limits.per_recipient_bytes, 64 << 20, "the default");

        let file = RelayFile::parse("data_dir = \"/srv/a\"").unwrap();
        let config = file
            .apply(
                &cli(&["bonghwa", "--data-dir", "/tmp/b", "relay"]),
                &no_flags(),
            )
            .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/b"), "the flag wins");
    }

    #[test]
    fn a_bad_file_is_a_clear_error() {
        let unknown = RelayFile::parse("mail_dayz = 3").unwrap_err().to_string();
        assert!(unknown.contains("mail_dayz"), "{unknown}");
        let wrong_type = RelayFile::parse("mail_days = \"three\"")
            .unwrap_err()
            .to_string();
        assert!(wrong_type.contains("mail_days"), "{wrong_type}");
        let file = RelayFile::parse("listen = [\"not an address\"]").unwrap();
        let bad = file
            .apply(&cli(&["bonghwa", "relay"]), &no_flags())
            .unwrap_err()
            .to_string();
        assert!(bad.contains("not an address"), "{bad}");
    }
}
