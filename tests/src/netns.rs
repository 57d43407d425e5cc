//! Separate hosts on this one machine: a network namespace joined to the
//! test's own namespace by a veth pair on a /30 of 10.77.0.0/16, so that a
//! test can cut a host off (the link down) and heal it. Created by the test
//! and removed when dropped; traffic stays on these test addresses.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Host {
    pub ns: String,
    host_if: String,
    ns_if: String,
    /// This host's address, and the address of the test's side of the link.
    pub ip: String,
    pub gateway: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Host {
    pub fn create() -> anyhow::Result<Host> {
        // Unique across the test processes nextest runs side by side.
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id().wrapping_mul(16).wrapping_add(n)) % 16384;
        let (a, b) = (id / 64, (id % 64) * 4);
        let ns = format!("dmr{id}");
        let host_if = format!("dmh{id}");
        let ns_if = format!("dmn{id}");
        let gateway = format!("10.77.{a}.{}", b + 1);
        let addr = format!("10.77.{a}.{}", b + 2);
        let _ = ip(&["netns", "del", &ns]);
        let _ = ip(&["link", "del", &host_if]);
        ip(&["netns", "add", &ns])?;
        let host = Host {
            ns: ns.clone(),
            host_if: host_if.clone(),
            ns_if: ns_if.clone(),
            ip: addr.clone(),
            gateway: gateway.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &ns])?;
        ip(&["addr", "add", &format!("{gateway}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            &ns_if,
        ])?;
        ip(&["-n", &ns, "link", "set", &ns_if, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// A second address of this host, `10.78.…`, routed over the same
    /// link: a path that [`Host::block`] can cut alone.
    pub fn add_alias(&self) -> anyhow::Result<String> {
        let alias = self.ip.replacen("10.77.", "10.78.", 1);
        ip(&[
            "-n",
            &self.ns,
            "addr",
            "add",
            &format!("{alias}/32"),
            "dev",
            &self.ns_if,
        ])?;
        ip(&["route", "add", &format!("{alias}/32"), "dev", &self.host_if])?;
        Ok(alias)
    }

    /// Drops everything sent to `alias` on this host (the firewall of the
    /// host's own namespace); the host's main address still answers.
    pub fn block(&self, alias: &str) -> anyhow::Result<()> {
        iptables(&self.ns, "-I", alias)
    }

    pub fn unblock(&self, alias: &str) -> anyhow::Result<()> {
        iptables(&self.ns, "-D", alias)
    }

    /// Cuts the host off: nothing reaches it, nothing leaves it.
    pub fn cut(&self) -> anyhow::Result<()> {
        ip(&["link", "set", &self.host_if, "down"])
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        ip(&["link", "set", &self.host_if, "up"])
    }

    /// `program` run on this host.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
}

fn iptables(ns: &str, op: &str, dest: &str) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "iptables", op, "INPUT", "-d", dest, "-j", "DROP",
        ])
        .output()
        .context("running iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {op} {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
