"""Replay experiments: candidate policies evaluated on logged traffic, as a tracked grid.

The grid is policy × seed × shard. A ``frozen`` policy is fitted on the first
``train_fraction`` of its shard (the logged arms and rewards) and then evaluated on the rest
by the off-policy estimators, with anytime-valid intervals for IPS / DR (for the others
their bootstrap widened to contain those; the plain bootstrap for all with ``interval:
bootstrap``) and weight diagnostics; a named target
(``logging``, ``uniform``) or a given distribution is evaluated on the same rows. A
``learning`` policy is evaluated by nonstationary replay on its whole shard (or by rejection
replay, valid only on uniform or declared ε-uniform logs, which refuses any other log).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import numpy as np
from pydantic import Field, model_validator

from allocator.config import (
    EngineConfig,
    FiniteFloat,
    PositiveFloat,
    StrictModel,
    load_yaml,
    parse_config,
)
from allocator.constraints import ConstraintSet
from allocator.engine import Engine
from allocator.errors import ConfigError, InvalidInputError
from allocator.launch import view
from allocator.launch.orchestrate import Launch, LaunchOutcome
from allocator.launch.replay_table import (
    format_table,
    headline,
    ranked_by,
    summary_rows,
    write_summary,
)
from allocator.launch.runner import TaskResult
from allocator.launch.tracking import CellRecord, flatten
from allocator.replay.columns import ForeignLogConfig, preview
from allocator.replay.dataset import RESORTED, LoggedData
from allocator.replay.estimators import SwitchDR
from allocator.replay.evaluate import ESTIMATORS, evaluate, reward_range_of, target_distribution
from allocator.replay.nonstationary import replay_nonstationary
from allocator.replay.rejection import replay_learning_policy
from allocator.replay.reward_model import make_reward_model
from allocator.replay.targets import engine_for_log

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
#: the most accepted rounds ``experiment.accepted`` may ask for (a count the replay keeps in
#: int64 arithmetic; far past any log)
MAX_ACCEPTED = 10**15


class LogSource(StrictModel):
    """Either the allocator's own decision log directory or a foreign file with a mapping;
    ``arms_file``: the arms' catalogue (Parquet or Arrow: ``id``, ``group``, ``features``),
    which gives the log's arms their groups and the features the shared-model families
    weigh (logs carry neither for arms that were never chosen)."""

    decision_log: Path | None = None
    reward: Literal["reward", "click", "order", "gmv"] = "reward"
    missing: Literal["error", "drop"] = "error"
    foreign: ForeignLogConfig | None = None
    arms_file: Path | None = None

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
    clip: PositiveFloat | None = None
    #: Switch-DR's weight threshold: rows weighted above it keep only the model's term
    switch_tau: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = SwitchDR.tau
    ridge_l2: PositiveFloat = 1.0
    ridge_folds: Annotated[int, Field(ge=1, le=20)] = 2
    reward_model: Literal["auto", "ridge", "logistic"] = "auto"
    #: (low, high), finite, low < high
    reward_range: tuple[FiniteFloat, FiniteFloat] | None = None
    interval: Literal["cs", "bootstrap"] = "cs"
    #: learning policies are replayed until this many accepted rounds (equal counts)
    accepted: Annotated[int, Field(ge=1, le=MAX_ACCEPTED)] | None = None

    @model_validator(mode="after")
    def _known_estimators(self) -> ReplaySettings:
        unknown = sorted(set(self.estimators) - set(ESTIMATORS))
        if unknown:
            raise ValueError(
                f"experiment.estimators: unknown {unknown}; known {sorted(ESTIMATORS)}"
            )
        repeated = sorted({e for e in self.estimators if self.estimators.count(e) > 1})
        if repeated:
            raise ValueError(f"experiment.estimators: repeated {repeated}; name each once")
        seeds = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if seeds:
            raise ValueError(f"experiment.seeds: repeated {seeds}; the same cells again")
        return self

    @model_validator(mode="after")
    def _reward_range(self) -> ReplaySettings:
        if self.reward_range is not None and not self.reward_range[0] < self.reward_range[1]:
            low, high = self.reward_range
            raise ValueError(f"experiment.reward_range = [{low}, {high}]: expected low < high")
        return self


class CandidatePolicy(StrictModel):
    """One candidate: an engine config, a named target (``logging``, ``uniform``) or a
    ``distribution`` file (an ``.npy`` (n, k) array: per logged round, the probability of
    each of the log's arms; ``distribution_rows: file`` for one row per data row of the
    foreign file, in its order). Only an engine can be ``learning``: it is replayed by
    nonstationary replay (acceptance constant ``c``), or by rejection replay with
    ``replay: rejection`` (uniform logs, or the ε-uniform slice of ``uniform_epsilon``).
    ``constraints`` puts the engine under contracts, run on the log's timestamps and
    request attributes: a contract what-if is a second entry with another set."""

    name: Name
    engine: EngineConfig | None = None
    constraints: ConstraintSet | None = None
    target: Literal["logging", "uniform"] | None = None
    distribution: Path | None = None
    #: the distribution's rows: the rounds as loaded (after keep_position and the sort by
    #: time), or one per data row of the foreign log's file, in the file's order
    distribution_rows: Literal["loaded", "file"] = "loaded"
    mode: Literal["frozen", "learning"] = "frozen"
    replay: Literal["nonstationary", "rejection"] = "nonstationary"
    c: Literal["adaptive"] | Annotated[float, Field(gt=0.0, le=1.0)] = "adaptive"
    #: the logging policy's uniform share ε, for rejection replay on ε-mixture logs
    uniform_epsilon: Annotated[float, Field(gt=0.0, le=1.0)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> CandidatePolicy:
        given = [k for k in ("engine", "target", "distribution") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"policy {self.name!r}: give exactly one of engine, target, distribution "
                f"(got {given or 'none'})"
            )
        if self.distribution_rows != "loaded" and self.distribution is None:
            raise ValueError(f"policy {self.name!r}: distribution_rows needs a distribution")
        if self.mode == "learning" and self.engine is None:
            raise ValueError(f"policy {self.name!r}: mode learning needs an engine")
        if self.constraints is not None and self.engine is None:
            raise ValueError(f"policy {self.name!r}: constraints need an engine")
        if self.constraints is not None and self.replay == "rejection":
            raise ValueError(
                f"policy {self.name!r}: constraints are replayed by replay: nonstationary"
            )
        if self.uniform_epsilon is not None and self.replay != "rejection":
            raise ValueError(f"policy {self.name!r}: uniform_epsilon is for replay: rejection")
        return self


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


def load_logs(
    source: LogSource, base_dir: Path, reward_range: Any = None, arm_features: bool = False
) -> LoggedData:
    """Read the configured log (paths relative to the config file's directory) and, with an
    ``arms_file``, its arms' groups (and features, when ``arm_features``); rewards outside
    a declared ``reward_range`` are import errors."""
    from allocator.logs import load_decision_log
    from allocator.replay.sources import from_decision_log, load_foreign_log, with_catalogue

    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else base_dir / p

    if source.foreign is not None:
        data = load_foreign_log(source.foreign, base_dir, reward_range)
    else:
        assert source.decision_log is not None
        data = from_decision_log(
            load_decision_log(resolve(source.decision_log)), source.reward, source.missing,
            reward_range=reward_range,
        )  # fmt: skip
    if source.arms_file is not None:
        data = with_catalogue(data, resolve(source.arms_file), arm_features)
    return data


def check_policies(policies: list[CandidatePolicy], data: LoggedData) -> None:
    """Refuse, before any cell runs, a policy that cannot read these logs."""
    width = None if data.contexts is None else data.contexts.shape[1]
    for i, p in enumerate(policies):
        if p.engine is None:
            continue
        where = f"policies[{i}] ({p.name}): engine.policy"
        if p.engine.policy.USES_ARM_FEATURES:
            width = getattr(p.engine.policy, "n_arm_features", None)
            if data.arm_features is None:
                raise ConfigError(
                    f"{where}.kind = {p.engine.policy.kind} needs arm features; logs have "
                    "none: give the arms' catalogue as logs.arms_file"
                )
            if width != data.arm_features.shape[1]:
                raise ConfigError(
                    f"{where}.n_arm_features = {width}, but logs.arms_file has "
                    f"{data.arm_features.shape[1]} features an arm"
                )
        if p.constraints is not None and p.constraints.constraints:
            needs = sorted({a for c in p.constraints.constraints for a in c.scope})
            have = sorted(data.attrs or {})
            if data.timestamps is None or not set(needs) <= set(have):
                raise ConfigError(
                    f"policies[{i}] ({p.name}).constraints read timestamps and the request "
                    f"attributes {needs}; the logs have "
                    f"{'no timestamps and ' if data.timestamps is None else ''}attributes {have}"
                )
        want = getattr(p.engine.policy, "n_features", None)
        if want is not None and want != width:
            got = (
                "no context"
                if width is None
                else f"{width} context columns {preview(list(data.context_names))}"
            )
            raise ConfigError(f"{where}.n_features = {want}, but the logs have {got}")


def load_distributions(
    policies: list[CandidatePolicy], data: LoggedData, base_dir: Path
) -> dict[str, np.ndarray]:
    """Each ``distribution`` file (``.npy``, no pickles) as per-candidate probabilities."""
    out: dict[str, np.ndarray] = {}
    for i, p in enumerate(policies):
        if p.distribution is None:
            continue
        path = p.distribution if p.distribution.is_absolute() else base_dir / p.distribution
        where = f"policies[{i}] ({p.name}).distribution = {str(path)!r}"
        try:
            matrix = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{where}: not a readable .npy array ({err})") from None
        try:
            matrix = np.asarray(matrix, dtype=np.float64)
            if p.distribution_rows == "file":
                matrix = _file_rows(matrix, data)
            out[p.name] = target_distribution(matrix, data)
        except (InvalidInputError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
    return out


def _file_rows(matrix: np.ndarray, data: LoggedData) -> np.ndarray:
    """An array with a row per data row of the log's file, as the loaded rounds' rows."""
    if data.source_rows is None or data.source_size is None:
        raise InvalidInputError(
            "distribution_rows: file needs a foreign log file; the allocator's own decision "
            "log is read in its own order (distribution_rows: loaded)"
        )
    if matrix.ndim != 2 or matrix.shape != (data.source_size, data.n_arms):
        raise InvalidInputError(
            f"the array has shape {matrix.shape}, expected ({data.source_size}, "
            f"{data.n_arms}): distribution_rows: file reads one row per data row of the "
            "file, in the file's order, and one column per arm of the log"
        )
    return matrix[data.source_rows]


def _estimate_metrics(name: str, value: float, low: float, high: float) -> dict[str, float]:
    return {f"estimate/{name}": value, f"estimate/{name}/lower": low,
            f"estimate/{name}/upper": high}  # fmt: skip


def _learning_cell(
    engine: Engine, shard: LoggedData, settings: ReplaySettings, p: CandidatePolicy,
    rng: np.random.Generator,
) -> dict[str, Any]:  # fmt: skip
    metrics: dict[str, float] = {"rounds": float(shard.n_rounds)}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if p.replay == "rejection":
        res = replay_learning_policy(engine.policy, shard, rng, p.uniform_epsilon)
        metrics.update(
            {"replay.value": res.value, "replay.low": res.low, "replay.high": res.high,
             "replay.accepted": float(res.n_accepted), "replay.kept": float(res.n_kept),
             "ess": float(res.n_accepted),
             "acceptance_rate": res.n_accepted / max(res.n_kept, 1)}
        )  # fmt: skip
        metrics.update(_estimate_metrics("replay", res.value, res.low, res.high))
        if res.curve.shape[0]:
            idx = np.unique(np.linspace(0, res.curve.shape[0] - 1, 100).astype(np.int64))
            curves["curve.replay_mean_reward"] = (idx, res.curve[idx])
        return {"metrics": metrics, "curves": curves}
    ns = replay_nonstationary(
        engine, shard, rng, c=p.c, reward_model=settings.reward_model,
        reward_range=settings.reward_range, alpha=settings.alpha, max_accepted=settings.accepted,
    )  # fmt: skip
    metrics.update(
        {"replay.value": ns.value, "replay.low": ns.low, "replay.high": ns.high,
         "replay.accepted": float(ns.n_accepted), "replay.events": float(ns.n_events),
         "replay.truncated_share": ns.truncated_share, "ess": ns.ess,
         "acceptance_rate": ns.acceptance_rate}
    )  # fmt: skip
    metrics.update(_estimate_metrics("replay", ns.value, ns.low, ns.high))
    return {"metrics": metrics, "curves": curves}


def run_replay_cell(
    shared: tuple[LoggedData, ReplaySettings, dict[str, np.ndarray]], task: ReplayTask
) -> dict[str, Any]:
    """One policy × seed × shard: estimates, intervals, diagnostics (plain dict for the driver)."""
    data, settings, dists = shared
    p = task.policy
    bounds = np.linspace(0, data.n_rounds, settings.shards + 1).astype(np.int64)
    shard = data.shard(task.shard, settings.shards)
    rng = np.random.default_rng(np.random.SeedSequence([task.seed, task.shard, 0x5E9]))
    n_train = int(shard.n_rounds * settings.train_fraction)
    test = shard.take(n_train, shard.n_rounds)
    target: Any = p.target
    if p.engine is not None:
        engine = engine_for_log(p.engine, p.constraints, shard, task.seed)
        policy = engine.policy
        if p.mode == "learning":
            return _learning_cell(engine, shard, settings, p, rng)
        ctx = shard.contexts if policy.n_features is not None else None
        if n_train:
            policy.update_batch(shard.actions[:n_train], shard.rewards[:n_train],
                                None if ctx is None else ctx[:n_train])  # fmt: skip
            policy.refresh()
        target = engine
    elif p.distribution is not None:
        ptr, _ = data.candidates()
        lo, hi = int(bounds[task.shard]) + n_train, int(bounds[task.shard + 1])
        target = dists[p.name][int(ptr[lo]) : int(ptr[hi])]
    span = reward_range_of(test, settings.reward_range)
    model = make_reward_model(
        settings.reward_model, test.rewards, span, settings.ridge_folds, settings.ridge_l2
    )
    estimators = [
        SwitchDR(clip=settings.clip, tau=settings.switch_tau) if name == SwitchDR.name else name
        for name in settings.estimators
    ]
    result = evaluate(
        test, target, estimators=estimators, reward_model=model, clip=settings.clip,
        interval=settings.interval, reward_range=span, n_boot=settings.n_boot,
        alpha=settings.alpha, rng=rng,
    )  # fmt: skip
    metrics = {"rounds": float(shard.n_rounds), "logged.mean_reward": float(test.rewards.mean()),
               "train_rounds": float(n_train)}  # fmt: skip
    for name, est in result.estimates.items():
        metrics.update({f"ope.{name}.value": est.value, f"ope.{name}.low": est.low,
                        f"ope.{name}.high": est.high})  # fmt: skip
        metrics.update(_estimate_metrics(name, est.value, est.low, est.high))
    d = result.diagnostics
    metrics.update({"ope.ess": d.effective_sample_size, "ope.max_weight": d.max_weight,
                    "ope.zero_support": d.zero_weight_share})  # fmt: skip
    metrics["ess"] = d.effective_sample_size
    return {"metrics": metrics, "curves": {}}


def run_replay(
    config_path: str | Path, runner: Any, tracking_uri: str | None = None,
    out_dir: str | Path = "runs", launch_id: str | None = None, stream: TextIO | None = None,
) -> LaunchOutcome:  # fmt: skip
    """Evaluate every policy × seed × shard, track each cell, print the table of estimates
    with their intervals, ESS and acceptance rates (also ``summary.txt`` / ``summary.csv``)."""
    path = Path(config_path)
    cfg: ReplayExperimentConfig = parse_config(ReplayExperimentConfig, load_yaml(path), str(path))
    weighs = any(p.engine is not None and p.engine.policy.USES_ARM_FEATURES for p in cfg.policies)
    data = load_logs(cfg.logs, path.parent, cfg.experiment.reward_range, weighs)
    check_policies(cfg.policies, data)
    dists = load_distributions(cfg.policies, data, path.parent)
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
    for note in data.notes:
        launch.say(f"note: {note}\n")
    loaded = [p.name for p in cfg.policies if p.name in dists and p.distribution_rows == "loaded"]
    if loaded and any(note.startswith(RESORTED) for note in data.notes):
        launch.say(
            "note: the log was re-sorted by time, and a distribution .npy is read in the "
            "loaded order (after keep_position and the sort), not the file's: check that "
            f"{sorted(loaded)} follow it, or set distribution_rows: file for an array in "
            "the file's order\n"
        )
    order = {p.name: i for i, p in enumerate(cfg.policies)}
    record = partial(_cell_record, s, order)
    results = launch.run(runner, run_replay_cell, tasks, (data, s, dists), record)
    cells = [
        (task.policy.name, res.value["metrics"])
        for task, res in zip(tasks, results, strict=True)
        if res.ok
    ]
    rows = summary_rows(cells, [p.name for p in cfg.policies], headline(s.estimators))
    files = write_summary(rows, launch.directory)
    note = (
        "(value ± interval: mean over cells; learning policies by replay; vs top: the ranking "
        "row's interval meets the top policy's, so the data do not order them, or lies below "
        "it)\n"
    )
    return launch.finish(
        rows, format_table(rows), note, {"rounds": str(data.n_rounds)}, files, "\n",
        "grid.policy", key_sections(s),
    )  # fmt: skip


def _cell_record(
    s: ReplaySettings, order: dict[str, int], task: ReplayTask, res: TaskResult
) -> CellRecord:
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
    metrics = dict(res.value["metrics"])
    curves = dict(res.value["curves"])
    src = "replay"
    if task.policy.mode != "learning":
        names = [e for e in s.estimators if f"ope.{e}.value" in metrics]
        src = f"ope.{ranked_by(names, headline(s.estimators))}"
    low, value, high = (metrics.get(f"{src}.{b}", np.nan) for b in ("low", "value", "high"))
    metrics["estimate"] = value
    # The interval drawn by the chart view (which has no error bars): low, estimate and high
    # as three short level lines over the policy's own two steps (2k, 2k + 1), so each policy
    # is a box at its place on the x axis, averaged over seeds and shards within its group.
    steps = np.array([2 * order[task.policy.name], 2 * order[task.policy.name] + 1])
    for name, v in (("low", low), ("estimate", value), ("high", high)):
        curves[f"interval.{name}"] = (steps, np.array([v, v]))
    return CellRecord(task.name, task.coords, params, metrics, curves)


def key_sections(s: ReplaySettings) -> list[view.Section]:
    """Estimates with their intervals first, then the diagnostics that qualify them."""
    c = view.chart
    h = headline(s.estimators)
    return [
        view.Section(f"Estimates ({h} for frozen policies, replay for learning)", (
            c("estimate with its interval (high, estimate, low), one box per policy",
              "interval.high", "interval.estimate", "interval.low", kind="line"),
            c("estimate", "estimate"),
        )),
        view.Section("Diagnostics", (
            c("effective sample size", "ess"),
            c("acceptance rate (learning policies)", "acceptance_rate"),
        )),
    ]  # fmt: skip
