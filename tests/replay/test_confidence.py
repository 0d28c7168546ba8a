"""Anytime-valid intervals: the betting kernel against a naive reference, rare rewards,
coverage on scenario cells logged by learning policies (next to the bootstrap's)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta

from allocator.kernels import confseq as kcs
from allocator.replay import LoggedData, evaluate
from allocator.replay.confidence import block_starts, dr_terms
from tests import naive
from tests.worlds.logged import log_rounds, make_world


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lower_bound_matches_the_naive_grid_search(seed):
    rng = np.random.default_rng(seed)
    x = rng.exponential(0.4, 300) * (rng.random(300) < 0.5)  # non-negative, heavy-ish
    bets = np.empty(300)
    kcs.plug_in_bets(x, 0.05, 0.5, 0.25, bets)
    got = kcs.lower_bound(x, bets, 0.05, 0.0, 1.0)
    grid = np.linspace(0.0, 1.0, 2001)
    want = naive.betting_lower(x, 0.05, grid, 0.5, kcs.BET_CAP)
    assert want - 1 / 2000 <= got <= want + 1e-12
    assert 0.0 < got < x.mean()


@pytest.mark.parametrize("logged", [True, False])
@pytest.mark.parametrize("clip", [None, 3.0])
def test_dr_terms_match_the_naive_reference(logged, clip):
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 6, 300)
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    nnz = int(ptr[-1])
    target = rng.dirichlet(np.ones(5), 300)  # rows cut to each round's size, some zeroed
    target = np.concatenate([t[:k] / t[:k].sum() for t, k in zip(target, sizes, strict=True)])
    target[rng.random(nnz) < 0.2] = 0.0
    cand_prob = rng.uniform(0.0, 1.0, nnz) if logged else None
    if cand_prob is not None:
        cand_prob[rng.random(nnz) < 0.05] = 0.0
    q = rng.random(nnz)
    pos = ptr[:-1] + rng.integers(0, sizes)
    r01, w = rng.random(300), rng.uniform(0.0, 8.0, 300)
    got = dr_terms(ptr, target, q, pos, r01, w, cand_prob, clip)
    want = naive.dr_terms(ptr, target, q, pos, r01, w, cand_prob, clip)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=0.0)
    assert got[1:] == pytest.approx(want[1:], rel=1e-12)


def test_past_only_blocks_double():
    assert block_starts(1000) == [0, 64, 128, 256, 512]
    assert block_starts(10) == [0]


@pytest.mark.heavy
def test_rare_rewards_upper_bound_is_at_least_the_binomial_bound_over_the_largest_weight():
    """A target that always picks arms with no observed reward: the interval cannot be 0."""
    lg = log_rounds(make_world(3), 3000, np.random.default_rng(3), subsets=False)
    data = lg.data
    zero_arms = [2, 3]
    rewards = np.where(np.isin(data.actions, zero_arms), 0.0, data.rewards)
    data = dataclasses.replace(data, rewards=rewards)
    n, k = data.n_rounds, data.n_arms
    target = np.zeros((n, k))
    target[:, zero_arms] = 0.5
    prob = target.ravel()
    ev = evaluate(data, prob, estimators=("ips", "dr", "dm"), reward_model="auto",
                  rng=np.random.default_rng(0))  # fmt: skip
    rows = np.isin(data.actions, zero_arms)
    n0 = int(rows.sum())
    exact = float(beta.ppf(0.975, 1, n0))  # Clopper-Pearson upper bound for 0 of n0
    w = prob.reshape(n, k)[np.arange(n), data.actions] / data.pscores
    bound = exact / float(w.max())
    print(f"rows {n0}, binomial bound {exact:.5f} / max weight {w.max():.2f} = {bound:.6f};",
          {name: ev[name] for name in ("ips", "dr", "dm")})  # fmt: skip
    for name in ("ips", "dr"):
        assert ev[name].value == 0.0 or name == "dr"
        assert ev[name].high >= bound, name
    assert ev["dm"].high > ev["dm"].low  # the split spread: never a zero-width DM interval


def _scenario_coverage(seeds: list[int], n: int) -> dict[str, float]:
    from allocator.scenario.config import load_scenario
    from tests.launch.test_scenario_launch import _cell_metrics, small_scenario

    learning = ["eps_greedy", "beta_ts", "contextual_ts", "contextual_ts_protected",
                "value_ts_protected"]  # fmt: skip
    keys = ["ope.ips.covers_truth", "ope.dr.covers_truth", "ope.ips.bootstrap_covers_truth",
            "ope.dr.bootstrap_covers_truth"]  # fmt: skip
    hits = dict.fromkeys(keys, 0.0)
    cells = 0
    with tempfile.TemporaryDirectory() as tmp:
        scenario = load_scenario(small_scenario(Path(tmp), seeds, ope_bootstrap=100))
        for seed in seeds:
            for m in _cell_metrics(scenario, learning, n, seed=seed).values():
                if "ope.ips.value" not in m:  # a logger without support: no estimate
                    continue
                cells += 1
                for key in keys:
                    hits[key] += m[key]
    rates = {key: v / cells for key, v in hits.items()}
    print(f"coverage over {cells} adaptively logged scenario cells:", rates)
    return rates


@pytest.mark.heavy
def test_default_intervals_cover_the_truth_on_10_adaptively_logged_cells():
    rates = _scenario_coverage([1, 2], 10_000)
    assert rates["ope.ips.covers_truth"] >= 0.9 and rates["ope.dr.covers_truth"] >= 0.9


@pytest.mark.slow
def test_default_intervals_cover_the_truth_on_50_adaptively_logged_cells():
    rates = _scenario_coverage(list(range(1, 11)), 20_000)
    assert rates["ope.ips.covers_truth"] >= 0.9 and rates["ope.dr.covers_truth"] >= 0.9


@pytest.mark.heavy
def test_binary_dm_and_dr_stay_in_range_for_every_target():
    """Logging, uniform, a deterministic pick, the world's target; ridge, logistic, auto."""
    lg = log_rounds(make_world(5), 1500, np.random.default_rng(5))
    data: LoggedData = lg.data
    ptr, idx = data.candidates()
    sizes = np.diff(ptr)
    first = np.zeros(idx.shape[0])
    first[ptr[:-1]] = 1.0
    targets = {"world": lg.target, "logging": data.cand_prob,
               "uniform": np.repeat(1.0 / sizes, sizes), "first": first}  # fmt: skip
    for tname, target in targets.items():
        for model in ("ridge", "logistic", "auto"):
            for interval in ("cs", "bootstrap"):
                ev = evaluate(data, target, estimators=("dm", "dr", "sndr", "ips"),
                              reward_model=model, interval=interval,
                              rng=np.random.default_rng(1))  # fmt: skip
                for name, e in ev.estimates.items():
                    assert 0.0 <= e.low <= e.value <= e.high <= 1.0, (tname, model, name, e)
