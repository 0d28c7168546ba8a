"""A policy's single-call path (cached kernel arguments, the fused Beta learning step)
decides and learns exactly what its batch path does, also across a catalogue growth."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import BetaBernoulliConfig, NormalGammaConfig, make_policy
from tests.conftest import make_registry


@pytest.mark.parametrize(
    "cfg",
    [
        BetaBernoulliConfig(half_life=50.0, refresh_every=8, epsilon=0.1),
        BetaBernoulliConfig(rule="ucb", refresh_every=5),
        NormalGammaConfig(discount=0.99, refresh_every=8),
    ],
)
def test_single_calls_equal_batches_of_one(cfg):
    rng = np.random.default_rng(4)
    single, batch = (make_policy(cfg, make_registry(12), seed=2) for _ in range(2))
    for i in range(300):
        if i == 150:  # past the capacity: state, registry and scratch arrays reallocated
            for pol in (single, batch):
                pol.registry.add([f"late{k}" for k in range(40)], "g")
                pol.sync_arms()
        cand = rng.choice(single.registry.n_arms, size=2 + i % 9, replace=False)
        d = single.decide(cand)
        b = batch.decide_batch(np.array([0, cand.size]), cand)
        assert (d.arm_index, d.propensity, d.model_version) == (
            int(b.arms[0]), float(b.propensities[0]), b.model_version,
        )  # fmt: skip
        reward = float(rng.random() < 0.4) if cfg.kind == "beta_bernoulli" else rng.normal()
        single.update(d.arm_index, reward)
        batch.update_batch([d.arm_index], [reward])
    assert single.registry.capacity > 16 and single.version > 30
    s, _ = single.export_state()
    b, _ = batch.export_state()
    for name in s:
        np.testing.assert_array_equal(s[name], b[name], err_msg=name)
