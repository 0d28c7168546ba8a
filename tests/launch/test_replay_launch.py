"""Replay experiments end to end: the CLI, a real local Ray or the sequential runner, MLflow.

The logs come from :mod:`tests.replay.make_example_log`, where the click rate of every arm in
every row is known, so each estimate is checked against the truth of the policy it scores.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from allocator import ArmRegistry, make_policy
from allocator.cli import main
from allocator.config import BetaBernoulliConfig, EngineConfig
from allocator.launch.replay_table import format_table, summary_rows
from allocator.logs import DecisionLogWriter, load_decision_log
from allocator.replay import LoggedData, from_decision_log, load_foreign_log, target_distribution
from allocator.replay.columns import ForeignLogConfig
from allocator.serving import Allocator, AllocatorConfig
from tests.logs.helpers import copy_outcomes, v2_record
from tests.replay.make_example_log import (
    ARMS,
    CLICK_RATE,
    COLUMNS,
    EXAMPLE_PATH,
    MARGINAL_RATE,
    N_FEATURES,
    example_csv,
    make_click_log,
)

ROOT = Path(__file__).resolve().parents[2]
CLICKS = {"click": 1.0, "order": 0.0}
BANK = 64  # a small Thompson bank keeps the JIT-off run short
BETA = {"kind": "beta_bernoulli", "bank_rows": BANK}
LINEAR = {"kind": "linear_gaussian", "n_features": N_FEATURES, "bank_rows": BANK}
POLICIES = [
    {"name": "beta_ts", "engine": {"policy": BETA, "objective": CLICKS}},
    {"name": "linear_ts", "engine": {"policy": LINEAR, "objective": CLICKS}},
    {
        "name": "beta_ts_online",
        "mode": "learning",
        "replay": "rejection",
        "engine": {"policy": BETA, "objective": CLICKS},
    },
]
ESTIMATES = {
    f"ope.{e}.{b}" for e in ("ips", "snips", "dm", "dr", "sndr") for b in ("value", "low", "high")
}
SUMMARY_KEYS = {
    f"estimate/{e}{b}"
    for e in ("ips", "snips", "dm", "dr", "sndr")
    for b in ("", "/lower", "/upper")
}
FROZEN_METRICS = (
    ESTIMATES
    | SUMMARY_KEYS
    | {
        "ess",
        "rounds",
        "train_rounds",
        "logged.mean_reward",
        "ope.ess",
        "ope.max_weight",
        "ope.zero_support",
        *("estimate", "interval.low", "interval.estimate", "interval.high"),  # the view's chart
    }
)
LEARNING_METRICS = {
    "rounds",
    "replay.value",
    "replay.low",
    "replay.high",
    "replay.accepted",
    "replay.kept",
    "curve.replay_mean_reward",
    *("estimate", "interval.low", "interval.estimate", "interval.high"),  # the view's chart
    "estimate/replay",
    "estimate/replay/lower",
    "estimate/replay/upper",
    "ess",
    "acceptance_rate",
}


def write_experiment(
    root: Path, log_text: str, policies: list[dict[str, Any]], **experiment: Any
) -> Path:
    """A config in ``root/exp`` reading ``data/clicks.csv`` relative to itself."""
    (root / "exp" / "data").mkdir(parents=True)
    (root / "exp" / "data" / "clicks.csv").write_text(log_text)
    cfg = {
        "logs": {"foreign": {"path": "data/clicks.csv", "columns": COLUMNS}},
        "experiment": {"name": "replay-test", **experiment},
        "policies": policies,
    }
    path = root / "exp" / "replay.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_cli(*args: str) -> tuple[int, str, str]:
    """``allocator`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def replay(cfg: Path, uri: str, out: Path, launch_id: str, *flags: str) -> tuple[int, str, str]:
    args = ["replay", str(cfg), "--tracking-uri", uri, "--out", str(out), "--launch-id", launch_id]
    return run_cli(*args, *flags)


def runs_of(uri: str, launch_id: str, experiment: str = "replay-test") -> dict[Any, Any]:
    """Cell runs keyed by (policy, seed, shard), and the summary run under key "summary"."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id], f"tags.launch_id = '{launch_id}'", max_results=1000
    )
    out: dict[Any, Any] = {}
    for run in runs:
        t = run.data.tags
        key = (
            "summary"
            if t["role"] == "summary"
            else (t["grid.policy"], int(t["grid.seed"]), int(t["grid.shard"]))
        )
        assert key not in out, f"two runs for {key}"
        out[key] = run
    return out


def curve(uri: str, run: Any) -> list[tuple[int, float]]:
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "curve.replay_mean_reward")
    return sorted((m.step, m.value) for m in history)


def frozen_target(engine: dict[str, Any], part: LoggedData, seed: int, train_fraction: float):
    """The test rounds of a shard and the frozen policy's (n, K) distribution over them.

    Built as the experiment documents it: a policy seeded ``seed`` over the log's arms,
    taught the first ``train_fraction`` of the shard's rounds, then read, not taught.
    """
    registry = ArmRegistry(capacity=max(16, part.n_arms))
    groups = part.arm_groups or ("default",) * part.n_arms
    for arm, group in zip(part.arm_ids, groups, strict=True):
        registry.add([arm], group)
    policy = make_policy(EngineConfig.model_validate(engine).policy, registry, seed)
    n_train = int(part.n_rounds * train_fraction)
    x = part.contexts if policy.n_features is not None else None
    policy.update_batch(
        part.actions[:n_train], part.rewards[:n_train], None if x is None else x[:n_train]
    )
    policy.refresh()
    test = part.take(n_train, part.n_rounds)
    return test, target_distribution(policy, test).reshape(test.n_rounds, part.n_arms)


def tiers_of(data: LoggedData) -> np.ndarray:
    """The city tier of each round, read back from its one-hot context columns."""
    assert data.contexts is not None and data.context_names[2:] == (
        "city_tier=t1",
        "city_tier=t2",
        "city_tier=t3",
    )
    return np.argmax(data.contexts[:, 2:], axis=1)


@pytest.fixture(scope="module")
def migrated_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store whose tables exist: creating them takes seconds."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def fresh_store(template: Path, directory: Path) -> str:
    """A copy of the migrated empty store in ``directory``: a new, real sqlite store."""
    shutil.copyfile(template, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


@pytest.fixture
def tracking_uri(tracking_uri, migrated_store) -> str:
    """The conftest store in tmp_path, created from the migrated template."""
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return fresh_store(migrated_store, db.parent)


# ------------------------------------------------------------ Ray and sequential launches
class Launches(NamedTuple):
    uri: str
    ray: tuple[int, str, str]
    seq: tuple[int, str, str]
    out: Path


@pytest.fixture(scope="module")
def launches(ray_local, tmp_path_factory, migrated_store) -> Launches:
    """One small grid (3 policies × 2 seeds × 2 shards) on the real local Ray and in process."""
    root = tmp_path_factory.mktemp("launches")
    cfg = write_experiment(
        root, make_click_log(2000, seed=7).text, POLICIES, seeds=[1, 2], shards=2, n_boot=50
    )
    uri = fresh_store(migrated_store, root)
    on_ray = replay(cfg, uri, root / "runs", "t")
    in_process = replay(cfg, uri, root / "runs", "t-seq", "--sequential")
    assert ray_local.is_initialized()  # the runner joined the session's Ray and left it up
    return Launches(uri, on_ray, in_process, root / "runs")


@pytest.mark.heavy
def test_ray_and_sequential_launches_log_identical_metrics_per_cell(launches):
    assert launches.ray[0] == 0 and launches.seq[0] == 0, launches.ray[2] + launches.seq[2]
    on_ray, in_process = runs_of(launches.uri, "t"), runs_of(launches.uri, "t-seq")
    cells = {(p["name"], s, k) for p in POLICIES for s in (1, 2) for k in (0, 1)}
    assert set(on_ray) == set(in_process) == cells | {"summary"}
    for key in cells:
        assert on_ray[key].data.metrics == in_process[key].data.metrics, key
        if key[0] == "beta_ts_online":
            assert curve(launches.uri, on_ray[key]) == curve(launches.uri, in_process[key])
    # seeds differ only in the policies' random streams: same shard, different numbers
    a, b = on_ray[("beta_ts", 1, 0)].data.metrics, on_ray[("beta_ts", 2, 0)].data.metrics
    assert a["rounds"] == b["rounds"] and a["ope.ips.low"] != b["ope.ips.low"]
    # the printed tables agree too (the launch ids differ)
    table = launches.ray[1].split("\n\n")[1]
    assert table == launches.seq[1].split("\n\n")[1]
    header = ["policy", "estimator", "value", "interval", "ess", "accept", "cells", "vs", "top"]
    assert table.splitlines()[0].split() == header


def test_mlflow_layout_of_a_launch(launches):
    client = MlflowClient(launches.uri)
    exp = client.get_experiment_by_name("replay-test")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = runs_of(launches.uri, "t")
    for key, run in runs.items():
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        assert "mlflow.parentRunId" not in tags  # top level: visible in the runs table
        assert tags["launch_id"] == "t" and len(tags["config_hash"]) == 16
        if key == "summary":
            continue
        policy, seed, shard = key
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"{policy}/seed={seed}/shard={shard}"
        grid = (tags["role"], tags["grid.policy"], tags["grid.seed"], tags["grid.shard"])
        assert grid == ("cell", policy, str(seed), str(shard))
        kind = "linear_gaussian" if policy == "linear_ts" else "beta_bernoulli"
        assert params["policy.engine.policy.kind"] == kind
        assert params["policy.engine.policy.bank_rows"] == str(BANK)
        assert params["policy.engine.objective.click"] == "1.0"
        assert [params["policy.name"], params["seed"], params["shard"]] == [*grid[1:]]
        assert params["experiment.shards"] == "2" and params["experiment.n_boot"] == "50"
        assert metrics["rounds"] == 1000.0
        if policy == "beta_ts_online":
            assert tags["grid.mode"] == params["policy.mode"] == "learning"
            assert set(metrics) == LEARNING_METRICS
            points = curve(launches.uri, run)
            steps = [s for s, _ in points]
            assert steps[0] == 0 and steps[-1] == metrics["replay.accepted"] - 1
            assert steps == sorted(set(steps)) and 50 <= len(steps) <= 100
            # the curve is the running mean of the accepted rewards: it ends at the value
            assert points[-1][1] == pytest.approx(metrics["replay.value"], abs=1e-12)
        else:
            assert tags["grid.mode"] == "frozen"
            assert set(metrics) == FROZEN_METRICS
            assert metrics["train_rounds"] == 500.0
            for est in ("ips", "snips", "dm", "dr", "sndr"):
                low, value, high = (metrics[f"ope.{est}.{b}"] for b in ("low", "value", "high"))
                assert low < value < high, est
            assert 0.0 < metrics["ope.ess"] <= 500.0
    summary = runs["summary"]
    assert summary.data.tags["role"] == "summary" and summary.info.status == "FINISHED"
    artifacts = [a.path for a in client.list_artifacts(summary.info.run_id)]
    assert artifacts == ["summary.csv", "summary.txt"]
    local = client.download_artifacts(summary.info.run_id, "summary.txt", str(launches.out))
    text = Path(local).read_text()
    assert text == (launches.out / "t" / "summary.txt").read_text()
    assert text.strip() in launches.ray[1]
    ranked = list(dict.fromkeys(line.split()[0] for line in text.splitlines()[1:]))
    assert sorted(ranked) == sorted(p["name"] for p in POLICIES)
    # each estimate of a frozen policy is its mean over its 4 cells, with its interval
    cells = [runs[("linear_ts", s, k)].data.metrics for s in (1, 2) for k in (0, 1)]
    row = next(
        line.split() for line in text.splitlines() if line.split()[:2] == ["linear_ts", "dr"]
    )
    assert float(row[2]) == pytest.approx(np.mean([m["ope.dr.value"] for m in cells]), abs=1e-5)
    lower = float(row[3].strip("[,"))
    assert lower == pytest.approx(np.mean([m["estimate/dr/lower"] for m in cells]), abs=1e-5)
    assert float(row[5]) == pytest.approx(np.mean([m["ess"] for m in cells]), abs=0.5)
    assert row[6] == "-" and row[7] == "4"  # no acceptance rate for a frozen policy
    assert row[8] in ("top", "overlaps", "below")  # dr is its ranking row
    online = next(line.split() for line in text.splitlines() if line.startswith("beta_ts_online"))
    assert online[1] == "replay" and 0.2 < float(online[6]) < 0.3  # uniform log, K = 4
    csv_rows = (launches.out / "t" / "summary.csv").read_text().splitlines()
    assert csv_rows[0] == "policy,estimator,value,lower,upper,ess,acceptance_rate,cells,vs_top"
    assert len(csv_rows) == len(text.splitlines())


def test_the_table_says_which_ranks_the_intervals_do_not_resolve():
    """Ranked by point value; on each ranking row, vs_top says whether the interval meets
    the top policy's or lies below it. Other estimators' rows and a policy without an
    interval say nothing."""

    def cell(dr: tuple[float, float, float], ips: tuple[float, float, float]):
        out = {"ess": 100.0}
        for name, (v, lo, hi) in (("dr", dr), ("ips", ips)):
            out |= {f"estimate/{name}": v, f"estimate/{name}/lower": lo,
                    f"estimate/{name}/upper": hi}  # fmt: skip
        return out

    nan = (0.3, math.nan, math.nan)
    cells = [
        ("c", cell((0.2, 0.1, 0.3), (0.9, 0.0, 1.0))),  # ips would rank it first
        ("a", cell((0.5, 0.4, 0.6), (0.5, 0.4, 0.6))),
        ("b", cell((0.38, 0.3, 0.41), (0.1, 0.0, 0.2))),  # touches a's lower end
        ("d", cell(nan, nan)),
    ]
    rows = summary_rows(cells, ["c", "a", "b", "d"], "dr")
    got = [(r["policy"], r["estimator"], r["vs_top"]) for r in rows]
    assert got == [
        ("a", "dr", "top"), ("a", "ips", ""), ("b", "dr", "overlaps"), ("b", "ips", ""),
        ("d", "dr", ""), ("d", "ips", ""), ("c", "dr", "below"), ("c", "ips", ""),
    ]  # fmt: skip
    lines = format_table(rows).splitlines()
    assert lines[0].split()[-2:] == ["vs", "top"]
    assert lines[1].split()[-1] == "top" and lines[2].split()[-1] == "1"


# ------------------------------------------------------------ estimates against the truth
N_ROWS = 16_000
SEEDS = (1, 2)
SHARDS = 2
# the click log's logger is fixed (i.i.d. rounds), where the bootstrap is valid and its width
# is the ±3.9 se yardstick below; the anytime intervals are tested in tests/replay
OPE = {"estimators": ["ips", "dr"], "n_boot": 200, "alpha": 0.05, "interval": "bootstrap"}


def assert_near_truth(m: dict[str, float], est: str, truth: float, wrong: list[float]) -> None:
    """The estimate is within its 95 % interval's width of the truth, and not of ``wrong``.

    A test makes 16 such checks, so "the interval contains the truth" (5 % misses each)
    would fail most runs; the full width (≈ ±3.9 standard errors) misses ~1e-4 each. The
    ``wrong`` values (the logging policy's value, another policy's truth) are farther than
    that from the truth: an estimator that ignores the target cannot meet the tolerance.
    """
    value, width = m[f"ope.{est}.value"], m[f"ope.{est}.high"] - m[f"ope.{est}.low"]
    assert m[f"ope.{est}.low"] < value < m[f"ope.{est}.high"]
    assert abs(value - truth) <= width, (est, value, truth, width)
    for other in wrong:
        assert abs(truth - other) > width and abs(value - other) > width, (est, other)


class Truthful(NamedTuple):
    uri: str
    data: LoggedData
    runs: dict[Any, Any]


@pytest.fixture(scope="module")
def truthful(tmp_path_factory, migrated_store) -> Truthful:
    """A long uniform log (K = 4, p = 1/4), the same three policies, run in process."""
    root = tmp_path_factory.mktemp("truthful")
    log = make_click_log(N_ROWS, seed=12)
    cfg = write_experiment(root, log.text, POLICIES, seeds=list(SEEDS), shards=SHARDS, **OPE)
    uri = fresh_store(migrated_store, root)
    code, _, err = replay(cfg, uri, root / "runs", "truth", "--sequential")
    assert code == 0, err
    mapping = {"path": cfg.parent / "data" / "clicks.csv", "columns": COLUMNS}
    data = load_foreign_log(ForeignLogConfig.model_validate(mapping))
    return Truthful(uri, data, runs_of(uri, "truth"))


@pytest.mark.heavy
@pytest.mark.parametrize("policy", [POLICIES[0], POLICIES[1]], ids=lambda p: p["name"])
def test_frozen_policy_estimates_find_its_true_value(truthful, policy):
    """IPS and DR find the truth Σ_i Σ_a π(a|x_i) μ(x_i, a) / n of the test rounds.

    π is the frozen policy's exact distribution, rebuilt as the cell builds it; μ the known
    click rates of each round's tier.
    """
    truths = {}
    for p in POLICIES[:2]:
        for seed in SEEDS:
            for shard in range(SHARDS):
                part = truthful.data.shard(shard, SHARDS)
                test, pi = frozen_target(p["engine"], part, seed, 0.5)
                mu = CLICK_RATE[tiers_of(test)]
                truths[p["name"], seed, shard] = (
                    float((pi * mu).sum(axis=1).mean()),
                    float(mu.mean()),
                    pi,
                )
    other = next(p["name"] for p in POLICIES[:2] if p is not policy)
    for seed in SEEDS:
        for shard in range(SHARDS):
            key = (policy["name"], seed, shard)
            truth, logging_value, pi = truths[key]
            m = truthful.runs[key].data.metrics
            shown = {e: [round(m[f"ope.{e}.{b}"], 4) for b in ("low", "value", "high")]
                     for e in ("ips", "dr")}  # fmt: skip
            print(key, f"truth {truth:.4f} logging {logging_value:.4f}", shown)
            # the policy learned something: it is not scored on a near-uniform target
            assert pi.max(axis=1).mean() > 0.9
            for est in ("ips", "dr"):
                assert_near_truth(m, est, truth, [logging_value, truths[other, seed, shard][0]])
            assert m["logged.mean_reward"] == pytest.approx(
                truthful.data.shard(shard, SHARDS).rewards[int(m["train_rounds"]) :].mean(),
                abs=1e-12,
            )


def online_running_means(steps: int, runs: int) -> np.ndarray:
    """(runs, steps) running mean reward of a learning Beta TS played online on the rates."""
    cfg = BetaBernoulliConfig(bank_rows=BANK)
    cand = np.arange(len(ARMS), dtype=np.int64)
    out = np.empty((runs, steps))
    for s in range(runs):
        registry = ArmRegistry(capacity=16)
        registry.add(list(ARMS), "default")
        policy = make_policy(cfg, registry, seed=10_000 + s)
        u = np.random.default_rng([77, s]).random(steps)
        for t in range(steps):
            arm = policy.decide(cand).arm_index
            out[s, t] = float(u[t] < MARGINAL_RATE[arm])
            policy.update(arm, out[s, t])
    return np.cumsum(out, axis=1) / np.arange(1, steps + 1)


@pytest.mark.heavy
def test_learning_policy_earns_the_best_arm_minus_its_exploration_loss(truthful):
    """Rejection replay of a learning Beta TS on a uniform log.

    A context-free policy here faces a 4-armed Bernoulli bandit with the tier-averaged click
    rates ``MARGINAL_RATE`` (tiers are drawn independently of everything). Over its T
    accepted rounds its mean reward is μ* − regret(T)/T plus reward noise. No finite-time
    regret bound for Thompson sampling has usable constants, so the exploration loss is
    measured instead: the same policy played online against those rates, 30 times. The
    replayed value must sit within 4 sd of μ* minus that loss (sd of one online run: the
    replay has the same reward noise and learning-path randomness, as the log was drawn
    independently of the policy); and nothing beats μ* beyond reward noise (Hoeffding,
    δ = 1e-4).
    """
    best, uniform = float(MARGINAL_RATE.max()), float(MARGINAL_RATE.mean())
    cells = {
        (s, k): truthful.runs[("beta_ts_online", s, k)].data.metrics
        for s in SEEDS
        for k in range(SHARDS)
    }
    online = online_running_means(max(int(m["replay.accepted"]) for m in cells.values()), 30)
    for (seed, shard), m in cells.items():
        n, accepted = m["rounds"], int(m["replay.accepted"])
        # each round is accepted with probability 1/K, whatever the policy does
        assert abs(accepted - n / 4) < 4 * np.sqrt(n * 0.25 * 0.75)
        assert m["replay.kept"] == n
        at_t = online[:, accepted - 1]
        loss = best - float(at_t.mean())
        # one run's sd, estimated from 30 runs, but never below its reward noise alone
        sd = max(float(at_t.std(ddof=1)), np.sqrt(best * (1 - best) / accepted))
        sd *= np.sqrt(1 + 1 / at_t.size)
        value = m["replay.value"]
        print(
            f"seed {seed} shard {shard}: replay {value:.4f} on {accepted} rounds, "
            f"μ* {best:.4f}, exploration loss {loss:.4f}, sd {sd:.4f}"
        )
        assert 0.0 < loss < 0.5 * (best - uniform)  # learning costs, far less than not learning
        assert abs(value - (best - loss)) < 4 * sd
        assert value < best + np.sqrt(np.log(1e4) / (2 * accepted))
        assert m["replay.low"] < value < m["replay.high"]


# ------------------------------------------------------------ refusals, own logs, configs
@pytest.mark.heavy
def test_learning_policy_on_a_non_uniform_log_fails_only_its_cell(
    ray_local, tmp_path, tracking_uri
):
    """The refusal travels from a Ray worker to the cell's run and the console; the rest runs."""
    log = make_click_log(1200, seed=3, logging=np.array([0.1, 0.2, 0.3, 0.4]))
    cfg = write_experiment(tmp_path, log.text, [POLICIES[0], POLICIES[2]], n_boot=20)
    code, out, _ = replay(cfg, tracking_uri, tmp_path / "runs", "nu")
    assert code == 1
    runs = runs_of(tracking_uri, "nu")
    failed, frozen = runs[("beta_ts_online", 1, 0)], runs[("beta_ts", 1, 0)]
    assert failed.info.status == "FAILED"
    error = failed.data.tags["error"]
    assert error.startswith("allocator.errors.EvaluationRefused: the logged propensities are not")
    assert "first offending rows [" in error and "uniform_epsilon" in error
    assert "replay.value" not in failed.data.metrics
    client = MlflowClient(tracking_uri)
    assert "error.txt" in [a.path for a in client.list_artifacts(failed.info.run_id)]
    assert frozen.info.status == "FINISHED" and "ope.dr.value" in frozen.data.metrics
    assert runs["summary"].info.status == "FAILED"
    assert "1 cell(s) FAILED:\n  beta_ts_online/seed=1/shard=0: " + error in out
    table = out.split("\n\n")[1]
    assert "\nbeta_ts " in table and "beta_ts_online" not in table


def own_replay_config(directory: Path, policies: list[dict[str, Any]]) -> Path:
    """A replay config over the own log in ``directory / decisions`` (IPS and DR)."""
    cfg = directory / "replay.yaml"
    cfg.write_text(yaml.safe_dump({
        "logs": {"decision_log": "decisions", "reward": "reward"},
        "experiment": {"name": "replay-test", "estimators": ["ips", "dr"]},
        "policies": policies,
    }))  # fmt: skip
    return cfg


def own_log(
    log_dir: Path, n: int, epsilon: float, batched: bool = False, v2: Path | None = None
) -> dict[str, float]:
    """An allocator (Beta TS, ε-mixed) serving n requests of a 3-arm world, logging them
    as schema 3 (catalogue indices; ``batched``: through ``decide_many``); with ``v2``,
    the single path's decisions and then the outcomes also written there as schema 2
    (id strings): the same run's v2 twin.

    Partners and a Mini Shop merchant: sorted by id the groups interleave
    (jd, shop:7, taobao → partner, mini_shop, partner).
    """
    means = {"jd": 0.3, "shop:7": 0.6, "taobao": 0.45}
    groups = {"jd": "partner", "shop:7": "mini_shop", "taobao": "partner"}
    config = AllocatorConfig.model_validate(
        {
            "engine": {"policy": {**BETA, "epsilon": epsilon}, "objective": CLICKS},
            "arms": [{"id": a, "group": g} for a, g in groups.items()],
        }
    )
    alloc = Allocator(config, seed=5, log_dir=log_dir)
    twin = None if v2 is None else DecisionLogWriter(v2, replica="v2")
    u = np.random.default_rng(9).random(n)
    arm_ids = list(means)
    for i in range(n):
        if batched:
            one = alloc.decide_many([{"candidates": arm_ids, "timestamp": 1.7e9 + i}])
            decision_id, arm_id = one.decision_ids[0], arm_ids[int(one.arms[0])]
        else:
            request = {"candidates": arm_ids, "timestamp": 1.7e9 + i}
            d = alloc.decide(**request)
            decision_id, arm_id = d.decision_id, d.arm_id
            if twin is not None:
                twin.write_decision(
                    v2_record(d, request, alloc.engine.probabilities, "beta_bernoulli")
                )
        alloc.update(decision_id, {"click": float(u[i] < means[arm_id])}, 1.7e9 + i + 0.5)
    alloc.close()
    if twin is not None:
        copy_outcomes(log_dir, twin)
        twin.close()
    return means


def test_the_replay_command_reads_a_schema_3_log_as_its_schema_2_twin(tmp_path, tracking_uri):
    """The same seeded run logged by ``decide_many`` and by ``decide`` (schema 3,
    catalogue indices) and as the single path's schema-2 twin (id strings): the replay
    command's cell metrics are identical."""
    own_log(tmp_path / "single" / "decisions", 400, 0.3, v2=tmp_path / "v2" / "decisions")
    own_log(tmp_path / "batch" / "decisions", 400, 0.3, batched=True)
    metrics = {}
    for name in ("v2", "single", "batch"):
        cfg = own_replay_config(tmp_path / name, [POLICIES[0]])
        code, out, _ = replay(cfg, tracking_uri, tmp_path / name / "runs", name, "--sequential")
        assert code == 0, out
        metrics[name] = runs_of(tracking_uri, name)[("beta_ts", 1, 0)].data.metrics
    assert any((tmp_path / "batch" / "decisions").glob("catalogue-*.parquet"))
    assert any((tmp_path / "single" / "decisions").glob("catalogue-*.parquet"))
    assert not any((tmp_path / "v2" / "decisions").glob("catalogue-*.parquet"))
    assert metrics["batch"]["rounds"] == 400
    assert metrics["v2"] == metrics["single"] == metrics["batch"]


def test_replay_of_the_allocators_own_decision_log(tmp_path, tracking_uri):
    """An ε-mixed allocator's log: frozen OPE, the ε-slice replay, and a refused replay."""
    means = own_log(tmp_path / "exp" / "decisions", 3000, epsilon=0.3)
    policies = [
        POLICIES[0],
        {
            "name": "eps_slice",
            "mode": "learning",
            "replay": "rejection",
            "uniform_epsilon": 0.3,
            "engine": {"policy": BETA, "objective": CLICKS},
        },
        POLICIES[2],  # learning, no ε: the log is not uniform
    ]
    cfg = tmp_path / "exp" / "replay.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "logs": {"decision_log": "decisions", "reward": "reward"},
                "experiment": {"name": "replay-test", **OPE},
                "policies": policies,
            }
        )
    )
    code, out, _ = replay(cfg, tracking_uri, tmp_path / "runs", "own", "--sequential")
    runs = runs_of(tracking_uri, "own")
    data = from_decision_log(load_decision_log(tmp_path / "exp" / "decisions"), "reward")
    # sorted by id, the groups interleave: the policy's registry must still match the log
    assert data.arm_ids == ("jd", "shop:7", "taobao")
    assert data.arm_groups == ("partner", "mini_shop", "partner")
    mu = np.array([means[a] for a in data.arm_ids])

    assert code == 1
    failed = {k for k, r in runs.items() if r.info.status == "FAILED"}
    assert failed == {("beta_ts_online", 1, 0), "summary"} and len(runs) == 4
    refused = runs[("beta_ts_online", 1, 0)].data.tags["error"]
    assert refused.startswith(
        "allocator.errors.EvaluationRefused: the logging distribution is not uniform"
    )
    assert refused in out

    frozen = runs[("beta_ts", 1, 0)].data.metrics
    assert frozen["rounds"] == 3000 and frozen["train_rounds"] == 1500
    assert frozen["logged.mean_reward"] == pytest.approx(data.rewards[1500:].mean(), abs=1e-12)
    _, pi = frozen_target(POLICIES[0]["engine"], data, 1, 0.5)
    truth = float((pi @ mu).mean())
    assert pi[:, 1].mean() > 0.9  # it learned that shop:7 is best
    for est in ("ips", "dr"):
        assert_near_truth(frozen, est, truth, [float(mu.mean())])

    sliced = runs[("eps_slice", 1, 0)].data.metrics
    # the ε-slice keeps each round with probability (ε/|C|)/p: an ε share of the log
    assert abs(sliced["replay.kept"] - 900) < 4 * np.sqrt(3000 * 0.3 * 0.7)
    assert abs(sliced["replay.accepted"] - sliced["replay.kept"] / 3) < 4 * np.sqrt(
        sliced["replay.kept"] * (1 / 3) * (2 / 3)
    )
    hoeffding = np.sqrt(np.log(1e4) / (2 * sliced["replay.accepted"]))
    assert float(mu.mean()) < sliced["replay.value"] < float(mu.max()) + hoeffding


BAD_CONFIGS = [
    (
        "both sources",
        lambda c: c["logs"].update(decision_log="decisions"),
        r"logs: Value error, logs: give exactly one of decision_log or foreign",
    ),
    (
        "unknown estimator",
        lambda c: c["experiment"].update(estimators=["ips", "magic"]),
        r"experiment: Value error, experiment\.estimators: unknown \['magic'\]",
    ),
    (
        "unknown policy kind",
        lambda c: c["policies"][0]["engine"]["policy"].update(kind="softmax"),
        r"policies\.0\.engine\.policy: Input tag 'softmax' found using 'kind' does not match",
    ),
    (
        "missing column",
        lambda c: c["logs"]["foreign"]["columns"].update(reward="revenue"),
        r"has no column 'revenue' \(reward\); its columns are \['entry', 'clicked'",
    ),
    (
        "mapping lacks a role",
        lambda c: c["logs"]["foreign"]["columns"].pop("propensity"),
        r"logs\.foreign\.columns\.propensity: Field required",
    ),
    (
        "context width",
        lambda c: c["policies"][1]["engine"]["policy"].update(n_features=3),
        r"policies\[1\] \(linear_ts\): engine\.policy\.n_features = 3, but the logs have 5 context",
    ),
    (
        "policy names",
        lambda c: c["policies"][1].update(name="beta_ts"),
        r"policy names must be unique",
    ),
    (
        "train fraction",
        lambda c: c["experiment"].update(train_fraction=1.0),
        r"experiment\.train_fraction: Input should be less than 1",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [b[1:] for b in BAD_CONFIGS], ids=[b[0] for b in BAD_CONFIGS]
)
def test_malformed_replay_configs_fail_fast_naming_the_field(tmp_path, change, message):
    good = write_experiment(tmp_path, make_click_log(50, seed=1).text, POLICIES)
    cfg = yaml.safe_load(good.read_text())
    change(cfg)
    good.write_text(yaml.safe_dump(cfg))
    db = tmp_path / "mlflow.db"
    code, out, err = replay(good, f"sqlite:///{db}", tmp_path / "runs", "bad", "--sequential")
    assert code == 2 and out == ""
    assert err.startswith("error: ")
    assert re.search(message, err), err
    assert not db.exists() and not (tmp_path / "runs").exists()  # nothing ran, nothing logged


BAD_SETTINGS = [
    ([1.0, 0.0], "reward_range", r"experiment\.reward_range = \[1\.0, 0\.0\]: expected low < high"),
    ([0.0, 0.0], "reward_range", r"experiment\.reward_range = \[0\.0, 0\.0\]: expected low < high"),
    ([0.0, math.inf], "reward_range", r"experiment\.reward_range\.1: Input should be a finite"),
    ([math.nan, 1.0], "reward_range", r"experiment\.reward_range\.0: Input should be a finite"),
    (math.inf, "clip", r"experiment\.clip: Input should be a finite number"),
    (math.inf, "ridge_l2", r"experiment\.ridge_l2: Input should be a finite number"),
    (["ips", "ips", "dr"], "estimators", r"experiment\.estimators: repeated \['ips'\]"),
    (10**30, "accepted", r"experiment\.accepted: Input should be less than or equal to 10{15}"),
    ([1, 2, 1], "seeds", r"experiment\.seeds: repeated \[1\]"),
]


@pytest.mark.parametrize(
    ("value", "field", "message"), BAD_SETTINGS, ids=[f"{b[1]}={b[0]}" for b in BAD_SETTINGS]
)
def test_replay_settings_run_would_refuse_are_refused_by_check(
    tmp_path, capsys, value, field, message
):
    """These passed ``allocator check`` and then ``run`` refused them (reward_range) or
    failed every cell (an infinite clip or ridge, a repeated estimator, an ``accepted``
    past int64)."""
    good = write_experiment(tmp_path, make_click_log(50, seed=1).text, POLICIES)
    assert main(["check", str(good)]) == 0
    capsys.readouterr()
    cfg = yaml.safe_load(good.read_text())
    cfg["experiment"][field] = value
    good.write_text(yaml.safe_dump(cfg))
    assert main(["check", str(good)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    db = tmp_path / "mlflow.db"
    code, out, err = replay(good, f"sqlite:///{db}", tmp_path / "runs", "bad", "--sequential")
    assert code == 2 and out == "" and re.search(message, err), err
    assert not db.exists() and not (tmp_path / "runs").exists()


# ------------------------------------------------------------ the bundled example
def test_the_example_log_is_reproducible_byte_for_byte():
    data = example_csv()
    assert EXAMPLE_PATH.read_bytes() == data
    assert len(data) <= 150_000 and data.count(b"\n") <= 2001


@pytest.mark.heavy
def test_the_bundled_example_config_runs(tmp_path, tracking_uri):
    code, out, err = run_cli(
        "replay",
        str(ROOT / "configs" / "replay_example.yaml"),
        "--sequential",
        "--tracking-uri",
        tracking_uri,
        "--out",
        str(tmp_path / "runs"),
        "--launch-id",
        "ex",
    )
    assert code == 0, err
    assert out.startswith("20 cells over 2,000 logged rounds, launch ex\n")
    assert re.search(r"^logger +ips ", out, re.M)  # the CSV's logger, on its own rows
    lines = out.split("\n\n")[1].splitlines()[1:]
    ranked = list(dict.fromkeys(line.split()[0] for line in lines))
    # tiers change the best destination: the contextual policy is worth more
    assert ranked.index("linear_ts") < ranked.index("beta_ts")


@pytest.mark.heavy
def test_learning_policy_and_named_targets_on_the_allocators_own_log(tmp_path, tracking_uri):
    """An ε-mixed allocator's (non-uniform) log: nonstationary replay of a learning Beta TS,
    the logging and uniform targets, and a uniform (n, k) distribution file."""
    means = own_log(tmp_path / "exp" / "decisions", 3000, epsilon=0.3)
    data = from_decision_log(load_decision_log(tmp_path / "exp" / "decisions"), "reward")
    np.save(tmp_path / "exp" / "uniform.npy", np.full((data.n_rounds, data.n_arms), 1 / 3))
    policies = [
        {"name": "ts_online", "mode": "learning", "engine": {"policy": BETA, "objective": CLICKS}},
        {"name": "logger", "target": "logging"},
        {"name": "uniform", "target": "uniform"},
        {"name": "uniform_file", "distribution": "uniform.npy"},
    ]
    cfg = own_replay_config(tmp_path / "exp", policies)
    code, out, err = replay(cfg, tracking_uri, tmp_path / "runs", "tg", "--sequential")
    assert code == 0, err + out
    runs = runs_of(tracking_uri, "tg")
    m = {name: runs[(name, 1, 0)].data.metrics for name in [p["name"] for p in policies]}
    online = m["ts_online"]
    print({k: round(v, 4) for k, v in online.items()})
    assert 0.05 < online["acceptance_rate"] <= 1.0 and online["replay.accepted"] > 100
    assert online["estimate/replay/lower"] < online["estimate/replay"]
    assert online["estimate/replay"] < online["estimate/replay/upper"]
    # it learns: better than the uniform value, never better than the best arm beyond noise
    uniform_value = float(np.mean(list(means.values())))
    assert uniform_value < online["estimate/replay/upper"] and online["estimate/replay"] < 0.65
    logged = float(data.rewards[1500:].mean())
    assert m["logger"]["estimate/ips"] == pytest.approx(logged, abs=1e-12)
    for name in ("uniform", "uniform_file"):
        assert m[name]["estimate/dr/lower"] <= uniform_value <= m[name]["estimate/dr/upper"]
    assert m["uniform"]["estimate/ips"] == m["uniform_file"]["estimate/ips"]
    table = out.split("\n\n")[1]
    assert "ts_online" in table and "replay" in table and "[" in table


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        ({"name": "x"}, "exactly one of engine, target, distribution"),
        ({"name": "x", "target": "uniform", "mode": "learning"}, "learning needs an engine"),
        ({"name": "x", "target": "best"}, "target"),
        ({"name": "x", "target": "uniform", "c": 0.0}, "c"),
        ({"name": "x", "distribution": "missing.npy"}, "not a readable .npy"),
    ],
)
def test_bad_targets_in_a_replay_config_are_config_errors(tmp_path, policy, match):
    log = make_click_log(200, seed=1)
    cfg = write_experiment(tmp_path, log.text, [policy])
    code, _, err = run_cli("replay", str(cfg), "--sequential", "--out", str(tmp_path / "r"),
                           "--tracking-uri", f"sqlite:///{tmp_path}/m.db")  # fmt: skip
    assert code != 0 and match in err, err


PARTNER_FLOOR = {"window": 200, "constraints": [{
    "name": "partner_food", "kind": "floor", "target": {"group": "partner"},
    "scope": {"category": ["food"]},
    "schedule": {"start": "2023-11-14T00:00:00Z", "end": "2023-11-16T00:00:00Z",
                 "start_value": 0.7},
}]}  # fmt: skip


def constrained_own_log(log_dir: Path, n: int) -> float:
    """An allocator under a partner floor in the food category logs n requests (one a
    second from 1.7e9, alternately food and toys); returns the logged mean click."""
    means = {"jd": 0.3, "shop:7": 0.6, "taobao": 0.45}
    groups = {"jd": "partner", "shop:7": "mini_shop", "taobao": "partner"}
    config = AllocatorConfig.model_validate({
        "engine": {"policy": {**BETA, "epsilon": 0.2}, "objective": CLICKS},
        "constraints": PARTNER_FLOOR,
        "arms": [{"id": a, "group": g} for a, g in groups.items()],
    })  # fmt: skip
    alloc = Allocator(config, seed=5, log_dir=log_dir)
    u = np.random.default_rng(9).random(n)
    clicks = []
    for i in range(n):
        cat = "food" if i % 2 else "toys"
        d = alloc.decide(list(means), attrs={"category": cat}, timestamp=1.7e9 + i)
        clicks.append(float(u[i] < means[d.arm_id]))
        alloc.update(d.decision_id, {"click": clicks[-1]}, 1.7e9 + i + 0.5)
    alloc.close()
    return float(np.mean(clicks))


def test_constrained_policies_and_a_contract_what_if_in_a_replay_config(tmp_path, tracking_uri):
    """The logger's own config replayed as a learning policy under its contract (its value
    is what the log earned), the same without the floor (a what-if: worth more, the floor
    holds traffic on weaker partners), and the constrained policy frozen."""
    logged_mean = constrained_own_log(tmp_path / "exp" / "decisions", 3000)
    engine = {"policy": {**BETA, "epsilon": 0.2}, "objective": CLICKS}
    policies = [
        {"name": "protected", "mode": "learning", "engine": engine,
         "constraints": PARTNER_FLOOR},
        {"name": "no_floor", "mode": "learning", "engine": engine},
        {"name": "protected_frozen", "engine": engine, "constraints": PARTNER_FLOOR},
    ]  # fmt: skip
    cfg = own_replay_config(tmp_path / "exp", policies)
    code, out, err = replay(cfg, tracking_uri, tmp_path / "runs", "cn", "--sequential")
    assert code == 0, err + out
    runs = runs_of(tracking_uri, "cn")
    m = {p["name"]: runs[(p["name"], 1, 0)].data.metrics for p in policies}
    print({k: {e: round(v, 4) for e, v in x.items() if e.startswith("estimate")}
           for k, x in m.items()}, "logged", round(logged_mean, 4))  # fmt: skip
    prot = m["protected"]
    assert prot["acceptance_rate"] > 0.5  # the logger's own config: nearly every event
    assert prot["estimate/replay/lower"] <= logged_mean <= prot["estimate/replay/upper"]
    assert m["no_floor"]["estimate/replay"] > prot["estimate/replay"] + 0.02
    frozen = m["protected_frozen"]
    assert frozen["estimate/dr/lower"] <= frozen["estimate/dr"] <= frozen["estimate/dr/upper"]


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        ({"name": "x", "target": "uniform", "constraints": PARTNER_FLOOR},
         "constraints need an engine"),
        ({"name": "x", "engine": {"policy": BETA, "objective": CLICKS},
          "constraints": PARTNER_FLOOR},
         r"read timestamps and the request attributes \['category'\]; the logs have no "
         r"timestamps and attributes \[\]"),
    ],
)  # fmt: skip
def test_constraints_a_log_cannot_feed_are_config_errors(tmp_path, policy, match):
    cfg = write_experiment(tmp_path, make_click_log(200, seed=1).text, [policy])
    code, _, err = run_cli("replay", str(cfg), "--sequential", "--out", str(tmp_path / "r"),
                           "--tracking-uri", f"sqlite:///{tmp_path}/m.db")  # fmt: skip
    assert code != 0 and re.search(match, err), err


@pytest.mark.parametrize(("tau", "same_as"), [(1e12, "dr"), (1e-9, "dm")])
def test_switch_tau_and_the_resorted_log_note(tmp_path, tracking_uri, tau, same_as):
    """``experiment.switch_tau`` reaches Switch-DR (a threshold above every weight is DR,
    below every weight DM); a log re-sorted by time warns that a distribution file is read
    in the loaded order."""
    lines = make_click_log(400, 7).text.splitlines()
    stamps = 1_760_000_000 + np.arange(400)
    stamps[[10, 11]] = stamps[[11, 10]]  # two rows out of order
    text = "\n".join(
        [lines[0] + ",ts"] + [f"{r},{t}" for r, t in zip(lines[1:], stamps, strict=True)]
    )
    policies = [{"name": "uniform_file", "distribution": "uniform.npy"}]
    cfg = write_experiment(
        tmp_path, text + "\n", policies, estimators=["dm", "dr", "switch_dr"],
        interval="bootstrap", switch_tau=tau,
    )  # fmt: skip
    raw = yaml.safe_load(cfg.read_text())
    raw["logs"]["foreign"]["columns"] = {**COLUMNS, "timestamp": "ts"}
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    np.save(cfg.parent / "uniform.npy", np.full((400, len(ARMS)), 1 / len(ARMS)))
    code, out, err = replay(cfg, tracking_uri, tmp_path / "runs", f"tau{tau:g}", "--sequential")
    assert code == 0, err + out
    assert "note: the log was re-sorted by time" in out and "['uniform_file']" in out
    m = runs_of(tracking_uri, f"tau{tau:g}")[("uniform_file", 1, 0)].data.metrics
    assert m["ope.switch_dr.value"] == pytest.approx(m[f"ope.{same_as}.value"], abs=1e-12)


def test_a_distribution_in_file_order_is_read_by_file_row(tmp_path, tracking_uri):
    """``distribution_rows: file`` reads an array written in the file's order (one row per
    data row) through the re-sort by time: it gives the estimates of the same distribution
    written in the loaded order; read as loaded, the file-order array scores other rows."""
    n = 300
    lines = make_click_log(n, 5).text.splitlines()
    stamps = 1_760_000_000 + np.random.default_rng(0).permutation(n)  # every row moves
    text = "\n".join(
        [lines[0] + ",ts"] + [f"{r},{t}" for r, t in zip(lines[1:], stamps, strict=True)]
    )
    favourite = np.random.default_rng(1).integers(0, len(ARMS), n)  # per file row
    by_file = np.full((n, len(ARMS)), 0.1 / (len(ARMS) - 1))
    by_file[np.arange(n), favourite] = 0.9
    order = np.argsort(stamps, kind="stable")  # loaded round i is file row order[i]
    policies = [
        {"name": "by_file", "distribution": "by_file.npy", "distribution_rows": "file"},
        {"name": "by_loaded", "distribution": "by_loaded.npy"},
        {"name": "misread", "distribution": "by_file.npy"},
    ]
    cfg = write_experiment(tmp_path, text + "\n", policies, estimators=["ips", "dr"])
    raw = yaml.safe_load(cfg.read_text())
    raw["logs"]["foreign"]["columns"] = {**COLUMNS, "timestamp": "ts"}
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    np.save(cfg.parent / "by_file.npy", by_file)
    np.save(cfg.parent / "by_loaded.npy", by_file[order])
    code, out, err = replay(cfg, tracking_uri, tmp_path / "runs", "rows", "--sequential")
    assert code == 0, err + out
    assert "['by_loaded', 'misread'] follow it" in out  # the note names only those
    runs = runs_of(tracking_uri, "rows")
    m = {p["name"]: runs[(p["name"], 1, 0)].data.metrics for p in policies}
    for key in ("ope.ips.value", "ope.ips.low", "ope.ips.high", "ope.dr.value"):
        assert m["by_file"][key] == m["by_loaded"][key], key
    assert m["misread"]["ope.ips.value"] != m["by_file"]["ope.ips.value"]
    # a file-order array must have one row per data row of the file
    for wrong in (by_file[:-1], by_file[:, :-1]):  # a row short, an arm short
        np.save(cfg.parent / "by_file.npy", wrong)
        code, _, err = replay(cfg, tracking_uri, tmp_path / "runs", "short", "--sequential")
        assert code != 0 and f"expected ({n}, {len(ARMS)}): distribution_rows: file" in err


def test_distribution_rows_needs_a_distribution(tmp_path):
    policy = {"name": "x", "target": "uniform", "distribution_rows": "file"}
    cfg = write_experiment(tmp_path, make_click_log(50, seed=1).text, [policy])
    code, _, err = run_cli("replay", str(cfg), "--sequential", "--out", str(tmp_path / "r"),
                           "--tracking-uri", f"sqlite:///{tmp_path}/m.db")  # fmt: skip
    assert code != 0 and "distribution_rows needs a distribution" in err, err


def test_the_logger_of_a_foreign_log_is_ranked_by_its_mean_reward(tmp_path, tracking_uri):
    """``target: logging`` on a log with only the chosen arm's propensity: IPS and SNIPS are
    the test rows' mean reward, DR is not reported, and the ranked table and the chart place
    the logger by its first estimator in the headline order (SNIPS)."""
    policies = [{"name": "uniform", "target": "uniform"}, {"name": "logger", "target": "logging"}]
    cfg = write_experiment(tmp_path, make_click_log(600, seed=3).text, policies)
    code, out, err = replay(cfg, tracking_uri, tmp_path / "runs", "lg", "--sequential")
    assert code == 0, err + out
    runs = runs_of(tracking_uri, "lg")
    m = runs[("logger", 1, 0)].data.metrics
    assert m["estimate/ips"] == pytest.approx(m["logged.mean_reward"], abs=1e-12)
    assert m["estimate/snips"] == pytest.approx(m["logged.mean_reward"], abs=1e-12)
    assert m["estimate/ips/lower"] < m["estimate/ips"] < m["estimate/ips/upper"]
    assert "estimate/dr" not in m
    # the chart's estimate is the one it is ranked by: SNIPS, its first in the headline order
    assert m["estimate"] == m["estimate/snips"]
    table = out.split("\n\n")[1]
    assert re.search(r"^logger +ips ", table, re.M) and "logger    dr" not in table


def test_an_own_log_has_no_file_rows_for_a_distribution(tmp_path):
    own_log(tmp_path / "exp" / "decisions", 200, epsilon=0.3)
    np.save(tmp_path / "exp" / "u.npy", np.full((200, 3), 1 / 3))
    policy = {"name": "u", "distribution": "u.npy", "distribution_rows": "file"}
    cfg = own_replay_config(tmp_path / "exp", [policy])
    code, _, err = run_cli("replay", str(cfg), "--sequential", "--out", str(tmp_path / "r"),
                           "--tracking-uri", f"sqlite:///{tmp_path}/m.db")  # fmt: skip
    assert code != 0 and "distribution_rows: file needs a foreign log file" in err, err
