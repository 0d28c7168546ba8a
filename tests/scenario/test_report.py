"""The ranked table's paired comparison: each strategy against the best one, seed by seed."""

from __future__ import annotations

import math

import pytest

from allocator.scenario.report import format_table, paired_gap, ranked_rows, table_csv


def metrics(value: float) -> dict[str, float]:
    return {"value_per_1k": value, "revenue_per_1k": 1.0, "gmv_per_1k": 10.0,
            "conversion": 0.01, "regret_per_1k": 250.0 - value, "impressions": 1000.0}  # fmt: skip


def test_the_gap_is_the_mean_paired_difference_with_a_t_interval():
    mean, half = paired_gap({1: 10.0, 2: 12.0, 3: 14.0}, {1: 9.0, 2: 10.0, 3: 14.0})
    # differences 1, 2, 0: mean 1, sd 1, t(0.975, 2) = 4.303
    assert mean == pytest.approx(1.0)
    assert half == pytest.approx(4.303 / math.sqrt(3.0))
    # only the seeds both ran count
    assert paired_gap({1: 10.0, 2: 12.0, 3: 99.0}, {1: 9.0, 2: 10.0}) == pytest.approx(
        (1.5, 12.706 * math.sqrt(0.5) / math.sqrt(2.0))
    )
    one = paired_gap({1: 10.0}, {1: 7.0, 2: 1.0})
    assert one is not None and one[0] == 3.0 and math.isnan(one[1])
    assert paired_gap({1: 10.0}, {2: 7.0}) is None


def test_the_table_compares_with_the_best_strategy_not_the_oracle():
    cells = [
        ("oracle", 1, metrics(240.0)), ("oracle", 2, metrics(241.0)),
        ("good", 1, metrics(180.0)), ("good", 2, metrics(184.0)),
        ("fair", 1, metrics(178.0)), ("fair", 2, metrics(179.0)),
        ("flaky", 1, metrics(150.0)), ("flaky", 2, None),
    ]  # fmt: skip
    rows = ranked_rows(cells, 0.1, references=frozenset({"oracle"}))
    by = {r["strategy"]: r for r in rows}
    assert [r["strategy"] for r in rows] == ["oracle", "good", "fair", "flaky"]
    for name in ("oracle", "good"):  # the reference and the best itself: nothing to compare
        assert math.isnan(by[name]["vs_best_per_1k"])
    # fair − good: −2 and −5 on seeds 1 and 2
    assert by["fair"]["vs_best_per_1k"] == pytest.approx(-3.5)
    assert by["fair"]["vs_best_half_width"] == pytest.approx(12.706 * 1.5)  # sd 1.5·√2, over √2
    # the failed cell is not paired: one seed, no interval
    assert by["flaky"]["vs_best_per_1k"] == pytest.approx(-30.0)
    assert math.isnan(by["flaky"]["vs_best_half_width"])
    table = format_table(rows)
    assert "vs best" in table.splitlines()[0]
    assert "-3.5 ± 19.1" in table and "-30.0 " in table
    assert "vs_best_per_1k,vs_best_half_width" in table_csv(rows).splitlines()[0]


def test_the_contract_layers_cost_is_shown_only_in_app_value():
    """The layer's cost is Σ(π − p)·μ̂ in the engine's objective units; divided by
    reward_scale it is app value only when the objective is the world's. An orders
    objective's cost was shown as app value per 1k (wrong units): it is left blank, unless
    an unconstrained twin gives the cost as a value gap (in app value whatever the
    objective)."""

    def cell(name: str, seed: int, value: float) -> tuple[str, int, dict[str, float]]:
        return name, seed, {**metrics(value), "contract.f.cost": 0.5}

    cells = [cell("app", 1, 180.0), cell("orders", 1, 170.0), cell("orders_twinned", 1, 160.0),
             ("free", 1, metrics(175.0))]  # fmt: skip
    rows = ranked_rows(cells, 0.1, {"orders_twinned": "free"},
                       other_objective=frozenset({"orders", "orders_twinned"}))  # fmt: skip
    by = {r["strategy"]: r for r in rows}
    assert by["app"]["protection_cost_per_1k"] == pytest.approx(0.5 / 0.1 / 1000 * 1000)
    assert math.isnan(by["orders"]["protection_cost_per_1k"])
    assert by["orders_twinned"]["protection_cost_per_1k"] == pytest.approx(15.0)
    line = next(t for t in format_table(rows).splitlines() if " orders " in t)
    assert line.split()[8] == "-"  # the protect cost/1k column


@pytest.mark.parametrize(
    ("engine", "sweep", "app_value"),
    [
        ({"policy": {"kind": "normal_gamma"}}, {}, True),
        ({"policy": {"kind": "beta_bernoulli"}, "objective": {"order": 1.0}}, {}, False),
        ({"policy": {"kind": "normal_gamma"}}, {"objective.gmv": [0.2]}, False),
        # the world's objective spelled out, its scale from the sweep
        ({"policy": {"kind": "normal_gamma"}, "objective": "world, gmv 0.2"},
         {"objective.gmv": [0.1]}, True),
        # without the world's take rates (the defaults): not app value
        ({"policy": {"kind": "normal_gamma"}, "objective": {"gmv": 0.1}}, {}, False),
    ],
)  # fmt: skip
def test_which_cells_optimise_the_app_value(engine, sweep, app_value):
    from allocator.config import parse_config
    from allocator.scenario.build import grid_cells, optimises_app_value
    from allocator.scenario.config import ScenarioConfig, world_objective
    from allocator.scenario.world import World, WorldConfig

    if engine.get("objective") == "world, gmv 0.2":
        engine = {**engine, "objective": {**world_objective(WorldConfig(), 0.1), "gmv": 0.2}}
    data = {"world": {"days": 3, "mini_shop": {"n_merchants": 40}},
            "experiment": {"seeds": [1], "ope_target": None},
            "strategies": [{"kind": "policy", "name": "p", "engine": engine, "sweep": sweep},
                           {"kind": "oracle", "name": "o"}]}  # fmt: skip
    cfg = parse_config(ScenarioConfig, data)
    cells = grid_cells(cfg, World(cfg.world, seed=7), 1000)
    assert [optimises_app_value(c.spec, cfg) for c in cells] == [app_value, False]
