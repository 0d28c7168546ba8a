"""The disjoint linear refresh kernels: the re-solve against LAPACK, the score bank's roll
against the numpy draws it replaced, and the walk's compiled refresh against the policy's."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import make_policy
from allocator.config import LinearGaussianConfig
from allocator.kernels import linear as kl
from allocator.kernels import linear_refresh as klr
from tests import naive
from tests.conftest import make_registry

K, D = 7, 5


def dirty_policy(discount: float | None, seed: int = 4):
    """A linear policy with every arm updated since its last refresh (none yet)."""
    cfg = LinearGaussianConfig(n_features=D, bank_rows=40, max_candidates=12,
                               refresh_every=10**6, discount=discount)  # fmt: skip
    pol = make_policy(cfg, make_registry(K, capacity=K + 3), seed=seed)
    rng = np.random.default_rng(seed)
    arms = np.concatenate([np.arange(K), rng.integers(0, K, 60)])
    pol.update_batch(arms, rng.random(arms.size), rng.normal(size=(arms.size, D)))
    return pol


@pytest.mark.parametrize("discount", [None, 0.97])
def test_the_re_solve_is_lapacks_to_rounding(discount):
    """Cholesky inverse and mean against ``numpy.linalg`` on the discounted statistics:
    both are backward stable on these well-conditioned (λ = 1) precisions, so they agree
    to a few units in the last place; 1e-12 relative leaves room for d = 5 accumulations."""
    pol = dirty_policy(discount)
    s = pol.state
    arms = np.arange(K, dtype=np.int64)
    kl.refresh_linear(arms, pol.gamma, pol.lam, s.clock, s.t_last, s.g, s.h, s.mu0, s.mu,
                      s.a_inv, np.zeros((2 * D + 1, D)))  # fmt: skip
    mu, a = pol.posterior(arms)
    np.testing.assert_allclose(s.mu[:K], mu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(s.a_inv[:K], np.linalg.inv(a), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("d", [1, 2, 5, 16, 33])
def test_the_symmetric_inverse_is_numpys(d):
    """``L⁻ᵀL⁻¹`` against ``numpy.linalg.inv`` to 1e-12 relative on precisions like the
    policy's (Gram matrix plus λ = 1), exactly symmetric, for the factor's every size."""
    rng = np.random.default_rng(d)
    x = rng.normal(size=(3 * d, d))
    a = x.T @ x + np.eye(d)
    out, work, scratch = np.zeros((d, d)), np.zeros((d, d)), a.copy()
    kl.spd_inverse_symmetric(scratch, out, work)
    ref = np.linalg.inv(a)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_array_equal(out, out.T)
    np.testing.assert_allclose(work @ work.T, a, rtol=1e-12)  # the factor it went through


@pytest.mark.parametrize("pending", [0, 1, 7, 64, 5000])
@pytest.mark.parametrize("slots", [1, 3, 12])
def test_the_bank_roll_draws_what_numpy_drew(pending, slots):
    """Same normals in the same cells (float32, as numpy's cast rounds them), same cursor,
    same generator state: numba's ``Generator`` runs numpy's sampler on its bit generator."""
    z, z_ref = (np.zeros((12, 40), np.float32) for _ in range(2))
    rng, rng_ref = np.random.default_rng(9), np.random.default_rng(9)
    cursor, cursor_ref = np.array([35]), np.array([35])
    for _ in range(3):
        kl.roll_normals(rng, z, slots, pending, cursor)
        naive.roll_score_bank(z_ref, rng_ref, slots, pending, cursor_ref)
        np.testing.assert_array_equal(z, z_ref)
        assert cursor[0] == cursor_ref[0]
    assert rng.bit_generator.state == rng_ref.bit_generator.state
    assert np.count_nonzero(z) > 0


@pytest.mark.parametrize("discount", [None, 0.97])
def test_the_walks_refresh_is_the_policys(discount):
    """Every state array, the generator's state and the counters as after ``refresh()``."""
    ours, ref = dirty_policy(discount), dirty_policy(discount)
    s = ours.state
    klr.refresh_linear_walk(
        ours.rng, K, ours.gamma, ours.lam, s.clock, s.t_last, s.g, s.h, s.mu0, s.mu,
        s.a_inv, s.dirty, np.zeros((2 * D + 1, D)), s.z, ours.bank_slots, s.z_cursor,
        np.empty(K, dtype=np.int64), s.version, s.pending,
    )  # fmt: skip
    ref.refresh()
    arrays, meta = ours.export_state()
    ref_arrays, ref_meta = ref.export_state()
    assert meta == ref_meta
    for name, value in ref_arrays.items():
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)
    assert not s.dirty[:K].any() and ours.pending_updates == 0 and ours.version == 1
