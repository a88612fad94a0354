#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# What the audit store costs a running service (BENCHMARKS.md, "The audit store"): the load
# test's kinds with the store off, on SQLite (the default) and on PostgreSQL, one after the
# other on the same machine and binaries, and the ratio to "off"; the CPU time the service
# process took per call, and with PostgreSQL the server's own CPU per call.
#
#   scripts/load/store.sh [--rounds N] [loadtest.sh options, e.g. --duration 20 --kinds "typical"]
#
# PostgreSQL is a throwaway cluster of this run (PostgreSQL 15 from Debian's packages,
# /usr/lib/postgresql/15/bin or $IORT_CDS_PG_BIN): initdb in a temp folder, reached on a Unix
# socket only (no TCP port at all), fsync on as deployed, stopped and deleted at the end. As root
# it runs as the `postgres` user (the server refuses root). Every run's raw output is kept
# under target/loadtest/store-<time>/.
set -euo pipefail

SCRIPT=store-bench
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PGBIN="${IORT_CDS_PG_BIN:-/usr/lib/postgresql/15/bin}"
[ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 is not installed ($PGBIN/initdb): apt-get install postgresql-15"
need jq
OUT="$TARGET/loadtest/store-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

# The cluster lives outside LIB_WORK: the `postgres` user must be able to reach it.
PGDIR=$(mktemp -d /tmp/iort-store-pg.XXXXXX)
chmod 755 "$PGDIR"
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
[ "$(id -u)" -ne 0 ] || chown postgres "$PGDIR"
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
  lib_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_pg "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres >"$OUT/initdb.log" 2>&1 ||
  die "initdb failed (see $OUT/initdb.log)"
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -w -l "$PGDIR/server.log" \
  -o "-c listen_addresses='' -k $PGDIR" start >/dev/null || die "PostgreSQL did not start"
PG_URL="postgres://postgres@localhost/postgres?host=$PGDIR"

# Rounds: off, SQLite, PostgreSQL, then again, so that a machine whose speed drifts (a shared
# VM) weighs on every store alike; each ratio is taken within its round, and the median of the
# rounds' ratios is reported beside each round's. `--rounds N` (default 1) is this script's
# own option; the others go to loadtest.sh.
ROUNDS=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ ]] || die "--rounds: a number from 1 to 99"

# One loadtest per store and round, the binaries built once (by the first run).
build=()
for round in $(seq 1 "$ROUNDS"); do
  for store in off sqlite postgres; do
    url="$store"
    [ "$store" = postgres ] && url="$PG_URL"
    say "round $round: store $store"
    # With PostgreSQL, the server's own CPU per call too (the postmaster and its processes).
    db_pid=""
    [ "$store" = postgres ] && db_pid=$(head -n 1 "$PGDIR/data/postmaster.pid")
    DB_PID="$db_pid" bash "$ROOT/scripts/loadtest.sh" "${build[@]}" --no-floor --store "$url" \
      --out "$OUT/$round/$store" "${args[@]}" >&2
    build=(--no-build)
  done
done

# kind -> requests/s, p99, service CPU and database CPU per store, from a run's summary table.
row() { # row ROUND STORE KIND: "rps p99 cpu dbcpu"
  awk -F'|' -v k="$3" '$2 ~ "^ *" k " *$" { gsub(/ /, "", $4); gsub(/ /, "", $7); gsub(/ /, "", $13); gsub(/ /, "", $14); print $4, $7, $13, $14 }' \
    "$OUT/$1/$2/summary.md"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
{
  echo "Audit store on vs off ($(nproc) cores, loopback; each cell a fresh service, same bodies; $ROUNDS round(s))"
  echo
  echo "| kind | round | off req/s | SQLite req/s (ratio) | PostgreSQL req/s (ratio) | p99 ms off / SQLite / PostgreSQL | service CPU µs per call off / SQLite / PostgreSQL | PostgreSQL server CPU µs per call |"
  echo "|---|---|---|---|---|---|---|---|"
  for kind in $(awk -F'|' 'NR > 2 && $2 ~ /[a-z]/ { gsub(/ /, "", $2); print $2 }' "$OUT/1/off/summary.md" | grep -v '^kind$'); do
    sq_ratios=() pg_ratios=()
    for round in $(seq 1 "$ROUNDS"); do
      read -r off_rps off_p99 off_cpu _ <<<"$(row "$round" off "$kind")"
      read -r sq_rps sq_p99 sq_cpu _ <<<"$(row "$round" sqlite "$kind")"
      read -r pg_rps pg_p99 pg_cpu pg_db <<<"$(row "$round" postgres "$kind")"
      sq_ratios+=("$(ratio "$sq_rps" "$off_rps")")
      pg_ratios+=("$(ratio "$pg_rps" "$off_rps")")
      echo "| $kind | $round | $off_rps | $sq_rps (${sq_ratios[-1]}) | $pg_rps (${pg_ratios[-1]}) | $off_p99 / $sq_p99 / $pg_p99 | $off_cpu / $sq_cpu / $pg_cpu | $pg_db |"
    done
    [ "$ROUNDS" -eq 1 ] ||
      echo "| $kind | median | | ($(median <<<"${sq_ratios[*]}")) | ($(median <<<"${pg_ratios[*]}")) | | | |"
  done
} | tee "$OUT/summary.md"
say "raw output in $OUT"
