# shellcheck shell=bash
# SPDX-License-Identifier: Apache-2.0
#
# What the scripts under scripts/ share: sourced, never run. One way to check tools, to install
# the FHIR server's npm packages, to start the FHIR server and the service on ports the system
# chooses (each prints the port it bound on one line, so nobody hunts for a free port), and to
# stop them.
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"      (from scripts/; ../lib.sh from scripts/load/)
#
# The caller sets SCRIPT (its name, for messages) before sourcing, and calls `lib_cleanup` from
# its EXIT trap (or uses `lib_traps`, which sets EXIT / INT / TERM traps that do just that).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FHIR_SERVER_DIR="$ROOT/tests/fhir-server"
# Where cargo builds (CARGO_TARGET_DIR, as cargo reads it).
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
START_TIMEOUT_SECS="${START_TIMEOUT_SECS:-60}"
SCRIPT="${SCRIPT:-$(basename "$0" .sh)}"
LIB_WORK=$(mktemp -d)
LIB_PIDS=()

die() {
  echo "$SCRIPT: $*" >&2
  exit 1
}

say() {
  echo "$SCRIPT: $*" >&2
}

# need TOOL...: each must be on PATH.
need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
  done
}

# need_package TOOL PACKAGE: TOOL from Debian's PACKAGE. Installed when missing only if this
# runs as root, and said so; otherwise the message says what to run. Never sudo behind the
# user's back.
need_package() {
  local tool="$1" package="$2"
  command -v "$tool" >/dev/null 2>&1 && return 0
  [ "$(id -u)" -eq 0 ] || die "$tool is not installed: run \`sudo apt-get install $package\`"
  say "installing $package (apt-get install $package)"
  apt-get install -y -q "$package" >&2 || { apt-get update -q >&2 && apt-get install -y -q "$package" >&2; } ||
    die "could not install $package"
}

# The FHIR server's npm packages, pinned by its package-lock.json: installed when missing or
# older than the lock file (the same rule as the Rust tests' launcher).
ensure_fhir_server_packages() {
  need node npm
  if [ ! -f "$FHIR_SERVER_DIR/node_modules/@medplum/fhir-router/package.json" ] ||
    [ ! -f "$FHIR_SERVER_DIR/node_modules/.package-lock.json" ] ||
    [ "$FHIR_SERVER_DIR/package-lock.json" -nt "$FHIR_SERVER_DIR/node_modules/.package-lock.json" ]; then
    say "installing the FHIR server's npm packages (npm ci in tests/fhir-server)"
    (cd "$FHIR_SERVER_DIR" && npm ci --no-audit --no-fund --ignore-scripts >&2) || die "npm ci failed"
  fi
}

# wait_port FILE PID WHAT SED_EXPR: wait until PID's output FILE has the line SED_EXPR turns
# into a port number; print it. Dies when PID exits first or after START_TIMEOUT_SECS.
wait_port() {
  local file="$1" pid="$2" what="$3" expr="$4" waited=0 port
  while :; do
    port=$(sed -n "$expr" "$file" 2>/dev/null | head -n 1)
    if [ -n "$port" ]; then
      echo "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die "$what exited before listening${5:+ (see $5)}"
    [ "$waited" -lt $((START_TIMEOUT_SECS * 10)) ] || die "$what did not listen within ${START_TIMEOUT_SECS}s"
    sleep 0.1
    waited=$((waited + 1))
  done
}

# The servers started here (the FHIR server, the demo's CORS front) read their stdin from a
# pipe, LIFELINE, that only this shell holds open for writing (fd 9), and exit when it closes:
# when the script dies, however it dies, they go with it. Every child started after it must be
# started with `9>&-`, or it holds the pipe open.
lib_lifeline() {
  [ -n "${LIFELINE:-}" ] && return 0
  LIFELINE="$LIB_WORK/lifeline"
  mkfifo "$LIFELINE"
  exec 8<>"$LIFELINE" # a reader of our own, so that opening the write end does not wait
  exec 9>"$LIFELINE"
  exec 8<&-
}

# When this script's stdin is a pipe (a test harness started it), end the script when that
# pipe closes, as if Ctrl-C was pressed.
exit_when_stdin_closes() {
  if [ -p /dev/stdin ]; then
    { cat >/dev/null; kill -TERM $$ 2>/dev/null; } <&0 9>&- &
    LIB_PIDS+=("$!")
  fi
}
# start_fhir_server LOG [ARGS...]: tests/fhir-server/server.js on a loopback port it chooses
# (ARGS e.g. --open --page-size 100); sets FHIR_PID, FHIR_PORT and FHIR_BASE
# (http://127.0.0.1:PORT/fhir/R4). Its messages go to LOG.
start_fhir_server() {
  local log="$1"
  shift
  ensure_fhir_server_packages
  lib_lifeline
  # `9>&-`: the server must not hold the write end itself (nor must any child: see
  # `lib_lifeline`).
  node "$FHIR_SERVER_DIR/server.js" --port 0 "$@" <"$LIFELINE" >"$LIB_WORK/fhir.out" 2>"$log" 9>&- &
  FHIR_PID=$!
  LIB_PIDS+=("$FHIR_PID")
  FHIR_PORT=$(wait_port "$LIB_WORK/fhir.out" "$FHIR_PID" "the FHIR server" 's/^LISTENING \([0-9]*\).*/\1/p' "$log")
  FHIR_BASE="http://127.0.0.1:$FHIR_PORT/fhir/R4"
}

# load_bundle BASE FILE: POST a transaction Bundle; dies unless it is answered 200 with a
# transaction-response. Prints how many entries were created or updated.
load_bundle() {
  local base="$1" file="$2" status
  status=$(curl -sS -o "$LIB_WORK/load.json" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/fhir+json' -H 'Accept: application/fhir+json' \
    --data-binary @"$file" "$base") || die "could not POST $file to $base"
  if [ "$status" != "200" ] || ! grep -q '"transaction-response"' "$LIB_WORK/load.json"; then
    head -c 2000 "$LIB_WORK/load.json" >&2 || true
    die "loading $file answered HTTP $status"
  fi
  grep -o '"status":"20[01][^"]*"' "$LIB_WORK/load.json" | wc -l | tr -d ' '
}

# start_service BIN LOG [ARGS...]: the service on a loopback port the system chooses
# (`serve --listen 127.0.0.1:0 ARGS`); sets SERVICE_PID, SERVICE_PORT and SERVICE_URL
# (http://127.0.0.1:PORT). Its log goes to LOG. With SERVICE_LIFETIME_SECS set, `timeout`
# ends it after that long even if this script is killed (SERVICE_PID is still the service's).
# Its audit store is a file in the work folder unless IORT_CDS_STORE_URL or ARGS say otherwise,
# so no script leaves an iort-cds.db behind.
start_service() {
  local bin="$1" log="$2" wrapper out
  shift 2
  [ -x "$bin" ] || die "$bin is not an executable (cargo build --release)"
  out="$LIB_WORK/service-$RANDOM.out"
  export IORT_CDS_STORE_URL="${IORT_CDS_STORE_URL:-sqlite://$LIB_WORK/store.db}"
  if [ -n "${SERVICE_LIFETIME_SECS:-}" ]; then
    timeout --signal=TERM --kill-after=10 "$SERVICE_LIFETIME_SECS" \
      "$bin" serve --listen 127.0.0.1:0 "$@" </dev/null >"$out" 2>"$log" 9>&- &
    wrapper=$!
  else
    "$bin" serve --listen 127.0.0.1:0 "$@" </dev/null >"$out" 2>"$log" 9>&- &
    wrapper=$!
  fi
  SERVICE_PORT=$(wait_port "$out" "$wrapper" "the service" \
    's|^iort-cds listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$log")
  SERVICE_PID=$wrapper
  if [ -n "${SERVICE_LIFETIME_SECS:-}" ]; then
    SERVICE_PID=$(pgrep -P "$wrapper" | head -n 1)
  fi
  SERVICE_WRAPPER_PID=$wrapper
  LIB_PIDS+=("$wrapper")
  SERVICE_URL="http://127.0.0.1:$SERVICE_PORT"
}

# stop_service: TERM (a graceful shutdown), then wait for it.
stop_service() {
  stop_pid "${SERVICE_WRAPPER_PID:-}"
  SERVICE_PID=""
  SERVICE_WRAPPER_PID=""
}

# stop_pid PID: TERM it if it runs, and wait for it.
stop_pid() {
  if [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

# Stop everything started here and remove the work folder.
lib_cleanup() {
  local pid
  for pid in "${LIB_PIDS[@]}"; do
    stop_pid "$pid"
  done
  exec 9>&- 2>/dev/null || true
  rm -rf "$LIB_WORK"
}

lib_traps() {
  trap lib_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# peak_rss_mib PID: VmHWM of a running process, in MiB.
peak_rss_mib() {
  awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}
