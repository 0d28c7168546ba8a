#!/usr/bin/env bash
# Engine core benchmark, BEFORE (a detached worktree of a base commit) then AFTER (this checkout),
# back to back in one session. Ratios are only meaningful within one run of this script.
#
#   benchmarks/bench_engine_core.sh [BASE_COMMIT] [extra bench_engine_core.py args...]
#
# BASE_COMMIT defaults to 4a8c281. The worktree /work/wt-before is created if missing and
# left in place (remove it with: git worktree remove --force /work/wt-before).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${1:-4a8c281}"; shift || true
WT="${WT_BEFORE:-/work/wt-before}"
[ -d "$WT" ] || git -C "$HERE" worktree add --detach "$WT" "$BASE"
cd /tmp  # so neither checkout is picked up from the working directory
for tree in "$WT" "$HERE"; do
  PYTHONPATH="$tree" python "$HERE/benchmarks/bench_engine_core.py" --tree "$tree" "$@"
done
