#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Instructions per call of the pipeline and of its parse-only baseline, counted by valgrind
# (callgrind), and their ratio: a cross-check of the criterion ratios that does not depend on
# how loaded the machine is (see BENCHMARKS.md).
#
#   scripts/load/instructions.sh [KIND ...]      (default: fast-path typical heavy)
#
# Each figure is (instructions of N runs - instructions of 0 runs) / N, so the engine's
# start-up and the request generation are not counted. Needs valgrind; builds the benchmark
# binary with `cargo bench --no-run`. Writes the callgrind files to target/callgrind/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KINDS=("$@")
[ ${#KINDS[@]} -gt 0 ] || KINDS=(fast-path typical heavy)

die() {
  echo "instructions: $*" >&2
  exit 1
}
command -v valgrind >/dev/null 2>&1 || die "valgrind is not installed (apt-get install valgrind)"

BENCH_EXE=$("$ROOT/scripts/load/bench-exe.sh") || die "could not build the benchmark binary"
OUT="$ROOT/target/callgrind"
mkdir -p "$OUT"

# Total instructions of one profile run.
count() {
  local spec="$1" file="$OUT/$2.cg"
  IORT_BENCH_PROFILE="$spec" timeout 900 valgrind --tool=callgrind --callgrind-out-file="$file" \
    "$BENCH_EXE" >/dev/null 2>"$OUT/$2.log" || die "valgrind failed on $spec (see $OUT/$2.log)"
  sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$file" | head -n 1
}

echo "| kind | pipeline instructions/call | parse-only instructions/call | ratio |"
echo "|---|---|---|---|"
for kind in "${KINDS[@]}"; do
  case "$kind" in
    heavy) n=10 ;;
    *) n=100 ;;
  esac
  base=$(count "$kind:0" "$kind-0")
  pipeline=$(count "$kind:$n" "$kind-pipeline")
  parse=$(count "$kind:$n:parse-only" "$kind-parse-only")
  awk -v k="$kind" -v b="$base" -v p="$pipeline" -v q="$parse" -v n="$n" 'BEGIN {
    pp = (p - b) / n; qq = (q - b) / n
    printf "| %s | %.2f M | %.2f M | %.2fx |\n", k, pp / 1e6, qq / 1e6, pp / qq
  }'
done
