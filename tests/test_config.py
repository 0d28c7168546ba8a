from __future__ import annotations

import pytest
from pydantic import ValidationError

from allocator import BetaBernoulliConfig, ConfigError, EngineConfig, load_engine_config
from allocator.config import (
    LinearGaussianConfig,
    ObjectiveConfig,
    SharedLinearConfig,
    parse_config,
)


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "engine.yaml"
    path.write_text(
        "policy:\n  kind: linear_gaussian\n  n_features: 3\n  half_life: 1000\n"
        "  group_priors: {mini_shop: {mean: [0.1, 0.0, 0.0]}}\n"
        "objective: {order: 1.0, gmv: 0.5, take_rates: {taobao: 0.03, mini_shop: 0.05}}\n"
    )
    cfg = load_engine_config(path)
    assert isinstance(cfg.policy, LinearGaussianConfig)
    assert cfg.policy.gamma == pytest.approx(0.5 ** (1 / 1000))
    assert cfg.objective.take_rates["mini_shop"] == 0.05


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"policy": {"kind": "nope"}}, "policy: Input tag 'nope'"),
        ({"policy": {"kind": "beta_bernoulli", "epsilon": 1.5}}, "policy.beta_bernoulli.epsilon"),
        ({"policy": {"kind": "beta_bernoulli", "prior": {"alpha": -1}}}, "prior.alpha"),
        (
            {"policy": {"kind": "beta_bernoulli", "discount": 0.9, "half_life": 10}},
            r"either discount \(0.9\) or half_life \(10.0\)",
        ),
        ({"policy": {"kind": "beta_bernoulli", "typo": 1}}, "typo: Extra inputs"),
        ({"policy": {"kind": "linear_gaussian"}}, "n_features: Field required"),
        (
            {
                "policy": {
                    "kind": "linear_gaussian",
                    "n_features": 2,
                    "group_priors": {"g": {"mean": [1.0]}},
                }
            },
            "group_priors.g.mean has length 1",
        ),
        (
            {"policy": {"kind": "shared_linear", "n_context_features": 100, "n_arm_features": 100}},
            "exceeds 4096",
        ),
        ({"policy": {"kind": "beta_bernoulli"}, "objective": {"order": 0.0}}, "all 0"),
        (
            {"policy": {"kind": "beta_bernoulli"}, "objective": {"take_rates": {"taobao": 1.2}}},
            "take_rates.taobao",
        ),
        ({"policy": {"kind": "normal_gamma", "prior": {"mean": float("nan")}}}, "prior.mean"),
        # pseudo-counts whose moments underflow (a ZeroDivisionError at build) or overflow
        ({"policy": {"kind": "beta_bernoulli", "prior": {"alpha": 5e-324}}}, "prior.alpha"),
        ({"policy": {"kind": "beta_bernoulli", "prior": {"beta": 1e13}}}, "prior.beta"),
        ({"policy": {"kind": "normal_gamma", "prior": {"kappa": 1e-7}}}, "prior.kappa"),
        ({"policy": {"kind": "normal_gamma", "prior": {"beta": 1e31}}}, "prior.beta"),
        # past the kernels' 64-bit integers (a numba typing error at the first update)
        ({"policy": {"kind": "beta_bernoulli", "refresh_every": 2**200}}, "refresh_every"),
        # every ordered impression's reward would be refused
        (
            {"policy": {"kind": "normal_gamma"}, "objective": {"click": 1e9, "order": 1.0}},
            "worth more than policy.max_abs_reward",
        ),
    ],
)
def test_invalid_configs_name_the_field(tmp_path, data, match):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=match):
        load_engine_config(path)


def test_unsafe_yaml_and_missing_file(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("policy: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_engine_config(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_engine_config(tmp_path / "missing.yaml")


def test_models_are_frozen():
    cfg = BetaBernoulliConfig()
    with pytest.raises(ValidationError):
        cfg.epsilon = 0.5  # type: ignore[misc]
    EngineConfig(policy=cfg, objective=ObjectiveConfig(click=1.0, order=0.0))
    SharedLinearConfig(n_context_features=4, n_arm_features=4)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("policy: {kind: beta_bernoulli}\npolicy: {kind: normal_gamma}\n", "line 2: key 'policy'"),
        ("policy:\n  kind: beta_bernoulli\n  epsilon: 0.1\n  epsilon: 0.2\n",
         "'epsilon' appears twice"),
        (b"\xff\xfe\x00", "not UTF-8 text"),
        ("policy: [\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_unreadable_yaml_is_a_config_error(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_engine_config(path)


def test_yaml_aliases_are_walked_once(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 25)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\npolicy: {kind: beta_bernoulli}\n")
    with pytest.raises(ConfigError, match="once its aliases are expanded"):
        load_engine_config(path)


def test_constructing_a_config_directly_raises_config_error():
    """The public boundary's promise: every error is an AllocatorError, even when a user
    builds a config in Python rather than from YAML; nested fields still name their path."""
    from allocator.serving import AllocatorConfig, ServingConfig

    with pytest.raises(ConfigError, match=r"BetaBernoulliConfig:\n  epsilon: .*less than 1"):
        BetaBernoulliConfig(epsilon=2.0)
    with pytest.raises(ConfigError, match=r"pending_capacity: .*greater than or equal to 1"):
        ServingConfig(pending_capacity=0)
    with pytest.raises(
        ConfigError, match=r"engine.policy.beta_bernoulli.epsilon: .*greater than or equal to 0"
    ):
        AllocatorConfig(engine={"policy": {"kind": "beta_bernoulli", "epsilon": -1}}, arms=[])
    # validation from data keeps pydantic's error (parse_config formats it)
    with pytest.raises(ValidationError):
        BetaBernoulliConfig.model_validate({"epsilon": 2.0})


def test_group_keyed_mappings_name_unknown_and_known_groups():
    from allocator.serving.config import AllocatorConfig

    arms = [{"id": "taobao", "group": "taobao"}, {"id": "m1", "group": "mini_shop"}]
    for engine, where in (
        ({"policy": {"kind": "beta_bernoulli", "group_priors": {"mini-shop": {}}}},
         r"group_priors: unknown groups \['mini-shop'\]"),
        ({"policy": {"kind": "beta_bernoulli"}, "objective": {"take_rates": {"jd": 0.1}}},
         r"take_rates: unknown groups \['jd'\]"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=where + r"; known groups: \['mini_shop', 'taobao'\]"):
            parse_config(AllocatorConfig, {"engine": engine, "arms": arms})
    ok = {"policy": {"kind": "beta_bernoulli"}, "objective": {"take_rates": {"taobao": 0.03}}}
    parse_config(AllocatorConfig, {"engine": ok, "arms": arms})


def test_scenario_group_names_are_checked_against_the_world():
    from allocator.config import load_yaml
    from allocator.scenario.config import ScenarioConfig

    data = load_yaml("configs/wechat_entry.yaml")
    policy = next(s for s in data["strategies"] if s["kind"] == "policy")
    policy["engine"]["policy"]["group_priors"] = {"nope": {}}
    with pytest.raises(ConfigError, match=r"engine.policy.group_priors: unknown groups \['nope'\]"):
        parse_config(ScenarioConfig, data)


@pytest.mark.parametrize("kind", ["beta_bernoulli", "normal_gamma"])
def test_priors_at_the_bounds_give_finite_posteriors_and_decisions(kind):
    """The smallest and largest pseudo-counts a config accepts keep every posterior moment
    and bank draw finite."""
    import numpy as np

    from allocator import ArmRegistry, Engine

    lo, hi = 1e-6, 1e12
    for alpha, beta in ((lo, lo), (hi, hi), (lo, hi)):
        prior = (
            {"alpha": alpha, "beta": beta}
            if kind == "beta_bernoulli"
            else {"kappa": alpha, "alpha": beta, "beta": 1e-30 if alpha == lo else 1e30}
        )
        policy = EngineConfig.model_validate({"policy": {"kind": kind, "prior": prior}}).policy
        engine = Engine(policy, None, ArmRegistry.build(["a", "b", "c"], ["g"] * 3), seed=0)
        for i in range(50):
            d = engine.decide(["a", "b", "c"])
            engine.update(d.arm_index, float(i % 2))
        s = engine.policy.state
        assert np.isfinite(s.mean[:3]).all() and np.isfinite(s.sd[:3]).all()
        assert np.isfinite(s.bank[:3]).all()
