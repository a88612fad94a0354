#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# What the audit store costs a running service (BENCHMARKS.md, "The audit store"): the load
# test's kinds with the store off, on SQLite (the default) and on PostgreSQL, one after the
# other on the same machine and binaries, and the ratio to "off"; and the CPU time the service
# process took per call (PostgreSQL's own processes not included).
#
#   scripts/load/store.sh [loadtest.sh options, e.g. --duration 20 --kinds "typical"]
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

# One loadtest per store, the binaries built once (by the first run).
build=()
for store in off sqlite postgres; do
  url="$store"
  [ "$store" = postgres ] && url="$PG_URL"
  say "store $store"
  bash "$ROOT/scripts/loadtest.sh" "${build[@]}" --no-floor --store "$url" --out "$OUT/$store" "$@" >&2
  build=(--no-build)
done

# kind -> requests/s and p99 per store, from each run's summary table.
row() { # row STORE KIND: "rps p99 cpu"
  awk -F'|' -v k="$2" '$2 ~ "^ *" k " *$" { gsub(/ /, "", $4); gsub(/ /, "", $7); gsub(/ /, "", $13); print $4, $7, $13 }' \
    "$OUT/$1/summary.md"
}
{
  echo "Audit store on vs off ($(nproc) cores, loopback; each column a fresh service, same bodies)"
  echo
  echo "| kind | off req/s | SQLite req/s (ratio) | PostgreSQL req/s (ratio) | p99 ms off / SQLite / PostgreSQL | service CPU µs per call off / SQLite / PostgreSQL |"
  echo "|---|---|---|---|---|---|"
  for kind in $(awk -F'|' 'NR > 2 && $2 ~ /[a-z]/ { gsub(/ /, "", $2); print $2 }' "$OUT/off/summary.md" | grep -v '^kind$'); do
    read -r off_rps off_p99 off_cpu <<<"$(row off "$kind")"
    read -r sq_rps sq_p99 sq_cpu <<<"$(row sqlite "$kind")"
    read -r pg_rps pg_p99 pg_cpu <<<"$(row postgres "$kind")"
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
    echo "| $kind | $off_rps | $sq_rps ($(ratio "$sq_rps" "$off_rps")) | $pg_rps ($(ratio "$pg_rps" "$off_rps")) | $off_p99 / $sq_p99 / $pg_p99 | $off_cpu / $sq_cpu / $pg_cpu |"
  done
} | tee "$OUT/summary.md"
say "raw output in $OUT"
