"""The simulated world: interface, determinism, traffic shape, retrieval, and outcomes that
match the world's own truth tables (5-sigma binomial / CLT tolerances, fixed seeds)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from allocator.errors import InvalidInputError
from allocator.scenario.world import Chunk, World, WorldConfig
from tests.worlds.scenario import SIZES, Sizes, default_world, shared_chunk

DAY = 86400.0


@pytest.fixture
def world() -> World:
    return default_world()


@pytest.fixture
def chunk() -> Chunk:
    return shared_chunk()


@pytest.fixture
def sizes() -> Sizes:
    return SIZES


def _small_world(seed: int = 3, **mini_shop: object) -> World:
    base = WorldConfig()
    ms = base.mini_shop.model_copy(update={"n_merchants": 300, **mini_shop})
    return World(base.model_copy(update={"mini_shop": ms}), seed=seed)


def _concat(chunks: list[Chunk]) -> dict[str, np.ndarray]:
    out = {
        name: np.concatenate([getattr(c, name) for c in chunks])
        for name in ("timestamps", "contexts", "category", "cand_idx", "p_click", "order_value")
    }
    sizes = np.concatenate([np.diff(c.cand_ptr) for c in chunks])
    out["cand_ptr"] = np.concatenate([[0], np.cumsum(sizes)])
    return out


def _within(observed: float, expected: float, var: float, what: str) -> None:
    sd = float(np.sqrt(var))
    assert abs(observed - expected) <= 5.0 * sd + 1e-9, (
        f"{what}: observed {observed:.2f}, expected {expected:.2f} ± 5·{sd:.2f}"
    )


def test_interface(world: World, chunk: Chunk) -> None:
    n_p = 3
    assert world.arm_ids[:4] == ("taobao", "douyin", "pinduoduo", "merchant:00001")
    assert world.arm_ids[-1] == "merchant:02000"
    assert world.arm_groups[:4] == ("taobao", "douyin", "pinduoduo", "mini_shop")
    assert set(world.arm_groups[n_p:]) == {"mini_shop"}
    assert world.arm_features.shape == (2003, len(world.arm_feature_names))
    assert world.arm_features.dtype == np.float64
    assert world.arrival_s.shape == (2003,)
    assert np.all(world.arrival_s[:n_p] == world.start_s)
    assert world.start_s == 1759276800.0  # 2025-10-01T00:00Z
    assert world.end_s == world.start_s + 120 * DAY
    assert world.take_rates == {
        "taobao": 0.03,
        "douyin": 0.04,
        "pinduoduo": 0.03,
        "mini_shop": 0.05,
    }
    assert world.strategic_weight == 0.03
    n = chunk.n
    assert chunk.contexts.shape == (n, len(world.context_names))
    for name in ("category", "city_tier", "age_band", "referral", "cand_ptr", "cand_idx"):
        assert getattr(chunk, name).dtype == np.int64, name
    nnz = int(chunk.cand_ptr[-1])
    assert chunk.cand_ptr[0] == 0 and np.all(np.diff(chunk.cand_ptr) >= 1)
    for name in ("cand_idx", "p_click", "p_order", "order_value"):
        assert getattr(chunk, name).shape == (nnz,), name
    assert chunk.cand_idx.min() >= 0 and chunk.cand_idx.max() < len(world.arm_ids)
    assert np.all((chunk.p_click > 0) & (chunk.p_click < 1))
    assert np.all((chunk.p_order > 0) & (chunk.p_order < 1))
    assert np.all(chunk.order_value > 0)
    # Rates in the documented ranges: clicks of a few to ~20 %, orders 10-40 % when mature.
    partner = chunk.cand_idx < n_p
    assert 0.05 < chunk.p_click[partner].mean() < 0.2
    assert 0.1 < chunk.p_order[partner].mean() < 0.4
    assert 50 < np.median(chunk.order_value) < 500


def test_contexts_match_the_drawn_attributes(world: World, chunk: Chunk) -> None:
    names = world.context_names
    assert names[:8] == (
        "bias", "tier_1", "tier_2", "tier_3",
        "age_18_24", "age_25_34", "age_35_49", "age_50_plus",
    )  # fmt: skip
    assert names[8:] == (*(f"intent_{c}" for c in world.categories), "referral")
    x = chunk.contexts
    rows = np.arange(chunk.n)
    assert np.all(x[:, 0] == 1.0)
    assert np.all(x[rows, 1 + chunk.city_tier] == 1.0) and np.all(x[:, 1:4].sum(1) == 1.0)
    assert np.all(x[rows, 4 + chunk.age_band] == 1.0) and np.all(x[:, 4:8].sum(1) == 1.0)
    assert np.all(x[rows, 8 + chunk.category] == 1.0) and np.all(x[:, 8:14].sum(1) == 1.0)
    assert np.array_equal(x[:, 14], chunk.referral.astype(float))
    users = world.config.users
    for values, probs, what in (
        (chunk.city_tier, users.city_tier, "tier"),
        (chunk.age_band, users.age_band, "age"),
    ):
        counts = np.bincount(values, minlength=len(probs))
        for c, p in zip(counts, probs, strict=True):
            _within(c, chunk.n * p, chunk.n * p * (1 - p), what)


def test_determinism_and_chunking(world: World, sizes: Sizes) -> None:
    n = sizes.small
    one = _concat(list(world.stream(n, chunk_size=n, seed=5)))
    cut = _concat(list(world.stream(n, chunk_size=n // 7 + 1, seed=5)))
    for name, arr in one.items():
        assert np.array_equal(arr, cut[name]), name
    again = World(WorldConfig(), seed=7)
    assert np.array_equal(again.arm_features, world.arm_features)
    other_stream = _concat(list(world.stream(n, chunk_size=n, seed=6)))
    assert not np.array_equal(one["timestamps"], other_stream["timestamps"])
    other_world = World(WorldConfig(), seed=8)
    assert not np.array_equal(other_world.arm_features, world.arm_features)
    other = _concat(list(other_world.stream(n, chunk_size=n, seed=5)))
    assert not np.array_equal(one["p_click"][:100], other["p_click"][:100])


def test_outcome_draws_are_deterministic(world: World, chunk: Chunk) -> None:
    first = chunk.cand_ptr[:-1]
    a = world.draw_outcomes(chunk, first, seed=1)
    b = world.draw_outcomes(chunk, first, seed=1)
    c = world.draw_outcomes(chunk, first, seed=2)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_a_slice_of_a_chunk_draws_its_impressions_outcomes(world: World, chunk: Chunk) -> None:
    lo, hi = 37, min(chunk.n, 637)
    part = chunk.rows(lo, hi)
    assert part.n == hi - lo and part.offset == chunk.offset + lo
    flo, fhi = chunk.cand_ptr[lo], chunk.cand_ptr[hi]
    assert np.array_equal(part.cand_idx, chunk.cand_idx[flo:fhi])
    assert np.array_equal(part.cand_ptr, chunk.cand_ptr[lo : hi + 1] - flo)
    assert np.array_equal(part.contexts, chunk.contexts[lo:hi])
    first = chunk.cand_ptr[:-1]  # every impression's first candidate
    whole = world.draw_outcomes(chunk, first, seed=3)
    sliced = world.draw_outcomes(part, part.cand_ptr[:-1], seed=3)
    for x, y in zip(whole, sliced, strict=True):
        assert np.array_equal(x[lo:hi], y)
    assert whole[0][lo:hi].any()  # the check compared some clicks, not only zeros


def test_timestamps_sorted_and_inside_the_period(world: World, sizes: Sizes) -> None:
    chunks = list(world.stream(sizes.small, chunk_size=sizes.small // 3 + 1, seed=2))
    t = np.concatenate([c.timestamps for c in chunks])
    assert t.shape == (sizes.small,)
    assert np.all(np.diff(t) >= 0)
    assert t[0] >= world.start_s and t[-1] < world.end_s
    assert [c.offset for c in chunks] == [0, *np.cumsum([c.n for c in chunks])[:-1].tolist()]


def test_diurnal_profile_and_double11(world: World, chunk: Chunk) -> None:
    n = chunk.n
    local = chunk.timestamps + world.config.traffic.utc_offset_hours * 3600.0
    hour = (local // 3600 % 24).astype(np.int64)
    counts = np.bincount(hour, minlength=24)
    bins = np.arange(world.config.days * 24) + world.config.traffic.utc_offset_hours
    expected = np.bincount(bins % 24, weights=world._bin_weight, minlength=24)
    for h in range(24):
        _within(counts[h], n * expected[h], n * expected[h] * (1 - expected[h]), f"hour {h}")
    assert counts[21] > 5 * counts[4]
    first = world.first_local_day
    local_start = world.start_s + world.config.traffic.utc_offset_hours * 3600.0
    day = (local // DAY - local_start // DAY).astype(np.int64)
    day_counts = np.bincount(day)
    oct_days = [(date(2025, 10, d) - first).days for d in range(2, 32)]  # whole local days
    nov11 = (date(2025, 11, 11) - first).days
    dec12 = (date(2025, 12, 12) - first).days
    assert day_counts[nov11] > 2.0 * day_counts[oct_days].mean()
    assert day_counts[dec12] > 1.3 * day_counts[oct_days].mean()
    # Double-11 shifts the intent mix towards apparel and electronics.
    p = np.diff(world._cum_intent, axis=1, prepend=0.0)
    cats = world.categories
    shop = [cats.index("apparel"), cats.index("electronics")]
    assert p[nov11, shop].sum() > p[oct_days[0], shop].sum() + 0.08
    w_cat = np.zeros(len(cats))
    for b, wb in enumerate(world._bin_weight):
        w_cat += wb * p[world._bin_row[b]]
    got = np.bincount(chunk.category, minlength=len(cats))
    for c in range(len(cats)):
        _within(got[c], n * w_cat[c], n * w_cat[c] * (1 - w_cat[c]), f"intent {cats[c]}")


def _check_candidates(world: World, chunk: Chunk) -> None:
    n_p, k = world.n_partners, world.config.mini_shop.k
    sizes = np.diff(chunk.cand_ptr)
    rows = np.repeat(np.arange(chunk.n), sizes)
    idx = chunk.cand_idx
    merchant = idx >= n_p
    m = idx[merchant] - n_p
    # Only arrived merchants that sell the impression's intent category.
    assert np.all(world.arrival_s[idx[merchant]] <= chunk.timestamps[rows[merchant]])
    sells = world.arm_features[:, n_p + 1 : n_p + 1 + len(world.categories)]
    assert np.all(sells[idx[merchant], chunk.category[rows[merchant]]] == 1.0)
    assert np.all(sells[:n_p] == 0.0)
    # No duplicates within an impression.
    key = rows * len(world.arm_ids) + idx
    assert np.unique(key).shape == key.shape
    # k merchants, or every arrived seller of the category when fewer have arrived.
    n_m = np.bincount(rows[merchant], minlength=chunk.n)
    arrived = np.zeros(chunk.n, dtype=np.int64)
    for c in range(len(world.categories)):
        sellers = np.sort(world.arrival_s[n_p:][sells[n_p:, c] == 1.0])
        mine = chunk.category == c
        arrived[mine] = np.searchsorted(sellers, chunk.timestamps[mine], side="right")
    assert np.array_equal(n_m, np.minimum(arrived, k))
    assert m.max() < world.config.mini_shop.n_merchants


def test_candidates_are_eligible(world: World, chunk: Chunk) -> None:
    _check_candidates(world, chunk)
    n_p = world.n_partners
    for p, cfg in enumerate(world.config.partners):
        shown = int((chunk.cand_idx == p).sum())
        q = cfg.eligibility
        _within(shown, chunk.n * q, chunk.n * q * (1 - q), f"{cfg.id} eligibility")
    assert n_p == 3


def test_cold_start_and_scarce_categories(sizes: Sizes) -> None:
    """Few merchants: some impressions see fewer than k merchants, and late arrivals only
    appear after they arrive; with partners rarely eligible the fallback keeps >= 1 arm."""
    world = _small_world(k=30, initial_share=0.05)
    partners = [p.model_copy(update={"eligibility": 0.5}) for p in world.config.partners]
    world = World(world.config.model_copy(update={"partners": partners}), seed=3)
    ch = next(world.stream(sizes.small, chunk_size=sizes.small, seed=1))
    _check_candidates(world, ch)
    n_m = np.diff(ch.cand_ptr) - np.add.reduceat((ch.cand_idx < 3).astype(int), ch.cand_ptr[:-1])
    assert n_m.min() < 30 and n_m.max() == 30


def test_popularity_retrieval(sizes: Sizes) -> None:
    world = _small_world(retrieval="popularity", k=5, popularity_sd=1.0)
    ch = next(world.stream(sizes.small, chunk_size=sizes.small, seed=4))
    _check_candidates(world, ch)
    uni = _small_world(k=5)
    ch_u = next(uni.stream(sizes.small, chunk_size=sizes.small, seed=4))
    # Popular merchants are retrieved more often than under uniform retrieval.
    weight = np.diff(world._cat_cum_pop, prepend=0.0)
    weight[world._cat_ptr[:-1]] = world._cat_cum_pop[world._cat_ptr[:-1]]
    pop = np.zeros(300)
    pop[world._cat_merchant] = weight
    hits = np.bincount(ch.cand_idx[ch.cand_idx >= 3] - 3, minlength=300)
    hits_u = np.bincount(ch_u.cand_idx[ch_u.cand_idx >= 3] - 3, minlength=300)
    top = pop > np.median(pop)
    assert hits[top].sum() / hits.sum() > hits_u[top].sum() / hits_u.sum() + 0.05


def test_arm_features_are_observable_only(world: World) -> None:
    cats = world.categories
    assert world.arm_feature_names == (
        "group_taobao", "group_douyin", "group_pinduoduo", "group_mini_shop",
        *(f"sells_{c}" for c in cats), "rating", "price_level",
    )  # fmt: skip
    f = world.arm_features
    assert np.all(f[:, :4].sum(axis=1) == 1.0)
    assert np.array_equal(f[:, :4].argmax(axis=1)[:3], [0, 1, 2])
    assert np.all(f[:3, 4:] == 0.0)
    assert set(np.unique(f[3:, 4:10].sum(axis=1))) <= {1.0, 2.0}
    quality = world._quality
    for col in (-2, -1):
        for hidden in (quality, np.log(world._value_level)):
            assert abs(np.corrcoef(f[3:, col], hidden)[0, 1]) < 0.95
    assert np.corrcoef(f[3:, -2], quality)[0, 1] > 0.3  # informative, though noisy


def test_outcome_frequencies_match_the_truth(world: World, chunk: Chunk, sizes: Sizes) -> None:
    rng = np.random.default_rng(2024)
    n_cand = np.diff(chunk.cand_ptr)
    n_p = world.n_partners
    sigma2 = world.config.gmv_sigma**2
    groups = {"partners": lambda idx: idx < n_p, "mini_shop": lambda idx: idx >= n_p}
    for rep in range(sizes.outcome_reps):
        chosen = chunk.cand_ptr[:-1] + (rng.random(chunk.n) * n_cand).astype(np.int64)
        click, order, gmv = world.draw_outcomes(chunk, chosen, seed=100 + rep)
        assert np.all(order <= click) and np.all((gmv > 0) == (order > 0))
        pc, po, ov = chunk.p_click[chosen], chunk.p_order[chosen], chunk.order_value[chosen]
        q, mu = pc * po, pc * po * ov
        var_gmv = q * ov**2 * np.exp(sigma2) - mu**2
        slices = [(g, fn(chunk.cand_idx[chosen])) for g, fn in groups.items()]
        slices += [(c, chunk.category == i) for i, c in enumerate(world.categories)]
        for name, s in slices:
            _within(click[s].sum(), pc[s].sum(), (pc * (1 - pc))[s].sum(), f"{name} clicks")
            _within(order[s].sum(), q[s].sum(), (q * (1 - q))[s].sum(), f"{name} orders")
            _within(gmv[s].sum(), mu[s].sum(), var_gmv[s].sum(), f"{name} gmv")


def test_bad_arguments_raise_typed_errors(world: World, chunk: Chunk) -> None:
    with pytest.raises(InvalidInputError, match="seed"):
        World(WorldConfig(), seed=-1)
    with pytest.raises(InvalidInputError, match="n_impressions"):
        next(world.stream(-5))
    with pytest.raises(InvalidInputError, match="chunk_size"):
        next(world.stream(10, chunk_size=0))
    with pytest.raises(InvalidInputError, match=r"expected \(\d+,\) integers"):
        world.draw_outcomes(chunk, np.zeros(3, dtype=np.int64), seed=0)
    with pytest.raises(InvalidInputError, match=r"expected \(\d+,\) integers"):
        world.draw_outcomes(chunk, chunk.cand_ptr[:-1].astype(float), seed=0)
    bad = chunk.cand_ptr[:-1].copy()
    bad[3] = chunk.cand_ptr[4]
    with pytest.raises(InvalidInputError, match=r"chosen_flat\[3\]"):
        world.draw_outcomes(chunk, bad, seed=0)
    assert list(world.stream(0)) == []
