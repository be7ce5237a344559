//! The load engine: connects the clients, then runs steps. A step schedules sends open-loop at
//! a fixed rate (message k is due at `start + k / rate`, whether or not earlier ones finished),
//! lets the in-flight messages drain, and reports. `--find-max` repeats steps with rising rates
//! and then bisects to the highest rate whose p99 stays within the target.
//!
//! Every phase has a deadline: the run never outlives `limit`, and every connection task is
//! stopped (its queue closed, then aborted if it lingers) before `run` returns.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::connection::{self, ConnSpec, Shared};
use crate::population::{self, Population, Shape};
use crate::proc_stats::{cpu_seconds, machine_ticks, rss_bytes, MachineTicks};
use crate::report::StepReport;
use crate::source_addr::source_for;
use crate::stamp::{now_ns, Stamp};

/// Frames queued per connection before the loadgen counts a send as dropped.
const QUEUE: usize = 4096;
/// Handshakes in flight at once (the listen backlog on loopback is a few thousand).
const CONNECT_CONCURRENCY: usize = 256;
/// Longest wait after the send phase for acks and deliveries to arrive.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// find-max: growth factor of the rate while steps pass, and the number of bisection steps.
const FIND_MAX_GROWTH: f64 = 1.5;
const FIND_MAX_BISECTIONS: usize = 2;
/// find-max gives up below this rate (messages/s) when nothing has passed.
const MIN_RATE: f64 = 10.0;
/// Upper bound on steps of one run, whatever the time limit allows.
const MAX_STEPS: usize = 16;
/// A find-max step that fails while the hypervisor took more than this share of the machine's
/// CPU (steal time) is run again at the same rate, at most `STOLEN_RETRIES` times: on a shared
/// host a neighbour's burst can take a third of the CPU for tens of seconds (docs/benchmarks.md),
/// and such a step measures the host, not the server.
const STOLEN_SHARE: f64 = 0.05;
/// Repeats of one rate after stolen failures.
const STOLEN_RETRIES: u32 = 2;
/// Fraction of expected deliveries that may be lost or fail in a passing step.
const ALLOWED_LOSS: f64 = 0.001;

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Connect, hold the connections idle, report server memory per connection.
    Idle,
    /// Users in DM pairs; each send goes to one DM.
    Dm,
    /// Users in groups of `group_size`; each send goes to the sender's group.
    Group,
    /// 70% DM and 30% group sends, a `typing` before half of them, presence subscriptions to
    /// the DM peer, and acks once a second.
    Mixed,
    /// Reconnect storm: 90% of the connections drop, the rest send for the step, then the 90%
    /// reconnect at once; latency is connect → `caught_up`, and every message sent during the
    /// outage must still arrive at every device.
    Catchup,
}

impl Scenario {
    /// Lowercase name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Dm => "dm",
            Scenario::Group => "group",
            Scenario::Mixed => "mixed",
            Scenario::Catchup => "catchup",
        }
    }

    fn shape(self, users: usize, group_size: usize) -> Shape {
        Shape {
            users,
            dm_pairs: matches!(self, Scenario::Dm | Scenario::Mixed),
            group_size: match self {
                Scenario::Group | Scenario::Mixed | Scenario::Catchup => group_size,
                _ => 0,
            },
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Node (or relay) URLs; users and connections are spread over them round-robin.
    pub urls: Vec<String>,
    /// What to do.
    pub scenario: Scenario,
    /// WebSocket connections.
    pub clients: usize,
    /// Distinct users (connection i belongs to user i mod users).
    pub users: usize,
    /// Members per group.
    pub group_size: usize,
    /// Target sends per second (the first rate of `find_max`).
    pub rate: f64,
    /// Length of each step's send phase.
    pub duration: Duration,
    /// Step the rate up to the highest one within `p99_target_ms`.
    pub find_max: bool,
    /// After `find_max`, one more step at half the highest passing rate (the latency a
    /// cluster shows with headroom), marked `half_of_max` in its report.
    pub then_half: bool,
    /// p99 limit of a passing step, ms.
    pub p99_target_ms: f64,
    /// Drive the relay: no HTTP, made-up ids.
    pub relay: bool,
    /// Server process ids (one per node of a cluster), for RSS and CPU: both are summed.
    pub pids: Vec<u32>,
    /// Loopback source addresses to spread connections over.
    pub source_spread: usize,
    /// Sign-ups/logins in flight at once.
    pub login_concurrency: usize,
    /// Hard limit on the whole run, setup included.
    pub limit: Duration,
    /// Print progress to stderr once a second.
    pub progress: bool,
    /// Characters of filler appended to every message text (0: the stamp alone), to build
    /// up stored history (`benches/rebalance.sh`). Not compressible: slices of a random pool.
    pub pad_bytes: usize,
}

/// One client connection as the engine tracks it.
struct Conn {
    spec: ConnSpec,
    user: usize,
    queue: Option<mpsc::Sender<String>>,
    task: Option<JoinHandle<()>>,
}

/// A connected set of clients and the run's counters.
struct Engine {
    cfg: RunConfig,
    population: Population,
    shared: Arc<Shared>,
    conns: Vec<Conn>,
    /// Connections per channel's members, i.e. deliveries one message to the channel causes.
    recipients: Vec<u64>,
    permits: Arc<Semaphore>,
    deadline: Instant,
    target: &'static str,
    /// Random letters that `pad_bytes` of filler are cut from (twice the filler plus 4 KiB, so
    /// every message starts its slice at another offset).
    filler: String,
}

/// Runs the configured scenario and returns one report per step. All connections are closed
/// before it returns, also on error.
pub async fn run(cfg: RunConfig) -> anyhow::Result<Vec<StepReport>> {
    if cfg.urls.is_empty() || cfg.clients == 0 {
        bail!("need at least one --url and one client");
    }
    let deadline = Instant::now() + cfg.limit;
    let users = cfg.users.clamp(1, cfg.clients);
    let shape = cfg.scenario.shape(users, cfg.group_size);
    let population = if cfg.relay {
        population::made_up(&cfg.urls, shape)
    } else {
        population::create(&cfg.urls, shape, cfg.login_concurrency, deadline).await?
    };
    let mut engine = Engine::new(cfg, population, deadline);
    let result = engine.drive().await;
    engine.close_all((0..engine.conns.len()).collect()).await;
    result
}

impl Engine {
    fn new(cfg: RunConfig, population: Population, deadline: Instant) -> Engine {
        let users = population.users.len();
        let mut per_user = vec![0u64; users];
        let conns: Vec<Conn> = (0..cfg.clients)
            .map(|i| {
                let user = i % users;
                per_user[user] += 1;
                let u = &population.users[user];
                Conn {
                    spec: ConnSpec {
                        index: i,
                        url: u.url.clone(),
                        token: u.token.clone(),
                        source: source_for(i, cfg.source_spread),
                        ack: cfg.scenario == Scenario::Mixed,
                        presence: if cfg.scenario == Scenario::Mixed {
                            u.dm_peer.iter().cloned().collect()
                        } else {
                            Vec::new()
                        },
                    },
                    user,
                    queue: None,
                    task: None,
                }
            })
            .collect();
        let recipients = population
            .channels
            .iter()
            .map(|c| c.members.iter().map(|&m| per_user[m]).sum())
            .collect();
        let filler = random_letters(if cfg.pad_bytes == 0 {
            0
        } else {
            cfg.pad_bytes * 2 + 4096
        });
        Engine {
            target: if cfg.relay { "relay" } else { "ringchat" },
            cfg,
            population,
            shared: Arc::new(Shared::new()),
            conns,
            recipients,
            permits: Arc::new(Semaphore::new(CONNECT_CONCURRENCY)),
            deadline,
            filler,
        }
    }

    /// Connects everyone (measuring the server's marginal memory per connection), then runs
    /// the steps.
    async fn drive(&mut self) -> anyhow::Result<Vec<StepReport>> {
        let n = self.conns.len();
        let warm = (n / 10).max(1);
        self.connect((0..warm).collect(), true).await?;
        let rss_before = self.server_rss();
        self.connect((warm..n).collect(), true).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_per_conn = match (rss_before, self.server_rss()) {
            (Some(b), Some(a)) if n > warm => Some(a.saturating_sub(b) as f64 / (n - warm) as f64),
            _ => None,
        };
        eprintln!("{n} connections ready");
        let mut reports = Vec::new();
        match self.cfg.scenario {
            Scenario::Idle => reports.push(self.idle_step().await),
            Scenario::Catchup => reports.push(self.catchup_step(1, self.cfg.rate).await?),
            _ if !self.cfg.find_max => reports.push(self.load_step(1, self.cfg.rate, None).await),
            _ => {
                reports = self.find_max().await;
                if self.cfg.then_half {
                    if let Some(r) = self.half_of_max(&reports).await {
                        reports.push(r);
                    }
                }
            }
        }
        for r in &mut reports {
            r.server_rss_per_conn = rss_per_conn;
        }
        Ok(reports)
    }

    /// Steps the rate up by `FIND_MAX_GROWTH` while steps pass, then bisects between the last
    /// pass and the first failure. If the first rate already fails, the rate halves until a
    /// step passes (those halvings are not counted as bisections), so a start rate above the
    /// target's limit (a cluster slower than one node, say) still brackets the maximum.
    async fn find_max(&mut self) -> Vec<StepReport> {
        let mut reports: Vec<StepReport> = Vec::new();
        let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
        let mut rate = self.cfg.rate;
        let mut bisections = 0;
        let mut stolen_retries = 0;
        // Room for one more step, two when the half-rate step follows.
        let one_step = self.cfg.duration + DRAIN_LIMIT + Duration::from_secs(2);
        let reserve = one_step * if self.cfg.then_half { 2 } else { 1 };
        for step in 1..=MAX_STEPS as u32 {
            if self.time_left() < reserve {
                eprintln!("find-max: stopping, the run's time limit is near");
                break;
            }
            let r = self.load_step(step, rate, None).await;
            let pass = r.pass;
            let stolen = r.steal.is_some_and(|share| share > STOLEN_SHARE);
            reports.push(r);
            if !pass && stolen && stolen_retries < STOLEN_RETRIES {
                stolen_retries += 1;
                eprintln!(
                    "find-max: step {step} failed while the host took over {:.0} % of the CPU; again at {rate:.0}/s",
                    STOLEN_SHARE * 100.0
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            stolen_retries = 0;
            if pass {
                lo = rate;
            } else {
                hi = rate;
            }
            if hi.is_infinite() {
                rate *= FIND_MAX_GROWTH;
            } else if lo == 0.0 {
                rate = hi / 2.0;
                if rate < MIN_RATE {
                    eprintln!("find-max: no rate down to {MIN_RATE}/s passes");
                    break;
                }
            } else {
                if bisections == FIND_MAX_BISECTIONS {
                    break;
                }
                bisections += 1;
                rate = (lo + hi) / 2.0;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        reports
    }

    /// One step at half the highest passing rate of `found` (none if no step passed or the
    /// time limit is too near).
    async fn half_of_max(&mut self, found: &[StepReport]) -> Option<StepReport> {
        let Some(best) = found.iter().filter(|r| r.pass).map(|r| r.rate).reduce(f64::max) else {
            eprintln!("half of max: no step passed, skipped");
            return None;
        };
        if self.time_left() < self.cfg.duration + DRAIN_LIMIT {
            eprintln!("half of max: the run's time limit is near, skipped");
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let step = found.iter().map(|r| r.step).max().unwrap_or(0) + 1;
        let mut r = self.load_step(step, best / 2.0, None).await;
        r.half_of_max = true;
        Some(r)
    }

    /// Idle: nothing is sent; the connections are held for the step and memory is read.
    async fn idle_step(&mut self) -> StepReport {
        self.begin_step(1);
        let probe = self.probe();
        let until = Instant::now() + self.cfg.duration.min(self.time_left());
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.finish_step(1, 0.0, probe, self.shared.take_latency())
    }

    /// One open-loop step at `rate` over all senders of the scenario (or `only` these
    /// connections).
    async fn load_step(&mut self, step: u32, rate: f64, only: Option<&[usize]>) -> StepReport {
        self.begin_step(step);
        let probe = self.probe();
        self.send_phase(step, rate, only).await;
        self.drain().await;
        self.finish_step(step, rate, probe, self.shared.take_latency())
    }

    /// Catch-up storm (see `Scenario::Catchup`).
    async fn catchup_step(&mut self, step: u32, rate: f64) -> anyhow::Result<StepReport> {
        let (senders, offline): (Vec<usize>, Vec<usize>) = (0..self.conns.len()).partition(|i| i % 10 == 0);
        self.begin_step(step);
        let probe = self.probe();
        eprintln!("catchup: dropping {} connections", offline.len());
        self.close_all(offline.clone()).await;
        self.send_phase(step, rate, Some(&senders)).await;
        self.wait_acks().await;
        self.shared.take_ready();
        eprintln!("catchup: {} connections reconnect at once", offline.len());
        let failed = self.connect(offline, false).await?;
        if failed > 0 {
            eprintln!("catchup: {failed} reconnects failed");
        }
        self.drain().await;
        let ready = self.shared.take_ready();
        self.shared.take_latency();
        Ok(self.finish_step(step, rate, probe, ready))
    }

    /// Opens the connections `which`, waits until each has `caught_up` (or failed). With
    /// `strict`, a failure ends the run; otherwise failures are counted and returned.
    async fn connect(&mut self, which: Vec<usize>, strict: bool) -> anyhow::Result<usize> {
        let mut waiting = Vec::with_capacity(which.len());
        for i in which {
            let (tx, rx) = mpsc::channel(QUEUE);
            let (ready_tx, ready_rx) = oneshot::channel();
            let c = &mut self.conns[i];
            c.queue = Some(tx);
            c.task = Some(tokio::spawn(connection::run(
                c.spec.clone(),
                rx,
                self.shared.clone(),
                self.permits.clone(),
                ready_tx,
            )));
            waiting.push((i, ready_rx));
        }
        let mut failed = 0;
        let total = waiting.len();
        let mut last_print = Instant::now();
        for (done, (i, ready)) in waiting.into_iter().enumerate() {
            let left = self.time_left();
            let outcome = tokio::time::timeout(left, ready).await;
            let err = match outcome {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(e))) => Some(e),
                Ok(Err(_)) => Some(anyhow::anyhow!("connection task ended")),
                Err(_) => Some(anyhow::anyhow!("run time limit reached while connecting")),
            };
            if let Some(e) = err {
                if strict {
                    return Err(e).with_context(|| format!("connection {i}"));
                }
                failed += 1;
            }
            if self.cfg.progress && last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                eprintln!("connecting: {}/{total}", done + 1);
            }
        }
        Ok(failed)
    }

    /// Closes the queues of `which` (their tasks close the sockets) and waits ≤ 3 s for the
    /// tasks, aborting any that linger.
    async fn close_all(&mut self, which: Vec<usize>) {
        let mut tasks = Vec::new();
        for i in which {
            self.conns[i].queue = None;
            if let Some(t) = self.conns[i].task.take() {
                tasks.push(t);
            }
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        for mut t in tasks {
            if tokio::time::timeout_at(until, &mut t).await.is_err() {
                t.abort();
            }
        }
    }

    /// Schedules `rate × duration` sends: message k is due at `start + k / rate` and carries
    /// that time, so a loadgen or server stall shows up as latency instead of silently
    /// lowering the rate.
    async fn send_phase(&mut self, step: u32, rate: f64, only: Option<&[usize]>) {
        let senders: Vec<usize> = match only {
            Some(list) => list
                .iter()
                .copied()
                .filter(|&i| self.channel_of(i, 0).is_some())
                .collect(),
            None => (0..self.conns.len())
                .filter(|&i| self.channel_of(i, 0).is_some())
                .collect(),
        };
        if senders.is_empty() || rate <= 0.0 {
            return;
        }
        let interval_ns = 1e9 / rate;
        let total = (rate * self.cfg.duration.as_secs_f64()).round() as u64;
        let start_ns = now_ns();
        let hard_stop = Instant::now() + self.cfg.duration * 2 + Duration::from_secs(5);
        let mut k: u64 = 0;
        let mut last_print = Instant::now();
        while k < total {
            let now = now_ns();
            while k < total && start_ns + (k as f64 * interval_ns) as u64 <= now {
                let scheduled_ns = start_ns + (k as f64 * interval_ns) as u64;
                self.dispatch(step, k, scheduled_ns, senders[k as usize % senders.len()]);
                k += 1;
            }
            if Instant::now() > hard_stop || self.time_left().is_zero() {
                eprintln!("step {step}: send phase cut short by its time limit at {k}/{total}");
                break;
            }
            if self.cfg.progress && last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                self.print_progress(step, rate);
            }
            let next_due = start_ns + (k as f64 * interval_ns) as u64;
            let wait = next_due.saturating_sub(now_ns()).clamp(200_000, 1_000_000);
            tokio::time::sleep(Duration::from_nanos(wait)).await;
        }
    }

    /// Queues message `k` (and, in `mixed`, a `typing` before every other one) on connection
    /// `conn`.
    fn dispatch(&self, step: u32, k: u64, scheduled_ns: u64, conn: usize) {
        let Some(channel) = self.channel_of(conn, k) else {
            return;
        };
        let Some(queue) = self.conns[conn].queue.as_ref() else {
            self.shared.dropped.fetch_add(1, Relaxed);
            return;
        };
        let cid = serde_json::Value::from(self.population.channels[channel].channel_id.as_str()).to_string();
        if self.cfg.scenario == Scenario::Mixed && k.is_multiple_of(2) {
            let _ = queue.try_send(format!(r#"{{"type":"typing","channel_id":{cid}}}"#));
        }
        let mut text = Stamp {
            step,
            id: k,
            scheduled_ns,
        }
        .text();
        if self.cfg.pad_bytes > 0 {
            // After a space, so `Stamp::parse` reads the stamp and ignores the rest.
            let from = (k as usize).wrapping_mul(7919) % (self.filler.len() - self.cfg.pad_bytes);
            text.push(' ');
            text.push_str(&self.filler[from..from + self.cfg.pad_bytes]);
        }
        let frame =
            format!(r#"{{"type":"send","ref":{k},"channel_id":{cid},"text":"{text}","client_msg_id":"s{step}-{k}"}}"#);
        match queue.try_send(frame) {
            Ok(()) => {
                self.shared.sent.fetch_add(1, Relaxed);
                self.shared.expected.fetch_add(self.recipients[channel], Relaxed);
            }
            Err(_) => {
                self.shared.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// The channel connection `conn` sends message `k` to, by scenario.
    fn channel_of(&self, conn: usize, k: u64) -> Option<usize> {
        let u = &self.population.users[self.conns[conn].user];
        match self.cfg.scenario {
            Scenario::Idle => None,
            Scenario::Dm => u.dm,
            Scenario::Group | Scenario::Catchup => u.group,
            Scenario::Mixed if k % 10 < 7 => u.dm.or(u.group),
            Scenario::Mixed => u.group.or(u.dm),
        }
    }

    /// Waits (≤ `DRAIN_LIMIT`) until every send is acked or failed.
    async fn wait_acks(&self) {
        let until = Instant::now() + DRAIN_LIMIT;
        while Instant::now() < until {
            let s = &self.shared;
            if s.acked.load(Relaxed) + s.errors.load(Relaxed) >= s.sent.load(Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (≤ `DRAIN_LIMIT`) until every send is acked and every expected delivery arrived.
    async fn drain(&self) {
        let until = Instant::now() + DRAIN_LIMIT.min(self.time_left());
        while Instant::now() < until {
            let s = &self.shared;
            let acked = s.acked.load(Relaxed) + s.errors.load(Relaxed) >= s.sent.load(Relaxed);
            if acked && s.delivered.load(Relaxed) >= s.expected.load(Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resets the counters and switches the step number stamped and accepted.
    fn begin_step(&self, step: u32) {
        let s = &self.shared;
        s.step.store(step, Relaxed);
        for c in [
            &s.sent,
            &s.dropped,
            &s.acked,
            &s.delivered,
            &s.expected,
            &s.stale,
            &s.duplicates,
            &s.errors,
        ] {
            c.store(0, Relaxed);
        }
        *s.first_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        s.take_latency();
    }

    /// CPU counters and the time at the start of a step.
    fn probe(&self) -> Probe {
        Probe {
            at: Instant::now(),
            own_cpu: cpu_seconds(None).unwrap_or(0.0),
            server_cpu: self.server_cpu(),
            machine: machine_ticks().ok(),
        }
    }

    /// Builds the step's report from the counters and `latency` (µs).
    fn finish_step(&self, step: u32, rate: f64, probe: Probe, latency: hdrhistogram::Histogram<u64>) -> StepReport {
        let s = &self.shared;
        let elapsed = probe.at.elapsed().as_secs_f64().max(1e-9);
        let sent = s.sent.load(Relaxed);
        let delivered = s.delivered.load(Relaxed);
        let expected = s.expected.load(Relaxed);
        let acked = s.acked.load(Relaxed);
        let errors = s.errors.load(Relaxed) + s.dropped.load(Relaxed);
        let lost = expected.saturating_sub(delivered);
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        let p99_ms = ms(0.99);
        let send_secs = if rate > 0.0 {
            self.cfg.duration.as_secs_f64()
        } else {
            0.0
        };
        let allowed = (ALLOWED_LOSS * expected.max(sent) as f64).floor() as u64;
        let own_cpu = cpu_seconds(None).unwrap_or(0.0) - probe.own_cpu;
        let server_cpu = match (self.server_cpu(), probe.server_cpu) {
            (Some(now), Some(before)) => Some((now - before) / elapsed),
            _ => None,
        };
        let report = StepReport {
            target: self.target.into(),
            scenario: self.cfg.scenario.name().into(),
            step,
            nodes: self.cfg.urls.len(),
            clients: self.conns.len(),
            users: self.population.users.len(),
            rate,
            duration_s: send_secs,
            elapsed_s: elapsed,
            sent,
            sent_per_s: if send_secs > 0.0 { sent as f64 / send_secs } else { 0.0 },
            delivered,
            deliveries_per_s: delivered as f64 / elapsed,
            acked,
            acked_per_s: acked as f64 / elapsed,
            lost,
            errors,
            stale: s.stale.load(Relaxed),
            duplicates: s.duplicates.load(Relaxed),
            p50_ms: ms(0.5),
            p99_ms,
            p999_ms: ms(0.999),
            max_ms: latency.max() as f64 / 1000.0,
            samples: latency.len(),
            server_rss: self.server_rss(),
            server_rss_per_conn: None,
            server_cpu,
            loadgen_cpu: own_cpu / elapsed,
            steal: match (machine_ticks(), probe.machine) {
                (Ok(now), Some(before)) => Some(now.steal_share_since(&before)),
                _ => None,
            },
            pass: p99_ms <= self.cfg.p99_target_ms && lost + errors <= allowed,
            first_error: s.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            half_of_max: false,
        };
        eprintln!(
            "step {step} done: rate {rate:.0}/s sent {sent} delivered {delivered}/{expected} p99 {p99_ms:.2} ms errors {errors}{}",
            if report.pass { " (pass)" } else { " (fail)" }
        );
        report
    }

    fn print_progress(&self, step: u32, rate: f64) {
        let s = &self.shared;
        eprintln!(
            "step {step} @ {rate:.0}/s: sent {} acked {} delivered {}/{} errors {} slow(>{} ms) {} worst {} ms duplicates {}",
            s.sent.load(Relaxed),
            s.acked.load(Relaxed),
            s.delivered.load(Relaxed),
            s.expected.load(Relaxed),
            s.errors.load(Relaxed) + s.dropped.load(Relaxed),
            crate::connection::SLOW_US / 1000,
            s.slow.swap(0, Relaxed),
            s.worst_us.swap(0, Relaxed) / 1000,
            s.duplicates.load(Relaxed),
        );
    }

    /// RSS summed over the server processes (`None` without pids or if one is unreadable).
    fn server_rss(&self) -> Option<u64> {
        if self.cfg.pids.is_empty() {
            return None;
        }
        self.cfg.pids.iter().map(|&p| rss_bytes(p).ok()).sum()
    }

    /// CPU seconds summed over the server processes.
    fn server_cpu(&self) -> Option<f64> {
        if self.cfg.pids.is_empty() {
            return None;
        }
        self.cfg.pids.iter().map(|&p| cpu_seconds(Some(p)).ok()).sum()
    }

    fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// What a step's report is measured against.
struct Probe {
    at: Instant,
    own_cpu: f64,
    server_cpu: Option<f64>,
    machine: Option<MachineTicks>,
}

/// `n` pseudo-random ASCII letters (xorshift; only their incompressibility matters).
fn random_letters(n: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}
