#!/usr/bin/env bash
# One cluster DM measurement for a closer look than the suite's: a fresh N-node cluster started
# exactly as benches/run.sh starts it (64 partitions, default flags, settled, Raft group counts
# steady), then one loadgen run against every node, each output line stamped with the time (to
# line up a latency spike with the nodes' logs or fjall's file mtimes in the kept work dir).
# Uses the release binaries already built (cargo build --release -p ringchat-node
# -p ringchat-benches); never builds, so nothing compiles beside the measurement.
#
#   benches/prof.sh N RATE SECS            # fixed RATE for SECS s; prints the loadgen table
#   FINDMAX=1 benches/prof.sh N RATE 0     # the suite's --find-max, starting at RATE
#   PERF=1 …                               # perf record on node 1 once the load runs
#     PERF_DELAY=3 PERF_SECS=8 PERF_F=499  #   when, how long, how often (defaults); to
#                                          #   $WORK/perf.data
#   KEEP=1 …                               # keep the work dir (logs, lg.out, perf.data)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[ $# -eq 3 ] || { echo "usage: $0 NODES RATE SECS" >&2; exit 2; }
N=$1 RATE=$2 SECS=$3
WORK=$(mktemp -d /tmp/ringchat-prof.XXXXXX)
# shellcheck source=benches/cluster-lib.sh
. "$ROOT/benches/cluster-lib.sh"

mkdir -p "$WORK/bin"
cp "$TARGET/release/ringchat" "$TARGET/release/loadgen" "$WORK/bin/"
BIN=$WORK/bin
SETTLE_LIMIT=120
C_PIDS=()
C_URLS=()
C_ADDRS=()
for i in $(seq "$N"); do start_node "$i" "$WORK/c"; done
wait_settled "$N" 0
wait_groups_steady

args=()
for u in "${C_URLS[@]}"; do args+=(--url "$u"); done
for p in "${C_PIDS[@]}"; do args+=(--pid "$p"); done
stamp() { while IFS= read -r l; do echo "$(date +%T.%3N) $l"; done; }
if [ "${FINDMAX:-0}" = 1 ]; then
    "$BIN/loadgen" "${args[@]}" --scenario dm --clients 2000 --rate "$RATE" --duration 5 --find-max \
        --limit-secs 400 2>&1 | stamp >"$WORK/lg.out"
    grep -E "step [0-9]+ (@|done)" "$WORK/lg.out"
else
    "$BIN/loadgen" "${args[@]}" --scenario dm --clients 2000 --rate "$RATE" --duration "$SECS" \
        --limit-secs 400 2>&1 | stamp >"$WORK/lg.out" &
    lg=$!
    # The load starts after every client signed up and connected (about a minute).
    for _ in $(seq 600); do grep -q "step 1 @" "$WORK/lg.out" && break; sleep 0.5; done
    if [ "${PERF:-0}" = 1 ]; then
        sleep "${PERF_DELAY:-3}"
        perf record -g --call-graph dwarf,16384 -F "${PERF_F:-499}" -o "$WORK/perf.data" \
            -p "${C_PIDS[0]}" -- sleep "${PERF_SECS:-8}" >/dev/null 2>&1
    fi
    wait "$lg"
    grep "step 1 @" "$WORK/lg.out" | awk '{print $1, "worst", $(NF-3), "ms"}'
    tail -n 3 "$WORK/lg.out"
fi
for u in "${C_URLS[@]}"; do
    curl -s -m 2 "$u/metrics" | grep -E "^ringchat_(fsync_total|fsync_requests_total|raft_groups) " | tr '\n' ' '
    echo
done
log "work dir: $WORK (kept with KEEP=1)"
