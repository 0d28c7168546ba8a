"""Context-free posteriors with a per-arm sample bank: Beta–Bernoulli and Normal–Gamma.

The bank holds ``M`` posterior draws per arm; Thompson sampling picks a bank row uniformly
and takes its argmax over the request's candidates, so the exact propensity is a count.
A refresh redraws only the arms whose statistics changed, and ``M`` shrinks for huge
catalogues so the bank stays within ``bank_max_cells`` (float32) cells.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from allocator.config import BetaBernoulliConfig, NormalGammaConfig
from allocator.errors import InvalidInputError
from allocator.kernels import beta as kb
from allocator.kernels import normal_gamma as kng
from allocator.kernels import per_arm as kpa
from allocator.policies.base import Policy
from allocator.registry import ArmRegistry


def draw_grouped(
    sample: Callable[..., np.ndarray], *params: np.ndarray
) -> np.ndarray:  # fmt: skip
    """``sample(*params_i, n)`` for every distinct parameter row, scattered back in order.

    numpy samples far faster with scalar parameters than with per-row arrays, and fresh
    arms share their group's prior; with mostly distinct rows one broadcast call is used.
    """
    stacked = np.stack(params, axis=1)
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = stacked.shape[0]
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


def _grown(arr: np.ndarray, capacity: int, fill: float = 0.0) -> np.ndarray:
    out = np.full((capacity, *arr.shape[1:]), fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


class PerArmPolicy(Policy):
    """Shared machinery of the context-free families (bank, winners, mean/sd)."""

    _stats: tuple[str, ...] = ()
    _meta = (*Policy._meta, "bank_rows")

    def __init__(
        self, config: Any, registry: ArmRegistry, seed: int, arm_features: Any = None
    ) -> None:
        super().__init__(config, registry, seed)
        cap = max(registry.capacity, 1)
        self.bank_rows = int(max(1, min(config.bank_rows, config.bank_max_cells // cap)))
        self._bank = np.zeros((0, self.bank_rows), dtype=np.float32)
        self._winner = np.full(self.bank_rows, -1, dtype=np.int64)
        self._mean = np.zeros(0)
        self._sd = np.zeros(0)
        self._t_last = np.zeros(0, dtype=np.int64)
        for name in self._stats:
            setattr(self, name, np.zeros(0))
        self._new_scratch(self.bank_rows, 1)
        self.sync_arms(arm_features)

    def _ensure_scratch(self, n_candidates: int) -> None:
        self._new_scratch(self.bank_rows, n_candidates)

    def _after_restore(self) -> None:
        self._new_scratch(self.bank_rows, 1)

    def _grow(self, capacity: int) -> None:
        self._capacity = capacity
        self._bank = _grown(self._bank, capacity)
        self._mean = _grown(self._mean, capacity)
        self._sd = _grown(self._sd, capacity)
        self._t_last = _grown(self._t_last, capacity)
        for name in self._stats:
            setattr(self, name, _grown(getattr(self, name), capacity))

    def candidate_means(self, cand: np.ndarray) -> np.ndarray:
        return self._mean[cand]

    def _model_args(self) -> tuple[Any, ...]:
        """Arrays shared by the single and batch decide kernels (read at call time: they
        are reallocated on growth and restore)."""
        return (
            self._bank, self._winner, self._mean, self._sd, self._rule, self._ucb_alpha,
            self._eps, self._stream, self._best, self._arg,
        )  # fmt: skip

    def _decide(self, cand: np.ndarray, x: np.ndarray | None, draw: bool = True) -> int:
        return int(kpa.decide_per_arm(  # type: ignore[call-arg]  # numba stubs vs *args
            cand, self.registry.active, self._pos_of_arm, *self._model_args(), self._p,
            self._err, draw,
        ))  # fmt: skip

    def _decide_batch(
        self, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray | None,
        probs: np.ndarray, chosen: np.ndarray,
    ) -> int:  # fmt: skip
        return int(kpa.decide_per_arm_batch(  # type: ignore[call-arg]  # numba stubs vs *args
            ptr, idx, self.registry.active, self._pos_of_arm, *self._model_args(), probs,
            chosen, self._err,
        ))  # fmt: skip

    def _refresh(self) -> None:
        n = self.registry.n_arms
        idx = np.flatnonzero(self._dirty[:n])
        if idx.size == 0:
            return
        self._bank[idx] = self._draw(idx)
        kpa.refresh_winners(self._bank, n, idx, self._dirty, self._winner, False)
        self._dirty[idx] = False

    def _draw(self, idx: np.ndarray) -> np.ndarray:
        """Posterior draws (len(idx), M) for arms ``idx``; updates their mean and sd."""
        raise NotImplementedError

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

    def _synced_group_members(self, code: int) -> np.ndarray:
        n = self.registry.n_arms
        members = np.flatnonzero(
            (self.registry.arm_group[:n] == code)
            & self.registry.active[:n]
            & (np.arange(n) < self._n_synced)
        )
        return members


class BetaBernoulliPolicy(PerArmPolicy):
    """Beta–Bernoulli Thompson sampling (or UCB / greedy on the Beta posterior)."""

    config: BetaBernoulliConfig
    _stats = ("_a0", "_b0", "_s1", "_s0")
    _state = (*Policy._state, "_bank", "_winner", "_mean", "_sd", "_t_last", *_stats)
    _additive = ("_s1", "_s0")
    _reward_lo, _reward_hi = 0.0, 1.0
    _learned = ("_n_obs", *_stats)
    _a0: np.ndarray  # prior alpha per arm
    _b0: np.ndarray  # prior beta per arm
    _s1: np.ndarray  # discounted successes as of t_last
    _s0: np.ndarray  # discounted failures as of t_last

    def _check_rewards(self, rewards: np.ndarray) -> None:
        bad = (rewards < 0.0) | (rewards > 1.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"reward[{i}] = {float(rewards[i])}: Beta–Bernoulli expects rewards in [0, 1]"
            )

    def _update(self, arm: int, reward: float, x: np.ndarray | None) -> bool:
        kb.update_beta(
            arm, reward, self._gamma, self._clock, self._t_last, self._s1, self._s0, self._dirty
        )
        return True

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray | None) -> None:
        kb.update_beta_batch(
            arms, rewards, self._gamma, self._clock, self._t_last, self._s1, self._s0, self._dirty
        )

    def posterior(self, arms: Any) -> tuple[np.ndarray, np.ndarray]:
        """Effective ``(alpha, beta)`` of ``arms`` now (forgetting applied)."""
        idx = np.atleast_1d(np.asarray(arms, dtype=np.int64))
        alpha, beta = np.empty(idx.shape[0]), np.empty(idx.shape[0])
        mean, sd = np.empty(self._capacity), np.empty(self._capacity)
        kb.beta_posterior(
            idx,
            self._gamma,
            self._clock,
            self._t_last,
            self._s1,
            self._s0,
            self._a0,
            self._b0,
            alpha,
            beta,
            mean,
            sd,
        )
        return alpha, beta

    def _draw(self, idx: np.ndarray) -> np.ndarray:
        alpha, beta = np.empty(idx.shape[0]), np.empty(idx.shape[0])
        kb.beta_posterior(
            idx,
            self._gamma,
            self._clock,
            self._t_last,
            self._s1,
            self._s0,
            self._a0,
            self._b0,
            alpha,
            beta,
            self._mean,
            self._sd,
        )
        return draw_grouped(self._beta_draws, alpha, beta)

    def _beta_draws(self, a: Any, b: Any, n: int) -> np.ndarray:
        """Beta(a, b) as X/(X+Y) with X ~ Gamma(a), Y ~ Gamma(b): exact, and much faster
        than numpy's Beta sampler for a, b <= 1 (the usual fresh-arm prior)."""
        size = (n, self.bank_rows)
        x = self._rng.standard_gamma(a, size=size)
        y = self._rng.standard_gamma(b, size=size)
        total = x + y
        with np.errstate(invalid="ignore"):
            out = x / total
        underflow = total == 0.0  # both draws below the smallest float: tiny shapes only
        if underflow.any():
            out[underflow] = np.broadcast_to(a / (a + b), size)[underflow]
        return out

    def _init_arms(self, new: np.ndarray, arm_features: Any) -> None:
        prior = self._group_prior(new)
        a0, b0 = prior["alpha"], prior["beta"]
        if self.config.new_arm_prior == "empirical":
            for code in np.unique(self.registry.arm_group[new]):
                members = self._synced_group_members(code)
                members = members[(self._s1[members] + self._s0[members]) > 0]
                if members.size:
                    alpha, beta = self.posterior(members)
                    m = float(np.mean(alpha / (alpha + beta)))
                    sel = self.registry.arm_group[new] == code
                    strength = a0[sel] + b0[sel]
                    a0[sel], b0[sel] = m * strength, (1.0 - m) * strength
        self._a0[new], self._b0[new] = a0, b0
        self._s1[new] = 0.0
        self._s0[new] = 0.0
        self._t_last[new] = self._clock[0]


class NormalGammaPolicy(PerArmPolicy):
    """Normal–Gamma Thompson sampling for real-valued rewards with unknown variance."""

    config: NormalGammaConfig
    _stats = ("_m0", "_k0", "_al0", "_be0", "_sn", "_sx", "_sxx")
    _state = (*Policy._state, "_bank", "_winner", "_mean", "_sd", "_t_last", *_stats)
    _additive = ("_sn", "_sx", "_sxx")
    _learned = ("_n_obs", *_stats)
    _m0: np.ndarray  # prior (mean, kappa, alpha, beta) per arm
    _k0: np.ndarray
    _al0: np.ndarray
    _be0: np.ndarray
    _sn: np.ndarray  # discounted count, sum and sum of squares as of t_last
    _sx: np.ndarray
    _sxx: np.ndarray

    def _update(self, arm: int, reward: float, x: np.ndarray | None) -> bool:
        kng.update_normal_gamma(
            arm,
            reward,
            self._gamma,
            self._clock,
            self._t_last,
            self._sn,
            self._sx,
            self._sxx,
            self._dirty,
        )
        return True

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray | None) -> None:
        kng.update_normal_gamma_batch(
            arms,
            rewards,
            self._gamma,
            self._clock,
            self._t_last,
            self._sn,
            self._sx,
            self._sxx,
            self._dirty,
        )

    def posterior(self, arms: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Effective ``(mu, kappa, alpha, beta)`` of ``arms`` now (forgetting applied)."""
        idx = np.atleast_1d(np.asarray(arms, dtype=np.int64))
        out = [np.empty(idx.shape[0]) for _ in range(4)]
        mean, sd = np.empty(self._capacity), np.empty(self._capacity)
        self._posterior_into(idx, out, mean, sd)
        return out[0], out[1], out[2], out[3]

    def _posterior_into(
        self, idx: np.ndarray, out: list[np.ndarray], mean: np.ndarray, sd: np.ndarray
    ) -> None:
        kng.normal_gamma_posterior(
            idx,
            self._gamma,
            self._clock,
            self._t_last,
            self._sn,
            self._sx,
            self._sxx,
            self._m0,
            self._k0,
            self._al0,
            self._be0,
            out[0],
            out[1],
            out[2],
            out[3],
            mean,
            sd,
        )

    def _draw(self, idx: np.ndarray) -> np.ndarray:
        out = [np.empty(idx.shape[0]) for _ in range(4)]
        self._posterior_into(idx, out, self._mean, self._sd)

        def sample(mu: Any, kappa: Any, alpha: Any, beta: Any, n: int) -> np.ndarray:
            size = (n, self.bank_rows)
            tau = self._rng.gamma(alpha, 1.0 / beta, size=size)
            draws: np.ndarray = mu + self._rng.standard_normal(size) / np.sqrt(kappa * tau)
            return draws

        return draw_grouped(sample, *out)

    def _init_arms(self, new: np.ndarray, arm_features: Any) -> None:
        prior = self._group_prior(new)
        m0 = prior["mean"]
        if self.config.new_arm_prior == "empirical":
            for code in np.unique(self.registry.arm_group[new]):
                members = self._synced_group_members(code)
                members = members[self._sn[members] > 0]
                if members.size:
                    m0[self.registry.arm_group[new] == code] = float(
                        np.mean(self.posterior(members)[0])
                    )
        self._m0[new], self._k0[new] = m0, prior["kappa"]
        self._al0[new], self._be0[new] = prior["alpha"], prior["beta"]
        for name in ("_sn", "_sx", "_sxx"):
            getattr(self, name)[new] = 0.0
        self._t_last[new] = self._clock[0]
