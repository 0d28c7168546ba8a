"""Screen: learn which crosses the factored model keeps, instead of declaring them.

Runs ``experiments/oracle_gap/run.py`` (same arguments) with ``FactoredValuePolicy``'s prior
precisions changed in this process only, one of three ways (``--mode``):

- ``pair``: automatic relevance determination per weight. At each refresh, for every
  factor, each weight's prior precision is set to its single-coordinate evidence optimum
  given the others (Tipping & Faul 2003: with the current posterior's mean ``m`` and
  variance ``v`` of the weight, its data-only precision ``s = 1/v − α`` and score
  ``q = m/v``; ``α = s²/(q² − s)`` if ``q² > s``, else pruned), clipped to between the
  configured precision (``--floor`` times it) and ``PIN`` times it.
- ``block``: one precision per (arm feature, context block) by MacKay's update
  ``α = γ / Σ m²`` (``γ = Σ (1 − α v)``), blocks = the bundled world's context one-hots.
- ``inter``: every pair but the constant context column at ``--inter`` times its
  configured precision (main effects free, interactions held), nothing learned.

    PYTHONPATH=. python experiments/adopt_crosses/learned_crosses.py --mode pair -- \
        --config experiments/static_world/bundled.yaml --world-seeds 7 11 --seeds 1 2 3 \
        --strategies value_ts_protected --out learned_pair.jsonl

A screen, not the library: the kept weights were read off the posterior the decisions use
(the cached mean and covariance, one refresh old for the hybrid click).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import numpy as np

from allocator.policies.factored import PIN, FactoredValuePolicy

FACTORS = ("", "order_", "value_")
#: the bundled world's context one-hot blocks: bias, tier, age band, intent, referral
BLOCKS = ([0], [1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11, 12, 13], [14])
RUN = Path(__file__).resolve().parents[1] / "oracle_gap" / "run.py"


def patch(mode: str, floor: float, inter: float) -> None:
    """Replace the family's prior diagonal and refresh in this process."""
    configured = FactoredValuePolicy.prior_diag
    refresh = FactoredValuePolicy._refresh

    def multipliers(self: FactoredValuePolicy) -> dict[str, np.ndarray]:
        if not hasattr(self, "_learned"):
            dim = self.config.model_arm_features * self.config.n_context_features
            self._learned = {p: np.ones(dim) for p in FACTORS}
        return self._learned  # type: ignore[no-any-return]

    def prior_diag(self: FactoredValuePolicy, prefix: str = "") -> np.ndarray:
        base = configured(self, prefix)
        if mode == "inter":
            rows = base.reshape(self.config.model_arm_features, -1).copy()
            rows[:, 1:] *= inter
            return rows.ravel()
        return base * multipliers(self)[prefix]

    def moments(self: FactoredValuePolicy, prefix: str) -> tuple[np.ndarray, ...]:
        s = self.state
        base = configured(self, prefix)
        alpha = base * multipliers(self)[prefix]
        scale = float(s.noise_var[0]) if prefix == "value_" else 1.0  # value: units of σ²
        mean = getattr(s, f"{prefix}mu") / np.sqrt(scale)
        var = np.diag(getattr(s, f"{prefix}a_inv")).copy()
        return base, alpha, mean, var

    def pair_step(self: FactoredValuePolicy, prefix: str) -> None:
        base, alpha, m, v = moments(self, prefix)
        s_, q = 1.0 / v - alpha, m / v
        with np.errstate(divide="ignore", invalid="ignore"):
            best = np.where(q * q > s_, s_ * s_ / (q * q - s_), np.inf)
        multipliers(self)[prefix] = np.clip(best / base, floor, PIN)

    def block_step(self: FactoredValuePolicy, prefix: str) -> None:
        base, alpha, m, v = moments(self, prefix)
        da = self.config.model_arm_features
        gamma = (1.0 - alpha * v).reshape(da, -1)
        weighted = (base * m * m).reshape(da, -1)
        out = multipliers(self)[prefix].reshape(da, -1).copy()
        for cols in BLOCKS:
            num = np.maximum(gamma[:, cols].sum(axis=1), 0.0)
            den = weighted[:, cols].sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                best = np.where(den > 0.0, num / den, np.inf)
            out[:, cols] = np.clip(best, floor, PIN)[:, None]
        multipliers(self)[prefix] = out.ravel()

    def _refresh(self: FactoredValuePolicy) -> None:
        if mode != "inter" and self.state.model_dirty[0] and self.state.clock[0] > 0:
            for prefix in FACTORS:
                (pair_step if mode == "pair" else block_step)(self, prefix)
        refresh(self)

    FactoredValuePolicy.prior_diag = prior_diag  # type: ignore[method-assign]
    FactoredValuePolicy._refresh = _refresh  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--mode", choices=("pair", "block", "inter"), required=True)
    p.add_argument("--floor", type=float, default=1.0, help="lowest precision multiplier")
    p.add_argument("--inter", type=float, default=10.0, help="inter: the interactions' factor")
    p.add_argument("run_args", nargs=argparse.REMAINDER, help="-- then run.py's arguments")
    args = p.parse_args()
    patch(args.mode, args.floor, args.inter)
    rest = args.run_args[1:] if args.run_args[:1] == ["--"] else args.run_args
    sys.argv = [str(RUN), *rest]
    runpy.run_path(str(RUN), run_name="__main__")


if __name__ == "__main__":
    main()
