"""``decide_many`` on its whole-batch path (plain dict requests, one candidate form, plain
attrs: one compiled lookup, whole-batch checks) against the request-by-request path (the
same requests in mixed forms and mapping types): identical decisions, propensities and
state under contracts, a cold-start floor, catalogue growth, retirement, expiry and
feedback; and the same refusal, with state byte-identical, for every id form."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pytest

from allocator import Allocator, InvalidInputError, UnknownArmError
from allocator.serving import AllocatorConfig
from tests.serving.helpers import ID_FORMS, T0, TILT_AND_COLD, config, id_form


def _config(kind: str) -> AllocatorConfig:
    """Integer arm ids (every id form applies), a partner floor, a tilt, a cold-start
    floor, a 20 s reward wait (decisions expire while the test runs)."""
    raw = config(kind, n_merchants=60, reward_wait_s=20.0).model_dump(mode="json")
    for i, arm in enumerate(raw["arms"]):
        arm["id"] = str(10**9 + i)
    raw["serving"]["pending_capacity"] = 400
    raw["constraints"]["constraints"] += TILT_AND_COLD
    return AllocatorConfig.model_validate(raw)


def _requests(alloc: Allocator, rng: np.random.Generator, n: int, t: int) -> list[dict]:
    live = alloc.registry.members_all()
    ctx = None if alloc.policy.n_features is None else [1.0, 0.5, 0.0]
    return [
        {"candidates": [live[i] for i in rng.choice(len(live), 12, replace=False)],
         "context": ctx, "attrs": {"slot": ("top", "feed")[r % 2]}, "timestamp": T0 + t + r,
         "request_id": f"q{t + r}"}
        for r in range(n)
    ]  # fmt: skip


def _one_by_one_forms(reqs: list[dict]) -> list:
    """The same requests as read-only mappings with mixed candidate forms: every stage
    takes its request-by-request path."""
    return [
        MappingProxyType({**r, "candidates": id_form(ID_FORMS[i % 4], r["candidates"]),
                          "attrs": MappingProxyType(r["attrs"])})
        for i, r in enumerate(reqs)
    ]  # fmt: skip


def _state_bytes(alloc: Allocator) -> dict[str, bytes]:
    """The engine's arrays (model, registry, contract queues) and meta, byte for byte."""
    arrays, meta = alloc.engine.export_state()
    return {k: np.ascontiguousarray(v).tobytes() for k, v in arrays.items()} | {
        "meta": repr(sorted((k, repr(v)) for k, v in meta.items())).encode()
    }


COUNTS = ("decisions", "pending", "expired", "evicted", "rejected", "refreshes")


@pytest.mark.parametrize("kind", ["beta_bernoulli", "shared_linear"])
@pytest.mark.parametrize("form", ID_FORMS)
@pytest.mark.heavy
def test_the_whole_batch_path_decides_and_learns_as_the_one_by_one_path(kind, form):
    cfg = _config(kind)
    fast, slow = Allocator(cfg, seed=3), Allocator(cfg, seed=3)
    rng = np.random.default_rng(4)
    features = None if kind == "beta_bernoulli" else [[1.0, 0.3], [1.0, 0.6]]
    t, adjusted = 0, set()
    for step in range(8):
        reqs = _requests(fast, rng, 30, t)
        a = fast.decide_many([{**r, "candidates": id_form(form, r["candidates"])} for r in reqs])
        b = slow.decide_many(_one_by_one_forms(reqs))
        for name in ("positions", "arms", "propensities", "probabilities", "forced",
                     "adjusted", "timestamps"):  # fmt: skip
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert a.request_ids == b.request_ids
        adjusted.update(a.adjusted_by(r) for r in range(len(a)))
        feedback = [(d, {"order": float(rng.random() < 0.4)}) for d in a.decision_ids[::3]]
        fast.update_many(feedback)
        slow.update_many([(s, o) for s, (_, o) in zip(b.decision_ids[::3], feedback, strict=True)])
        if step == 3:  # growth and retirement between batches
            for alloc in (fast, slow):
                alloc.add_arms([str(2 * 10**9 + i) for i in range(2)], "mini_shop", features)
                alloc.retire_arms([str(10**9 + 5), str(10**9 + 9)])
        t += 30
    assert any("cold" in names for names in adjusted)  # the cold-start floor acted
    m, n = fast.metrics(), slow.metrics()
    assert m["expired"] > 0 and [m[c] for c in COUNTS] == [n[c] for c in COUNTS]
    assert _state_bytes(fast) == _state_bytes(slow)


@pytest.mark.parametrize("form", ID_FORMS)
@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ("ghost", UnknownArmError, "unknown arm id '1999999999' at position 4"),
        ("retired", UnknownArmError, r"arm '1000000005' at position 4 is retired"),
        ("twice", InvalidInputError, r"request 3: candidates\[4\] = \d+ appears twice"),
    ],
)
def test_bad_ids_are_refused_as_one_by_one_with_state_unchanged(form, bad, error, match):
    alloc = Allocator(_config("beta_bernoulli"), seed=5)
    alloc.retire_arms([str(10**9 + 5)])
    rng = np.random.default_rng(6)
    alloc.decide_many(_requests(alloc, rng, 5, -100))
    before = _state_bytes(alloc)
    reqs = _requests(alloc, rng, 6, 0)
    cands = reqs[3]["candidates"]
    cands[4] = {"ghost": "1999999999", "retired": str(10**9 + 5), "twice": cands[1]}[bad]
    if bad != "twice":  # (ids are resolved before the kernel checks duplicates)
        reqs[5]["candidates"][0] = "1999999998"  # a later bad request is not the one named
    messages = []
    for given in ([{**r, "candidates": id_form(form, r["candidates"])} for r in reqs],
                  _one_by_one_forms(reqs)):  # fmt: skip
        with pytest.raises(error, match=match) as err:
            alloc.decide_many(given)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert _state_bytes(alloc) == before
    assert alloc.metrics()["rejected"] == 2
