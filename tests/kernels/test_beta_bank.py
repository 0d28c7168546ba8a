"""The compiled Beta–Bernoulli bank refresh a replay walk runs is the policy's own refresh:
same draws from the same generator, same bank, winners, mean, sd and counters."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import make_policy
from allocator.config import BetaBernoulliConfig
from allocator.kernels import beta_bank as kbb
from tests.conftest import make_registry


def dirty_policy(k: int, rewards: str, seed: int = 5):
    """A Beta policy over ``k`` arms with updates pending: ``distinct`` gives every arm its
    own posterior, ``alike`` the same one (the policy then draws with scalar shapes)."""
    cfg = BetaBernoulliConfig(bank_rows=48, refresh_every=10**6, discount=0.999)
    pol = make_policy(cfg, make_registry(k, capacity=k), seed=seed)
    rng = np.random.default_rng(seed)
    arms = np.repeat(np.arange(k), 3)
    if rewards == "distinct":
        pol.update_batch(arms, (rng.random(arms.size) < 0.4).astype(float))
    else:  # every arm the same statistics (forgetting makes them differ by clock: none)
        pol.update_batch(np.arange(k), np.zeros(k))
        pol.state.t_last[:k] = pol.state.clock[0]
    return pol


@pytest.mark.parametrize("rewards", ["distinct", "alike"])
@pytest.mark.parametrize("k", [1, 7, kbb.MAX_ARMS])
def test_the_compiled_refresh_is_the_policys(k, rewards):
    ours, ref = dirty_policy(k, rewards), dirty_policy(k, rewards)
    s = ours.state
    kbb.refresh_beta_bank(
        ours.rng, k, ours.gamma, s.clock, s.t_last, s.s1, s.s0, s.a0, s.b0, s.dirty, s.bank,
        s.winner, s.mean, s.sd, s.pending, s.version, np.empty(k, dtype=np.int64),
        np.empty(k), np.empty(k), np.empty((k, s.bank.shape[1])),
    )  # fmt: skip
    ref.refresh()
    arrays, meta = ours.export_state()
    ref_arrays, ref_meta = ref.export_state()
    assert meta == ref_meta  # the generator's state among them: the same draws consumed
    for name, value in ref_arrays.items():
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)
    assert not s.dirty[:k].any() and ours.pending_updates == 0 and ours.version == 1
