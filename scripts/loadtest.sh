#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Load test of the iort-cds service on loopback (figures in BENCHMARKS.md).
#
#   scripts/loadtest.sh [--duration SECS] [--warmup SECS] [--connections N] [--threads N]
#                       [--kinds "fast-path typical heavy fhir-fetch"] [--log-level FILTER]
#                       [--rate R] [--store off|sqlite|URL] [--out DIR] [--no-build] [--no-floor]
#
# What it does:
#   1. needs the load generator, Debian's `wrk` (installed when missing if run as root;
#      otherwise it says what to install);
#   2. builds the release binary and the benchmark binary (benches/pipeline.rs), which writes
#      the request bodies, so the load test and the benchmarks send the same bytes
#      (--no-build: use the binaries already built, e.g. to re-run while the tree changes);
#   3. starts the loopback test FHIR server (tests/fhir-server, open mode, pages of 100) and
#      loads the typical record into it, for the FHIR-fetch kind;
#   4. for each kind: starts a fresh service on a loopback port it chooses (default settings: one
#      worker per core, log level info, as deployed), checks one answer with curl, runs wrk
#      for the warm-up, then for the measured duration at N connections, and reads the
#      service's peak RSS (VmHWM in /proc/<pid>/status) before stopping it;
#      with --rate R, each connection pauses between its requests (scripts/load/paced.lua,
#      mean pause N * 1000 / R ms) so that about R requests/s are offered in all: latency at
#      a given load rather than at saturation (without --rate, every connection sends again
#      the moment its answer arrives, so latency is N / throughput: the queue, not the work);
#   --store: the audit store of each service started: `sqlite` (the default, as deployed: a
#      fresh file in the run's work folder), `off` (store.enabled = false), or a database URL
#      (postgres://...); the store's counters and writer timing (/readyz) go to the table;
#   5. with the floor (default; --no-floor: without): right after each kind, the same wrk load
#      with the same body against a fresh echo floor (tools/echo-floor: actix-web parsing each
#      body with serde_json's default features and writing it back; its answer counts as good
#      when it is 200 and holds the body's hookInstance), built with
#      `cargo build --release --manifest-path tools/echo-floor/Cargo.toml --target-dir target`;
#   6. prints a Markdown table (requests/s, p50/p90/p99 latency, bad answers, peak RSS, the
#      load average before the run), then the ratio table (service requests/s over the floor's,
#      the figure the performance goals are stated in), and keeps wrk's raw output under --out.
#
# Kinds: fast-path (no IORT order), typical (IORT order, 40-resource prefetch), heavy (IORT
# order, 1,000-resource prefetch), fhir-fetch (IORT order, no prefetch: the service fetches the
# typical record from the FHIR server). An answer counts as bad unless it is HTTP 200 with the
# expected outcome (`{"cards":[]}` on the fast path, a `covered` coverage-information otherwise),
# so an answer that degraded under load is not counted as throughput.
#
# Bounded: every wrk run has a timeout, the service and the FHIR server are stopped on exit
# (and `timeout` stops the service after the longest a run may take even if this script is
# killed; the FHIR server exits when this script's pipe to it closes). Loopback only.
set -euo pipefail

SCRIPT=loadtest
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_traps
unset RUST_LOG # the service's log level is --log-level's

DURATION=20
WARMUP=5
CONNECTIONS=64
THREADS=2
KINDS="fast-path typical heavy fhir-fetch"
LOG_LEVEL=info
RATE=0
STORE=sqlite
OUT=""
BUILD=1
FLOOR=1

while [ $# -gt 0 ]; do
  case "$1" in
    --duration | --warmup | --connections | --threads | --kinds | --log-level | --rate | --store | --out)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --duration) DURATION="$2" ;;
        --warmup) WARMUP="$2" ;;
        --connections) CONNECTIONS="$2" ;;
        --threads) THREADS="$2" ;;
        --kinds) KINDS="$2" ;;
        --log-level) LOG_LEVEL="$2" ;;
        --rate) RATE="$2" ;;
        --store) STORE="$2" ;;
        --out) OUT="$2" ;;
      esac
      shift 2
      ;;
    --no-build)
      BUILD=0
      shift
      ;;
    --floor)
      FLOOR=1
      shift
      ;;
    --no-floor)
      FLOOR=0
      shift
      ;;
    -h | --help)
      sed -n '4,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
for n in "$DURATION" "$WARMUP" "$CONNECTIONS" "$THREADS" "$RATE"; do
  [[ "$n" =~ ^[0-9]{1,5}$ ]] || die "durations, connections, threads and rate must be whole numbers"
done
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 600 ] || die "--duration must be 1..600 seconds"
[ "$WARMUP" -le 120 ] || die "--warmup must be at most 120 seconds"
[ "$CONNECTIONS" -ge 1 ] && [ "$THREADS" -ge 1 ] && [ "$CONNECTIONS" -ge "$THREADS" ] ||
  die "need 1 <= --threads <= --connections"
for kind in $KINDS; do
  case "$kind" in
    fast-path | typical | heavy | fhir-fetch) ;;
    *) die "unknown kind '$kind' (fast-path, typical, heavy, fhir-fetch)" ;;
  esac
done
# The audit store of the services started (see --store).
STORE_ARGS=()
case "$STORE" in
  off)
    printf '[store]\nenabled = false\n' >"$LIB_WORK/store-off.toml"
    STORE_ARGS=(--config "$LIB_WORK/store-off.toml")
    ;;
  sqlite) STORE_ARGS=(--store-url "sqlite://$LIB_WORK/store.db") ;;
  postgres://* | postgresql://* | sqlite://*) STORE_ARGS=(--store-url "$STORE") ;;
  *) die "--store must be off, sqlite or a database URL" ;;
esac
OUT="${OUT:-$TARGET/loadtest/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

# 1. Tools.
need cargo node curl jq
need_package wrk wrk
if [[ " $KINDS " == *" fhir-fetch "* ]]; then
  ensure_fhir_server_packages
fi

# 2. Build. The bench binary is found from cargo's own JSON messages.
if [ "$BUILD" -eq 1 ]; then
  echo "loadtest: building (cargo build --release; cargo bench --no-run)" >&2
  (cd "$ROOT" && cargo build --release --locked --bin iort-cds >&2)
  BENCH_EXE=$("$ROOT/scripts/load/bench-exe.sh") || die "could not build the benchmark binary"
  if [ "$FLOOR" -eq 1 ]; then
    echo "loadtest: building the echo floor (tools/echo-floor)" >&2
    cargo build --release --locked --manifest-path "$ROOT/tools/echo-floor/Cargo.toml" --target-dir "$TARGET" >&2
  fi
else
  BENCH_EXE=$(ls -t "$TARGET"/release/deps/pipeline-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)
fi
[ -x "$BENCH_EXE" ] || die "could not find the benchmark binary (cargo bench --bench pipeline --no-run)"
SERVICE_EXE="$TARGET/release/iort-cds"
FLOOR_EXE="$TARGET/release/echo-floor"
[ "$FLOOR" -eq 0 ] || [ -x "$FLOOR_EXE" ] ||
  die "no echo floor at $FLOOR_EXE (cargo build --release --manifest-path tools/echo-floor/Cargo.toml --target-dir target)"

# 3. The FHIR server (it exits with this script).
FHIR_BASE=""
if [[ " $KINDS " == *" fhir-fetch "* ]]; then
  start_fhir_server "$OUT/fhir-server.log" --open --page-size 100
fi

# The request bodies (and the FHIR record), written by the benchmark binary's generator.
BODIES="$OUT/bodies"
IORT_BENCH_WRITE_BODIES="$BODIES" IORT_BENCH_FHIR_SERVER="${FHIR_BASE:-http://127.0.0.1:1/fhir/R4}" \
  "$BENCH_EXE" >/dev/null
if [ -n "$FHIR_BASE" ]; then
  load_bundle "$FHIR_BASE" "$BODIES/fhir-record.json" >/dev/null
fi

# Closed loop (post.lua), or paced connections offering about RATE requests/s (paced.lua).
WRK_SCRIPT="$ROOT/scripts/load/post.lua"
WRK_PACE=()
LOAD="closed loop (each connection sends again as soon as it is answered)"
if [ "$RATE" -gt 0 ]; then
  WRK_SCRIPT="$ROOT/scripts/load/paced.lua"
  WRK_PACE=("$(awk -v c="$CONNECTIONS" -v r="$RATE" 'BEGIN { printf "%.3f", c * 1000 / r }')")
  LOAD="paced: each connection pauses ${WRK_PACE[0]} ms on average between requests (about $RATE requests/s offered)"
fi

expected() {
  case "$1" in
    fast-path) echo '{"cards":[]}' ;;
    *) echo '"valueCode":"covered"' ;;
  esac
}

# load NAME URL BODY EXPECT: wrk's warm-up, then the measured run (its output in
# $OUT/wrk-NAME.txt); sets RESULT (wrk's RESULT line) and LOADAVG (before the measured run).
load() {
  local name="$1" url="$2" body="$3" expect="$4"
  if [ "$WARMUP" -gt 0 ]; then
    timeout $((WARMUP + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 5s \
      -s "$WRK_SCRIPT" "$url" -- "$body" "$expect" "${WRK_PACE[@]}" >"$OUT/wrk-$name-warmup.txt" 2>&1 ||
      die "$name: the warm-up run failed (see $OUT/wrk-$name-warmup.txt)"
  fi
  LOADAVG=$(cut -d' ' -f1 /proc/loadavg)
  top -bn1 | head -n 15 >"$OUT/top-$name.txt" 2>/dev/null || true
  local ticks="" db_ticks=""
  [ -z "${CPU_PID:-}" ] || ticks=$(cpu_ticks "$CPU_PID")
  [ -z "${CPU_PID:-}" ] || [ -z "${DB_PID:-}" ] || db_ticks=$(tree_ticks "$DB_PID")
  timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s --latency \
    -s "$WRK_SCRIPT" "$url" -- "$body" "$expect" "${WRK_PACE[@]}" >"$OUT/wrk-$name.txt" 2>&1 ||
    die "$name: the measured run failed (see $OUT/wrk-$name.txt)"
  RESULT=$(grep '^RESULT ' "$OUT/wrk-$name.txt") || die "$name: wrk printed no RESULT line"
  # CPU time the process took over the measured run (user + system, all its threads), per
  # request answered: steadier than requests/s when runs share a busy machine.
  CPU_PER_CALL="-"
  if [ -n "$ticks" ]; then
    CPU_PER_CALL=$(awk -v a="$ticks" -v b="$(cpu_ticks "$CPU_PID")" -v hz="$(getconf CLK_TCK)" \
      -v n="$(field requests)" 'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1e6 / hz / n; else print "-" }')
  fi
  # The same for the database server (the postmaster and its processes), when one runs
  # beside the service on the same cores.
  DB_CPU_PER_CALL="-"
  if [ -n "$db_ticks" ]; then
    DB_CPU_PER_CALL=$(awk -v a="$db_ticks" -v b="$(tree_ticks "$DB_PID")" -v hz="$(getconf CLK_TCK)" \
      -v n="$(field requests)" 'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "-" }')
  fi
}

# cpu_ticks PID: user + system CPU of the process so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# tree_ticks PID: the same for the process and its children (a PostgreSQL postmaster and its
# backends). A backend that ended during the run is missed: the store's connections stay open.
tree_ticks() {
  local pid total=0
  for pid in "$1" $(pgrep -P "$1"); do total=$((total + $(cpu_ticks "$pid"))); done
  echo "$total"
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$RESULT"; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

# One kind: fresh service, one checked answer, warm-up, measured run, peak RSS.
ROWS=()
RATIOS=()
run_kind() {
  local kind="$1" body="$BODIES/$1.json" url expect hwm rps store
  expect=$(expected "$kind")
  # `timeout` bounds the service's life even if this script is killed.
  IORT_CDS_LOG_LEVEL="$LOG_LEVEL" SERVICE_LIFETIME_SECS=$((WARMUP + DURATION + 120)) \
    start_service "$SERVICE_EXE" "$OUT/service-$kind.log" "${STORE_ARGS[@]}"
  url="$SERVICE_URL/cds-services/iort-coverage"
  curl -sS -o "$OUT/answer-$kind.json" -X POST -H 'Content-Type: application/json' \
    --data-binary @"$body" "$url"
  grep -qF "$expect" "$OUT/answer-$kind.json" || die "$kind: the answer lacks $expect (see $OUT/answer-$kind.json)"
  CPU_PID="$SERVICE_PID" load "$kind" "$url" "$body" "$expect"
  hwm=$(peak_rss_mib "$SERVICE_PID")
  # The store's counters right after the load: records written, still queued, dropped; and the
  # writer's own timing: mean time per batch (records per batch), and records per second of
  # writing time (what the writer sustains, whatever was offered).
  store=$(curl -sS "$SERVICE_URL/readyz" | jq -r 'if .store then .store.stats as $s |
    "\($s.records_written) / \($s.queue_depth) / \($s.records_dropped); " +
    (if $s.batches_written > 0 then
      "\($s.write_micros / $s.batches_written / 1000 * 100 | round / 100) ms per batch of \($s.records_written / $s.batches_written * 10 | round / 10), \($s.records_written * 1000000 / $s.write_micros | round) records/s of writing"
     else "nothing written" end)
    else "off" end' 2>/dev/null || echo "?")
  stop_service
  rps=$(field rps)
  ROWS+=("| $kind | $(stat -c %s "$body") | $rps | $(ms "$(field p50_us)") | $(ms "$(field p90_us)") | $(ms "$(field p99_us)") | $(field bad) / $(field answered) | $(($(field connect_errors) + $(field read_errors) + $(field write_errors) + $(field timeouts))) | $hwm | $store | $LOADAVG | $CPU_PER_CALL | $DB_CPU_PER_CALL |")
  echo "loadtest: $kind: $RESULT peak_rss_mib=$hwm cpu_us_per_call=$CPU_PER_CALL loadavg_before=$LOADAVG" >&2
  [ "$FLOOR" -eq 1 ] || return 0
  run_floor "$kind" "$body" "$rps"
}

# The floor for one kind, with the same body and load: a fresh echo floor, one checked answer
# (200, the body's hookInstance echoed), warm-up, measured run.
run_floor() {
  local kind="$1" body="$2" rps="$3" expect floor_pid floor_port url
  # serde_json writes the echo compactly: the member as it comes back.
  expect=$(grep -o '"hookInstance"[[:space:]]*:[[:space:]]*"[^"]*"' "$body" | head -n 1 | tr -d '[:space:]')
  [ -n "$expect" ] || die "$kind: the body has no hookInstance to check the floor's echo by"
  timeout --signal=TERM --kill-after=10 $((WARMUP + DURATION + 120)) \
    "$FLOOR_EXE" --listen 127.0.0.1:0 </dev/null >"$OUT/floor-$kind.out" 2>"$OUT/floor-$kind.log" 9>&- &
  floor_pid=$!
  LIB_PIDS+=("$floor_pid")
  floor_port=$(wait_port "$OUT/floor-$kind.out" "$floor_pid" "the echo floor" 's/^LISTENING \([0-9]*\).*/\1/p' "$OUT/floor-$kind.log")
  url="http://127.0.0.1:$floor_port/cds-services/iort-coverage"
  curl -sS -o "$OUT/answer-floor-$kind.json" -X POST -H 'Content-Type: application/json' \
    --data-binary @"$body" "$url"
  grep -qF "$expect" "$OUT/answer-floor-$kind.json" || die "$kind: the floor did not echo the body (see $OUT/answer-floor-$kind.json)"
  load "floor-$kind" "$url" "$body" "$expect"
  stop_pid "$floor_pid"
  RATIOS+=("| $kind | $rps | $(field rps) | $(awk -v s="$rps" -v f="$(field rps)" 'BEGIN { printf "%.2f", (f > 0 ? s / f : 0) }') | $(field bad) / $(field answered) | $LOADAVG |")
  echo "loadtest: floor-$kind: $RESULT loadavg_before=$LOADAVG" >&2
}

for kind in $KINDS; do
  run_kind "$kind"
done

{
  echo "wrk: $THREADS threads, $CONNECTIONS connections, ${WARMUP}s warm-up then ${DURATION}s measured per kind; service log level: $LOG_LEVEL; store: $STORE"
  echo "load: $LOAD"
  echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo
  echo "| kind | body bytes | requests/s | p50 ms | p90 ms | p99 ms | bad / answered | socket errors | peak RSS MiB | store: written / queued / dropped; writer | load avg before | service CPU µs per call | database CPU µs per call |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  if [ "$FLOOR" -eq 1 ]; then
    echo
    echo "Against the floor (tools/echo-floor: parse each body, write it back; same body, same load, run right after the service):"
    echo
    echo "| kind | service requests/s | floor requests/s | ratio | floor bad / answered | load avg before floor |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${RATIOS[@]}"
  fi
} | tee "$OUT/summary.md"
echo "loadtest: raw output in $OUT" >&2
