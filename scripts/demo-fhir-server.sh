#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Start a local FHIR R4 server loaded with the synthetic demo patients, for trying iort-cds by
# hand or in the CDS Hooks Sandbox (see "Try it in the CDS Hooks Sandbox" in README.md).
#
#   scripts/demo-fhir-server.sh [--port N]      (default 8090, or $DEMO_FHIR_PORT; 0 = any free)
#
# What it does:
#   1. installs the test FHIR server's pinned npm packages (npm ci) when they are missing;
#   2. starts tests/fhir-server/server.js in open mode (no token, like the Sandbox's own FHIR
#      server) on a free loopback port, with pages of up to 100 entries (browser clients such as
#      the Sandbox do not follow paging links when they fill prefetch);
#   3. puts scripts/demo-cors-proxy.js in front of it on 127.0.0.1:PORT, so a web page (the
#      Sandbox) may read it;
#   4. loads examples/demo/patients.json (a transaction Bundle) with curl;
#   5. prints the fhirServer URL and the demo patients (id, name, birth date), then serves
#      until Ctrl-C.
#
# Data lives in memory only: every start begins from the demo Bundle. Loopback only: nothing
# here is reachable from another machine. Needs Node.js >= 20.19 with npm, and curl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVER_DIR="$ROOT/tests/fhir-server"
BUNDLE="$ROOT/examples/demo/patients.json"
PORT="${DEMO_FHIR_PORT:-8090}"
START_TIMEOUT_SECS=60

die() {
  echo "demo-fhir-server: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --port)
      [ $# -ge 2 ] || die "--port needs a value"
      PORT="$2"
      shift 2
      ;;
    -h | --help)
      sed -n '4,21p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
[[ "$PORT" =~ ^[0-9]{1,5}$ ]] && [ "$PORT" -le 65535 ] || die "--port must be a port number (0-65535)"

for tool in node npm curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (needs Node.js >= 20.19 with npm, and curl)"
done

# 1. The server's packages, pinned by its package-lock.json (the same check as the Rust tests).
if [ ! -f "$SERVER_DIR/node_modules/@medplum/fhir-router/package.json" ] ||
  [ ! -f "$SERVER_DIR/node_modules/.package-lock.json" ] ||
  [ "$SERVER_DIR/package-lock.json" -nt "$SERVER_DIR/node_modules/.package-lock.json" ]; then
  echo "demo-fhir-server: installing the FHIR server's npm packages (npm ci in tests/fhir-server)" >&2
  (cd "$SERVER_DIR" && npm ci --no-audit --no-fund --ignore-scripts >&2) || die "npm ci failed"
fi

WORK=$(mktemp -d)
SERVER_PID=""
PROXY_PID=""
cleanup() {
  for pid in "$PROXY_PID" "$SERVER_PID"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait for `LISTENING <port>` in a process's output file; prints the port.
wait_listening() {
  local file="$1" pid="$2" what="$3" waited=0
  while :; do
    if grep -q '^LISTENING ' "$file" 2>/dev/null; then
      sed -n 's/^LISTENING \([0-9]*\).*/\1/p' "$file" | head -n 1
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die "$what exited before listening (its messages are above)"
    [ "$waited" -lt $((START_TIMEOUT_SECS * 10)) ] || die "$what did not listen within ${START_TIMEOUT_SECS}s"
    sleep 0.1
    waited=$((waited + 1))
  done
}

# 2. The FHIR server. Its stdin is this script's (`<&0`; a background job would otherwise get
# /dev/null): when a test harness starts this script with a pipe and dies, the pipe closes and
# the servers exit with it.
node "$SERVER_DIR/server.js" --open --port 0 --page-size 100 <&0 >"$WORK/server.out" &
SERVER_PID=$!
INNER_PORT=$(wait_listening "$WORK/server.out" "$SERVER_PID" "the FHIR server")

# 3. The CORS front on the advertised port.
node "$ROOT/scripts/demo-cors-proxy.js" --port "$PORT" --target-port "$INNER_PORT" <&0 >"$WORK/proxy.out" &
PROXY_PID=$!
PORT=$(wait_listening "$WORK/proxy.out" "$PROXY_PID" "the CORS proxy (is port $PORT free? try --port)")
BASE="http://127.0.0.1:$PORT/fhir/R4"

# 4. The demo patients, as one transaction, through the proxy (as a browser would see them).
STATUS=$(curl -sS -o "$WORK/load.json" -w '%{http_code}' -X POST \
  -H 'Content-Type: application/fhir+json' -H 'Accept: application/fhir+json' \
  --data-binary @"$BUNDLE" "$BASE") || die "could not POST the demo Bundle to $BASE"
if [ "$STATUS" != "200" ] || ! grep -q '"transaction-response"' "$WORK/load.json"; then
  cat "$WORK/load.json" >&2 || true
  die "loading $BUNDLE answered HTTP $STATUS"
fi
LOADED=$(grep -o '"status":"20[01][^"]*"' "$WORK/load.json" | wc -l | tr -d ' ')
# Each patient's id, then its name and birth date as the Sandbox's patient list shows them.
PATIENTS=$(node -e '
const bundle = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
for (const { resource: r } of bundle.entry ?? []) {
  if (r?.resourceType !== "Patient") continue;
  const name = r.name?.[0] ?? {};
  const label = [...(name.given ?? []), name.family].filter(Boolean).join(" ");
  console.log(`${r.id}  (${label}, ${r.birthDate ?? "no birth date"})`);
}' "$BUNDLE") || die "could not read the patients of $BUNDLE"

# 5. What to use.
echo "Demo FHIR server ready: open (no token), CORS enabled, $LOADED resources loaded (synthetic data)."
echo "fhirServer: $BASE"
echo "Demo patients:"
while IFS= read -r p; do
  echo "  $p"
done <<<"$PATIENTS"
echo "Press Ctrl-C to stop."

# Serve until either process ends (or Ctrl-C / SIGTERM, which the traps turn into cleanup).
set +e
wait -n "$SERVER_PID" "$PROXY_PID"
CODE=$?
set -e
exit "$CODE"
