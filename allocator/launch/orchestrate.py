"""The one skeleton of every launch: open it, run its cells, track them, report.

A launch module (the scenario simulator, the replay experiment) says only what is specific
to it — its tasks and cell function, how a finished cell becomes a :class:`CellRecord`, its
table and files — and :class:`Launch` does the rest in the same order for both: the MLflow
experiment and the launch directory first, then every cell on the runner, each cell's run
logged by the driver (failures included, never dropped), then the summary run and the
printed table, failures and the MLflow hint.
"""

from __future__ import annotations

import itertools
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

from allocator.errors import ConfigError
from allocator.launch import view
from allocator.launch.runner import Runner, TaskFn, TaskResult
from allocator.launch.tracking import CellRecord, LaunchTracker, environment_tags

#: a launch id names one directory under the output directory: a single path component
#: (no separator, no leading dot), so ``runs/<id>/`` stays inside ``runs/``
LAUNCH_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@,:-]{0,127}")


def check_launch_target(out_dir: str | Path, launch_id: str | None) -> None:
    """Raise :class:`ConfigError` unless a launch can write a new ``out_dir/launch_id/``:
    the id is one safe path component, ``out_dir`` is a directory (or does not exist yet),
    and no launch of that id is there already (it would be overwritten, and its MLflow runs
    mixed with the new ones under one ``launch_id``)."""
    if launch_id is not None and not (
        isinstance(launch_id, str) and LAUNCH_ID.fullmatch(launch_id)
    ):
        raise ConfigError(
            f"--launch-id {launch_id!r}: expected one name of letters, digits and "
            "'_.+=@,:-' (starting with a letter, digit or '_'; at most 128 characters)"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out_dir)!r}: exists and is not a directory")
    if launch_id is not None and (out / launch_id).exists():
        raise ConfigError(
            f"--launch-id {launch_id!r}: {out / launch_id} already exists (an earlier "
            "launch); choose another id, or remove that directory"
        )


class NamedTask(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=NamedTask)


def failure_line(task: NamedTask, result: TaskResult) -> str:
    """``<cell>: <last line of its traceback>``, as listed under FAILED."""
    lines = (result.error or "failed").strip().splitlines() or ["failed"]
    return f"{task.name}: {lines[-1]}"


@dataclass
class LaunchOutcome:
    """What a launch returns to the CLI: the ranked rows, the failures and where it went."""

    rows: list[dict[str, Any]]
    table: str
    failed: list[str]
    experiment_id: str
    summary_run_id: str
    out_dir: Path
    results: list[TaskResult]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


class Launch:
    """One launch: its MLflow tracker (tagged with the resolved config) and its directory."""

    def __init__(
        self,
        experiment: str,
        resolved: Mapping[str, Any],
        tracking_uri: str | None = None,
        launch_id: str | None = None,
        out_dir: str | Path = "runs",
        stream: TextIO | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.out = stream if stream is not None else sys.stdout
        check_launch_target(out_dir, launch_id)
        if launch_id is None:  # the time to the second, made unique under out_dir
            stamp = time.strftime("%Y%m%d-%H%M%S")
            launch_id = next(
                name for n in itertools.count(1)
                if not (Path(out_dir) / (name := stamp if n == 1 else f"{stamp}-{n}")).exists()
            )  # fmt: skip
        self.tracker = LaunchTracker(
            experiment, tracking_uri, launch_id, {**environment_tags(resolved), **(tags or {})}
        )
        self.directory = Path(out_dir) / self.tracker.launch_id
        try:
            self.directory.mkdir(parents=True)
        except FileExistsError:  # a launch of the same id (or second) got there first
            raise ConfigError(
                f"launch {self.tracker.launch_id!r}: {self.directory} already exists; "
                "choose another --launch-id"
            ) from None
        except NotADirectoryError:
            raise ConfigError(f"--out {str(out_dir)!r}: a part of it is a file") from None
        self.results: list[TaskResult] = []
        self.failed: list[str] = []
        self.scalar_keys: set[str] = set()
        self.curve_keys: set[str] = set()

    @property
    def launch_id(self) -> str:
        return self.tracker.launch_id

    def say(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def run(
        self,
        runner: Runner,
        fn: TaskFn,
        tasks: Sequence[T],
        shared: Any,
        record: Callable[[T, TaskResult], CellRecord],
    ) -> list[TaskResult]:
        """Run every task, then log each cell's run (``record`` builds it) in task order."""
        self.results = runner.run(fn, tasks, shared)
        for task, res in zip(tasks, self.results, strict=True):
            if not res.ok:
                self.failed.append(failure_line(task, res))
            cell = record(task, res)
            self.scalar_keys.update(cell.metrics)
            self.curve_keys.update(cell.steps)
            self.tracker.log_cell(cell)
        return self.results

    def finish(
        self,
        rows: list[dict[str, Any]],
        table: str,
        note: str,
        params: Mapping[str, str],
        files: Sequence[Path],
        trailer: str = "\n",
        group_tag: str = "grid.strategy",
        key_sections: Sequence[view.Section] = (),
    ) -> LaunchOutcome:
        """The summary run (table files, failures), the comparison view (``key_sections``
        first, every other logged metric below, runs grouped by ``group_tag``) and the
        printed report: table, ``note``, failures, ``trailer``, the MLflow hint."""
        failed = self.failed
        summary_id = self.tracker.log_summary(
            f"summary {self.launch_id}",
            params,
            files,
            {"failed_cells.txt": "\n".join(failed)} if failed else {},
            failed=bool(failed),
        )
        shown = {m for s in key_sections for c in s.charts for m in c.metrics}
        rest = view.remaining_sections(self.scalar_keys, self.curve_keys, shown)
        spec = view.ViewSpec(self.launch_id, group_tag, (*key_sections, *rest))
        self.tracker.publish_view(spec, len(self.results) + 1)
        text = f"\n{table}\n{note}"
        if failed:
            text += f"\n{len(failed)} cell(s) FAILED:\n  " + "\n  ".join(failed) + "\n"
        self.say(f"{text}{trailer}MLflow: {self.tracker.ui_hint()}\n")
        return LaunchOutcome(
            rows,
            table,
            failed,
            self.tracker.experiment_id,
            summary_id,
            self.directory,
            self.results,
        )
