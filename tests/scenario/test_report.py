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
