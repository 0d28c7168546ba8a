"""Context-free posteriors with a per-arm sample bank: Beta–Bernoulli and Normal–Gamma.

The bank holds ``M`` posterior draws per arm; Thompson sampling picks a bank row uniformly
and takes its argmax over the request's candidates, so the exact propensity is a count.
A refresh redraws only the arms whose statistics changed, and ``M`` shrinks for huge
catalogues so the bank stays within ``bank_max_cells`` (float32) cells.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from allocator.config import BetaBernoulliConfig, NormalGammaConfig
from allocator.errors import InvalidInputError, SnapshotError
from allocator.kernels import beta as kb
from allocator.kernels import normal_gamma as kng
from allocator.kernels import per_arm as kpa
from allocator.policies.base import Policy
from allocator.policies.state import Field, Role

_BROADCAST_MAX = 64


def draw_grouped(
    sample: Callable[..., np.ndarray], *params: np.ndarray
) -> np.ndarray:  # fmt: skip
    """``sample(*params_i, n)`` for every distinct parameter row, scattered back in order.

    numpy samples far faster with scalar parameters than with per-row arrays, and fresh
    arms share their group's prior; with mostly distinct rows one broadcast call is used.
    """
    n = params[0].shape[0]
    if all((p == p[0]).all() for p in params):  # one prior (fresh arms of one group)
        return sample(*(p[0] for p in params), n)
    if n <= _BROADCAST_MAX:  # a few arms (an add slice, a refresh): grouping costs more
        return sample(*(p[:, None] for p in params), n)
    stacked = np.stack(params, axis=1)
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if uniq.shape[0] * 4 > n:
        return sample(*(p[:, None] for p in params), n)
    out: np.ndarray | None = None
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(uniq.shape[0] + 1))
    for u in range(uniq.shape[0]):
        rows = order[bounds[u] : bounds[u + 1]]
        block = sample(*uniq[u], rows.shape[0])
        if out is None:
            out = np.empty((n, *block.shape[1:]), dtype=block.dtype)
        out[rows] = block
    assert out is not None
    return out


_ARM = Role.PER_ARM
_SUM = Role.PER_ARM | Role.LEARNED | Role.ADDITIVE | Role.DECAYS
_PRIOR = Role.PER_ARM | Role.PRIOR
_CACHE = Role.PER_ARM | Role.CACHE

#: arrays of the bank machinery shared by the context-free families
BANK_FIELDS = (
    Field("t_last", np.int64, _ARM, values="tick"),
    Field("mean", np.float64, _CACHE),
    Field("sd", np.float64, _CACHE),
    Field("bank", np.float32, _CACHE, ("rows",)),
    Field("winner", np.int64, Role.CACHE, ("rows",), fill=-1, values="arm"),
)


class PerArmPolicy(Policy):
    """Shared machinery of the context-free families (bank, winners, mean/sd)."""

    KERNEL = staticmethod(kpa.decide_per_arm)
    UPDATES_MOVE_DECISIONS = False  # decisions read the bank, mean and sd: refreshed only
    #: prior fields, in the order of the config's prior model fields
    PRIOR_FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def sizes(cls, config: Any, capacity: int) -> dict[str, int]:
        return {
            "rows": int(max(1, min(config.bank_rows, config.bank_max_cells // max(capacity, 1))))
        }

    @classmethod
    def restored_sizes(cls, config: Any, arrays: Any) -> dict[str, int]:
        winner = arrays.get("winner")
        if winner is None or winner.ndim != 1 or not 1 <= winner.shape[0] <= config.bank_rows:
            raise SnapshotError(f"bank winner array is missing or not (1..{config.bank_rows},)")
        return {"rows": int(winner.shape[0])}

    @property
    def bank_rows(self) -> int:
        return int(self.state.sizes["rows"])

    def _min_scratch(self) -> int:
        return self.bank_rows

    def model_args(self) -> tuple[Any, ...]:
        s = self.state
        return (s.bank, s.winner, s.mean, s.sd, self.rule, self.ucb_alpha, self.eps)

    def scratch_args(self) -> tuple[Any, ...]:
        return (self.best_buf, self.arg_buf, self.mean_buf)

    def _refresh(self) -> None:
        n = self.registry.n_arms
        s = self.state
        idx = np.flatnonzero(s.dirty[:n])
        if idx.size == 0:
            return
        s.bank[idx] = self._draw(idx)
        kpa.refresh_winners(s.bank, n, idx, s.dirty, s.winner, False)
        s.dirty[idx] = False

    def _draw(self, idx: np.ndarray) -> np.ndarray:
        """Posterior draws (len(idx), M) for arms ``idx``; updates their mean and sd."""
        raise NotImplementedError

    def _init_arms(self, new: np.ndarray, arm_features: np.ndarray | None) -> None:
        prior = self._group_prior(new)
        if self.config.new_arm_prior == "empirical":
            self._empirical_prior(new, prior)
        for name, values in zip(self.PRIOR_FIELDS, prior.values(), strict=True):
            getattr(self.state, name)[new] = values
        for f in self.state.select(Role.ADDITIVE):
            if f.has(Role.PER_ARM):
                getattr(self.state, f.name)[new] = 0

    def _empirical_prior(self, new: np.ndarray, prior: dict[str, np.ndarray]) -> None:
        """Replace the configured prior mean of new arms by their group's posterior mean."""

    def _group_prior(self, new: np.ndarray) -> dict[str, np.ndarray]:
        """Per new arm, the configured prior of its group (or the default prior)."""
        cfg = self.config
        groups = self.registry.groups
        codes = self.registry.arm_group[new]
        fields = type(cfg.prior).model_fields
        out = {f: np.empty(new.shape[0]) for f in fields}
        for code in np.unique(codes):
            prior = cfg.group_priors.get(groups[code], cfg.prior)
            sel = codes == code
            for f in fields:
                out[f][sel] = getattr(prior, f)
        return out

    def _informed_members(self, code: int, evidence: np.ndarray) -> np.ndarray:
        """Active, already-synced arms of group ``code`` with evidence (for empirical priors)."""
        n = int(self.state.n_synced[0])
        members = np.flatnonzero((self.registry.arm_group[:n] == code) & self.registry.active[:n])
        return members[evidence[members] > 0]


class BetaBernoulliPolicy(PerArmPolicy):
    """Beta–Bernoulli Thompson sampling (or UCB / greedy on the Beta posterior)."""

    config: BetaBernoulliConfig
    FIELDS = (
        *BANK_FIELDS,
        Field("a0", np.float64, _PRIOR, fill=1.0),  # prior alpha per arm
        Field("b0", np.float64, _PRIOR, fill=1.0),  # prior beta per arm
        Field("s1", np.float64, _SUM, values="count"),  # discounted successes as of t_last
        Field("s0", np.float64, _SUM, values="count"),  # discounted failures as of t_last
    )
    PRIOR_FIELDS = ("a0", "b0")
    REWARD_RANGE = (0.0, 1.0)
    LEARN_ONE = staticmethod(kb.learn_beta_one)

    def learn_args(self) -> tuple[Any, ...]:
        s = self.state
        return (
            self.gamma, s.clock, s.t_last, s.s1, s.s0, s.dirty, s.n_obs, s.pending,
            int(self.config.refresh_every),
        )  # fmt: skip

    def _check_rewards(self, rewards: np.ndarray) -> None:
        bad = (rewards < 0.0) | (rewards > 1.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"reward[{i}] = {float(rewards[i])}: Beta–Bernoulli expects rewards in [0, 1]"
            )

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray) -> None:
        s = self.state
        kb.update_beta_batch(arms, rewards, self.gamma, s.clock, s.t_last, s.s1, s.s0, s.dirty)

    def posterior(self, arms: Any) -> tuple[np.ndarray, np.ndarray]:
        """Effective ``(alpha, beta)`` of ``arms`` now (forgetting applied)."""
        idx = np.atleast_1d(np.asarray(arms, dtype=np.int64))
        mean, sd = np.empty(self.state.capacity), np.empty(self.state.capacity)
        return self._posterior_into(idx, mean, sd)

    def _posterior_into(
        self, idx: np.ndarray, mean: np.ndarray, sd: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        s = self.state
        alpha, beta = np.empty(idx.shape[0]), np.empty(idx.shape[0])
        kb.beta_posterior(
            idx, self.gamma, s.clock, s.t_last, s.s1, s.s0, s.a0, s.b0, alpha, beta, mean, sd
        )
        return alpha, beta

    def _draw(self, idx: np.ndarray) -> np.ndarray:
        alpha, beta = self._posterior_into(idx, self.state.mean, self.state.sd)
        return draw_grouped(self._beta_draws, alpha, beta)

    def _beta_draws(self, a: Any, b: Any, n: int) -> np.ndarray:
        """Beta(a, b) as X/(X+Y) with X ~ Gamma(a), Y ~ Gamma(b): exact, and much faster
        than numpy's Beta sampler for a, b <= 1 (the usual fresh-arm prior)."""
        size = (n, self.bank_rows)
        x = self.rng.standard_gamma(a, size=size)
        y = self.rng.standard_gamma(b, size=size)
        total = x + y
        with np.errstate(invalid="ignore"):
            out = x / total
        underflow = total == 0.0  # both draws below the smallest float: tiny shapes only
        if underflow.any():
            out[underflow] = np.broadcast_to(a / (a + b), size)[underflow]
        return out

    def _empirical_prior(self, new: np.ndarray, prior: dict[str, np.ndarray]) -> None:
        a0, b0 = prior["alpha"], prior["beta"]
        s = self.state
        for code in np.unique(self.registry.arm_group[new]):
            members = self._informed_members(code, s.s1 + s.s0)
            if members.size:
                alpha, beta = self.posterior(members)
                m = float(np.mean(alpha / (alpha + beta)))
                sel = self.registry.arm_group[new] == code
                strength = a0[sel] + b0[sel]
                a0[sel], b0[sel] = m * strength, (1.0 - m) * strength


class NormalGammaPolicy(PerArmPolicy):
    """Normal–Gamma Thompson sampling for real-valued rewards with unknown variance."""

    config: NormalGammaConfig
    FIELDS = (
        *BANK_FIELDS,
        Field("m0", np.float64, _PRIOR),  # prior (mean, kappa, alpha, beta) per arm
        Field("k0", np.float64, _PRIOR, fill=1.0),
        Field("al0", np.float64, _PRIOR, fill=1.0),
        Field("be0", np.float64, _PRIOR, fill=1.0),
        # discounted count, sum and sum of squares as of t_last
        Field("sn", np.float64, _SUM, values="count"),
        Field("sx", np.float64, _SUM),
        Field("sxx", np.float64, _SUM, values="count"),
    )
    PRIOR_FIELDS = ("m0", "k0", "al0", "be0")

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray) -> None:
        s = self.state
        kng.update_normal_gamma_batch(
            arms, rewards, self.gamma, s.clock, s.t_last, s.sn, s.sx, s.sxx, s.dirty
        )

    def posterior(self, arms: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Effective ``(mu, kappa, alpha, beta)`` of ``arms`` now (forgetting applied)."""
        idx = np.atleast_1d(np.asarray(arms, dtype=np.int64))
        mean, sd = np.empty(self.state.capacity), np.empty(self.state.capacity)
        out = self._posterior_into(idx, mean, sd)
        return out[0], out[1], out[2], out[3]

    def _posterior_into(
        self, idx: np.ndarray, mean: np.ndarray, sd: np.ndarray
    ) -> list[np.ndarray]:
        s = self.state
        out = [np.empty(idx.shape[0]) for _ in range(4)]
        kng.normal_gamma_posterior(
            idx, self.gamma, s.clock, s.t_last, s.sn, s.sx, s.sxx, s.m0, s.k0, s.al0, s.be0,
            out[0], out[1], out[2], out[3], mean, sd,
        )  # fmt: skip
        return out

    def _draw(self, idx: np.ndarray) -> np.ndarray:
        out = self._posterior_into(idx, self.state.mean, self.state.sd)

        def sample(mu: Any, kappa: Any, alpha: Any, beta: Any, n: int) -> np.ndarray:
            size = (n, self.bank_rows)
            tau = self.rng.gamma(alpha, 1.0 / beta, size=size)
            draws: np.ndarray = mu + self.rng.standard_normal(size) / np.sqrt(kappa * tau)
            return draws

        return draw_grouped(sample, *out)

    def _empirical_prior(self, new: np.ndarray, prior: dict[str, np.ndarray]) -> None:
        for code in np.unique(self.registry.arm_group[new]):
            members = self._informed_members(code, self.state.sn)
            if members.size:
                prior["mean"][self.registry.arm_group[new] == code] = float(
                    np.mean(self.posterior(members)[0])
                )
