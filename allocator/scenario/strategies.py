"""The strategies compared by the scenario: baselines, allocator policies, the oracle.

Every strategy sees the same thing per feedback batch (a :class:`Tick`: impressions with
their contexts and candidates), returns one choice per impression with its propensity,
and learns from the outcomes of that batch before the next. Allocator policies decide a
batch with one call of the engine's batch pipeline, contracts included (their queues move
with every decision inside the kernel).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

from allocator.config import NormalGammaConfig, ObjectiveConfig, parse_config
from allocator.constraints import ConstraintSet
from allocator.decisions import Decisions
from allocator.engine import Engine
from allocator.objective import Objective
from allocator.registry import ArmRegistry
from allocator.scenario import kernels as k
from allocator.scenario.config import (
    ExploreThenCommitSpec,
    StaticSplitSpec,
    resolve_engine,
)
from allocator.scenario.world import Chunk


class Tick(NamedTuple):
    """A feedback batch of n impressions over nnz flat candidates."""

    timestamps: np.ndarray  # (n,) epoch seconds
    contexts: np.ndarray  # (n, d)
    category: np.ndarray  # (n,) int64
    city_tier: np.ndarray  # (n,) int64
    cand_ptr: np.ndarray  # (n+1,)
    cand_idx: np.ndarray  # (nnz,) arm indices
    cand_group: np.ndarray  # (nnz,) group codes
    value: np.ndarray  # (nnz,) true expected app value of each candidate

    @classmethod
    def of(cls, chunk: Chunk, lo: int, hi: int, cand_group: np.ndarray, value: np.ndarray) -> Tick:
        """Impressions ``lo:hi`` of ``chunk``, with ``cand_group`` and ``value`` given per
        candidate of the whole chunk."""
        flo, fhi = int(chunk.cand_ptr[lo]), int(chunk.cand_ptr[hi])
        return cls(
            chunk.timestamps[lo:hi], chunk.contexts[lo:hi], chunk.category[lo:hi],
            chunk.city_tier[lo:hi], chunk.cand_ptr[lo : hi + 1] - flo,
            chunk.cand_idx[flo:fhi], cand_group[flo:fhi], value[flo:fhi],
        )  # fmt: skip


class ScenarioArms(NamedTuple):
    """What strategies know about the world's arms (observable only)."""

    ids: tuple[str, ...]
    groups: tuple[str, ...]
    group_names: tuple[str, ...]  # group code -> name
    features: np.ndarray  # (n_arms, d_arm)
    categories: tuple[str, ...]
    city_tiers: tuple[str, ...]
    feature_names: tuple[str, ...]  # the features' columns
    context_names: tuple[str, ...]  # the impression context's columns

    @property
    def n_context(self) -> int:
        return len(self.context_names)


def make_registry(arms: ScenarioArms) -> ArmRegistry:
    """The world's arms, indexed in the world's order (strategies' arm index = world's)."""
    return ArmRegistry.build(list(arms.ids), list(arms.groups))


def batch_decisions(tick: Tick, pos: np.ndarray, prop: np.ndarray, probs: np.ndarray) -> Decisions:
    """A baseline's choices as :class:`Decisions` (no contract ever forces or adjusts)."""
    n = pos.shape[0]
    none = np.full(n, -1, dtype=np.int64)
    return Decisions(
        positions=pos, arms=tick.cand_idx[tick.cand_ptr[:-1] + pos], propensities=prop,
        probabilities=probs, forced=none, adjusted=np.zeros(n, dtype=np.int64),
        timestamps=tick.timestamps,
    )  # fmt: skip


class Strategy(ABC):
    name: str

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x57A7]))

    @abstractmethod
    def decide(self, tick: Tick) -> Decisions: ...

    def learn(self, tick: Tick, arms: np.ndarray, outcomes: tuple[np.ndarray, ...]) -> None:  # noqa: B027
        """Fold a batch's outcomes (click, order, gmv); baselines that do not learn skip it."""

    def metrics(self) -> dict[str, float]:
        return {}

    def _draw(self, tick: Tick, probs: np.ndarray) -> Decisions:
        n = tick.cand_ptr.shape[0] - 1
        pos = np.empty(n, dtype=np.int64)
        prop = np.empty(n)
        k.draw_rows(tick.cand_ptr, probs, self.rng.random(n), pos, prop)
        return batch_decisions(tick, pos, prop, probs)


def uniform_probs(ptr: np.ndarray) -> np.ndarray:
    sizes = np.diff(ptr)
    return np.repeat(1.0 / sizes, sizes)


class StaticSplit(Strategy):
    """Fixed group shares, split evenly among a group's candidates in each impression."""

    def __init__(self, spec: StaticSplitSpec, arms: ScenarioArms, seed: int) -> None:
        super().__init__(spec.name, seed)
        unknown = sorted(set(spec.shares) - set(arms.group_names))
        if unknown:
            raise ValueError(f"{spec.name}: shares for unknown groups {unknown}")
        shares = np.array([spec.shares.get(g, 0.0) for g in arms.group_names])
        # relative to the largest, so that a row's total cannot overflow (1e308 + 1e308)
        self.shares = shares / shares.max() if shares.any() else shares

    def distribution(self, tick: Tick) -> np.ndarray:
        out = np.empty(tick.cand_idx.shape[0])
        k.split_weights(tick.cand_ptr, tick.cand_group, self.shares, out)
        return out

    def decide(self, tick: Tick) -> Decisions:
        return self._draw(tick, self.distribution(tick))


class Oracle(Strategy):
    """The candidate of highest true expected value (needs the truth; a reference only).

    It is not a policy one could log and evaluate: its decisions carry no distribution
    (``probabilities`` is empty), so the simulator neither logs nor evaluates it.
    """

    def decide(self, tick: Tick) -> Decisions:
        n = tick.cand_ptr.shape[0] - 1
        pos = np.empty(n, dtype=np.int64)
        best = np.empty(n)
        k.row_argmax(tick.cand_ptr, tick.value, pos, best)
        return batch_decisions(tick, pos, np.ones(n), np.zeros(0))


class PolicyStrategy(Strategy):
    """An allocator engine (optionally constrained) learning from the batch outcomes."""

    def __init__(
        self,
        name: str,
        engine: Any,
        arms: ScenarioArms,
        seed: int,
        contracts: ConstraintSet | None = None,
    ) -> None:
        super().__init__(name, seed)
        self.registry = make_registry(arms)
        features = arms.features if engine.policy.USES_ARM_FEATURES else None
        self.engine = Engine(engine.policy, contracts, self.registry, seed, features)
        self.policy = self.engine.policy
        self.objective = Objective(engine.objective, self.registry)
        self.contextual = self.policy.n_features is not None
        self.constrained = contracts is not None and bool(contracts.constraints)
        self._categories = np.array(arms.categories)
        self._tiers = np.array(arms.city_tiers)

    def decide(self, tick: Tick) -> Decisions:
        ctx = tick.contexts if self.contextual else None
        attrs = None
        if self.constrained:
            attrs = {
                "category": self._categories[tick.category],
                "city_tier": self._tiers[tick.city_tier],
            }
        return self.engine.decide_batch(tick.cand_ptr, tick.cand_idx, ctx, tick.timestamps, attrs)

    def learn(self, tick: Tick, arms: np.ndarray, outcomes: tuple[np.ndarray, ...]) -> None:
        click, order, gmv = outcomes
        reward = self.objective.reward(arms, click, order, gmv)
        ctx = tick.contexts if self.contextual else None
        self.policy.learn_outcomes(arms, click, order, gmv, reward, ctx)

    def metrics(self) -> dict[str, float]:
        if not self.constrained:
            return {}
        out: dict[str, float] = {}
        for r in self.engine.report():
            out[f"contract.{r.name}.backstop_rate"] = r.backstops / max(r.impressions, 1)
            out[f"contract.{r.name}.cost"] = r.cost
            if r.worst_window_slack is not None:
                out[f"contract.{r.name}.layer_worst_slack"] = r.worst_window_slack
        return out


class ExploreThenCommit(PolicyStrategy):
    """A/B test then commit: uniform traffic while exploring, then greedy and frozen."""

    def __init__(
        self, spec: ExploreThenCommitSpec, objective: ObjectiveConfig, arms: ScenarioArms,
        seed: int, start_s: float,
    ) -> None:  # fmt: skip
        policy = parse_config(NormalGammaConfig, {"rule": "greedy", "epsilon": 0.0})
        engine = resolve_engine(
            {"policy": policy.model_dump(mode="json")}, objective.model_dump(mode="json"), (), (),
            spec.name,
        )  # fmt: skip
        super().__init__(spec.name, engine, arms, seed)
        self.commit_at = start_s + spec.explore_days * 86400.0

    def decide(self, tick: Tick) -> Decisions:
        if tick.timestamps[0] < self.commit_at:
            return self._draw(tick, uniform_probs(tick.cand_ptr))
        return super().decide(tick)

    def learn(self, tick: Tick, arms: np.ndarray, outcomes: tuple[np.ndarray, ...]) -> None:
        if tick.timestamps[0] < self.commit_at:
            super().learn(tick, arms, outcomes)
