"""Hand-run benchmark of the core policies, against MABWiser and Vowpal Wabbit when installed.

Not a test: it prints machine information and markdown tables (see benchmarks/README.md).

    python benchmarks/bench_core.py [--quick] [--only NAME]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from allocator import (
    ArmRegistry,
    BetaBernoulliConfig,
    HybridLinearConfig,
    LinearGaussianConfig,
    LogisticConfig,
    SharedLinearConfig,
    SharedLogisticConfig,
    make_policy,
)
from allocator.kernels.beta import update_beta
from allocator.policies import Policy
from allocator.policies.state import Role

try:
    from mabwiser.mab import MAB, LearningPolicy
except (ImportError, OSError):
    MAB = None
try:
    import vowpalwabbit
except (ImportError, OSError):
    vowpalwabbit = None

BATCH_REQUESTS = 10_000  # requests per decide_batch call ...
BATCH_MAX_ENTRIES = 2_000_000  # ... unless that many candidates (memory cap, K=1000)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# ----------------------------------------------------------------------------- workloads
@dataclass
class Env:
    """A simulated workload. Every method sees the same requests and reward uniforms."""

    n_arms: int
    mean: Callable[[Any, Any], Any]  # (request t, arm) -> expected reward, broadcasting
    best: np.ndarray  # (T,) expected reward of the best candidate of each request
    u: np.ndarray  # (T,) uniforms: the reward of request t is 1.0 when u[t] < mean(t, arm)
    cands: np.ndarray | None = None  # (T, C) candidate arms; None = every arm eligible
    contexts: np.ndarray | None = None  # (T, d)
    arm_features: np.ndarray | None = None  # (K, d_arm), shared linear model only


def random_candidates(rng: np.random.Generator, n_arms: int, t: int, c: int) -> np.ndarray:
    """(t, c) candidate lists, c distinct arms drawn uniformly for each request."""
    cands = rng.integers(0, n_arms, size=(t, c))
    srt = np.sort(cands, axis=1)
    for r in np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1)):
        cands[r] = rng.choice(n_arms, size=c, replace=False)
    return cands


def bernoulli_env(n_arms: int, t: int, n_cand: int | None = None, seed: int = 0) -> Env:
    """True CTRs ~ Beta(1, 30); all arms eligible, or n_cand random ones per request."""
    rng = np.random.default_rng(seed)
    ctr = rng.beta(1.0, 30.0, size=n_arms)
    u = rng.random(t)
    if n_cand is None:
        return Env(n_arms, lambda ts, arms: ctr[arms], np.full(t, ctr.max()), u)
    cands = random_candidates(rng, n_arms, t, n_cand)
    return Env(n_arms, lambda ts, arms: ctr[arms], ctr[cands].max(axis=1), u, cands)


def linear_env(n_arms: int, d: int, t: int, seed: int = 0) -> Env:
    """Reward ~ Bernoulli(sigmoid(x·θ_k)), θ_k ~ 2·N(0, I/d), x ~ N(0, I)."""
    rng = np.random.default_rng(seed)
    theta = 2.0 * rng.normal(0.0, 1.0 / np.sqrt(d), size=(n_arms, d))
    x = rng.normal(size=(t, d))
    u = rng.random(t)

    def mean(ts: Any, arms: Any) -> Any:
        return sigmoid(np.sum(x[ts] * theta[arms], axis=-1))

    return Env(n_arms, mean, sigmoid(x @ theta.T).max(axis=1), u, contexts=x)


def shared_env(n_arms: int, d_arm: int, d_ctx: int, t: int, n_cand: int, seed: int = 0) -> Env:
    """Reward ~ Bernoulli(sigmoid(fᵀWx)), W ~ 2·N(0, I/(d_arm·d_ctx)), f and x ~ N(0, I)."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_arms, d_arm))
    w = 2.0 * rng.normal(0.0, 1.0 / np.sqrt(d_arm * d_ctx), size=(d_arm, d_ctx))
    x = rng.normal(size=(t, d_ctx))
    u = rng.random(t)
    cands = random_candidates(rng, n_arms, t, n_cand)

    def mean(ts: Any, arms: Any) -> Any:
        return sigmoid(np.sum(feats[arms] * (x[ts] @ w.T), axis=-1))

    best = sigmoid(np.einsum("tcf,tf->tc", feats[cands], x @ w.T)).max(axis=1)
    return Env(n_arms, mean, best, u, cands, x, feats)


# -------------------------------------------------------------------------------- agents
class Ours:
    """An allocator policy over K registered arms."""

    def __init__(self, cfg: Any, env: Env) -> None:
        registry = ArmRegistry(capacity=env.n_arms)
        registry.add([f"a{i}" for i in range(env.n_arms)], "g")
        extra = {} if env.arm_features is None else {"arm_features": env.arm_features}
        self.policy = make_policy(cfg, registry, seed=0, **extra)

    def bytes_per_arm(self) -> float:
        """Model state held per registered arm (its per-arm arrays over the capacity)."""
        state = self.policy.state
        per_arm = sum(getattr(state, f.name).nbytes for f in state.select(Role.PER_ARM))
        return per_arm / state.capacity

    def decide(self, cand: np.ndarray, x: np.ndarray | None) -> int:
        return self.policy.decide(cand, x).arm_index

    def update(self, arm: int, reward: float, x: np.ndarray | None) -> None:
        self.policy.update(arm, reward, x)


class BareKernels:
    """The floor of ``Ours`` on context-free Beta workloads: its decide kernel on arguments
    prepared once (every arm a candidate) and the update kernel, called from Python through
    numba's dispatch with no checks, refreshing every ``refresh_every`` updates as the
    policy does."""

    def __init__(self, cfg: Any, env: Env, warm: bool = True) -> None:
        if warm:  # load the kernels from numba's cache outside the timed loop
            w = BareKernels(cfg, Env(8, env.mean, env.best, env.u), warm=False)
            w.update(w.decide(np.arange(8), None), 0.0, None)
        self.policy = pol = Ours(cfg, env).policy
        n = env.n_arms
        self.cand = np.arange(n)
        self.out = np.zeros((3, 1), dtype=np.int64)
        self.args = pol.kernel_args(
            np.array([0, n]), self.cand, np.zeros((1, 0)), np.zeros(1),
            np.zeros((1, 0), dtype=np.int64), True, None, np.empty(n), self.out,
        )  # fmt: skip
        self.every = cfg.refresh_every
        self.count = 0

    def decide(self, cand: np.ndarray, x: np.ndarray | None) -> int:
        self.policy.KERNEL(*self.args)
        return int(self.cand[self.out[0, 0]])

    def update(self, arm: int, reward: float, x: np.ndarray | None) -> None:
        pol, s = self.policy, self.policy.state
        update_beta(arm, reward, pol.gamma, s.clock, s.t_last, s.s1, s.s0, s.dirty)
        self.count += 1
        if self.count == self.every:
            self.count = 0
            pol.refresh()


class BareLean(BareKernels):
    """The floor of the lean single-request entry: ``DECIDE_ONE`` (15 arguments) on
    arguments prepared once, and the fused ``LEARN_ONE`` step (what ``Policy.decide`` and
    ``Policy.update`` now call), through numba's dispatch with no checks."""

    def __init__(self, cfg: Any, env: Env, warm: bool = True) -> None:
        super().__init__(cfg, env, warm=False)
        pol = self.policy
        n = env.n_arms
        self.lean = (self.cand, *pol.lean_args(), np.empty(n), np.zeros(2, dtype=np.int64))
        self.learn = pol.learn_args()
        if warm:  # as BareKernels: the kernels loaded outside the timed loop
            w = BareLean(cfg, Env(8, env.mean, env.best, env.u), warm=False)
            w.update(w.decide(np.arange(8), None), 0.0, None)

    def decide(self, cand: np.ndarray, x: np.ndarray | None) -> int:
        return int(self.cand[self.policy.DECIDE_ONE(*self.lean)])

    def update(self, arm: int, reward: float, x: np.ndarray | None) -> None:
        if self.policy.LEARN_ONE(arm, reward, *self.learn):
            self.policy.refresh()


class Mabwiser:
    """MABWiser ``MAB``; it cannot predict before its first fit, so round 1 is uniform."""

    def __init__(self, policy: str, env: Env) -> None:
        learning_policy = getattr(LearningPolicy, policy)()
        self.mab = MAB(arms=list(range(env.n_arms)), learning_policy=learning_policy, seed=0)
        self.fitted = False
        self.rng = np.random.default_rng(1)

    def decide(self, cand: np.ndarray, x: np.ndarray | None) -> int:
        if not self.fitted:
            return int(cand[self.rng.integers(cand.shape[0])])
        return int(self.mab.predict(None if x is None else x[None, :]))

    def update(self, arm: int, reward: float, x: np.ndarray | None) -> None:
        self.mab.partial_fit([arm], [reward], None if x is None else x[None, :])
        self.fitted = True


class Vowpal:
    """VW ``--cb_explore_adf`` from text examples: one line per candidate, cost = -reward."""

    def __init__(self, args: str, env: Env) -> None:
        self.vw = vowpalwabbit.Workspace(f"--cb_explore_adf {args} --quiet")
        self.actions = [f"|a a{k}" for k in range(env.n_arms)]
        self.rng = np.random.default_rng(1)
        self.last: tuple[list[str], int, float] = ([], 0, 0.0)

    def decide(self, cand: np.ndarray, x: np.ndarray | None) -> int:
        feats = "c" if x is None else " ".join(f"x{i}:{v:.4f}" for i, v in enumerate(x))
        lines = [f"shared |s {feats}"] + [self.actions[a] for a in cand]
        pmf = np.asarray(self.vw.predict(lines))
        cdf = np.cumsum(pmf)
        j = min(int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right")), len(cand) - 1)
        self.last = (lines, j, float(pmf[j]))
        return int(cand[j])

    def update(self, arm: int, reward: float, x: np.ndarray | None) -> None:
        lines, j, prob = self.last
        lines[j + 1] = f"0:{-reward}:{prob} {lines[j + 1]}"
        self.vw.learn(lines)


# ------------------------------------------------------------------------------- methods
@dataclass
class Method:
    label: str
    make: Callable[[Env], Any]
    cfg: Any = None  # ours only: its policy config (for the warm-up and the batch run)
    ref: str | None = None  # peers only: the label of our method to compare with
    max_rounds: int | None = None  # peers too slow for the full T


def ours(label: str, cfg: Any) -> Method:
    return Method(label, partial(Ours, cfg), cfg=cfg)


TS = "ours Thompson (default)"
LIN_TS, LIN_UCB, LIN_EPS = "ours TS noise_scale=0.5 (default)", "ours LinUCB", "ours ε-greedy 0.05"
LOG_TS = "ours logistic TS (default)"
LOG_TS_EPS0 = "ours logistic TS ε=0 (zero propensities: not replayable)"
BARE = "bare kernels (old floor: 38-argument pipeline kernel, no checks, no Decision)"
BARE_LEAN = "bare lean kernels (floor: 15-argument entry, fused learn step)"
LEAN = hasattr(Policy, "DECIDE_ONE")
MW_TS, VW_EPS, VW_SQ = "MABWiser ThompsonSampling", "VW --epsilon 0.05", "VW --squarecb"
PEERS = [  # workload, package, label, setting, our method to compare with, max rounds
    ("bern10", "mabwiser", MW_TS, "ThompsonSampling", TS, None),
    ("bern10", "vowpalwabbit", VW_EPS, "--epsilon 0.05", TS, None),
    ("bern10", "vowpalwabbit", VW_SQ, "--squarecb", TS, None),
    ("bern1k", "mabwiser", MW_TS, "ThompsonSampling", TS, 2_000),
    ("linear", "mabwiser", "MABWiser LinTS", "LinTS", LIN_TS, 5_000),
    ("linear", "mabwiser", "MABWiser LinUCB", "LinUCB", LIN_UCB, 5_000),
    ("linear", "vowpalwabbit", VW_EPS, "-q sa --epsilon 0.05", LIN_EPS, None),
    ("linear", "vowpalwabbit", VW_SQ, "-q sa --squarecb", LIN_TS, None),
]


PEER_AGENTS = {"mabwiser": (MAB, Mabwiser), "vowpalwabbit": (vowpalwabbit, Vowpal)}


def peers(workload: str, quick: bool) -> list[Method]:
    """The peers of ``workload`` whose package is installed (a tenth of the rounds if quick)."""
    return [
        Method(
            label,
            partial(PEER_AGENTS[pkg][1], setting),
            None,
            ref,
            cap and cap // (10 if quick else 1),
        )
        for name, pkg, label, setting, ref, cap in PEERS
        if name == workload and PEER_AGENTS[pkg][0] is not None
    ]


def workloads(quick: bool, seed: int = 0) -> dict[str, tuple[str, Callable[[], Env], list[Method]]]:
    """name -> (title, environment builder, methods: ours, then the installed peers);
    ``seed`` draws the workload (hidden parameters, requests, reward uniforms)."""
    t, t_shared = (2_000, 500) if quick else (50_000, 10_000)
    beta = BetaBernoulliConfig()
    lin = partial(LinearGaussianConfig, n_features=16)
    shared = SharedLinearConfig(n_context_features=4, n_arm_features=4)
    linear = [
        ours(LIN_TS, lin()),
        ours("ours TS noise_scale=1", lin(noise_scale=1.0)),
        ours("ours TS noise_scale=0.25", lin(noise_scale=0.25)),
        ours(LIN_UCB, lin(rule="ucb")),
        ours(LIN_EPS, lin(rule="greedy", epsilon=0.05)),
        ours(LOG_TS, LogisticConfig(n_features=16)),
        ours(
            "ours logistic TS exploration_scale=1",
            LogisticConfig(n_features=16, exploration_scale=1.0),
        ),
        ours("ours logistic UCB", LogisticConfig(n_features=16, rule="ucb")),
        ours(LOG_TS_EPS0, LogisticConfig(n_features=16, epsilon=0.0)),
    ]
    specs = {
        "bern10": (
            "1. Bernoulli K=10",
            partial(bernoulli_env, 10, t, seed=seed),
            [
                ours(TS, beta),
                Method(BARE, partial(BareKernels, beta)),
                # a tree before the lean entry (a before/after run) has no such row
                *([Method(BARE_LEAN, partial(BareLean, beta))] if LEAN else []),
            ],
        ),
        "bern1k": (
            "2. Bernoulli K=1000",
            partial(bernoulli_env, 1000, t, seed=seed),
            [ours(TS, beta)],
        ),
        "bern1m": (
            "3. Bernoulli 10^6 arms, 200 cand.",
            partial(bernoulli_env, 1_000_000, t, 200, seed=seed),
            [ours(TS, beta)],
        ),
        "linear": ("4. Linear d=16 K=20", partial(linear_env, 20, 16, t, seed=seed), linear),
        "shared1m": (
            "5. Shared linear 10^6 arms, 200 cand.",
            partial(shared_env, 1_000_000, 4, 4, t_shared, 200, seed=seed),
            [
                ours(TS, shared),
                ours(
                    "ours shared logistic TS",
                    SharedLogisticConfig(n_context_features=4, n_arm_features=4),
                ),
                ours(
                    "ours hybrid linear TS",
                    HybridLinearConfig(n_context_features=4, n_arm_features=4),
                ),
            ],
        ),
    }
    return {
        name: (title, env, [*m, *peers(name, quick)]) for name, (title, env, m) in specs.items()
    }


# ------------------------------------------------------------------------------- running
@dataclass
class Result:
    workload: str
    method: Method
    rounds: int
    online: float  # decide+update decisions/s
    p50: float  # µs per decide
    p99: float
    pair_p50: float  # µs per decide + update
    batch: float | None  # decide_batch+update_batch decisions/s
    regret: np.ndarray  # (rounds,) expected regret of each decision
    state: float | None  # ours only: bytes of model state per arm
    note: str = ""


def warm_up(cfg: Any) -> None:
    """Compile (or load from numba's disk cache) every kernel ``cfg`` uses, on 8 spare arms."""
    rng = np.random.default_rng(1)
    registry = ArmRegistry(capacity=8)
    registry.add([f"w{i}" for i in range(8)], "g")
    d = getattr(cfg, "n_features", None) or getattr(cfg, "n_context_features", None)
    extra = {}
    if cfg.USES_ARM_FEATURES:
        extra["arm_features"] = rng.normal(size=(8, cfg.n_arm_features))
    policy = make_policy(cfg, registry, seed=1, **extra)
    cand = np.arange(8)
    for _ in range(2 * cfg.refresh_every):
        x = None if d is None else rng.normal(size=d)
        policy.update(policy.decide(cand, x).arm_index, float(rng.random() < 0.5), x)
    xs = None if d is None else rng.normal(size=(16, d))
    out = policy.decide_batch(np.arange(0, 17 * 8, 8), np.tile(cand, 16), xs)
    policy.update_batch(out.arms, rng.random(16), xs)


def run_online(agent: Any, env: Env, n: int) -> tuple[float, float, float, float, np.ndarray]:
    """One decide then one update per request; only those two calls are timed. Returns the
    rate, decide p50 / p99 and decide+update p50 (µs), and the regret per round."""
    clock = time.perf_counter_ns
    decide_ns = np.empty(n, dtype=np.int64)
    update_ns = np.empty(n, dtype=np.int64)
    chosen = np.empty(n, dtype=np.int64)
    all_arms = np.arange(env.n_arms)
    for t in range(n):
        cand = all_arms if env.cands is None else env.cands[t]
        x = None if env.contexts is None else env.contexts[t]
        t0 = clock()
        arm = agent.decide(cand, x)
        decide_ns[t] = clock() - t0
        reward = float(env.u[t] < env.mean(t, arm))
        t0 = clock()
        agent.update(arm, reward, x)
        update_ns[t] = clock() - t0
        chosen[t] = arm
    rate = n / (int(decide_ns.sum() + update_ns.sum()) * 1e-9)
    p50, p99 = np.percentile(decide_ns, [50, 99]) / 1e3
    pair = float(np.median(decide_ns + update_ns)) / 1e3
    return rate, float(p50), float(p99), pair, env.best[:n] - env.mean(np.arange(n), chosen)


def run_batch(agent: Ours, env: Env, n: int) -> float:
    """decide_batch over CSR chunks, then update_batch with their rewards; both timed."""
    width = env.n_arms if env.cands is None else env.cands.shape[1]
    chunk = min(BATCH_REQUESTS, max(1, BATCH_MAX_ENTRIES // width))
    policy, elapsed = agent.policy, 0
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        all_arms = env.cands is None
        idx = np.tile(np.arange(width), hi - lo) if all_arms else env.cands[lo:hi].ravel()
        ptr = np.arange(0, (hi - lo + 1) * width, width)
        xs = None if env.contexts is None else env.contexts[lo:hi]
        t0 = time.perf_counter_ns()
        out = policy.decide_batch(ptr, idx, xs)
        elapsed += time.perf_counter_ns() - t0
        rewards = (env.u[lo:hi] < env.mean(np.arange(lo, hi), out.arms)).astype(np.float64)
        t0 = time.perf_counter_ns()
        policy.update_batch(out.arms, rewards, xs)
        elapsed += time.perf_counter_ns() - t0
    return n / (elapsed * 1e-9)


def run_method(workload: str, method: Method, env: Env, t: int) -> Result:
    n = t if method.max_rounds is None else min(t, method.max_rounds)
    if method.cfg is not None:
        warm_up(method.cfg)
    t0 = time.perf_counter()
    agent = method.make(env)
    setup = time.perf_counter() - t0
    online, p50, p99, pair, regret = run_online(agent, env, n)
    state = agent.bytes_per_arm() if isinstance(agent, Ours) else None
    del agent
    gc.collect()
    batch = run_batch(method.make(env), env, n) if method.cfg is not None else None
    note = f"setup {setup:.1f} s (registry + policy)" if setup > 1.0 else ""
    if n < t:
        note = (
            f"only {n:,} rounds (too slow): rate measured on them, so {t:,} rounds would "
            f"take ≈ {t / online:,.0f} s; regret over these {n:,} rounds only"
        )
    return Result(workload, method, n, online, p50, p99, pair, batch, regret, state, note)


# ------------------------------------------------------------------------------ printing
def machine_info() -> str:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    info = Path("/proc/cpuinfo")
    model = re.search(r"model name\s*:\s*(.+)", info.read_text()) if info.exists() else None
    cpu = model.group(1) if model else platform.machine()
    lines = [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine: {platform.platform()}; {cpu}; cpu_count={os.cpu_count()}",
        f"python {platform.python_version()}; numpy {np.__version__}; numba {version('numba')}",
        f"allocator {version('entry-alloc')}; mabwiser {version('mabwiser')}; "
        f"vowpalwabbit {version('vowpalwabbit')}",
    ]
    return "\n".join(lines)


def fmt_rate(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def results_table(results: list[Result]) -> str:
    cols = (
        "workload method rounds online_dec/s p50_µs p99_µs pair_p50_µs batch_dec/s regret "
        "state_B/arm note"
    )
    rows = [
        "| " + " | ".join(c.replace("_", " ") for c in cols.split()) + " |",
        "|---" * len(cols.split()) + "|",
    ]
    for r in results:
        rows.append(
            f"| {r.workload} | {r.method.label} | {r.rounds:,} | {fmt_rate(r.online)} | "
            f"{r.p50:.1f} | {r.p99:.1f} | {r.pair_p50:.2f} | {fmt_rate(r.batch)} | "
            f"{r.regret.sum():,.1f} | {fmt_rate(r.state)} | {r.note} |"
        )
    return "\n".join(rows)


def ratio_table(results: list[Result]) -> str:
    ours_by = {(r.workload, r.method.label): r for r in results if r.method.cfg is not None}
    rows = [
        "| workload | peer | compared with | online speed ours/peer | regret ours/peer | over |",
        "|" + "---|" * 6,
    ]
    for r in results:
        ref = ours_by.get((r.workload, r.method.ref))
        if ref is None:
            continue
        h = min(r.rounds, ref.rounds)
        ratio = ref.regret[:h].sum() / max(r.regret[:h].sum(), 1e-12)
        rows.append(
            f"| {r.workload} | {r.method.label} | {ref.method.label} | "
            f"{ref.online / r.online:,.1f}× | {ratio:.2f} | first {h:,} rounds |"
        )
    return "\n".join(rows) if len(rows) > 2 else "(no peer results)"


def mark_best_noise_scale(results: list[Result]) -> None:
    ts = [r for r in results if r.method.label.startswith("ours TS noise_scale")]
    if len(ts) > 1:
        best = min(ts, key=lambda r: r.regret.sum())
        best.note = "; ".join(filter(None, [best.note, "lowest regret of the TS noise_scales"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small T: a smoke run")
    parser.add_argument("--only", choices=list(workloads(False)), help="run one workload")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    args = parser.parse_args()
    specs = workloads(args.quick, args.seed)
    print(machine_info())
    for pkg, (module, _) in PEER_AGENTS.items():
        if module is None:
            print(f"note: {pkg} is not installed (or failed to import): its rows are skipped")
    print()
    results = []
    for name in [args.only] if args.only else list(specs):
        title, build_env, methods = specs[name]
        env = build_env()
        for method in methods:
            t0 = time.perf_counter()
            results.append(run_method(title, method, env, env.u.shape[0]))
            print(f"  {title}: {method.label} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        del env
        gc.collect()
    mark_best_noise_scale(results)
    print(results_table(results))
    print()
    print(ratio_table(results))


if __name__ == "__main__":
    main()
