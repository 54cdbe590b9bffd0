//! Command-line parsing and the entry point shared by every subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bonghwa_core::Config;
use bonghwa_core::Multiaddr;
use clap::{Parser, Subcommand};

/// Bonghwa (봉화): a peer-to-peer messenger that keeps working when central services are down.
///
/// It finds people on the LAN by mDNS, talks to them directly with end-to-end encryption,
/// and keeps every message until the other side has acknowledged it.
#[derive(Debug, Parser)]
#[command(name = "bonghwa", version, propagate_version = true)]
pub struct Cli {
    /// Where the identity key and the message database live.
    /// Default: $BONGHWA_DATA_DIR, else $XDG_DATA_HOME/bonghwa, else ~/.local/share/bonghwa.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address to listen on, as a multiaddr (repeatable).
    /// Default: TCP and QUIC on all interfaces, ports chosen by the OS
    /// (/ip4/0.0.0.0/tcp/0 and /ip4/0.0.0.0/udp/0/quic-v1).
    #[arg(long, global = true, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,

    /// Peer to dial at start, e.g. a relay or a friend's node (repeatable).
    /// A relay given with its id (…/p2p/12D3Koo…) is also your mailbox: it is listed in your
    /// contact code and holds messages for you while you are offline.
    #[arg(long, global = true, value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,

    /// Do not look for peers on the LAN with mDNS (and do not announce this node there).
    #[arg(long, global = true)]
    pub no_mdns: bool,

    /// Your display name, as others will see it (kept for later starts).
    #[arg(long, global = true, value_name = "NAME")]
    pub name: Option<String>,

    /// Encrypt your keys and session state at rest with the passphrase in FILE (its first
    /// line). The environment variable BONGHWA_PASSPHRASE gives it directly instead. Once
    /// set, every start needs it; without one, keys are stored unprotected.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,

    /// What to run; with none, the terminal UI opens (logs then go to <data dir>/bonghwa.log).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Headless client: JSON-RPC 2.0 on stdin/stdout, one JSON object per line.
    ///
    /// The first line out is a `ready` notification with the node's identity; after that,
    /// responses and `event` notifications. EOF on stdin or the `shutdown` method flushes
    /// and exits 0. Logs go to stderr (RUST_LOG sets the level).
    Rpc,
    /// Headless relay node for a small always-on machine: relays connections for peers
    /// behind NAT (relay v2) and holds sealed mail for offline recipients (a mailbox).
    ///
    /// It also serves the DHT (/bonghwa/kad/1.0.0) that clients use to find each other
    /// by peer id. Prints one JSON line, {"peer_id", "addrs"}, once it listens; give those
    /// addresses to clients as --bootstrap. Logs go to stderr. SIGTERM or SIGINT flushes
    /// and exits 0.
    Relay {
        /// The public address others reach this relay at (repeatable), e.g.
        /// /ip4/203.0.113.7/tcp/4001.
        #[arg(long, value_name = "MULTIADDR")]
        external_addr: Vec<Multiaddr>,
        /// Days that unfetched mail is kept [default: 7].
        #[arg(long, value_name = "DAYS")]
        mail_days: Option<u64>,
        /// Megabytes of mail held for one recipient [default: 64].
        #[arg(long, value_name = "MB")]
        mail_mb_per_recipient: Option<u64>,
        /// Megabytes of mail held in total [default: 4096].
        #[arg(long, value_name = "MB")]
        mail_mb_total: Option<u64>,
        /// A TOML file with any of: data_dir, listen, bootstrap, external_addr, mail_days,
        /// mail_mb_per_recipient, mail_mb_total (same meaning as the flags; a flag given on
        /// the command line wins). Unknown keys are an error.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print this node's identity (peer id, name, contact code) and exit.
    Id {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    /// The data dir after applying the documented defaults.
    pub fn resolved_data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        default_data_dir()
    }

    /// The node configuration these flags describe.
    pub fn node_config(&self) -> anyhow::Result<Config> {
        let mut config = Config::new(self.resolved_data_dir()?);
        config.name = self.name.clone();
        config.listen = self.listen.clone();
        config.bootstrap = self.bootstrap.clone();
        config.mdns = !self.no_mdns;
        config.passphrase = self.passphrase()?.map(bonghwa_core::node::Passphrase);
        Ok(config)
    }

    /// The passphrase from `--passphrase-file` (its first line), else `BONGHWA_PASSPHRASE`.
    fn passphrase(&self) -> anyhow::Result<Option<String>> {
        let passphrase = match &self.passphrase_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the passphrase file {}", path.display())
                })?;
                text.lines().next().unwrap_or_default().to_owned()
            }
            None => match std::env::var("BONGHWA_PASSPHRASE") {
                Ok(value) => value,
                Err(_) => return Ok(None),
            },
        };
        anyhow::ensure!(
            !passphrase.is_empty(),
            "the passphrase is empty; give a non-empty one, or none to store keys unprotected"
        );
        Ok(Some(passphrase))
    }
}

/// `$BONGHWA_DATA_DIR`, else `$XDG_DATA_HOME/bonghwa`, else `~/.local/share/bonghwa`.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    let non_empty = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("BONGHWA_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return Ok(PathBuf::from(xdg).join("bonghwa"));
    }
    let home = non_empty("HOME")
        .context("cannot find a data dir: set --data-dir, BONGHWA_DATA_DIR or HOME")?;
    Ok(PathBuf::from(home).join(".local/share/bonghwa"))
}

/// Logs go to stderr, except while the terminal UI owns the screen: then to
/// `<data dir>/bonghwa.log` (or nowhere, if that file cannot be opened).
fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,bonghwa_core=info,bonghwa=info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if cli.command.is_some() {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return;
    }
    let file = cli.resolved_data_dir().ok().and_then(|dir| {
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("bonghwa.log"))
            .ok()
    });
    let _ = match file {
        Some(file) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init(),
        None => builder.with_writer(std::io::sink).try_init(),
    };
}

/// Parses the command line and runs it; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bonghwa: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // stdin is read on a blocking thread that may still wait for input; the node has
    // already flushed and stopped, so nothing is lost by not waiting for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bonghwa: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::Rpc) => crate::rpc_server::serve(cli.node_config()?).await,
        Some(Command::Id { json }) => print_identity(&cli, *json).await,
        Some(Command::Relay {
            external_addr,
            mail_days,
            mail_mb_per_recipient,
            mail_mb_total,
            config: file,
        }) => {
            let file = match file {
                Some(path) => crate::relay_cmd::RelayFile::load(path)?,
                None => crate::relay_cmd::RelayFile::default(),
            };
            let flags = crate::relay_cmd::RelayFlags {
                external_addr: external_addr.clone(),
                mail_days: *mail_days,
                mail_mb_per_recipient: *mail_mb_per_recipient,
                mail_mb_total: *mail_mb_total,
            };
            let config = file.apply(&cli, &flags)?;
            crate::relay_cmd::run(config).await
        }
        None => crate::chat_ui::run(cli.node_config()?).await,
    }
}

/// `bonghwa id`: starts the node without networking side effects visible to others
/// (no mDNS, no dialling), reads its identity and stops it.
async fn print_identity(cli: &Cli, json: bool) -> anyhow::Result<()> {
    let mut config = cli.node_config()?;
    config.mdns = false;
    // The relays stay in the config (they belong in the contact code) but are not dialled.
    config.dial_on_start = false;
    if config.listen.is_empty() {
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    }
    let node = bonghwa_core::Node::start(config).await?;
    let identity = node.identity().await;
    node.shutdown().await?;
    let identity = identity?;
    if json {
        println!("{}", serde_json::to_string(&identity)?);
    } else {
        println!("peer id:      {}", identity.peer_id);
        println!("name:         {}", identity.name);
        println!("contact code: {}", identity.contact_code);
        if !cli.listen.is_empty() {
            for addr in &identity.addrs {
                println!("address:      {addr}");
            }
        } else {
            println!("addresses:    chosen when the node starts (see `identity` in `bonghwa rpc`)");
        }
    }
    Ok(())
}
