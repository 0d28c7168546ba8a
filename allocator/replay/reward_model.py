"""Reward models q̂(x, a) for the model-based estimators (DM, DR, SNDR, Switch-DR).

Both families fit one model per arm over ``[1, x]``, shrunk toward a pooled fit of all
arms: arms that were never logged get the pooled model, rarely logged ones mostly it.

- :class:`RidgeRewardModel`: least squares; without contexts each arm's mean reward shrunk
  toward the overall mean, ``(Σ r_a + l2·r̄) / (n_a + l2)``. A linear model leaves the
  reward's range (negative click rates), so predictions are clipped to ``reward_range``.
- :class:`LogisticRewardModel`: for binary (or [0, 1]-scaled) rewards; predictions stay
  inside the range by construction.

DR is unbiased for any fixed model, but a model fitted on the very rows it corrects is not
fixed: on small logs it has partly memorised their rewards. With ``n_folds > 1`` the model
is cross-fitted: each logged round's values come from a model fitted without its fold.
Every fit is deterministic given its inputs and the ``rng`` that draws the folds.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from allocator.errors import InvalidInputError
from allocator.inputs import check_arm_indices, first_rows
from allocator.kernels import ope as kope
from allocator.replay.dataset import F64, I64, LoggedData, check_candidates

#: Newton iterations and step tolerance of the logistic fit
LOGISTIC_MAX_ITER = 50
LOGISTIC_TOL = 1e-9


def _features(contexts: Any, n: int, d: int | None, name: str) -> F64:
    """Contexts as a C-contiguous finite (n, d) float64 array; (n, 0) for context-free."""
    if d is None:
        if contexts is not None:
            raise InvalidInputError(f"{name} given, but the reward model was fitted without")
        return np.empty((n, 0), dtype=np.float64)
    if contexts is None:
        raise InvalidInputError(f"{name} is required: the reward model uses {d} features")
    x = np.ascontiguousarray(contexts, dtype=np.float64)
    if x.shape != (n, d):
        raise InvalidInputError(f"{name} has shape {x.shape}, expected ({n}, {d})")
    if x.size and np.isfinite(x.min()) and np.isfinite(x.max()):
        return x  # finite: checked without a per-row temporary
    bad = np.asarray(~np.isfinite(x).all(axis=1))
    if bad.any():
        raise InvalidInputError(f"{name} must be finite; first bad rows {first_rows(bad)}")
    return x


def _arm_indices(actions: Any, n_arms: int) -> I64:
    """The logged arms as int64 indices in ``[0, n_arms)`` (checked without a per-row
    temporary when they already are an int64 array)."""
    a = actions
    if (
        isinstance(a, np.ndarray) and a.dtype == np.int64 and a.ndim == 1
        and a.flags.c_contiguous and a.size and a.min() >= 0 and a.max() < n_arms
    ):  # fmt: skip
        return a
    return check_arm_indices(actions, n_arms, "actions")


def check_reward_range(value: Any) -> tuple[float, float] | None:
    """``(low, high)`` with finite ``low < high``, or None."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"reward_range = {value!r}: expected (low, high), two finite numbers"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidInputError(f"reward_range = {value!r}: expected finite low < high")
    return low, high


def is_binary(rewards: F64) -> bool:
    """Whether every reward is 0 or 1 (read in pieces: no per-row temporary)."""
    step = 1 << 16
    return all(
        bool(np.all((part == 0.0) | (part == 1.0)))
        for part in (rewards[lo : lo + step] for lo in range(0, rewards.shape[0], step))
    )


class RewardModel:
    """Shared fitting scaffold: validation, folds, the (F+1)-model stack and predictions.

    ``l2`` is the penalty (in units of rows: an arm with ``n_a`` rows weighs its own data
    ``n_a : l2`` against the pooled model). ``n_folds > 1`` cross-fits, see the module
    docstring. ``reward_range`` bounds every prediction. :meth:`fit` returns the model.
    """

    name: ClassVar[str] = "base"

    def __init__(self, l2: float = 1.0, n_folds: int = 1, reward_range: Any = None) -> None:
        if not isinstance(l2, (int, float)) or not math.isfinite(l2) or l2 <= 0:
            raise InvalidInputError(f"l2 = {l2!r}: expected a finite number > 0")
        if not isinstance(n_folds, int) or isinstance(n_folds, bool) or n_folds < 1:
            raise InvalidInputError(f"n_folds = {n_folds!r}: expected an integer >= 1")
        self.l2 = float(l2)
        self.n_folds = n_folds
        self.reward_range = check_reward_range(reward_range)
        self.n_arms = 0
        self.n_features: int | None = None
        self.coef: F64 | None = None  # (K, d+1) fitted on every row, intercept first
        self._fold_coef: F64 | None = None  # (F, K, d+1), model f fitted without fold f
        self._folds: I64 | None = None
        self._fitted_on: LoggedData | None = None

    @property
    def is_fitted(self) -> bool:
        return self.coef is not None

    def unfitted(self) -> RewardModel:
        """A fresh model with the same hyper-parameters."""
        return type(self)(self.l2, self.n_folds, self.reward_range)

    def fit(self, data: LoggedData, rng: np.random.Generator | None = None) -> RewardModel:
        """Fit on every logged round (and, cross-fitting, on every fold's complement).

        Folds are a random balanced split drawn from ``rng``, or rows ``i % n_folds`` when
        ``rng`` is None (deterministic and balanced over time).
        """
        n, k = data.n_rounds, data.n_arms
        if n == 0 or k == 0:
            raise InvalidInputError(f"cannot fit on {n} rounds over {k} arms")
        if self.n_folds > n:
            raise InvalidInputError(f"n_folds = {self.n_folds} exceeds the {n} logged rounds")
        d = None if data.contexts is None else int(data.contexts.shape[1])
        x = _features(data.contexts, n, d, "contexts")
        arms = _arm_indices(data.actions, k)
        rewards = np.ascontiguousarray(data.rewards, dtype=np.float64)
        if not (np.isfinite(rewards.min()) and np.isfinite(rewards.max())):
            raise InvalidInputError(
                f"rewards must be finite; first bad rows {first_rows(~np.isfinite(rewards))}"
            )
        self._check_rewards(rewards)
        # one fold: no per-row fold array (the kernels read an empty one as all in fold 0)
        folds = np.zeros(0, dtype=np.int64)
        if self.n_folds > 1:
            folds = np.arange(n, dtype=np.int64) % self.n_folds
            if rng is not None:
                folds = np.ascontiguousarray(rng.permutation(folds))
        coef = self._fit_stack(x, arms, rewards, folds, k)
        self.n_arms, self.n_features = k, d
        self.coef = coef[0]
        self._fold_coef = coef[1:] if self.n_folds > 1 else None
        self._folds = folds
        self._fitted_on = data
        return self

    def predict(self, contexts: Any, arms: Any) -> F64:
        """q̂ of ``arms`` (m,) in ``contexts`` (m, d), or None when fitted without contexts."""
        coef = self._coef()
        a = check_arm_indices(arms, self.n_arms, "arms")
        m = a.shape[0]
        x = _features(contexts, m, self.n_features, "contexts")
        out = np.empty(m)
        ptr = np.arange(m + 1, dtype=np.int64)
        kope.predict_csr(x, ptr, a, np.zeros(m, dtype=np.int64), coef[None], out)
        return self._output(out)

    def predict_candidates(self, data: LoggedData, lo: int = 0, hi: int | None = None) -> F64:
        """q̂ of every candidate of rounds ``lo:hi`` (default: every round), aligned with
        those rounds' ``data.candidates()[1]``.

        When ``data`` is the very :class:`LoggedData` this model was fitted on and
        ``n_folds > 1``, each round's values come from the model fitted without its fold.
        A log's rounds asked in pieces give the values of the whole, piece by piece.
        """
        coef = self._coef()
        if data.n_arms != self.n_arms:
            raise InvalidInputError(
                f"data has {data.n_arms} arms, the reward model was fitted on {self.n_arms}"
            )
        hi = data.n_rounds if hi is None else hi
        if not 0 <= lo <= hi <= data.n_rounds:
            raise InvalidInputError(f"rounds {lo}:{hi} outside the log's 0:{data.n_rounds}")
        part = data if (lo, hi) == (0, data.n_rounds) else data.take(lo, hi)
        ptr, idx = check_candidates(part)
        n = part.n_rounds
        x = _features(part.contexts, n, self.n_features, "contexts")
        if data is self._fitted_on and self._fold_coef is not None:
            assert self._folds is not None
            stack, model_of_row = self._fold_coef, self._folds[lo:hi]
        else:
            stack, model_of_row = coef[None], np.zeros(n, dtype=np.int64)
        out = np.empty(idx.shape[0])
        if self.n_features is None:  # one value per model and arm: mapped K times, not nnz
            values = self._output(np.array(stack[:, :, :1], order="C"))  # a copy
            kope.predict_csr(x, ptr, idx, model_of_row, values, out)
            return out
        kope.predict_csr(x, ptr, idx, model_of_row, np.ascontiguousarray(stack), out)
        return self._output(out)

    def _coef(self) -> F64:
        if self.coef is None:
            raise InvalidInputError("the reward model is not fitted: call fit(data) first")
        return self.coef

    def _check_rewards(self, rewards: F64) -> None:
        if self.reward_range is None:
            return
        low, high = self.reward_range
        if rewards.min() >= low and rewards.max() <= high:
            return
        bad = (rewards < low) | (rewards > high)
        if bad.any():
            rows = first_rows(bad)
            raise InvalidInputError(
                f"rewards must be in reward_range [{low}, {high}]; first bad rows {rows}: "
                f"{rewards[rows].tolist()}"
            )

    def _fit_stack(self, x: F64, arms: I64, rewards: F64, folds: I64, k: int) -> F64:
        """(F+1 or 1, K, p) coefficients: model 0 on every row, model f+1 without fold f."""
        raise NotImplementedError

    def _output(self, linear: F64) -> F64:
        """The model's values from the linear predictions (a fresh array, overwritten)."""
        raise NotImplementedError


class RidgeRewardModel(RewardModel):
    """Per-arm ridge regression with an intercept, shrunk toward a pooled fit; predictions
    clipped to ``reward_range`` when one is declared."""

    name: ClassVar[str] = "ridge"

    def _fit_stack(self, x: F64, arms: I64, rewards: F64, folds: I64, k: int) -> F64:
        p = x.shape[1] + 1
        xtx = np.empty((self.n_folds, k, p, p))
        xty = np.empty((self.n_folds, k, p))
        kope.ridge_moments(x, arms, rewards, folds, xtx, xty)
        total_xtx, total_xty = xtx.sum(axis=0), xty.sum(axis=0)
        if self.n_folds > 1:  # model 0 on every row, model f + 1 without fold f
            xtx = np.concatenate([total_xtx[None], total_xtx[None] - xtx])
            xty = np.concatenate([total_xty[None], total_xty[None] - xty])
        coef = np.empty(xty.shape)
        kope.ridge_coefficients(xtx, xty, self.l2, coef, np.empty((coef.shape[0], p)))
        return coef

    def _output(self, linear: F64) -> F64:
        if self.reward_range is None:
            return linear
        return np.clip(linear, *self.reward_range, out=linear)


class LogisticRewardModel(RewardModel):
    """Per-arm L2-penalised logistic regression shrunk toward a pooled fit, for rewards in
    ``reward_range`` (default [0, 1]; binary rewards are the intended case). Rewards are
    scaled to [0, 1] for the fit and predictions scaled back: they never leave the range."""

    name: ClassVar[str] = "logistic"

    def __init__(self, l2: float = 1.0, n_folds: int = 1, reward_range: Any = (0.0, 1.0)) -> None:
        super().__init__(l2, n_folds, (0.0, 1.0) if reward_range is None else reward_range)

    def _fit_stack(self, x: F64, arms: I64, rewards: F64, folds: I64, k: int) -> F64:
        assert self.reward_range is not None
        low, high = self.reward_range
        y = rewards if (low, high) == (0.0, 1.0) else (rewards - low) / (high - low)
        p = x.shape[1] + 1
        n_models = 1 if self.n_folds == 1 else self.n_folds + 1
        coef = np.empty((n_models, k, p))
        if p == 1:  # no context: every row of an arm is alike, its counts are the data
            cell = arms if self.n_folds == 1 else folds * k + arms
            rows = np.bincount(cell, minlength=self.n_folds * k).reshape(-1, k)
            ones = np.bincount(cell, y, self.n_folds * k).reshape(-1, k)
            for m in range(n_models):
                n_m = rows.sum(axis=0) - (rows[m - 1] if m else 0)
                y_m = ones.sum(axis=0) - (ones[m - 1] if m else 0.0)
                kope.logistic_fit_counts(
                    np.ascontiguousarray(n_m, dtype=np.float64), np.ascontiguousarray(y_m),
                    self.l2, LOGISTIC_MAX_ITER, LOGISTIC_TOL, coef[m, :, 0],
                )  # fmt: skip
            return coef
        for m in range(n_models):
            include = np.ones(0, dtype=np.bool_) if m == 0 else folds != m - 1  # empty: all
            kope.logistic_fit(
                x, arms, y, include, self.l2, LOGISTIC_MAX_ITER, LOGISTIC_TOL, coef[m],
                np.empty(p),
            )  # fmt: skip
        return coef

    def _output(self, linear: F64) -> F64:
        assert self.reward_range is not None
        low, high = self.reward_range
        # low + (high − low) / (1 + exp(−linear)), in place: one value per candidate
        out = np.exp(np.negative(linear, out=linear), out=linear)
        out += 1.0
        np.divide(high - low, out, out=out)
        out += low
        return out


REWARD_MODELS: dict[str, type[RewardModel]] = {
    cls.name: cls for cls in (RidgeRewardModel, LogisticRewardModel)
}


def make_reward_model(
    spec: RewardModel | str, rewards: F64, reward_range: tuple[float, float] | None,
    n_folds: int = 1, l2: float = 1.0,
) -> RewardModel:  # fmt: skip
    """A model from a name (``auto``: logistic for binary rewards, else ridge clipped to the
    range), or an instance as given."""
    if isinstance(spec, RewardModel):
        return spec
    if spec == "auto":
        spec = "logistic" if is_binary(rewards) else "ridge"
    if spec not in REWARD_MODELS:
        raise InvalidInputError(
            f"reward_model must be None, one of {['auto', *sorted(REWARD_MODELS)]} or a "
            f"RewardModel, got {spec!r}"
        )
    return REWARD_MODELS[spec](l2, n_folds, reward_range)
