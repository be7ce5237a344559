//! Results of one measured step, as one JSON line (for scripts) and as Markdown rows (for
//! `docs/benchmarks.md`), and the comparison of ringchat against the relay baseline.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One step of a run: a fixed target rate held for the step's duration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepReport {
    /// `ringchat` or `relay`.
    pub target: String,
    /// Scenario name.
    pub scenario: String,
    /// Step number within the run (find-max runs have several).
    pub step: u32,
    /// Nodes the clients were spread over (1 for the relay).
    #[serde(default)]
    pub nodes: usize,
    /// Open WebSocket connections.
    pub clients: usize,
    /// Distinct users behind them.
    pub users: usize,
    /// Target send rate, messages/s.
    pub rate: f64,
    /// Seconds the step sent for.
    pub duration_s: f64,
    /// Seconds from the step's start until everything arrived (or the drain limit).
    pub elapsed_s: f64,
    /// `send` frames issued.
    pub sent: u64,
    /// Sends per second over the send phase.
    pub sent_per_s: f64,
    /// `message` frames received, summed over every recipient.
    pub delivered: u64,
    /// Deliveries per second over `elapsed_s`.
    pub deliveries_per_s: f64,
    /// `sent` replies (durable commits).
    pub acked: u64,
    /// Acks per second over `elapsed_s`.
    pub acked_per_s: f64,
    /// Deliveries expected but not seen by the end of the drain.
    pub lost: u64,
    /// Error frames, failed connects, unexpected closes and sends the loadgen could not queue.
    pub errors: u64,
    /// Messages of an earlier step that arrived during this one.
    pub stale: u64,
    /// Messages a connection received a second time (dropped, as clients drop them).
    #[serde(default)]
    pub duplicates: u64,
    /// Latency percentiles, ms: send-scheduled → received (catchup: connect → `caught_up`).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Samples behind the percentiles.
    pub samples: u64,
    /// Server RSS at the step's end, bytes, summed over the `--pid`s.
    pub server_rss: Option<u64>,
    /// Server RSS growth per connection, bytes (marginal: from 10% to 100% connected).
    pub server_rss_per_conn: Option<f64>,
    /// Server CPU over the step, in cores (1.0 = one core busy), summed over the `--pid`s.
    pub server_cpu: Option<f64>,
    /// Loadgen CPU over the step, in cores: near the core count means the loadgen, not the
    /// server, may be the limit.
    pub loadgen_cpu: f64,
    /// Share of the machine's CPU time the hypervisor gave to other guests during the step
    /// (`/proc/stat` steal): a step that fails while it is high measured the host, not us.
    #[serde(default)]
    pub steal: Option<f64>,
    /// p99 within the target and under 0.1% lost/errors.
    pub pass: bool,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
    /// The step after a find-max at half its highest passing rate (`--then-half`).
    #[serde(default)]
    pub half_of_max: bool,
}

/// Markdown header matching `markdown_row`.
pub const MARKDOWN_HEADER: &str = "| target | nodes | scenario | clients | rate/s | sent/s | deliveries/s | acked/s | p50 ms | p99 ms | p99.9 ms | max ms | lost | errors | server RSS/conn | server CPU | loadgen CPU | steal % |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// One Markdown table row.
pub fn markdown_row(r: &StepReport) -> String {
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "–".into());
    format!(
        "| {} | {} | {}{} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.2} | {} |\n",
        r.target,
        r.nodes.max(1),
        r.scenario,
        if r.half_of_max { " (½ max)" } else { "" },
        r.clients,
        thousands(r.rate),
        thousands(r.sent_per_s),
        thousands(r.deliveries_per_s),
        thousands(r.acked_per_s),
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        r.max_ms,
        r.lost,
        r.errors,
        opt(r.server_rss_per_conn, &|b| format!("{b:.0} B")),
        opt(r.server_cpu, &|c| format!("{c:.2}")),
        r.loadgen_cpu,
        opt(r.steal, &|s| format!("{:.1}", s * 100.0)),
    )
}

/// A whole table.
pub fn markdown_table(rows: &[StepReport]) -> String {
    let mut out = String::from(MARKDOWN_HEADER);
    for r in rows {
        out.push_str(&markdown_row(r));
    }
    out
}

/// The best step of a run: the passing step with the most deliveries/s, else the last step.
/// A half-of-max step is never the best.
pub fn best(rows: &[StepReport]) -> Option<&StepReport> {
    rows.iter()
        .filter(|r| r.pass && !r.half_of_max)
        .max_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s))
        .or(rows.last())
}

/// ringchat against the relay per scenario: best deliveries/s of each and their ratio, and
/// the p99 at that step.
pub fn comparison(ours: &[StepReport], relay: &[StepReport]) -> String {
    let mut out = String::from(
        "| scenario | ringchat deliveries/s | relay deliveries/s | ratio | ringchat p99 ms | relay p99 ms |\n|---|---|---|---|---|---|\n",
    );
    let mut scenarios: Vec<&str> = ours.iter().map(|r| r.scenario.as_str()).collect();
    scenarios.dedup();
    for s in scenarios {
        let mine: Vec<StepReport> = ours.iter().filter(|r| r.scenario == s).cloned().collect();
        let base: Vec<StepReport> = relay.iter().filter(|r| r.scenario == s).cloned().collect();
        let (Some(m), Some(b)) = (best(&mine), best(&base)) else {
            continue;
        };
        if m.deliveries_per_s == 0.0 && b.deliveries_per_s == 0.0 {
            // idle: nothing delivered; its figure is memory, shown in the main table.
            continue;
        }
        let ratio = if b.deliveries_per_s > 0.0 {
            format!("{:.2}", m.deliveries_per_s / b.deliveries_per_s)
        } else {
            "–".into()
        };
        let _ = writeln!(
            out,
            "| {s} | {} | {} | {ratio} | {:.2} | {:.2} |",
            thousands(m.deliveries_per_s),
            thousands(b.deliveries_per_s),
            m.p99_ms,
            b.p99_ms
        );
    }
    out
}

/// The highest passing rate of a find-max run (half-of-max steps aside).
pub fn max_passing(rows: &[StepReport]) -> Option<&StepReport> {
    rows.iter()
        .filter(|r| r.pass && !r.half_of_max)
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
}

/// Header of `cluster_table`.
pub const CLUSTER_HEADER: &str = "| nodes | scenario | clients | max rate msgs/s (p99 ≤ 50 ms) | deliveries/s at max | p99 ms at max | rate at ½ max | p99 ms at ½ max | ratio to relay | server CPU at max | loadgen CPU at max |\n|---|---|---|---|---|---|---|---|---|---|---|\n";

/// One row per find-max run (`runs`, each the steps of one loadgen run, e.g. on 1, 2, 3 and 4
/// nodes): its highest passing rate, the p99 there, the step at half of it if the run made one
/// (`--then-half`), and the rate as a ratio to the relay's highest passing rate of the same
/// scenario in `relay`. A run without a passing step shows `none` and its lowest rate's p99.
pub fn cluster_table(runs: &[Vec<StepReport>], relay: &[StepReport]) -> String {
    let mut out = String::from(CLUSTER_HEADER);
    for run in runs {
        let Some(first) = run.first() else { continue };
        let base: Vec<StepReport> = relay.iter().filter(|r| r.scenario == first.scenario).cloned().collect();
        let relay_max = max_passing(&base).map(|r| r.rate);
        let half = run.iter().find(|r| r.half_of_max);
        let two = |x: f64| format!("{x:.2}");
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "–".into());
        let cells = match max_passing(run) {
            Some(m) => format!(
                "{} | {} | {:.2} | {} | {} | {} | {} | {:.2}",
                thousands(m.rate),
                thousands(m.deliveries_per_s),
                m.p99_ms,
                opt(half.map(|h| h.rate), &thousands),
                opt(half.map(|h| h.p99_ms), &two),
                opt(relay_max.filter(|&b| b > 0.0).map(|b| m.rate / b), &two),
                opt(m.server_cpu, &two),
                m.loadgen_cpu,
            ),
            None => {
                let low = run
                    .iter()
                    .filter(|r| !r.half_of_max)
                    .min_by(|a, b| a.rate.total_cmp(&b.rate))
                    .unwrap_or(first);
                format!(
                    "none (p99 {:.2} ms at {}) | – | – | – | – | – | – | –",
                    low.p99_ms,
                    thousands(low.rate)
                )
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {cells} |",
            first.nodes.max(1),
            first.scenario,
            first.clients
        );
    }
    out
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
    }

    #[test]
    fn best_prefers_the_fastest_passing_step() {
        let step = |d: f64, pass: bool| StepReport {
            deliveries_per_s: d,
            pass,
            ..StepReport::default()
        };
        let rows = vec![step(10.0, true), step(30.0, true), step(50.0, false)];
        assert_eq!(best(&rows).map(|r| r.deliveries_per_s), Some(30.0));
        assert_eq!(best(&rows[2..]).map(|r| r.deliveries_per_s), Some(50.0));
    }

    #[test]
    fn cluster_rows_give_max_half_and_relay_ratio() {
        let step = |nodes: usize, rate: f64, p99: f64, pass: bool, half: bool| StepReport {
            nodes,
            scenario: "dm".into(),
            clients: 400,
            rate,
            p99_ms: p99,
            pass,
            half_of_max: half,
            ..StepReport::default()
        };
        let two = vec![
            step(2, 2000.0, 10.0, true, false),
            step(2, 3000.0, 80.0, false, false),
            step(2, 2500.0, 40.0, true, false),
            step(2, 1250.0, 5.0, true, true),
        ];
        let failed = vec![step(3, 2000.0, 90.0, false, false), step(3, 1000.0, 70.0, false, false)];
        let relay = vec![step(1, 5000.0, 3.0, true, false), step(1, 7500.0, 60.0, false, false)];
        let t = cluster_table(&[two, failed], &relay);
        let rows: Vec<&str> = t.lines().skip(2).collect();
        assert_eq!(
            rows[0],
            "| 2 | dm | 400 | 2,500 | 0 | 40.00 | 1,250 | 5.00 | 0.50 | – | 0.00 |"
        );
        assert!(
            rows[1].starts_with("| 3 | dm | 400 | none (p99 70.00 ms at 1,000) |"),
            "{}",
            rows[1]
        );
    }
}
