//! `bonghwa rpc`: JSON-RPC 2.0 on stdin/stdout, one JSON object per line.
//!
//! Requests are started in the order they arrive (so pipelined `send`s keep their order)
//! and may finish out of order; each response carries its request's id. Events arrive as
//! `event` notifications between responses. The first line out is a `ready` notification
//! carrying the node's identity, so a driver knows when it may start.

use anyhow::Context;
use bonghwa_core::{Config, Node, rpc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Lines waiting to be written to stdout.
const OUTPUT_CAPACITY: usize = 1024;
/// Bytes of queued lines written to stdout at once.
const WRITE_CHUNK: usize = 64 * 1024;
/// Requests being served at once; more wait on stdin.
const MAX_IN_FLIGHT: usize = 256;

/// Runs the node and serves stdin until EOF or `shutdown`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.display().to_string();
    let (node, mut events) = Node::start_subscribed(config)
        .await
        .with_context(|| format!("cannot start the node in {data_dir}"))?;
    let identity = node.identity().await?;

    let (out, mut lines_out) = mpsc::channel::<String>(OUTPUT_CAPACITY);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        let mut buffer = Vec::new();
        while let Some(line) = lines_out.recv().await {
            // Write everything already queued in one go: each stdout write is a hop to a
            // blocking thread, which would otherwise cost more than the message itself.
            buffer.clear();
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
            while buffer.len() < WRITE_CHUNK {
                let Ok(line) = lines_out.try_recv() else {
                    break;
                };
                buffer.extend_from_slice(line.as_bytes());
                buffer.push(b'\n');
            }
            let written = async {
                stdout.write_all(&buffer).await?;
                stdout.flush().await
            };
            if written.await.is_err() {
                break;
            }
        }
    });
    let ready = serde_json::json!({"jsonrpc": "2.0", "method": "ready", "params": identity});
    out.send(ready.to_string()).await.ok();

    let event_out = out.clone();
    let forwarder = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if event_out
                .send(rpc::event_notification(&event))
                .await
                .is_err()
            {
                break;
            }
        }
    });

    let mut stdin = BufReader::new(tokio::io::stdin()).split(b'\n');
    let mut in_flight = FuturesUnordered::new();
    let mut stdin_open = true;
    let mut shutdown = false;
    while !shutdown && (stdin_open || !in_flight.is_empty()) {
        tokio::select! {
            line = stdin.next_segment(), if stdin_open && in_flight.len() < MAX_IN_FLIGHT => {
                match line {
                    Ok(Some(bytes)) => match String::from_utf8(bytes) {
                        Ok(line) if line.trim().is_empty() => {}
                        Ok(line) => {
                            let node = node.clone();
                            // Poll each call once, here, in the order the lines came: that
                            // poll hands its command to the node, so pipelined requests reach
                            // the node (and get their message times) in the order written.
                            // `unconstrained`: tokio's cooperative budget must not make that
                            // first hand-over yield.
                            let mut call = Box::pin(tokio::task::unconstrained(async move {
                                rpc::call(&node, &line).await
                            }));
                            match futures::poll!(call.as_mut()) {
                                std::task::Poll::Ready(response) => {
                                    if let Some(json) = response.json {
                                        out.send(json).await.ok();
                                    }
                                    shutdown = response.shutdown;
                                }
                                std::task::Poll::Pending => in_flight.push(call),
                            }
                        }
                        Err(_) => {
                            let error = serde_json::json!({"jsonrpc": "2.0", "id": null,
                                "error": {"code": rpc::PARSE_ERROR, "message": "input line is not UTF-8"}});
                            out.send(error.to_string()).await.ok();
                        }
                    },
                    Ok(None) => stdin_open = false,
                    Err(e) => {
                        tracing::warn!("stdin closed: {e}");
                        stdin_open = false;
                    }
                }
            }
            Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(json) = response.json {
                    out.send(json).await.ok();
                }
                shutdown = response.shutdown;
            }
        }
    }
    // EOF (or shutdown): let the node flush and stop, then drain what is left to print.
    node.shutdown().await?;
    forwarder.abort();
    drop(out);
    let _ = writer.await;
    Ok(())
}
