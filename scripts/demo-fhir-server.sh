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
# here is reachable from another machine. Needs Node.js >= 20.19 with npm, and curl. The FHIR
# server itself is the one the tests use (tests/fhir-server); this script is how users start it.
set -euo pipefail

SCRIPT=demo-fhir-server
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_traps
exit_when_stdin_closes

BUNDLE="$ROOT/examples/demo/patients.json"
PORT="${DEMO_FHIR_PORT:-8090}"

while [ $# -gt 0 ]; do
  case "$1" in
    --port)
      [ $# -ge 2 ] || die "--port needs a value"
      PORT="$2"
      shift 2
      ;;
    -h | --help)
      sed -n '4,23p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
[[ "$PORT" =~ ^[0-9]{1,5}$ ]] && [ "$PORT" -le 65535 ] || die "--port must be a port number (0-65535)"
need node npm curl

# 1-2. The FHIR server (its packages installed first when needed), open, pages of 100.
start_fhir_server "$LIB_WORK/server.log" --open --page-size 100
# Its messages, as they come (the server's own log is short: startup and errors).
tail -n +1 -f --pid=$$ "$LIB_WORK/server.log" >&2 9>&- &
LIB_PIDS+=("$!")

# 3. The CORS front on the advertised port; it prints `LISTENING <port>` like the server.
node "$ROOT/scripts/demo-cors-proxy.js" --port "$PORT" --target-port "$FHIR_PORT" \
  <"$LIFELINE" >"$LIB_WORK/proxy.out" 2>&1 9>&- &
PROXY_PID=$!
LIB_PIDS+=("$PROXY_PID")
PORT=$(wait_port "$LIB_WORK/proxy.out" "$PROXY_PID" "the CORS proxy (is port $PORT free? try --port)" \
  's/^LISTENING \([0-9]*\).*/\1/p' "$LIB_WORK/proxy.out")
BASE="http://127.0.0.1:$PORT/fhir/R4"

# 4. The demo patients, as one transaction, through the proxy (as a browser would see them).
LOADED=$(load_bundle "$BASE" "$BUNDLE")
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
wait -n "$FHIR_PID" "$PROXY_PID"
CODE=$?
set -e
exit "$CODE"
