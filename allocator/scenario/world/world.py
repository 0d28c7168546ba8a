"""The simulated world: a seeded catalogue of arms and a stream of impressions with truth.

:class:`World` turns a validated :class:`WorldConfig` and a seed into flat arrays (partners,
merchants, per-category retrieval lists, traffic intensity), then delegates every per-
impression loop to :mod:`allocator.scenario.world.kernels`. Hidden merchant values live in private
attributes; the public ``arm_features`` hold only what a real allocator could observe.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, timedelta

import numpy as np
import numpy.typing as npt

from allocator.errors import InvalidInputError
from allocator.registry import MINI_SHOP
from allocator.scenario.world import kernels
from allocator.scenario.world.chunk import F64, I64, Chunk, check_int, seed_key
from allocator.scenario.world.config import WorldConfig

TIER_NAMES = ("tier_1", "tier_2", "tier_3")
AGE_NAMES = ("age_18_24", "age_25_34", "age_35_49", "age_50_plus")
_HOUR = 3600.0


#: how a Mini Shop merchant's arm id begins (``merchant:00001``)
MERCHANT_PREFIX = "merchant:"


def arm_feature_names(config: WorldConfig) -> tuple[str, ...]:
    """The observable arm features' names, in column order (see :class:`World`)."""
    groups = (*(p.id for p in config.partners), MINI_SHOP)
    return (
        *(f"group_{g}" for g in groups),
        *(f"sells_{c}" for c in config.categories),
        "rating",
        "price_level",
    )


def arm_ids(config: WorldConfig) -> tuple[str, ...]:
    """The arm ids, by index: the partners (group = partner id), then the merchants
    ``merchant:00001``... (group ``mini_shop``)."""
    n_m = config.mini_shop.n_merchants
    width = max(5, len(str(n_m)))
    return tuple(p.id for p in config.partners) + tuple(
        f"{MERCHANT_PREFIX}{i + 1:0{width}d}" for i in range(n_m)
    )


def context_names(config: WorldConfig) -> tuple[str, ...]:
    """The impression context's column names, in order: a constant ``bias``, the city tier
    and age band one-hots, the intent category one-hot and the referral flag."""
    return ("bias", *TIER_NAMES, *AGE_NAMES, *(f"intent_{c}" for c in config.categories),
            "referral")  # fmt: skip


class World:
    """Partners and Mini Shop merchants built deterministically from ``seed``.

    Arms are the partners (in config order, group = partner id) then the merchants
    ``merchant:00001``... (group ``mini_shop``). ``arm_features`` (n_arms, d_arm) holds only
    observable columns, named by ``arm_feature_names``: the group one-hot, ``sells_<category>``
    (0 for partners), ``rating`` (noisy star rating minus 4; 0 for partners) and
    ``price_level`` (noisy log order-value level; 0 for partners). ``arm_value_per_gmv``
    (n_arms,) is each arm's revenue per GMV unit: take rate, plus the strategic weight for
    the Mini Shop. ``merchant_categories[m]`` lists merchant m's category indices.
    """

    def __init__(self, config: WorldConfig, seed: int) -> None:
        self.config = config
        self.seed = check_int("seed", seed, 0)
        cfg, ms = config, config.mini_shop
        cats = cfg.categories
        n_c, n_p, n_m = len(cats), len(cfg.partners), ms.n_merchants
        self.categories: tuple[str, ...] = tuple(cats)
        self.start_s = cfg.start.astimezone(UTC).timestamp()
        self.end_s = self.start_s + cfg.days * 86400.0
        self.strategic_weight = float(ms.strategic_weight)
        self.take_rates: dict[str, float] = {p.id: p.take_rate for p in cfg.partners}
        self.take_rates[MINI_SHOP] = ms.take_rate
        self.arm_ids: tuple[str, ...] = arm_ids(cfg)
        self.arm_groups: tuple[str, ...] = tuple(p.id for p in cfg.partners) + (MINI_SHOP,) * n_m
        self.n_partners = n_p
        self.n_arms = n_p + n_m
        # Revenue per unit of GMV, per arm: take rate (+ strategic weight for the Mini Shop).
        self.arm_value_per_gmv = np.array(
            [p.take_rate for p in cfg.partners] + [ms.take_rate + ms.strategic_weight] * n_m
        )
        self.context_names = context_names(cfg)

        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
        shares = np.array([cfg.users.intent[c] for c in cats])
        cat1 = rng.choice(n_c, size=n_m, p=shares)
        has2 = (rng.random(n_m) < ms.second_category) & (n_c > 1)
        cat2 = (cat1 + 1 + rng.integers(0, max(n_c - 1, 1), size=n_m)) % n_c
        quality = rng.normal(0.0, ms.quality_sd, size=n_m)
        value_level = np.exp(rng.normal(-0.5 * ms.value_sd**2, ms.value_sd, size=n_m))
        late = rng.random(n_m) >= ms.initial_share
        span = self.end_s - self.start_s
        arrival = np.where(late, self.start_s + rng.random(n_m) * span, self.start_s)
        z = rng.normal(size=n_m)
        q_std = quality / ms.quality_sd if ms.quality_sd > 0 else np.zeros(n_m)
        rho = ms.popularity_quality_corr
        popularity = np.exp(ms.popularity_sd * (rho * q_std + np.sqrt(1.0 - rho**2) * z))
        rating = np.clip(4.0 + 0.5 * (quality + rng.normal(0.0, ms.rating_noise, n_m)), 1.0, 5.0)
        price = np.log(value_level) + rng.normal(0.0, ms.price_noise, n_m)
        self._quality, self._value_level = quality, value_level
        self.merchant_categories: tuple[tuple[int, ...], ...] = tuple(
            (int(a), int(b)) if two else (int(a),)
            for a, b, two in zip(cat1, cat2, has2, strict=True)
        )
        self.arrival_s = np.concatenate([np.full(n_p, self.start_s), arrival])

        # Per-category retrieval lists, each sorted by arrival (ties by merchant index).
        pair_m = np.concatenate([np.arange(n_m), np.flatnonzero(has2)])
        pair_c = np.concatenate([cat1, cat2[has2]])
        order = np.lexsort((pair_m, arrival[pair_m], pair_c))
        self._cat_merchant = pair_m[order].astype(np.int64)
        self._cat_arrival = arrival[self._cat_merchant]
        self._cat_inv_odds = np.exp(-quality[self._cat_merchant])
        self._cat_value_level = value_level[self._cat_merchant]
        self._cat_ptr = np.zeros(n_c + 1, dtype=np.int64)
        np.cumsum(np.bincount(pair_c, minlength=n_c), out=self._cat_ptr[1:])
        cum = np.cumsum(popularity[self._cat_merchant])
        seg_base = np.concatenate([[0.0], cum])[self._cat_ptr[:-1]]
        self._cat_cum_pop = cum - np.repeat(seg_base, np.diff(self._cat_ptr))

        # Observable arm features.
        self.arm_feature_names = arm_feature_names(cfg)
        feats = np.zeros((self.n_arms, len(self.arm_feature_names)))
        feats[np.arange(n_p), np.arange(n_p)] = 1.0
        feats[n_p:, n_p] = 1.0
        feats[n_p + np.arange(n_m), n_p + 1 + cat1] = 1.0
        feats[n_p + np.flatnonzero(has2), n_p + 1 + cat2[has2]] = 1.0
        feats[n_p:, -2] = rating - 4.0
        feats[n_p:, -1] = price
        self.arm_features: F64 = feats
        self._build_tables()
        self._build_traffic()

    def _build_tables(self) -> None:
        cfg, ms = self.config, self.config.mini_shop
        cats = cfg.categories
        ps = cfg.partners

        def inv_odds(p: float) -> float:
            return (1.0 - p) / p

        self._p_elig = np.array([p.eligibility for p in ps])
        self._p_click = np.array([[inv_odds(p.rates[c].click) for c in cats] for p in ps])
        self._p_order = np.array([[inv_odds(p.rates[c].order) for c in cats] for p in ps])
        self._p_value = np.array([[p.rates[c].order_value for c in cats] for p in ps])
        self._p_tier = np.array([p.effects.tier_lift for p in ps])
        self._p_age = np.array([p.effects.age_lift for p in ps])
        self._p_ref = np.array([p.effects.referral_lift for p in ps])
        self._p_tier_value = np.array([p.effects.tier_value for p in ps])
        drift = [p.drift for p in ps]
        self._p_drift = np.array(
            [(d.slope_per_30d / 30.0, d.amplitude, d.period_days, d.phase_days) for d in drift]
        )
        self._m_click = np.array([inv_odds(ms.rates[c].click) for c in cats])
        self._m_order = np.array([inv_odds(ms.rates[c].order) for c in cats])
        self._m_value = np.array([ms.rates[c].order_value for c in cats])
        e = ms.effects
        self._m_tier, self._m_age = np.array(e.tier_lift), np.array(e.age_lift)
        self._m_tier_value = np.array(e.tier_value)
        imp = ms.improvement
        self._m_improve = np.array([imp.start_lift, imp.end_lift, imp.half_time_days])
        self._newcomer_rate = 1.0 / (ms.newcomer_half_time_days * 86400.0)

    def _build_traffic(self) -> None:
        """Hourly intensity (diurnal x daily boost) and per-local-day intent probabilities."""
        tr, cats = self.config.traffic, self.config.categories
        n_bins = self.config.days * 24
        local_h = np.arange(n_bins) + tr.utc_offset_hours
        self._bin_start = self.start_s + _HOUR * np.arange(n_bins)
        self._bin_row = (local_h // 24 - local_h[0] // 24).astype(np.int64)
        first_day = self.config.start.astimezone(UTC).date() + timedelta(days=int(local_h[0] // 24))
        n_rows = int(self._bin_row[-1]) + 1
        boost = np.ones(n_rows)
        intent = np.tile(np.array([self.config.users.intent[c] for c in cats]), (n_rows, 1))
        for peak in tr.peaks:
            a = (peak.start - first_day).days
            span = (peak.end - peak.start).days
            for d in range(max(a, 0), min(a + span + 1, n_rows)):
                f = (d - a) / span if span > 0 else 1.0
                boost[d] += peak.boost_first + (peak.boost_last - peak.boost_first) * f
                for c, tilt in peak.intent_tilt.items():
                    intent[d, cats.index(c)] *= tilt
        intent /= intent.sum(axis=1, keepdims=True)
        self._cum_intent = np.ascontiguousarray(np.cumsum(intent, axis=1))
        diurnal = np.array(tr.diurnal)
        self._bin_weight = diurnal[local_h % 24] * boost[self._bin_row]
        self._bin_weight /= self._bin_weight.sum()
        self.first_local_day = first_day
        users = self.config.users
        self._cum_tier = np.cumsum([users.city_tier], axis=1)
        self._cum_age = np.cumsum([users.age_band], axis=1)

    def stream(
        self, n_impressions: int, chunk_size: int = 50_000, seed: int = 0
    ) -> Iterator[Chunk]:
        """Yield ``n_impressions`` impressions in time order, ``chunk_size`` at a time.

        The content depends on (world seed, ``seed``, ``n_impressions``) only, not on
        ``chunk_size``: hourly counts are one multinomial draw of ``n_impressions`` and each
        impression has its own counter-based uniform stream.
        """
        n = check_int("n_impressions", n_impressions, 0)
        size = check_int("chunk_size", chunk_size, 1)
        s = check_int("seed", seed, 0)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, s, 1]))
        counts = rng.multinomial(n, self._bin_weight)
        bin_ptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=bin_ptr[1:])
        key_t = seed_key(self.seed, s, 2)
        key_i = seed_key(self.seed, s, 3)
        for lo in range(0, n, size):
            yield self._chunk(lo, min(lo + size, n), bin_ptr, key_t, key_i, s)

    def _chunk(
        self, lo: int, hi: int, bin_ptr: I64, key_t: np.uint64, key_i: np.uint64, s: int
    ) -> Chunk:
        n, k = hi - lo, self.config.mini_shop.k
        ts, bins = np.empty(n), np.empty(n, dtype=np.int64)
        kernels.fill_timestamps(lo, hi, bin_ptr, self._bin_start, _HOUR, key_t, ts, bins)
        ctx = np.zeros((n, len(self.context_names)))
        cat, tier, age, ref = (np.empty(n, dtype=np.int64) for _ in range(4))
        ptr = np.empty(n + 1, dtype=np.int64)
        cap = n * (self.n_partners + k) + 1
        idx = np.empty(cap, dtype=np.int64)
        pc, po, ov = np.empty(cap), np.empty(cap), np.empty(cap)
        kernels.generate_impressions(
            lo, key_i, ts, bins, self._bin_row, self.start_s, self._cum_intent,
            self._cum_tier, self._cum_age, self.config.users.referral,
            self._p_elig, self._p_click, self._p_order, self._p_value, self._p_tier,
            self._p_age, self._p_ref, self._p_tier_value, self._p_drift,
            self._m_click, self._m_order, self._m_value, self._m_tier, self._m_age,
            self.config.mini_shop.effects.referral_lift, self._m_tier_value,
            self._m_improve, self.config.mini_shop.newcomer_lift, self._newcomer_rate,
            self._cat_ptr, self._cat_merchant,
            self._cat_arrival, self._cat_inv_odds, self._cat_value_level, self._cat_cum_pop, k,
            self.config.mini_shop.retrieval == "popularity",
            ctx, cat, tier, age, ref, ptr, idx, pc, po, ov,
        )  # fmt: skip
        nnz = int(ptr[n])
        return Chunk(
            timestamps=ts, contexts=ctx, category=cat, city_tier=tier, age_band=age,
            referral=ref, cand_ptr=ptr, cand_idx=idx[:nnz], p_click=pc[:nnz],
            p_order=po[:nnz], order_value=ov[:nnz], offset=lo, stream_seed=s,
        )  # fmt: skip

    def draw_outcomes(
        self, chunk: Chunk, chosen_flat: npt.ArrayLike, seed: int
    ) -> tuple[F64, F64, F64]:
        """(click, order, gmv), each (n,), of the candidate at flat position ``chosen_flat[i]``
        of impression ``i``; deterministic given ``seed`` (and the chunk's stream)."""
        s = check_int("seed", seed, 0)
        chosen = np.asarray(chosen_flat)
        n = chunk.n
        if chosen.shape != (n,) or not np.issubdtype(chosen.dtype, np.integer):
            raise InvalidInputError(
                f"chosen_flat has shape {chosen.shape} and dtype {chosen.dtype}: "
                f"expected ({n},) integers"
            )
        chosen = np.ascontiguousarray(chosen, dtype=np.int64)
        bad = (chosen < chunk.cand_ptr[:-1]) | (chosen >= chunk.cand_ptr[1:])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"chosen_flat[{i}] = {chosen[i]} is outside impression {i}'s candidates "
                f"[{chunk.cand_ptr[i]}, {chunk.cand_ptr[i + 1]})"
            )
        key = seed_key(self.seed, chunk.stream_seed, s, 4)
        click, order, gmv = np.empty(n), np.empty(n), np.empty(n)
        kernels.draw_outcomes(
            key, chunk.offset, chosen, chunk.p_click, chunk.p_order, chunk.order_value,
            self.config.gmv_sigma, click, order, gmv,
        )  # fmt: skip
        return click, order, gmv
