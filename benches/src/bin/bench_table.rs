//! Turns loadgen JSON lines into the Markdown of `docs/benchmarks.md`: every step of every
//! file as one table, then ringchat against the relay per scenario.
//!
//! `bench_table ours.jsonl [more.jsonl…] --relay relay.jsonl`
//! `bench_table --cluster 1.jsonl --cluster 2.jsonl … --relay relay.jsonl [steps.jsonl…]`: the
//! cluster table (one row per `--cluster` file: max rate, p99 there and at half of it, ratio to
//! the relay's max), then every step of the positional files.

use anyhow::Context;
use clap::Parser;
use ringchat_benches::report::{self, StepReport};

#[derive(Parser)]
struct Args {
    /// Loadgen JSON-line files of ringchat runs.
    files: Vec<String>,
    /// Loadgen JSON-line files of relay runs (for the ratio table).
    #[arg(long)]
    relay: Vec<String>,
    /// Find-max runs to compare side by side (one file per run, e.g. 1, 2, 3, 4 nodes).
    #[arg(long)]
    cluster: Vec<String>,
}

fn read(files: &[String]) -> anyhow::Result<Vec<StepReport>> {
    let mut rows = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| f.clone())?;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            rows.push(serde_json::from_str(line).with_context(|| format!("{f}: {line}"))?);
        }
    }
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ours = read(&args.files)?;
    let relay = read(&args.relay)?;
    if !args.cluster.is_empty() {
        // The cluster table, then every step of the given files (no relay rows, no per-scenario
        // comparison: the cluster table already holds the ratios).
        let runs = args
            .cluster
            .iter()
            .map(|f| read(std::slice::from_ref(f)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        print!("{}", report::cluster_table(&runs, &relay));
        if !ours.is_empty() {
            println!();
            print!("{}", report::markdown_table(&ours));
        }
        return Ok(());
    }
    let mut all = ours.clone();
    all.extend(relay.iter().cloned());
    print!("{}", report::markdown_table(&all));
    if !relay.is_empty() {
        println!();
        print!("{}", report::comparison(&ours, &relay));
    }
    Ok(())
}
