#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# What hostile peers cost the release service (BENCHMARKS.md, "Issue 13"). Loopback only; every
# loop is bounded in count and time; every process started here is stopped here.
#
#   cargo build --release && scripts/load/hostile.sh
#   HOSTILE_BIN=/path/to/iort-cds scripts/load/hostile.sh
#
# Prints, each with the service started fresh (so VmHWM, the peak resident set from
# /proc/PID/status, belongs to that measurement alone):
#   1. a hostile FHIR server (scripts/load/hostile_fhir.py: 800 KB pages of small numbers, 400,000
#      values each, just under limits.max_json_values, endless
#      `next` links): peak RSS with two concurrent calls whose observations it serves, with the
#      default budgets, and again with the budgets raised out of the way (what issue 13 measured
#      before them);
#   2. peak RSS for an 8 MiB request body of small values (`[1,1,...]`: over limits.max_json_values,
#      expected 400) and for an 8 MiB body just under that bound (16-digit numbers);
#   3. the latency of normal calls (20, one a second) with no slow client, then while
#      scripts/load/slow_body.py holds connections declaring an 8 MiB body and sending one byte
#      a second (1 client, then 200);
#   4. a flood of bad-signature tokens from one address (scripts/load/bad_tokens.py), with the
#      default per-peer refusal bound and with it off: statuses, service CPU, /healthz latency.
#
# Needs curl, jq, python3 (with `cryptography` for part 4). Takes about 3.5 minutes.
set -euo pipefail

SCRIPT=hostile
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
lib_traps

BIN="${HOSTILE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/iort-cds}"
CASE="$ROOT/tests/cases/001-covered-pt4a-involved-margin-cpt-77425.json"
SERVICE=/cds-services/iort-coverage
WORK="$LIB_WORK"
need curl jq python3
[ -x "$BIN" ] || die "no release binary at $BIN (cargo build --release, or set HOSTILE_BIN)"

# service CONFIG: a fresh service with this configuration, logging warnings; sets SVC_PID and
# SVC_URL.
service() {
  start_service "$BIN" "$WORK/service.log" --config "$1" --log-level warn
  SVC_PID=$SERVICE_PID
  SVC_URL=$SERVICE_URL
}
mb() { awk -v k="$1" 'BEGIN { printf "%.0f MB", k / 1024 }'; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# call BODY_FILE OUT_FILE: POST, print "status seconds".
call() {
  curl -s -o "$2" -w '%{http_code} %{time_total}' --max-time 60 \
    -H 'Content-Type: application/json' --data-binary "@$1" "$SVC_URL$SERVICE"
}
covered() {
  jq -r '[.systemActions[]?.resource.extension[]?
          | select(.url | endswith("ext-coverage-information")) | .extension[]
          | select(.url == "covered") | .valueCode] | join(",")' "$1" 2>/dev/null || echo "not JSON"
}

printf '' >"$WORK/defaults.toml"
jq -c '.request' "$CASE" >"$WORK/valid.json"

echo "== 1. hostile FHIR server: 800 KB pages of small numbers, endless next links, 2 calls at once"
python3 "$ROOT/scripts/load/hostile_fhir.py" --port 0 --page-bytes 800000 --seconds 150 >"$WORK/fhir.log" 2>&1 9>&- &
FHIR_PID=$!
LIB_PIDS+=("$FHIR_PID")
FPORT=$(wait_port "$WORK/fhir.log" "$FHIR_PID" "the hostile FHIR server" 's/^LISTENING \([0-9]*\).*/\1/p' "$WORK/fhir.log")
jq -c --arg s "http://127.0.0.1:$FPORT/fhir" '.request | del(.prefetch.observations) | .fhirServer = $s' \
  "$CASE" >"$WORK/fetch.json"
cat >"$WORK/no-budget.toml" <<'EOF'
[fhir]
max_call_values = 2000000000
max_inflight_values = 4000000000
EOF
for config in defaults no-budget; do
  service "$WORK/$config.toml"
  call "$WORK/valid.json" "$WORK/out" >/dev/null
  before=$(hwm_kb "$SVC_PID")
  pages_before=$(curl -s --max-time 2 "http://127.0.0.1:$FPORT/served")
  started=$(date +%s.%N)
  call "$WORK/fetch.json" "$WORK/a.json" >"$WORK/a.status" &
  p1=$!
  call "$WORK/fetch.json" "$WORK/b.json" >"$WORK/b.status" &
  p2=$!
  wait "$p1" "$p2"
  secs=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  peak=$(hwm_kb "$SVC_PID")
  after=$(rss_kb "$SVC_PID")
  pages=$(($(curl -s --max-time 2 "http://127.0.0.1:$FPORT/served") - pages_before))
  reason=$(jq -r '[.. | strings | select(startswith("The patient record could not be read"))][0] // "-"' \
    "$WORK/a.json" | cut -c1-170)
  echo "  [$config] statuses $(cut -d' ' -f1 "$WORK/a.status") $(cut -d' ' -f1 "$WORK/b.status")," \
    "covered: $(covered "$WORK/a.json") $(covered "$WORK/b.json"), both done in ${secs} s, $pages pages served"
  echo "  [$config] VmHWM before the calls $(mb "$before"), peak $(mb "$peak"), RSS after $(mb "$after")"
  echo "  [$config] reason: $reason"
  stop_service
done

echo "== 2. an 8 MiB request body of small values"
python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
req = json.load(open(f"{work}/valid.json"))
size = 8 * 1024 * 1024 - 1024
head = json.dumps(req)[:-1] + ',"x":['
for name, item in (("ones", "1"), ("under", "1234567890123456")):
    n = (size - len(head) - 2) // (len(item) + 1)
    body = head + ",".join([item] * n) + "]}"
    open(f"{work}/{name}.json", "w").write(body)
    print(f"  {name}.json: {len(body)} bytes, {n} values in x")
EOF
for body in ones under; do
  service "$WORK/defaults.toml"
  call "$WORK/valid.json" "$WORK/out" >/dev/null
  before=$(hwm_kb "$SVC_PID")
  st=$(call "$WORK/$body.json" "$WORK/out")
  peak=$(hwm_kb "$SVC_PID")
  sleep 1
  after=$(rss_kb "$SVC_PID")
  diag=$(jq -r '.issue[0].diagnostics // ("covered: " + ([.systemActions[]?] | length | tostring))' "$WORK/out" 2>/dev/null | cut -c1-100)
  echo "  [$body] status/seconds $st; VmHWM before $(mb "$before"), peak $(mb "$peak"), RSS 1 s after $(mb "$after"); $diag"
  stop_service
done

echo "== 3. normal calls while slow clients trickle a declared 8 MiB body at 1 byte/s"
service "$WORK/defaults.toml"
port=${SVC_URL##*:}
latencies() { # latencies LABEL: 20 normal calls, one a second; p50 and max
  local t=()
  for _ in $(seq 1 20); do
    t+=("$(call "$WORK/valid.json" "$WORK/out")")
    sleep 1
  done
  printf '%s\n' "${t[@]}" | sort -k2,2g | awk -v l="$1" '
    { s[NR] = $2; c[$1]++ }
    END { codes = ""; for (k in c) codes = codes k ":" c[k] " ";
          printf "  [%s] 20 calls, statuses %sp50 %.1f ms, max %.1f ms\n", l, codes, s[int((NR + 1) / 2)] * 1000, s[NR] * 1000 }'
}
latencies "no slow client"
for conns in 1 200; do
  python3 "$ROOT/scripts/load/slow_body.py" --port "$port" --conns "$conns" --seconds 25 >"$WORK/slow.out" 2>&1 9>&- &
  slow=$!
  LIB_PIDS+=("$slow")
  sleep 2
  latencies "$conns slow client(s)"
  wait "$slow" || true
  echo "  $(cat "$WORK/slow.out")"
done
echo "  service VmHWM over part 3: $(mb "$(hwm_kb "$SVC_PID")")"
stop_service

echo "== 4. a flood of tokens with valid-looking claims and bad signatures, from one address"
# A trusted issuer with a real P-384 key (kid flood-key) pinned inline; the flood's tokens
# name it but carry random signatures, so each one that is checked costs a verification.
python3 - "$WORK" <<'PY'
import base64, json, sys
from cryptography.hazmat.primitives.asymmetric import ec
pub = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
enc = lambda n: base64.urlsafe_b64encode(n.to_bytes(48, "big")).rstrip(b"=").decode()
jwks = json.dumps({"keys": [{"kty": "EC", "crv": "P-384", "kid": "flood-key", "alg": "ES384",
                              "x": enc(pub.x), "y": enc(pub.y)}]})
for name, extra in (("flood-default", ""), ("flood-off", "refusals_per_peer_per_minute = 0\n")):
    open(f"{sys.argv[1]}/{name}.toml", "w").write(
        f"[auth]\n{extra}[[auth.issuers]]\niss = \"https://flood.example\"\njwks = '{jwks}'\n")
PY
for config in flood-default flood-off; do
  : >"$WORK/service.log"
  service "$WORK/$config.toml"
  echo "  [$config]"
  python3 "$ROOT/scripts/load/bad_tokens.py" --url "$SVC_URL" --pid "$SVC_PID" \
    --iss https://flood.example --kid flood-key --connections 16 --seconds 10
  echo "  log lines written: $(wc -l <"$WORK/service.log")"
  stop_service
done
