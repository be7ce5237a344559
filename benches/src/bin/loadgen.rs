//! Load generator: N authenticated WebSocket clients over one or more nodes (or the relay),
//! running one scenario open-loop and printing one JSON line per step (`--json`) and a
//! Markdown table. See `docs/benchmarks.md` for how the suite uses it.
//!
//! `loadgen --url http://127.0.0.1:7070 --scenario group --clients 300 --rate 3000 --duration 10 --pid <node pid>`

use std::time::Duration;

use clap::Parser;
use ringchat_benches::engine::{self, RunConfig, Scenario};
use ringchat_benches::report;

#[derive(Parser)]
#[command(about = "ringchat load generator (loopback only)")]
struct Args {
    /// Node base URL; repeat for several nodes. Users (and their connections) are spread
    /// round-robin, so with two or more nodes the two ends of every DM pair are on different
    /// nodes.
    #[arg(long = "url", default_value = "http://127.0.0.1:7070")]
    urls: Vec<String>,
    /// Scenario.
    #[arg(long, value_enum, default_value = "dm")]
    scenario: Scenario,
    /// WebSocket connections.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Distinct users (0: one per client, or 100 at most for `idle`). Each costs two argon2
    /// hashes on the server at setup.
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// Members per group.
    #[arg(long, default_value_t = 100)]
    group_size: usize,
    /// Messages per second, open loop (the first rate of --find-max).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds each step sends for (idle: seconds to hold the connections).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Step the rate up to the highest one with p99 within --p99-ms.
    #[arg(long)]
    find_max: bool,
    /// After --find-max, one more step at half the highest passing rate.
    #[arg(long, requires = "find_max")]
    then_half: bool,
    /// p99 latency limit of a passing step, ms.
    #[arg(long, default_value_t = 50.0)]
    p99_ms: f64,
    /// Target is the relay baseline: skip HTTP and make up ids.
    #[arg(long)]
    relay: bool,
    /// Server pid, for RSS per connection and server CPU; repeat for every node of a cluster
    /// (summed).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Loopback source addresses to spread connections over (127.0.0.1 …).
    #[arg(long, default_value_t = 16)]
    source_addrs: usize,
    /// Sign-ups/logins in flight at once (each is an argon2 hash on the server).
    #[arg(long, default_value_t = 4)]
    login_concurrency: usize,
    /// Hard limit on the whole run, seconds.
    #[arg(long, default_value_t = 600)]
    limit_secs: u64,
    /// Print one JSON line per step on stdout (before the table).
    #[arg(long)]
    json: bool,
    /// Characters of filler appended to every message text, to build up stored history.
    #[arg(long, default_value_t = 0)]
    pad_bytes: usize,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // PROTOCOL: a text is at most 100,000 characters; the stamp takes a few dozen.
    anyhow::ensure!(a.pad_bytes <= 99_900, "--pad-bytes is at most 99900");
    let users = match (a.users, a.scenario) {
        (0, Scenario::Idle) => a.clients.min(100),
        (0, _) => a.clients,
        (u, _) => u,
    };
    let cfg = RunConfig {
        urls: a.urls,
        scenario: a.scenario,
        clients: a.clients,
        users,
        group_size: a.group_size,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        find_max: a.find_max,
        then_half: a.then_half,
        p99_target_ms: a.p99_ms,
        relay: a.relay,
        pids: a.pids,
        source_spread: a.source_addrs,
        login_concurrency: a.login_concurrency,
        limit: Duration::from_secs(a.limit_secs),
        progress: !a.quiet,
        pad_bytes: a.pad_bytes,
    };
    let reports = engine::run(cfg).await?;
    if a.json {
        for r in &reports {
            println!("{}", serde_json::to_string(r)?);
        }
    }
    println!();
    print!("{}", report::markdown_table(&reports));
    if a.find_max {
        match report::max_passing(&reports) {
            Some(best) => println!(
                "\nhighest rate with p99 ≤ {} ms: {:.0} msgs/s ({:.0} deliveries/s)",
                a.p99_ms, best.rate, best.deliveries_per_s
            ),
            None => println!("\nno step passed (p99 ≤ {} ms, ≤ 0.1% lost)", a.p99_ms),
        }
        if let Some(h) = reports.iter().find(|r| r.half_of_max) {
            println!("at half of it, {:.0} msgs/s: p99 {:.2} ms", h.rate, h.p99_ms);
        }
    }
    Ok(())
}
