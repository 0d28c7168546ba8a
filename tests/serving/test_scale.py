"""10^6 merchants through the facade: built from an arms file within the issue's memory
budget (traced: 200 MB Beta, 300 MB shared linear), saved and loaded into the same state,
deciding as the original would, and exact (the checks of
``tests/policies/test_propensities_at_scale.py``) after the round trip."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allocator import Allocator
from tests.policies.test_propensities_at_scale import N, assert_exact, requests

PARTNERS = ["taobao", "douyin", "pdd"]
N_MERCHANTS = 1_000_000 - len(PARTNERS)  # 10^6 arms: the index space of ``requests``
POLICIES = {
    "beta_bernoulli": ({"kind": "beta_bernoulli"}, 200e6),
    "shared_linear": (
        {"kind": "shared_linear", "n_context_features": 2, "n_arm_features": 2}, 300e6
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def arms_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalogue") / "arms.parquet"
    ids = PARTNERS + [str(10_000_000 + i) for i in range(N_MERCHANTS)]
    feats = np.random.default_rng(0).normal(size=(len(ids), 2))
    table = pa.table({
        "id": ids, "group": PARTNERS + ["mini_shop"] * N_MERCHANTS,
        "features": pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), 2),
    })  # fmt: skip
    pq.write_table(table, path)
    return path


def config(policy: dict[str, Any], arms_file: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "engine": {"policy": {**policy, "refresh_every": 10**9}},
        "serving": {"reward_wait_s": 1e9, "refresh_every_s": None},
    }
    if arms_file is None:
        feats = {"features": [1.0, 0.0]} if "n_arm_features" in policy else {}
        out["arms"] = [{"id": g, "group": g, **feats} for g in PARTNERS]
    else:
        out["arms_file"] = {"path": str(arms_file), "groups": [*PARTNERS, "mini_shop"]}
    return out


def batch(ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray | None, lo: int, hi: int) -> list:
    return [
        {"candidates": idx[ptr[r] : ptr[r + 1]], "timestamp": 1.76e9 + r}
        | ({} if xs is None else {"context": xs[r]})
        for r in range(lo, hi)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(POLICIES))
def test_a_million_merchants_fit_round_trip_and_stay_exact(kind, arms_file, tmp_path):
    policy, budget = POLICIES[kind]
    Allocator(config(policy, None), seed=0).warmup()  # kernels loaded before tracing
    tracemalloc.start()
    alloc = Allocator(config(policy, arms_file), seed=5)
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"{kind}: {traced / 1e6:.0f} MB traced")
    assert traced <= budget
    assert alloc.registry.n_arms == 10**6

    rng = np.random.default_rng(11)
    known, ptr, idx = requests(rng)
    d = alloc.policy.n_features
    xs = None if d is None else rng.normal(size=(N + 4000, d))
    learned = alloc.decide_many(batch(ptr, idx, xs, 0, 4000))  # known arms learn
    success = np.linspace(0.02, 0.98, 10**6)[learned.arms]
    for decision_id, won in zip(learned.decision_ids, rng.random(4000) < success, strict=True):
        alloc.update(decision_id, {"order": float(won)})
    alloc.policy.refresh()

    alloc.save(tmp_path / "snap.npz")
    loaded = Allocator.load(tmp_path / "snap.npz")
    for f in alloc.policy.state.fields:
        assert np.array_equal(
            getattr(alloc.policy.state, f.name), getattr(loaded.policy.state, f.name)
        ), f.name
    head = batch(ptr, idx, xs, 4000, 4100)
    a, b = alloc.decide_many(head), loaded.decide_many(head)
    np.testing.assert_array_equal(a.arms, b.arms)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)

    out = loaded.decide_many(batch(ptr, idx, xs, 4100, N))
    assert_exact(idx[ptr[4100] :], out.arms, out.probabilities, known)
