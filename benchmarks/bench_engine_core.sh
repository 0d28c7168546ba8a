#!/usr/bin/env bash
# Engine core benchmark, BEFORE (a temporary detached worktree of a base commit) then AFTER
# (this checkout), back to back in one session. Ratios are only meaningful within one run.
#
#   benchmarks/bench_engine_core.sh [BASE_COMMIT] [extra bench_engine_core.py args...]
#
# BASE_COMMIT defaults to 4a8c281 (main before the engine-core redesign); the issue-15
# facade figures used 9ec730a (main before that work): `... 9ec730a --only beta --only target`.
# BENCH=<script> runs another benchmark of this directory the same way (bench_catalogue.sh does);
# ROUNDS=<n> alternates the two trees n times (noisy machines: quote the best of each).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${1:-4a8c281}"; shift || true
WT="$(mktemp -d)/before"
git -C "$HERE" worktree add --quiet --detach "$WT" "$BASE"
trap 'git -C "$HERE" worktree remove --force "$WT"' EXIT
cd "$(dirname "$WT")"  # so neither checkout is picked up from the working directory
for _ in $(seq "${ROUNDS:-1}"); do  # ROUNDS=3: before, after, before, ... interleaved
  for tree in "$WT" "$HERE"; do
    PYTHONPATH="$tree" python "$HERE/benchmarks/${BENCH:-bench_engine_core.py}" --tree "$tree" "$@"
  done
done
