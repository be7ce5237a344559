//! Network partitions for multi-process tests, on loopback only.
//!
//! A test moves its thread into a new, private network namespace (`enter_private_netns`)
//! before it builds its runtime, so the runtime's threads and every process it starts live
//! there: a loopback of its own on which each node listens on its own 127.0.0.x address, and an
//! nftables table that no other test and not the host can see. `Firewall` drops packets
//! between node addresses in the output hook, which gives full and one-way partitions.
//! Nodes' cluster connections leave from their listen address, so the rules match them.

use std::io::Write;
use std::process::{Command, Stdio};

/// True when fault tests must run and fail rather than skip (CI sets it).
pub fn fault_tests_required() -> bool {
    std::env::var_os("RINGCHAT_REQUIRE_FAULT_TESTS").is_some()
}

/// Skips (returns false, with a loud note) or panics when `why` prevents a fault test.
pub fn skip_or_fail(test: &str, why: &str) -> bool {
    assert!(!fault_tests_required(), "{test} cannot run: {why}");
    eprintln!("SKIPPED {test}: {why} (set RINGCHAT_REQUIRE_FAULT_TESTS=1 to make this a failure)");
    false
}

/// Moves the calling thread into a new network namespace with `lo` up. Must be called before
/// any thread or process the test needs is started (they inherit the namespace).
pub fn enter_private_netns() -> Result<(), String> {
    // SAFETY: unshare takes no pointers; it only changes the calling thread's namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()));
    }
    run("ip", &["link", "set", "lo", "up"], None)
}

/// A fault test's setup in one call: enters a private network namespace, creates its packet
/// filter, and builds a runtime whose threads live there. `None` (after `skip_or_fail`) when
/// the machine cannot do it.
pub fn isolated(test: &str) -> Option<(Firewall, tokio::runtime::Runtime)> {
    if let Err(why) = enter_private_netns() {
        skip_or_fail(test, &why);
        return None;
    }
    let firewall = match Firewall::new() {
        Ok(f) => f,
        Err(why) => {
            skip_or_fail(test, &why);
            return None;
        }
    };
    // Built after entering the namespace, so its threads live there too.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    Some((firewall, rt))
}

/// The test's packet filter (an nftables table in the private namespace).
pub struct Firewall;

const TABLE: &str = "ringchat_partition";

impl Firewall {
    /// Creates the (empty) table; fails if `nft` is missing.
    pub fn new() -> Result<Firewall, String> {
        let rules = format!(
            "table inet {TABLE} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n  }}\n}}\n"
        );
        run("nft", &["-f", "-"], Some(&rules))?;
        Ok(Firewall)
    }

    /// Drops every packet from `from` to `to` (one direction).
    pub fn cut(&self, from: &str, to: &str) {
        run(
            "nft",
            &[
                "add", "rule", "inet", TABLE, "out", "ip", "saddr", from, "ip", "daddr", to, "counter", "drop",
            ],
            None,
        )
        .expect("nft add rule");
    }

    /// Cuts `ip` off from each of `others`, both ways.
    pub fn isolate(&self, ip: &str, others: &[&str]) {
        for o in others {
            self.cut(ip, o);
            self.cut(o, ip);
        }
    }

    /// Removes every rule; returns how many packets they dropped (proof that the cut was
    /// real: a test whose rules matched nothing tested nothing).
    pub fn heal(&self) -> u64 {
        let listing = output("nft", &["list", "chain", "inet", TABLE, "out"]).expect("nft list");
        let dropped = listing
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum();
        run("nft", &["flush", "chain", "inet", TABLE, "out"], None).expect("nft flush");
        dropped
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = run("nft", &["delete", "table", "inet", TABLE], None);
    }
}

fn output(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("{cmd} stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
