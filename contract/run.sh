#!/usr/bin/env bash
# Contract test: the gateway against its own OpenAPI document (SPEC §4.2:
# "exact enough to contract-test: every 4xx uses the JSON error envelope").
#
# Starts `switchboard serve` on an ephemeral loopback port with a fresh SQLite
# database, an admin token and one connector, then runs Schemathesis against
# /v1/openapi.json with every check, a fixed seed and a bounded number of
# examples per operation. Exits non-zero on any failure.
#
# Schemathesis and everything it imports are pinned with hashes in
# contract/requirements.txt (regenerate with pip-compile, see its header) and
# installed, wheels only, into a virtualenv under target/ that is rebuilt
# whenever that file changes.
#
# Settings (environment):
#   SWITCHBOARD_BIN    the gateway binary (default target/release/switchboard;
#                      `make contract` passes the test build, target/debug/switchboard)
#   CONTRACT_EXAMPLES  examples per operation (default 300)
#   CONTRACT_SEED      overrides the seed in contract/schemathesis.toml
#   PYTHON             the interpreter the virtualenv is made from (python3)
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${SWITCHBOARD_BIN:-target/release/switchboard}"
venv="target/contract/venv"
examples="${CONTRACT_EXAMPLES:-300}"
python="${PYTHON:-python3}"

if [[ ! -x "$bin" ]]; then
  echo "contract: $bin is missing; build it with: cargo build --release -p switchboard" >&2
  exit 2
fi

want="$(sha256sum contract/requirements.txt | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/schemathesis" || "$(cat "$venv/.requirements" 2>/dev/null)" != "$want" ]]; then
  echo "contract: installing Schemathesis into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    --require-hashes --no-deps --only-binary=:all: -r contract/requirements.txt
  echo "$want" >"$venv/.requirements"
fi

work="$(mktemp -d)"
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

token="contract-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# The shipped webhook connector when it is built (make connectors), so the
# component routes have a version to list and roll back; else none.
component=""
if [[ -f target/wasm32-wasip2/release/webhook.wasm ]]; then
  component="component = \"$PWD/target/wasm32-wasip2/release/webhook.wasm\""
fi
cat >"$work/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[[server.tokens]]
name = "contract"
token = "$token"
scopes = ["admin"]

[storage]
url = "sqlite://$work/contract.db"

# The connector the document's examples name. Its upstream does not answer:
# deliveries are retried, which is all this test needs of them.
[[connectors]]
name = "hss"
$component
routes = ["number.*"]
allowed_hosts = ["127.0.0.1:9"]

[connectors.config]
url = "http://127.0.0.1:9/op"
EOF

# Only this gateway's settings apply, whatever the caller's environment holds.
while IFS='=' read -r name _; do
  [[ "$name" == SWITCHBOARD_* ]] && unset "$name"
done < <(env)

RUST_LOG="${RUST_LOG:-warn}" "$bin" serve --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
pid=$!

addr=""
for _ in $(seq 1 300); do
  addr="$(sed -n 's/^listening on //p' "$work/gateway.log" | head -n1)"
  [[ -n "$addr" ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "contract: the gateway exited before listening:" >&2
    cat "$work/gateway.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z "$addr" ]]; then
  echo "contract: the gateway did not listen within 30 s:" >&2
  cat "$work/gateway.log" >&2
  exit 1
fi
base="http://$addr"

"$venv/bin/python" - "$base/readyz" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("contract: the gateway was not ready within 30 s")
PY

args=(
  run "$base/v1/openapi.json"
  --url "$base"
  --header "Authorization: Bearer $token"
  --checks all
  --max-examples "$examples"
  --workers 1
)
if [[ -n "${CONTRACT_SEED:-}" ]]; then
  args+=(--seed "$CONTRACT_SEED")
fi

started=$SECONDS
status=0
"$venv/bin/schemathesis" --no-color --config-file contract/schemathesis.toml "${args[@]}" || status=$?
echo "contract: schemathesis finished in $((SECONDS - started)) s with status $status"

if ! kill -0 "$pid" 2>/dev/null; then
  echo "contract: the gateway died during the run:" >&2
  status=1
fi
if [[ $status -ne 0 ]]; then
  echo "--- gateway log (last 50 lines) ---" >&2
  tail -n 50 "$work/gateway.log" >&2
fi
exit "$status"
