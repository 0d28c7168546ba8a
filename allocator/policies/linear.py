"""Contextual policies: disjoint linear Gaussian per arm, and one shared linear model.

Both sample in score space through a bank ``z`` of standard normals (slots × M, float32:
the scores are formed and compared in single precision, see
:func:`allocator.kernels.choice.gauss_win_shares`): request candidate ``j`` in bank row ``m``
scores ``mean_j + sd_j·z[j, m]``. ``z`` does not depend on
the posterior, so a refresh only re-solves the changed posteriors and redraws a rolling
window of bank rows (in proportion to the updates since the last refresh, at most
``kernels.linear.Z_CELLS_PER_REFRESH`` normals), keeping refreshes cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from allocator.config import LinearGaussianConfig, SharedLinearConfig
from allocator.errors import InvalidInputError, SnapshotError
from allocator.inputs import as_float_array
from allocator.kernels import linear as kl
from allocator.kernels import link as klink
from allocator.kernels import shared_linear as ksl
from allocator.kernels import shared_single as kss
from allocator.policies.base import Policy
from allocator.policies.bound import BoundCall
from allocator.policies.state import Field, Role

#: the normal bank and its rolling-redraw cursor
SCORE_BANK_FIELDS = (
    Field("z", np.float32, Role.CACHE, ("slots", "rows")),
    Field("z_cursor", np.int64, Role.NONE, (1,), values="count"),
)


def require_positive_definite(a: np.ndarray, message: str) -> None:
    """Raise :class:`InvalidInputError` with ``message`` unless every (d, d) matrix of ``a``
    is positive definite (a merge checks what it would install)."""
    try:
        np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        raise InvalidInputError(message) from None


class _ScoreBankPolicy(Policy):
    """The normal bank ``z`` and its rolling redraw, and the Gram-matrix checks of merges."""

    lam: float  # prior precision (set by each family's ``_configure``)
    #: slots a refresh redraws (None: all; see :meth:`bank_in_use`)
    _bank_width: int | None = None
    #: how score means become the expected rewards contracts weigh (``kernels.link``)
    LINK: ClassVar[int] = klink.LINK_IDENTITY

    @property
    def bank_rows(self) -> int:
        return int(self.state.sizes["rows"])

    def _check_restored(self) -> None:
        super()._check_restored()
        cursor, rows = int(self.state.z_cursor[0]), self.state.z.shape[1]
        if not 0 <= cursor < rows:
            raise SnapshotError(f"state array 'z_cursor' = {cursor}: expected 0 .. {rows - 1}")

    def _min_scratch(self) -> int:
        return self.bank_rows

    def _init_model(self) -> None:
        self.state.z[...] = self.rng.standard_normal(self.state.z.shape)

    @contextmanager
    def bank_in_use(self, width: int) -> Iterator[None]:
        """Refreshes within the block redraw only the first ``width`` slots (the ones
        requests of at most ``width`` candidates read), spending the same normals per
        update on them: a replay of 20-candidate rounds draws 5,120 normals a refresh
        instead of 65,536 for 1,024 slots. The other slots keep their draws."""
        previous = self._bank_width
        self._bank_width = max(1, min(int(width), self.state.z.shape[0]))
        try:
            yield
        finally:
            self._bank_width = previous

    @property
    def bank_slots(self) -> int:
        """The bank rows a refresh redraws now (all, or those of :meth:`bank_in_use`)."""
        slots = int(self.state.z.shape[0])
        return slots if self._bank_width is None else self._bank_width

    def _roll_bank(self) -> None:
        """Redraw the next window of bank rows: ``Z_CELLS_PER_UPDATE`` normals per update
        folded in since the last refresh (at least one row, at most
        ``Z_CELLS_PER_REFRESH``), so a refresh every few updates costs in proportion to
        them; the bank turns over at the same rate per update whatever the cadence.
        Propensities are exact for whichever bank a decision reads."""
        s = self.state
        kl.roll_normals(self.rng, s.z, self.bank_slots, int(s.pending[0]), s.z_cursor)

    def prior_diag(self, prefix: str = "") -> np.ndarray:
        """The diagonal (d,) of the weights' prior precision: ``prior_precision`` on every
        weight (a family with a per-weight prior overrides this; ``prefix`` names one of
        its factors)."""
        return np.full(self.state.g.shape[-1], self.lam)

    def _check_merged(self, merged: Mapping[str, np.ndarray], touched: np.ndarray) -> None:
        """The merged Gram matrices plus the prior must stay symmetric positive definite
        (a sum of observations' x xᵀ always is; a forged delta need not be)."""
        g = merged["g"][touched] if merged["g"].ndim == 3 else merged["g"]
        a = g + np.diag(self.prior_diag())
        scale = 1.0 + np.abs(a).max(initial=0.0)
        if np.abs(a - np.swapaxes(a, -1, -2)).max(initial=0.0) > 1e-9 * scale:
            raise InvalidInputError("delta['g'] would make a posterior precision asymmetric")
        require_positive_definite(
            a, "delta['g'] would make a posterior precision that is not positive definite"
        )


class LinearGaussianPolicy(_ScoreBankPolicy):
    """Disjoint linear Thompson sampling (or LinUCB / greedy) over d context features."""

    config: LinearGaussianConfig
    KERNEL = staticmethod(kl.decide_linear)
    #: the sequential update kernel (``kernels.linear.update_linear_batch``'s signature)
    UPDATE: ClassVar[Any] = staticmethod(kl.update_linear_batch)
    #: the posterior re-solve of a refresh, which is this kernel then the bank's roll
    #: (:func:`kernels.linear.roll_normals`): a replay walk then compiles the refresh in
    REFRESH: ClassVar[Any] = staticmethod(kl.refresh_linear)
    _SUM = Role.PER_ARM | Role.LEARNED | Role.ADDITIVE | Role.DECAYS
    FIELDS = (
        *SCORE_BANK_FIELDS,
        Field("t_last", np.int64, Role.PER_ARM, values="tick"),
        Field("g", np.float64, _SUM, ("d", "d")),  # discounted Σ x xᵀ as of t_last
        Field("h", np.float64, _SUM, ("d",)),  # discounted Σ r x
        Field("count", np.float64, _SUM, values="count"),  # discounted count
        Field("mu0", np.float64, Role.PER_ARM | Role.PRIOR, ("d",)),
        Field("mu", np.float64, Role.PER_ARM | Role.CACHE, ("d",)),
        Field("a_inv", np.float64, Role.PER_ARM | Role.CACHE, ("d", "d")),
    )

    @classmethod
    def sizes(cls, config: Any, capacity: int) -> dict[str, int]:
        return {"d": config.n_features, "rows": config.bank_rows, "slots": config.max_candidates}

    def _configure(self) -> None:
        cfg = self.config
        self.n_features = cfg.n_features
        self.lam = float(cfg.prior_precision)
        self.noise = float(cfg.score_scale)
        self._work = np.zeros((2 * cfg.n_features + 2, cfg.n_features))

    def model_args(self) -> tuple[Any, ...]:
        s = self.state
        return (s.mu, s.a_inv, self.noise, self.LINK, s.z, self.rule, self.ucb_alpha, self.eps)

    def scratch_args(self) -> tuple[Any, ...]:
        return (self.best_buf, self.arg_buf, self.mean_buf, self.sd_buf)

    def _init_arms(self, new: np.ndarray, arm_features: np.ndarray | None) -> None:
        cfg = self.config
        s = self.state
        codes = self.registry.arm_group[new]
        for code in np.unique(codes):
            sel = new[codes == code]
            prior = cfg.group_priors.get(self.registry.groups[code])
            mean = np.zeros(cfg.n_features) if prior is None else np.asarray(prior.mean)
            if cfg.new_arm_prior == "empirical":
                n = int(s.n_synced[0])
                members = np.flatnonzero(
                    (self.registry.arm_group[:n] == code) & self.registry.active[:n]
                )
                members = members[s.count[members] > 0]
                if members.size:
                    mean = s.mu[members].mean(axis=0)
            s.mu0[sel] = mean
        s.g[new] = 0.0
        s.h[new] = 0.0
        s.count[new] = 0.0

    def posterior(self, arms: Any) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean (k, d) and precision ``A`` (k, d, d) of ``arms`` now."""
        s = self.state
        idx = np.atleast_1d(np.asarray(arms, dtype=np.int64))
        g, h = s.g[idx], s.h[idx]
        if self.gamma != 1.0:
            w = self.gamma ** (s.clock[0] - s.t_last[idx]).astype(np.float64)
            g, h = g * w[:, None, None], h * w[:, None]
        a = g + self.lam * np.eye(self.config.n_features)
        b = h + self.lam * s.mu0[idx]
        return np.linalg.solve(a, b[..., None])[..., 0], a

    def _refresh(self) -> None:
        s = self.state
        idx = np.flatnonzero(s.dirty[: self.registry.n_arms])
        if idx.size:
            self.REFRESH(idx, self.gamma, self.lam, s.clock, s.t_last, s.g, s.h, s.mu0, s.mu,
                         s.a_inv, self._work)  # fmt: skip
            s.dirty[idx] = False
        self._roll_bank()

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray) -> None:
        s = self.state
        self.UPDATE(
            arms, xs, rewards, self.gamma, self.lam, s.clock, s.t_last, s.g, s.h, s.count,
            s.mu0, s.mu, s.a_inv, self._work, s.dirty,
        )  # fmt: skip


class SharedLinearPolicy(_ScoreBankPolicy):
    """One linear model over vec(arm features ⊗ context): catalogue-scale memory."""

    config: SharedLinearConfig
    KERNEL = staticmethod(ksl.decide_shared)
    DECIDE_ONE = staticmethod(ksl.decide_shared_one)
    DECIDE_JOINED = staticmethod(ksl.decide_shared_ids_one)
    DECIDE_CONTRACTED = staticmethod(kss.decide_shared_contracted_one)
    DECIDE_CONTRACTED_IDS = staticmethod(kss.decide_shared_contracted_ids_one)
    #: the sequential update kernel (``kernels.shared_linear.update_shared_batch``'s signature)
    UPDATE: ClassVar[Any] = staticmethod(ksl.update_shared_batch)
    FIELDS = (
        *SCORE_BANK_FIELDS,
        Field("g", np.float64, Role.LEARNED | Role.ADDITIVE | Role.DECAYS, ("dim", "dim")),
        Field("h", np.float64, Role.LEARNED | Role.ADDITIVE | Role.DECAYS, ("dim",)),
        Field("mu", np.float64, Role.CACHE, ("dim",)),
        Field("a_inv", np.float64, Role.CACHE, ("dim", "dim")),
        Field("features", np.float64, Role.PER_ARM | Role.PRIOR, ("d_arm",)),
        Field("model_dirty", np.bool_, Role.NONE, (1,)),
    )

    @classmethod
    def sizes(cls, config: Any, capacity: int) -> dict[str, int]:
        return {
            "dim": config.n_context_features * config.model_arm_features,
            "d_arm": config.model_arm_features,
            "rows": config.bank_rows,
            "slots": config.max_candidates,
        }

    def _init_model(self) -> None:
        super()._init_model()
        self.state.a_inv[...] = np.diag(1.0 / self.prior_diag())

    def _configure(self) -> None:
        config = self.config
        self.n_features = config.n_context_features
        da = config.model_arm_features
        self.lam = float(config.prior_precision)
        self.noise = float(config.score_scale)
        dim = config.n_context_features * da
        self._w_buf = np.empty(da)
        self._pp_buf = np.empty((da, da))
        self._phi = np.empty(dim)
        self._u = np.empty(dim)
        # the hybrid families extend this model without its joint draw
        self._joint_draw = getattr(config, "sampling", "marginal") == "joint"
        self._draw_factor = np.zeros((da, da))
        # the bound learning step is this model's update; a subclass with its own keeps it
        own = type(self)._update_batch is SharedLinearPolicy._update_batch
        own = own and self.UPDATE is ksl.update_shared_batch
        self._learn_one = BoundCall(kss.learn_shared_one, self._learn_one_args) if own else None

    def _learned_changed(self) -> None:
        self.state.model_dirty[0] = True

    def model_args(self) -> tuple[Any, ...]:
        s = self.state
        return (
            s.features, s.mu, s.a_inv, self.noise, self.LINK, s.z, self.rule, self.ucb_alpha,
            self.eps, self._joint_draw, self._draw_factor,
        )  # fmt: skip

    def scratch_args(self) -> tuple[Any, ...]:
        return (self.best_buf, self.arg_buf, self._w_buf, self._pp_buf, self.mean_buf, self.sd_buf)

    def lean_args(self) -> tuple[Any, ...]:
        s = self.state
        return (
            self.input_bound, self.registry.active, s.features, s.mu, s.a_inv, self.noise, s.z,
            self.rule, self.ucb_alpha, self.eps, self._joint_draw, self._draw_factor, s.stream,
            s.pos_of_arm, *self.scratch_args(),
        )  # fmt: skip

    def check_arm_features(self, n_new: int, arm_features: Any) -> np.ndarray | None:
        if n_new == 0 and arm_features is None:
            return None
        if arm_features is None:
            raise InvalidInputError(
                f"arm_features required for {n_new} new arms: expected shape "
                f"({n_new}, {self.config.n_arm_features})"
            )
        given = as_float_array(
            arm_features, "arm_features", (n_new, self.config.n_arm_features), self.input_bound
        )
        if not self.config.arm_intercept:
            return given
        return np.column_stack([given, np.ones(n_new)])

    def _check_restored(self) -> None:
        super()._check_restored()
        f = self.state.features[: self.registry.n_arms]
        if f.size and not np.abs(f).max() <= self.input_bound:
            raise SnapshotError(
                f"state array 'features' holds values beyond max_abs_input = {self.input_bound:g}"
            )
        if self.config.arm_intercept and f.size and not (f[:, -1] == 1.0).all():
            raise SnapshotError("state array 'features': the intercept column must be 1")

    def given_arm_features(self) -> np.ndarray:
        """The registered arms' features as they were given (the intercept left out)."""
        return self.state.features[: self.registry.n_arms, : self.config.n_arm_features]

    def _init_arms(self, new: np.ndarray, arm_features: np.ndarray | None) -> None:
        assert arm_features is not None
        self.state.features[new] = arm_features

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean (D,) and precision (D, D) of the joint weights now."""
        a = self.state.g + np.diag(self.prior_diag())
        return np.linalg.solve(a, self.state.h), a

    def _refresh(self) -> None:
        s = self.state
        if s.model_dirty[0]:
            mu, a = self.posterior()
            s.mu[...] = mu
            s.a_inv[...] = np.linalg.inv(a)
            s.model_dirty[0] = False
        # no per-arm state is re-solved here (``dirty`` is read by no shared family): a
        # refresh costs O(d²) whatever the catalogue, not a pass over every arm
        self._roll_bank()

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray) -> None:
        s = self.state
        self.UPDATE(
            s.features, arms, xs, rewards, self.gamma, self.lam, s.g, s.h, s.mu, s.a_inv,
            self._phi, self._u, s.clock,
        )  # fmt: skip
        s.model_dirty[0] = True

    def update_checked(self, arm: int, reward: float, x: np.ndarray) -> bool:
        """:meth:`Policy.update_checked` (the serving path's learning step) as one bound
        compiled call (:func:`.shared_single.learn_shared_one`): the same arithmetic and
        counters as the batch update of one, without its per-call argument dispatch (a
        subclass with its own update, or a row of another layout, takes the general step)."""
        learn = self._learn_one
        if learn is None or not (x.dtype == np.float64 and x.flags.c_contiguous):
            return super().update_checked(arm, reward, x)
        args = learn.args if learn.key == self.state.generation else learn.bind(
            self.state.generation
        )  # fmt: skip
        args[0], args[1], args[2] = arm, reward, x
        if not learn.entry(*args):
            return False
        self.refresh()
        return True

    def _learn_one_args(self) -> list[Any]:
        s = self.state
        return [
            0, 0.0, np.zeros((1, self.n_features or 0)), s.features, self.gamma, self.lam, s.g,
            s.h, s.mu, s.a_inv, self._phi, self._u, s.clock, s.n_obs, s.pending,
            self.config.refresh_every, s.model_dirty,
        ]  # fmt: skip
