#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds the benchmark binary (benches/pipeline.rs) if needed and prints its path, for the
# scripts that drive it directly (loadtest.sh writes its request bodies with it,
# instructions.sh runs it under callgrind).
#
#   scripts/load/bench-exe.sh
#
# The path is read from cargo's own JSON messages, picking the artifact of the `pipeline`
# bench target: the same build also lists the service binary, which must not be mistaken for it
# (started as a benchmark driver, it would serve on 127.0.0.1:8080 until killed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EXE=$(cd "$ROOT" && cargo bench --locked --bench pipeline --no-run --message-format=json |
  grep -F '"kind":["bench"]' | grep -F '"name":"pipeline"' |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ -z "$EXE" ] || [ ! -x "$EXE" ]; then
  echo "bench-exe: cargo built no executable for the pipeline benchmark" >&2
  exit 1
fi
echo "$EXE"
