#!/usr/bin/env bash
# Starts (or stops) a 3-node ringchat cluster on loopback for trying things out.
#
#   deploy/local-cluster.sh start   # builds, starts nodes 1-3, waits until all are ready
#   deploy/local-cluster.sh status  # ringchat cluster status
#   deploy/local-cluster.sh stop    # SIGTERM to every node it started
#
# Clients: http://127.0.0.1:7101, :7102, :7103 (any node serves everything).
# Data and logs: ${RINGCHAT_LOCAL_DIR:-./local-cluster}/n<id>{,.log}.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${RINGCHAT_LOCAL_DIR:-./local-cluster}
export RINGCHAT_CLUSTER_SECRET=${RINGCHAT_CLUSTER_SECRET:-local-cluster-secret-change-me}
BIN=./target/release/ringchat

start() {
  cargo build --release -p ringchat-node
  mkdir -p "$DIR"
  for id in 1 2 3; do
    if [ -f "$DIR/n$id.pid" ] && kill -0 "$(cat "$DIR/n$id.pid")" 2>/dev/null; then
      echo "node $id already running"; continue
    fi
    join=()
    [ "$id" != 1 ] && join=(--join 127.0.0.1:7201)
    "$BIN" serve --node-id "$id" --data-dir "$DIR/n$id" \
      --listen "127.0.0.1:710$id" --cluster-listen "127.0.0.1:720$id" "${join[@]}" \
      >>"$DIR/n$id.log" 2>&1 &
    echo $! >"$DIR/n$id.pid"
    for _ in $(seq 1 150); do
      curl -fs "http://127.0.0.1:710$id/readyz" >/dev/null 2>&1 && break
      sleep 0.2
    done
    curl -fs "http://127.0.0.1:710$id/readyz" >/dev/null || { echo "node $id not ready; see $DIR/n$id.log"; exit 1; }
    echo "node $id ready: http://127.0.0.1:710$id"
  done
  # Replicas move to the new nodes within seconds; wait (bounded) until every partition has 3.
  for _ in $(seq 1 120); do
    status=$("$BIN" cluster status --partitions --node 127.0.0.1:7201 2>/dev/null || true)
    total=$(grep -cE '^ +[0-9]+ +target \[' <<<"$status" || true)
    full=$(grep -cE 'target \[[0-9]+,[0-9]+,[0-9]+\]' <<<"$status" || true)
    [ "$total" -gt 0 ] && [ "$total" = "$full" ] && break
    sleep 0.5
  done
  "$BIN" cluster status --node 127.0.0.1:7201
}

stop() {
  for id in 1 2 3; do
    [ -f "$DIR/n$id.pid" ] || continue
    pid=$(cat "$DIR/n$id.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/n$id.pid"
    echo "node $id stopped"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) "$BIN" cluster status --node 127.0.0.1:7201 ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
