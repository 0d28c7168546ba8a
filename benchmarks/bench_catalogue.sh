#!/usr/bin/env bash
# Catalogue and id benchmark, BEFORE (a temporary detached worktree of a base commit) then AFTER
# (this checkout), back to back in one session. Ratios are only meaningful within one run.
#
#   benchmarks/bench_catalogue.sh [BASE_COMMIT] [extra bench_catalogue.py args...]
#
# BASE_COMMIT defaults to 1f5bbe8 (main before compiled ids and catalogue files).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${1:-1f5bbe8}"; shift || true
WT="$(mktemp -d)/before"
git -C "$HERE" worktree add --quiet --detach "$WT" "$BASE"
trap 'git -C "$HERE" worktree remove --force "$WT"' EXIT
cd "$(dirname "$WT")"  # so neither checkout is picked up from the working directory
for tree in "$WT" "$HERE"; do
  PYTHONPATH="$tree" python "$HERE/benchmarks/bench_catalogue.py" --tree "$tree" "$@"
done
