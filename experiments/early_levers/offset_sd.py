"""The hybrid click's per-group offset sd and the merchants' offset spread at the end of one
default-scale cell, per strategy of ``config.yaml`` (no intercept).

    PYTHONPATH=. python experiments/early_levers/offset_sd.py 7 1 offset_em value_ts_protected

It wraps ``simulate.build_strategy`` to keep each strategy's policy, runs the cells as
``oracle_gap/run.py`` does and prints, per group: its arms, the observed ones, the offset
sd the policy uses (``1/sqrt(kappa)``; with ``learn_offset_sd`` the EM estimate), the spread
(sd) of the observed arms' offset means and their median data precision ``n``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from allocator.scenario import simulate
from allocator.scenario.build import grid_cells
from allocator.scenario.world import World
from experiments.oracle_gap import run

ws, seed = int(sys.argv[1]), int(sys.argv[2])
names = sys.argv[3:]
cfg = run.load(Path(__file__).resolve().parent / "config.yaml", ws, [seed], 0, 0.0)
world = World(cfg.world, seed=ws)
shared = simulate.Shared(world, cfg)
made = []
orig = simulate.build_strategy


def capture(*a: Any, **k: Any) -> Any:
    s = orig(*a, **k)
    made.append(s)
    return s


simulate.build_strategy = capture
for cell in grid_cells(cfg, world, 200_000):
    if cell.strategy not in names:
        continue
    res = simulate.run_cell(shared, cell)
    pol = made[-1].policy
    reg, s = pol.registry, pol.state
    k = reg.n_arms
    codes = reg.arm_group[:k]
    seen = s.n[:k] > 0
    print(cell.strategy, f"value/1k {res.metrics['value_per_1k']:.1f}")
    for g, name in enumerate(reg.groups):
        sel = codes == g
        sd = 1.0 / np.sqrt(s.kappa[:k][sel])
        om = s.offset_mean[:k][sel & seen]
        print(
            f"  {name:10s} arms {sel.sum():5d} observed {int((sel & seen).sum()):5d} "
            f"offset sd (prior used) {np.median(sd):.3f}  spread of offset means {om.std():.3f}"
            f"  median n {np.median(s.n[:k][sel & seen]) if om.size else 0:.2f}"
        )
