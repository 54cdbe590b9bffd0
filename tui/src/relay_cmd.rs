//! `bonghwa relay`: a headless relay node. It prints one JSON line with its peer id and
//! addresses once it listens, then serves until SIGTERM or SIGINT, flushes and exits 0.

use anyhow::Context;
use bonghwa_core::{Config, Node};
use tokio::signal::unix::{SignalKind, signal};

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
