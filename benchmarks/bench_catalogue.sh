#!/usr/bin/env bash
# Catalogue and id benchmark before (a worktree of BASE_COMMIT, default 1f5bbe8: main before
# compiled ids and catalogue files) and after (this checkout), in one session:
#
#   benchmarks/bench_catalogue.sh [BASE_COMMIT] [extra bench_catalogue.py args...]
set -euo pipefail
BENCH=bench_catalogue.py exec "$(dirname "$0")/bench_engine_core.sh" "${1:-1f5bbe8}" "${@:2}"
