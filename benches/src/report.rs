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
    /// Server RSS at the step's end, bytes (needs `--pid`).
    pub server_rss: Option<u64>,
    /// Server RSS growth per connection, bytes (marginal: from 10% to 100% connected).
    pub server_rss_per_conn: Option<f64>,
    /// Server CPU over the step, in cores (1.0 = one core busy).
    pub server_cpu: Option<f64>,
    /// Loadgen CPU over the step, in cores: near the core count means the loadgen, not the
    /// server, may be the limit.
    pub loadgen_cpu: f64,
    /// p99 within the target and under 0.1% lost/errors.
    pub pass: bool,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
}

/// Markdown header matching `markdown_row`.
pub const MARKDOWN_HEADER: &str = "| target | scenario | clients | rate/s | sent/s | deliveries/s | acked/s | p50 ms | p99 ms | p99.9 ms | max ms | lost | errors | server RSS/conn | server CPU | loadgen CPU |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// One Markdown table row.
pub fn markdown_row(r: &StepReport) -> String {
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "–".into());
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.2} |\n",
        r.target,
        r.scenario,
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
pub fn best(rows: &[StepReport]) -> Option<&StepReport> {
    rows.iter()
        .filter(|r| r.pass)
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
}
