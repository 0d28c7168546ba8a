"""Replay experiments: candidate policies evaluated on logged traffic, as a tracked grid.

The grid is policy × seed × shard. A ``frozen`` policy is fitted on the first
``train_fraction`` of its shard (the logged arms and rewards) and then evaluated on the rest
by the off-policy estimators, with bootstrap intervals and weight diagnostics. A
``learning`` policy is evaluated by rejection replay, which is only valid on uniform (or
declared ε-uniform) logs; on other logs the cell fails with the explanation instead of
returning a biased number.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import numpy as np
from pydantic import Field, model_validator

from allocator.config import EngineConfig, StrictModel, load_yaml, parse_config
from allocator.errors import ConfigError
from allocator.launch.orchestrate import Launch, LaunchOutcome
from allocator.launch.runner import TaskResult
from allocator.launch.tracking import CellRecord, flatten
from allocator.policies import Policy, make_policy
from allocator.registry import ArmRegistry
from allocator.replay.columns import ForeignLogConfig
from allocator.replay.dataset import LoggedData
from allocator.replay.evaluate import ESTIMATORS, evaluate
from allocator.replay.rejection import replay_learning_policy
from allocator.replay.reward_model import RidgeRewardModel

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class LogSource(StrictModel):
    """Either the allocator's own decision log directory or a foreign file with a mapping."""

    decision_log: Path | None = None
    reward: Literal["reward", "click", "order", "gmv"] = "reward"
    missing: Literal["error", "drop"] = "error"
    foreign: ForeignLogConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LogSource:
        if (self.decision_log is None) == (self.foreign is None):
            raise ValueError("logs: give exactly one of decision_log or foreign")
        return self


class ReplaySettings(StrictModel):
    name: Name = "replay"
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [1]
    )
    shards: Annotated[int, Field(ge=1, le=1000)] = 1
    train_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    estimators: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["ips", "snips", "dm", "dr", "sndr"]
    )
    n_boot: Annotated[int, Field(ge=10, le=10_000)] = 200
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    clip: Annotated[float, Field(gt=0.0)] | None = None
    ridge_l2: Annotated[float, Field(gt=0.0)] = 1.0
    ridge_folds: Annotated[int, Field(ge=1, le=20)] = 2

    @model_validator(mode="after")
    def _known_estimators(self) -> ReplaySettings:
        unknown = sorted(set(self.estimators) - set(ESTIMATORS))
        if unknown:
            raise ValueError(
                f"experiment.estimators: unknown {unknown}; known {sorted(ESTIMATORS)}"
            )
        return self


class CandidatePolicy(StrictModel):
    name: Name
    engine: EngineConfig
    mode: Literal["frozen", "learning"] = "frozen"
    #: the logging policy's uniform share ε, for replaying a learning policy on ε-mixture logs
    uniform_epsilon: Annotated[float, Field(gt=0.0, le=1.0)] | None = None


class ReplayExperimentConfig(StrictModel):
    logs: LogSource
    experiment: ReplaySettings = ReplaySettings()
    policies: Annotated[list[CandidatePolicy], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> ReplayExperimentConfig:
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError(f"policy names must be unique: {names}")
        return self


@dataclass(frozen=True)
class ReplayTask:
    name: str
    policy: CandidatePolicy
    seed: int
    shard: int
    coords: dict[str, str]


def load_logs(source: LogSource, base_dir: Path) -> LoggedData:
    """Read the configured log (paths relative to the config file's directory)."""
    from allocator.logs import load_decision_log
    from allocator.replay.sources import from_decision_log, load_foreign_log

    if source.foreign is not None:
        return load_foreign_log(source.foreign, base_dir)
    assert source.decision_log is not None
    path = (
        source.decision_log if source.decision_log.is_absolute() else base_dir / source.decision_log
    )
    return from_decision_log(load_decision_log(path), source.reward, source.missing)


def _policy_for(engine: EngineConfig, data: LoggedData, seed: int) -> Policy:
    groups = data.arm_groups or ("default",) * data.n_arms
    reg = ArmRegistry.build(list(data.arm_ids), list(groups))  # index i = log arm i
    if engine.policy.USES_ARM_FEATURES:
        raise ConfigError(f"{engine.policy.kind} needs arm features, which logs do not carry")
    return make_policy(engine.policy, reg, seed)


def check_policies(policies: list[CandidatePolicy], data: LoggedData) -> None:
    """Refuse, before any cell runs, a policy that cannot read these logs."""
    width = None if data.contexts is None else data.contexts.shape[1]
    for i, p in enumerate(policies):
        where = f"policies[{i}] ({p.name}): engine.policy"
        if p.engine.policy.USES_ARM_FEATURES:
            raise ConfigError(
                f"{where}.kind = {p.engine.policy.kind} needs arm features; logs have none"
            )
        want = getattr(p.engine.policy, "n_features", None)
        if want is not None and want != width:
            got = "no context" if width is None else f"{width} context columns {data.context_names}"
            raise ConfigError(f"{where}.n_features = {want}, but the logs have {got}")


def run_replay_cell(shared: tuple[LoggedData, ReplaySettings], task: ReplayTask) -> dict[str, Any]:
    """One policy × seed × shard: estimates, intervals, diagnostics (plain dict for the driver)."""
    data, settings = shared
    shard = data.shard(task.shard, settings.shards)
    rng = np.random.default_rng(np.random.SeedSequence([task.seed, task.shard, 0x5E9]))
    policy = _policy_for(task.policy.engine, shard, task.seed)
    ctx = shard.contexts if policy.n_features is not None else None
    metrics: dict[str, float] = {"rounds": float(shard.n_rounds)}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if task.policy.mode == "learning":
        res = replay_learning_policy(policy, shard, rng, task.policy.uniform_epsilon)
        metrics.update(
            {"replay.value": res.value, "replay.low": res.low, "replay.high": res.high,
             "replay.accepted": float(res.n_accepted), "replay.kept": float(res.n_kept)}
        )  # fmt: skip
        if res.curve.shape[0]:
            idx = np.unique(np.linspace(0, res.curve.shape[0] - 1, 100).astype(np.int64))
            curves["curve.replay_mean_reward"] = (idx, res.curve[idx])
        return {"metrics": metrics, "curves": curves}
    n_train = int(shard.n_rounds * settings.train_fraction)
    if n_train:
        policy.update_batch(
            shard.actions[:n_train], shard.rewards[:n_train], None if ctx is None else ctx[:n_train]
        )
        policy.refresh()
    test = shard.take(n_train, shard.n_rounds)
    model = RidgeRewardModel(settings.ridge_l2, settings.ridge_folds)
    result = evaluate(
        test, policy, estimators=settings.estimators, reward_model=model, clip=settings.clip,
        n_boot=settings.n_boot, alpha=settings.alpha, rng=rng,
    )  # fmt: skip
    metrics["logged.mean_reward"] = float(test.rewards.mean())
    metrics["train_rounds"] = float(n_train)
    for name, est in result.estimates.items():
        metrics.update({f"ope.{name}.value": est.value, f"ope.{name}.low": est.low,
                        f"ope.{name}.high": est.high})  # fmt: skip
    d = result.diagnostics
    metrics.update({"ope.ess": d.effective_sample_size, "ope.max_weight": d.max_weight,
                    "ope.zero_support": d.zero_weight_share})  # fmt: skip
    return {"metrics": metrics, "curves": curves}


def run_replay(
    config_path: str | Path, runner: Any, tracking_uri: str | None = None,
    out_dir: str | Path = "runs", launch_id: str | None = None, stream: TextIO | None = None,
) -> LaunchOutcome:  # fmt: skip
    """Evaluate every policy × seed × shard, track each cell, print the ranked table."""
    path = Path(config_path)
    cfg: ReplayExperimentConfig = parse_config(ReplayExperimentConfig, load_yaml(path), str(path))
    data = load_logs(cfg.logs, path.parent)
    check_policies(cfg.policies, data)
    s = cfg.experiment
    tasks = [
        ReplayTask(f"{p.name}/seed={seed}/shard={k}", p, seed, k,
                   {"policy": p.name, "mode": p.mode, "seed": str(seed), "shard": str(k)})
        for p in cfg.policies for seed in s.seeds for k in range(s.shards)
    ]  # fmt: skip
    launch = Launch(s.name, cfg.model_dump(mode="json"), tracking_uri, launch_id, out_dir, stream)
    launch.say(
        f"{len(tasks)} cells over {data.n_rounds:,} logged rounds, launch {launch.launch_id}\n"
    )
    results = launch.run(runner, run_replay_cell, tasks, (data, s), partial(_cell_record, s))
    per_policy: dict[str, list[float]] = {}
    for task, res in zip(tasks, results, strict=True):
        if res.ok:
            key = "replay.value" if task.policy.mode == "learning" else f"ope.{_headline(s)}.value"
            per_policy.setdefault(task.policy.name, []).append(
                res.value["metrics"].get(key, float("nan"))
            )
    rows: list[dict[str, Any]] = sorted(
        ({"policy": k, "value": float(np.mean(v)), "cells": len(v)} for k, v in per_policy.items()),
        key=lambda r: -r["value"],
    )
    table = "\n".join(
        [f"{'#':>2}  {'policy':<24}{'value':>12}  cells"]
        + [
            f"{i:>2}  {r['policy']:<24}{r['value']:>12.5f}  {r['cells']}"
            for i, r in enumerate(rows, 1)
        ]
    )
    summary = launch.directory / "summary.txt"
    summary.write_text(table + "\n")
    note = f"(value: {_headline(s)} for frozen policies, rejection replay for learning)\n"
    return launch.finish(rows, table, note, {"rounds": str(data.n_rounds)}, [summary])


def _cell_record(s: ReplaySettings, task: ReplayTask, res: TaskResult) -> CellRecord:
    params = flatten(
        {
            "policy": task.policy.model_dump(mode="json"),
            "seed": task.seed,
            "shard": task.shard,
            "experiment": s.model_dump(mode="json"),
        }
    )
    if not res.ok:
        return CellRecord(task.name, task.coords, params, error=res.error)
    return CellRecord(task.name, task.coords, params, res.value["metrics"], res.value["curves"])


def _headline(s: ReplaySettings) -> str:
    for name in ("dr", "sndr", "snips", "ips"):
        if name in s.estimators:
            return name
    return s.estimators[0]
