#!/bin/bash
# Container health check: GET /healthz on the client port named by RINGCHAT_LISTEN (default
# 7070), with bash's /dev/tcp only, so the runtime image needs no curl or wget.
set -eu
listen="${RINGCHAT_LISTEN:-0.0.0.0:7070}"
port="${listen##*:}"
host="${listen%:*}"
case "$host" in 0.0.0.0 | "[::]" | "") host=127.0.0.1 ;; esac
host="${host#[}"
host="${host%]}"
exec 3<>"/dev/tcp/${host}/${port}"
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
IFS= read -r -t 3 status <&3
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "healthz: ${status:-no answer}" >&2; exit 1 ;;
esac
