"""One small cell per strategy of the bundled scenario: exact regret, shares and the
propensities the strategies log (small enough to run with the JIT off)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from allocator.scenario.build import grid_cells
from allocator.scenario.config import ScenarioConfig
from allocator.scenario.simulate import CellResult, Shared, run_cell
from allocator.scenario.world import World

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cells() -> dict[str, CellResult]:
    data = yaml.safe_load((ROOT / "configs" / "wechat_entry.yaml").read_text())
    data["world"].setdefault("mini_shop", {})["n_merchants"] = 80
    data["experiment"].update({"seeds": [1], "curve_points": 6, "ope_bootstrap": 10})
    scenario = ScenarioConfig.model_validate(data)
    world = World(scenario.world, seed=scenario.experiment.world_seed)
    return {
        c.strategy: run_cell(Shared(world, scenario), c) for c in grid_cells(scenario, world, 1500)
    }


def test_every_strategy_runs_and_the_oracle_has_no_regret(cells):
    assert set(cells) == {
        "static_split", "ab_then_commit", "eps_greedy", "beta_ts", "contextual_ts",
        "contextual_ts_protected", "value_ts_protected", "oracle",
    }  # fmt: skip
    assert cells["oracle"].metrics["regret_per_1k"] == pytest.approx(0.0, abs=1e-9)
    for name, cell in cells.items():
        m = cell.metrics
        assert m["impressions"] == 1500, name
        assert all(np.isfinite(v) for v in m.values() if isinstance(v, float)), name
        assert m["regret_per_1k"] >= -1e-9, name  # exact: nothing beats the oracle
        shares = [v for k, v in m.items() if k.startswith("share.")]
        assert sum(shares) == pytest.approx(1.0, abs=1e-9), name


@pytest.mark.parametrize("name", ["contextual_ts_protected", "value_ts_protected"])
def test_only_the_protected_strategies_report_their_contracts(cells, name):
    protected = cells[name].metrics
    assert any(k.startswith("contract.") for k in protected)
    assert not any(k.startswith("contract.") for k in cells["contextual_ts"].metrics)
    for k, v in protected.items():
        if k.endswith(".backstop_rate"):
            assert 0.0 <= v <= 1.0, k
