"""Nonstationary replay of the disjoint linear families with their refresh compiled into
the walk, against the replay as it ran before: walk back in Python at every refresh, and
that refresh re-solving by LAPACK (``tests.naive.lapack_linear_refresh``).

The compiled refresh re-solves by a Cholesky inverse, so the posteriors differ from
LAPACK's by rounding (~1e-16 relative, see ``tests/kernels/test_linear_refresh.py``).
Decisions compare float32 scores over the bank: such a difference moves a decision only if
it moves a score across a float32 rounding boundary that decides a bank row (chance
~1e-9 per score), so on these logs every target probability, acceptance and ``c`` is
identical, and the estimates and their intervals (sums of the same terms) are equal to
1e-12 relative; the final posteriors, after the same updates from starting points that
differed by rounding, to 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest

from allocator.replay import nonstationary as ns
from tests import naive
from tests.replay.test_rejection_walk import full_log, policy, subset_log


def as_before(pol, monkeypatch):
    """``pol`` refreshing as before the compiled refresh (the walk then leaves it to Python)."""
    monkeypatch.setattr(pol, "REFRESH", None)
    monkeypatch.setattr(pol, "_refresh", lambda: naive.lapack_linear_refresh(pol))
    return pol


@pytest.mark.parametrize("shape", ["subsets", "full"])
@pytest.mark.parametrize("kind", ["linear", "logistic"])
@pytest.mark.heavy
def test_compiled_refresh_replays_as_before(kind, shape, monkeypatch):
    data = subset_log(3000, True, None, seed=6) if shape == "subsets" else full_log(3000, True)
    new, old = policy(kind), as_before(policy(kind), monkeypatch)
    res = ns.replay_nonstationary(new, data, np.random.default_rng(8))
    ref = ns.replay_nonstationary(old, data, np.random.default_rng(8))
    print(f"{kind} {shape}: {res.n_accepted} accepted, {new.version} refreshes")
    assert new.version == old.version >= 20  # refreshes happened, as many
    assert res.n_events == ref.n_events and res.n_accepted == ref.n_accepted
    np.testing.assert_array_equal(res.trace.accepted, ref.trace.accepted)
    np.testing.assert_array_equal(res.trace.c, ref.trace.c)
    np.testing.assert_allclose(res.trace.weights, ref.trace.weights, rtol=1e-12)
    np.testing.assert_allclose(res.trace.terms, ref.trace.terms, rtol=1e-12, atol=1e-15)
    for a, b in ((res.value, ref.value), (res.low, ref.low), (res.high, ref.high),
                 (res.ess, ref.ess), (res.truncated_share, ref.truncated_share)):  # fmt: skip
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
    arrays, meta = new.export_state()
    ref_arrays, ref_meta = old.export_state()
    assert meta == ref_meta  # counters, clock, generator state: the same draws consumed
    for name, value in ref_arrays.items():
        np.testing.assert_allclose(arrays[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
