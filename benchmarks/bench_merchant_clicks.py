"""What the per-merchant click offset costs: decide p50, learning per impression (refreshes
included) and memory per arm of ``factored_value`` with the shared and the hybrid click,
against ``shared_linear`` (the recommended policy's model), at the scenario's sizes.

Not a test: a hand-run measurement (benchmarks/README.md, "Merchant click offsets"). The
three policies run interleaved, round by round, on the same requests and outcomes, so a
loaded machine slows them alike; the table gives medians and ratios to ``shared_linear``.

    python benchmarks/bench_merchant_clicks.py [--arms 2000] [--rounds 10] [--objective gmv]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from allocator import ArmRegistry, make_policy
from allocator.config import FactoredValueConfig
from allocator.policies.state import Role

D_ARM, D_CTX, N_CAND, BATCH = 12, 15, 23, 256
HYBRID = {"click_model": "hybrid", "offset_sd": 0.35}
RECOMMENDED = {
    **HYBRID, "typical_order_value": 150.0, "value_log_sd": 1.0, "value_prior": "balanced",
    "value_prior_precision": 4.0, "factor_prior": "balanced",
}  # fmt: skip
ADOPTED = {
    **RECOMMENDED, "typical_conversion": 0.05, "arm_intercept": True,
    "crosses": {4: [], 5: [], 6: [], 7: [], 8: [], 9: [], 10: [0], 11: [0]},
}  # fmt: skip
CONFIGS: dict[str, dict[str, Any]] = {
    "shared_linear": {"kind": "shared_linear", "noise_scale": 0.02},
    "factored, shared click": {"kind": "factored_value", "exploration_scale": 0.35},
    "factored, hybrid click": {"kind": "factored_value", "exploration_scale": 0.35, **HYBRID},
    # configs/wechat_entry.yaml's value_ts_protected before and after experiments/adopt_crosses
    # (the bench's 12 random arm features stand for the scenario's groups, sells_, rating, price)
    "recommended, Dec 2": {"kind": "factored_value", "exploration_scale": 0.35, **RECOMMENDED},
    "recommended, Dec 3": {"kind": "factored_value", "exploration_scale": 0.1, **ADOPTED},
}


#: the factored family's objective: ``order`` (the library's default: orders) or ``gmv``
#: (the scenario's: the commission on the order value)
OBJECTIVES: dict[str, dict[str, Any]] = {
    "order": {},
    "gmv": {"click": 0.0, "order": 0.0, "gmv": 0.1, "take_rates": {"mini_shop": 0.08}},
}


def build(cfg: dict[str, Any], n_arms: int, feats: np.ndarray, objective: str) -> Any:
    reg = ArmRegistry(capacity=n_arms)
    reg.add([f"m{i}" for i in range(n_arms)], "mini_shop")
    full = {**cfg, "n_context_features": D_CTX, "n_arm_features": D_ARM, "half_life": 200000}
    if cfg["kind"] == "factored_value" and OBJECTIVES[objective]:
        fields = {k: v for k, v in full.items() if k != "kind"}
        factored = FactoredValueConfig(**fields, objective=OBJECTIVES[objective])
        return make_policy(factored, reg, seed=0, arm_features=feats)
    return make_policy(full, reg, seed=0, arm_features=feats)


def learn(pol: Any, arms: np.ndarray, xs: np.ndarray, click: np.ndarray, value: np.ndarray):
    if pol.LEARNS_EVENTS:
        order = click * (value > 0)
        pol.learn_outcomes(arms, click, order, value, None, xs)
    else:
        pol.update_batch(arms, 0.1 * value * 0.05 + 0.01 * click, xs)


def bytes_per_arm(pol: Any) -> float:
    s = pol.state
    return sum(getattr(s, f.name).nbytes for f in s.select(Role.PER_ARM)) / s.capacity


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--decides", type=int, default=300, help="timed decides per round")
    p.add_argument("--objective", choices=sorted(OBJECTIVES), default="order",
                   help="the factored family's objective")  # fmt: skip
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    feats = (rng.random((args.arms, D_ARM)) < 0.35) * 1.0
    feats[:, 0] = 1.0
    pols = {name: build(cfg, args.arms, feats, args.objective) for name, cfg in CONFIGS.items()}
    decide_us: dict[str, list[float]] = {n: [] for n in pols}
    learn_us: dict[str, list[float]] = {n: [] for n in pols}
    for r in range(args.rounds + 1):  # round 0 compiles and warms
        xs = (rng.random((BATCH, D_CTX)) < 0.3) * 1.0
        xs[:, 0] = 1.0
        arms = rng.integers(0, args.arms, BATCH)
        click = (rng.random(BATCH) < 0.05) * 1.0
        value = click * (rng.random(BATCH) < 0.2) * rng.lognormal(4.5, 0.5, BATCH)
        cands = [rng.choice(args.arms, N_CAND, replace=False) for _ in range(args.decides)]
        for name, pol in pols.items():
            t0 = time.perf_counter_ns()
            learn(pol, arms, xs, click, value)
            per = (time.perf_counter_ns() - t0) / BATCH / 1e3
            times = np.empty(args.decides)
            for i, cand in enumerate(cands):
                t1 = time.perf_counter_ns()
                pol.decide(cand, xs[i % BATCH])
                times[i] = (time.perf_counter_ns() - t1) / 1e3
            if r:
                learn_us[name].append(per)
                decide_us[name].extend(times)
    base_d = float(np.median(decide_us["shared_linear"]))
    base_l = float(np.median(learn_us["shared_linear"]))
    base_mem = bytes_per_arm(pols["shared_linear"])
    print(f"{args.arms} arms, d_arm {D_ARM}, d_ctx {D_CTX}, {N_CAND} candidates, "
          f"{args.rounds} rounds interleaved")  # fmt: skip
    print(f"{'policy':<24} {'decide p50 µs':>14} {'ratio':>6} {'learn µs/imp':>13} {'ratio':>6} "
          f"{'bytes/arm':>10} {'ratio':>6}")  # fmt: skip
    for name, pol in pols.items():
        d, lr = float(np.median(decide_us[name])), float(np.median(learn_us[name]))
        m = bytes_per_arm(pol)
        print(f"{name:<24} {d:>14.1f} {d / base_d:>6.2f} {lr:>13.1f} {lr / base_l:>6.2f} "
              f"{m:>10.0f} {m / base_mem:>6.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
