"""Synthetic worlds with a known truth, for testing evaluators.

``ContextualWorld``: K arms, a logistic click rate ``μ(x, a) = σ(b_a + θ_a·x)``, a non-uniform
logging policy and a frozen target policy, both softmaxes over the round's candidates with
known probabilities. The truth of a log is ``mean_i Σ_a π(a|x_i) μ(x_i, a)`` over its rounds.

``bernoulli_log`` / ``on_policy_value``: a context-free Bernoulli world, logged uniformly or
by an ε-mixture, and the same world played online, for rejection replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from allocator import ArmRegistry, Policy
from allocator.replay import LoggedData

LOG_UNIFORM_SHARE = 0.2


@dataclass(frozen=True)
class ContextualWorld:
    theta: np.ndarray  # (K, d)
    bias: np.ndarray  # (K,)
    log_w: np.ndarray  # (K, d), logging scores
    target_w: np.ndarray  # (K, d), target scores

    @property
    def n_arms(self) -> int:
        return int(self.bias.shape[0])

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return tuple(f"arm:{a}" for a in range(self.n_arms))

    def mean_reward(self, x: np.ndarray) -> np.ndarray:
        """μ(x, a) for every row and arm, (n, K)."""
        return 1.0 / (1.0 + np.exp(-(self.bias + x @ self.theta.T)))


def make_world(seed: int = 0, n_arms: int = 4, n_features: int = 3) -> ContextualWorld:
    rng = np.random.default_rng(seed)
    return ContextualWorld(
        theta=rng.normal(0.0, 0.8, (n_arms, n_features)),
        bias=rng.normal(-0.5, 0.5, n_arms),
        log_w=rng.normal(0.0, 0.8, (n_arms, n_features)),
        target_w=rng.normal(0.0, 0.8, (n_arms, n_features)),
    )


class Logged(NamedTuple):
    data: LoggedData
    target: np.ndarray  # (nnz,) the target policy's probability of each candidate
    truth: float


def _masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True)) * mask
    return e / e.sum(axis=1, keepdims=True)


def log_rounds(
    world: ContextualWorld, n: int, rng: np.random.Generator, subsets: bool = True
) -> Logged:
    """n rounds logged by the world's logging policy; ``subsets``: 2..K random candidates."""
    k, d = world.theta.shape
    x = rng.normal(size=(n, d))
    if subsets:
        sizes = rng.integers(2, k + 1, n)
        ranks = np.argsort(np.argsort(rng.random((n, k)), axis=1), axis=1)
        mask = ranks < sizes[:, None]
    else:
        mask = np.ones((n, k), dtype=bool)
    sizes = mask.sum(axis=1)
    logging = (1 - LOG_UNIFORM_SHARE) * _masked_softmax(x @ world.log_w.T, mask)
    logging += LOG_UNIFORM_SHARE * mask / sizes[:, None]
    target = _masked_softmax(2.0 * x @ world.target_w.T, mask)
    cdf = np.cumsum(logging, axis=1)
    actions = np.minimum((cdf < rng.random(n)[:, None]).sum(axis=1), k - 1)
    actions = np.where(mask[np.arange(n), actions], actions, np.argmax(mask * cdf, axis=1))
    mu = world.mean_reward(x)
    rows = np.arange(n)
    rewards = (rng.random(n) < mu[rows, actions]).astype(np.float64)
    data = LoggedData(
        arm_ids=world.arm_ids,
        actions=actions.astype(np.int64),
        rewards=rewards,
        pscores=logging[rows, actions],
        contexts=x,
        cand_ptr=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        cand_idx=np.nonzero(mask)[1].astype(np.int64),
        cand_prob=logging[mask],
    )
    return Logged(data, target[mask], float(np.mean((target * mu).sum(axis=1))))


def bernoulli_log(
    means: np.ndarray,
    n: int,
    rng: np.random.Generator,
    epsilon: float = 1.0,
    favour: np.ndarray | None = None,
    with_cand_prob: bool = False,
) -> LoggedData:
    """n rounds over all arms logged by ``ε·uniform + (1 − ε)·favour`` (fixed distribution)."""
    k = means.shape[0]
    favour = np.full(k, 1.0 / k) if favour is None else favour
    p = epsilon / k + (1.0 - epsilon) * favour
    actions = rng.choice(k, size=n, p=p).astype(np.int64)
    rewards = (rng.random(n) < means[actions]).astype(np.float64)
    extra = {}
    if with_cand_prob:
        extra = {
            "cand_ptr": np.arange(n + 1, dtype=np.int64) * k,
            "cand_idx": np.tile(np.arange(k, dtype=np.int64), n),
            "cand_prob": np.tile(p, n),
        }
    return LoggedData(
        arm_ids=tuple(f"arm:{a}" for a in range(k)),
        actions=actions,
        rewards=rewards,
        pscores=p[actions],
        **extra,
    )


def bernoulli_registry(k: int) -> ArmRegistry:
    reg = ArmRegistry(capacity=max(16, k))
    reg.add([f"arm:{a}" for a in range(k)], "g")
    return reg


def on_policy_value(
    policy: Policy, means: np.ndarray, steps: int, rng: np.random.Generator
) -> float:
    """Mean reward of ``policy`` played online for ``steps`` rounds (learning as it goes)."""
    cand = np.arange(means.shape[0], dtype=np.int64)
    u = rng.random(steps)
    total = 0.0
    for t in range(steps):
        arm = policy.decide(cand).arm_index
        r = float(u[t] < means[arm])
        policy.update(arm, r)
        total += r
    return total / steps


def learning_log(
    world: ContextualWorld, logger: Policy, n: int, rng: np.random.Generator, batch: int = 50
) -> LoggedData:
    """n rounds over all arms logged by a learning ``logger`` that decides ``batch`` rounds
    at a time and learns from them before the next batch (exact logged distributions)."""
    k, d = world.theta.shape
    x = rng.normal(size=(n, d))
    actions = np.empty(n, dtype=np.int64)
    rewards = np.empty(n)
    probs = np.empty((n, k))
    ptr = np.arange(batch + 1, dtype=np.int64) * k
    for lo in range(0, n, batch):
        m = min(batch, n - lo)
        out = logger.decide_batch(ptr[: m + 1], np.tile(np.arange(k), m), x[lo : lo + m])
        actions[lo : lo + m] = out.arms
        probs[lo : lo + m] = out.probabilities.reshape(m, k)
        mu = world.mean_reward(x[lo : lo + m])[np.arange(m), out.arms]
        rewards[lo : lo + m] = rng.random(m) < mu
        logger.update_batch(out.arms, rewards[lo : lo + m], x[lo : lo + m])
    rows = np.arange(n)
    return LoggedData(
        arm_ids=world.arm_ids, actions=actions, rewards=rewards, pscores=probs[rows, actions],
        contexts=x, cand_ptr=np.arange(n + 1, dtype=np.int64) * k,
        cand_idx=np.tile(np.arange(k, dtype=np.int64), n), cand_prob=probs.ravel(),
    )  # fmt: skip


def online_value(
    policy: Policy, world: ContextualWorld, steps: int, rng: np.random.Generator
) -> float:
    """Mean expected reward ``Σ_a π_t(a|x_t) μ(x_t, a)`` of ``policy`` played online."""
    k, d = world.theta.shape
    cand = np.arange(k, dtype=np.int64)
    total = 0.0
    for _ in range(steps):
        x = rng.normal(size=d)
        mu = world.mean_reward(x[None, :])[0]
        arm = policy.decide(cand, x).arm_index
        total += float(policy.probabilities @ mu)
        policy.update(arm, float(rng.random() < mu[arm]), x)
    return total / steps
