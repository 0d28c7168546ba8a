"""What a learner that knows the world's structure could earn: the learnable ceiling (issue 14).

The oracle knows every merchant's hidden quality and order-value level. No policy can: a
merchant's own traffic is the only way to learn them. This script measures how much of the
oracle a Bayesian learner gets when it is given everything *except* those two hidden values:
the exact click and order probabilities and order values of every partner, and of every
merchant up to its quality ``q`` (a log-odds shift of both its click and its order
probability) and its value level ``v`` (a factor on its order value). It starts each
merchant from the exact posterior given what a policy sees (its rating is ``q`` plus noise;
its price level is ``log v`` plus noise), and updates it exactly from the merchant's own
clicks, orders and GMV (``q`` on a grid, ``log v`` conjugate normal). Three learners:

- ``prior``: never updates (what the features alone are worth), greedy on the expected value;
- ``greedy``: updates, greedy on the posterior expected value;
- ``ts``: updates, Thompson sampling (one draw of each merchant's ``q`` and ``v`` per
  feedback batch; ``--ts-scales`` shrinks the draws toward the posterior mean, as the
  policies' ``exploration_scale`` does).

It decides per feedback batch of the scenario (256 impressions, outcomes learned after the
batch), on the same impressions and outcome draws as ``allocator run`` / ``oracle_gap/run.py``
cells of the same world and traffic seed, and ignores the contracts (which cost the
oracle 0.3 points, see ``oracle_gap``). Not a bound in the strict sense (a better exploration
rule could earn more than Thompson sampling), but what a perfectly specified model learns.

    PYTHONPATH=. python experiments/learnable_ceiling/run.py --world-seeds 7 11 --seeds 1 2 3 \
        --ts-scales 1 0.35 --out rows.jsonl

``--static-time`` takes the Mini Shop's time course from the learner (it uses its mean;
``--static-time improvement`` or ``newcomer`` only that part of it);
``--ignore orders`` / ``gmv`` are ablations of what the posterior learns from. The rows and
their reading: README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from allocator.registry import MINI_SHOP
from allocator.scenario import kernels as k
from allocator.scenario.build import scenario_arms
from allocator.scenario.config import ScenarioConfig
from allocator.scenario.simulate import value_rates
from allocator.scenario.world import World
from experiments.oracle_gap.run import EARLY_DAYS, LATE_DAYS, load

ROOT = Path(__file__).resolve().parents[2]
LEARNERS = ("prior", "greedy", "ts")
GRID = 201  # grid points for a merchant's quality, over ±6 prior sd


def _log_normal_cdf(x: np.ndarray) -> np.ndarray:
    return np.log(0.5 * np.array([math.erfc(-float(v) / math.sqrt(2.0)) for v in x]) + 1e-300)


class MerchantPosterior:
    """Each merchant's posterior over its quality (log weights on a grid) and log value level
    (normal: mean and precision), starting from its rating and price level."""

    def __init__(self, world: World, ignore: tuple[str, ...] = ()) -> None:
        self.ignore = ignore  # "orders": q learns from clicks only; "gmv": v never moves
        ms = world.config.mini_shop
        n_p = world.n_partners
        tau = max(ms.quality_sd, 1e-6)
        self.grid = tau * np.linspace(-6.0, 6.0, GRID)
        rating = world.arm_features[n_p:, -2] + 4.0  # the world's rating: 4 + (q + noise) / 2
        price = world.arm_features[n_p:, -1]  # log v + noise
        noise = max(ms.rating_noise, 1e-6)
        seen = (rating - 4.0) / 0.5  # q + rating noise, unless clipped to [1, 5]
        g = self.grid[None, :]
        log_lik = -0.5 * ((seen[:, None] - g) / noise) ** 2
        top, bottom = rating >= 5.0, rating <= 1.0
        if top.any():
            log_lik[top] = _log_normal_cdf((g[0] - 2.0) / noise)[None, :]
        if bottom.any():
            log_lik[bottom] = _log_normal_cdf((-6.0 - g[0]) / noise)[None, :]
        self.log_w = log_lik - 0.5 * (g / tau) ** 2
        self.log_w -= self.log_w.max(axis=1, keepdims=True)
        sv, sp = max(ms.value_sd, 1e-6), max(ms.price_noise, 1e-6)
        self.prec = np.full(price.shape, 1.0 / sv**2 + 1.0 / sp**2)
        mu0 = -0.5 * sv**2  # the world's prior mean of log v (E[v] = 1)
        self.mean = (mu0 / sv**2 + price / sp**2) / self.prec
        self.gmv_sigma = world.config.gmv_sigma

    def weights(self, j: np.ndarray) -> np.ndarray:
        w = np.exp(self.log_w[j] - self.log_w[j].max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        return w

    def sample_q(self, j: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cdf = np.cumsum(self.weights(j), axis=1)
        u = rng.random(j.shape[0])
        at = np.minimum((cdf < u[:, None]).sum(axis=1), GRID - 1)
        step = self.grid[1] - self.grid[0]
        return self.grid[at] + (rng.random(j.shape[0]) - 0.5) * step

    def learn(
        self, j: np.ndarray, a: np.ndarray, b: np.ndarray, log_ov: np.ndarray,
        click: np.ndarray, order: np.ndarray, gmv: np.ndarray,
    ) -> None:  # fmt: skip
        """Fold the outcomes of merchants ``j`` served at structural click/order logits
        ``a``/``b`` and structural log order value ``log_ov`` (all without ``q``, ``v``)."""
        g = self.grid[None, :]
        lc = -np.logaddexp(0.0, -(a[:, None] + g))  # log sigmoid
        lnc = -np.logaddexp(0.0, a[:, None] + g)
        lo = -np.logaddexp(0.0, -(b[:, None] + g))
        lno = -np.logaddexp(0.0, b[:, None] + g)
        c, o = click[:, None], order[:, None]
        if "orders" in self.ignore:
            ll = np.where(c > 0, lc, lnc)
        else:
            ll = np.where(c > 0, lc + np.where(o > 0, lo, lno), lnc)
        np.add.at(self.log_w, j, ll)
        self.log_w[j] -= self.log_w[j].max(axis=1, keepdims=True)
        got = order > 0
        if got.any() and "gmv" not in self.ignore:
            s2 = self.gmv_sigma**2
            y = np.log(gmv[got]) - log_ov[got] + 0.5 * s2  # log v + N(0, s2)
            prec0 = np.bincount(j[got], minlength=self.prec.shape[0]) / s2
            num = np.bincount(j[got], weights=y, minlength=self.prec.shape[0]) / s2
            new_prec = self.prec + prec0
            self.mean = (self.mean * self.prec + num) / new_prec
            self.prec = new_prec


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


TIME_PARTS = ("all", "improvement", "newcomer")


def time_lift(
    world: World,
    timestamps: np.ndarray,
    cand_ptr: np.ndarray,
    is_m: np.ndarray,
    jm: np.ndarray,
    part: str = "all",
) -> np.ndarray:
    """The time-dependent part of each merchant candidate's click and order logits: the
    Mini Shop's improvement at that moment plus the merchant's newcomer shift (``part``:
    both, or one of them)."""
    ms = world.config.mini_shop
    t = np.repeat(timestamps, np.diff(cand_ptr))[is_m]
    days = (t - world.start_s) / 86400.0
    imp = ms.improvement
    lift = imp.start_lift + (imp.end_lift - imp.start_lift) * (
        1.0 - 0.5 ** (days / imp.half_time_days)
    )
    age = t - world.arrival_s[world.n_partners + jm]
    rate = 1.0 / (ms.newcomer_half_time_days * 86400.0)
    newcomer = ms.newcomer_lift / (1.0 + age * rate)
    return {"all": lift + newcomer, "improvement": lift, "newcomer": newcomer}[part]


def _check_time_lift(world: World, chunk: Any, lift: np.ndarray, is_m: np.ndarray) -> None:
    """:func:`time_lift` restates the world kernel's formula; check it against the kernel:
    a merchant's click logit without ``q`` and that part must be constant within every
    (category, tier, age, referral) cell."""
    jm = chunk.cand_idx[is_m] - world.n_partners
    rest = _logit(chunk.p_click[is_m]) - world._quality[jm] - lift
    rows = np.repeat(np.arange(chunk.n), np.diff(chunk.cand_ptr))[is_m]
    key = ((chunk.category[rows] * 3 + chunk.city_tier[rows]) * 4 + chunk.age_band[rows]) * 2
    key += chunk.referral[rows]
    _, cell = np.unique(key, return_inverse=True)
    spread = np.abs(rest - (np.bincount(cell, rest) / np.bincount(cell))[cell]).max(initial=0.0)
    if spread > 1e-9:
        raise RuntimeError(f"time_lift no longer matches the world's kernel (off by {spread})")


def mean_time_lift(world: World, seed: int, n: int, part: str = "all") -> float:
    """The time part's mean over every merchant candidate of the run: what a learner that
    knows everything but the time course would use in its place."""
    total, count = 0.0, 0
    for chunk in world.stream(n, seed=seed):
        is_m = chunk.cand_idx >= world.n_partners
        jm = chunk.cand_idx[is_m] - world.n_partners
        if count == 0:
            _check_time_lift(world, chunk, time_lift(world, chunk.timestamps, chunk.cand_ptr,
                                                     is_m, jm), is_m)  # fmt: skip
        lift = time_lift(world, chunk.timestamps, chunk.cand_ptr, is_m, jm, part)
        total += float(lift.sum())
        count += lift.size
    return total / max(count, 1)


def run_learner(world: World, scenario: ScenarioConfig, seed: int, n: int, learner: str,
                policy_seed: int, ts_scale: float = 1.0,
                static_time: float | None = None, static_part: str = "all",
                ignore: tuple[str, ...] = ()) -> dict[str, float]:  # fmt: skip
    arms = scenario_arms(world)
    group_of_arm = np.array([arms.group_names.index(g) for g in arms.groups], dtype=np.int64)
    rates = value_rates(world, arms.group_names)
    mini = arms.group_names.index(MINI_SHOP)
    n_p = world.n_partners
    quality, level = world._quality, world._value_level  # the hidden truth, to take it out
    post = MerchantPosterior(world, ignore)
    rng = np.random.default_rng(np.random.SeedSequence([policy_seed, 0x1EA2]))
    batch = scenario.experiment.feedback_batch
    early_end = world.start_s + EARLY_DAYS * 86400.0
    late_start = world.end_s - LATE_DAYS * 86400.0
    end_start = world.end_s - scenario.experiment.end_share_window * (world.end_s - world.start_s)
    tot = dict.fromkeys(("value", "oracle", "regret_14d", "regret_late", "end", "end_mini",
                         "end_oracle_mini", "early", "early_mini"), 0.0)  # fmt: skip
    for chunk in world.stream(n, seed=seed):
        grp = group_of_arm[chunk.cand_idx]
        value = chunk.expected_gmv() * rates[grp]
        is_m = chunk.cand_idx >= n_p
        jm = chunk.cand_idx[is_m] - n_p
        a = np.zeros_like(value)
        b = np.zeros_like(value)
        log_ov = np.zeros_like(value)
        a[is_m] = _logit(chunk.p_click[is_m]) - quality[jm]
        b[is_m] = _logit(chunk.p_order[is_m]) - quality[jm]
        if static_time is not None:  # the learner does not know the Mini Shop's time course
            shift = static_time - time_lift(world, chunk.timestamps, chunk.cand_ptr, is_m, jm,
                                            static_part)  # fmt: skip
            a[is_m] += shift
            b[is_m] += shift
        log_ov[is_m] = np.log(chunk.order_value[is_m]) - np.log(level[jm])
        for lo in range(0, chunk.n, batch):
            hi = min(chunk.n, lo + batch)
            flo, fhi = int(chunk.cand_ptr[lo]), int(chunk.cand_ptr[hi])
            ptr = chunk.cand_ptr[lo : hi + 1] - flo
            sl = slice(flo, fhi)
            m = is_m[sl]
            j = chunk.cand_idx[sl][m] - n_p
            est = value[sl].copy()  # partners: known exactly
            am, bm, ovm = a[sl][m], b[sl][m], log_ov[sl][m]
            if j.size:
                if learner == "ts":
                    uniq, inv = np.unique(j, return_inverse=True)
                    qm = post.weights(uniq) @ post.grid
                    q = (qm + ts_scale * (post.sample_q(uniq, rng) - qm))[inv]
                    lv = (post.mean[uniq] + ts_scale * rng.standard_normal(uniq.size)
                          / np.sqrt(post.prec[uniq]))[inv]  # fmt: skip
                    est[m] = _sigmoid(am + q) * _sigmoid(bm + q) * np.exp(ovm + lv)
                else:
                    w = post.weights(j)
                    g = post.grid[None, :]
                    p_co = (w * _sigmoid(am[:, None] + g) * _sigmoid(bm[:, None] + g)).sum(1)
                    ev = np.exp(post.mean[j] + 0.5 / post.prec[j])
                    est[m] = p_co * np.exp(ovm) * ev
                est[m] *= rates[mini]
            pos = np.empty(hi - lo, dtype=np.int64)
            best_est = np.empty(hi - lo)
            k.row_argmax(ptr, est, pos, best_est)
            opos = np.empty(hi - lo, dtype=np.int64)
            best = np.empty(hi - lo)
            k.row_argmax(ptr, value[sl], opos, best)
            flat = ptr[:-1] + pos
            chosen_value = value[sl][flat]
            regret = best - chosen_value
            t = chunk.timestamps[lo:hi]
            served_mini = grp[sl][flat] == mini
            tot["value"] += chosen_value.sum()
            tot["oracle"] += best.sum()
            tot["regret_14d"] += regret[t < early_end].sum()
            tot["regret_late"] += regret[t >= late_start].sum()
            early, end = t < early_end, t >= end_start
            tot["early"] += early.sum()
            tot["early_mini"] += (early & served_mini).sum()
            tot["end"] += end.sum()
            tot["end_mini"] += (end & served_mini).sum()
            tot["end_oracle_mini"] += (end & (grp[sl][ptr[:-1] + opos] == mini)).sum()
            if learner == "prior":
                continue
            click, order, gmv = world.draw_outcomes(chunk.rows(lo, hi), flat, seed)
            got = m[flat]
            if got.any():
                pick = flat[got]
                jj = chunk.cand_idx[sl][pick] - n_p
                post.learn(jj, a[sl][pick], b[sl][pick], log_ov[sl][pick],
                           click[got], order[got], gmv[got])  # fmt: skip
    per = 1000.0 / n
    return {
        "value_per_1k": tot["value"] * per,
        "oracle_per_1k": tot["oracle"] * per,
        "oracle_share": tot["value"] / tot["oracle"],
        "regret_14d": tot["regret_14d"],
        "slope_last30d": tot["regret_late"] / LATE_DAYS,
        "mini_early": tot["early_mini"] / max(tot["early"], 1.0),
        "mini_end": tot["end_mini"] / max(tot["end"], 1.0),
        "oracle_mini_end": tot["end_oracle_mini"] / max(tot["end"], 1.0),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "wechat_entry.yaml")
    p.add_argument("--world-seeds", type=int, nargs="+", default=[7, 11])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--impressions", type=int, default=200_000)
    p.add_argument("--merchants", type=int, default=0, help="override the world's count")
    p.add_argument("--quality-sd", type=float, default=0.0, help="override the world's spread")
    p.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    p.add_argument("--policy-seed", type=int, default=0, help="the Thompson draws' seed")
    p.add_argument(
        "--ts-scales", type=float, nargs="+", default=[1.0],
        help="ts: each draw's distance from the posterior mean times this (1: the posterior)",
    )  # fmt: skip
    p.add_argument(
        "--static-time", nargs="?", const="all", default=None, choices=TIME_PARTS,
        help="the learner replaces the Mini Shop's time course (all, or only its improvement "
        "or its newcomer shift) by its mean over the run",
    )  # fmt: skip
    p.add_argument(
        "--ignore", nargs="*", default=[], choices=("orders", "gmv"),
        help="ablations: q learns from clicks only (orders), v stays at its prior (gmv)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="append the rows as JSON lines")
    args = p.parse_args(argv)
    # rows before the parts existed hold a bool: True for the whole time course
    static_field = {None: False, "all": True}.get(args.static_time, args.static_time)
    for ws in args.world_seeds:
        scenario = load(args.config, ws, list(args.seeds), args.merchants, args.quality_sd)
        world = World(scenario.world, seed=ws)
        for s in args.seeds:
            runs = [(name, scale) for name in args.learners
                    for scale in (args.ts_scales if name == "ts" else [1.0])]  # fmt: skip
            static = (mean_time_lift(world, s, args.impressions, args.static_time)
                      if args.static_time else None)  # fmt: skip
            for learner, scale in runs:
                start = time.perf_counter()
                row = run_learner(world, scenario, s, args.impressions, learner,
                                  args.policy_seed * 1000 + s, scale, static,
                                  args.static_time or "all", tuple(args.ignore))  # fmt: skip
                out = {"world_seed": ws, "seed": s, "impressions": args.impressions,
                       "merchants": world.n_arms - world.n_partners,
                       "quality_sd": world.config.mini_shop.quality_sd, "learner": learner,
                       "ts_scale": scale, "static_time": static_field,
                       "ignore": sorted(args.ignore),
                       "seconds": time.perf_counter() - start, **row}  # fmt: skip
                print(json.dumps(out), flush=True)
                if args.out:
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
