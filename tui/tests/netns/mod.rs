//! Two network namespaces joined by a veth pair: two hosts on a private link for the
//! end-to-end test, so nothing it does touches the host's network.
//!
//! The link is 10.77.252.0/24 (the scenario tests' `Lan`s use 10.77.1–250), namespace and
//! interface names start with `bh-`/`bh`, and dropping the [`Link`] deletes both namespaces
//! (and with them the veth pair), on success and on panic alike.

use std::process::Command;

/// The link's subnet prefix; `.1` is host `a`, `.2` host `b`.
const SUBNET: &str = "10.77.252";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces, `a` and `b`, on one link; deleted on drop.
pub(crate) struct Link {
    /// Namespace names: `[a, b]`.
    pub(crate) hosts: [String; 2],
    /// Their addresses on the link: `[a, b]`.
    pub(crate) addrs: [String; 2],
}

impl Link {
    /// Creates the namespaces for the test `tag` (a few letters), or says why it cannot.
    pub(crate) fn create(tag: &str) -> Result<Self, String> {
        let pid = std::process::id();
        let hosts = [format!("bh-{tag}-{pid}-a"), format!("bh-{tag}-{pid}-b")];
        // Interface names are at most 15 bytes.
        let short = pid % 1_000_000;
        let links = [format!("bh{short}a"), format!("bh{short}b")];
        let addrs = [format!("{SUBNET}.1"), format!("{SUBNET}.2")];
        // Built first, so a failure half way still deletes what was made.
        let link = Self {
            hosts: hosts.clone(),
            addrs: addrs.clone(),
        };
        for host in &hosts {
            ip(&["netns", "add", host])?;
        }
        ip(&[
            "-n", &hosts[0], "link", "add", &links[0], "type", "veth", "peer", "name", &links[1],
            "netns", &hosts[1],
        ])?;
        for i in 0..2 {
            let (host, dev) = (hosts[i].as_str(), links[i].as_str());
            ip(&["-n", host, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                host,
                "addr",
                "add",
                &format!("{}/24", addrs[i]),
                "dev",
                dev,
            ])?;
            ip(&["-n", host, "link", "set", dev, "up", "multicast", "on"])?;
            // mDNS runs inside the namespaces: multicast goes over the link, nowhere else.
            ip(&["-n", host, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(link)
    }

    /// `ip netns exec <host> <program>`: a command that runs `program` inside `host`
    /// (ip execs it, so the child's pid is the program's).
    pub(crate) fn exec(&self, host: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.hosts[host], program]);
        command
    }

    /// The same as a shell command line, for tmux.
    pub(crate) fn exec_line(&self, host: usize, program: &str) -> String {
        format!("ip netns exec {} {program}", self.hosts[host])
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for host in &self.hosts {
            if let Err(e) = ip(&["netns", "del", host]) {
                // Absent when creation failed before making it; anything else is a leak.
                if !e.contains("No such file") {
                    eprintln!("warning: could not delete namespace {host}: {e}");
                }
            }
        }
    }
}

/// The link for the test `tag`; `None` (after a loud SKIPPED line) when this machine cannot
/// make namespaces. When `CI` is set that is a failure instead: CI must run the test.
pub(crate) fn link_or_skip(tag: &str, test: &str) -> Option<Link> {
    match Link::create(tag) {
        Ok(link) => Some(link),
        Err(reason) => {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: cannot create network namespaces in CI: {reason}");
            }
            eprintln!(
                "\n!!!!!!!! SKIPPED {test}: needs network namespaces (root and iproute2): \
                 {reason} !!!!!!!!\n"
            );
            None
        }
    }
}
