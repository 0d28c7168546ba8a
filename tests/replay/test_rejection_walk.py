"""The compiled replay walks against the Python walks they replaced (``tests.naive``):
rejection replay gives the same accepted rounds, estimate, stream position and final state
for every family, across chunk boundaries, in memory that does not grow with the log;
nonstationary replay the same trace, estimate and final state."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

from allocator import EvaluationRefused, InvalidInputError, make_policy
from allocator import config as c
from allocator.replay import LoggedData, replay_learning_policy, trace
from allocator.replay import nonstationary as ns
from allocator.replay import rejection as rj
from tests import naive
from tests.conftest import make_registry

K, D, DA = 6, 3, 2
SMALL = {"bank_rows": 32, "refresh_every": 8}
FEATS = {"n_context_features": D, "n_arm_features": DA, "max_candidates": 16}
#: the factored family learns the events (click, order, gmv) the log's ``outcomes`` hold
FACTORED = {
    "objective": c.ObjectiveConfig(click=0.01, order=0.2, gmv=0.01, take_rates={"g": 0.05}),
    "typical_order_value": 40.0, "value_log_sd": 0.8,
}  # fmt: skip
CONFIGS = {
    "beta": c.BetaBernoulliConfig(**SMALL),
    "normal_gamma": c.NormalGammaConfig(**SMALL),
    "linear": c.LinearGaussianConfig(n_features=D, max_candidates=16, **SMALL),
    "logistic": c.LogisticConfig(n_features=D, max_candidates=16, **SMALL),
    "logistic_refit": c.LogisticConfig(n_features=D, max_candidates=16, refit_buffer=16, **SMALL),
    "shared_linear": c.SharedLinearConfig(**FEATS, **SMALL),
    "shared_logistic": c.SharedLogisticConfig(**FEATS, **SMALL),
    "hybrid_linear": c.HybridLinearConfig(**FEATS, **SMALL),
    "hybrid_logistic": c.HybridLogisticConfig(**FEATS, **SMALL),
    "factored": c.FactoredValueConfig(**FEATS, **SMALL, **FACTORED),
    "factored_hybrid": c.FactoredValueConfig(**FEATS, **SMALL, **FACTORED, click_model="hybrid"),
}
ARM_FEATURES = np.random.default_rng(7).normal(size=(K, DA))


def policy(kind: str, seed: int = 3):
    cfg = CONFIGS[kind]
    features = ARM_FEATURES if any(s in kind for s in ("shared", "hybrid", "factored")) else None
    return make_policy(cfg, make_registry(K), seed=seed, arm_features=features)


def with_events(data: LoggedData, seed: int) -> LoggedData:
    """``data`` with the events its binary rewards stand for: the reward is the click, an
    order follows 40 % of clicks and carries a log-normal value."""
    rng = np.random.default_rng(seed + 1000)
    order = data.rewards * (rng.random(data.n_rounds) < 0.4)
    gmv = order * np.exp(rng.normal(3.5, 0.5, data.n_rounds))
    return dataclasses.replace(data, outcomes=np.column_stack([data.rewards, order, gmv]))


def subset_log(n: int, contexts: bool, eps: float | None, seed: int = 0) -> LoggedData:
    """Rounds over random candidate subsets (2..K arms), logged uniformly over them, or by
    an ε-mixture favouring the first candidate; binary rewards (the clicks of the events in
    ``outcomes``)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, K + 1, n)
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    idx = np.concatenate([rng.permutation(K)[:s] for s in sizes]).astype(np.int64)
    prob = np.repeat(1.0 / sizes, sizes)
    if eps is not None:
        first = np.zeros(ptr[-1])
        first[ptr[:-1]] = 1.0
        prob = eps * prob + (1.0 - eps) * first
    pick = np.array([rng.choice(s, p=prob[ptr[i] : ptr[i + 1]]) for i, s in enumerate(sizes)])
    data = LoggedData(
        arm_ids=tuple(f"arm:{a}" for a in range(K)), actions=idx[ptr[:-1] + pick],
        rewards=(rng.random(n) < 0.3 + 0.1 * (idx[ptr[:-1] + pick] % 3)).astype(np.float64),
        pscores=prob[ptr[:-1] + pick], contexts=rng.normal(size=(n, D)) if contexts else None,
        cand_ptr=ptr, cand_idx=idx, cand_prob=prob,
    )  # fmt: skip
    return with_events(data, seed)


@pytest.mark.parametrize("eps", [None, 0.4])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_walk_is_the_round_by_round_replay(kind, eps, monkeypatch):
    monkeypatch.setattr(rj, "CHUNK", 173)  # several chunks, boundaries mid-refresh
    data = subset_log(1500, kind not in ("beta", "normal_gamma"), eps)
    new, old = policy(kind), policy(kind)
    res = replay_learning_policy(new, data, np.random.default_rng(11), eps)
    ref, n_kept = naive.rejection_replay(old, data, np.random.default_rng(11), eps)
    print(f"{kind} eps={eps}: {res.n_accepted} of {res.n_kept} kept rounds accepted")
    assert res.n_accepted >= 100
    assert res.n_kept == n_kept
    np.testing.assert_array_equal(res.curve, np.cumsum(ref) / np.arange(1, ref.size + 1))
    assert res.value == float(ref.mean())
    assert new.stream_position == old.stream_position
    assert new.version == old.version and new.pending_updates == old.pending_updates
    assert_same_state(new, old)


def extra_peak(n: int) -> int:
    """Peak traced bytes of a Beta replay of an n-round log, beyond what its result's size
    explains: the accepted rewards are gathered, their mean, sd and running mean computed
    (numpy temporaries of that size), so three curves' worth is the result's share."""
    data = subset_log(n, False, None, seed=1)
    pol = policy("beta")
    replay_learning_policy(pol, data.take(0, 50), np.random.default_rng(0))  # warm up
    tracemalloc.start()
    res = replay_learning_policy(pol, data, np.random.default_rng(0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - 3 * res.curve.nbytes


# Compiled only (``heavy``: skipped by the JIT-off coverage run): tracemalloc sees numpy's
# allocations, and with NUMBA_DISABLE_JIT the kernels run as Python, whose per-call
# temporaries are not the compiled code's; the property is about the compiled replay.
@pytest.mark.heavy
def test_memory_does_not_grow_with_the_log(monkeypatch):
    monkeypatch.setattr(rj, "CHUNK", 2048)
    small, large = extra_peak(8192), extra_peak(65536)
    print(f"extra peak: {small / 1e3:.0f} kB at 8,192 rounds, {large / 1e3:.0f} kB at 65,536")
    # a chunk's temporaries are ~100 bytes per round (~250 kB at 2,048 rounds); any
    # per-round temporary over the whole log would add >= 8 bytes × 57,344 rounds = 460 kB
    assert large - small < 100_000


def full_log(n: int, contexts: bool, seed: int = 2) -> LoggedData:
    """Every arm a candidate of every round (a context-free policy's shared list), logged
    by a fixed skewed distribution."""
    rng = np.random.default_rng(seed)
    probs = 0.5 / K + 0.5 * rng.dirichlet(np.full(K, 0.5))
    actions = rng.choice(K, n, p=probs).astype(np.int64)
    data = LoggedData(
        arm_ids=tuple(f"arm:{a}" for a in range(K)), actions=actions,
        rewards=(rng.random(n) < 0.2 + 0.1 * (actions % 3)).astype(np.float64),
        pscores=probs[actions], contexts=rng.normal(size=(n, D)) if contexts else None,
        cand_ptr=np.arange(n + 1, dtype=np.int64) * K,
        cand_idx=np.tile(np.arange(K, dtype=np.int64), n), cand_prob=np.tile(probs, n),
    )  # fmt: skip
    return with_events(data, seed)


def assert_same_state(new, old) -> None:
    arrays, meta = new.export_state()
    ref_arrays, ref_meta = old.export_state()
    assert meta == ref_meta
    for name, value in ref_arrays.items():
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)


@pytest.mark.parametrize("shape", ["subsets", "full"])
@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.heavy
def test_nonstationary_walk_is_the_chunked_one(kind, shape, monkeypatch):
    contextual = kind not in ("beta", "normal_gamma")
    data = subset_log(1200, contextual, None) if shape == "subsets" else full_log(1200, contextual)
    options = {"c": "adaptive", "max_accepted": 300}
    new, old = policy(kind), policy(kind)
    res = ns.replay_nonstationary(new, data, np.random.default_rng(4), **options)
    monkeypatch.setattr(ns, "_walk", naive.nonstationary_walk)
    ref = ns.replay_nonstationary(old, data, np.random.default_rng(4), **options)
    print(f"{kind} {shape}: {res.n_accepted} of {res.n_events} events accepted")
    assert res.n_accepted == 300 or res.n_events == data.n_rounds
    assert res.n_accepted >= 100
    assert (res.value, res.low, res.high, res.n_events) == (ref.value, ref.low, ref.high,
                                                            ref.n_events)  # fmt: skip
    for a, b in zip(res.trace[:4], ref.trace[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same_state(new, old)


def test_a_bad_round_in_a_late_chunk_is_refused_before_anything_is_learned(monkeypatch):
    monkeypatch.setattr(rj, "CHUNK", 100)
    data = subset_log(400, False, None)
    pscores = data.pscores.copy()
    pscores[250] *= 0.5
    bad = dataclasses.replace(data, pscores=pscores)
    pol = policy("beta")
    before, _ = pol.export_state()
    with pytest.raises(EvaluationRefused, match=r"first offending rows \[250\]"):
        replay_learning_policy(pol, bad, np.random.default_rng(0))
    rewards = data.rewards.copy()
    rewards[399] = 2.0
    with pytest.raises(InvalidInputError, match=r"logged rounds from 300 .*reward\[99\] = 2.0"):
        replay_learning_policy(pol, dataclasses.replace(data, rewards=rewards),
                               np.random.default_rng(0))  # fmt: skip
    after, _ = pol.export_state()
    assert pol.stream_position == 0
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


@pytest.mark.parametrize("kind", ["factored", "factored_hybrid"])
def test_a_policy_that_learns_events_is_refused_a_log_without_them(kind):
    """Rewards alone cannot teach the factored family: a log without events (a foreign
    file with a reward column) is a typed error before anything is learned or drawn."""
    data = dataclasses.replace(subset_log(300, True, None), outcomes=None)
    pol = policy(kind)
    before, _ = pol.export_state()
    for replay in (
        lambda: replay_learning_policy(pol, data, np.random.default_rng(0)),
        lambda: ns.replay_nonstationary(pol, data, np.random.default_rng(0)),
    ):
        with pytest.raises(InvalidInputError, match=r"learns from the events \(click, order"):
            replay()
    assert pol.stream_position == 0
    after, _ = pol.export_state()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    # an impossible event (an order without a click) names the row
    bad = subset_log(300, True, None)
    events = bad.outcomes.copy()
    row = int(np.flatnonzero(events[:, 0] == 0.0)[0])
    events[row, 1] = 1.0
    with pytest.raises(InvalidInputError, match="an order without a click"):
        replay_learning_policy(pol, dataclasses.replace(bad, outcomes=events),
                               np.random.default_rng(0))  # fmt: skip


@pytest.mark.parametrize("kind", ["linear", "shared_linear", "hybrid_linear"])
def test_a_narrowed_bank_redraws_only_the_slots_in_use_and_is_undone(kind):
    pol = policy(kind)
    ctx = np.zeros((1, D))
    z0 = pol.state.z.copy()
    with pol.bank_in_use(5):
        pol.update_batch([0], [1.0], ctx)
        pol.refresh()
        z1 = pol.state.z.copy()
    assert (z1[:5] != z0[:5]).any()
    np.testing.assert_array_equal(z1[5:], z0[5:])
    pol.update_batch([0], [1.0], ctx)
    pol.refresh()
    assert (pol.state.z[5:] != z1[5:]).any()  # outside the block every slot rolls again


@pytest.mark.parametrize("cand_prob", [True, False])
@pytest.mark.parametrize("kind", ["beta", "linear"])
def test_nonstationary_replay_in_chunks_is_the_replay_in_one(kind, cand_prob, monkeypatch):
    """Chunk boundaries (mid-refresh, and the acceptance cap inside a later chunk) change
    nothing: same trace, bounds, estimate, interval and final state, with and without the
    logged candidate distributions (without them the bounds wait for the walk's largest
    weight)."""
    contextual = kind != "beta"
    data = subset_log(1500, contextual, None, seed=3)
    if not cand_prob:
        data = dataclasses.replace(data, cand_prob=None)
    options = {"max_accepted": 250}
    one, chunked = policy(kind), policy(kind)
    whole = ns.replay_nonstationary(one, data, np.random.default_rng(5), **options)
    monkeypatch.setattr(ns, "CHUNK", 173)
    parts = ns.replay_nonstationary(chunked, data, np.random.default_rng(5), **options)
    print(f"{kind}: {parts.n_accepted} accepted over {parts.n_events} events")
    assert parts.n_events > 3 * 173 and parts.n_accepted == 250
    assert (parts.value, parts.low, parts.high) == (whole.value, whole.low, whole.high)
    assert parts.trace.bounds == whole.trace.bounds
    for a, b in zip(parts.trace[:4], whole.trace[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same_state(chunked, one)


def nonstationary_peak(n: int, k: int) -> int:
    """Peak traced bytes of a nonstationary Beta replay of ``n`` rounds over all ``k`` arms
    (every candidate's logging probability logged)."""
    rng = np.random.default_rng(k)
    probs = rng.dirichlet(np.ones(k))
    actions = rng.choice(k, n, p=probs).astype(np.int64)
    data = LoggedData(
        arm_ids=tuple(f"arm:{a}" for a in range(k)), actions=actions,
        rewards=(rng.random(n) < 0.3).astype(np.float64), pscores=probs[actions],
        cand_ptr=np.arange(n + 1, dtype=np.int64) * k,
        cand_idx=np.tile(np.arange(k, dtype=np.int64), n), cand_prob=np.tile(probs, n),
    )  # fmt: skip
    pol = make_policy(CONFIGS["beta"], make_registry(k, capacity=32), seed=0)
    ns.replay_nonstationary(pol, data.take(0, 300), np.random.default_rng(0))  # warm up
    tracemalloc.start()
    ns.replay_nonstationary(pol, data, np.random.default_rng(0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.mark.heavy  # compiled only, as test_memory_does_not_grow_with_the_log
def test_nonstationary_memory_does_not_grow_with_the_log(monkeypatch):
    """Nothing grows with the log: the per-event trace lives in a memory-mapped temporary
    file, the interval reads it in chunks, the past-only reward-model fits keep no per-row
    temporary. 4 or 24 candidates a round, 8,192 or 40,960 rounds: the same peak, where
    one per-event float64 over the whole log would add 8 bytes × 32,768 rounds = 262 kB,
    and one per-candidate array over it 8 × 20 = 160 bytes a round more at 24."""
    monkeypatch.setattr(ns, "CHUNK", 2048)
    monkeypatch.setattr(trace, "READ_CHUNK", 2048)
    growth = {
        k: (nonstationary_peak(40_960, k) - nonstationary_peak(8192, k)) / 32_768 for k in (4, 24)
    }
    print({k: f"{v:.2f} B per round" for k, v in growth.items()})
    assert max(growth.values()) < 2.0
