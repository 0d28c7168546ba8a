"""The single-call fast path (bound entry points, the short-list id lookup, one-row
pending-table paths) decides and learns exactly what the general path does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from allocator import Allocator, AllocatorConfig, AllocatorError, UnknownArmError, UpdateStatus
from allocator.engine import Engine
from allocator.kernels import idtable as kid
from allocator.registry import ArmRegistry
from tests.serving.helpers import BINARY, KINDS, T0, config, context_for

CANDS = ["taobao", "douyin", "merchant:0", "merchant:3", "merchant:5"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.heavy
def test_fast_single_calls_equal_the_general_path_with_learning(kind):
    """Same seed, same requests and outcomes: ``decide`` (a list of str) + ``update`` on one
    allocator, ``decide_many`` of one request (a numpy string array: the staged lookup and
    the batch pipeline) + ``update_many`` on the other. Every third decision gets feedback,
    the others expire one per call (reward_wait_s = 30 s, one request a second)."""
    cfg = config(kind, reward_wait_s=30.0, refresh_every_s=7.0)
    fast, general = Allocator(cfg, seed=9), Allocator(cfg, seed=9)
    rng = np.random.default_rng(0)
    reward = {"order": 1.0} if kind in BINARY else {"order": 1.0, "gmv": 20.0}
    for i in range(240):
        cands = CANDS[: 2 + i % 4]
        req = {"context": context_for(kind, i), "timestamp": T0 + i}
        a = fast.decide(cands, **req)
        b = general.decide_many([{"candidates": np.array(cands), **req}])
        assert (a.arm_index, a.propensity) == (int(b.arms[0]), float(b.propensities[0]))
        if i % 3 == 0:
            outcome = reward if rng.random() < 0.5 else {"order": 0.0}
            assert fast.update(a.decision_id, outcome) is UpdateStatus.APPLIED
            assert general.update_many([(b.decision_ids[0], outcome)]) == [UpdateStatus.APPLIED]
    _assert_same_learning(fast, general, min_expired=100)


def _assert_same_learning(fast: Allocator, general: Allocator, min_expired: int) -> None:
    """The same counters (with real expiry and refresh traffic) and byte-identical engine
    state (policy, registry, contract queues)."""
    counts = ("decisions", "updates", "expired", "refreshes", "pending", "rejected")
    mf, mg = fast.metrics(), general.metrics()
    assert mf["expired"] > min_expired and mf["refreshes"] > 10
    assert {k: mf[k] for k in counts} == {k: mg[k] for k in counts}
    sf, _ = fast.engine.export_state()
    sg, _ = general.engine.export_state()
    assert sf.keys() == sg.keys()
    for name in sf:
        assert sf[name].tobytes() == sg[name].tobytes(), name


def _resolved(reg: ArmRegistry, ids: list[str] | np.ndarray) -> list[int] | str:
    try:
        return reg.lookup(ids).tolist()
    except UnknownArmError as err:
        return str(err)


@pytest.mark.parametrize("n", [1, 2, kid.SHORT - 1, kid.SHORT, kid.SHORT + 1, 40])
def test_short_and_staged_id_lookups_agree(n):
    """A list of up to ``SHORT`` ids takes the one-at-a-time path, a longer list and a numpy
    string array the staged one: the same indices, and the same error naming the first
    unknown or retired id and its position."""
    ids = [f"m{i}" for i in range(60)]
    reg = ArmRegistry.build(ids, ["mini_shop"] * 60)
    reg.retire(["m5"])
    rng = np.random.default_rng(n)
    query = [ids[i] for i in rng.choice(np.setdiff1d(np.arange(60), [5]), n, replace=False)]
    head = query[: n - 1]
    cases = {
        "found": query,
        "unknown last": [*head, "nope"],
        "retired last": [*head, "m5"],
        "unknown first of two": [*head, "nope", "m5"],
        "retired first of two": [*head, "m5", "nope"],
    }
    results = {name: _resolved(reg, q) for name, q in cases.items()}
    assert results["found"] == [int(q[1:]) for q in query]
    assert results["unknown last"] == f"unknown arm id 'nope' at position {n - 1}"
    assert results["retired last"] == f"arm 'm5' at position {n - 1} is retired"
    assert results["unknown first of two"] == results["unknown last"]
    assert results["retired first of two"] == results["retired last"]
    for name, q in cases.items():
        assert _resolved(reg, np.array(q)) == results[name], name


@pytest.mark.parametrize("kind", ["beta_bernoulli", "shared_linear"])
def test_cached_kernel_arguments_follow_reallocated_arrays(kind):
    """The single call's cached argument list is rebuilt when the arrays it holds are
    replaced: arms added past the capacity (registry, policy state and contract arrays all
    reallocated) are decided on at once, exactly as the general path decides."""
    cfg = config(kind)
    fast, general = Allocator(cfg, seed=3), Allocator(cfg, seed=3)
    for alloc in (fast, general):
        alloc.decide(CANDS, context=context_for(kind, 0), timestamp=T0)
    capacity = fast.registry.capacity
    new = [f"late:{i}" for i in range(2 * capacity)]
    feats = np.tile([1.0, 0.5], (len(new), 1)) if kind == "shared_linear" else None
    for alloc in (fast, general):
        alloc.add_arms(new, "mini_shop", feats)
    assert fast.registry.capacity > capacity
    for i in range(1, 60):
        cands = ["taobao", *new[i % 7 :: 7][:5]]
        req = {"context": context_for(kind, i), "timestamp": T0 + i}
        a = fast.decide(cands, **req)
        b = general.decide_many([{"candidates": np.array(cands), **req}])
        assert (a.arm_index, a.propensity) == (int(b.arms[0]), float(b.propensities[0]))


@pytest.mark.parametrize("kind", ["shared_linear", "shared_logistic", "hybrid_linear"])
def test_bound_learning_step_equals_the_batch_update(kind):
    """The serving path's learning step (``update_checked``: for the shared linear model one
    bound compiled call, a subclass with its own update keeps the general step) leaves the
    policy byte-identical to ``update_batch`` of the same outcomes one at a time: refreshes
    at the same updates, and the bound call rebound after arms outgrow the state's arrays
    (a column-strided context takes the general step)."""
    cfg = config(kind)
    allocators = Allocator(cfg, seed=5), Allocator(cfg, seed=5)
    fast, general = (a.policy for a in allocators)
    rng = np.random.default_rng(1)
    for i in range(300):
        if i == 140:
            new = [f"late:{k}" for k in range(2 * fast.registry.capacity)]
            for a in allocators:
                a.add_arms(new, "mini_shop", np.tile([1.0, 0.5], (len(new), 1)))
        arm = int(rng.integers(fast.registry.n_arms))
        reward = float(rng.random() < 0.4)
        x = np.asfortranarray(np.array([context_for(kind, i)] * 2))[:1]
        if i % 5:
            x = np.ascontiguousarray(x)
        refreshed = fast.update_checked(arm, reward, x)
        version = general.version
        general.update_batch([arm], [reward], x)
        assert refreshed == (general.version != version)
    assert fast.version >= 4  # refresh_every = 64
    sf, _ = fast.export_state()
    sg, _ = general.export_state()
    assert sf.keys() == sg.keys()
    for name in sf:
        assert sf[name].tobytes() == sg[name].tobytes(), name


def test_contract_state_restored_in_c_order():
    """A snapshot may store arrays in Fortran order; the contract queues are restored
    C-contiguous (the layout the bound decide entry points are typed for), and decide as
    the C-ordered snapshot does, also after a contract-only reload keeps the policy."""
    cfg = config()
    source = Allocator(cfg, seed=5)
    for i in range(30):
        source.decide(CANDS, timestamp=T0 + i)
    arrays, meta = source.engine.export_state()
    fortran = {k: np.asfortranarray(v) if k.startswith("constraints.") else v
               for k, v in arrays.items()}  # fmt: skip
    assert not fortran["constraints.ring"].flags.c_contiguous
    spec = cfg.engine.policy
    engines = [Engine.restore(spec, cfg.constraints, 5, a, meta) for a in (arrays, fortran)]
    for e in engines:
        contracts = e.contracts
        assert all(a.flags.c_contiguous for a in (contracts.st_f, contracts.st_i, contracts.ring))
    for i in range(40):
        if i == 20:
            for e in engines:
                e.set_constraints(cfg.constraints)  # new queue arrays, same policy
        c, f = (e.decide(CANDS[: 2 + i % 4], None, None, T0 + 30 + i) for e in engines)
        assert (c.arm_index, c.propensity) == (f.arm_index, f.propensity)


def _without_contracts(kind: str = "beta_bernoulli", **serving: Any) -> AllocatorConfig:
    raw = config(kind, **serving).model_dump(mode="json")
    raw["constraints"] = {}
    return AllocatorConfig.model_validate(raw)


def _general(alloc: Allocator) -> Allocator:
    """``alloc`` with the fused ids-and-decide call off (every request takes the general
    path: the registry's lookup, then the policy's lean entry)."""
    alloc.policy.DECIDE_JOINED = None
    return alloc


#: the families with a fused ids-and-decide entry: context-free, and the shared linear one
FUSED_KINDS = ("beta_bernoulli", "shared_linear", "shared_logistic")
#: candidate ids as a list of str or a numpy string array
FORMS = {"list": list, "numpy": np.array}
#: refused index arrays (the context-free short path takes int64 ones, the general path
#: any other integer dtype)
BAD_INDICES = {
    "empty": np.zeros(0, dtype=np.int64),
    "out of range": np.array([0, 99]),
    "retired": np.array([0, 4]),
    "duplicate": np.array([1, 3, 1]),
    "negative": np.array([-1, 2]),
    "int32": np.array([1, 99], dtype=np.int32),
    "strided": np.array([1, 0, 1, 5])[::2],
    "2-d": np.array([[1, 2]]),
}


def _context(kind: str, i: int) -> np.ndarray | None:
    given = context_for(kind, i)
    return None if given is None else np.array(given)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("kind", FUSED_KINDS)
@pytest.mark.heavy
def test_fused_ids_and_decide_equal_the_general_path(kind, form):
    """Without contracts a list of str or a numpy string array is resolved and decided in
    one compiled call: the same decisions, propensities, learning and state as the two-call
    path, across a catalogue growth past the capacity (id table, state and scratch
    reallocated), a retirement and long lists (the staged lookup)."""
    cfg = _without_contracts(kind, reward_wait_s=30.0, refresh_every_s=7.0)
    fused, general = Allocator(cfg, seed=4), _general(Allocator(cfg, seed=4))
    rng = np.random.default_rng(2)
    shape = FORMS[form]
    for i in range(200):
        if i == 60:
            features = None if kind == "beta_bernoulli" else np.full((40, 2), 0.5)
            for alloc in (fused, general):
                alloc.add_arms([f"late:{k}" for k in range(40)], "mini_shop", features)
        if i == 120:
            for alloc in (fused, general):
                alloc.retire_arms(["late:3"])
        ids = [a for a in fused.registry.all_ids() if a != "late:3"]
        size = min(2 + i % 20, len(ids))
        cands = shape([ids[k] for k in rng.choice(len(ids), size=size, replace=False)])
        x = _context(kind, i)
        a, b = (alloc.decide(cands, x, timestamp=T0 + i) for alloc in (fused, general))
        assert a == b._replace(decision_id=a.decision_id)
        assert fused.engine.probabilities.tobytes() == general.engine.probabilities.tobytes()
        if i % 3 == 0:
            outcome = {"order": float(rng.random() < 0.5)}
            for alloc, d in ((fused, a), (general, b)):
                assert alloc.update(d.decision_id, outcome) is UpdateStatus.APPLIED
    bound = fused.policy._rows if form == "numpy" else fused.policy._joined
    assert bound.key is not None  # the fused call was taken (and bound)
    assert general.policy._joined.key is None and general.policy._rows.key is None
    _assert_same_learning(fused, general, min_expired=50)


BAD_IDS = {
    "unknown": ["taobao", "nope"],
    "retired": ["merchant:1", "merchant:2"],
    "duplicate": ["douyin", "merchant:0", "douyin"],
    "empty": [],
    "not a str": ["taobao", 3],
    "holds a NUL": ["taobao", "merchant:0\x00x"],
    "unencodable": ["taobao", "m\u20ac"],
    "index list": [0, 1],
}
#: contexts the shared families refuse (the config's max_abs_input is 1e6), and a good one
BAD_CONTEXTS = {
    "good context": np.array([1.0, 0.5, 0.0]),
    "NaN context": np.array([1.0, np.nan, 0.0]),
    "huge context": np.array([1.0, 2e6, 0.0]),
    "short context": np.array([1.0, 0.5]),
}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("case", list(BAD_IDS))
@pytest.mark.parametrize(
    ("kind", "context"),
    [("beta_bernoulli", None)] + [("shared_linear", c) for c in BAD_CONTEXTS],
)
def test_fused_path_rejects_exactly_as_the_general_path(kind, context, case, form):
    """Every refused request raises the general path's error type and message from the
    fused path too (the ids' error before the context's, as the general path checks them
    first), and leaves the allocator's whole state byte-identical."""
    cfg = _without_contracts(kind)
    x = None if context is None else BAD_CONTEXTS[context]
    fused, general = Allocator(cfg, seed=1), _general(Allocator(cfg, seed=1))
    for alloc in (fused, general):
        alloc.decide(CANDS, BAD_CONTEXTS["good context"] if x is not None else None,
                     timestamp=T0)  # fmt: skip
        alloc.retire_arms(["merchant:2"])
    before, _ = fused.snapshot_state()
    given = FORMS[form](BAD_IDS[case])
    outcomes = []
    for alloc in (fused, general):
        try:
            d = alloc.decide(given, x, timestamp=T0 + 1)
            outcomes.append((d.arm_index, d.propensity))
        except AllocatorError as err:
            outcomes.append((type(err), str(err)))
    assert outcomes[0] == outcomes[1]
    if isinstance(outcomes[0][0], type):  # refused: nothing changed
        after, _ = fused.snapshot_state()
        assert before.keys() == after.keys()
        for name in before:
            assert np.asarray(before[name]).tobytes() == np.asarray(after[name]).tobytes()


@pytest.mark.parametrize("case", list(BAD_INDICES))
def test_index_short_path_rejects_exactly_as_the_general_path(case):
    """A context-free family's int64 index arrays skip the general path's layers: every
    refused array raises the same error, state byte-identical, and good ones decide the
    same (also through a growth and with learning in between)."""
    cfg = _without_contracts(reward_wait_s=30.0)
    short, general = Allocator(cfg, seed=3), _general(Allocator(cfg, seed=3))
    for alloc in (short, general):
        alloc.retire_arms(["merchant:2"])  # index 4
    rng = np.random.default_rng(5)
    for i in range(60):
        if i == 30:
            for alloc in (short, general):
                alloc.add_arms([f"late:{k}" for k in range(20)], "mini_shop")
        n = short.registry.n_arms
        cand = rng.choice([a for a in range(n) if a != 4], size=2 + i % 5, replace=False)
        a, b = (alloc.decide(cand, timestamp=T0 + i) for alloc in (short, general))
        assert a == b._replace(decision_id=a.decision_id)
        if i % 2:
            for alloc, d in ((short, a), (general, b)):
                alloc.update(d.decision_id, {"order": 1.0})
    before, _ = short.snapshot_state()
    errors = []
    for alloc in (short, general):
        with pytest.raises(AllocatorError) as info:
            alloc.decide(BAD_INDICES[case], timestamp=T0 + 61)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]
    after, _ = short.snapshot_state()
    for name in before:
        assert np.asarray(before[name]).tobytes() == np.asarray(after[name]).tobytes()
    _assert_same_learning_state(short, general)


def _assert_same_learning_state(a: Allocator, b: Allocator) -> None:
    sa, _ = a.engine.export_state()
    sb, _ = b.engine.export_state()
    for name in sa:
        assert sa[name].tobytes() == sb[name].tobytes(), name
