#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Soak test: the release service under a steady mixed load for a bounded time, on loopback only.
#
#   scripts/soak.sh                      # 600 s at 64 connections (the figures in BENCHMARKS.md)
#   SOAK_SECS=60 scripts/soak.sh         # a short run
#
# What it does:
#   1. builds the release binary (or uses $SOAK_BIN), starts the loopback FHIR server of the tests
#      (tests/fhir-server, open mode) loaded with examples/demo/patients.json;
#   2. starts the service on a 127.0.0.1 port it chooses, with max_body_bytes = 1 MiB;
#   3. runs one wrk process per request kind, 64 connections in all, for $SOAK_SECS seconds:
#        valid      24  order-sign, IORT order, full prefetch (case 001)        -> 200, covered
#        non-iort    8  order-sign, a MedicationRequest only                    -> 200, no card
#        fetch       8  order-sign, no prefetch: the service fetches the record
#                       from the loopback FHIR server (paging, 5 queries)        -> 200, covered
#        malformed   8  truncated JSON                                          -> 400
#        invalid     8  JSON that fails the request schema                      -> 400
#        oversized   4  a 1.1 MiB body                                          -> 413
#        discovery   4  GET /cds-services                                       -> 200
#   4. samples the service's RSS every 10 s;
#   5. prints, per kind, requests, statuses, outcomes and socket errors, and the RSS series, and
#      exits non-zero if any status was unexpected, a socket error occurred, or RSS grew by more
#      than $SOAK_MAX_GROWTH_PCT % (default 20) between the 60 s sample and the last one.
#
# Every request goes to 127.0.0.1; every loop is bounded by wrk's -d. Needs wrk (Debian package
# `wrk`, with LuaJIT), Node.js >= 20.19 with npm (for the FHIR server), curl and jq.
set -euo pipefail

SCRIPT=soak
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECS="${SOAK_SECS:-600}"
MAX_GROWTH_PCT="${SOAK_MAX_GROWTH_PCT:-20}"

[[ "$SECS" =~ ^[0-9]+$ ]] && [ "$SECS" -ge 20 ] && [ "$SECS" -le 3600 ] || die "SOAK_SECS must be 20..3600"
need node npm curl
need_package wrk wrk
need_package jq jq

if [ -z "${SOAK_BIN:-}" ]; then
  echo "soak: building the release binary" >&2
  (cd "$ROOT" && cargo build --release --bin iort-cds >&2)
  SOAK_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/iort-cds"
fi
[ -x "$SOAK_BIN" ] || die "$SOAK_BIN is not an executable"

WORK="$LIB_WORK"
WRK_PIDS=()
cleanup() {
  for pid in "${WRK_PIDS[@]}"; do
    stop_pid "$pid"
  done
  lib_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The FHIR server with the demo patients.
start_fhir_server "$WORK/fhir.err" --open
load_bundle "$FHIR_BASE" "$ROOT/examples/demo/patients.json" >/dev/null

# 2. The service.
cat >"$WORK/soak.toml" <<EOF
log_level = "warn"
max_body_bytes = 1048576
EOF
start_service "$SOAK_BIN" "$WORK/service.log" --config "$WORK/soak.toml"
SVC_PID=$SERVICE_PID
PORT=$SERVICE_PORT
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || die "the service did not answer /healthz"

# 3. The bodies.
jq -c '.request' "$ROOT/tests/cases/001-covered-pt4a-involved-margin-cpt-77425.json" >"$WORK/valid.json"
jq -c '.' "$ROOT/examples/order-sign-medication.json" >"$WORK/non-iort.json"
jq -c --arg base "$FHIR_BASE" 'del(.prefetch) | .fhirServer = $base' \
  "$ROOT/examples/demo/order-sign-demo-rc-t4-positive.json" >"$WORK/fetch.json"
head -c 700 "$WORK/valid.json" >"$WORK/malformed.json"
jq -c '.context.patientId = 42 | del(.hookInstance)' "$WORK/valid.json" >"$WORK/invalid.json"
{
  printf '{"hook":"order-sign","padding":"'
  head -c $((1100 * 1024)) /dev/zero | tr '\0' 'x'
  printf '"}'
} >"$WORK/oversized.json"
: >"$WORK/empty.json"

# One sanity call per kind before the load, so a broken set-up fails fast and clearly.
for kind in valid fetch; do
  got=$(curl -s -X POST -H 'Content-Type: application/json' --data-binary @"$WORK/$kind.json" \
    "http://127.0.0.1:$PORT/cds-services/iort-coverage" | jq -r '[.systemActions[]?.resource.extension[]?
      | select(.url | endswith("ext-coverage-information")) | .extension[] | select(.url == "covered")
      | .valueCode] | join(",")')
  [ "$got" = "covered" ] || die "the $kind request is not covered before the load (got '$got')"
done


# 4. The load: kind, connections, method, path, body, expected status.
KINDS=(
  "valid 24 POST /cds-services/iort-coverage valid.json 200"
  "non-iort 8 POST /cds-services/iort-coverage non-iort.json 200"
  "fetch 8 POST /cds-services/iort-coverage fetch.json 200"
  "malformed 8 POST /cds-services/iort-coverage malformed.json 400"
  "invalid 8 POST /cds-services/iort-coverage invalid.json 400"
  "oversized 4 POST /cds-services/iort-coverage oversized.json 413"
  "discovery 4 GET /cds-services empty.json 200"
)
echo "soak: ${SECS}s at 64 connections against 127.0.0.1:$PORT (pid $SVC_PID)" >&2
for k in "${KINDS[@]}"; do
  read -r kind conns method path body expected <<<"$k"
  wrk -t1 -c"$conns" -d"${SECS}s" --timeout 10s -s "$ROOT/scripts/load/soak.lua" \
    "http://127.0.0.1:$PORT" -- "$kind" "$expected" "$WORK/$body" "$method" "$path" \
    >"$WORK/wrk-$kind.out" 2>&1 9>&- &
  WRK_PIDS+=($!)
done

# 5. RSS every 10 s while the load runs.
echo "t_s rss_kib" >"$WORK/rss.txt"
start=$(date +%s)
while :; do
  now=$(($(date +%s) - start))
  rss=$(ps -o rss= -p "$SVC_PID" 2>/dev/null | tr -d ' ')
  [ -n "$rss" ] || die "the service died during the load: $(tail -5 "$WORK/service.log")"
  echo "$now $rss" >>"$WORK/rss.txt"
  [ "$now" -lt "$SECS" ] || break
  sleep 10
done
for pid in "${WRK_PIDS[@]}"; do
  wait "$pid" || true
done
WRK_PIDS=()
kill -0 "$SVC_PID" 2>/dev/null || die "the service is gone after the load"
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || die "the service stopped answering after the load"

# 6. The report.
failed=0
echo
echo "| kind | conns | requests | req/s | statuses | outcomes | socket errors | p50 ms | p99 ms |"
echo "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |"
total=0
for k in "${KINDS[@]}"; do
  read -r kind conns _ _ _ expected <<<"$k"
  line=$(grep '^SOAK ' "$WORK/wrk-$kind.out" | sed 's/^SOAK //') || true
  if [ -z "$line" ]; then
    cat "$WORK/wrk-$kind.out" >&2
    die "wrk for $kind printed no summary"
  fi
  jq -r --arg c "$conns" --arg secs "$SECS" '"| \(.kind) | \($c) | \(.requests) | \((.requests / ($secs|tonumber)) | floor) | \(.statuses | to_entries | map("\(.key): \(.value)") | join(", ")) | \(.outcomes | to_entries | map("\(.key): \(.value)") | join(", ")) | \(.socket_errors) | \(.p50_ms) | \(.p99_ms) |"' <<<"$line"
  total=$((total + $(jq '.requests' <<<"$line")))
  unexpected=$(jq --arg e "$expected" '[.statuses | to_entries[] | select(.key != $e) | .value] | add // 0' <<<"$line")
  counted=$(jq '[.statuses[]] | add // 0' <<<"$line")
  if [ "$counted" -lt "$(jq '.requests' <<<"$line")" ]; then
    echo "soak: $kind: only $counted of the requests have a counted status" >&2
    failed=1
  fi
  errors=$(jq '.socket_errors' <<<"$line")
  if [ "$unexpected" != "0" ] || [ "$errors" != "0" ]; then
    echo "soak: $kind: $unexpected unexpected statuses, $errors socket errors" >&2
    failed=1
  fi
done
echo
echo "Requests in all: $total in ${SECS}s."
echo
echo "RSS of the service (KiB), every 10 s:"
awk 'NR > 1 { printf "%s%s:%s", sep, $1, $2; sep = " " } END { print "" }' "$WORK/rss.txt"
at60=$(awk 'NR > 1 && $1 >= 60 { print $2; exit }' "$WORK/rss.txt")
last=$(tail -n 1 "$WORK/rss.txt" | cut -d' ' -f2)
peak=$(awk 'NR > 1 && $1 >= 60 && $2 > m { m = $2 } END { print m }' "$WORK/rss.txt")
if [ -n "$at60" ]; then
  growth=$(((last - at60) * 100 / at60))
  echo "RSS at 60 s: $at60 KiB; at the end: $last KiB (${growth}%); peak after 60 s: $peak KiB."
  if [ "$growth" -gt "$MAX_GROWTH_PCT" ]; then
    echo "soak: RSS grew by ${growth}% after the first minute (limit ${MAX_GROWTH_PCT}%)" >&2
    failed=1
  fi
fi
if grep -q ' ERROR ' "$WORK/service.log"; then
  echo "soak: the service logged errors:" >&2
  grep ' ERROR ' "$WORK/service.log" | head -5 >&2
  failed=1
fi
[ "$failed" = 0 ] && echo "soak: passed" || echo "soak: FAILED" >&2
exit "$failed"
