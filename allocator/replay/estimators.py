"""Off-policy estimators of a target policy's value from logged bandit feedback.

Data comes as named arrays of one shape (n,), Open Bandit Pipeline style: ``reward``,
``pscore`` (the logged propensity of the logged action — exact here, by construction of the
allocator), ``action_prob`` (the target policy's probability of the logged action) and, for
the model-based estimators, ``q_logged`` (reward model at the logged action) and
``q_target`` (reward model averaged under the target policy). Estimators are frozen
dataclasses holding hyper-parameters only; every estimate is a weighted mean, so the
bootstrap re-weights rows with Poisson(1) counts instead of materialising resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from allocator.errors import EvaluationRefused, InvalidInputError

#: smallest propensity accepted: below it (subnormals) 1 / pscore overflows to infinity
MIN_PSCORE = float(np.finfo(np.float64).tiny)


class BanditFeedback(NamedTuple):
    """Logged rounds for one target policy (all arrays (n,), float64)."""

    reward: np.ndarray
    pscore: np.ndarray
    action_prob: np.ndarray
    q_logged: np.ndarray | None = None
    q_target: np.ndarray | None = None


def check_feedback(data: BanditFeedback, needs_model: bool) -> BanditFeedback:
    """Validate shapes and values; errors name the field and the first bad rows."""
    n = np.shape(data.reward)[0] if np.ndim(data.reward) == 1 else -1
    if n <= 0:
        raise InvalidInputError(
            f"reward must be a non-empty 1-d array, got shape {np.shape(data.reward)}"
        )
    fields: dict[str, np.ndarray | None] = {}
    for name in BanditFeedback._fields:
        value = getattr(data, name)
        if value is None:
            if needs_model and name in ("q_logged", "q_target"):
                raise InvalidInputError(f"{name} is required by this estimator (reward model)")
            fields[name] = None
            continue
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != (n,):
            raise InvalidInputError(f"{name} has shape {arr.shape}, expected ({n},)")
        bad = ~np.isfinite(arr)
        if name == "pscore":
            bad |= (arr < MIN_PSCORE) | (arr > 1.0)
        if name == "action_prob":
            bad |= (arr < 0.0) | (arr > 1.0)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            what = (
                "in (0, 1]"
                if name == "pscore"
                else "in [0, 1]"
                if name == "action_prob"
                else "finite"
            )
            tail = f" (at least {MIN_PSCORE:.4g}: 1 / pscore must be finite)"
            raise InvalidInputError(
                f"{name} must be {what}; first bad rows {rows}: {arr[rows].tolist()}"
                + (tail if name == "pscore" else "")
            )
        fields[name] = arr
    return BanditFeedback(**fields)  # type: ignore[arg-type]  # required ones are set


class Estimate(NamedTuple):
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Estimator:
    """Base: ``terms`` gives per-row numerators and weights; value = Σ c·num / Σ c·den."""

    clip: float | None = None
    needs_model: ClassVar[bool] = False
    name: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        # clip = 0 zeroes every weight: IPS would read 0 and the normalised ones 0 / 0.
        if self.clip is not None and not (0.0 < self.clip < float("inf")):
            raise InvalidInputError(f"clip = {self.clip!r}: expected None or a finite number > 0")

    def weights(self, data: BanditFeedback) -> np.ndarray:
        w = data.action_prob / data.pscore
        return w if self.clip is None else np.minimum(w, self.clip)

    def terms(self, data: BanditFeedback) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(numerator, denominator, additive term averaged separately) per row."""
        raise NotImplementedError

    def estimate(self, data: BanditFeedback) -> float:
        data = check_feedback(data, self.needs_model)
        return self._combine(*self.terms(data), None)

    def estimate_interval(
        self, data: BanditFeedback, rng: np.random.Generator, n_boot: int = 200,
        alpha: float = 0.05,
    ) -> Estimate:  # fmt: skip
        """Point estimate and a percentile Poisson-bootstrap interval."""
        return estimate_intervals([self], data, rng, n_boot, alpha)[self.name]

    @staticmethod
    def _combine(
        num: np.ndarray, den: np.ndarray, add: np.ndarray | None, counts: np.ndarray | None
    ) -> float:
        c = np.ones(num.shape[0]) if counts is None else counts.astype(np.float64)
        # Elementwise sums, not BLAS dot: a threaded BLAS on a busy machine made each
        # bootstrap replicate ~20x slower than this.
        total_den = float(np.sum(c * den))
        value = float(np.sum(c * num)) / total_den if total_den > 0 else float("nan")
        if add is not None:
            # A bootstrap replicate whose Poisson counts are all zero (likely on a few rows)
            # has no rows to average: NaN, dropped with the other undefined replicates.
            n_rows = float(c.sum())
            value = value + float(np.sum(c * add)) / n_rows if n_rows > 0 else float("nan")
        return value


@dataclass(frozen=True)
class IPS(Estimator):
    """Inverse propensity scoring: mean of w·r."""

    name: ClassVar[str] = "ips"

    def terms(self, data: BanditFeedback) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self.weights(data) * data.reward, np.ones_like(data.reward), None


@dataclass(frozen=True)
class SNIPS(Estimator):
    """Self-normalised IPS: Σ w·r / Σ w."""

    name: ClassVar[str] = "snips"

    def terms(self, data: BanditFeedback) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        w = self.weights(data)
        return w * data.reward, w, None


@dataclass(frozen=True)
class DM(Estimator):
    """Direct method: mean of the reward model under the target policy."""

    needs_model: ClassVar[bool] = True
    name: ClassVar[str] = "dm"

    def terms(self, data: BanditFeedback) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        assert data.q_target is not None
        return data.q_target, np.ones_like(data.reward), None


@dataclass(frozen=True)
class DR(Estimator):
    """Doubly robust: DM plus the importance-weighted residual of the reward model."""

    needs_model: ClassVar[bool] = True
    name: ClassVar[str] = "dr"

    def terms(self, data: BanditFeedback) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        assert data.q_target is not None and data.q_logged is not None
        w = self.weights(data)
        return data.q_target + w * (data.reward - data.q_logged), np.ones_like(w), None


@dataclass(frozen=True)
class SNDR(Estimator):
    """Self-normalised DR: DM plus Σ w·(r − q̂) / Σ w."""

    needs_model: ClassVar[bool] = True
    name: ClassVar[str] = "sndr"

    def terms(self, data: BanditFeedback) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        assert data.q_target is not None and data.q_logged is not None
        w = self.weights(data)
        return w * (data.reward - data.q_logged), w, data.q_target


@dataclass(frozen=True)
class SwitchDR(Estimator):
    """Switch-DR (Wang et al., 2017): DR where the weight is at most ``tau``, DM beyond.

    Rows whose importance weight exceeds ``tau`` keep only the model term, trading a bias
    (where the model is wrong) for the variance of huge weights; ``tau = inf`` is DR.
    """

    tau: float = 10.0
    needs_model: ClassVar[bool] = True
    name: ClassVar[str] = "switch_dr"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tau > 0.0:
            raise InvalidInputError(f"tau = {self.tau!r}: expected a number > 0")

    def terms(self, data: BanditFeedback) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        assert data.q_target is not None and data.q_logged is not None
        w = self.weights(data)
        residual = np.where(w <= self.tau, w * (data.reward - data.q_logged), 0.0)
        return data.q_target + residual, np.ones_like(w), None


def estimate_intervals(
    estimators: Sequence[Estimator], data: BanditFeedback | Sequence[BanditFeedback],
    rng: np.random.Generator, n_boot: int = 200, alpha: float = 0.05,
) -> dict[str, Estimate]:  # fmt: skip
    """Every estimator's estimate and percentile interval over the SAME bootstrap replicates.

    One Poisson(1) count vector per replicate serves all estimators: drawing the counts is
    most of a bootstrap's cost, and shared replicates make the intervals of different
    estimators comparable (paired) rather than independently noisy. ``data`` may be one
    feedback per cross-fitting split of the reward model: the estimate is then the mean
    over splits and replicate ``b`` uses split ``b mod S``, so the interval also carries
    the split-to-split spread.
    """
    if n_boot < 10 or not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"n_boot = {n_boot} (>= 10), alpha = {alpha} (in (0, 1))")
    splits = [data] if isinstance(data, BanditFeedback) else list(data)
    terms = [[e.terms(check_feedback(d, e.needs_model)) for d in splits] for e in estimators]
    n = splits[0].reward.shape[0]
    boots = np.empty((len(estimators), n_boot))
    for b in range(n_boot):
        counts = np.asarray(rng.poisson(1.0, n))
        for j, t in enumerate(terms):
            boots[j, b] = Estimator._combine(*t[b % len(t)], counts)
    out = {}
    for j, (e, t) in enumerate(zip(estimators, terms, strict=True)):
        finite = boots[j][np.isfinite(boots[j])]
        value = float(np.mean([Estimator._combine(*ts, None) for ts in t]))
        if not np.isfinite(value) or finite.size == 0:
            # Self-normalised estimators divide by the summed weights: when the target gives
            # no logged action any probability there is nothing to normalise by.
            raise EvaluationRefused(
                f"{e.name}: the target policy gives probability 0 to every logged action "
                f"({n} rounds), so no logged reward informs its value; evaluate on a log "
                "whose actions the target can take (or choose another estimator)"
            )
        low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
        # A percentile interval of a skewed statistic can miss its own point estimate.
        out[e.name] = Estimate(value, min(float(low), value), max(float(high), value))
    return out


class Diagnostics(NamedTuple):
    effective_sample_size: float
    max_weight: float
    zero_weight_share: float


def diagnostics(data: BanditFeedback, clip: float | None = None) -> Diagnostics:
    """ESS = (Σw)²/Σw², the largest weight, and the share of rows the target never takes."""
    data = check_feedback(data, False)
    w = IPS(clip=clip).weights(data)
    w_max = float(w.max())
    # ESS is scale-free: weights relative to the largest neither underflow when squared
    # (tiny clipped weights) nor overflow (propensities near 0).
    u = w / w_max if w_max > 0 else w
    s2 = float(u @ u)
    ess = float(u.sum()) ** 2 / s2 if s2 > 0 else 0.0
    return Diagnostics(ess, w_max, float(np.mean(w == 0.0)))
