#!/usr/bin/env bash
# The benchmark suite on loopback, single node: builds release, starts a ringchat node and the
# relay baseline on free 127.0.0.1 ports, runs the loadgen scenarios against both, runs the
# criterion micro-benchmarks with short windows, and rewrites the suite's section of
# docs/benchmarks.md (everything above the marker, e.g. the idle-connection history, is kept).
#
# Bounded: every loadgen run has --limit-secs, every wait a timeout; the whole suite takes
# about 10 minutes on the 2-core machine. Everything it starts is stopped on exit (trap).
#
#   benches/run.sh            # full suite, writes docs/benchmarks.md
#   QUICK=1 benches/run.sh    # 2-second steps, small counts, prints instead of writing the doc
#   KEEP=1 …                  # keep the work dir (logs, JSON lines) for a look afterwards
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
QUICK=${QUICK:-0}
DOC=$ROOT/docs/benchmarks.md
MARKER='<!-- loadgen suite: everything below is written by benches/run.sh -->'
WORK=$(mktemp -d /tmp/ringchat-bench.XXXXXX)
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        # Bounded wait: SIGKILL whatever is still there after 10 s.
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

log() { echo "[run.sh $(date +%T)] $*" >&2; }

# A loopback port nobody listens on (random in 20000-59999, checked with ss).
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -ltnH "sport = :$p" | grep -q .; then echo "$p"; return; fi
    done
    echo "no free port" >&2; exit 1
}

# Polls $1 until it answers 200, at most 30 s.
wait_ready() {
    for _ in $(seq 300); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ]; then return; fi
        sleep 0.1
    done
    echo "$1 not ready after 30 s" >&2; exit 1
}

log "building (release)"
(cd "$ROOT" && cargo build --release -p ringchat-node && cargo build --release -p ringchat-benches --bins)
# Own copies: the target dir may be shared with other builds that replace binaries mid-run.
mkdir -p "$WORK/bin"
cp "$TARGET/release/ringchat" "$TARGET/release/loadgen" "$TARGET/release/relay" "$TARGET/release/bench_table" "$WORK/bin/"
BIN=$WORK/bin

NODE_PORT=$(free_port)
CLUSTER_PORT=$(free_port)
RELAY_PORT=$(free_port)
NODE_URL=http://127.0.0.1:$NODE_PORT
RELAY_URL=http://127.0.0.1:$RELAY_PORT
# The per-connection send limit (default 20/s, burst 50) is an abuse guard; it is raised so
# that find-max measures the server, not the limiter. Durability settings are untouched.
NODE_CMD="ringchat serve --data-dir DIR --listen 127.0.0.1:$NODE_PORT --cluster-listen 127.0.0.1:$CLUSTER_PORT --send-rate 90 --send-burst 200"
"$BIN/ringchat" serve --data-dir "$WORK/node" --listen "127.0.0.1:$NODE_PORT" \
    --cluster-listen "127.0.0.1:$CLUSTER_PORT" --send-rate 90 --send-burst 200 >"$WORK/node.log" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
"$BIN/relay" --listen "127.0.0.1:$RELAY_PORT" >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
wait_ready "$NODE_URL/readyz"
sleep 0.5
log "node pid $NODE_PID on $NODE_URL, relay pid $RELAY_PID on $RELAY_URL"

if [ "$QUICK" = 1 ]; then
    DUR=2; GROUP_CLIENTS=200; PAIR_CLIENTS=100; IDLE_CLIENTS=1000; FIND_LIMIT=40
else
    DUR=5; GROUP_CLIENTS=300; PAIR_CLIENTS=400; IDLE_CLIENTS=10000; FIND_LIMIT=150
fi

COMMANDS=()
# run NAME TARGET(node|relay) ARGS… : one loadgen run, JSON lines to $WORK/NAME.jsonl.
run() {
    local name=$1 target=$2; shift 2
    local url=$NODE_URL pid=$NODE_PID extra=()
    if [ "$target" = relay ]; then url=$RELAY_URL; pid=$RELAY_PID; extra=(--relay); fi
    log "loadgen $name on $target: $*"
    COMMANDS+=("loadgen --url URL ${extra[*]} --pid PID $* --json")
    "$BIN/loadgen" --url "$url" "${extra[@]}" --pid "$pid" "$@" --json --quiet \
        >"$WORK/$name.$target.out" 2>"$WORK/$name.$target.err" || {
        echo "loadgen $name on $target failed:" >&2; tail -5 "$WORK/$name.$target.err" >&2; exit 1; }
    grep '^{' "$WORK/$name.$target.out" >"$WORK/$name.$target.jsonl"
}

START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# Idle first, on fresh processes: memory freed by earlier scenarios would be reused by the
# allocator and hide the per-connection cost.
run idle node --scenario idle --clients "$IDLE_CLIENTS" --users 50 --duration 2 --limit-secs 180
run idle relay --scenario idle --clients "$IDLE_CLIENTS" --users 50 --duration 2 --limit-secs 180
run group node --scenario group --clients "$GROUP_CLIENTS" --group-size 100 --rate 1000 --duration "$DUR" --find-max --limit-secs "$FIND_LIMIT"
run group relay --scenario group --clients "$GROUP_CLIENTS" --group-size 100 --rate 1000 --duration "$DUR" --find-max --limit-secs "$FIND_LIMIT"
run dm node --scenario dm --clients "$PAIR_CLIENTS" --rate 2000 --duration "$DUR" --find-max --limit-secs "$FIND_LIMIT"
run dm relay --scenario dm --clients "$PAIR_CLIENTS" --rate 2000 --duration "$DUR" --find-max --limit-secs "$FIND_LIMIT"
run mixed node --scenario mixed --clients "$PAIR_CLIENTS" --rate 500 --duration "$DUR" --limit-secs 120
run mixed relay --scenario mixed --clients "$PAIR_CLIENTS" --rate 500 --duration "$DUR" --limit-secs 120
run catchup node --scenario catchup --clients "$GROUP_CLIENTS" --rate 500 --duration "$DUR" --limit-secs 120
LOAD_SECS=$(( $(date +%s) - START ))

log "criterion micro-benchmarks"
(cd "$ROOT" && cargo bench -p ringchat-benches --bench frames --bench placement --bench storage --bench fanout) >"$WORK/criterion.txt" 2>"$WORK/criterion.err" || {
    tail -20 "$WORK/criterion.err" >&2; exit 1; }
# "name  time: [lo est hi]" (the name may sit alone on the line before) → "| name | est | thrpt est |";
# the "change:" block criterion prints against a saved baseline is skipped.
CRITERION=$(awk '
    /^[A-Za-z_]+\/[A-Za-z0-9_]+/ { name=$1; done=0 }
    /time:/ && !done { split($0, a, "["); split(a[2], t, " "); time=t[3] " " t[4] }
    /thrpt:/ && !done { split($0, a, "["); split(a[2], t, " "); printf "| %s | %s | %s %s |\n", name, time, t[3], t[4]; done=1 }
' "$WORK/criterion.txt")

for s in group dm mixed catchup idle; do cat "$WORK/$s.node.jsonl"; done >"$WORK/ours.jsonl"
for s in group dm mixed idle; do cat "$WORK/$s.relay.jsonl"; done >"$WORK/relay.jsonl"
TABLES=$("$BIN/bench_table" "$WORK/ours.jsonl" --relay "$WORK/relay.jsonl")
best() { jq -rs "map(select(.pass)) | max_by(.deliveries_per_s) | \"\(.rate|floor) msgs/s → \(.deliveries_per_s|floor) deliveries/s (p99 \(.p99_ms) ms)\"" "$WORK/$1.$2.jsonl"; }

SECTION=$(cat <<EOF
$MARKER

## Load suite (single node): \`benches/run.sh\`

Run $(date -u +%Y-%m-%dT%H:%MZ) on commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores
($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), node, relay and loadgen on the
same machine over loopback; load phase $LOAD_SECS s; load average before it $LOAD_BEFORE (other
builds may share the machine: compare figures within one run, not across runs). Node: \`$NODE_CMD\` (fresh data dir,
default durability: every \`sent\` follows an fsync). Relay: \`relay --listen …\` (\`benches/src/relay.rs\`).

Commands (URL/PID: the node's or the relay's; \`--relay\` for the relay):

\`\`\`sh
$(printf '%s\n' "${COMMANDS[@]}")
\`\`\`

How to read it:
- Open loop: message k is due at start + k/rate and carries that time; latency runs from the
  *scheduled* send to the \`message\` frame at each recipient (sender's own connections
  included), so loadgen or server stalls count. deliveries/s = \`message\` frames at all
  recipients; acked/s = \`sent\` replies (durable commits).
- \`--find-max\`: rate × 1.5 per step while p99 ≤ 50 ms and ≤ 0.1 % lost, then two bisections.
- catchup: 90 % of the connections drop, the other 10 % send for the step, then the 90 %
  reconnect at once; its latency columns are connect → \`caught_up\` per reconnecting
  connection, and lost counts outage messages that never reached a device.
- idle: server RSS per connection is marginal (growth from 10 % to 100 % connected).
- CPU columns are cores (1.00 = one core busy). The loadgen shares the 2 cores with the
  server: when server + loadgen CPU ≈ 2, the machine, not the server alone, is the limit.

Best passing find-max steps: group on ringchat $(best group node); on the relay $(best group relay).
DM on ringchat $(best dm node); on the relay $(best dm relay).

$TABLES

Criterion micro-benchmarks (\`cargo bench -p ringchat-benches\`, short windows; median estimate):

| benchmark | time per iteration | throughput |
|---|---|---|
$CRITERION
EOF
)

if [ "$QUICK" = 1 ]; then
    echo "$SECTION"
    exit 0
fi
if grep -qF "$MARKER" "$DOC"; then
    sed -n "1,/^$(printf '%s' "$MARKER" | sed 's/[][\/.*^$]/\\&/g')\$/p" "$DOC" | sed '$d' >"$WORK/doc.md"
else
    cp "$DOC" "$WORK/doc.md"
    echo >>"$WORK/doc.md"
fi
echo "$SECTION" >>"$WORK/doc.md"
cp "$WORK/doc.md" "$DOC"
log "wrote $DOC"
