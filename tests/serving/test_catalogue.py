"""The live arm catalogue: adding 1,000 merchants to a 50,000-arm allocator under decide
traffic, new arms served from their prior at once, retired arms never served again."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from allocator import Allocator, UnknownArmError
from allocator.serving import AllocatorConfig
from allocator.serving.catalogue import ADD_SLICE, add_slice
from tests.serving.helpers import config, context_for

T0 = 1_760_000_000.0


def big_config(n_merchants: int) -> AllocatorConfig:
    arms = [{"id": "taobao", "group": "taobao"}, {"id": "douyin", "group": "douyin"}]
    arms += [{"id": f"m{i}", "group": "mini_shop"} for i in range(n_merchants)]
    return AllocatorConfig.model_validate({
        "engine": {
            "policy": {"kind": "beta_bernoulli", "epsilon": 0.0,
                       "group_priors": {"mini_shop": {"alpha": 2.0, "beta": 8.0}}},
            "objective": {"order": 1.0, "take_rates": {"taobao": 0.03, "mini_shop": 0.05}},
        },
        "arms": arms,
        "serving": {"reward_wait_s": 1e9, "refresh_every_s": None},
    })  # fmt: skip


def beta28_survival(u: np.ndarray) -> np.ndarray:
    """P(X > u) for X ~ Beta(2, 8): P(Binomial(9, u) <= 1)."""
    return (1 - u) ** 9 + 9 * u * (1 - u) ** 8


@pytest.mark.heavy
def test_add_arms_under_decide_traffic_serves_new_arms_from_their_prior():
    n_old = 49_998
    alloc = Allocator(big_config(n_old), seed=1, clock=lambda: T0)
    alloc.warmup()
    assert alloc.registry.n_arms == 50_000
    stop = threading.Event()
    errors: list[BaseException] = []
    waits: list[float] = []

    def traffic(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            cand = np.concatenate([[0, 1], 2 + rng.choice(n_old, 8, replace=False)])
            start = time.perf_counter()
            try:
                alloc.decide(cand)
            except BaseException as err:  # any failure fails the test
                errors.append(err)
                return
            waits.append(time.perf_counter() - start)

    threads = [threading.Thread(target=traffic, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    before = len(waits)
    new_ids = [f"new{i}" for i in range(1000)]
    start = time.perf_counter()
    new = alloc.add_arms(new_ids, "mini_shop")
    add_s = time.perf_counter() - start
    during = waits[before:]
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(during) > 0, "no decision ran while the arms were added"
    hold = alloc.metrics()["catalogue_max_lock_s"]
    hold_cpu = alloc.metrics()["catalogue_max_lock_cpu_s"]
    print(
        f"add_arms(1000) to 50k arms: {add_s * 1e3:.1f} ms; decide p50 "
        f"{np.median(waits) * 1e6:.1f} µs; longest decision lock hold by the add "
        f"{hold * 1e6:.1f} µs wall, {hold_cpu * 1e6:.1f} µs CPU; longest decide latency during "
        "the add "
        f"{max(during) * 1e6:.1f} µs (GIL and scheduling included) over {len(during)} decisions"
    )
    assert hold > 0.0 and hold_cpu > 0.0
    np.testing.assert_array_equal(new, np.arange(50_000, 51_000))
    assert alloc.registry.capacity >= 51_000

    # Right after the add (no learning yet): P(new beats taobao) is its prior's.
    engine = alloc.engine
    taobao = int(alloc.registry.lookup(["taobao"])[0])
    ptr = np.arange(0, 2 * new.size + 1, 2)
    idx = np.column_stack([new, np.full(new.size, taobao)]).ravel()
    p_new = engine.decide_batch(ptr, idx, draw=False).probabilities[0::2]
    u = engine.policy.state.bank[taobao].astype(np.float64)  # taobao's Beta(1, 1) draws
    expected = beta28_survival(u).mean()
    assert p_new.mean() == pytest.approx(expected, abs=0.005)
    assert p_new.mean() > 0.1  # not the ε/n a catalogue without state would give

    # Retiring stops serving at once; the rest keeps working.
    alloc.retire_arms(new_ids[:10])
    with pytest.raises(UnknownArmError, match="retired"):
        alloc.decide(["new0", "taobao"])
    d = alloc.decide(["new10", "taobao"])
    assert d.arm_id in ("new10", "taobao")


@pytest.mark.parametrize(
    ("kind", "size"),
    [("beta_bernoulli", 16), ("shared_linear", 135), ("linear_gaussian", 78)],
)
def test_add_slices_are_sized_by_the_family_so_the_seed_decides(kind, size):
    """A slice's size comes from the arm state's size (bank rows included), not from any
    timing: each slice rolls the bank, so two allocators of one seed given the same adds
    keep deciding identically."""
    allocs = [Allocator(config(kind), seed=9) for _ in range(2)]
    assert add_slice(allocs[0].policy.state.values_per_arm()) == size
    assert add_slice(10**6) == ADD_SLICE
    feats = np.ones((3 * size + 1, 2)) if kind == "shared_linear" else None
    for alloc in allocs:
        alloc.add_arms([f"new{i}" for i in range(3 * size + 1)], "mini_shop", feats)
    cands = ["taobao", "new0", f"new{3 * size}", "merchant:1"]
    x = context_for(kind, 0)
    picks = [[a.decide(cands, x, timestamp=T0 + i).arm_id for i in range(50)] for a in allocs]
    assert picks[0] == picks[1]


def test_a_bulk_add_lands_every_arm_once_in_order():
    """100,000 merchants added in one call (6,250 slices of 16) get consecutive indices, are
    all served, and the old arms keep their state."""
    alloc = Allocator(big_config(20), seed=4, clock=lambda: T0)
    d = alloc.decide(["m1", "taobao"])
    alloc.update(d.decision_id, {"order": 1.0})
    before = alloc.policy.n_observations.copy()
    ids = [f"bulk{i}" for i in range(100_000)]
    idx = alloc.add_arms(ids, "mini_shop")
    np.testing.assert_array_equal(idx, np.arange(22, 100_022))
    np.testing.assert_array_equal(alloc.registry.lookup(ids[::997]), idx[::997])
    np.testing.assert_array_equal(alloc.policy.n_observations[:22], before[:22])
    assert not alloc.policy.n_observations[22:100_022].any()
    assert alloc.decide(["bulk99999", "bulk0"]).arm_id in ("bulk99999", "bulk0")


def test_add_arms_is_all_or_nothing_and_reactivates_retired_ids():
    alloc = Allocator(big_config(20), seed=2, clock=lambda: T0)
    with pytest.raises(Exception, match="already registered"):
        alloc.add_arms(["fresh", "m3"], "mini_shop")
    assert not alloc.registry.knows("fresh")
    alloc.retire_arms(["m3"])
    idx = alloc.add_arms(["m3", "fresh"], "mini_shop")
    assert idx[0] == 5 and idx[1] == 22
    for _ in range(50):
        assert alloc.decide(["m3", "fresh", "taobao"]).arm_id in ("m3", "fresh", "taobao")


@pytest.mark.heavy
def test_growth_keeps_learned_state_and_pending_decisions():
    alloc = Allocator(big_config(5000), seed=3, clock=lambda: T0)
    ds = [alloc.decide(["m1", "m2", "taobao"]) for _ in range(30)]
    alloc.add_arms([f"n{i}" for i in range(20_000)], "mini_shop")  # forces growth
    for d in ds:
        alloc.update(d.decision_id, {"order": 1.0})
    alloc.policy.refresh()
    s1 = alloc.policy.state.s1
    assert s1[alloc.registry.lookup(["m1", "m2", "taobao"])].sum() == pytest.approx(30.0)


@pytest.mark.heavy
def test_learning_during_a_sliced_growth_is_not_lost():
    """Updates land between the growth's copy slices: every one is in the grown arrays."""
    alloc = Allocator(big_config(30_000), seed=4, clock=lambda: T0)
    alloc.warmup()
    stop = threading.Event()
    applied: list[int] = []
    errors: list[BaseException] = []

    def traffic() -> None:
        rng = np.random.default_rng(8)
        while not stop.is_set():
            try:
                cand = np.concatenate([[0, 1], 2 + rng.choice(30_000, 8, replace=False)])
                d = alloc.decide(cand)
                alloc.update(d.decision_id, {"order": float(rng.random() < 0.3)})
                applied.append(d.arm_index)
            except BaseException as err:  # any failure fails the test
                errors.append(err)
                return

    thread = threading.Thread(target=traffic)
    thread.start()
    time.sleep(0.1)
    before = len(applied)
    alloc.add_arms([f"g{i}" for i in range(40_000)], "mini_shop")  # 30k -> 70k: grows
    during = len(applied) - before
    time.sleep(0.05)
    stop.set()
    thread.join()
    assert not errors, errors[:3]
    assert during > 0, "no update landed during the growth"
    state = alloc.policy.state
    counts = np.bincount(np.array(applied), minlength=state.capacity)
    np.testing.assert_array_equal(state.n_obs, counts)
    alloc.policy.settle()
    np.testing.assert_allclose(state.s1 + state.s0, counts, atol=1e-9)
