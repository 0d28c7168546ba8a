"""Same seed and inputs ⇒ same decisions; batch and one-at-a-time decisions agree."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import BetaBernoulliConfig, LinearGaussianConfig, NormalGammaConfig, make_policy
from tests.conftest import make_registry
from tests.requests import random_requests

CONFIGS = {
    "beta": (BetaBernoulliConfig(refresh_every=16), None),
    "normal_gamma": (NormalGammaConfig(refresh_every=16), None),
    "linear": (LinearGaussianConfig(n_features=4, refresh_every=16), 4),
}


def play(kind, seed, n=600):
    cfg, d = CONFIGS[kind]
    pol = make_policy(cfg, make_registry(8), seed=seed)
    rng = np.random.default_rng(99)
    out = []
    for _ in range(n):
        cand = rng.choice(8, int(rng.integers(1, 9)), replace=False)
        x = None if d is None else rng.normal(size=d)
        c = pol.decide(cand, x)
        pol.update(c.arm_index, float(rng.random() < 0.3), x)
        out.append((c.arm_index, c.propensity))
    return out


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.heavy
def test_same_seed_same_decisions(kind):
    assert play(kind, 3) == play(kind, 3)
    assert play(kind, 3) != play(kind, 4)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_batch_equals_sequential(kind):
    cfg, d = CONFIGS[kind]
    rng = np.random.default_rng(5)
    ptr, idx = random_requests(rng, 300, 8)
    xs = None if d is None else rng.normal(size=(300, d))
    a = make_policy(cfg, make_registry(8), seed=1)
    b = make_policy(cfg, make_registry(8), seed=1)
    batch = a.decide_batch(ptr, idx, xs)
    for r in range(300):
        c = b.decide(idx[ptr[r] : ptr[r + 1]], None if xs is None else xs[r])
        assert c.arm_index == batch.arms[r] and c.propensity == batch.propensities[r]
        np.testing.assert_array_equal(b.probabilities, batch.probabilities[ptr[r] : ptr[r + 1]])
