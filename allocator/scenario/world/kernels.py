"""Numba kernels of the simulated world: timestamps, impressions with their truth, outcomes.

Randomness is counter-based (``allocator.kernels.random``): impression ``j`` of a stream
owns the uniform stream keyed by ``mix64(key ^ mix64(j))``, so a stream's content depends on
``(key, j)`` only — not on how it is cut into chunks — and no global RNG is touched.
"""

import numpy as np
from numba import njit

from allocator.kernels.random import mix64, next_uniform

_INV_2_53 = 1.0 / 9007199254740992.0
_DAY = 86400.0


@njit(cache=True, nogil=True)
def _hash_uniform(key, j):
    z = mix64(key ^ mix64(np.uint64(j)))
    return np.float64(z >> np.uint64(11)) * _INV_2_53


@njit(cache=True, nogil=True)
def _seed_state(state, key, j):
    state[0] = mix64(key ^ mix64(np.uint64(j)))
    state[1] = np.uint64(0)


@njit(cache=True, nogil=True)
def _draw_cat(cum, row, u):
    """Index of the first cumulative weight of ``cum[row]`` above ``u`` (the last if rounding
    leaves ``u`` above them all). Rows are indexed, not sliced: a view costs refcounting."""
    n = cum.shape[1]
    for i in range(n):
        if u < cum[row, i]:
            return i
    return n - 1


@njit(cache=True, nogil=True)
def _upper_bound(a, lo, hi, x):
    """Number of entries of the sorted ``a[lo:hi]`` that are <= ``x``."""
    left, right = lo, hi
    while left < right:
        mid = (left + right) >> 1
        if a[mid] <= x:
            left = mid + 1
        else:
            right = mid
    return left - lo


@njit(cache=True, nogil=True)
def fill_timestamps(lo, hi, bin_ptr, bin_start, bin_len, key, out_t, out_bin):
    """Sorted timestamps of the stream's impressions ``lo..hi-1``.

    Parameters
    ----------
    lo, hi : int
        Global impression range of the chunk.
    bin_ptr : int64 (n_bins+1,)
        Cumulative impression counts per time bin (global indices of each bin).
    bin_start : float64 (n_bins,)
        Epoch seconds at which each bin starts; bins have length ``bin_len`` seconds.
    key : uint64
        Stream key; impression ``j`` sits at ``bin_start + bin_len·u_j`` and each bin is
        sorted, so the slice ``lo..hi`` is the same whatever the chunking.
    out_t : float64 (hi-lo,), out_bin : int64 (hi-lo,)
        Timestamps and bin indices.
    """
    b = np.searchsorted(bin_ptr, lo, side="right") - 1
    n_bins = bin_start.shape[0]
    while b < n_bins and bin_ptr[b] < hi:
        a, z = bin_ptr[b], bin_ptr[b + 1]
        if z > a:
            u = np.empty(z - a)
            for j in range(a, z):
                u[j - a] = _hash_uniform(key, j)
            u.sort()
            for j in range(max(a, lo), min(z, hi)):
                out_t[j - lo] = bin_start[b] + bin_len * u[j - a]
                out_bin[j - lo] = b
        b += 1


@njit(cache=True, nogil=True)
def generate_impressions(
    lo,
    key,
    timestamps,
    bins,
    bin_row,
    start_s,
    cum_intent,
    cum_tier,
    cum_age,
    p_referral,
    p_elig,
    p_click_odds,
    p_order_odds,
    p_value,
    p_tier_lift,
    p_age_lift,
    p_ref_lift,
    p_tier_value,
    p_drift,
    m_click_odds,
    m_order_odds,
    m_value,
    m_tier_lift,
    m_age_lift,
    m_ref_lift,
    m_tier_value,
    m_improve,
    newcomer_lift,
    newcomer_rate,
    cat_ptr,
    cat_merchant,
    cat_arrival,
    cat_inv_odds,
    cat_value_level,
    cat_cum_pop,
    k,
    popularity,
    contexts,
    category,
    tier,
    age,
    referral,
    cand_ptr,
    cand_idx,
    p_click,
    p_order,
    order_value,
):
    """Draw n impressions (context, candidates) and the exact truth of every candidate.

    Shapes: P partners, M merchants, C categories, R intent rows (local days).
    ``timestamps``/``bins`` (n,); ``bin_row`` (n_bins,) maps a bin to its intent row;
    ``cum_intent`` (R, C), ``cum_tier`` (1, 3), ``cum_age`` (1, 4) cumulative probabilities.
    Rates enter as inverse odds ``(1-p)/p`` so that ``sigmoid(logit(p) + s)`` is
    ``1/(1 + inv_odds·exp(-s))``. Partner tables: ``p_elig`` (P,), ``p_click_odds``/
    ``p_order_odds``/``p_value`` (P, C), ``p_tier_lift``/``p_tier_value`` (P, 3),
    ``p_age_lift`` (P, 4), ``p_ref_lift`` (P,), ``p_drift`` (P, 4) = slope per day,
    amplitude, period days, phase days. Mini Shop tables: ``m_click_odds``/``m_order_odds``/
    ``m_value`` (C,), ``m_tier_lift``/``m_tier_value`` (3,), ``m_age_lift`` (4,),
    ``m_improve`` (3,) = start lift, end lift, half-time days. A merchant's newcomer shift
    is ``newcomer_lift / (1 + seconds since arrival · newcomer_rate)``.
    ``cat_ptr`` (C+1,) is CSR over the per-category merchant lists, each sorted by arrival:
    ``cat_merchant`` (merchant index), ``cat_arrival``, ``cat_inv_odds`` (exp(-quality)),
    ``cat_value_level`` and ``cat_cum_pop`` (cumulative popularity within the category).
    Outputs: ``contexts`` (n, d) zero-filled, ``category``/``tier``/``age``/``referral`` (n,),
    ``cand_ptr`` (n+1,), ``cand_idx``/``p_click``/``p_order``/``order_value`` (n·(P+k),)
    of which the first ``cand_ptr[n]`` are used. Merchant arm index = P + merchant index.
    """
    n = timestamps.shape[0]
    n_p = p_elig.shape[0]
    n_c = cum_intent.shape[1]
    c_tier, c_age, c_cat = 1, 4, 8
    c_ref = c_cat + n_c
    state = np.empty(2, dtype=np.uint64)
    picked = np.empty(k, dtype=np.int64)
    eligible = np.empty(n_p, dtype=np.bool_)
    mark = np.full(cat_merchant.shape[0], -1, dtype=np.int64)
    pos = 0
    cand_ptr[0] = 0
    for i in range(n):
        _seed_state(state, key, lo + i)
        t = timestamps[i]
        days = (t - start_s) / _DAY
        ti = _draw_cat(cum_tier, 0, next_uniform(state))
        ag = _draw_cat(cum_age, 0, next_uniform(state))
        ca = _draw_cat(cum_intent, bin_row[bins[i]], next_uniform(state))
        rf = 1 if next_uniform(state) < p_referral else 0
        tier[i], age[i], category[i], referral[i] = ti, ag, ca, rf
        contexts[i, 0] = 1.0
        contexts[i, c_tier + ti] = 1.0
        contexts[i, c_age + ag] = 1.0
        contexts[i, c_cat + ca] = 1.0
        contexts[i, c_ref] = rf
        a0 = cat_ptr[ca]
        n_arr = _upper_bound(cat_arrival, a0, cat_ptr[ca + 1], t)
        any_partner = False
        for p in range(n_p):
            eligible[p] = next_uniform(state) < p_elig[p]
            any_partner |= eligible[p]
        if not any_partner and n_arr == 0:
            eligible[0] = True  # nothing else to show: the first partner is the fallback
        for p in range(n_p):
            if not eligible[p]:
                continue
            shift = p_tier_lift[p, ti] + p_age_lift[p, ag] + rf * p_ref_lift[p]
            shift += p_drift[p, 0] * days
            if p_drift[p, 1] != 0.0:
                phase = 2.0 * np.pi * (days - p_drift[p, 3]) / p_drift[p, 2]
                shift += p_drift[p, 1] * np.sin(phase)
            e = np.exp(-shift)
            cand_idx[pos] = p
            p_click[pos] = 1.0 / (1.0 + p_click_odds[p, ca] * e)
            p_order[pos] = 1.0 / (1.0 + p_order_odds[p, ca] * e)
            order_value[pos] = p_value[p, ca] * p_tier_value[p, ti]
            pos += 1
        # Merchants of the intent category that have arrived: a prefix of its list.
        n_pick = 0
        if n_arr <= k:
            for j in range(n_arr):
                picked[j] = a0 + j
            n_pick = n_arr
        elif popularity:  # weighted draws without replacement, by rejection of repeats
            total = cat_cum_pop[a0 + n_arr - 1]
            tries = 0
            while n_pick < k and tries < 64 * k:
                tries += 1
                j = _upper_bound(cat_cum_pop, a0, a0 + n_arr, next_uniform(state) * total)
                j = a0 + min(j, n_arr - 1)
                if mark[j] != i:
                    mark[j] = i
                    picked[n_pick] = j
                    n_pick += 1
        else:  # Floyd's sampling of k distinct positions out of n_arr
            for jj in range(a0 + n_arr - k, a0 + n_arr):
                j = a0 + int(next_uniform(state) * (jj - a0 + 1))
                if mark[j] == i:
                    j = jj
                mark[j] = i
                picked[n_pick] = j
                n_pick += 1
        if n_pick > 0:
            g = 1.0 - 0.5 ** (days / m_improve[2])
            base = m_improve[0] + (m_improve[1] - m_improve[0]) * g
            base += m_tier_lift[ti] + m_age_lift[ag] + rf * m_ref_lift
            e_base = np.exp(-base)
            click_odds, order_odds = m_click_odds[ca], m_order_odds[ca]
            value = m_value[ca] * m_tier_value[ti]
            for q in range(n_pick):
                j = picked[q]
                fresh = newcomer_lift / (1.0 + (t - cat_arrival[j]) * newcomer_rate)
                e = e_base * cat_inv_odds[j] * np.exp(-fresh)
                cand_idx[pos] = n_p + cat_merchant[j]
                p_click[pos] = 1.0 / (1.0 + click_odds * e)
                p_order[pos] = 1.0 / (1.0 + order_odds * e)
                order_value[pos] = value * cat_value_level[j]
                pos += 1
        cand_ptr[i + 1] = pos


@njit(cache=True, nogil=True)
def draw_outcomes(key, lo, chosen, p_click, p_order, order_value, sigma, click, order, gmv):
    """Click, order and GMV of the chosen candidate of each impression.

    ``chosen`` (n,) flat positions into the truth arrays ``p_click``/``p_order``/
    ``order_value`` (nnz,); impression ``i`` uses the uniform stream ``(key, lo+i)``, so the
    same impression with the same key always sees the same uniforms (common random numbers
    across policies). GMV given an order is lognormal with mean ``order_value`` and log-sd
    ``sigma``. Outputs ``click``, ``order``, ``gmv`` (n,).
    """
    state = np.empty(2, dtype=np.uint64)
    half_var = 0.5 * sigma * sigma
    for i in range(chosen.shape[0]):
        _seed_state(state, key, lo + i)
        f = chosen[i]
        u_click = next_uniform(state)
        u_order = next_uniform(state)
        u1 = next_uniform(state)
        u2 = next_uniform(state)
        c = 1.0 if u_click < p_click[f] else 0.0
        o = 1.0 if c > 0.0 and u_order < p_order[f] else 0.0
        g = 0.0
        if o > 0.0:
            z = np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(2.0 * np.pi * u2)
            g = order_value[f] * np.exp(sigma * z - half_var)
        click[i], order[i], gmv[i] = c, o, g
