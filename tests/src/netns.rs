//! Separate hosts on this one machine: a [`Net`] is a bridge in the test's
//! own namespace on a /24 of 10.77.0.0/16, and each [`Host`] a network
//! namespace plugged into it by a veth pair. Hosts reach each other and the
//! test directly, on their own addresses; a test can cut a host off from
//! everyone (its port on the bridge down) or from some peers only (the
//! host's own firewall), and heal it. Created by the test and removed when
//! dropped; traffic stays on these test addresses.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// Subnets 10.77.K.0/24, K below this; bridge `dmbK`.
const SUBNETS: u32 = 250;

pub struct Net {
    bridge: String,
    index: u32,
    /// The test's own address on the net (the bridge's).
    pub gateway: String,
    next: AtomicU32,
}

pub struct Host {
    pub ns: String,
    port: String,
    /// This host's address.
    pub ip: String,
    /// The test's address, as this host reaches it.
    pub gateway: String,
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args).map(|_| ())
}

/// The test process that made bridge `name`, from the alias it was given.
fn owner(name: &str) -> Option<u32> {
    let shown = run("ip", &["-o", "link", "show", name]).ok()?;
    let at = shown.find("alias dimmer-test-")? + "alias dimmer-test-".len();
    shown[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl Net {
    /// A fresh net of its own: nextest runs test processes side by side,
    /// each takes a free subnet (one left by a killed run is reclaimed).
    pub fn create() -> anyhow::Result<Net> {
        let pid = std::process::id();
        for step in 0..SUBNETS {
            let index = (pid + step) % SUBNETS;
            let bridge = format!("dmb{index}");
            if ip(&["link", "add", &bridge, "type", "bridge"]).is_err() {
                match owner(&bridge) {
                    Some(p) if std::path::Path::new(&format!("/proc/{p}")).exists() => continue,
                    _ => {
                        reclaim(index);
                        if ip(&["link", "add", &bridge, "type", "bridge"]).is_err() {
                            continue;
                        }
                    }
                }
            }
            let net = Net {
                bridge: bridge.clone(),
                index,
                gateway: format!("10.77.{index}.1"),
                next: AtomicU32::new(10),
            };
            ip(&[
                "link",
                "set",
                "dev",
                &bridge,
                "alias",
                &format!("dimmer-test-{pid}"),
            ])?;
            ip(&[
                "addr",
                "add",
                &format!("{}/24", net.gateway),
                "dev",
                &bridge,
            ])?;
            ip(&["link", "set", &bridge, "up"])?;
            return Ok(net);
        }
        bail!("no free test subnet in 10.77.0.0/16")
    }

    /// A new host on this net.
    pub fn host(&self) -> anyhow::Result<Host> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        if n > 250 {
            bail!("a test net holds at most 240 hosts");
        }
        let ns = format!("dmr{}h{n}", self.index);
        let port = format!("dmp{}h{n}", self.index);
        let inside = format!("dmi{}h{n}", self.index);
        let host = Host {
            ns: ns.clone(),
            port: port.clone(),
            ip: format!("10.77.{}.{n}", self.index),
            gateway: self.gateway.clone(),
        };
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &inside, "netns", &ns])?;
        ip(&["link", "set", &port, "master", &self.bridge])?;
        ip(&["link", "set", &port, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", host.ip),
            "dev",
            &inside,
        ])?;
        ip(&["-n", &ns, "link", "set", &inside, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// `n` new hosts.
    pub fn hosts(&self, n: usize) -> anyhow::Result<Vec<Host>> {
        (0..n).map(|_| self.host()).collect()
    }
}

/// Removes what a killed test process left of subnet `index`.
fn reclaim(index: u32) {
    let _ = ip(&["link", "del", &format!("dmb{index}")]);
    let prefix = format!("dmr{index}h");
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(&prefix) {
                let _ = ip(&["netns", "del", ns]);
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl Host {
    /// Cuts the host off: nothing reaches it, nothing leaves it.
    pub fn cut(&self) -> anyhow::Result<()> {
        ip(&["link", "set", &self.port, "down"])
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        ip(&["link", "set", &self.port, "up"])
    }

    /// Cuts the host off from `peers` only, both ways (its own firewall
    /// drops the packets: a partition, not a refusal).
    pub fn cut_from(&self, peers: &[&str]) -> anyhow::Result<()> {
        for peer in peers {
            self.iptables(&["-I", "OUTPUT", "-d", peer, "-j", "DROP"])?;
            self.iptables(&["-I", "INPUT", "-s", peer, "-j", "DROP"])?;
        }
        Ok(())
    }

    pub fn heal_from(&self, peers: &[&str]) -> anyhow::Result<()> {
        for peer in peers {
            self.iptables(&["-D", "OUTPUT", "-d", peer, "-j", "DROP"])?;
            self.iptables(&["-D", "INPUT", "-s", peer, "-j", "DROP"])?;
        }
        Ok(())
    }

    fn iptables(&self, rule: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["netns", "exec", &self.ns, "iptables"];
        args.extend_from_slice(rule);
        run("ip", &args).map(|_| ())
    }

    /// The words that run a program on this host (a wrapper for one).
    pub fn wrapper(&self) -> Vec<std::ffi::OsString> {
        ["ip", "netns", "exec", &self.ns]
            .iter()
            .map(Into::into)
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.port]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn interface_names_fit_the_kernels_limit() {
        // IFNAMSIZ is 16 with the terminating zero.
        for name in ["dmb249", "dmp249h250", "dmi249h250"] {
            assert!(name.len() <= 15, "{name}");
        }
    }
}
