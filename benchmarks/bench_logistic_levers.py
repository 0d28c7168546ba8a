"""Where the disjoint logistic family's regret goes: one lever at a time, several seeds.

Not a test: a hand-run simulation (see benchmarks/README.md, "Logistic regret levers"). It
replays ``bench_core.py``'s ``linear`` workload and six variants through a compact model of
``LogisticPolicy`` (the same online Laplace update, sampling the logit ``x·θ_k`` per arm
with fresh normals instead of the bank), so that levers the policy does not have — an exact
Newton refit of each arm on all its data, an empirical-Bayes prior precision — can be
compared with the ones it has (prior precision, exploration scale, ε, rule).

    python benchmarks/bench_logistic_levers.py [--t 50000] [--seeds 0,1,2] [--only NAME]
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

#: label -> lever settings (defaults: λ = 1, v = 1, Thompson, ε = 0, no refit, fixed λ)
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
def _set_precision(m, cov, lam_old, lam_new):
    """Swap the prior precision of every arm's Gaussian posterior (prior mean 0)."""
    d = m.shape[1]
    for k in range(m.shape[0]):
        prec = np.linalg.inv(cov[k])
        h = prec @ m[k]
        cov[k] = np.linalg.inv(prec + (lam_new - lam_old) * np.eye(d))
        m[k] = cov[k] @ h


@njit(cache=True)
def simulate(theta, xs, u, z, explore, uniform_arm, lam, v, eps, ucb, refit, eb):
    """Regret (T,) of the online Laplace logistic policy; ``z`` (T, K) standard normals,
    ``explore`` (T,) uniforms and ``uniform_arm`` (T,) arms for the ε-mixture."""
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
    regret = np.zeros(t_max)
    score = np.zeros(k_arms)
    truth = np.zeros(k_arms)
    for t in range(t_max):
        x = xs[t]
        for k in range(k_arms):
            s = np.sqrt(max(x @ cov[k] @ x, 0.0))
            score[k] = x @ m[k] + v * s * (1.0 if ucb else z[t, k])
            truth[k] = _sigmoid(x @ theta[k])
        a = uniform_arm[t] if explore[t] < eps else np.argmax(score)
        regret[t] = truth.max() - truth[a]
        y = 1.0 if u[t] < truth[a] else 0.0
        p = _sigmoid(x @ m[a])
        cx = cov[a] @ x
        cov[a] -= p * (1.0 - p) * np.outer(cx, cx) / (1.0 + p * (1.0 - p) * (x @ cx))
        m[a] += cov[a] @ x * (y - p)
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
        lever.get("refit", False), lever.get("eb", False),
    )  # fmt: skip
    return float(regret.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, default=50_000, help="rounds per run")
    parser.add_argument("--seeds", default="0,1,2", help="workload seeds, comma-separated")
    parser.add_argument("--only", choices=list(WORKLOADS), help="one workload (default: all)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
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
