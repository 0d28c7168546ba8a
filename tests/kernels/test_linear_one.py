"""The disjoint linear one-request entry (used by replay walks) is the batch kernel on a
batch of one: same checks, probabilities, draw and decision-stream position."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import ArmRegistry
from allocator.config import LinearGaussianConfig
from allocator.kernels import choice as ck
from allocator.kernels import linear as kl
from allocator.policies import make_policy
from allocator.replay.walks import Walker

D, K = 4, 8


def _policy():
    reg = ArmRegistry(capacity=16)
    reg.add([f"a{i}" for i in range(K)], "g")
    policy = make_policy(LinearGaussianConfig(n_features=D, max_candidates=6), reg, seed=3)
    rng = np.random.default_rng(0)
    policy.update_batch(rng.integers(0, K, 200), rng.random(200), rng.normal(size=(200, D)))
    policy.refresh()
    return policy


def _run(policy, cand, x, draw, one):
    """(code, chosen, probabilities, stream) of one request through either entry."""
    ptr = np.array([0, cand.shape[0]], dtype=np.int64)
    probs, out = np.zeros(cand.shape[0]), np.zeros((3, 1), dtype=np.int64)
    args = policy.kernel_args(ptr, cand, x[None], np.zeros(1), np.zeros((1, 0), np.int64),
                              draw, None, probs, out)  # fmt: skip
    if one:
        code, chosen = kl.decide_linear_one(cand, x, draw, *Walker(policy)._decide_args(args))
    else:
        code, chosen = kl.decide_linear(*args), out[0, 0]
    return code, chosen, probs.copy(), policy.state.stream.copy()


@pytest.mark.parametrize("draw", [True, False])
def test_one_request_entry_is_the_batch_of_one(draw):
    a, b = _policy(), _policy()
    rng = np.random.default_rng(1)
    for _ in range(50):
        cand = rng.choice(K, rng.integers(1, 7), replace=False).astype(np.int64)
        x = rng.normal(size=D)
        got, want = _run(a, cand, x, draw, True), _run(b, cand, x, draw, False)
        assert got[:2] == want[:2]
        np.testing.assert_array_equal(got[2], want[2])  # bit for bit
        np.testing.assert_array_equal(got[3], want[3])


@pytest.mark.parametrize(
    ("cand", "x", "code"),
    [
        ([1, 2, 1], [0.0] * D, ck.ERR_DUPLICATE),
        ([1, 2, 3, 4, 5, 6, 7], [0.0] * D, ck.ERR_TOO_MANY),
        ([1, 2], [np.nan] + [0.0] * (D - 1), ck.ERR_NONFINITE),
        ([1, 9], [0.0] * D, ck.ERR_RETIRED),
    ],
)
def test_one_request_entry_refuses_what_the_batch_kernel_refuses(cand, x, code):
    a, b = _policy(), _policy()
    c, xv = np.array(cand, dtype=np.int64), np.array(x)
    got, want = _run(a, c, xv, True, True), _run(b, c, xv, True, False)
    assert got[0] == want[0] == code
    np.testing.assert_array_equal(got[3], want[3])  # nothing drawn
    assert (a.state.pos_of_arm == -1).all()  # no mark left behind
