"""The facade: delayed feedback, expiry, bounds, reload, metrics, bad input."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from allocator import ConfigError, InvalidInputError, UnknownArmError
from allocator.policies.state import Role
from allocator.serving import Allocator, AllocatorConfig, UpdateStatus
from tests.serving.helpers import KINDS, SHARED, T0, config, context_for

CANDS = ["taobao", "douyin", "merchant:1", "merchant:4"]


def test_feedback_late_twice_or_never():
    alloc = Allocator(config(reward_wait_s=100.0), seed=1)
    d = [alloc.decide(CANDS, timestamp=T0 + i) for i in range(10)]
    assert alloc.update(d[3].decision_id, {"order": 1, "gmv": 50}, timestamp=T0 + 20) == "applied"
    assert alloc.update(d[3].decision_id, {"order": 1}, timestamp=T0 + 21) == "duplicate"
    assert alloc.update("nope", {"order": 1}) == UpdateStatus.UNKNOWN
    # The rest never get feedback: they expire once, with the default outcome.
    assert alloc.expire(T0 + 150) == 9
    assert alloc.expire(T0 + 500) == 0
    assert alloc.update(d[5].decision_id, {"order": 1}) == "duplicate"
    m = alloc.metrics()
    assert (m["updates"], m["expired"], m["duplicates"], m["unknown"], m["pending"]) == (
        1, 9, 2, 1, 0,
    )  # fmt: skip
    assert int(alloc.policy.n_observations.sum()) == 10
    alpha, beta = alloc.policy.posterior(np.arange(alloc.registry.n_arms))
    assert alpha[d[3].arm_index] == 2.0  # one order on Beta(1, 1)
    assert alpha.sum() - alpha.size == 1.0 and beta.sum() - beta.size == 9.0


def test_reward_outside_the_policy_domain_is_rejected_and_kept_pending():
    alloc = Allocator(config(), seed=1)
    d = alloc.decide(CANDS, timestamp=T0)
    with pytest.raises(InvalidInputError, match="expects rewards in"):
        alloc.update(d.decision_id, {"order": 3.0})
    assert alloc.metrics()["pending"] == 1
    assert alloc.update(d.decision_id, {"order": 1.0}) == UpdateStatus.APPLIED


def test_expired_decisions_learn_the_default_exactly_once():
    cfg = config(reward_wait_s=10.0, default_outcome={"order": 1.0})
    alloc = Allocator(cfg, seed=2)
    decisions = [alloc.decide(CANDS, timestamp=T0 + i * 0.01) for i in range(50)]
    alloc.expire(T0 + 11)
    alloc.expire(T0 + 100)
    for d in decisions:
        assert alloc.update(d.decision_id, {"order": 0}) == UpdateStatus.DUPLICATE
    alpha, beta = alloc.policy.posterior(np.arange(alloc.registry.n_arms))
    assert alpha.sum() - alpha.size == pytest.approx(50.0)  # prior Beta(1,1) everywhere
    assert beta.sum() - beta.size == pytest.approx(0.0)


def test_memory_stays_bounded_under_a_flood_without_feedback():
    alloc = Allocator(config(pending_capacity=1000, reward_wait_s=1e9), seed=3)
    for i in range(5000):
        alloc.decide(CANDS, timestamp=T0 + i * 1e-3)
    m = alloc.metrics()
    assert m["pending"] == 1000 and m["evicted"] == 4000
    assert alloc._state.pending.n_finished <= 1000
    assert int(alloc.policy.n_observations.sum()) == 4000  # evicted ones learned the default


def test_reward_combines_outcomes_with_group_take_rates():
    cfg = config(kind="normal_gamma")
    alloc = Allocator(cfg, seed=4)
    d = alloc.decide(["taobao"], timestamp=T0)
    alloc.update(d.decision_id, {"order": 1.0, "gmv": 200.0, "click": 1.0})
    mu, _kappa, _, _ = alloc.policy.posterior([d.arm_index])
    assert mu[0] == pytest.approx((1.0 + 0.01 * 200 * 0.03) / 2.0)  # prior mean 0, kappa 1


@pytest.mark.parametrize("kind", KINDS)
def test_reconfigure_keeps_learned_state(kind):
    alloc = Allocator(config(kind), seed=5)
    for i in range(300):
        d = alloc.decide(CANDS, context=context_for(kind, i), timestamp=T0 + i)
        alloc.update(d.decision_id, {"order": float(d.arm_id == "merchant:4")})
    alloc.policy.refresh()
    state = alloc.policy.state
    learned = {
        f.name: np.array(getattr(state, f.name)[:8])
        for f in state.select(Role.PER_ARM)
        if f.has(Role.LEARNED | Role.PRIOR)
    }
    cfg = config(kind).model_dump()
    cfg["engine"]["policy"]["epsilon"] = 0.2
    cfg["arms"] = [a for a in cfg["arms"] if a["id"] != "merchant:0"]
    extra = {"id": "merchant:new", "group": "mini_shop"}
    if kind in SHARED:
        extra["features"] = [1.0, 0.5]
    cfg["arms"].append(extra)
    cfg["constraints"]["constraints"][0]["schedule"]["start_value"] = 0.1
    alloc.reconfigure(AllocatorConfig.model_validate(cfg))
    assert alloc.policy.config.epsilon == 0.2
    for name, before in learned.items():
        np.testing.assert_allclose(getattr(alloc.policy.state, name)[:8], before, err_msg=name)
    with pytest.raises(UnknownArmError, match="retired"):
        alloc.decide(["merchant:0", "taobao"], context=context_for(kind, 0), timestamp=T0 + 400)
    d = alloc.decide(["merchant:new", "taobao"], context=context_for(kind, 0), timestamp=T0 + 401)
    assert d.arm_id in ("merchant:new", "taobao")


def test_rejected_config_leaves_the_running_allocator_untouched():
    alloc = Allocator(config(), seed=6)
    for i in range(50):
        alloc.decide(CANDS, timestamp=T0 + i)
    before = alloc.snapshot_state()
    bad = config().model_dump()
    bad["arms"][1]["group"] = "mini_shop"  # an existing arm cannot change group
    with pytest.raises(InvalidInputError, match="was registered in group 'douyin'"):
        alloc.reconfigure(AllocatorConfig.model_validate(bad))
    other_kind = config("normal_gamma")
    with pytest.raises(InvalidInputError, match="would discard the learned state"):
        alloc.reconfigure(other_kind)
    with pytest.raises(ConfigError, match="unknown target group"):
        raw = config().model_dump()
        raw["constraints"]["constraints"][0]["target"] = {"group": "ghost"}
        from allocator.config import parse_config

        alloc.reconfigure(parse_config(AllocatorConfig, raw))
    after = alloc.snapshot_state()
    assert before[1] == after[1]
    for k in before[0]:
        np.testing.assert_array_equal(before[0][k], after[0][k], err_msg=k)
    alloc.decide(CANDS, timestamp=T0 + 60)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda a: a.decide(["taobao", "ghost"], timestamp=T0), UnknownArmError, "'ghost'"),
        (lambda a: a.decide([], timestamp=T0), InvalidInputError, "candidates is empty"),
        (
            lambda a: a.decide(np.array([], dtype="U1"), timestamp=T0),
            InvalidInputError,
            "candidates is empty",
        ),
        (lambda a: a.decide(["taobao", "taobao"], timestamp=T0), InvalidInputError, "twice"),
        (lambda a: a.decide(CANDS, timestamp=T0 - 100), InvalidInputError, "max_clock_skew_s"),
        (lambda a: a.decide(CANDS, timestamp="x"), InvalidInputError, "timestamp = 'x'"),
        (lambda a: a.decide(CANDS, timestamp=10**400), InvalidInputError, "<int of 1,329 bits>"),
        (lambda a: a.update("r0-0", {"order": 1.0}, 10**400), InvalidInputError, "timestamp = <"),
        (
            lambda a: a.decide(CANDS, context=[1.0], timestamp=T0),
            InvalidInputError,
            "takes no context",
        ),
        (lambda a: a.update("r0-0", {"gmv": float("nan")}), InvalidInputError, "outcome.gmv"),
        (lambda a: a.update("r0-0", {"gmv": -3.0}), InvalidInputError, "outcome.gmv = -3.0"),
        (lambda a: a.update("r0-0", {"refund": 1.0}), InvalidInputError, "outcome.refund"),
    ],
)
def test_bad_input_is_typed_and_harmless(call, exc, match):
    alloc = Allocator(config(), seed=7)
    d = alloc.decide(CANDS, timestamp=T0)
    before = alloc.snapshot_state()
    with pytest.raises(exc, match=match):
        call(alloc)
    after = alloc.snapshot_state()
    for k in before[0]:
        np.testing.assert_array_equal(before[0][k], after[0][k], err_msg=k)
    assert alloc.metrics()["rejected"] == 1
    assert alloc.update(d.decision_id, {"order": 1.0}) == UpdateStatus.APPLIED


def test_contextual_bad_features():
    alloc = Allocator(config("linear_gaussian"), seed=8)
    with pytest.raises(InvalidInputError, match=r"context has shape \(2,\), expected \(3,\)"):
        alloc.decide(CANDS, context=[1.0, 2.0], timestamp=T0)
    with pytest.raises(InvalidInputError, match=r"'height' is not in serving.feature_names"):
        alloc.decide(CANDS, context={"height": 1.0}, timestamp=T0)
    before = alloc.snapshot_state()[0]
    with pytest.raises(InvalidInputError, match=r"context\['age'\] = <int of 1,329 bits>"):
        alloc.decide(CANDS, context={"age": 10**400}, timestamp=T0)  # past float range
    with pytest.raises(InvalidInputError, match="context holds an integer beyond float64"):
        alloc.decide(CANDS, context=[0.1, 10**400, 0.0], timestamp=T0)
    for name, value in alloc.snapshot_state()[0].items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    d = alloc.decide(CANDS, context={"age": 0.3, "referral": 1.0}, timestamp=T0)
    np.testing.assert_array_equal(alloc._state.pending.get(d.decision_id).context, [0.3, 0, 1])


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="signatures exist only when compiling")
def test_warmup_compiles_everything_once():
    from allocator.kernels import beta as kb
    from allocator.kernels import choice, mixing, per_arm

    alloc = Allocator(config(), seed=9)
    alloc.warmup()
    kernels = [
        per_arm.decide_per_arm,
        mixing.constrain_and_draw,
        kb.update_beta,
        kb.update_beta_batch,
        choice.mark_candidates,
    ]
    before = [len(k.signatures) for k in kernels]
    idx = alloc.registry.lookup(CANDS)
    for i in range(200):
        d = alloc.decide(CANDS if i % 2 else idx, attrs={"slot": "top"}, timestamp=T0 + i)
        alloc.update(d.decision_id, {"order": float(i % 3 == 0)})
    alloc.policy.decide_batch(np.array([0, 2]), idx[:2])
    assert [len(k.signatures) for k in kernels] == before
    assert alloc.metrics()["decisions"] == 200  # warm-up leaves no trace


def test_periodic_autosave(tmp_path):
    path = tmp_path / "auto.npz"
    alloc = Allocator(config(), seed=10, autosave_path=path, autosave_every_s=60.0)
    alloc.decide(CANDS, timestamp=T0)
    assert not path.exists()  # the first decision only starts the clock
    for i in range(1, 200):
        alloc.decide(CANDS, timestamp=T0 + i)
    assert path.exists() and alloc.metrics()["saves"] == 3  # at T0+60, +120, +180
    restored = Allocator.load(path)
    assert restored.metrics()["decisions"] == 181  # saved right after the decision at T0+180
    with pytest.raises(InvalidInputError, match="autosave_every_s"):
        alloc.set_autosave(path, 0.0)


def test_configs_as_mappings_and_typed_errors_for_anything_else():
    from allocator import ConfigError, make_policy
    from allocator.registry import ArmRegistry

    raw = config().model_dump(mode="json")
    alloc = Allocator(raw, seed=1)
    assert alloc.decide(CANDS, timestamp=T0).arm_id in CANDS
    raw["engine"]["policy"]["epsilon"] = 0.3
    alloc.reconfigure(raw)
    assert alloc.policy.config.epsilon == 0.3
    with pytest.raises(ConfigError, match="epsilon"):
        alloc.reconfigure({**raw, "engine": {"policy": {"kind": "beta_bernoulli", "epsilon": 7}}})
    with pytest.raises(ConfigError, match="got int"):
        Allocator(42, seed=1)  # type: ignore[arg-type]
    reg = ArmRegistry.build(["a", "b"], ["g", "g"])
    pol = make_policy({"kind": "normal_gamma", "half_life": 100}, reg, seed=0)
    assert pol.config.kind == "normal_gamma" and pol.gamma < 1.0
    with pytest.raises(ConfigError, match="does not match any of the expected tags"):
        make_policy({"kind": "magic"}, reg, seed=0)


def test_every_refresh_is_counted_and_a_smaller_pending_table_evicts_at_once():
    alloc = Allocator(config(reward_wait_s=1e6, refresh_every_s=None), seed=2)
    ids = [alloc.decide(CANDS, timestamp=T0 + i).decision_id for i in range(300)]
    for d in ids[:200]:
        alloc.update(d, {"order": 1.0})
    assert alloc.metrics()["refreshes"] == alloc.policy.version == 3  # every 64 updates
    raw = config(reward_wait_s=1e6, refresh_every_s=None).model_dump(mode="json")
    raw["serving"]["pending_capacity"] = 40
    alloc.reconfigure(raw)
    m = alloc.metrics()
    assert m["pending"] == 40 and m["evicted"] == 60
    assert alloc.update(ids[-1], {"order": 1.0}) is UpdateStatus.APPLIED  # the newest kept
    assert alloc.update(ids[259], {"order": 1.0}) is UpdateStatus.DUPLICATE  # evicted: learned


def test_factored_click_model_serves_restores_and_cannot_be_swapped_live(tmp_path):
    """An allocator on the factored model with the hybrid click learns events, loads back
    to the same decisions; a reload to the shared click (other state arrays) is refused
    and leaves it untouched."""
    raw = config("shared_linear").model_dump()
    raw["engine"]["policy"] = {
        "kind": "factored_value", "n_context_features": 3, "n_arm_features": 2,
        "click_model": "hybrid", "offset_sd": 0.5, "objective": raw["engine"]["objective"],
    }  # fmt: skip
    alloc = Allocator(AllocatorConfig.model_validate(raw), seed=7)
    for i in range(200):
        d = alloc.decide(CANDS, context=context_for("shared_linear", i), timestamp=T0 + i)
        won = float(d.arm_id == "merchant:4")
        alloc.update(d.decision_id, {"click": won, "order": won, "gmv": 80.0 * won})
    alloc.policy.refresh()
    assert type(alloc.policy).__name__ == "HybridClickFactoredPolicy"
    assert alloc.policy.offsets()[0].max() > 0.0  # merchant:4's clicks moved its offset
    alloc.save(tmp_path / "state.npz")
    twin = Allocator.load(tmp_path / "state.npz")
    assert type(twin.policy) is type(alloc.policy)
    ctx = context_for("shared_linear", 3)
    a = alloc.decide(CANDS, context=ctx, timestamp=T0 + 500)
    b = twin.decide(CANDS, context=ctx, timestamp=T0 + 500)
    assert (a.arm_id, a.propensity) == (b.arm_id, b.propensity)
    shared = dict(raw, engine=dict(raw["engine"], policy=dict(raw["engine"]["policy"])))
    del shared["engine"]["policy"]["click_model"], shared["engine"]["policy"]["offset_sd"]
    before = alloc.snapshot_state()
    with pytest.raises(InvalidInputError, match="would discard the learned state"):
        alloc.reconfigure(AllocatorConfig.model_validate(shared))
    for k, v in before[0].items():
        np.testing.assert_array_equal(v, alloc.snapshot_state()[0][k], err_msg=k)
