"""evaluate(): target distributions, feedback assembly, exact identities, coverage of the truth."""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import numpy as np
import pytest

from allocator import (
    BetaBernoulliConfig,
    EvaluationRefused,
    InvalidInputError,
    LinearGaussianConfig,
    make_policy,
)
from allocator.replay import (
    DR,
    IPS,
    LoggedData,
    RidgeRewardModel,
    SwitchDR,
    evaluate,
    target_distribution,
)
from allocator.replay.evaluate import bandit_feedback
from tests import naive
from tests.conftest import make_registry
from tests.worlds.logged import log_rounds, make_world


def world_log(seed: int, n: int = 2000, subsets: bool = True):
    return log_rounds(make_world(0), n, np.random.default_rng(seed), subsets)


def trained(policy, data):
    x = data.contexts if policy.n_features is not None else None
    policy.update_batch(data.actions, data.rewards, x)
    policy.refresh()
    return policy


@pytest.mark.parametrize(
    "config", [BetaBernoulliConfig(epsilon=0.1), LinearGaussianConfig(n_features=3)]
)
def test_target_distribution_is_the_per_round_decision_distribution(config):
    data = world_log(1, 300).data
    policy = trained(make_policy(config, make_registry(4, group="g"), seed=3), data)
    prob = target_distribution(policy, data)
    ptr, idx = data.candidates()
    assert prob.shape == idx.shape
    for i in range(data.n_rounds):
        x = None if policy.n_features is None else data.contexts[i]
        policy.decide(idx[ptr[i] : ptr[i + 1]], x)
        np.testing.assert_allclose(prob[ptr[i] : ptr[i + 1]], policy.probabilities, atol=1e-12)
    np.testing.assert_array_equal(target_distribution(prob, data), prob)
    via_policy = evaluate(data, policy, estimators=("ips",), rng=np.random.default_rng(0))
    via_array = evaluate(data, prob, estimators=("ips",), rng=np.random.default_rng(0))
    assert via_policy["ips"] == via_array["ips"]


def test_feedback_matches_the_naive_assembly():
    lg = world_log(2, 500)
    q = RidgeRewardModel().fit(lg.data).predict_candidates(lg.data)
    fb = bandit_feedback(lg.data, lg.target, q)
    ptr, idx = lg.data.candidates()
    want = naive.candidate_feedback(ptr, idx, lg.data.actions, lg.target, q)
    for got, ref in zip((fb.action_prob, fb.q_logged, fb.q_target), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("subsets", [True, False])
def test_ips_and_snips_of_the_logging_policy_are_the_mean_reward(subsets):
    lg = world_log(3, 1500, subsets)
    assert lg.data.cand_prob is not None
    ev = evaluate(
        lg.data, lg.data.cand_prob, estimators=("ips", "snips"), rng=np.random.default_rng(0)
    )
    mean = float(np.mean(lg.data.rewards))
    assert ev["ips"].value == mean
    assert ev["snips"].value == mean
    assert ev.diagnostics.max_weight == 1.0 and ev.n_rounds == 1500


def test_ips_and_dr_cover_the_truth_for_a_fixed_seed():
    lg = world_log(4, 3000)
    model = RidgeRewardModel(n_folds=2)
    ev = evaluate(lg.data, lg.target, reward_model=model, rng=np.random.default_rng(1))
    print("truth", lg.truth, ev.estimates, ev.diagnostics)
    for name in ("ips", "dr", "snips", "sndr"):
        assert ev[name].low <= lg.truth <= ev[name].high, name
    assert ev["dr"].high - ev["dr"].low < ev["ips"].high - ev["ips"].low  # the model helps
    assert 0 < ev.diagnostics.effective_sample_size < 3000 and not ev.skipped


def coverage(n_seeds: int) -> dict[str, float]:
    hits = {"ips": 0, "dr": 0}
    for seed in range(n_seeds):
        lg = world_log(100 + seed, 2000)
        ev = evaluate(
            lg.data, lg.target, estimators=("ips", "dr"), reward_model="ridge",
            rng=np.random.default_rng(seed),
        )  # fmt: skip
        for name in hits:
            hits[name] += ev[name].low <= lg.truth <= ev[name].high
    return {k: v / n_seeds for k, v in hits.items()}


@pytest.mark.heavy
def test_intervals_cover_the_truth_small():
    rates = coverage(20)
    print("coverage over 20 seeds:", rates)
    assert min(rates.values()) >= 0.75


@pytest.mark.slow
def test_intervals_cover_the_truth_in_85_percent_of_100_seeds():
    rates = coverage(100)
    print("coverage over 100 seeds:", rates)
    assert min(rates.values()) >= 0.85


def test_model_estimators_are_skipped_without_a_model():
    lg = world_log(5, 300)
    ev = evaluate(lg.data, lg.target, rng=np.random.default_rng(0))
    assert set(ev.estimates) == {"ips", "snips"}
    assert set(ev.skipped) == {"dm", "dr", "sndr"}
    with pytest.raises(InvalidInputError, match="dr needs a reward model: pass reward_model="):
        ev["dr"]
    with pytest.raises(
        InvalidInputError, match=r"no estimate 'ipw'; evaluated: \['ips', 'snips'\]"
    ):
        ev["ipw"]
    with pytest.raises(InvalidInputError, match=r"dm needs a reward model.*; sndr needs"):
        evaluate(lg.data, lg.target, estimators=("dm", "sndr"), rng=np.random.default_rng(0))


def test_estimator_instances_switch_dr_and_a_prefitted_model():
    lg = world_log(6, 800)
    model = RidgeRewardModel(l2=3.0).fit(lg.data)
    ests = (IPS(clip=5.0), DR(), SwitchDR(tau=4.0), SwitchDR(tau=1e-9))
    with pytest.raises(InvalidInputError, match="estimators repeat a name"):
        evaluate(
            lg.data, lg.target, estimators=ests, reward_model=model, rng=np.random.default_rng(0)
        )
    ev = evaluate(
        lg.data, lg.target, estimators=ests[:3], reward_model=model, clip=5.0,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    fb = bandit_feedback(lg.data, lg.target, model.predict_candidates(lg.data))
    ref = naive.switch_dr(*fb, tau=4.0)
    assert ev["switch_dr"].value == pytest.approx(ref, abs=1e-12)
    assert SwitchDR(tau=np.inf).estimate(fb) == pytest.approx(DR().estimate(fb), abs=1e-12)
    assert SwitchDR(tau=1e-9).estimate(fb) == pytest.approx(float(np.mean(fb.q_target)), abs=1e-12)
    assert ev.diagnostics.max_weight == 5.0


def _bad_target(lg):
    t = lg.target.copy()
    t[0] += 0.1
    return t


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda lg, r: evaluate(lg.data, lg.target[:-1], rng=r), r"shape \(\d+,\), expected"),
        (lambda lg, r: evaluate(lg.data, -lg.target, rng=r), r"must be in \[0, 1\]; entry 0"),
        (lambda lg, r: evaluate(lg.data, _bad_target(lg), rng=r), r"rounds \[0\] sum to"),
        (lambda lg, r: evaluate(lg.data, "best", rng=r), r"target 'best': expected one of"),
        (lambda lg, r: evaluate(lg.data, {1, 2}, rng=r), r"target must be a Policy, an engine"),
        (lambda lg, r: evaluate(lg.data, lg.target, rng=0), r"rng must be a numpy Generator"),
        (
            lambda lg, r: evaluate(lg.data, lg.target, estimators=("ips", "magic"), rng=r),
            r"unknown estimator 'magic'; known: \['dm', 'dr', 'ips', 'sndr', 'snips', "
            r"'switch_dr'\]",
        ),
        (lambda lg, r: evaluate(lg.data, lg.target, estimators="ips", rng=r), "non-empty sequence"),
        (
            lambda lg, r: evaluate(lg.data, lg.target, reward_model="forest", rng=r),
            r"reward_model must be None, one of \['auto', 'logistic', 'ridge'\] or a RewardModel, "
            r"got 'forest'",
        ),
        (lambda lg, r: evaluate(lg.data, lg.target, n_boot=3, rng=r), r"n_boot = 3 \(>= 10\)"),
        (
            lambda lg, r: evaluate(
                dataclasses.replace(lg.data, actions=(lg.data.actions + 1) % 4), lg.target, rng=r
            ),
            r"round \d+: logged action \d is not among its candidates",
        ),
        (
            lambda lg, r: evaluate(
                dataclasses.replace(lg.data, pscores=np.zeros(lg.data.n_rounds)), lg.target, rng=r
            ),
            r"pscore must be in \(0, 1\]; first bad rows \[0, 1, 2, 3, 4\]",
        ),
        (
            lambda lg, r: evaluate(
                dataclasses.replace(lg.data, cand_ptr=lg.data.cand_ptr[::-1].copy()),
                lg.target,
                rng=r,
            ),
            r"cand_ptr must start at 0, be non-decreasing and end at len\(cand_idx\)",
        ),
        (
            lambda lg, r: target_distribution(
                make_policy(LinearGaussianConfig(n_features=3), make_registry(4), 0),
                dataclasses.replace(lg.data, contexts=None),
            ),
            r"LinearGaussianPolicy needs contexts \(3 features\)",
        ),
        (
            lambda lg, r: target_distribution(
                make_policy(BetaBernoulliConfig(), make_registry(4, group="x"), 0),
                dataclasses.replace(lg.data, arm_ids=("a", "b", "c", "d")),
            ),
            r"arm index 0 is 'a' in the log but 'arm:0' in the policy's registry",
        ),
    ],
)
def test_invalid_inputs(call, match):
    with pytest.raises(InvalidInputError, match=match):
        call(world_log(7, 50), np.random.default_rng(0))


def flat_log(n: int = 200, k: int = 4, **change) -> LoggedData:
    """A uniformly logged context-free log; ``change`` replaces columns (adversarial logs)."""
    rng = np.random.default_rng(0)
    cols = {
        "actions": rng.integers(0, k, n),
        "rewards": (rng.random(n) < 0.1).astype(float),
        "pscores": np.full(n, 1.0 / k),
    }
    cols.update(change)
    return LoggedData(arm_ids=tuple(f"a{i}" for i in range(k)), **cols)


def _never(data: LoggedData) -> np.ndarray:
    dist = np.zeros((data.n_rounds, data.n_arms))
    dist[:, 1] = 1.0  # the log only ever took arm 0
    return dist


def _one_tiny(p: float) -> np.ndarray:
    pscores = np.full(200, 0.25)
    pscores[3] = p
    return pscores


# (log, target, evaluate options, None: finite estimates in valid intervals | (error, match))
ADVERSARIAL_LOGS = {
    "all-zero rewards": (flat_log(rewards=np.zeros(200)), "uniform", {}, None),
    "constant rewards": (flat_log(rewards=np.full(200, 7.0)), "uniform", {}, None),
    "one arm": (flat_log(k=1, pscores=np.ones(200)), "uniform", {}, None),
    "two rows: all-zero bootstrap counts": (flat_log(n=2), "uniform", {}, None),
    "three rows": (flat_log(n=3), "uniform", {}, None),
    "one propensity 1e-300": (flat_log(pscores=_one_tiny(1e-300)), "uniform", {}, None),
    "every propensity 1e-200": (flat_log(pscores=np.full(200, 1e-200)), "uniform", {}, None),
    "subnormal propensity": (
        flat_log(pscores=_one_tiny(5e-324)), "uniform", {},
        (InvalidInputError, r"pscore must be in \(0, 1\]; first bad rows \[3\].*finite"),
    ),
    "target never takes the logged action": (
        flat_log(actions=np.zeros(200, dtype=np.int64)), _never, {},
        (EvaluationRefused, "snips: the target policy gives probability 0 to every logged"),
    ),
    "clip 0": (flat_log(), "uniform", {"clip": 0.0}, (InvalidInputError, r"clip = 0.0: expected")),
    "clip 1e-300: DR's sequence is empty": (
        flat_log(), "uniform", {"clip": 1e-300},
        (EvaluationRefused, "dr: the confidence sequence is empty on this log"),
    ),
    "propensity 1 of four candidates": (
        flat_log(pscores=np.ones(200)), "uniform", {},
        (EvaluationRefused, "dr: the confidence sequence is empty on this log"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("interval", ["cs", "bootstrap"])
@pytest.mark.parametrize("case", list(ADVERSARIAL_LOGS))
def test_adversarial_logs_give_valid_intervals_or_a_typed_refusal(case, interval):
    data, target, options, error = ADVERSARIAL_LOGS[case]
    if interval == "bootstrap" and "sequence is empty" in (error or ("", ""))[1]:
        error = None  # the bootstrap makes no martingale claim to contradict
    target = target(data) if callable(target) else target

    def run():
        return evaluate(data, target, reward_model="auto", interval=interval, n_boot=50,
                        rng=np.random.default_rng(0), **options)  # fmt: skip

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN / overflow on the way to a report
        if error is not None:
            with pytest.raises(error[0], match=error[1]):
                run()
            return
        result = run()
    for name, e in result.estimates.items():
        assert np.isfinite(list(e)).all() and e.low <= e.value <= e.high, (name, e)
    assert np.isfinite(list(result.diagnostics)).all()


def test_model_based_intervals_contain_the_dr_sequence_and_cover_a_biased_model():
    """A reward model shrunk toward the arms the logger favours is biased for a target on a
    rarely logged arm, even on i.i.d. logs: DM's bootstrap interval then misses the truth
    (0 of 6 seeds here), while the default interval, widened to contain DR's confidence
    sequence, covers on every seed."""
    mu = np.array([0.30, 0.05, 0.05, 0.45, 0.05, 0.05])
    logger = np.array([0.75, 0.05, 0.05, 0.05, 0.05, 0.05])
    target = np.array([0.02, 0.02, 0.02, 0.90, 0.02, 0.02])
    truth = float(target @ mu)
    missed_by_bootstrap = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        actions = rng.choice(6, 2000, p=logger)
        data = LoggedData(
            arm_ids=tuple(f"a{i}" for i in range(6)), actions=actions,
            rewards=(rng.random(2000) < mu[actions]).astype(float), pscores=logger[actions],
        )  # fmt: skip
        dist = np.tile(target, (2000, 1))
        runs = {}
        for mode in ("cs", "bootstrap"):
            runs[mode] = evaluate(
                data, dist, estimators=("dm", "dr"), reward_model="auto", interval=mode,
                rng=np.random.default_rng(seed),
            )  # fmt: skip
        dm, dr = runs["cs"]["dm"], runs["cs"]["dr"]
        assert dm.low <= dr.low and dr.high <= dm.high
        assert dm.low <= truth <= dm.high, (seed, dm)
        assert dm.value == runs["bootstrap"]["dm"].value  # only the interval changes
        assert "widened to contain the DR confidence sequence" in runs["cs"].methods["dm"]
        boot = runs["bootstrap"]["dm"]
        missed_by_bootstrap += not boot.low <= truth <= boot.high
    assert missed_by_bootstrap >= 4


@pytest.mark.parametrize("subsets", [True, False])
@pytest.mark.parametrize("spec", ["auto", "prefitted"])
@pytest.mark.heavy
def test_chunked_evaluation_equals_the_whole_log_at_once(monkeypatch, subsets, spec):
    """Per-candidate values live a chunk of rounds at a time (memory); the estimates and
    intervals must be those of one chunk spanning the log, to the last bit."""
    ev_module = importlib.import_module("allocator.replay.evaluate")  # the package's
    # ``evaluate`` attribute is the function

    lg = world_log(11, 700, subsets)
    model = "auto" if spec == "auto" else RidgeRewardModel(n_folds=3).fit(lg.data)
    names = ("ips", "snips", "dm", "dr", "sndr", "switch_dr")

    def run():
        return evaluate(
            lg.data, lg.target, estimators=names, reward_model=model,
            rng=np.random.default_rng(5),
        )  # fmt: skip

    monkeypatch.setattr(ev_module, "CANDIDATE_CHUNK", 10**9)
    whole = run()
    # chunks of a few rounds, the last one short (and a round larger than a chunk alone)
    monkeypatch.setattr(ev_module, "CANDIDATE_CHUNK", 3)
    chunked = run()
    assert chunked.estimates == whole.estimates
    assert chunked.diagnostics == whole.diagnostics


@pytest.mark.parametrize("clip", [None, 0.5, 3.0])
def test_ips_is_mean_of_weighted_rewards_in_both_interval_modes(clip):
    """IPS is ``mean(min(w, clip)·r)`` under the confidence sequence as under the bootstrap,
    whatever the reward range (the sequence's terms are taken with a zero reward model, not
    one at the range's low end), and its sequence covers the value it reports."""
    lg = world_log(13, 800)
    data = dataclasses.replace(lg.data, rewards=2.0 * lg.data.rewards - 1.0)  # in [-1, 1]
    ptr, idx = data.candidates()
    pos = np.array([ptr[i] + list(idx[ptr[i] : ptr[i + 1]]).index(a)
                    for i, a in enumerate(data.actions)])  # fmt: skip
    w = lg.target[pos] / data.pscores
    want = float(np.mean((w if clip is None else np.minimum(w, clip)) * data.rewards))
    for interval in ("cs", "bootstrap"):
        ev = evaluate(data, lg.target, estimators=("ips",), clip=clip, interval=interval,
                      reward_range=(-1.0, 1.0), rng=np.random.default_rng(0))  # fmt: skip
        assert ev["ips"].value == pytest.approx(want, abs=1e-12), interval
        assert ev["ips"].low <= want <= ev["ips"].high
