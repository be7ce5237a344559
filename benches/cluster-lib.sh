# Helpers shared by benches/run.sh and benches/rebalance.sh: cleanup on exit, free ports,
# readiness waits, and starting/settling/stopping a local cluster. Sourced, not run; the caller
# sets WORK first, and before starting nodes BIN, SETTLE_LIMIT and C_PIDS=() C_URLS=() C_ADDRS=().
# shellcheck shell=bash

PIDS=()     # processes stopped on exit
LOGS=()     # logs whose tails are printed on failure
PORTS=()    # ports handed out by free_port (two picks must not collide before either binds)
# Cluster RPC secret of this run's clusters (never reused: the data dirs are fresh).
CLUSTER_SECRET=bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

dump_logs() {
    local l
    for l in "${LOGS[@]}"; do
        [ -f "$l" ] || continue
        echo "--- last lines of $l" >&2
        tail -n 15 "$l" >&2
    done
}

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    if [ "$rc" != 0 ]; then dump_logs; fi
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        # Bounded wait: SIGKILL whatever is still there after 10 s.
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "[$(basename "$0")] command failed at line $LINENO" >&2' ERR

log() { echo "[$(basename "$0") $(date +%T)] $*" >&2; }
fail() { echo "[$(basename "$0") $(date +%T)] FAILED: $*" >&2; exit 1; }

# Sets PORT to a free loopback port this run has not handed out before: random below the
# kernel's ephemeral range (so no outgoing connection of this or another process can hold it by
# the time a node binds it), and no TCP socket in any state on it (checked with ss).
EPHEMERAL_LO=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
if [ "$EPHEMERAL_LO" -gt 25000 ]; then PORT_LO=20000; PORT_SPAN=$((EPHEMERAL_LO - 20000)); else PORT_LO=61000; PORT_SPAN=4000; fi
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((PORT_LO + RANDOM % PORT_SPAN))
        if [[ " ${PORTS[*]} " == *" $p "* ]]; then continue; fi
        if ! ss -tanH "sport = :$p" | grep -q .; then PORTS+=("$p"); PORT=$p; return; fi
    done
    fail "no free port"
}

# wait_ready URL PID LOG: polls URL until it answers 200, at most 30 s; fails at once if PID
# exits.
wait_ready() {
    local url=$1 pid=$2 logf=$3
    for _ in $(seq 300); do
        if [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$url" || true)" = 200 ]; then return; fi
        kill -0 "$pid" 2>/dev/null || fail "pid $pid exited before $url was ready (log: $logf)"
        sleep 0.1
    done
    fail "$url not ready after 30 s (log: $logf)"
}

# stop_pids PID…: SIGTERM, bounded wait (10 s, then SIGKILL), and forget them (so the trap
# never signals a reused pid).
stop_pids() {
    local p
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    forget_pids "$@"
}

# forget_pids PID…: drop them from PIDS (they have exited and been waited for).
forget_pids() {
    local q keep=()
    for q in "${PIDS[@]}"; do
        [[ " $* " == *" $q "* ]] || keep+=("$q")
    done
    PIDS=("${keep[@]}")
}


# cluster_status: `ringchat cluster status --json` via the first node (bounded: 10 s).
cluster_status() {
    RINGCHAT_CLUSTER_SECRET=$CLUSTER_SECRET timeout 10 \
        "$BIN/ringchat" cluster status --json --node "${C_ADDRS[0]}" 2>/dev/null
}

# start_node ID DIR: starts cluster node ID (data DIR/nID, log DIR/nID.log); node 1 bootstraps,
# the others join node 1's cluster address. Waits until it is ready. NODE_FLAGS (split on
# spaces) are added to every node's flags, for a comparison.
start_node() {
    local id=$1 dir=$2 port cport pid join=()
    free_port; port=$PORT
    free_port; cport=$PORT
    [ "${#C_ADDRS[@]}" -gt 0 ] && join=(--join "${C_ADDRS[0]}")
    mkdir -p "$dir"
    # NODE_FLAGS is split on spaces on purpose (several flags).
    # shellcheck disable=SC2086
    "$BIN/ringchat" serve --node-id "$id" --data-dir "$dir/n$id" --listen "127.0.0.1:$port" \
        --cluster-listen "127.0.0.1:$cport" --cluster-secret "$CLUSTER_SECRET" \
        --send-rate 90 --send-burst 200 --signups-per-minute 1000000 "${join[@]}" ${NODE_FLAGS:-} \
        >"$dir/n$id.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    LOGS+=("$dir/n$id.log")
    C_PIDS+=("$pid")
    C_URLS+=("http://127.0.0.1:$port")
    C_ADDRS+=("127.0.0.1:$cport")
    wait_ready "http://127.0.0.1:$port/readyz" "$pid" "$dir/n$id.log"
    log "cluster node $id (pid $pid) ready on http://127.0.0.1:$port, cluster 127.0.0.1:$cport"
}

# A layout summary of a status JSON on stdin: replicas and leaders per node.
layout_summary() {
    jq -r '"replicas per node " + ([.partitions[].replicas[]] | group_by(.) | map("n\(.[0])=\(length)") | join(" "))
        + "; leaders per node " + ([.partitions[].leader] | group_by(.) | map("n\(.[0])=\(length)") | join(" "))
        + " (\(.partitions | length) partitions)"'
}

# wait_settled N NEW: waits (≤ SETTLE_LIMIT s) until the cluster has N active members, every
# partition led by its preferred replica (leader balancing done, see docs/cluster.md), every
# partition has min(3, N) distinct replicas and a leader among them, node NEW (0: any) holds
# replicas, and the replica layout is unchanged over three polls (~1 s): rebalancing is over.
# Sets SETTLE_SECS.
wait_settled() {
    local n=$1 new=$2 r=$(( $1 < 3 ? $1 : 3 )) start=$SECONDS status fp prev='' same=0
    while [ $((SECONDS - start)) -lt "$SETTLE_LIMIT" ]; do
        status=$(cluster_status) || status=
        if [ -n "$status" ] && jq -e --argjson n "$n" --argjson r "$r" --argjson new "$new" '
                (.members | length) == $n and all(.members[]; .state == "active")
                and (.partitions | length) > 0
                and all(.partitions[]; (.replicas | unique | length) == $r and .leader != null
                        and (.leader as $l | any(.replicas[]; . == $l)))
                and ($new == 0 or any(.partitions[]; any(.replicas[]; . == $new)))
                and all(.partitions[]; .leader == .replicas[0])' \
                <<<"$status" >/dev/null; then
            fp=$(jq -c '[.partitions[] | [.partition, (.replicas | sort)]]' <<<"$status")
            if [ "$fp" = "$prev" ]; then same=$((same + 1)); else same=0; prev=$fp; fi
            if [ "$same" -ge 2 ]; then
                SETTLE_SECS=$((SECONDS - start))
                log "$n-node cluster settled in ${SETTLE_SECS} s: $(layout_summary <<<"$status")"
                return
            fi
        else
            same=0; prev=
        fi
        sleep 0.5
    done
    echo "last cluster status: ${status:-none}" | cut -c1-2000 >&2
    fail "$n-node cluster not settled within $SETTLE_LIMIT s"
}

# wait_groups_steady: waits (≤ SETTLE_LIMIT s) until every cluster node's count of Raft groups
# (`ringchat_raft_groups`) is unchanged over 10 polls (5 s): the groups of replica sets no
# partition has any more are dropped and closed (docs/raft-groups.md).
wait_groups_steady() {
    local start=$SECONDS now prev='' same=0 u
    while [ $((SECONDS - start)) -lt "$SETTLE_LIMIT" ]; do
        now=''
        for u in "${C_URLS[@]}"; do
            now+="$(curl -s -m 2 "$u/metrics" | awk '/^ringchat_raft_groups /{print $2}') "
        done
        if [ "$now" = "$prev" ]; then same=$((same + 1)); else same=0; prev=$now; fi
        if [ "$same" -ge 10 ]; then log "Raft groups per node steady: $now"; return; fi
        sleep 0.5
    done
    fail "Raft group counts not steady within $SETTLE_LIMIT s: $now"
}

# The layout right now (for the doc), or "unknown".
layout_now() { cluster_status | layout_summary 2>/dev/null || echo unknown; }

stop_cluster() {
    log "stopping the cluster (pids ${C_PIDS[*]})"
    stop_pids "${C_PIDS[@]}"
    C_PIDS=(); C_URLS=(); C_ADDRS=()
}
