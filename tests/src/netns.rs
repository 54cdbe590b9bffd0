//! Network namespaces as separate test hosts, joined by veth pairs.
//!
//! Each [`Lan`] is two namespaces on one private link (10.77.N.1 and 10.77.N.2), with
//! loopback up and a multicast route, so mDNS works between them and nowhere else.
//! Dropping the `Lan` deletes both namespaces (and with them the veth pair).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this process can create network namespaces. In CI (`CI=true`) a missing
/// capability is a failure; elsewhere the caller skips, loudly.
pub fn available(test: &str) -> bool {
    let probe = format!("bh-probe-{}", std::process::id());
    let ok = ip(&["netns", "add", &probe]).is_ok();
    if ok {
        let _ = ip(&["netns", "del", &probe]);
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: network namespaces are required in CI (run as root with iproute2)");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPING {test}: cannot create network namespaces here \
         (needs root and iproute2). CI runs it. !!!!!!!!\n"
    );
    false
}

/// Two hosts on one LAN segment.
pub struct Lan {
    /// Namespace names.
    pub hosts: [String; 2],
    /// Their addresses on the link.
    pub addrs: [String; 2],
}

impl Lan {
    pub fn create() -> anyhow::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() % 10_000;
        let tag = format!("{pid}x{n}");
        let hosts = [format!("bh-{tag}-a"), format!("bh-{tag}-b")];
        let links = [format!("bh{tag}a"), format!("bh{tag}b")];
        let subnet = (pid + n * 7) % 250 + 1;
        let addrs = [format!("10.77.{subnet}.1"), format!("10.77.{subnet}.2")];
        let lan = Self {
            hosts: hosts.clone(),
            addrs: addrs.clone(),
        };
        for host in &hosts {
            ip(&["netns", "add", host])?;
        }
        ip(&[
            "link", "add", &links[0], "type", "veth", "peer", "name", &links[1],
        ])?;
        for i in 0..2 {
            let (host, link) = (&hosts[i], &links[i]);
            ip(&["link", "set", link, "netns", host])?;
            ip(&[
                "-n",
                host,
                "addr",
                "add",
                &format!("{}/24", addrs[i]),
                "dev",
                link,
            ])?;
            ip(&["-n", host, "link", "set", link, "up", "multicast", "on"])?;
            ip(&["-n", host, "link", "set", "lo", "up"])?;
            ip(&["-n", host, "route", "add", "224.0.0.0/4", "dev", link])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = ip(&["netns", "del", host]);
        }
    }
}
