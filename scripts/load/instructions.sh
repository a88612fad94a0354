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
# start-up and the request generation are not counted; then, for the IORT kinds, how a call's
# instructions split over the pipeline's stages. Needs valgrind; builds the benchmark
# binary with `cargo bench --no-run`. Writes the callgrind files to target/callgrind/.
set -euo pipefail

SCRIPT=instructions
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
lib_traps
KINDS=("$@")
[ ${#KINDS[@]} -gt 0 ] || KINDS=(fast-path typical heavy)
need_package valgrind valgrind

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

# Inclusive instructions of one function in a callgrind file (0 if it never ran or was
# inlined away). callgrind_annotate may list a function more than once, under each source file
# its inlined code came from; the largest of those rows is the whole function.
inclusive() {
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    awk -v f=":$2" '{
      line = $0 " "
      if (index(line, f " ")) { n = $1; gsub(",", "", n); if (n + 0 > max) max = n + 0 }
    } END { printf "%d\n", max }'
}

# Where a call's instructions go, per stage (inclusive, so nested rows are part of the row
# above them): per call = (N-run - 0-run) / N, as for the totals.
STAGES=(
  "iort_cds::pipeline::parse_json|read the body: limits scan + serde_json parse"
  "iort_cds::limits::check_json|  of which the limits scan (depth, string length)"
  "iort_cds::hook::request::HookRequest::from_json|typed request (draft orders read by fhirbolt)"
  "iort_cds::gather::prefetch::RecordBuilder::add_value|patient record: each prefetch resource read by fhirbolt"
  "iort_cds::limits::resource_nesting|  of which the resource-nesting check"
  "iort_cds::facts::extract|facts with their evidence"
  "iort_cds::render::Renderer::render|cards and the coverage-information action"
)
stages() {
  local kind="$1" n="$2" total="$3" line fn what a b
  echo
  echo "$kind: where the $(awk -v t="$total" 'BEGIN { printf "%.2f M", t / 1e6 }') instructions of a call go"
  echo
  echo "| stage | instructions/call | share |"
  echo "|---|---|---|"
  for line in "${STAGES[@]}"; do
    fn=${line%%|*}
    what=${line#*|}
    a=$(inclusive "$OUT/$kind-pipeline.cg" "$fn")
    b=$(inclusive "$OUT/$kind-0.cg" "$fn")
    awk -v w="$what" -v a="$a" -v b="$b" -v n="$n" -v t="$total" 'BEGIN {
      c = (a - b) / n; printf "| %s | %.2f M | %.0f%% |\n", w, c / 1e6, 100 * c / t
    }'
  done
}

echo "| kind | pipeline instructions/call | parse-only instructions/call | ratio |"
echo "|---|---|---|---|"
TOTALS=()
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
  TOTALS+=("$kind $n $(((pipeline - base) / n))")
done
for entry in "${TOTALS[@]}"; do
  read -r kind n total <<<"$entry"
  [ "$kind" = fast-path ] || stages "$kind" "$n" "$total"
done
