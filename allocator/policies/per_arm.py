"""Context-free posteriors with a per-arm sample bank: Beta–Bernoulli and Normal–Gamma.

The bank holds ``M`` posterior draws per arm; Thompson sampling picks a bank row uniformly
and takes its argmax over the request's candidates, so the exact propensity is a count.
A refresh redraws only the arms whose statistics changed, and ``M`` shrinks for huge
catalogues so the bank stays within ``bank_max_cells`` (float32) cells.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from allocator.config import BetaBernoulliConfig, NormalGammaConfig
from allocator.config.policies import PRIOR_COUNTS, PRIOR_SCALE
from allocator.errors import InvalidInputError, SnapshotError
from allocator.kernels import beta as kb
from allocator.kernels import normal_gamma as kng
from allocator.kernels import per_arm as kpa
from allocator.policies.base import Policy
from allocator.policies.state import Field, Role

#: arms drawn per block when filling the bank: float64 temporaries stay in cache-sized
#: blocks (a few MiB) instead of four (capacity, M) arrays at a catalogue's first fill
_DRAW_BLOCK = 1 << 14


def gamma_draws(rng: np.random.Generator, shape: Any, size: tuple[int, ...]) -> np.ndarray:
    """Gamma(``shape``, 1) draws; a scalar shape of exactly 1 (the default prior) takes
    numpy's exponential sampler, the same distribution at a seventh of the cost."""
    if np.ndim(shape) == 0 and shape == 1.0:
        return rng.standard_exponential(size)
    return rng.standard_gamma(shape, size)


def bank_chunks(sample: Callable[..., np.ndarray], out: np.ndarray, *params: Any) -> np.ndarray:
    """Fill ``out`` (m, M) with ``sample(*params, (block, M))`` in blocks of arms, so the
    float64 draws never exist at full size; ``params`` are scalars or (m, 1) columns."""
    n, rows = out.shape
    for lo in range(0, n, _DRAW_BLOCK):
        hi = min(n, lo + _DRAW_BLOCK)
        block = [p if np.ndim(p) == 0 else p[lo:hi] for p in params]
        out[lo:hi] = sample(*block, (hi - lo, rows))
    return out


def draw_grouped(
    fill: Callable[..., Any], out: np.ndarray, *params: np.ndarray
) -> np.ndarray:  # fmt: skip
    """Fill ``out`` (one row per parameter row) by ``fill(dest, *params_i)`` calls, one per
    distinct parameter row when that pays, scattered back in order.

    numpy samples far faster with scalar parameters than with per-row arrays, and fresh
    arms share their group's prior; with mostly distinct rows one broadcast call is used.
    """
    n = params[0].shape[0]
    if all((p == p[0]).all() for p in params):  # one prior (fresh arms of one group)
        fill(out, *(p[0] for p in params))
        return out
    uniq = inverse = None
    if n > kpa.CELL_BY_CELL_MAX:  # a few arms (an add slice, a refresh): grouping costs more
        uniq, inverse = np.unique(np.stack(params, axis=1), axis=0, return_inverse=True)
    if uniq is None or inverse is None or uniq.shape[0] * 4 > n:
        fill(out, *(p[:, None] for p in params))
        return out
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(uniq.shape[0] + 1))
    for u in range(uniq.shape[0]):
        rows = order[bounds[u] : bounds[u + 1]]
        out[rows] = fill(np.empty((rows.shape[0], *out.shape[1:]), out.dtype), *uniq[u])
    return out


def _counted(n_obs: np.ndarray) -> np.ndarray:
    """The most a sum of ``n_obs`` per-observation terms within [0, 1] can reach, with
    room for rounding."""
    n = n_obs.astype(np.float64)
    return n * (1.0 + 1e-9) + 1e-9


#: the largest magnitude the float32 bank holds finite
_BANK_MAX = float(np.finfo(np.float32).max)

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
    DECIDE_ONE = staticmethod(kpa.decide_per_arm_one)
    DECIDE_JOINED = staticmethod(kpa.decide_joined_one)
    UPDATES_MOVE_DECISIONS = False  # decisions read the bank, mean and sd: refreshed only
    #: prior fields, in the order of the config's prior model fields
    PRIOR_FIELDS: ClassVar[tuple[str, ...]] = ()

    def _prior_bounds(self) -> dict[str, tuple[float, float]]:
        """The range each prior field's values may take (what a config or an empirical
        prior can produce); a restored value outside it is refused."""
        return {}

    def _check_restored(self) -> None:
        super()._check_restored()
        k = self.registry.n_arms
        for name, (lo, hi) in self._prior_bounds().items():
            values = getattr(self.state, name)[:k]
            if values.size and not (lo <= values.min() and values.max() <= hi):
                raise SnapshotError(f"state array {name!r} holds priors outside [{lo:g}, {hi:g}]")

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

    def lean_args(self) -> tuple[Any, ...]:
        s = self.state
        return (
            self.registry.active, *self.model_args(), s.stream, s.pos_of_arm, self.best_buf,
            self.arg_buf,
        )  # fmt: skip

    def _refresh(self) -> None:
        n = self.registry.n_arms
        s = self.state
        idx = np.flatnonzero(s.dirty[:n])
        if idx.size == 0:
            return
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        if hi - lo == idx.size:  # a run of arms (a catalogue's first fill): draw in place
            self._draw(idx, s.bank[lo:hi])
        else:
            s.bank[idx] = self._draw(idx, np.empty((idx.size, self.bank_rows), np.float32))
        kpa.refresh_winners(s.bank, n, idx, s.dirty, s.winner, False)
        s.dirty[idx] = False

    def _draw(self, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Posterior draws of arms ``idx`` into ``out`` (len(idx), M); updates their mean
        and sd."""
        params = self._draw_params(idx)
        return draw_grouped(functools.partial(bank_chunks, self._sample), out, *params)

    def _draw_params(self, idx: np.ndarray) -> list[np.ndarray]:
        """The posterior parameters (one array each, len(idx)) of arms ``idx``, updating
        their mean and sd."""
        raise NotImplementedError

    def _sample(self, *params_and_size: Any) -> np.ndarray:
        """Draws of ``size`` (last argument) from the posterior with the given parameters
        (scalars or (m, 1) columns)."""
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

    def _prior_bounds(self) -> dict[str, tuple[float, float]]:
        # an empirical prior splits a configured strength a0 + b0 in two
        hi = 2.0 * PRIOR_COUNTS[1]
        return {"a0": (0.0, hi), "b0": (0.0, hi)}

    def _check_restored(self) -> None:
        super()._check_restored()
        k = self.registry.n_arms
        a0, b0 = self.state.a0[:k], self.state.b0[:k]
        if k and ((a0 <= 0.0).any() or (b0 <= 0.0).any() or (a0 + b0).min() < PRIOR_COUNTS[0]):
            raise SnapshotError(
                f"state arrays 'a0', 'b0' hold a prior that is not positive, or whose "
                f"strength a0 + b0 is below {PRIOR_COUNTS[0]:g}"
            )

    def _check_merged(self, merged: Any, touched: np.ndarray) -> None:
        """Each observation adds a reward r in [0, 1] to ``s1`` and 1 − r to ``s0``, so the
        (discounted) sums cannot exceed the arm's count."""
        over = merged["s1"] + merged["s0"] > _counted(merged["n_obs"])
        if over.any():
            raise InvalidInputError(
                f"delta would give arm {int(np.flatnonzero(over)[0])} more successes plus "
                "failures than observations"
            )

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

    def _draw_params(self, idx: np.ndarray) -> list[np.ndarray]:
        return list(self._posterior_into(idx, self.state.mean, self.state.sd))

    def _sample(self, a: Any, b: Any, size: tuple[int, int]) -> np.ndarray:
        """Beta(a, b) as X/(X+Y) with X ~ Gamma(a), Y ~ Gamma(b): exact, and much faster
        than numpy's Beta sampler for a, b <= 1 (the usual fresh-arm prior)."""
        x = gamma_draws(self.rng, a, size)
        total = x + gamma_draws(self.rng, b, size)
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

    def _prior_bounds(self) -> dict[str, tuple[float, float]]:
        return {"k0": PRIOR_COUNTS, "al0": PRIOR_COUNTS, "be0": PRIOR_SCALE}

    def _check_merged(self, merged: Any, touched: np.ndarray) -> None:
        """Sums of (discounted) observations: the count ``sn`` at most the arm's count,
        ``|sx| <= sn·max_abs_reward`` and ``sx² <= sn·sxx`` (Cauchy–Schwarz). A forged
        tiny ``sn`` beside a real ``sx`` would otherwise give an infinite posterior sd."""
        sn, sx, sxx = merged["sn"], merged["sx"], merged["sxx"]
        tol = 1e-9
        bad = (
            (sn > _counted(merged["n_obs"]))
            | (np.abs(sx) > sn * self.reward_bound * (1.0 + tol))
            | (sx * sx > sn * sxx * (1.0 + tol) + tol * sxx)
        )
        if bad.any():
            raise InvalidInputError(
                f"delta would give arm {int(np.flatnonzero(bad)[0])} sums no observations "
                "can produce (count beyond the arm's, or sum beyond what the count and the "
                "sum of squares allow)"
            )

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

    def _draw_params(self, idx: np.ndarray) -> list[np.ndarray]:
        return self._posterior_into(idx, self.state.mean, self.state.sd)

    def _sample(
        self, mu: Any, kappa: Any, alpha: Any, beta: Any, size: tuple[int, int]
    ) -> np.ndarray:
        """Normal–Gamma: precision tau ~ Gamma(alpha, 1/beta), then N(mu, 1/(kappa tau)).

        A small shape ``alpha`` draws a precision that underflows to 0 now and then; that
        draw's score is then beyond any reward, and it is kept at the float32 bank's
        largest finite magnitude (its sign the normal's) instead of becoming inf or NaN."""
        tau = gamma_draws(self.rng, alpha, size) / beta
        z = self.rng.standard_normal(size)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            draws: np.ndarray = mu + z / np.sqrt(kappa * tau)
        wild = ~np.isfinite(draws)
        if wild.any():
            draws[wild] = np.where(z[wild] < 0.0, -_BANK_MAX, _BANK_MAX)
        np.clip(draws, -_BANK_MAX, _BANK_MAX, out=draws)
        return draws

    def _empirical_prior(self, new: np.ndarray, prior: dict[str, np.ndarray]) -> None:
        for code in np.unique(self.registry.arm_group[new]):
            members = self._informed_members(code, self.state.sn)
            if members.size:
                prior["mean"][self.registry.arm_group[new] == code] = float(
                    np.mean(self.posterior(members)[0])
                )
