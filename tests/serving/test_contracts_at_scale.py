"""Exact propensities under contracts at 10^6 arms, through the facade: single ``decide``
(the fused contract entry, string ids resolved in the call) and ``decide_many`` (the batch
pipeline), with two partner floors, the Mini Shop tilt and a cold-start floor moving mass
while the model learns. The checks are those of
``tests/policies/test_propensities_at_scale.py`` (busy arms one by one, the others pooled,
calibration bins by logged propensity, the fresh arms' total), each at 5 sigma."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import Allocator
from tests.policies.test_propensities_at_scale import assert_exact
from tests.serving.helpers import T0, contracts_config

N_ARMS = 1_000_000
N = 20_000
KNOWN, OFFERED_KNOWN, OFFERED_FRESH = 2_000, 188, 10
BATCH = 500


def _requests(rng: np.random.Generator, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Known arms (the two partners and every 500th merchant added) and ``N`` requests of
    200 distinct candidates: both partners, 188 known merchants, 10 fresh ones."""
    step = (N_ARMS - base) // KNOWN
    merchants = base + np.arange(0, N_ARMS - base, step, dtype=np.int64)[:KNOWN]
    known = np.concatenate([np.array([0, 1]), merchants])
    rows = []
    for _ in range(N):
        fresh = base + rng.choice(N_ARMS - base, OFFERED_FRESH * 2, replace=False)
        fresh = fresh[~np.isin(fresh, merchants)][:OFFERED_FRESH]
        picked = rng.choice(merchants, OFFERED_KNOWN, replace=False)
        rows.append(np.concatenate([known[:2], picked, fresh]))
    return known, np.stack(rows)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["single", "many"])
def test_contract_propensities_are_exact_at_a_million_arms(path):
    cfg = contracts_config("shared_linear", n_merchants=12, reward_wait_s=5.0, refresh_every_s=3.0)
    alloc = Allocator(cfg, seed=5)
    rng = np.random.default_rng(6)
    base = alloc.registry.n_arms
    feats = np.column_stack([np.ones(N_ARMS - base), rng.random(N_ARMS - base)])
    alloc.add_arms([f"m{i}" for i in range(N_ARMS - base)], "mini_shop", feats)
    known, cands = _requests(rng, base)
    ids = alloc.registry.ids_of(cands.ravel()).reshape(cands.shape)
    xs = np.column_stack([np.ones(N), (np.arange(N) % 5) / 5, (np.arange(N) % 2).astype(float)])
    slots = [{"slot": ("top", "feed")[i % 2]} for i in range(N)]
    arms = np.empty(N, dtype=np.int64)
    probs = np.empty(cands.shape)
    forced = 0
    for start in range(0, N, BATCH):
        stop = start + BATCH
        if path == "single":
            for i in range(start, stop):
                d = alloc.decide(ids[i].tolist(), xs[i], slots[i], T0 + i)
                arms[i], probs[i] = d.arm_index, alloc.engine.probabilities
                forced += d.forced_by is not None
                if rng.random() < 0.3:
                    alloc.update(d.decision_id, {"order": float(rng.random() < 0.3)}, T0 + i)
        else:
            out = alloc.decide_many([
                {"candidates": ids[i].tolist(), "context": xs[i], "attrs": slots[i],
                 "timestamp": T0 + i} for i in range(start, stop)
            ])  # fmt: skip
            arms[start:stop] = out.arms
            probs[start:stop] = out.probabilities.reshape(BATCH, -1)
            forced += int((out.forced >= 0).sum())
            for r in np.flatnonzero(rng.random(BATCH) < 0.3):
                outcome = {"order": float(rng.random() < 0.3)}
                alloc.update(out.decision_ids[r], outcome, timestamp=T0 + stop)
    if path == "single":
        assert alloc.policy._contracted[1].key is not None  # the fused entry decided
    assert alloc.metrics()["refreshes"] > 10 and forced > 0
    assert_exact(cands.ravel(), arms, probs.ravel(), known)
