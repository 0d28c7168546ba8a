"""Where the disjoint logistic family's regret goes: one lever at a time, several seeds.

Not a test: a hand-run simulation (see benchmarks/README.md, "Logistic regret levers"). It
replays ``bench_core.py``'s ``linear`` workload and six variants through a compact model of
``LogisticPolicy`` (the same online Laplace update, sampling the logit ``x·θ_k`` per arm
with fresh normals instead of the bank), so that levers the policy does not have — an exact
Newton refit of each arm on all its data, an empirical-Bayes prior precision, a scale
decaying with the arm's count, a probit-centred sample — can be compared with the ones it
has (prior precision, exploration scale, ε, rule, the buffered refit of ``refit_buffer``). With
``--policy`` it runs the policy itself instead, through ``bench_core``'s online loop on its
``linear`` workload: linear TS and logistic TS at their defaults, and logistic TS with the
buffered MAP refit, interleaved per seed (regret, decide p50, online dec/s, and the
process's CPU time per round, simulator included: the rate a loaded machine distorts least).

    python benchmarks/bench_logistic_levers.py [--t 50000] [--seeds 0,1,2] [--only NAME]
    python benchmarks/bench_logistic_levers.py --policy [--t 50000] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from numba import njit

WORKLOADS = {  # name -> (K, d, θ scale, intercept): θ_k ~ scale·N(0, I/d), x ~ N(0, I)
    "core": (20, 16, 2.0, 0.0),
    "d4": (20, 4, 2.0, 0.0),
    "d32": (20, 32, 2.0, 0.0),
    "scale1": (20, 16, 1.0, 0.0),
    "scale4": (20, 16, 4.0, 0.0),
    "low_ctr": (20, 16, 1.0, -3.5),  # x_0 = 1 and θ_k0 shifted by -3.5: CTRs of a few %
    "k100": (100, 8, 2.0, 0.0),
}

#: label -> lever settings (defaults: λ = 1, v = 1, Thompson, ε = 0, no refit, fixed λ, a
#: constant scale, the sample centred on the mean)
LEVERS = {
    "posterior as it is (v=1)": {},
    "v=1, exact Newton refit": {"refit": True},
    "v=1, λ=d/4": {"lam": "d/4"},
    "v=0.5": {"v": 0.5},
    "v=0.35 (default)": {"v": 0.35},
    "v=0.25": {"v": 0.25},
    "v=0.35, ε=0.01": {"v": 0.35, "eps": 0.01},
    "v=0.35, λ=d/4": {"v": 0.35, "lam": "d/4"},
    "v=0.35, λ=d/4, exact Newton refit": {"v": 0.35, "lam": "d/4", "refit": True},
    "v=0.35, empirical-Bayes λ": {"v": 0.35, "eb": True},
    "UCB, v=0.35": {"v": 0.35, "ucb": True},
    "v=0.35, ε=0.01, buffered refit (64)": {"v": 0.35, "eps": 0.01, "buf": 64},
    "v=0.35, ε=0.01, buffered refit (256)": {"v": 0.35, "eps": 0.01, "buf": 256},
    "v=0.25, ε=0.01, buffered refit (64)": {"v": 0.25, "eps": 0.01, "buf": 64},
    "v=0.35, ε=0.01, λ=d/4, buffered refit (64)": {"v": 0.35, "eps": 0.01, "lam": "d/4", "buf": 64},
    "v=0.35, ε=0.01, probit-centred sample": {"v": 0.35, "eps": 0.01, "probit": True},
    "v=0.5·√(200/(200+n)), ε=0.01": {"v": 0.5, "eps": 0.01, "n0": 200.0},
    "v=0.35·√(1000/(1000+n)), ε=0.01": {"v": 0.35, "eps": 0.01, "n0": 1000.0},
}


def workload(name: str, t: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """θ (K, d), contexts (t, d) and reward uniforms (t,), drawn as ``bench_core`` does."""
    k, d, scale, intercept = WORKLOADS[name]
    rng = np.random.default_rng(seed)
    theta = scale * rng.normal(0.0, 1.0 / np.sqrt(d), size=(k, d))
    x = rng.normal(size=(t, d))
    u = rng.random(t)
    if intercept != 0.0:
        x[:, 0] = 1.0
        theta[:, 0] += intercept
    return theta, x, u


@njit(cache=True)
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@njit(cache=True)
def _loss(xs, ys, n, lam, m):
    """Negative log posterior of a logistic model with prior N(0, I/λ), up to a constant."""
    f = 0.5 * lam * (m @ m)
    for i in range(n):
        z = xs[i] @ m
        f += np.log1p(np.exp(-abs(z))) + max(z, 0.0) - ys[i] * z
    return f


@njit(cache=True)
def _newton_refit(xs, ys, n, lam, m, cov):
    """MAP of the first ``n`` observations (damped Newton from ``m``) and its Laplace
    covariance, in place."""
    d = m.shape[0]
    for _ in range(30):
        hess = lam * np.eye(d)
        grad = -lam * m
        for i in range(n):
            p = _sigmoid(xs[i] @ m)
            grad += (ys[i] - p) * xs[i]
            hess += p * (1.0 - p) * np.outer(xs[i], xs[i])
        step = np.linalg.solve(hess, grad)
        f0, a = _loss(xs, ys, n, lam, m), 1.0
        while a > 1e-4 and _loss(xs, ys, n, lam, m + a * step) > f0:
            a *= 0.5
        m += a * step
        if np.abs(a * step).max() < 1e-8:
            break
    hess = lam * np.eye(d)
    for i in range(n):
        p = _sigmoid(xs[i] @ m)
        hess += p * (1.0 - p) * np.outer(xs[i], xs[i])
    cov[:, :] = np.linalg.inv(hess)


@njit(cache=True)
def _buffer_refit(xs, ys, n, p_old, h_old, m, cov):
    """Damped Newton from ``m`` to the MAP of the buffer times the Gaussian factor
    (p_old, h_old), and its Laplace covariance, in place."""
    for _ in range(8):
        hess = p_old.copy()
        grad = h_old - p_old @ m
        for i in range(n):
            p = _sigmoid(xs[i] @ m)
            grad += (ys[i] - p) * xs[i]
            hess += p * (1.0 - p) * np.outer(xs[i], xs[i])
        step = np.linalg.solve(hess, grad)
        f0 = 0.5 * m @ p_old @ m - h_old @ m + _loss(xs, ys, n, 0.0, m)
        a = 1.0
        while a > 1e-6:
            mt = m + a * step
            if 0.5 * mt @ p_old @ mt - h_old @ mt + _loss(xs, ys, n, 0.0, mt) <= f0:
                break
            a *= 0.5
        if a <= 1e-6:
            break
        m += a * step
        if np.abs(a * step).max() < 1e-10:
            break
    hess = p_old.copy()
    for i in range(n):
        p = _sigmoid(xs[i] @ m)
        hess += p * (1.0 - p) * np.outer(xs[i], xs[i])
    cov[:, :] = np.linalg.inv(hess)


@njit(cache=True)
def _set_precision(m, cov, lam_old, lam_new):
    """Swap the prior precision of every arm's Gaussian posterior (prior mean 0)."""
    d = m.shape[1]
    for k in range(m.shape[0]):
        prec = np.linalg.inv(cov[k])
        h = prec @ m[k]
        cov[k] = np.linalg.inv(prec + (lam_new - lam_old) * np.eye(d))
        m[k] = cov[k] @ h


@njit(cache=True)
def simulate(theta, xs, u, z, explore, uniform_arm, lam, v, eps, ucb, refit, eb, buf, n0, probit):
    """Regret (T,) of the online Laplace logistic policy; ``z`` (T, K) standard normals,
    ``explore`` (T,) uniforms and ``uniform_arm`` (T,) arms for the ε-mixture. ``buf`` > 0:
    a MAP refit of every arm updated since the last refresh (every 64 updates) on its last
    ``buf`` observations, older ones kept as their Laplace factor; ``n0`` > 0: the
    exploration scale decays as v·√(n0 / (n0 + n_k)); ``probit``: the sample is centred on
    the probit-corrected logit."""
    t_max, d = xs.shape
    k_arms = theta.shape[0]
    m = np.zeros((k_arms, d))
    cov = np.zeros((k_arms, d, d))
    for k in range(k_arms):
        cov[k] = np.eye(d) / lam
    seen_x = np.zeros((k_arms, t_max if refit else 1, d))
    seen_y = np.zeros((k_arms, t_max if refit else 1))
    n = np.zeros(k_arms, np.int64)
    next_refit = np.ones(k_arms, np.int64)
    bx = np.zeros((k_arms, max(buf, 1), d))
    by = np.zeros((k_arms, max(buf, 1)))
    nb = np.zeros(k_arms, np.int64)
    p_old = np.zeros((k_arms, d, d))
    h_old = np.zeros((k_arms, d))
    for k in range(k_arms):
        p_old[k] = lam * np.eye(d)
    touched = np.zeros(k_arms, np.bool_)
    regret = np.zeros(t_max)
    score = np.zeros(k_arms)
    truth = np.zeros(k_arms)
    for t in range(t_max):
        x = xs[t]
        for k in range(k_arms):
            s = np.sqrt(max(x @ cov[k] @ x, 0.0))
            vk = v if n0 == 0 else v * np.sqrt(n0 / (n0 + n[k]))
            c = 1.0 / np.sqrt(1.0 + np.pi * s * s / 8.0) if probit else 1.0
            score[k] = c * (x @ m[k]) + vk * s * (1.0 if ucb else z[t, k])
            truth[k] = _sigmoid(x @ theta[k])
        a = uniform_arm[t] if explore[t] < eps else np.argmax(score)
        regret[t] = truth.max() - truth[a]
        y = 1.0 if u[t] < truth[a] else 0.0
        p = _sigmoid(x @ m[a])
        cx = cov[a] @ x
        cov[a] -= p * (1.0 - p) * np.outer(cx, cx) / (1.0 + p * (1.0 - p) * (x @ cx))
        m[a] += cov[a] @ x * (y - p)
        if buf:
            slot = nb[a] % buf
            if nb[a] >= buf:  # evict the oldest: its factor, linearised at the mean, stays
                xo = bx[a, slot]
                zo = xo @ m[a]
                po = _sigmoid(zo)
                wo = po * (1.0 - po)
                p_old[a] += wo * np.outer(xo, xo)
                h_old[a] += xo * (wo * zo + by[a, slot] - po)
            bx[a, slot] = x
            by[a, slot] = y
            nb[a] += 1
            touched[a] = True
            if (t + 1) % 64 == 0:
                for k in range(k_arms):
                    if touched[k]:
                        touched[k] = False
                        _buffer_refit(
                            bx[k], by[k], min(nb[k], buf), p_old[k], h_old[k], m[k], cov[k]
                        )
        if refit:
            seen_x[a, n[a]] = x
            seen_y[a, n[a]] = y
        n[a] += 1
        if refit and n[a] >= next_refit[a]:  # at 1, 2, 4, 8, ... observations
            next_refit[a] *= 2
            _newton_refit(seen_x[a], seen_y[a], n[a], lam, m[a], cov[a])
        if eb and (t + 1) % 64 == 0:  # one EM step on λ, as a refresh every 64 updates would
            total, arms = 0.0, 0
            for k in range(k_arms):
                if n[k] > 0:
                    total += m[k] @ m[k] + np.trace(cov[k])
                    arms += 1
            if arms:
                new = d * arms / total
                _set_precision(m, cov, lam, new)
                lam = new
    return regret


def run(name: str, lever: dict, t: int, seed: int) -> float:
    theta, xs, u = workload(name, t, seed)
    k, d = theta.shape
    rng = np.random.default_rng(seed + 10_000)
    lam = d / 4 if lever.get("lam") == "d/4" else 1.0
    regret = simulate(
        theta, xs, u, rng.standard_normal((t, k)), rng.random(t), rng.integers(0, k, t),
        lam, lever.get("v", 1.0), lever.get("eps", 0.0), lever.get("ucb", False),
        lever.get("refit", False), lever.get("eb", False), lever.get("buf", 0),
        lever.get("n0", 0.0), lever.get("probit", False),
    )  # fmt: skip
    return float(regret.sum())


def policy_rows(t: int, seeds: list[int]) -> None:
    """The policy on ``bench_core``'s ``linear`` workload: one row per seed and config."""
    import bench_core as bc

    from allocator import LinearGaussianConfig, LogisticConfig

    configs = {
        "linear TS (default)": LinearGaussianConfig(n_features=16),
        "logistic TS (default)": LogisticConfig(n_features=16),
        "logistic TS refit_buffer=64": LogisticConfig(n_features=16, refit_buffer=64),
        "logistic TS refit_buffer=256": LogisticConfig(n_features=16, refit_buffer=256),
        "logistic TS ε=0": LogisticConfig(n_features=16, epsilon=0.0),
        "logistic TS ε=0, refit_buffer=64": LogisticConfig(
            n_features=16, epsilon=0.0, refit_buffer=64
        ),
    }
    for cfg in configs.values():
        bc.warm_up(cfg)
    print(f"bench_core linear, T = {t:,}\n")
    print("| seed | policy | regret | p50 µs | pair p50 µs | online dec/s | CPU µs/round |")
    print("|---|---|---|---|---|---|---|")
    for seed in seeds:
        env = bc.linear_env(20, 16, t, seed=seed)
        for label, cfg in configs.items():
            cpu = time.process_time()
            rate, p50, _, pair, regret = bc.run_online(bc.Ours(cfg, env), env, t)
            cpu = (time.process_time() - cpu) / t * 1e6
            cells = f"{regret.sum():,.0f} | {p50:.1f} | {pair:.1f} | {rate:,.0f} | {cpu:.0f}"
            print(f"| {seed} | {label} | {cells} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=50_000, help="rounds per run")
    parser.add_argument("--seeds", default="0,1,2", help="workload seeds, comma-separated")
    parser.add_argument("--only", choices=list(WORKLOADS), help="one workload (default: all)")
    parser.add_argument("--policy", action="store_true", help="the policy on bench_core linear")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.policy:
        policy_rows(args.t, seeds)
        return
    print(f"T = {args.t:,}, seeds {args.seeds}; cumulative expected regret per seed (mean)\n")
    print("| workload | lever | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---|---|" + "---|" * (len(seeds) + 1))
    for name in [args.only] if args.only else list(WORKLOADS):
        for label, lever in LEVERS.items():
            t0 = time.perf_counter()
            regrets = [run(name, lever, args.t, s) for s in seeds]
            cells = " | ".join(f"{r:,.0f}" for r in regrets)
            print(f"| {name} | {label} | {cells} | {np.mean(regrets):,.0f} |", flush=True)
            print(f"  {name}: {label} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
