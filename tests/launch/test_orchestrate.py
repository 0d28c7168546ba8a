"""The shared launch skeleton: cells logged in task order, failures reported and tracked."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from mlflow.tracking import MlflowClient

from allocator.errors import ConfigError
from allocator.launch.orchestrate import Launch
from allocator.launch.runner import SequentialRunner, TaskResult
from allocator.launch.tracking import CellRecord


@dataclass(frozen=True)
class Task:
    name: str
    seed: int


def fails_on_three(shared: float, task: Task) -> float:
    if task.seed == 3:
        raise ValueError(f"cell {task.seed} exploded on purpose")
    return shared * task.seed


def _record(task: Task, res: TaskResult) -> CellRecord:
    metrics = {"value": res.value} if res.ok else {}
    return CellRecord(task.name, {"seed": str(task.seed)}, {}, metrics, error=res.error)


@pytest.mark.heavy
def test_a_launch_tracks_every_cell_and_reports_failures(tracking_uri, tmp_path):
    buf = io.StringIO()
    launch = Launch("orch", {"a": 1}, tracking_uri, "L", tmp_path / "runs", buf, {"x": "y"})
    assert launch.directory == tmp_path / "runs" / "L" and launch.directory.is_dir()
    tasks = [Task(f"cell{s}", s) for s in (1, 3, 5)]
    results = launch.run(SequentialRunner(progress=False), fails_on_three, tasks,
                         2.0, _record)  # fmt: skip
    assert [r.ok for r in results] == [True, False, True]
    out = launch.finish([], "TABLE", "note\n", {"p": "1"}, [], trailer="\nfiles\n")
    assert out.exit_code == 1 and out.failed == ["cell3: ValueError: cell 3 exploded on purpose"]
    text = buf.getvalue()
    assert text.startswith("\nTABLE\nnote\n\n1 cell(s) FAILED:\n  cell3: ValueError")
    assert "\nfiles\nMLflow: mlflow ui --backend-store-uri" in text

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([out.experiment_id])
    status = {r.info.run_name: r.info.status for r in runs}
    assert status == {"cell1": "FINISHED", "cell3": "FAILED", "cell5": "FINISHED",
                      "summary L": "FAILED"}  # fmt: skip
    assert all(r.data.tags["x"] == "y" and "config_hash" in r.data.tags for r in runs)
    arts = [a.path for a in client.list_artifacts(out.summary_run_id)]
    assert arts == ["failed_cells.txt"]


def test_a_second_launch_of_one_id_is_refused(tracking_uri, tmp_path):
    """Whoever opens the launch (the CLI checks it too, earlier): runs/<id>/ is created
    once, and an id that is not one path component never is."""
    Launch("orch", {}, tracking_uri, "L", tmp_path / "runs", io.StringIO())
    with pytest.raises(ConfigError, match=r"--launch-id 'L': .* already exists"):
        Launch("orch", {}, tracking_uri, "L", tmp_path / "runs", io.StringIO())
    with pytest.raises(ConfigError, match=r"--launch-id '\.\./x': expected one name"):
        Launch("orch", {}, tracking_uri, "../x", tmp_path / "runs", io.StringIO())
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["L"]
    # ids given by the clock never collide: a second launch in the same second gets "-2"
    first = Launch("orch", {}, tracking_uri, None, tmp_path / "auto", io.StringIO())
    (tmp_path / "auto" / f"{first.launch_id}-2").mkdir()  # taken too
    again = Launch("orch", {}, tracking_uri, None, tmp_path / "auto", io.StringIO())
    assert again.launch_id not in (first.launch_id, f"{first.launch_id}-2")
    assert again.directory.is_dir() and again.launch_id == again.directory.name
