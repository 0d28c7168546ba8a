"""Slow, obviously-correct references for every kernel (plain Python / numpy, no numba)."""

from __future__ import annotations

import math

import numba
import numpy as np

MASK = (1 << 64) - 1


def mix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def uniforms(key: int, start: int, n: int) -> list[float]:
    """The decision stream's uniforms number ``start .. start+n-1``."""
    return [(mix64(key ^ mix64(c)) >> 11) / 2.0**53 for c in range(start, start + n)]


def discounted_weights(steps: list[int], now: int, gamma: float) -> np.ndarray:
    """Weight gamma^(now - s) of an observation made at clock step s."""
    return np.array([gamma ** (now - s) for s in steps], dtype=np.float64)


def beta_posterior(rewards, steps, now, gamma, a0, b0):
    w = discounted_weights(steps, now, gamma)
    r = np.asarray(rewards, dtype=np.float64)
    return a0 + float(np.sum(w * r)), b0 + float(np.sum(w * (1 - r)))


def normal_gamma_posterior(rewards, steps, now, gamma, m0, k0, al0, be0):
    """Weighted Normal–Gamma update written the textbook way (sums, not the kernel's form)."""
    w = discounted_weights(steps, now, gamma)
    x = np.asarray(rewards, dtype=np.float64)
    n = w.sum()
    if n == 0:
        return m0, k0, al0, be0
    xbar = np.sum(w * x) / n
    kn = k0 + n
    mn = (k0 * m0 + n * xbar) / kn
    an = al0 + n / 2
    bn = be0 + 0.5 * np.sum(w * (x - xbar) ** 2) + k0 * n * (xbar - m0) ** 2 / (2 * kn)
    return mn, kn, an, bn


def ridge_posterior(xs, rewards, steps, now, gamma, lam, mu0):
    """Weighted ridge: A = λI + Σ w x xᵀ, mean = A⁻¹(λ μ0 + Σ w r x) via numpy.linalg.solve."""
    xs = np.asarray(xs, dtype=np.float64).reshape(len(rewards), -1)
    d = xs.shape[1]
    w = discounted_weights(steps, now, gamma)
    a = lam * np.eye(d) + (xs * w[:, None]).T @ xs
    b = lam * np.asarray(mu0, dtype=np.float64) + (xs * (w * np.asarray(rewards))[:, None]).sum(0)
    return np.linalg.solve(a, b), a


def win_shares(samples: np.ndarray) -> np.ndarray:
    """samples (C, M): share of columns whose first maximiser is row j."""
    c, m = samples.shape
    p = np.zeros(c)
    for col in range(m):
        best = 0
        for j in range(1, c):
            if samples[j, col] > samples[best, col]:
                best = j
        p[best] += 1.0 / m
    return p


def mix_and_draw(p: np.ndarray, eps: float, u: float) -> tuple[np.ndarray, int]:
    q = (1 - eps) * np.asarray(p, dtype=np.float64) + eps / len(p) if eps > 0 else np.array(p)
    acc = 0.0
    last = 0
    for j, pj in enumerate(q):
        if pj > 0:
            last = j
            acc += pj
            if u < acc:
                return q, j
    return q, last


def linear_scores(x, cand, mu, a_inv, v):
    mean = np.array([x @ mu[a] for a in cand])
    sd = np.array([v * np.sqrt(max(x @ a_inv[a] @ x, 0.0)) for a in cand])
    return mean, sd


def shared_scores(x, cand, features, mu, a_inv, v):
    """Build φ = vec(f ⊗ x) explicitly and evaluate φ·μ and v·sqrt(φᵀA⁻¹φ)."""
    phis = np.array([np.outer(features[a], x).ravel() for a in cand])
    mean = phis @ mu
    sd = v * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", phis, a_inv, phis), 0.0))
    return mean, sd


def joint_win_shares(x, cand, features, mu, a_inv, v, z):
    """Draw the full weight vector's folded form per bank row, explicitly: with X = I⊗x,
    w̃ = Xᵀμ + v·chol(XᵀA⁻¹X)·z[:d_arm, m]; every candidate scores f·w̃."""
    da = features.shape[1]
    fold = np.kron(np.eye(da), np.asarray(x)[:, None])  # (D, d_arm): φ = fold @ f
    w = fold.T @ mu
    chol = np.linalg.cholesky(fold.T @ a_inv @ fold)
    draws = w[:, None] + v * chol @ z[:da]  # (d_arm, M)
    return win_shares(features[cand] @ draws)


def ope(reward, pscore, action_prob, q_logged, q_target, clip=None):
    """Textbook IPS, SNIPS, DM, DR, SNDR with explicit loops."""
    n = len(reward)
    w = [
        min(a / p, clip) if clip is not None else a / p
        for a, p in zip(action_prob, pscore, strict=True)
    ]
    ips = sum(w[i] * reward[i] for i in range(n)) / n
    snips = sum(w[i] * reward[i] for i in range(n)) / sum(w)
    dm = sum(q_target) / n
    dr = sum(q_target[i] + w[i] * (reward[i] - q_logged[i]) for i in range(n)) / n
    sndr = dm + sum(w[i] * (reward[i] - q_logged[i]) for i in range(n)) / sum(w)
    return {"ips": ips, "snips": snips, "dm": dm, "dr": dr, "sndr": sndr}


def ridge_reward_model(xs, arms, rewards, n_arms, l2):
    """Pooled ridge on [1, x] (intercept unpenalised), then per-arm ridge toward it.

    Arm a: argmin Σ (r − zθ)² + l2·|θ − β|², solved with numpy.linalg.solve. ``xs`` None
    means intercept only. Returns (coef (K, p), pooled β (p,)).
    """
    r = np.asarray(rewards, dtype=np.float64)
    n = r.shape[0]
    z = np.ones((n, 1)) if xs is None else np.column_stack([np.ones(n), xs])
    p = z.shape[1]
    penalty = np.eye(p)
    penalty[0, 0] = 0.0
    beta = np.linalg.solve(z.T @ z + l2 * penalty, z.T @ r)
    coef = np.empty((n_arms, p))
    for a in range(n_arms):
        rows = np.asarray(arms) == a
        za, ra = z[rows], r[rows]
        coef[a] = np.linalg.solve(za.T @ za + l2 * np.eye(p), za.T @ ra + l2 * beta)
    return coef, beta


def switch_dr(reward, pscore, action_prob, q_logged, q_target, tau):
    """Switch-DR: DM everywhere plus the DR correction only where the weight is <= tau."""
    total = 0.0
    for i in range(len(reward)):
        w = action_prob[i] / pscore[i]
        total += q_target[i] + (w * (reward[i] - q_logged[i]) if w <= tau else 0.0)
    return total / len(reward)


def candidate_feedback(cand_ptr, cand_idx, actions, target, q):
    """Per round: target probability and q̂ of the logged action, Σ_candidates target·q̂."""
    action_prob, q_logged, q_target = [], [], []
    for i, a in enumerate(actions):
        lo, hi = cand_ptr[i], cand_ptr[i + 1]
        j = lo + list(cand_idx[lo:hi]).index(a)
        action_prob.append(target[j])
        q_logged.append(q[j])
        q_target.append(sum(target[k] * q[k] for k in range(lo, hi)))
    return np.array(action_prob), np.array(q_logged), np.array(q_target)


def dr_terms(ptr, target, q, pos, rewards01, weights, cand_prob, clip):
    """Per-round DR terms and their bounds, round by round: a candidate weighs target over
    logging probability (or the largest logged weight when the log has no candidate
    probabilities), capped at ``clip``."""
    terms, lows, highs = [], [], []
    for i in range(len(ptr) - 1):
        lo, hi = ptr[i], ptr[i + 1]
        q_target = sum(target[j] * q[j] for j in range(lo, hi))
        terms.append(q_target + weights[i] * (rewards01[i] - q[pos[i]]))
        cand_w = []
        for j in range(lo, hi):
            if target[j] <= 0.0:
                w = 0.0
            elif cand_prob is None:
                w = max(weights)
            else:
                w = target[j] / (cand_prob[j] if cand_prob[j] > 0.0 else 1.0)
            cand_w.append(w if clip is None else min(w, clip))
        qs = q[lo:hi]
        lows.append(q_target - max(w * qj for w, qj in zip(cand_w, qs, strict=True)))
        highs.append(q_target + max(w * (1.0 - qj) for w, qj in zip(cand_w, qs, strict=True)))
    return np.array(terms), min(lows), max(highs)


def schedule(t: float, t0: float, t1: float, v0: float, v1: float, shape: str, steps: int):
    """Contract schedule: constant, linear interpolation, or ``steps`` equal stairs."""
    frac = (t - t0) / (t1 - t0)
    if shape == "constant":
        return v0
    if shape == "linear":
        return v0 + (v1 - v0) * frac
    stair = min(int(frac * steps), steps - 1)
    return v0 + (v1 - v0) * stair / max(steps - 1, 1)


def logistic_reward_model(xs, arms, rewards, n_arms, l2, intercept_l2):
    """Pooled then per-arm penalised logistic fits by scipy's L-BFGS (the kernel uses Newton)."""
    from scipy.optimize import minimize

    z = np.column_stack([np.ones(len(arms)), xs])

    def nll(theta, rows, centre, pen):
        eta = z[rows] @ theta
        loss = np.sum(np.logaddexp(0.0, eta) - rewards[rows] * eta)
        return loss + 0.5 * np.sum(pen * (theta - centre) ** 2)

    p = z.shape[1]
    pen = np.full(p, l2)
    pen[0] = intercept_l2
    every = np.arange(len(arms))
    pooled = minimize(nll, np.zeros(p), (every, np.zeros(p), pen), tol=1e-12).x
    coef = np.array([
        minimize(nll, pooled, (np.flatnonzero(arms == a), pooled, np.full(p, l2)), tol=1e-12).x
        for a in range(n_arms)
    ])  # fmt: skip
    return coef, pooled


def betting_lower(x, alpha, grid, prior_mean, cap):
    """Smallest grid m whose predictable plug-in wealth never reaches 1/alpha (x >= 0)."""
    bets, s1, s2 = [], prior_mean, 0.25
    for i, xi in enumerate(x):
        t = i + 1.0
        var = max(s2 / t, 1e-12)
        bets.append(np.sqrt(2.0 * np.log(1.0 / alpha) / (var * t * np.log(1.0 + t))))
        s2 += (xi - s1 / t) ** 2
        s1 += xi
    for m in grid:
        wealth, crossed = 1.0, False
        for xi, lam in zip(x, bets, strict=True):
            wealth *= 1.0 + min(lam, cap / m if m > 0 else np.inf) * (xi - m)
            crossed = crossed or wealth >= 1.0 / alpha
        if not crossed:
            return m
    return grid[-1]


# ---------------------------------------------------------------- constraint-set feasibility
# Brute force: every combination of the scope values (plus a value none names) at every
# time of the grid. Exponential in the attributes; the library's check must agree with it.


def feasibility_grid(cs) -> list[float]:
    """Starts, stairs (and 1 ms past them), 1 ms before ends; left limits with a slope."""
    times = set()
    for c in cs:
        s = c.schedule
        t0, t1 = s.start.timestamp(), s.end.timestamp()
        times.update((t0, t1 - 1e-3))
        if s.shape == "step":
            for i in range(1, s.steps):
                b = float(t0 + (t1 - t0) * np.float64(i) / s.steps)
                times.update((b, b + 1e-3))
    if any(c.schedule.shape == "linear" for c in cs):
        times |= {t - 1e-3 for t in times}
    return sorted(times)


def _live_value(c, t: float) -> float | None:
    s = c.schedule
    t0, t1 = s.start.timestamp(), s.end.timestamp()
    if not t0 <= t < t1:
        return None
    return schedule(t, t0, t1, s.start_value, s.final_value, s.shape, s.steps)


def request_atoms(cs) -> list[dict[str, str]]:
    import itertools

    attrs = sorted({a for c in cs for a in c.scope})
    values = [[*sorted({v for c in cs for v in c.scope.get(a, [])}), "\x00other"] for a in attrs]
    return [dict(zip(attrs, combo, strict=True)) for combo in itertools.product(*values)]


def _covers(c, request) -> bool:
    return all(request.get(a) in vs for a, vs in c.scope.items())


def floor_sum_violation(cs) -> bool:
    """Some request at some time has floors summing past 1 (per group: the larger of the
    group floor and the summed cold floors; arm floors are their own group)."""
    floors = [c for c in cs if c.kind == "floor"]
    for t in feasibility_grid(floors):
        for request in request_atoms(floors):
            wide: dict[str, float] = {}
            narrow: dict[str, float] = {}
            for c in floors:
                v = _live_value(c, t) if _covers(c, request) else None
                if not v:
                    continue
                tg = c.target
                key = getattr(tg, "group", None) or getattr(tg, "cold_in_group", None)
                if getattr(tg, "group", None):
                    wide[key] = max(wide.get(key, 0.0), v)
                else:
                    key = key or f"arm:{tg.arm}"
                    narrow[key] = narrow.get(key, 0.0) + v
            keys = set(wide) | set(narrow)
            if sum(max(wide.get(k, 0.0), narrow.get(k, 0.0)) for k in keys) > 1 + 1e-12:
                return True
    return False


def cap_below_floor(cs) -> bool:
    """Some request under a cap and a floor on the same target, at some time the cap is
    live, has the cap below the floor."""
    for cap in cs:
        for floor in cs:
            if cap.kind != "cap" or floor.kind != "floor" or cap.target != floor.target:
                continue
            for t in feasibility_grid([cap, floor]):
                for request in request_atoms([cap, floor]):
                    if not (_covers(cap, request) and _covers(floor, request)):
                        continue
                    c, f = _live_value(cap, t), _live_value(floor, t)
                    if c is not None and c < (f or 0.0):
                        return True
    return False


def caps_leave_no_room(cs, groups) -> bool:
    """Some request at some time has every group of ``groups`` capped, the tightest caps
    summing below 1."""
    caps = [c for c in cs if c.kind == "cap" and getattr(c.target, "group", None) in groups]
    if len(set(groups)) < 2:
        return False
    for t in feasibility_grid(caps):
        for request in request_atoms(caps):
            tight: dict[str, float] = {}
            for c in caps:
                v = _live_value(c, t) if _covers(c, request) else None
                if v is not None:
                    tight[c.target.group] = min(tight.get(c.target.group, 1.0), v)
            if len(tight) == len(set(groups)) and sum(tight.values()) < 1 - 1e-12:
                return True
    return False


def accept_walk(d, p, u, adaptive, q, c_max, c0, bins_per_octave, log2_low):
    """Nonstationary replay's acceptance: exact order statistics of the ratios p/d,
    rounded down to the kernel's histogram grid; returns (c per event, accepted)."""
    ratios: list[float] = []
    c, cs, acc = c0, [], []
    for k in range(len(d)):
        ratios.append(p[k] / d[k] if d[k] > 0 else np.inf)
        cs.append(c)
        acc.append(u[k] * p[k] < c * d[k])
        if acc[-1] and adaptive:
            srt = sorted(ratios)
            r = srt[max(1, int(np.ceil(q * len(srt)))) - 1]
            b = np.floor((np.log2(r) - log2_low) * bins_per_octave) if np.isfinite(r) else 1e9
            c = min(c_max, 2.0 ** (log2_low + max(b, 0) / bins_per_octave))
    return np.array(cs), np.array(acc)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def laplace_step(m, a, x, y):
    """One extended-Kalman step of a logistic posterior N(m, A⁻¹) in its textbook form:
    A' = A + p(1−p) x xᵀ, m' = m + A'⁻¹ x (y − p), p = σ(xᵀm)."""
    p = sigmoid(x @ m)
    a_new = a + p * (1 - p) * np.outer(x, x)
    return m + np.linalg.solve(a_new, x * (y - p)), a_new


def laplace_online(xs, ys, gammas, lam, m0):
    """Online Laplace with dense solves: before observation i the statistics (G, h) decay
    by ``gammas[i]``, the mean is re-solved from them, then the step's factor is added."""
    d = len(m0)
    g, h = np.zeros((d, d)), np.zeros(d)
    m = np.asarray(m0, dtype=np.float64).copy()
    for x, y, decay in zip(xs, ys, gammas, strict=True):
        g, h = g * decay, h * decay
        m = np.linalg.solve(lam * np.eye(d) + g, lam * m0 + h)
        p = sigmoid(x @ m)
        w = p * (1 - p)
        g = g + w * np.outer(x, x)
        h = h + x * (w * (x @ m) + y - p)
    return np.linalg.solve(lam * np.eye(d) + g, lam * m0 + h), lam * np.eye(d) + g


def hybrid_joint(feats, arms, xs, weights, info, lam, beta, kappa):
    """Precision and information of (θ, b_1..b_K) of a hybrid model (shared weights over
    ``kron(f_a, x)`` plus one offset per arm, prior ``N(beta, 1/kappa)``) built observation
    by observation, dense."""
    k, d = feats.shape[0], feats.shape[1] * xs.shape[1]
    prec = np.zeros((d + k, d + k))
    vec = np.zeros(d + k)
    prec[:d, :d] = lam * np.eye(d)
    prec[d:, d:] = np.diag(kappa)
    vec[d:] = kappa * beta
    for a, x, w, i in zip(arms, xs, weights, info, strict=True):
        row = np.zeros(d + k)
        row[:d] = np.kron(feats[a], x)
        row[d + a] = 1.0
        prec += w * np.outer(row, row)
        vec += i * row
    return prec, vec


def hybrid_laplace(feats, arms, xs, ys, lam, beta, kappa):
    """The hybrid logistic posterior refreshed after every observation, dense: each factor
    is linearised at the joint posterior mean of the factors before it. Returns the final
    joint mean (θ, then one offset per arm) and precision."""
    d, t = feats.shape[1] * xs.shape[1], len(arms)
    weights, info = np.zeros(t), np.zeros(t)
    for i in range(t):
        prec, vec = hybrid_joint(feats, arms[:i], xs[:i], weights[:i], info[:i], lam, beta, kappa)
        m = np.linalg.solve(prec, vec)
        z = np.kron(feats[arms[i]], xs[i]) @ m[:d] + m[d + arms[i]]
        p = sigmoid(z)
        weights[i] = p * (1 - p)
        info[i] = weights[i] * z + ys[i] - p
    prec, vec = hybrid_joint(feats, arms, xs, weights, info, lam, beta, kappa)
    return np.linalg.solve(prec, vec), prec


def logistic_map(xs, ys, lam, m0, iters=50):
    """Batch MAP of a logistic regression with prior N(m0, I/λ), by Newton's method."""
    d = xs.shape[1]
    m = np.asarray(m0, dtype=np.float64).copy()
    for _ in range(iters):
        p = sigmoid(xs @ m)
        grad = xs.T @ (ys - p) - lam * (m - m0)
        hess = lam * np.eye(d) + (xs * (p * (1 - p))[:, None]).T @ xs
        m = m + np.linalg.solve(hess, grad)
    return m, hess


def dict_lookup(ids: list[str], active: np.ndarray, candidates: list) -> np.ndarray:
    """Candidate ids resolved by a Python dict, as the registry did before its compiled
    table: the first unknown or retired id raises ``(kind, id, position)``."""
    index = {arm_id: i for i, arm_id in enumerate(ids)}
    out = np.empty(len(candidates), dtype=np.int64)
    for pos, arm_id in enumerate(candidates):
        idx = index.get(arm_id)
        if idx is None:
            raise KeyError(("unknown", arm_id, pos))
        if not active[idx]:
            raise KeyError(("retired", arm_id, pos))
        out[pos] = idx
    return out


def project_bounds(p, member, floor, bound, mu, tol=1e-12, passes=100):
    """Cyclic proportional projection candidate by candidate: each violated bound scales
    its members to the bound and the others to the rest (evenly when a side has no mass).
    ``member`` (K, n) of the bounded constraints, ``floor`` and ``bound`` (K,). Returns the
    final ``p``, the reward given up per constraint and the mass moved on its members."""
    p = np.array(p, dtype=np.float64)
    start = p.copy()
    cost = np.zeros(len(bound))
    n = p.shape[0]
    for _ in range(passes):
        change = 0.0
        for k, (m, fl, b) in enumerate(zip(member, floor, bound, strict=True)):
            mass = p[m].sum()
            gap = b - mass if fl else mass - b
            if gap <= tol:
                continue
            change = max(change, gap)
            size = int(m.sum())
            if size in (0, n):
                continue
            old = p.copy()
            for side, share, count in ((m, b, size), (~m, 1.0 - b, n - size)):
                total = old[side].sum()
                p[side] = old[side] * share / total if total > tol else share / count
            cost[k] += float(((old - p) * mu).sum())
        if change <= tol:
            break
    moved = np.array([np.abs(p - start)[m].sum() for m in member])
    return p, cost, moved


def rejection_replay(policy, data, rng, uniform_epsilon=None) -> tuple[np.ndarray, int]:
    """Rewards of the rounds a rejection replay accepts, and the rounds it kept: the batch
    pipeline with rewinds it replaced (decide ahead in batches, stop at the first accepted
    round whose update moves decisions, rewind the stream there; a policy that learns
    events learns the round's ``outcomes``). Trusts its inputs."""
    ptr, idx = data.candidates()
    sizes = np.diff(ptr)
    rounds = np.arange(data.n_rounds)
    if uniform_epsilon is not None:
        keep = uniform_epsilon / sizes.astype(np.float64) / data.pscores
        rounds = np.flatnonzero(rng.random(data.n_rounds) < keep)
    pos = np.array([ptr[i] + list(idx[ptr[i] : ptr[i + 1]]).index(a)
                    for i, a in enumerate(data.actions)], dtype=np.int64)  # fmt: skip
    logged, contexts = idx[pos], data.contexts
    accepted: list[float] = []
    with policy.bank_in_use(int(sizes.max())):
        _rejection_rounds(policy, data, rounds, ptr, idx, sizes, logged, contexts, accepted)
    return np.asarray(accepted), int(rounds.shape[0])


def _rejection_rounds(policy, data, rounds, ptr, idx, sizes, logged, contexts, accepted):
    i, size = 0, 64
    while i < rounds.shape[0]:
        rows = rounds[i : i + size]
        counts = sizes[rows]
        sub_ptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=sub_ptr[1:])
        flat = np.repeat(ptr[rows] - sub_ptr[:-1], counts) + np.arange(sub_ptr[-1])
        xs = None if contexts is None else contexts[rows]
        start = policy.stream_position
        out = policy.decide_batch(sub_ptr, idx[flat], xs)
        used = rows.shape[0]
        for j in np.flatnonzero(out.arms == logged[rows]).tolist():
            r = int(rows[j])
            version = policy.version
            x = None if xs is None else xs[j]
            if policy.LEARNS_EVENTS:
                policy.learn_outcome(int(logged[r]), *data.outcomes[r], data.rewards[r], x)
            else:
                policy.update(int(logged[r]), float(data.rewards[r]), x)
            accepted.append(float(data.rewards[r]))
            if policy.UPDATES_MOVE_DECISIONS or policy.version != version:
                used = j + 1
                break
        if used < rows.shape[0]:
            policy.seek_stream(start + used)
            size = max(16, 2 * used)
        else:
            size = min(8192, 2 * size)
        i += used


def accept_events(d, p, u, rule, stop_after, hist, state, c_out, accepted):
    """The compiled acceptance rule (``kernels.nonstationary.accept_event``) event by event
    until ``stop_after`` acceptances; the events consumed."""
    from allocator.kernels import nonstationary as kns

    taken = 0
    for k in range(d.shape[0]):
        accepted[k] = kns.accept_event(d[k], p[k], u[k], *rule, hist, state, c_out, k)
        taken += int(accepted[k])
        if taken == stop_after:
            return k + 1
    return d.shape[0]


def nonstationary_walk(
    policy, data, pos, pscores, u, contexts, rule, max_accepted, contracted, hist, state
):
    """The acceptance walk of a nonstationary replay without contracts as it was before
    it was compiled: one ``decide_many(draw=False)`` per chunk of events (one row tiled
    when every round shares its candidate list), the acceptance kernel until the next
    update that moves decisions, ``update_batch`` of the accepted events (``learn_outcomes``
    of their events for a policy that learns events)."""
    from allocator.kernels import nonstationary as kns

    assert contracted is None
    adaptive, quantile, c_max, _ = rule
    ptr, idx = data.candidates()
    n = data.n_rounds
    target, c_arr, accepted = np.zeros(idx.shape[0]), np.zeros(n), np.zeros(n, dtype=np.bool_)
    if max_accepted is not None:
        max_accepted += int(state[kns.STATE_ACCEPTED])
    xs_all = policy.context_rows(contexts, n)
    no_times, no_codes = np.zeros(n), np.zeros((n, 0), dtype=np.int64)
    sizes = np.diff(ptr)
    k = int(sizes[0])
    if contexts is not None or (sizes != k).any() or (idx.reshape(-1, k) != idx[:k]).any():
        k = 0
    i, size = 0, 64
    while i < n and (max_accepted is None or state[kns.STATE_ACCEPTED] < max_accepted):
        hi = min(n, i + size)
        f0, f1 = int(ptr[i]), int(ptr[hi])
        if k:
            row = policy.decide_many(ptr[:2], idx[:k], xs_all[:1], no_times[:1], no_codes[:1],
                                     None, False).probabilities  # fmt: skip
            probs = np.tile(row, hi - i)
        else:
            cptr = ptr[i : hi + 1] - f0
            probs = policy.decide_many(cptr, idx[f0:f1], xs_all[i:hi], no_times[i:hi],
                                       no_codes[i:hi], None, False).probabilities  # fmt: skip
        moving = policy.UPDATES_MOVE_DECISIONS
        stop = 1 if moving else policy.config.refresh_every - policy.pending_updates
        if max_accepted is not None:
            stop = min(stop, max_accepted - int(state[kns.STATE_ACCEPTED]))
        d = np.ascontiguousarray(probs[pos[i:hi] - f0])
        used = accept_events(d, pscores[i:hi], u[i:hi], (adaptive, quantile, c_max), stop, hist,
                             state, c_arr[i:hi], accepted[i:hi])  # fmt: skip
        target[f0 : int(ptr[i + used])] = probs[: int(ptr[i + used]) - f0]
        rows = i + np.flatnonzero(accepted[i : i + used])
        x = None if contexts is None else contexts[rows]
        if rows.size and policy.LEARNS_EVENTS:
            c, o, g = data.outcomes[rows].T
            policy.learn_outcomes(data.actions[rows], c, o, g, data.rewards[rows], x)
        elif rows.size:
            policy.update_batch(data.actions[rows], data.rewards[rows], x)
        size = max(16, 2 * used) if used < hi - i else min(8192, 2 * size)
        i += used
    return target, c_arr, accepted, i


def roll_score_bank(z, rng, slots, pending, cursor):
    """The score bank's rolling redraw as the linear policies ran it in numpy: the next
    window of columns of the first ``slots`` rows, 1,024 normals per pending update (at
    least one column, at most 65,536 normals), ``rng.standard_normal`` in one call."""
    view = z[:slots]
    m_rows = view.shape[1]
    cells = min(1 << 16, (1 << 10) * pending)
    step = max(1, min(m_rows, cells // max(slots, 1)))
    lo = int(cursor[0])
    hi = min(m_rows, lo + step)
    view[:, lo:hi] = rng.standard_normal((slots, hi - lo))
    cursor[0] = 0 if hi == m_rows else hi


def lapack_linear_refresh(policy):
    """The disjoint linear policy's refresh as it was before it was compiled: dirty arms
    re-solved by LAPACK (``numpy.linalg.solve`` for the means, ``inv`` for ``A⁻¹``), then
    the bank's roll."""
    s = policy.state
    idx = np.flatnonzero(s.dirty[: policy.registry.n_arms])
    if idx.size:
        mu, a = policy.posterior(idx)
        s.mu[idx] = mu
        s.a_inv[idx] = np.linalg.inv(a)
        s.dirty[idx] = False
    roll_score_bank(s.z, policy.rng, policy.bank_slots, int(s.pending[0]), s.z_cursor)


def sequential_linear_scores(x, cand, mu, a_inv, v):
    """``kernels.linear.linear_scores`` one row of ``A⁻¹x`` at a time, each sum in index
    order (the kernel's order, so its bits)."""
    d = len(x)
    mean, sd = np.empty(len(cand)), np.empty(len(cand))
    for j, a in enumerate(cand):
        m = q = 0.0
        for i in range(d):
            m += float(x[i]) * float(mu[a, i])
            row = 0.0
            for k in range(d):
                row += float(a_inv[a, i, k]) * float(x[k])
            q += float(x[i]) * row
        mean[j] = m
        sd[j] = v * math.sqrt(q) if q > 0.0 else 0.0
    return mean, sd


def newton_logistic_fit(x, arms, rewards, include, l2, max_iter, tol, n_arms, intercept_l2):
    """``kernels.ope.logistic_fit`` row by row in plain Python, every sum in the kernel's
    order (its gradient ``(μ − r)·z`` and Hessian ``(s·z_j)·z_k`` per row): its bits.
    Returns ``(coef (K, p), pooled (p,))``."""
    from allocator.kernels.ope import cholesky_solve

    n, d = x.shape
    p = d + 1
    rows = [i for i in range(n) if include.shape[0] == 0 or include[i]]
    z = [[1.0, *(float(v) for v in x[i])] for i in range(n)]

    # the kernel's np.exp of a scalar is libm's exp when compiled and numpy's ufunc under
    # NUMBA_DISABLE_JIT; the two may differ in the last bit, so use the one it runs
    exp = np.exp if numba.config.DISABLE_JIT else math.exp

    def sigmoid(t):
        if t >= 0.0:
            return 1.0 / (1.0 + exp(-t))
        e = exp(t)
        return e / (1.0 + e)

    def newton(theta_of, pen_of, centre_of, groups):
        step, work = np.empty(p), np.zeros((p, p))
        while True:
            g = {a: [0.0] * p for a in groups}
            h = {a: [[0.0] * p for _ in range(p)] for a in groups}
            for i in rows:
                a = theta_of(i)
                eta = 0.0
                for j in range(p):
                    eta += groups[a][j] * z[i][j]
                mu = sigmoid(eta)
                s, e = mu * (1.0 - mu), mu - float(rewards[i])
                for j in range(p):
                    g[a][j] += e * z[i][j]
                    for k in range(j + 1):
                        h[a][j][k] += (s * z[i][j]) * z[i][k]
            moved = 0.0
            for a, theta in groups.items():
                gg = np.array([g[a][j] + pen_of(j) * (theta[j] - centre_of(j)) for j in range(p)])
                hh = np.array(h[a])
                hh[np.diag_indices(p)] += [pen_of(j) for j in range(p)]
                cholesky_solve(hh, gg, step, work)
                for j in range(p):
                    theta[j] -= float(step[j])
                    moved = max(moved, abs(float(step[j])))
            yield moved

    pooled = [0.0] * p
    fit = newton(lambda i: 0, lambda j: l2 if j else intercept_l2, lambda j: 0.0, {0: pooled})
    for _, moved in zip(range(max_iter), fit, strict=False):
        if moved < tol:
            break
    coef = {a: list(pooled) for a in range(n_arms)}
    fit = newton(lambda i: int(arms[i]), lambda j: l2, lambda j: pooled[j], coef)
    for _, moved in zip(range(max_iter), fit, strict=False):
        if moved < tol:
            break
    return np.array([coef[a] for a in range(n_arms)]), np.array(pooled)


def product_win_shares(cand, mean3, sd3, noise_var, rate, weights, z):
    """The factored family's Thompson win shares as computed before its draws were pruned:
    every candidate drawn on every bank row (through the kernel's own ``app_value``, so the
    values are the same bits), each row's winner the first largest; returns the winners
    and the shares."""
    from allocator.kernels.factored import app_value

    n, m_rows = cand.shape[0], z.shape[1] // 3
    half = 0.5 * noise_var[0]
    best, arg = np.full(m_rows, -np.inf), np.zeros(m_rows, dtype=np.int64)
    for j in range(n):
        mc, mo, mv = mean3[0, j], mean3[1, j], mean3[2, j] + half
        sc, so, sv = sd3[0, j], sd3[1, j], sd3[2, j]
        for m in range(m_rows):
            val = app_value(mc + sc * z[j, m], mo + so * z[j, m_rows + m],
                            mv + sv * z[j, 2 * m_rows + m], rate[cand[j]], weights)  # fmt: skip
            if val > best[m]:
                best[m], arg[m] = val, j
    return arg, np.bincount(arg, minlength=n) / m_rows
