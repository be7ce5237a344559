#!/usr/bin/env bash
# The benchmark suite on loopback: builds release, then
#   1. single node: starts a ringchat node and the relay baseline on free 127.0.0.1 ports and
#      runs the loadgen scenarios against both;
#   2. cluster: a fresh 2-node cluster (DM find-max, every pair's ends on different nodes), then
#      a fresh 3-node cluster (DM find-max plus a step at half of the max), then a 4th node
#      joins it and, once the layout has settled, the same DM find-max on 4 nodes;
#   3. the criterion micro-benchmarks with short windows;
# and rewrites the suite's section of docs/benchmarks.md (everything above the marker, e.g. the
# idle-connection history, is kept).
#
# Bounded: every loadgen run has --limit-secs, every wait a timeout; the whole suite takes
# about 13 minutes on the 2-core machine when the build is cached (QUICK=1: about 4).
# Everything it starts is stopped on exit (trap). Node logs are in the work dir (node.log,
# c2/n1.log, …); on a failure the tail of each is printed and the work dir is kept.
#
#   benches/run.sh            # full suite, writes docs/benchmarks.md
#   QUICK=1 benches/run.sh    # 2-second steps, small counts, prints instead of writing the doc
#   KEEP=1 …                  # keep the work dir (logs, JSON lines) for a look afterwards
#   NODE_FLAGS="--x y" …      # extra flags for every cluster node (a comparison: prints
#                             # instead of writing the doc, like QUICK)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
QUICK=${QUICK:-0}
DOC=$ROOT/docs/benchmarks.md
MARKER='<!-- loadgen suite: everything below is written by benches/run.sh -->'
WORK=$(mktemp -d /tmp/ringchat-bench.XXXXXX)

# shellcheck source=benches/cluster-lib.sh
. "$ROOT/benches/cluster-lib.sh"

SUITE_START=$(date +%s)
log "building (release)"
CRITERION_BENCHES=(--bench frames --bench placement --bench storage --bench fanout)
# The criterion benches are compiled here too, so no compile runs beside a measurement.
(cd "$ROOT" && cargo build --release -p ringchat-node && cargo build --release -p ringchat-benches --bins &&
    cargo bench --no-run -p ringchat-benches "${CRITERION_BENCHES[@]}") >"$WORK/build.log" 2>&1 || {
    tail -n 30 "$WORK/build.log" >&2; fail "build"; }
BUILD_SECS=$(( $(date +%s) - SUITE_START ))
log "built in $BUILD_SECS s"
# Own copies: the target dir may be shared with other builds that replace binaries mid-run.
mkdir -p "$WORK/bin"
cp "$TARGET/release/ringchat" "$TARGET/release/loadgen" "$TARGET/release/relay" "$TARGET/release/bench_table" "$WORK/bin/"
# The build leaves gigabytes of dirty pages; on ext4 (ordered data) the node's journal fsyncs
# would wait for their writeback (docs/write-path.md). Written out before anything is measured.
timeout 300 sync || true
BIN=$WORK/bin

free_port; NODE_PORT=$PORT
free_port; CLUSTER_PORT=$PORT
free_port; RELAY_PORT=$PORT
NODE_URL=http://127.0.0.1:$NODE_PORT
RELAY_URL=http://127.0.0.1:$RELAY_PORT
# The per-user send limit (default 20/s, burst 50) and the sign-up limit per address (default
# 10/min; every loadgen user signs up from 127.0.0.1) are abuse guards; they are raised so
# that find-max measures the server, not the limiter. Durability settings are untouched.
NODE_CMD="ringchat serve --data-dir DIR --listen 127.0.0.1:$NODE_PORT --cluster-listen 127.0.0.1:$CLUSTER_PORT --send-rate 90 --send-burst 200 --signups-per-minute 1000000"
"$BIN/ringchat" serve --data-dir "$WORK/node" --listen "127.0.0.1:$NODE_PORT" \
    --cluster-listen "127.0.0.1:$CLUSTER_PORT" --send-rate 90 --send-burst 200 --signups-per-minute 1000000 >"$WORK/node.log" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
"$BIN/relay" --listen "127.0.0.1:$RELAY_PORT" >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
LOGS+=("$WORK/node.log" "$WORK/relay.log")
wait_ready "$NODE_URL/readyz" "$NODE_PID" "$WORK/node.log"
kill -0 "$RELAY_PID" 2>/dev/null || fail "relay exited (log: $WORK/relay.log)"
sleep 0.5
log "node pid $NODE_PID on $NODE_URL, relay pid $RELAY_PID on $RELAY_URL"

# FIND_LIMIT bounds one find-max run, setup (sign-ups: argon2) included; CLUSTER_LIMIT the
# cluster DM runs (the 3-node one also holds the half-rate step); SETTLE_LIMIT a cluster's wait
# for its replicas.
if [ "$QUICK" = 1 ]; then
    DUR=2; GROUP_CLIENTS=200; PAIR_CLIENTS=100; IDLE_CLIENTS=1000; FIND_LIMIT=40
    CLUSTER_CLIENTS=200; CLUSTER_LIMIT=60; SETTLE_LIMIT=60; CRITERION_ARGS=(--quick)
else
    DUR=5; GROUP_CLIENTS=300; PAIR_CLIENTS=400; IDLE_CLIENTS=10000; FIND_LIMIT=150
    # The cluster runs use 2,000 clients (1,000 cross-node DM pairs), the load the issue's
    # comparison with Socket.IO + Redis used; their sign-ups alone take ~75 s.
    CLUSTER_CLIENTS=2000; CLUSTER_LIMIT=300; SETTLE_LIMIT=120; CRITERION_ARGS=()
fi
# First rate of the DM find-max runs: the single node and the relay start at 2,000 msgs/s; the
# clusters, which commit every message on 2-3 nodes, at 1,000 (find-max brackets the maximum from
# either start; starting far above it only adds overloaded steps).
DM_RATE=2000
CLUSTER_DM_RATE=1000

COMMANDS=()
CLUSTER_COMMANDS=()
# Nodes of the cluster that is up: pids, client URLs, cluster addresses.
C_PIDS=()
C_URLS=()
C_ADDRS=()

# run NAME TARGET(node|relay|cluster) ARGS… : one loadgen run, JSON lines to
# $WORK/NAME.TARGET.jsonl. A cluster run spreads its users over every node of the cluster (with
# one --pid per node), which puts the two ends of every DM pair on different nodes.
run() {
    local name=$1 target=$2; shift 2
    local urls=() pids=() extra=() args=() shown=() i
    case $target in
        node) urls=("$NODE_URL"); pids=("$NODE_PID") ;;
        relay) urls=("$RELAY_URL"); pids=("$RELAY_PID"); extra=(--relay) ;;
        cluster) urls=("${C_URLS[@]}"); pids=("${C_PIDS[@]}") ;;
    esac
    for i in "${!urls[@]}"; do args+=(--url "${urls[$i]}" --pid "${pids[$i]}"); done
    if [ "${#urls[@]}" = 1 ]; then
        shown=(--url URL "${extra[@]}" --pid PID)
    else
        for i in "${!urls[@]}"; do shown+=(--url "URL$((i + 1))"); done
        for i in "${!urls[@]}"; do shown+=(--pid "PID$((i + 1))"); done
    fi
    log "loadgen $name on $target (${#urls[@]} node(s)): $*"
    if [ "$target" = cluster ]; then
        CLUSTER_COMMANDS+=("loadgen ${shown[*]} $* --json")
    else
        COMMANDS+=("loadgen ${shown[*]} $* --json")
    fi
    # Likewise the previous scenario's writeback (compactions, logs): not measured in this one.
    timeout 120 sync || true
    # In the background with `wait`, so Ctrl-C / SIGTERM reach the trap at once (bash defers a
    # trap until a foreground child ends); the trap then stops the loadgen too.
    "$BIN/loadgen" "${args[@]}" "${extra[@]}" "$@" --json --quiet \
        >"$WORK/$name.$target.out" 2>"$WORK/$name.$target.err" &
    local lg=$!
    PIDS+=("$lg")
    if ! wait "$lg"; then
        echo "loadgen $name on $target failed; last lines of its stderr:" >&2
        tail -n 8 "$WORK/$name.$target.err" >&2
        fail "loadgen $name on $target"
    fi
    forget_pids "$lg"
    grep '^{' "$WORK/$name.$target.out" >"$WORK/$name.$target.jsonl" || fail "loadgen $name on $target printed no JSON"
    local tail_line
    tail_line=$(grep -E '^(highest|no step|at half)' "$WORK/$name.$target.out" | tr '\n' ' ' || true)
    [ -z "$tail_line" ] || log "$name on $target: $tail_line"
}


START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# Idle first, on fresh processes: memory freed by earlier scenarios would be reused by the
# allocator and hide the per-connection cost.
run idle node --scenario idle --clients "$IDLE_CLIENTS" --users 50 --duration 2 --limit-secs 180
run idle relay --scenario idle --clients "$IDLE_CLIENTS" --users 50 --duration 2 --limit-secs 180
run group node --scenario group --clients "$GROUP_CLIENTS" --group-size 100 --rate 1000 --duration "$DUR" --find-max --limit-secs "$FIND_LIMIT"
run group relay --scenario group --clients "$GROUP_CLIENTS" --group-size 100 --rate 1000 --duration "$DUR" --find-max --limit-secs "$FIND_LIMIT"
run dm node --scenario dm --clients "$PAIR_CLIENTS" --rate "$DM_RATE" --duration "$DUR" --find-max --limit-secs "$FIND_LIMIT"
run dm relay --scenario dm --clients "$PAIR_CLIENTS" --rate "$DM_RATE" --duration "$DUR" --find-max --limit-secs "$FIND_LIMIT"
run mixed node --scenario mixed --clients "$PAIR_CLIENTS" --rate 500 --duration "$DUR" --limit-secs 120
run mixed relay --scenario mixed --clients "$PAIR_CLIENTS" --rate 500 --duration "$DUR" --limit-secs 120
run catchup node --scenario catchup --clients "$GROUP_CLIENTS" --rate 500 --duration "$DUR" --limit-secs 120
LOAD_SECS=$(( $(date +%s) - START ))
# The single node and the relay are done (their figures, the relay's DM rate included, are in
# the work dir); stop them so the clusters get the machine.
stop_pids "$NODE_PID" "$RELAY_PID"

# Cluster runs: the same DM find-max as the single node (step length; 2,000 clients),
# users spread round-robin over the nodes so every DM pair spans two nodes. Default replication
# (3, capped by node count), 64 partitions, fresh data dirs.
CSTART=$(date +%s)
CLUSTER_NODE_CMD="ringchat serve --node-id I --data-dir DIR --listen 127.0.0.1:P --cluster-listen 127.0.0.1:C --cluster-secret S --send-rate 90 --send-burst 200 --signups-per-minute 1000000 [--join <cluster address of node 1>]"
DM_ARGS=(--scenario dm --clients "$CLUSTER_CLIENTS" --rate "$CLUSTER_DM_RATE" --duration "$DUR" --find-max --limit-secs "$CLUSTER_LIMIT")

log "cluster: 2 nodes"
start_node 1 "$WORK/c2"
start_node 2 "$WORK/c2"
wait_settled 2 0
wait_groups_steady
SETTLE2=$SETTLE_SECS
LAYOUT2=$(layout_now)
run dm2 cluster "${DM_ARGS[@]}"
stop_cluster

log "cluster: 3 nodes, then a 4th joins"
start_node 1 "$WORK/c3"
start_node 2 "$WORK/c3"
start_node 3 "$WORK/c3"
wait_settled 3 0
wait_groups_steady
SETTLE3=$SETTLE_SECS
LAYOUT3=$(layout_now)
run dm3 cluster "${DM_ARGS[@]}" --then-half
start_node 4 "$WORK/c3"
wait_settled 4 4
wait_groups_steady
SETTLE4=$SETTLE_SECS
LAYOUT4=$(layout_now)
run dm4 cluster "${DM_ARGS[@]}"
stop_cluster
CLUSTER_SECS=$(( $(date +%s) - CSTART ))

log "criterion micro-benchmarks"
(cd "$ROOT" && cargo bench -p ringchat-benches "${CRITERION_BENCHES[@]}" -- "${CRITERION_ARGS[@]}") \
    >"$WORK/criterion.txt" 2>"$WORK/criterion.err" || {
    tail -20 "$WORK/criterion.err" >&2; fail "criterion"; }
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
CLUSTER_TABLES=$("$BIN/bench_table" --cluster "$WORK/dm.node.jsonl" --cluster "$WORK/dm2.cluster.jsonl" \
    --cluster "$WORK/dm3.cluster.jsonl" --cluster "$WORK/dm4.cluster.jsonl" --relay "$WORK/dm.relay.jsonl" \
    "$WORK/dm2.cluster.jsonl" "$WORK/dm3.cluster.jsonl" "$WORK/dm4.cluster.jsonl")
# Highest passing rate (half-rate steps aside) of a JSON-lines file, 0 if none passed.
max_rate() { jq -s '[.[] | select(.pass and (.half_of_max | not)) | .rate] | max // 0 | round' "$1"; }
# 27000 → 27,000
thou() { sed -E ':a; s/([0-9])([0-9]{3})($|[^0-9])/\1,\2\3/; ta' <<<"$1"; }
RELAY_DM=$(max_rate "$WORK/dm.relay.jsonl")
DM1=$(max_rate "$WORK/dm.node.jsonl")
DM2=$(max_rate "$WORK/dm2.cluster.jsonl")
DM3=$(max_rate "$WORK/dm3.cluster.jsonl")
DM4=$(max_rate "$WORK/dm4.cluster.jsonl")
HALF3=$(jq -rs '[.[] | select(.half_of_max)] | if length == 0 then "none (no step passed)" else .[0] | "\(.rate | round) msgs/s: p99 \(.p99_ms * 100 | round / 100) ms" end' "$WORK/dm3.cluster.jsonl")
HALF3_P99=$(jq -s '[.[] | select(.half_of_max) | .p99_ms] | first // 1e9' "$WORK/dm3.cluster.jsonl")
RATIO2=$(jq -n --argjson a "$DM2" --argjson b "$RELAY_DM" 'if $b > 0 then $a / $b * 100 | round / 100 else 0 end')
verdict() { if [ "$1" = 1 ]; then echo "met"; else echo "**missed**"; fi; }
V27K=$(verdict "$(jq -n --argjson a "$DM2" '$a >= 27000 | if . then 1 else 0 end')")
VRATIO=$(verdict "$(jq -n --argjson a "$RATIO2" '$a >= 0.5 | if . then 1 else 0 end')")
VHALF=$(verdict "$(jq -n --argjson a "$HALF3_P99" '$a <= 15 | if . then 1 else 0 end')")
VGROW=$(verdict "$(jq -n --argjson a "$DM3" --argjson b "$DM4" '$b > $a | if . then 1 else 0 end')")
best() { jq -rs "map(select(.pass)) | max_by(.deliveries_per_s) | \"\(.rate|floor) msgs/s → \(.deliveries_per_s|floor) deliveries/s (p99 \(.p99_ms) ms)\"" "$WORK/$1.$2.jsonl"; }

# slow_fsyncs LOG…: "N group-commit fsyncs of ≥ 100 ms (longest M ms)" from the nodes' "slow
# journal fsync" warnings (storage/src/syncer.rs); every ack behind such an fsync waited as long.
slow_fsyncs() {
    local ms
    ms=$(cat "$@" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep 'slow journal fsync' | grep -o 'ms=[0-9]*' | cut -d= -f2 || true)
    if [ -z "$ms" ]; then echo "no group-commit fsync took ≥ 100 ms"; return; fi
    echo "$(wc -l <<<"$ms" | xargs) group-commit fsyncs took ≥ 100 ms (longest $(sort -n <<<"$ms" | tail -1) ms; each delays every ack behind it)"
}
FSYNC_NODE=$(slow_fsyncs "$WORK/node.log")
FSYNC_CLUSTER=$(slow_fsyncs "$WORK"/c2/n*.log "$WORK"/c3/n*.log)

SECTION=$(cat <<EOF
$MARKER

## Load suite (single node): \`benches/run.sh\`

Run $(date -u +%Y-%m-%dT%H:%MZ) on commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores
($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), node, relay and loadgen on the
same machine over loopback; load phase $LOAD_SECS s; load average before it $LOAD_BEFORE (other
builds may share the machine: compare figures within one run, not across runs). Node: \`$NODE_CMD\` (fresh data dir,
default durability: every \`sent\` follows an fsync). Relay: \`relay --listen …\` (\`benches/src/relay.rs\`).
Node log: $FSYNC_NODE.

Commands (URL/PID: the node's or the relay's; \`--relay\` for the relay):

\`\`\`sh
$(printf '%s\n' "${COMMANDS[@]}")
\`\`\`

How to read it:
- Open loop: message k is due at start + k/rate and carries that time; latency runs from the
  *scheduled* send to the \`message\` frame at each recipient (sender's own connections
  included), so loadgen or server stalls count. deliveries/s = \`message\` frames at all
  recipients; acked/s = \`sent\` replies (durable commits).
- \`--find-max\`: rate × 1.5 per step while p99 ≤ 50 ms and ≤ 0.1 % lost, then two bisections
  (if the first rate fails, the rate halves until a step passes, then bisects).
- catchup: 90 % of the connections drop, the other 10 % send for the step, then the 90 %
  reconnect at once; its latency columns are connect → \`caught_up\` per reconnecting
  connection, and lost counts outage messages that never reached a device.
- idle: server RSS per connection is marginal (growth from 10 % to 100 % connected).
- CPU columns are cores (1.00 = one core busy). The loadgen shares the 2 cores with the
  server: when server + loadgen CPU ≈ 2, the machine, not the server alone, is the limit.

Best passing find-max steps: group on ringchat $(best group node); on the relay $(best group relay).
DM on ringchat $(best dm node); on the relay $(best dm relay).

$TABLES

## Load suite (cluster): \`benches/run.sh\`

Same run, after the single node and the relay were stopped; cluster phase $CLUSTER_SECS s; in the
cluster nodes' logs, $FSYNC_CLUSTER. Nodes on
loopback (first line below), fresh data dirs, default replication (3, capped by the node count:
2 replicas on 2 nodes), 64 partitions; node 1 bootstraps, the others join it. Each run
starts once every partition has its replicas and a leader among them and the layout has stopped
changing. 2 nodes: settled ${SETTLE2} s after the last node was ready; $LAYOUT2. 3 nodes:
settled after ${SETTLE3} s; $LAYOUT3. The 4-node run is that 3-node cluster after a 4th node
joined and the rebalance finished (${SETTLE4} s after it was ready); $LAYOUT4.

Users (and their connections) are spread round-robin over the nodes' URLs and DM pairs are
users 2k and 2k+1, so the two ends of every DM are on different nodes: a message is accepted
on one node, committed at its partition's leader (fsync'd on a majority of the partition's
replicas before the \`sent\` ack) and delivered by that leader to the recipient's node. Server CPU
and RSS are summed over the nodes. The 1-node row is the single-node DM run above ($PAIR_CLIENTS
clients from $DM_RATE msgs/s; the clusters: $CLUSTER_CLIENTS clients from $CLUSTER_DM_RATE msgs/s); ratio to relay = max
rate / the relay's highest passing DM rate of this run.

\`\`\`sh
$CLUSTER_NODE_CMD
$(printf '%s\n' "${CLUSTER_COMMANDS[@]}")
\`\`\`

$CLUSTER_TABLES

Against the targets of issue 4, in this run:
- 2-node cluster, cross-node durable DMs, highest rate with p99 < 50 ms: $(thou "$DM2") msgs/s against
  ≥ 27,000: $V27K; $RATIO2 × the relay's $(thou "$RELAY_DM") msgs/s against ≥ 0.50: $VRATIO.
- 3-node cluster at half of its max rate: $HALF3, against p99 ≤ 15 ms: $VHALF.
- DM find-max by node count: 1 node $(thou "$DM1") → 3 nodes $(thou "$DM3") → 4 nodes $(thou "$DM4") msgs/s (more on 4
  than on 3 nodes: $VGROW).

Criterion micro-benchmarks (\`cargo bench -p ringchat-benches\`, short windows; median estimate):

| benchmark | time per iteration | throughput |
|---|---|---|
$CRITERION
EOF
)

log "suite done in $(( $(date +%s) - SUITE_START )) s (build $BUILD_SECS s, single node $LOAD_SECS s, cluster $CLUSTER_SECS s)"
if [ "$QUICK" = 1 ] || [ -n "${NODE_FLAGS:-}" ]; then
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
