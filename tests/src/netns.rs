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
    run("ip", args)
}

/// Whether this process can create network namespaces. In CI (`CI=true`) a missing
/// capability is a failure; elsewhere the caller skips, loudly.
pub fn available(test: &str) -> bool {
    // One name per call: tests in one process probe at the same time.
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let probe = format!("bh-probe-{}-{n}", std::process::id());
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

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    output(program, args).map(|_| ())
}

/// Runs `program` and returns its standard output; a failure carries its standard error.
fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two homes behind their own NAT routers, and a relay on the "public" segment:
///
/// ```text
///   alice 10.77.101.2 ── 10.77.101.1 [router A] 10.77.100.2 ──┐
///                                                              ├─ bridge ── relay 10.77.100.1
///   bob   10.77.102.2 ── 10.77.102.1 [router B] 10.77.100.3 ──┘
/// ```
///
/// Each router masquerades its home behind its public address (iptables MASQUERADE) and
/// drops new connections coming in from the public side, as home routers do. Neither home
/// has a route to the other, so Alice and Bob cannot dial each other directly.
/// Dropping it deletes every namespace (and with them the links and rules).
pub struct Nat {
    /// The relay's namespace (public segment).
    pub public: String,
    /// Alice's and Bob's namespaces.
    pub homes: [String; 2],
    routers: [String; 2],
    /// The relay's address.
    pub relay_ip: &'static str,
    /// Alice's and Bob's private addresses.
    pub home_ips: [&'static str; 2],
}

impl Nat {
    pub fn create() -> anyhow::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}n{n}", std::process::id() % 10_000);
        let ns = |role: &str| format!("bh-{tag}-{role}");
        let nat = Self {
            public: ns("pub"),
            homes: [ns("alice"), ns("bob")],
            routers: [ns("ra"), ns("rb")],
            relay_ip: "10.77.100.1",
            home_ips: ["10.77.101.2", "10.77.102.2"],
        };
        // Created one by one so that a failure half-way still cleans up (Drop).
        for name in [&nat.public, &nat.homes[0], &nat.homes[1]]
            .into_iter()
            .chain(&nat.routers)
        {
            ip(&["netns", "add", name])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        let public = nat.public.as_str();
        ip(&["-n", public, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", public, "addr", "add", "10.77.100.1/24", "dev", "br0"])?;
        ip(&["-n", public, "link", "set", "br0", "up"])?;
        for (i, side) in ["a", "b"].iter().enumerate() {
            let router = nat.routers[i].as_str();
            let home = nat.homes[i].as_str();
            let subnet = 101 + i;
            // Router's public leg, plugged into the bridge.
            let (wan, port) = (format!("bh{tag}{side}w"), format!("bh{tag}{side}p"));
            ip(&["link", "add", &wan, "type", "veth", "peer", "name", &port])?;
            ip(&["link", "set", &wan, "netns", router])?;
            ip(&["link", "set", &port, "netns", public])?;
            ip(&["-n", public, "link", "set", &port, "master", "br0", "up"])?;
            let wan_ip = format!("10.77.100.{}/24", 2 + i);
            ip(&["-n", router, "addr", "add", &wan_ip, "dev", &wan])?;
            ip(&["-n", router, "link", "set", &wan, "up"])?;
            // The home link.
            let (lan, host) = (format!("bh{tag}{side}l"), format!("bh{tag}{side}h"));
            ip(&["link", "add", &lan, "type", "veth", "peer", "name", &host])?;
            ip(&["link", "set", &lan, "netns", router])?;
            ip(&["link", "set", &host, "netns", home])?;
            let gateway = format!("10.77.{subnet}.1");
            ip(&[
                "-n",
                router,
                "addr",
                "add",
                &format!("{gateway}/24"),
                "dev",
                &lan,
            ])?;
            ip(&["-n", router, "link", "set", &lan, "up"])?;
            let home_ip = format!("{}/24", nat.home_ips[i]);
            ip(&["-n", home, "addr", "add", &home_ip, "dev", &host])?;
            ip(&["-n", home, "link", "set", &host, "up"])?;
            ip(&["-n", home, "route", "add", "default", "via", &gateway])?;
            // Forward, masquerade outgoing, refuse unsolicited incoming.
            let exec = ["netns", "exec", router];
            let sysctl = [&exec[..], &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]].concat();
            run("ip", &sysctl)?;
            let masquerade = [
                &exec[..],
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    &wan,
                    "-j",
                    "MASQUERADE",
                ],
            ]
            .concat();
            run("ip", &masquerade)?;
            let no_inbound = [
                &exec[..],
                &[
                    "iptables",
                    "-A",
                    "FORWARD",
                    "-i",
                    &wan,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "NEW,INVALID",
                    "-j",
                    "DROP",
                ],
            ]
            .concat();
            run("ip", &no_inbound)?;
        }
        Ok(nat)
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        for name in [&self.public, &self.homes[0], &self.homes[1]]
            .into_iter()
            .chain(&self.routers)
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Whether `iptables` can be run (the NAT scenario needs it). In CI its absence is a
/// failure; elsewhere the caller skips, loudly.
pub fn iptables_available(test: &str) -> bool {
    if Command::new("iptables")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: iptables is required in CI (.ci/run installs it)");
    }
    eprintln!("\n!!!!!!!! SKIPPING {test}: iptables is not installed. CI runs it. !!!!!!!!\n");
    false
}

/// Hosts in a chain: `hosts[i]` and `hosts[i + 1]` share a link (10.77.(150 + i).0/24,
/// `.1` on the left, `.2` on the right) and nothing else, with no forwarding: each host
/// reaches only its neighbours. With two hosts it is two sites joined by one link, which
/// [`Chain::cut`] and [`Chain::mend`] take down and bring back (a partition and its heal).
pub struct Chain {
    /// Namespace names, left to right.
    pub hosts: Vec<String>,
    /// Link interface names: `links[i] = (name in hosts[i], name in hosts[i + 1])`.
    links: Vec<(String, String)>,
}

impl Chain {
    pub fn create(count: usize) -> anyhow::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}c{n}", std::process::id() % 10_000);
        let mut chain = Self {
            hosts: Vec::new(),
            links: Vec::new(),
        };
        for i in 0..count {
            let host = format!("bh-{tag}-{i}");
            ip(&["netns", "add", &host])?;
            chain.hosts.push(host.clone());
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
        }
        for i in 0..count.saturating_sub(1) {
            let (left, right) = (format!("bh{tag}l{i}"), format!("bh{tag}r{i}"));
            ip(&["link", "add", &left, "type", "veth", "peer", "name", &right])?;
            for (end, host, last) in [
                (&left, &chain.hosts[i], 1),
                (&right, &chain.hosts[i + 1], 2),
            ] {
                ip(&["link", "set", end, "netns", host])?;
                let addr = format!("10.77.{}.{last}/24", 150 + i);
                ip(&["-n", host, "addr", "add", &addr, "dev", end])?;
                ip(&["-n", host, "link", "set", end, "up"])?;
            }
            chain.links.push((left, right));
        }
        Ok(chain)
    }

    /// The address of host `i` on its link to host `i + 1` (left end) or `i - 1`.
    pub fn ip_of(&self, host: usize, toward_right: bool) -> String {
        if toward_right {
            format!("10.77.{}.1", 150 + host)
        } else {
            format!("10.77.{}.2", 150 + host - 1)
        }
    }

    /// Takes link `i` down: the two sides can no longer reach each other.
    pub fn cut(&self, i: usize) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.hosts[i],
            "link",
            "set",
            &self.links[i].0,
            "down",
        ])
    }

    /// Brings link `i` back up.
    pub fn mend(&self, i: usize) -> anyhow::Result<()> {
        ip(&["-n", &self.hosts[i], "link", "set", &self.links[i].0, "up"])
    }

    /// Closes every TCP connection across link `i`, at both ends (`ss -K`, which needs a
    /// kernel built with `CONFIG_INET_DIAG_DESTROY`; the caller checks that they closed).
    /// For partitions: after [`Chain::cut`] no reset can cross the link, so each side's
    /// stack keeps the connection until TCP gives up on it (minutes: in a 180-s outage
    /// neither node noticed), and the nodes above it still count each other as
    /// connected; this ends that at once, as TCP's give-up would.
    pub fn close_connections(&self, i: usize) -> anyhow::Result<()> {
        let ends = [
            (&self.hosts[i], self.ip_of(i + 1, false)),
            (&self.hosts[i + 1], self.ip_of(i, true)),
        ];
        for (host, other) in ends {
            run(
                "ip",
                &["netns", "exec", host, "ss", "-K", "-t", "dst", &other],
            )?;
        }
        Ok(())
    }

    /// Bytes that have crossed link `i` so far, from the kernel's counters at its left end
    /// (`/sys/class/net/<if>/statistics/{tx,rx}_bytes` inside `hosts[i]`): every frame,
    /// Ethernet headers, TCP acks and ARP included. The counters survive [`Chain::cut`]
    /// and [`Chain::mend`]; take a difference of two readings.
    pub fn link_bytes(&self, i: usize) -> anyhow::Result<LinkBytes> {
        let counter = |name: &str| -> anyhow::Result<u64> {
            let path = format!("/sys/class/net/{}/statistics/{name}", self.links[i].0);
            let text = output("ip", &["netns", "exec", &self.hosts[i], "cat", &path])?;
            text.trim()
                .parse()
                .with_context(|| format!("{path} holds {text:?}, not a count"))
        };
        Ok(LinkBytes {
            rightward: counter("tx_bytes")?,
            leftward: counter("rx_bytes")?,
        })
    }
}

/// A reading of a [`Chain`] link's byte counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkBytes {
    /// Sent from `hosts[i]` to `hosts[i + 1]`.
    pub rightward: u64,
    /// Sent from `hosts[i + 1]` to `hosts[i]`.
    pub leftward: u64,
}

impl LinkBytes {
    /// What crossed between an `earlier` reading and this one.
    pub fn since(self, earlier: LinkBytes) -> LinkBytes {
        LinkBytes {
            rightward: self.rightward.saturating_sub(earlier.rightward),
            leftward: self.leftward.saturating_sub(earlier.leftward),
        }
    }

    /// Both directions together.
    pub fn total(self) -> u64 {
        self.rightward + self.leftward
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = ip(&["netns", "del", host]);
        }
    }
}
