"""The factored value family: click, order given click and order value, each modelled where
it is observed, instead of one Gaussian regression of a heavy-tailed value.

The click model is the shared logistic one (its arrays are :class:`SharedLinearPolicy`'s,
so its posterior, refresh and merge checks are theirs); the order model has the same
arrays under ``order_``; the log order value is a shared Bayesian regression under
``value_`` whose noise variance has a conjugate inverse-gamma posterior. The family learns
from outcomes (:meth:`learn_outcomes`): an impression that was not clicked says nothing
about the order, and one without an order nothing about its value, so those factors are
simply not updated (never zero-filled). Decisions sample the three scores per bank row
and rank by the product (``kernels.factored``).

The log-value weights' prior precision is diagonal (:meth:`FactoredValuePolicy.prior_diag`):
``value_prior_precision`` everywhere (``flat``), or per arm feature scaled by the largest
squared norm of the arms that use it (``balanced``), so that a candidate's prior score
variance does not grow with its number of features. Early on the log value is the least
observed factor (an order is rare), so a wide prior there made the candidates with the most
features (merchants) the most optimistic ones, in the draws and in the posterior mean.
``factor_prior: balanced`` applies the same rule (the same :meth:`prior_diag`) to the click
and order logits' weights at ``prior_precision``; ``typical_conversion`` centres the order
logit on the user's typical ``P(order | click)`` through a fixed offset in its link.

:class:`HybridClickFactoredPolicy` (``click_model: hybrid``) makes the click factor the
hybrid logistic model (:class:`HybridLogisticPolicy`'s arrays, posterior and refresh): a
merchant's clicks, the one event it has enough of, move its own logit offset away from
what its features predict; the order and value factors stay shared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from allocator.config import FactoredValueConfig
from allocator.errors import InvalidInputError
from allocator.inputs import as_float_array
from allocator.kernels import factored as kf
from allocator.policies.hybrid import OFFSET_FIELDS, HybridLogisticPolicy
from allocator.policies.linear import SharedLinearPolicy, require_positive_definite
from allocator.policies.logistic import BinaryRewards
from allocator.policies.state import Field, Role

_STAT = Role.LEARNED | Role.ADDITIVE | Role.DECAYS
#: prior precision multiplier of a weight ``crosses`` leaves out: it stays within a
#: millionth of 0 (of its data's pull) while the matrices keep their shape
PIN = 1e6
#: prior pseudo-observations behind ``value_log_sd`` (inverse-gamma shape ``1 + this/2``)
_PRIOR_ORDERS = 2.0


def _factor_fields(prefix: str) -> tuple[Field, ...]:
    return (
        Field(f"{prefix}g", np.float64, _STAT, ("dim", "dim")),
        Field(f"{prefix}h", np.float64, _STAT, ("dim",)),
        Field(f"{prefix}mu", np.float64, Role.CACHE, ("dim",)),
        Field(f"{prefix}a_inv", np.float64, Role.CACHE, ("dim", "dim")),
    )


class FactoredValuePolicy(BinaryRewards, SharedLinearPolicy):
    """Thompson sampling on ``P(click)·P(order | click)·E[value | order]`` (shared models)."""

    config: FactoredValueConfig  # type: ignore[assignment]
    KERNEL = staticmethod(kf.decide_factored)  # type: ignore[assignment]
    LEARNS_EVENTS = True
    FIELDS = (  # type: ignore[assignment]
        *SharedLinearPolicy.FIELDS,
        *_factor_fields("order_"),
        *_factor_fields("value_"),
        # discounted number of log values and their sum of squares
        Field("value_stats", np.float64, _STAT, (2,), values="count"),
        Field("noise_var", np.float64, Role.CACHE, (1,), fill=1.0),
        # value per unit of order value, from this config's objective (a reload recomputes it)
        Field("rate", np.float64, Role.PER_ARM | Role.CACHE),
        # per arm feature: the largest squared feature norm of the arms using it (balanced)
        Field("feature_reach", np.float64, Role.CACHE, ("d_arm",), fill=1.0),
    )

    @classmethod
    def sizes(cls, config: Any, capacity: int) -> dict[str, int]:
        return {**super().sizes(config, capacity), "rows": 3 * config.bank_rows}

    def _configure(self) -> None:
        super()._configure()
        cfg = self.config
        o = cfg.objective
        rate = cfg.typical_conversion
        offset = 0.0 if rate is None else float(np.log(rate / (1.0 - rate)))
        self._weights = np.array([o.click, o.order, o.gmv, cfg.typical_order_value, offset])
        self._prior_b = _PRIOR_ORDERS / 2.0 * cfg.value_log_sd**2
        given = cfg.value_prior_precision
        self._value_lam = self.lam if given is None else float(given)
        da = cfg.model_arm_features
        dim = da * cfg.n_context_features
        self._arm_buf, self._arm_sq = np.empty(da), np.empty((da, da))
        self._joint, self._joint_u = np.empty(dim), np.empty(dim)
        self._mean3 = np.empty((3, 1))
        self._sd3 = np.empty((3, 1))
        self._no_offsets = np.empty(0)
        # per arm feature: the multiplier of its weights' prior precision (1: as configured)
        self._feature_scale = np.ones(da)
        for i, factor in cfg.arm_feature_prior_scale.items():
            self._feature_scale[i] = factor
        # per weight (arm feature i, context column q at i·d_ctx + q): PIN if ``crosses``
        # leaves the pair out
        pins = np.ones((da, cfg.n_context_features))
        for i, columns in cfg.crosses.items():
            pins[i] = PIN
            pins[i, columns] = 1.0
        self._pins = pins.ravel()

    def _init_model(self) -> None:
        super()._init_model()
        s = self.state
        s.order_a_inv[...] = np.diag(1.0 / self.prior_diag("order_"))
        s.value_a_inv[...] = np.diag(1.0 / self.prior_diag("value_"))
        s.noise_var[0] = self.config.value_log_sd**2

    def _new_scratch(self, size: int) -> None:
        super()._new_scratch(size)
        self.best_buf = np.empty(2 * size)  # the win shares keep each row's log best too
        self._mean3 = np.empty((3, size))
        self._sd3 = np.empty((3, size))

    def click_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """The click offsets' posterior mean and variance per arm the kernels read (empty:
        the shared click model has none)."""
        return self._no_offsets, self._no_offsets

    def model_args(self) -> tuple[Any, ...]:
        s = self.state
        return (
            s.features, s.mu, s.a_inv, *self.click_offsets(), s.order_mu, s.order_a_inv,
            s.value_mu, s.value_a_inv, s.noise_var, s.rate, self._weights, self.noise, s.z,
            self.rule, self.ucb_alpha, self.eps,
        )  # fmt: skip

    def scratch_args(self) -> tuple[Any, ...]:
        return (
            self.best_buf, self.arg_buf, self._arm_buf, self._arm_sq, self._mean3, self._sd3,
            self.mean_buf,
        )  # fmt: skip

    def _init_arms(self, new: np.ndarray, arm_features: np.ndarray | None) -> None:
        super()._init_arms(new, arm_features)
        o = self.config.objective
        table = np.array(
            [o.take_rates.get(g, o.default_take_rate) for g in self.registry.groups]
            or [o.default_take_rate]
        )
        self.state.rate[new] = table[self.registry.arm_group[new]]
        if "balanced" in (self.config.value_prior, self.config.factor_prior):
            s = self.state
            f = s.features[new]
            reach = np.where(f != 0.0, np.sum(f * f, axis=1)[:, None], 1.0).max(axis=0)
            if (reach > s.feature_reach).any():
                np.maximum(s.feature_reach, reach, out=s.feature_reach)
                s.model_dirty[0] = True

    # ------------------------------------------------------------------ posterior
    def prior_diag(self, prefix: str = "") -> np.ndarray:
        """The diagonal (D,) of the ``""`` (click), ``"order_"`` or ``"value_"`` weights'
        prior precision (the value's in units of ``1/σ²``): weight ``i·d_ctx + q`` of a
        balanced prior is its precision (``prior_precision``, or ``value_prior_precision``
        for the value) times ``max(1, feature_reach[i])``, the same rule for every factor;
        then times arm feature ``i``'s ``arm_feature_prior_scale`` (1 unless set), and
        :data:`PIN` where ``crosses`` leaves the pair out."""
        dim = self.state.g.shape[0]
        cfg = self.config
        value = prefix == "value_"
        scale = self._value_lam if value else self.lam
        if (cfg.value_prior if value else cfg.factor_prior) != "balanced":
            diag = np.full(dim, scale)
        else:
            reach = np.maximum(self.state.feature_reach, 1.0)
            diag = scale * np.repeat(reach, dim // reach.shape[0])
        if cfg.arm_feature_prior_scale:
            diag *= np.repeat(self._feature_scale, dim // self._feature_scale.shape[0])
        if cfg.crosses:
            diag *= self._pins
        return diag

    def factor_posterior(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and precision (D, D) of the ``""`` (click), ``"order_"`` or
        ``"value_"`` factor's weights now (the value's precision is in units of ``1/σ²``;
        a hybrid click's is the shared weights' marginal, its offsets integrated out)."""
        if not prefix:
            return self.posterior()
        g = getattr(self.state, f"{prefix}g")
        a = g + np.diag(self.prior_diag(prefix))
        return np.linalg.solve(a, getattr(self.state, f"{prefix}h")), a

    def noise_posterior(self) -> tuple[float, float]:
        """Shape and scale of the inverse-gamma posterior of the log value's variance ``σ²``
        (prior mean ``value_log_sd²`` worth two orders; Normal–inverse-gamma update)."""
        s = self.state
        mean, _ = self.factor_posterior("value_")
        n, squares = float(s.value_stats[0]), float(s.value_stats[1])
        shape = 1.0 + _PRIOR_ORDERS / 2.0 + n / 2.0
        scale = self._prior_b + 0.5 * max(squares - float(s.value_h @ mean), 0.0)
        return shape, scale

    def _refresh(self) -> None:
        s = self.state
        if s.model_dirty[0]:
            for prefix in ("order_", "value_"):
                mean, a = self.factor_posterior(prefix)
                getattr(s, f"{prefix}mu")[...] = mean
                getattr(s, f"{prefix}a_inv")[...] = np.linalg.inv(a)
            shape, scale = self.noise_posterior()
            s.noise_var[0] = scale / (shape - 1.0)
        super()._refresh()

    def predictive_value(self, arms: Any, contexts: Any) -> np.ndarray:
        """Posterior mean app value of ``arms[i]`` in ``contexts[i]`` (factors independent
        under the posterior; probit predictives, log-normal mean), as of the last refresh."""
        a = self.query_arms(arms)
        xs = self.context_rows(contexts, a.shape[0])
        out = np.empty(a.shape[0])
        s = self.state
        da = s.features.shape[1]
        kf.predict_factored(
            a, xs, s.features, s.mu, s.a_inv, *self.click_offsets(), s.order_mu,
            s.order_a_inv, s.value_mu, s.value_a_inv, s.noise_var, s.rate, self._weights,
            np.empty(da), np.empty((da, da)), np.empty((3, 1)), np.empty((3, 1)), out,
        )  # fmt: skip
        return out

    # ------------------------------------------------------------------- learning
    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray) -> None:
        raise InvalidInputError(
            "factored_value learns from outcomes (click, order, gmv), not from a scalar "
            "reward: use learn_outcomes (the Allocator and the scenario do)"
        )

    def check_outcomes(
        self, click: Any, order: Any, gmv: Any, rewards: Any, name: str = "outcomes"
    ) -> None:
        """Raise :class:`InvalidInputError` unless click and order are 0 or 1, an order
        comes with a click, a value only with an order, and values are finite, non-negative
        and within ``max_abs_reward``."""
        self._events(click, order, gmv, -1)

    def _events(
        self, click: Any, order: Any, gmv: Any, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = as_float_array(click, "click", (n,), 1.0)
        k = c.shape[0]
        o = as_float_array(order, "order", (k,), 1.0)
        g = as_float_array(gmv, "gmv", (k,), self.reward_bound)
        for label, arr in (("click", c), ("order", o)):
            bad = (arr != 0.0) & (arr != 1.0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InvalidInputError(
                    f"{label}[{i}] = {float(arr[i])}: factored_value expects 0 or 1"
                )
        for label, bad in (
            ("an order without a click", o > c),
            ("a value without an order", (g != 0.0) & (o == 0.0)),
            ("a negative value", g < 0.0),
        ):
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InvalidInputError(
                    f"outcome {i} (click={c[i]}, order={o[i]}, gmv={g[i]}) has {label}"
                )
        return c, o, g

    def learn_outcomes(
        self, arms: Any, click: Any, order: Any, gmv: Any, rewards: Any = None,
        contexts: Any = None,
    ) -> None:  # fmt: skip
        """Fold impressions' events in order; ``gmv`` 0 with an order means its value was
        not reported (only the click and order factors learn). ``rewards`` is unused."""
        a = self.query_arms(arms)
        c, o, g = self._events(click, order, gmv, a.shape[0])
        xs = self.context_rows(contexts, a.shape[0])
        with np.errstate(divide="ignore"):
            # log(g) - log(typical): g / typical underflows to 0 for a subnormal g
            logv = np.where(g > 0.0, np.log(g) - math.log(self.config.typical_order_value), np.nan)
        self._fold_events(a, xs, c, o, logv)
        s = self.state
        s.model_dirty[0] = True
        np.add.at(s.n_obs, a, 1)
        s.pending[0] += a.shape[0]
        if s.pending[0] >= self.config.refresh_every:
            self.refresh()

    def _fold_events(
        self, a: np.ndarray, xs: np.ndarray, c: np.ndarray, o: np.ndarray, logv: np.ndarray
    ) -> None:
        s = self.state
        kf.update_factored_batch(
            s.features, a, xs, c, o, logv, self.gamma, self._weights[4], s.g, s.h, s.mu,
            s.a_inv, s.order_g, s.order_h, s.order_mu, s.order_a_inv, s.value_g, s.value_h,
            s.value_mu, s.value_a_inv, s.value_stats, self._joint, self._joint_u, s.clock,
        )  # fmt: skip

    def learn_outcome(
        self, arm: int, click: float, order: float, gmv: float, reward: float | None = None,
        context: Any = None,
    ) -> None:  # fmt: skip
        """:meth:`learn_outcomes` for one impression."""
        x = None if context is None else np.asarray(context, dtype=np.float64).reshape(1, -1)
        self.learn_outcomes([arm], [click], [order], [gmv], None, x)

    def _check_merged(self, merged: Mapping[str, np.ndarray], touched: np.ndarray) -> None:
        """Every factor's precision must stay positive definite (the click's is checked by
        the shared model); the value count and square sum non-negative (a field rule)."""
        super()._check_merged(merged, touched)
        for prefix in ("order_", "value_"):
            a = merged[f"{prefix}g"] + np.diag(self.prior_diag(prefix))
            if np.abs(a - a.T).max(initial=0.0) > 1e-9 * (1.0 + np.abs(a).max(initial=0.0)):
                raise InvalidInputError(f"delta['{prefix}g'] would make a precision asymmetric")
            require_positive_definite(
                a, f"delta['{prefix}g'] would make a precision that is not positive definite"
            )


class HybridClickFactoredPolicy(FactoredValuePolicy, HybridLogisticPolicy):  # type: ignore[misc]
    """:class:`FactoredValuePolicy` whose click factor has a per-arm logit offset with
    hierarchical shrinkage (the hybrid logistic model: exact joint posterior, refreshed by
    a Schur complement); a candidate costs O(1) more, an arm ``d_ctx + 7`` floats more."""

    FIELDS = (*FactoredValuePolicy.FIELDS, *OFFSET_FIELDS)  # type: ignore[assignment]
    # the order and value factors move with every update (without forgetting)
    UPDATES_MOVE_DECISIONS = True

    def click_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        return self.state.offset_mean, self.state.offset_var

    def _fold_events(
        self, a: np.ndarray, xs: np.ndarray, c: np.ndarray, o: np.ndarray, logv: np.ndarray
    ) -> None:
        s = self.state
        kf.update_factored_hybrid_batch(
            s.features, a, xs, c, o, logv, self.gamma, self._weights[4], s.g, s.h, s.mu,
            s.offset_mean, s.t_last, s.n, s.s, s.r, s.dirty, s.order_g, s.order_h, s.order_mu,
            s.order_a_inv, s.value_g, s.value_h, s.value_mu, s.value_a_inv, s.value_stats,
            self._joint, self._joint_u, s.clock,
        )  # fmt: skip
