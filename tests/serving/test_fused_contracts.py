"""Single ``decide`` under contracts through the fused entry (ids resolved and the contract
pipeline run in one bound compiled call) against the general path (``Engine.prepare`` +
``decide_prepared``): the same decisions, propensities, errors (type, text, order) and
byte-identical state over mixed calls, and exact propensities (counts vs Σ propensities)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from allocator import Allocator, AllocatorError, IntIds, UpdateStatus
from allocator.serving import AllocatorConfig
from tests.serving.helpers import T0, contracts_config, without_epoch

KINDS = ("shared_linear", "shared_logistic")


def _general(alloc: Allocator) -> Allocator:
    """``alloc`` with every fused entry off: each request takes the general path."""
    alloc.policy.DECIDE_CONTRACTED = None
    alloc.policy.DECIDE_JOINED = None
    return alloc


#: a good context, then refused ones (the config's max_abs_input is 1e6)
CONTEXTS = (
    np.array([1.0, 0.5, 0.0]), [1.0, 0.25, 1.0], {"age": 0.5, "tier": 1.0},
    np.array([1.0, np.nan, 0.0]), np.array([1.0, 2e6, 0.0]), np.array([1.0, 0.5]),
)  # fmt: skip
ATTRS = (None, {"slot": "top"}, {"slot": "feed"}, {"slot": 3}, {"other": "x"})


def _request(alloc: Allocator, rng: np.random.Generator, i: int) -> dict[str, Any]:
    """A random request, one in four of them refused somewhere (ids, context, attrs, time
    or candidates), in one of five candidate forms."""
    live = alloc.registry.members_all()
    ids = [live[k] for k in rng.choice(len(live), 2 + i % 11, replace=False)]
    bad = rng.integers(8) if rng.random() < 0.25 else -1
    if bad == 0:
        ids[rng.integers(len(ids))] = "nope"
    elif bad == 1:
        ids.append(ids[0])
    elif bad == 2:
        ids.append("retired:0")
    elif bad == 3:
        ids = []
    form = i % 5
    given: Any = ids
    if form == 1:
        given = tuple(ids)
    elif form == 2:
        given = np.array(ids)
    elif form in (3, 4):
        known = [a for a in ids if alloc.registry.knows(a)]
        idx = [alloc.registry.index_of(a) for a in known] + (
            [10**6 if i % 2 else -1] if len(known) < len(ids) else []
        )
        given = np.array(idx, dtype=np.int64) if form == 3 else IntIds([int(v) for v in idx])
    context = CONTEXTS[3 + rng.integers(3)] if bad == 4 else CONTEXTS[rng.integers(3)]
    attrs = ATTRS[3 + rng.integers(2)] if bad == 5 else ATTRS[rng.integers(3)]
    t = T0 + i - (10**5 if bad == 6 else 0)
    return {"candidates": given, "context": context, "attrs": attrs, "timestamp": t}


def _outcome(alloc: Allocator, req: dict[str, Any]) -> tuple[tuple[Any, ...], str | None]:
    """(what the call gave: the decision and its probabilities, or the error's type and
    text; the decision id)."""
    try:
        d = alloc.decide(**req)
    except AllocatorError as err:
        return (type(err), str(err)), None
    return (d._replace(decision_id=None), alloc.engine.probabilities.tobytes()), d.decision_id


def _state(alloc: Allocator) -> dict[str, bytes]:
    """Engine arrays (model, registry, contract queues and windows) and the pending
    decisions (arms, times, contexts: their ids differ by the allocators' epochs)."""
    arrays, _ = alloc.engine.export_state()
    out = {k: np.ascontiguousarray(v).tobytes() for k, v in arrays.items()}
    snap, _ = alloc.snapshot_state()
    for k, v in snap.items():
        if k.startswith("pending."):
            spelled = v.dtype.kind in "UO"  # decision ids: equal up to the epoch
            out[k] = repr([without_epoch(i) for i in v.tolist()]).encode() if spelled else (
                np.ascontiguousarray(v).tobytes()
            )  # fmt: skip
    return out


@pytest.mark.parametrize("contracts", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_fused_contracts_decide_refuse_and_learn_as_the_general_path(kind, contracts):
    """320 mixed calls (five candidate forms, a catalogue growth and retirements, feedback
    and expiry; about a third refused for their ids, candidates, context, attributes or
    time): the same decisions, probabilities, errors and state as the general path, a
    refused call changing nothing. With contracts the contracted entry decides, without
    them the lean one (attributes included)."""
    raw = contracts_config(kind, reward_wait_s=20.0, refresh_every_s=7.0).model_dump(mode="json")
    raw["constraints"]["backstop"] = 1.0  # the least allowed: forced decisions in every family
    cfg = AllocatorConfig.model_validate(raw)
    if not contracts:
        cfg = cfg.model_copy(update={"constraints": type(cfg.constraints)()})
    fused, general = Allocator(cfg, seed=6), _general(Allocator(cfg, seed=6))
    for alloc in (fused, general):
        alloc.add_arms(["retired:0"], "mini_shop", [[1.0, 0.1]])
        alloc.retire_arms(["retired:0"])
    rng = np.random.default_rng(8)
    refused, adjusted, forced = 0, set(), 0
    for i in range(320):
        if i == 100:  # past the capacity: id table, state and scratch reallocated
            for alloc in (fused, general):
                alloc.add_arms([f"late:{k}" for k in range(40)], "mini_shop",
                               np.full((40, 2), 0.4))  # fmt: skip
        if i == 200:
            for alloc in (fused, general):
                alloc.retire_arms(["late:3", "merchant:5"])
        req = _request(fused, rng, i)
        before = _state(fused) if i % 16 == 0 else None
        (a, id_a), (b, id_b) = _outcome(fused, req), _outcome(general, req)
        assert a == b, (i, req)
        if isinstance(a[0], type):
            refused += 1
            if before is not None:
                assert _state(fused) == before
            continue
        adjusted.update(a[0].adjusted_by)
        forced += a[0].forced_by is not None
        if i % 3 == 0:
            outcome = {"order": float(rng.random() < 0.5)}
            for alloc, decision_id in ((fused, id_a), (general, id_b)):
                assert alloc.update(decision_id, outcome) is UpdateStatus.APPLIED
    assert refused > 50
    if contracts:
        assert forced > 0 and adjusted >= {"tilt", "cold", "taobao_protected"}
        for call in fused.policy._contracted:
            assert call.key is not None  # indices, joined ids and string rows all fused
    else:
        assert fused.policy._joined.key is not None and fused.policy._rows.key is not None
    assert all(call.key is None for call in general.policy._contracted)
    assert general.policy._joined.key is None and general.policy._rows.key is None
    m, g = fused.metrics(), general.metrics()
    counts = ("decisions", "updates", "expired", "refreshes", "pending", "rejected")
    assert {k: m[k] for k in counts} == {k: g[k] for k in counts}
    assert m["expired"] > 50 and m["refreshes"] > 10
    assert _state(fused) == _state(general)


@pytest.mark.heavy
def test_fused_contract_propensities_are_exact():
    """Counts of each arm chosen match the summed propensities (5σ, every arm), with
    the floors, tilt and cold-start floor moving mass and the model learning."""
    cfg = contracts_config("shared_linear", n_merchants=12, reward_wait_s=5.0, refresh_every_s=3.0)
    alloc = Allocator(cfg, seed=11)
    rng = np.random.default_rng(12)
    ids = alloc.registry.all_ids()
    n = len(ids)
    count, expected, variance = np.zeros(n), np.zeros(n), np.zeros(n)
    subsets = [list(rng.choice(ids, 6, replace=False)) for _ in range(8)]
    for i in range(4000):
        cands = subsets[i % 8]
        d = alloc.decide(cands, np.array([1.0, (i % 5) / 5, float(i % 2)]),
                         {"slot": ("top", "feed")[i % 2]}, T0 + i)  # fmt: skip
        p = alloc.engine.probabilities
        idx = alloc.registry.lookup(cands)
        expected[idx] += p
        variance[idx] += p * (1 - p)
        count[d.arm_index] += 1
        if rng.random() < 0.3:
            alloc.update(d.decision_id, {"order": float(rng.random() < 0.2 + 0.05 * (i % 3))})
    assert alloc.policy._contracted[1].key is not None  # the fused entry decided
    seen = variance > 0
    z = (count[seen] - expected[seen]) / np.sqrt(variance[seen])
    assert np.abs(z).max() < 5.0, z
    assert (count[~seen] == 0).all()
