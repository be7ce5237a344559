#!/bin/sh
# Start `ringchat serve` as member N of a StatefulSet: node id = pod ordinal + 1 (pod
# `ringchat-0` is node 1), and every pod but ordinal 0 joins the cluster through the seed.
#
#   POD_NAME             the pod's name (from the downward API; default: $HOSTNAME)
#   RINGCHAT_PEER_DOMAIN the headless Service's domain, e.g. ringchat-cluster.chat.svc.cluster.local:
#                        sets --advertise to <pod>.<domain>:<cluster port> and the seed to
#                        <set>-0.<domain>:<cluster port>
#   RINGCHAT_SEED        the cluster address to join (overrides the seed above)
#
# --join is ignored once the data dir holds a node, so restarts keep their identity. Ordinal 0
# bootstraps a new cluster only when its data dir is empty: if its volume is lost, start it
# with RINGCHAT_SEED set to another member so it joins instead (docs/operations.md).
set -eu
# shellcheck disable=SC3028 # the container runtime sets HOSTNAME to the pod name
name="${POD_NAME:-${HOSTNAME:-}}"
ordinal="${name##*-}"
case "$ordinal" in
  "" | *[!0-9]*) echo "ringchat-statefulset: no ordinal in pod name '$name'" >&2; exit 2 ;;
esac
RINGCHAT_NODE_ID=$((ordinal + 1))
export RINGCHAT_NODE_ID
cluster_port="${RINGCHAT_CLUSTER_LISTEN:-0.0.0.0:7071}"
cluster_port="${cluster_port##*:}"
seed="${RINGCHAT_SEED:-}"
if [ -n "${RINGCHAT_PEER_DOMAIN:-}" ]; then
  RINGCHAT_ADVERTISE="${RINGCHAT_ADVERTISE:-${name}.${RINGCHAT_PEER_DOMAIN}:${cluster_port}}"
  export RINGCHAT_ADVERTISE
  seed="${seed:-${name%-*}-0.${RINGCHAT_PEER_DOMAIN}:${cluster_port}}"
fi
if [ "$ordinal" != 0 ] || [ -n "${RINGCHAT_SEED:-}" ]; then
  if [ -z "$seed" ]; then
    echo "ringchat-statefulset: set RINGCHAT_PEER_DOMAIN or RINGCHAT_SEED" >&2
    exit 2
  fi
  RINGCHAT_JOIN="$seed"
  export RINGCHAT_JOIN
fi
echo "ringchat-statefulset: pod ${name} is node ${RINGCHAT_NODE_ID}, join ${RINGCHAT_JOIN:-none (bootstrap)}" >&2
exec /usr/local/bin/ringchat serve "$@"
