"""Command line.

- ``allocator check CONFIG`` validates a config and prints it resolved (a file with an
  ``arms`` list is an allocator config, one with ``world`` a scenario, whose world is built
  and grid validated as ``run`` does before launching, one with ``logs`` a replay
  experiment; otherwise an engine config).
- ``allocator run CONFIG`` runs an experiment: a scenario (``world:``) is simulated, a replay
  experiment (``logs:``) evaluates policies on logged traffic. ``simulate`` and ``replay``
  are the same command restricted to one kind.

A refused input (a bad config file, of any kind) exits with status 2 and one line on
stderr. Where to run and track comes from flags, else the environment (``ALLOCATOR_RAY_ADDRESS``,
``MLFLOW_TRACKING_URI``, ``ALLOCATOR_WORKERS``), else local Ray and ``./mlflow.db``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from allocator.config import EngineConfig, load_yaml, parse_config
from allocator.errors import AllocatorError, ConfigError
from allocator.serving.config import AllocatorConfig
from allocator.version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="allocator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"entry-alloc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a config (YAML) and print it resolved")
    check.add_argument("config")
    for name, text in (
        ("run", "run an experiment (scenario simulation or log replay) and compare"),
        ("simulate", "run a scenario experiment (config with world:)"),
        ("replay", "run a replay experiment on logged traffic (config with logs:)"),
    ):
        _experiment_args(sub.add_parser(name, help=text))
    args = parser.parse_args(argv)
    if args.command != "check":
        return _run(args)
    try:
        data = load_yaml(args.config)
        cfg = parse_config(_model_for(data), data, args.config)
        _check_scenario(cfg)
    except AllocatorError as err:
        return _refuse(err)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def _check_scenario(cfg: Any) -> None:
    """For a scenario, the checks ``run`` makes before launching (the world built, every
    cell's strategy and contracts compiled against it), so ``check`` passes what ``run``
    launches."""
    from allocator.scenario.config import ScenarioConfig

    if isinstance(cfg, ScenarioConfig):
        from allocator.launch.scenario import prepare_cells

        prepare_cells(cfg, min(cfg.experiment.impressions.values()))


def _refuse(err: AllocatorError) -> int:
    """Report a refused input as one line on stderr (a multi-line validation report is
    joined), and give the exit status of a usage error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [repr(err)]
    text = " ".join([lines[0], "; ".join(lines[1:])]).strip()
    print(f"error: {text[:2000]}", file=sys.stderr)
    return 2


def _model_for(data: Any) -> Any:
    keys = data if isinstance(data, dict) else {}
    if "world" in keys:
        from allocator.scenario.config import ScenarioConfig

        return ScenarioConfig
    if "logs" in keys:
        from allocator.launch.replay import ReplayExperimentConfig

        return ReplayExperimentConfig
    return AllocatorConfig if "arms" in keys else EngineConfig


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML")
    p.add_argument(
        "--scale",
        choices=("small", "default", "full"),
        default="default",
        help="simulated impressions per cell (scenario experiment.impressions)",
    )
    p.add_argument(
        "--impressions", type=int, default=None, help="override the impressions per cell"
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="join this Ray cluster ('auto', 'ray://host:10001'); default: local Ray",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="CPUs of the local Ray (default: all cores)"
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="run the cells one after another in this process (no Ray)",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: sqlite:///mlflow.db here)",
    )
    p.add_argument("--out", default="runs", help="directory for tables and plots")
    p.add_argument("--launch-id", default=None, help="name of this launch (default: timestamp)")
    p.add_argument(
        "--emit-logs",
        action="store_true",
        help="scenario: also write each cell's decision log and a replay config",
    )
    p.add_argument("--max-retries", type=int, default=2,
                   help="Ray retries of a task whose worker died")  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from allocator.launch.orchestrate import check_launch_target
    from allocator.launch.runner import RayRunner, SequentialRunner
    from allocator.settings import load_settings

    try:
        settings = load_settings()
        if args.workers is not None and args.workers < 1:
            raise ConfigError(f"--workers {args.workers}: expected a positive integer")
        check_launch_target(args.out, args.launch_id)
        if args.impressions is not None:  # before any runner starts
            from allocator.scenario.config import check_impressions

            check_impressions(args.impressions)
    except AllocatorError as err:
        return _refuse(err)
    runner: Any
    if args.sequential:
        runner = SequentialRunner()
    else:
        runner = RayRunner(
            address=args.ray_address or settings.ray_address,
            num_cpus=args.workers or settings.workers,
            max_retries=args.max_retries,
        )
    uri = args.tracking_uri or settings.tracking_uri
    outcome: Any
    try:
        data = load_yaml(args.config)
        is_scenario = isinstance(data, dict) and "world" in data
        if args.command == "simulate" and not is_scenario:
            raise ConfigError(f"{args.config}: 'simulate' needs a scenario config (world:)")
        if args.command == "replay" and is_scenario:
            raise ConfigError(f"{args.config}: 'replay' needs a replay config (logs:)")
        if is_scenario:
            from allocator.launch.scenario import run_scenario

            outcome = run_scenario(
                args.config, runner, args.scale, uri, args.out, args.launch_id,
                args.impressions, emit_logs=args.emit_logs,
            )  # fmt: skip
        else:
            from allocator.launch.replay import run_replay

            outcome = run_replay(args.config, runner, uri, args.out, args.launch_id)
    except AllocatorError as err:
        return _refuse(err)
    return int(outcome.exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
