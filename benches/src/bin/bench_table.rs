//! Turns loadgen JSON lines into the Markdown of `docs/benchmarks.md`: every step of every
//! file as one table, then ringchat against the relay per scenario.
//!
//! `bench_table ours.jsonl [more.jsonl…] --relay relay.jsonl`

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
    let mut all = ours.clone();
    all.extend(relay.iter().cloned());
    print!("{}", report::markdown_table(&all));
    if !relay.is_empty() {
        println!();
        print!("{}", report::comparison(&ours, &relay));
    }
    Ok(())
}
