"""The class-level projection of floors and caps against the candidate-by-candidate one."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.kernels import constraints as kc
from allocator.kernels.projection import project_bounds
from tests import naive


def _case(rng, n, k, zero_side):
    """Random memberships (overlapping, nested, empty or full), kinds and bounds."""
    p = rng.dirichlet(np.ones(n))
    member = rng.random((k, n)) < rng.uniform(0.02, 0.6, (k, 1))
    member[0] = False  # a constraint without members in this request
    member[1] = member[2] & (rng.random(n) < 0.5)  # nested in another
    if zero_side:
        p[member[3]] = 0.0  # a target without mass is spread evenly
        p /= p.sum()
    floor = rng.random(k) < 0.7
    value = np.where(floor, rng.uniform(0.0, 0.3, k), rng.uniform(0.3, 1.0, k))
    balance = rng.normal(0.0, 1.0, k)
    return p, member, floor, value, balance


@pytest.mark.parametrize("seed", range(12))
def test_projection_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n, k, eta = int(rng.integers(2, 60)), 6, 0.05
    p, member, floor, value, balance = _case(rng, n, k, zero_side=seed % 3 == 0)
    mu = rng.random(n)
    def_i = np.zeros((k, kc.N_DEF_I), dtype=np.int64)
    def_i[:, kc.I_KIND] = np.where(floor, kc.FLOOR, kc.CAP)
    def_i[5, kc.I_KIND] = kc.TILT  # tilts are not bounds: applied before, never projected
    st_i = np.zeros((k, kc.N_STATE_I), dtype=np.int64)
    st_i[:, kc.J_ACTIVE] = 1
    st_i[4, kc.J_ACTIVE] = 0  # out of scope for this request
    st_i[:, kc.J_N_MEMBERS] = member.sum(axis=1)
    st_f = np.zeros((k, kc.N_STATE_F))
    st_f[:, kc.S_VALUE] = value
    st_f[:, kc.S_BALANCE] = balance
    st_f[:, kc.S_COST] = 0.25  # costs and moved mass accumulate
    got = p.copy()
    project_bounds(got, n, mu, def_i, st_f, st_i, eta, member, p.copy())

    bounded = [j for j in range(k) if st_i[j, kc.J_ACTIVE] and def_i[j, kc.I_KIND] != kc.TILT]
    sign = np.where(floor, 1.0, -1.0)
    bound = np.clip(value + sign * eta * balance, 0.0, 1.0)
    want, cost, moved = naive.project_bounds(p, member[bounded], floor[bounded], bound[bounded], mu)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)
    np.testing.assert_allclose(st_f[bounded, kc.S_COST], 0.25 + cost, rtol=0, atol=1e-12)
    np.testing.assert_allclose(st_f[bounded, kc.S_MOVED], moved, rtol=0, atol=1e-12)
    others = [j for j in range(k) if j not in bounded]
    np.testing.assert_array_equal(st_f[others, kc.S_MOVED], 0.0)
    for j in bounded:  # every bound holds afterwards, unless it cannot move (all or none)
        if 0 < member[j].sum() < n:
            mass = got[member[j]].sum()
            assert (mass >= bound[j] - 1e-9) if floor[j] else (mass <= bound[j] + 1e-9)
