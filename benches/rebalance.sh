#!/usr/bin/env bash
# Rebalance with stored history, under load (issue 11): a fresh 3-node cluster (64 partitions,
# replication 3) is filled with HISTORY_MB MiB of message text, then a 4th node joins while
# the loadgen sends LIVE_RATE cross-node DMs/s. Prints how long the 4th node took to get its
# share (every partition's committed replicas = the placement over 4 nodes, no learners left)
# and to settle (leaders balanced too), and the loadgen's p99 and losses over the live window,
# which starts before the join and ends after the rebalance.
#
# Bounded: every loadgen run has --limit-secs, every wait a timeout; everything started is
# stopped on exit. About 5 minutes with the defaults on the 2-core machine (build cached).
#
#   benches/rebalance.sh                      # 1 GiB of history, 1,000 msgs/s live
#   HISTORY_MB=64 benches/rebalance.sh        # a quick look
#   KEEP=1 …                                  # keep the work dir (logs, loadgen output)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/ringchat-rebalance.XXXXXX)
# shellcheck source=benches/cluster-lib.sh
. "$ROOT/benches/cluster-lib.sh"

HISTORY_MB=${HISTORY_MB:-1024}
# Characters of filler per stored message (random letters: incompressible).
PAD=${PAD:-16000}
FILL_RATE=${FILL_RATE:-500}
FILL_CLIENTS=${FILL_CLIENTS:-200}
LIVE_RATE=${LIVE_RATE:-1000}
LIVE_CLIENTS=${LIVE_CLIENTS:-400}
# The live window: long enough to cover the join and the rebalance.
LIVE_SECS=${LIVE_SECS:-60}
SETTLE_LIMIT=${SETTLE_LIMIT:-300}

log "building (release)"
(cd "$ROOT" && cargo build --release -p ringchat-node && cargo build --release -p ringchat-benches --bins) \
    >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; fail "build"; }
mkdir -p "$WORK/bin"
cp "$TARGET/release/ringchat" "$TARGET/release/loadgen" "$WORK/bin/"
BIN=$WORK/bin
timeout 300 sync || true

C_PIDS=()
C_URLS=()
C_ADDRS=()
for id in 1 2 3; do start_node "$id" "$WORK/c"; done
wait_settled 3 0

url_args=()
for u in "${C_URLS[@]}"; do url_args+=(--url "$u"); done
messages=$(( HISTORY_MB * 1024 * 1024 / PAD ))
fill_secs=$(( messages / FILL_RATE + 1 ))
log "filling: $messages messages of $PAD characters at $FILL_RATE/s ($fill_secs s)"
"$BIN/loadgen" "${url_args[@]}" --scenario dm --clients "$FILL_CLIENTS" --rate "$FILL_RATE" \
    --duration "$fill_secs" --pad-bytes "$PAD" --json --quiet --limit-secs $(( fill_secs + 300 )) >"$WORK/fill.out" 2>&1 ||
    { tail -n 20 "$WORK/fill.out" >&2; fail "fill run"; }
grep '^| ringchat' "$WORK/fill.out" >&2 || true
stored_text_mb=$(( $(grep '^{' "$WORK/fill.out" | jq -s 'map(.acked) | add') * PAD / 1024 / 1024 ))
log "history stored: ~${stored_text_mb} MiB of message text (acked sends × $PAD)"
for id in 1 2 3; do log "node $id data dir: $(du -sm "$WORK/c/n$id" | cut -f1) MB"; done

# The fill leaves the nodes busy for a while (memtable flushes, compactions, snapshots): the
# live window starts only once they are quiet (under 0.3 cores together over 3 s, at most
# QUIET_LIMIT s), so its p99 is the rebalance's, not the fill's aftermath.
QUIET_LIMIT=${QUIET_LIMIT:-300}
cpu_ticks() { local t=0 p; for p in "${C_PIDS[@]}"; do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done; echo "$t"; }
hz=$(getconf CLK_TCK)
quiet_from=$SECONDS
while :; do
    before=$(cpu_ticks); sleep 3; after=$(cpu_ticks)
    cores_x100=$(( (after - before) * 100 / hz / 3 ))
    [ "$cores_x100" -lt 30 ] && break
    [ $((SECONDS - quiet_from)) -lt "$QUIET_LIMIT" ] || { log "still busy (0.$cores_x100 cores) after $QUIET_LIMIT s; going on"; break; }
done
log "nodes quiet after the fill: $((SECONDS - quiet_from)) s"

pid_args=()
for p in "${C_PIDS[@]}"; do pid_args+=(--pid "$p"); done
log "live load: $LIVE_RATE msgs/s for $LIVE_SECS s, the 4th node joins once it sends"
"$BIN/loadgen" "${url_args[@]}" "${pid_args[@]}" --scenario dm --clients "$LIVE_CLIENTS" --rate "$LIVE_RATE" \
    --duration "$LIVE_SECS" --json --limit-secs $(( LIVE_SECS + 300 )) >"$WORK/live.out" 2>"$WORK/live.err" &
LG_PID=$!
PIDS+=("$LG_PID")
for _ in $(seq 600); do
    grep -q '^step 1 @' "$WORK/live.err" 2>/dev/null && break
    kill -0 "$LG_PID" 2>/dev/null || { tail -n 20 "$WORK/live.err" >&2; fail "live loadgen exited"; }
    sleep 0.5
done
sleep 5
joined_at=$SECONDS
start_node 4 "$WORK/c"
# Where the live window's tail comes from: every node's and the loadgen's CPU per second
# (cpu.log, % of one core) beside the loadgen's per-second slow deliveries (live.err).
sample_cpu() {
    local p prev=() now=() i line
    for p in "$@"; do prev+=("$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)"); done
    while sleep 1; do
        now=(); line="+$((SECONDS - joined_at))s"
        i=0
        for p in "$@"; do
            now+=("$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)")
            line+=" $(( (now[i] - prev[i]) * 100 / hz ))"
            i=$((i + 1))
        done
        prev=("${now[@]}")
        echo "$line"
    done
}
sample_cpu "${C_PIDS[@]}" "$LG_PID" >"$WORK/cpu.log" 2>/dev/null &
PIDS+=("$!")
log "cpu.log columns: time since the join, node 1..4, loadgen (% of a core)"
# Its share: every partition's committed replicas are exactly the placement's three (the
# 4th included somewhere), none of them moving, as `cluster status` reads them from the
# partitions' leaders, and no leader has node 4 more than a batch behind
# (`ringchat_raft_replication_lag_entries{peer="4"}` on every node).
# The most entries any leader has node 4 behind.
lag_of_4() {
    local u m=0 v
    for u in "${C_URLS[@]}"; do
        v=$(curl -s -m 2 "$u/metrics" | awk '/^ringchat_raft_replication_lag_entries\{peer="4"\}/ {print int($2)}' | sort -n | tail -1)
        [ -n "$v" ] && [ "$v" -gt "$m" ] && m=$v
    done
    echo "$m"
}
share_secs=
while [ $((SECONDS - joined_at)) -lt "$SETTLE_LIMIT" ]; do
    status=$(cluster_status) || status=
    if [ -n "$status" ] && jq -e '(.members | length) == 4 and all(.members[]; .state == "active")
            and any(.partitions[]; any(.replicas[]; . == 4))
            and all(.partitions[]; (.replicas | unique | length) == 3 and (.moving | not)
                    and ((.voters // []) | sort) == (.replicas | sort))' <<<"$status" >/dev/null \
            && [ "$(lag_of_4)" -le 64 ]; then
        share_secs=$((SECONDS - joined_at))
        break
    fi
    sleep 0.5
done
[ -n "$share_secs" ] || fail "the 4th node did not get its share within $SETTLE_LIMIT s"
log "4th node has its share $share_secs s after it started: $(layout_summary <<<"$status")"
wait_settled 4 4
settle_secs=$((SECONDS - joined_at))
bulk=0
for u in "${C_URLS[@]}"; do
    v=$(curl -s -m 2 "$u/metrics" | awk '/^ringchat_bulk_replication_bytes_total/ {print int($2)}' | head -1)
    bulk=$(( bulk + ${v:-0} ))
done
log "bulk replication sent (paced): $(( bulk / 1024 / 1024 )) MiB"
wait "$LG_PID" || { tail -n 20 "$WORK/live.err" >&2; fail "live loadgen"; }
forget_pids "$LG_PID"
[ $((SECONDS - joined_at)) -le $(( LIVE_SECS + 60 )) ] || log "note: the live window ended before the rebalance"
grep '^| ringchat' "$WORK/live.out" >&2 || true
live=$(grep '^{' "$WORK/live.out" | head -1)
p99=$(jq -r '.p99_ms' <<<"$live")
lost=$(jq -r '.lost' <<<"$live")
errors=$(jq -r '.errors' <<<"$live")
node4_mb=$(du -sm "$WORK/c/n4" | cut -f1)
echo
echo "| history (message text) | 4th node's share | settled (leaders too) | node 4 data dir | live load | p99 over the window | lost | errors |"
echo "|---|---|---|---|---|---|---|---|"
echo "| ~${stored_text_mb} MiB | ${share_secs} s | ${settle_secs} s | ${node4_mb} MB | $LIVE_RATE msgs/s, $LIVE_CLIENTS clients, ${LIVE_SECS} s | ${p99} ms | ${lost} | ${errors} |"
stop_cluster
