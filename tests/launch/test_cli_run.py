"""The experiment commands' argument and config checks (no cell is launched here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from allocator.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["simulate", "configs/engine_beta.yaml"], "'simulate' needs a scenario config"),
        (["replay", "configs/wechat_entry.yaml"], "'replay' needs a replay config"),
        (["run", "configs/does_not_exist.yaml"], "does_not_exist.yaml"),
    ],
)
def test_experiment_commands_reject_the_wrong_config(argv, match, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main([*argv, "--sequential"]) == 2
    assert match in capsys.readouterr().err


def test_a_bad_worker_count_in_the_environment_is_named(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("ALLOCATOR_WORKERS", "lots")
    assert main(["run", "configs/wechat_entry.yaml"]) == 2
    assert "ALLOCATOR_WORKERS = 'lots'" in capsys.readouterr().err


def test_check_validates_a_scenario_config(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["check", "configs/wechat_entry.yaml"]) == 0
    out = capsys.readouterr().out
    assert '"contextual_ts_protected"' in out and '"value_ts_protected"' in out


@pytest.mark.parametrize("n", ["0", "-5", "1", "999"])
def test_an_impressions_override_below_the_config_bound_is_refused_before_launch(
    n, capsys, monkeypatch, tmp_path
):
    """0 used to become the scale's default silently; the others failed inside every cell."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", str(ROOT / "configs/wechat_entry.yaml"), "--sequential", "--impressions", n]
    assert main([*argv, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: --impressions {n}: expected at least 1000 (as experiment.impressions)"]
    assert list(tmp_path.iterdir()) == []  # nothing launched, tracked or written


def _variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((ROOT / "configs/wechat_entry.yaml").read_text())
    data["world"].setdefault("mini_shop", {})["n_merchants"] = 200
    edit(data)
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _arm_floor(data):
    data["contracts"]["protected"]["constraints"].append(
        {
            "name": "m",
            "kind": "floor",
            "target": {"arm": "merchant:999999"},
            "schedule": {
                "start": "2025-10-01T00:00:00Z",
                "end": "2025-11-01T00:00:00Z",
                "start_value": 0.01,
            },
        }
    )


def _static_share(data):
    data["strategies"][0]["shares"]["nosuch"] = 0.1


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_arm_floor, "constraint 'm': unknown target: unknown arm id 'merchant:999999'"),
        (_static_share, r"strategy static_split: .*shares for unknown groups \['nosuch'\]"),
    ],
)
def test_check_refuses_what_run_refuses_before_launch(edit, match, capsys, monkeypatch, tmp_path):
    """``check`` builds the world and the grid as ``run`` does: both give the same line."""
    path = _variant(tmp_path, edit)
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(path)]) == 2
    checked = capsys.readouterr()
    assert checked.out == "" and re.search(match, checked.err)
    assert main(["run", str(path), "--sequential", "--out", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err == checked.err
