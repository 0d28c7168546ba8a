"""MLflow tracking of one experiment launch, from the driver only.

Layout (chosen for the MLflow 3 UI as a new user meets it):
- one experiment per scenario, tagged ``mlflow.experimentKind=custom_model_development`` so
  the UI opens on the runs table instead of the GenAI overview;
- one top-level run per grid cell (nested runs stay collapsed and the chart view would show
  nothing until expanded), tagged with the launch id and its grid coordinates;
- one summary run per launch with the ranked table and the comparison plots.
Workers never talk to MLflow: they return plain results and this module writes them.
"""

from __future__ import annotations

import hashlib
import json
import platform
import posixpath
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from allocator.errors import ConfigError
from allocator.launch import view

EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
DEFAULT_STORE = "mlflow.db"
_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call
_MAX_PARAM = 6000
#: what MLflow takes in a parameter name (ASCII here: a config's keys are untrusted) and
#: the longest name it keeps
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.\- :/]+")
_MAX_PARAM_NAME = 250


def default_tracking_uri(workdir: Path | None = None) -> str:
    """MLflow's embedded sqlite store in the working directory."""
    return f"sqlite:///{(workdir or Path.cwd()).resolve() / DEFAULT_STORE}"


def artifact_root(tracking_uri: str) -> Path | None:
    """``mlartifacts`` next to a local sqlite store (not in whatever directory we run from)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(parsed.path[1:])  # sqlite:///rel/x.db or sqlite:////abs/x.db
    return (db.parent / "mlartifacts").resolve()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted-key flattening of a nested config, lists of mappings indexed (``a.0.b``).
    A mapping (or list) under which a name would be one MLflow refuses (a key with
    ``crosses: {"sells_*": []}``'s characters, too long, ``a/``) or two names would be one
    (``{"a.b": 1, "a": {"b": 2}}``) stays one parameter, its JSON text, so that no config
    can fail a run's logging or lose a value. ``tree``'s own keys are the caller's."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        parts = (
            dict(enumerate(value))
            if isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value)
            else value
        )
        split = _split(name, parts) if isinstance(parts, Mapping) else None
        if split is not None:
            out.update(split)
        else:
            text = json.dumps(value, default=str) if not isinstance(value, str) else value
            out[name] = text[:_MAX_PARAM]
    return out


def _split(name: str, parts: Mapping[Any, Any]) -> dict[str, str] | None:
    """``parts`` flattened under ``name``, or None if a name would be refused or repeated."""
    out: dict[str, str] = {}
    for key, value in parts.items():
        if not _loggable(f"{name}.{key}", key):
            return None
        items = flatten({key: value}, f"{name}.")
        if items.keys() & out.keys():
            return None
        out.update(items)
    return out


def _loggable(name: str, key: object) -> bool:
    """MLflow takes ``name``, ending in ``key``, as a parameter name: the key's characters,
    the name's length, and a path that is its own normal form (a name may become a file's)."""
    return (
        bool(_PARAM_NAME.fullmatch(str(key)))
        and len(name) <= _MAX_PARAM_NAME
        and posixpath.normpath(name) == name
    )


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a resolved config (first 16 hex digits)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def environment_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """Git commit, config hash, package and Python versions."""
    tags = {"config_hash": config_hash(config), "python": platform.python_version()}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    tags["git_commit"] = commit or "unknown"
    for dist in ("entry-alloc", "numpy", "numba", "ray", "mlflow"):
        try:
            tags[f"version.{dist}"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            tags[f"version.{dist}"] = "not installed"
    return tags


@dataclass
class CellRecord:
    """What the driver logs for one grid cell."""

    name: str
    coords: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    #: curves: key -> (steps (m,), values (m,)), drawn by MLflow's chart view
    steps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    error: str | None = None
    texts: dict[str, str] = field(default_factory=dict)


class LaunchTracker:
    """Writes one launch (cell runs + summary run) into an MLflow experiment."""

    def __init__(
        self,
        experiment: str,
        tracking_uri: str | None = None,
        launch_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.launch_id = launch_id or time.strftime("%Y%m%d-%H%M%S")
        self.tags = {"launch_id": self.launch_id, **(tags or {})}
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self._experiment(experiment)
        #: the saved comparison view's share key, or why there is none
        self.view_key: str | None = None
        self.view_problem: str | None = "no comparison view was saved"

    def _experiment(self, name: str) -> str:
        try:
            found = self.client.get_experiment_by_name(name)
        except Exception as err:  # unreachable server, unreadable store
            raise ConfigError(f"MLflow tracking URI {self.tracking_uri!r}: {err}") from None
        if found is None:
            root = artifact_root(self.tracking_uri)
            exp_id: str = self.client.create_experiment(
                name,
                artifact_location=None if root is None else root.as_uri(),
                tags=dict([EXPERIMENT_KIND_TAG]),
            )
            return exp_id
        self.client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND_TAG)
        return str(found.experiment_id)

    def log_cell(self, cell: CellRecord) -> str:
        """One top-level run; FAILED with the error as a tag and artifact if the cell failed."""
        from mlflow.entities import Metric, Param

        tags = {**self.tags, "role": "cell", **{f"grid.{k}": v for k, v in cell.coords.items()}}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=cell.name)
        run_id: str = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in sorted(cell.params.items())]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])
        metrics = [
            Metric(k, float(v), now, 0)
            for k, v in sorted(cell.metrics.items())
            if v is not None and np.isfinite(v)
        ]
        for key, (steps, values) in sorted(cell.steps.items()):
            metrics.extend(
                Metric(key, float(v), now, int(s))
                for s, v in zip(steps, values, strict=True)
                if np.isfinite(v)
            )
        for i in range(0, len(metrics), _BATCH):
            self.client.log_batch(run_id, metrics=metrics[i : i + _BATCH])
        for name, text in cell.texts.items():
            self.client.log_text(run_id, text, name)
        if cell.error is not None:
            self.client.set_tag(run_id, "error", cell.error.strip().splitlines()[-1][:5000])
            self.client.log_text(run_id, cell.error, "error.txt")
        self.client.set_terminated(run_id, "FAILED" if cell.error is not None else "FINISHED")
        return run_id

    def log_summary(
        self,
        name: str,
        params: Mapping[str, str],
        files: Sequence[Path],
        texts: Mapping[str, str],
        failed: bool,
    ) -> str:
        """The launch-summary run: ranked table, plots, resolved config."""
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id, tags={**self.tags, "role": "summary"}, run_name=name
        )
        run_id: str = run.info.run_id
        plist = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(plist), 100):
            self.client.log_batch(run_id, params=plist[i : i + 100])
        for path in files:
            self.client.log_artifact(run_id, str(path))
        for fname, text in texts.items():
            self.client.log_text(run_id, text, fname)
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        return run_id

    def publish_view(self, spec: view.ViewSpec, n_runs: int) -> None:
        """Save the launch's comparison view as a shared view of the experiment."""
        self.view_problem = view.ui_supports_shared_views()
        if self.view_problem is not None:
            return
        value = view.encode(view.ui_state(spec, n_runs))
        key = view.share_key(value)
        self.client.set_experiment_tag(self.experiment_id, view.SHARE_TAG_PREFIX + key, value)
        self.view_key = key

    def ui_hint(self, port: int = 5000) -> str:
        """The command that opens the MLflow UI on this store and the comparison link."""
        parsed = urlparse(self.tracking_uri)
        if parsed.scheme in ("http", "https"):
            base = self.tracking_uri.rstrip("/")
            cmd = f"(server already running at {base})"
        else:
            base = f"http://127.0.0.1:{port}"
            cmd = f"mlflow ui --backend-store-uri {self.tracking_uri}"
            if (root := artifact_root(self.tracking_uri)) is not None:
                cmd += f" --artifacts-destination {root}"
            cmd += f" --host 127.0.0.1 --port {port}"
        runs = f"{base}/#/experiments/{self.experiment_id}/runs"
        if self.view_key is not None:
            url = f"{runs}?{view.SHARE_URL_PARAM}={self.view_key}&compareRunsMode=CHART"
            return f"{cmd}\nthen open {url}"
        return (
            f"{cmd}\ncomparison view not saved: {self.view_problem}\n"
            f"then open the plain chart view {runs}?compareRunsMode=CHART"
        )
