"""Many threads, one allocator: nothing lost or double counted. Replicas merge exactly."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from allocator.policies.state import Role
from allocator.serving import Allocator, UpdateStatus
from tests.serving.helpers import BINARY, T0, config, context_for

CANDS = ["taobao", "douyin", "merchant:0", "merchant:2", "merchant:5"]


def hammer(alloc: Allocator, n_threads: int, per_thread: int) -> list[int]:
    """Each thread decides, then updates its own and its neighbour's decisions (racing)."""
    issued: list[list[str]] = [[] for _ in range(n_threads)]
    applied = [0] * n_threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(k: int) -> None:
        try:
            barrier.wait()
            rng = np.random.default_rng(k)
            for i in range(per_thread):
                d = alloc.decide(CANDS, timestamp=T0 + 1.0)
                issued[k].append(d.decision_id)
                if i % 3 == 0 and i:
                    victim = issued[(k + 1) % n_threads]
                    for decision_id in (issued[k][-2], victim[-1] if victim else "none"):
                        s = alloc.update(decision_id, {"order": float(rng.random() < 0.2)})
                        applied[k] += s == UpdateStatus.APPLIED
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return applied


@pytest.mark.parametrize("per_thread", [
    pytest.param(3_000, marks=pytest.mark.heavy), pytest.param(50_000, marks=pytest.mark.slow),
])  # fmt: skip
def test_threads_apply_every_update_exactly_once(per_thread):
    alloc = Allocator(config(reward_wait_s=1e9, pending_capacity=10_000_000), seed=1)
    alloc.warmup()
    applied = hammer(alloc, 8, per_thread)
    m = alloc.metrics()
    assert m["decisions"] == 8 * per_thread
    assert m["updates"] == sum(applied)
    alpha, beta = alloc.policy.posterior(np.arange(alloc.registry.n_arms))
    assert alpha.sum() + beta.sum() - 2 * alpha.size == pytest.approx(sum(applied))
    assert int(alloc.policy.n_observations.sum()) == sum(applied)
    assert m["pending"] == 8 * per_thread - sum(applied)


def run_fleet(kind: str) -> tuple[Allocator, Allocator, list[Allocator]]:
    """Two replicas decide and learn 600 requests, merged into a learner every 200; a
    single allocator learns the same decisions and outcomes."""
    cfg = config(kind, reward_wait_s=1e9)
    single = Allocator(cfg, seed=1)
    learner = Allocator(cfg, seed=2, replica="learner")
    replicas = [Allocator(cfg, seed=3, replica="a"), Allocator(cfg, seed=4, replica="b")]
    rng = np.random.default_rng(0)
    for i in range(600):
        rep = replicas[i % 2]
        x = context_for(kind, i)
        d = rep.decide(CANDS, context=x, timestamp=T0 + i)
        s = single.decide([d.arm_id], context=x, timestamp=T0 + i)
        outcome = {"order": float(rng.random() < 0.3), "gmv": float(rng.gamma(2, 30))}
        if kind in BINARY:
            outcome.pop("gmv")
        rep.update(d.decision_id, outcome)
        single.update(s.decision_id, outcome)
        if i % 200 == 199:
            for r in replicas:
                learner.merge(r.export_delta())
    for r in replicas:
        learner.merge(r.export_delta())  # an empty delta is harmless
    return learner, single, replicas


@pytest.mark.parametrize(
    "kind", ["beta_bernoulli", "normal_gamma", "linear_gaussian", "shared_linear", "hybrid_linear"]
)
@pytest.mark.heavy
def test_two_replicas_merge_to_the_single_replica_posterior(kind):
    learner, single, _ = run_fleet(kind)
    a, b = learner.policy, single.policy
    for f in a.state.select(Role.ADDITIVE):
        np.testing.assert_allclose(
            getattr(a.state, f.name), getattr(b.state, f.name), rtol=0, atol=1e-9, err_msg=f.name
        )
    np.testing.assert_array_equal(a.n_observations, b.n_observations)
    a.refresh()
    b.refresh()
    if kind in ("beta_bernoulli", "normal_gamma"):
        for x, y in zip(a.posterior(np.arange(8)), b.posterior(np.arange(8)), strict=True):
            np.testing.assert_allclose(x, y, atol=1e-9)
    elif kind == "linear_gaussian":
        np.testing.assert_allclose(a.state.mu[:8], b.state.mu[:8], atol=1e-9)
    else:
        np.testing.assert_allclose(a.state.mu, b.state.mu, atol=1e-9)


@pytest.mark.parametrize("kind", ["logistic", "shared_logistic", "hybrid_logistic"])
@pytest.mark.heavy
def test_logistic_replicas_merge_close_to_the_single_replica_posterior(kind):
    """A logistic factor is linearised at the mean of the model that observes it, so the
    merged posterior is the sum of the replicas' factors exactly, and close to (not equal
    to) the single model's: means within 0.05, a small fraction of their posterior sd."""
    learner, single, replicas = run_fleet(kind)
    a, b = learner.policy, single.policy
    for f in a.state.select(Role.ADDITIVE):
        total = sum(getattr(r.policy.state, f.name) for r in replicas)
        np.testing.assert_allclose(getattr(a.state, f.name), total, atol=1e-9, err_msg=f.name)
    a.refresh()
    b.refresh()
    n = 8 if kind == "logistic" else None  # per-arm arrays: the registered arms
    gap = np.abs(a.state.mu[:n] - b.state.mu[:n]).max()
    sd = np.sqrt(np.diagonal(b.state.a_inv[:n], axis1=-2, axis2=-1)).min()
    print(f"merged vs single mean: {gap:.4f} (smallest posterior sd {sd:.3f})")
    assert gap <= 0.05


def test_replica_adopts_published_learner_snapshot(tmp_path):
    cfg = config(reward_wait_s=1e9)
    learner = Allocator(cfg, seed=1, replica="learner")
    replica = Allocator(cfg, seed=2, replica="a")
    for i in range(300):
        d = replica.decide(CANDS, timestamp=T0 + i)
        replica.update(d.decision_id, {"order": float(d.arm_id == "merchant:2")})
    learner.merge(replica.export_delta())
    learner.save(tmp_path / "published.npz")
    replica.load_published(tmp_path / "published.npz")
    np.testing.assert_array_equal(replica.policy.state.s1, learner.policy.state.s1)
    delta = replica.export_delta()
    assert str(delta.pop("kind")) == "beta_bernoulli"  # the family tag
    assert not any(np.any(v) for v in delta.values())  # nothing new since the adopted state
    d = replica.decide(CANDS, timestamp=T0 + 400)
    assert d.decision_id.startswith("a-")


def test_merge_rejects_foreign_deltas():
    from allocator import InvalidInputError

    beta = Allocator(config(), seed=1)
    ng = Allocator(config("normal_gamma"), seed=1)
    with pytest.raises(InvalidInputError, match="from a normal_gamma policy, this is a beta"):
        beta.merge(ng.export_delta())
    delta = beta.export_delta()
    delta["s1"] = np.zeros(99)
    with pytest.raises(InvalidInputError, match=r"covers|shape"):
        beta.merge(delta)


@pytest.mark.parametrize(
    ("replica_kind", "learner_kind"),
    [("logistic", "linear_gaussian"), ("linear_gaussian", "logistic"),
     ("shared_logistic", "shared_linear"), ("hybrid_logistic", "hybrid_linear")],
)  # fmt: skip
def test_a_delta_of_a_family_with_the_same_arrays_is_refused(replica_kind, learner_kind):
    """Logistic and linear Gaussian models keep arrays of one name and shape holding
    different quantities: the family tag tells them apart, and nothing changes."""
    from allocator import InvalidInputError

    learner = Allocator(config(learner_kind), seed=1)
    replica = Allocator(config(replica_kind), seed=2)
    for i in range(30):
        d = replica.decide(CANDS, context=[0.5, -0.2, 1.0], timestamp=T0 + i)
        replica.update(d.decision_id, {"order": float(i % 3 == 0)})
    replica.expire(T0 + 1e6)
    delta = replica.export_delta()
    assert set(delta) - {"kind"} == set(learner.export_delta()) - {"kind"}  # same arrays
    before = learner.snapshot_state()[0]
    with pytest.raises(InvalidInputError, match=f"from a {replica_kind} policy"):
        learner.merge(delta)
    untagged = {k: v for k, v in delta.items() if k != "kind"}
    with pytest.raises(InvalidInputError, match="lacks its family tag"):
        learner.merge(untagged)
    after = learner.snapshot_state()[0]
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def forged_delta(kind: str, **arrays):
    alloc = Allocator(config(kind, reward_wait_s=1e9), seed=2)
    d = alloc.decide(CANDS, timestamp=T0)
    alloc.update(d.decision_id, {"order": 1.0, "gmv": 100.0})
    delta = alloc.export_delta()
    arm = alloc.registry.index_of(d.arm_id)
    for name, value in arrays.items():
        delta[name] = delta[name].astype(np.asarray(value).dtype)
        delta[name][arm] = value
    return delta


@pytest.mark.parametrize(
    ("kind", "arrays", "match"),
    [
        ("beta_bernoulli", {"s1": 1e17}, "more successes plus failures than observations"),
        ("beta_bernoulli", {"n_obs": 0}, "more successes plus failures than observations"),
        ("beta_bernoulli", {"n_obs": 1.5}, "whole numbers"),
        ("beta_bernoulli", {"n_obs": 2**62}, "whole numbers"),
        ("normal_gamma", {"sn": 1e-300}, "sums no observations can produce"),
        ("normal_gamma", {"sn": 2.0}, "sums no observations can produce"),
        ("normal_gamma", {"sxx": 0.0}, "sums no observations can produce"),
    ],
)
def test_forged_per_arm_deltas_are_refused_and_change_nothing(kind, arrays, match):
    """Sums that no observations within the rewards' range can produce (a count of one
    with 10^17 successes, a fractional or wrapping count, a tiny count beside a real sum
    that would make the posterior sd infinite) are refused before anything changes."""
    from allocator import InvalidInputError

    learner = Allocator(config(kind, reward_wait_s=1e9), seed=1)
    before = learner.snapshot_state()[0]
    with pytest.raises(InvalidInputError, match=match):
        learner.merge(forged_delta(kind, **arrays))
    after = learner.snapshot_state()[0]
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    learner.merge(forged_delta(kind))  # the genuine delta is taken
    assert np.isfinite(learner.policy.state.sd).all()


def test_counts_that_wrap_int64_when_summed_are_refused():
    from allocator import InvalidInputError

    learner = Allocator(config(reward_wait_s=1e9), seed=1)
    delta = forged_delta("beta_bernoulli")
    delta["n_obs"] = np.full_like(delta["n_obs"], 2**61)  # sums to 2**64 and more: wraps
    delta["s1"] = np.zeros_like(delta["s1"])
    with pytest.raises(InvalidInputError, match="model clock would pass"):
        learner.merge(delta)
    assert int(learner.policy.state.clock[0]) == 0


def test_statistics_moved_without_new_counts_refresh_their_arm():
    """With forgetting a genuine delta can move an arm's sums without a new count: the
    arm's cached posterior must follow the merged sums, not keep its old mean."""
    learner = Allocator(config(reward_wait_s=1e9), seed=1)
    delta = forged_delta("beta_bernoulli")
    learner.merge(delta)
    arm = int(np.flatnonzero(delta["n_obs"])[0])
    moved = {**delta, "n_obs": np.zeros_like(delta["n_obs"]), "s1": -0.5 * delta["s1"],
             "s0": np.zeros_like(delta["s0"])}  # fmt: skip
    moved["s0"][arm] = 0.5
    learner.merge(moved)
    s = learner.policy.state
    a, b = s.a0[arm] + s.s1[arm], s.b0[arm] + s.s0[arm]
    assert s.s1[arm] == 0.5 and s.s0[arm] == 0.5
    np.testing.assert_allclose(s.mean[arm], a / (a + b))
