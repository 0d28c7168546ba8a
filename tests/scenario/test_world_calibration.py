"""The default scenario tells the intended story, measured on exact truth (no outcome noise):
partners win at launch, strong merchants win several categories by the end, and the best
destination depends on the user's context."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from allocator.scenario.world import Chunk, World
from tests.worlds.scenario import default_world, shared_chunk

WINDOW_DAYS = 10.0


@pytest.fixture
def world() -> World:
    return default_world()


@pytest.fixture
def chunk() -> Chunk:
    return shared_chunk()


def _revenue(world: World, chunk: Chunk) -> npt.NDArray[np.float64]:
    """Exact expected revenue of every candidate: GMV x (take rate + strategic weight)."""
    return chunk.expected_gmv() * world.arm_value_per_gmv[chunk.cand_idx]


def _best_by_side(world: World, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
    """Per impression: best partner revenue and best merchant revenue (-inf if none)."""
    rev = _revenue(world, chunk)
    is_partner = chunk.cand_idx < world.n_partners
    starts = chunk.cand_ptr[:-1]
    best_p = np.maximum.reduceat(np.where(is_partner, rev, -np.inf), starts)
    best_m = np.maximum.reduceat(np.where(is_partner, -np.inf, rev), starts)
    return best_p, best_m


def _windows(world: World, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
    t = chunk.timestamps
    early = t < world.start_s + WINDOW_DAYS * 86400.0
    late = t >= world.end_s - WINDOW_DAYS * 86400.0
    return early, late


def test_partners_beat_the_mini_shop_at_the_start(world: World, chunk: Chunk) -> None:
    best_p, best_m = _best_by_side(world, chunk)
    early, _ = _windows(world, chunk)
    assert early.sum() > 200
    assert best_p[early].mean() > 2.0 * best_m[early].mean()
    assert (best_m[early] > best_p[early]).mean() < 0.10


def test_strong_merchants_win_several_categories_by_the_end(world: World, chunk: Chunk) -> None:
    best_p, best_m = _best_by_side(world, chunk)
    early, late = _windows(world, chunk)
    won = []
    for c in range(len(world.categories)):
        in_c = late & (chunk.category == c)
        assert in_c.sum() > 20
        won.append((best_m[in_c] > best_p[in_c]).mean())
    assert sum(share > 0.5 for share in won) >= 3
    assert min(won) < 0.5  # ...but not everywhere (electronics stays with the partners)
    assert (best_m[late] > best_p[late]).mean() > 4 * (best_m[early] > best_p[early]).mean()


def test_the_best_partner_depends_on_the_context(world: World, chunk: Chunk) -> None:
    """Per (tier, age, category) cell, the partner with the best mean revenue beats the single
    best partner overall by a clear margin, and different cells crown different partners."""
    early, _ = _windows(world, chunk)
    rev = _revenue(world, chunk)
    n_p = world.n_partners
    rows = np.repeat(np.arange(chunk.n), np.diff(chunk.cand_ptr))
    partner = chunk.cand_idx < n_p
    table = np.zeros((chunk.n, n_p))  # an ineligible partner earns nothing
    table[rows[partner], chunk.cand_idx[partner]] = rev[partner]
    table = table[early]
    cell = (chunk.city_tier * 4 + chunk.age_band)[early] * len(world.categories)
    cell = cell + chunk.category[early]
    context_free = table.mean(axis=0).max()
    contextual = 0.0
    winners = set()
    for c in np.unique(cell):
        sub = table[cell == c]
        best = int(sub.mean(axis=0).argmax())
        winners.add(best)
        contextual += sub[:, best].sum()
    contextual /= table.shape[0]
    assert winners == set(range(n_p))
    assert contextual > 1.15 * context_free
