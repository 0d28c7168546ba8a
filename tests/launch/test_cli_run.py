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


@pytest.mark.parametrize("n", ["0", "-5", "1", "999", "100000001", "99999999999999999999"])
def test_an_impressions_override_outside_the_config_bounds_is_refused_before_launch(
    n, capsys, monkeypatch, tmp_path
):
    """0 used to become the scale's default silently; the others failed inside every cell
    (past int64 with an OverflowError, past memory with a MemoryError)."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", str(ROOT / "configs/wechat_entry.yaml"), "--sequential", "--impressions", n]
    assert main([*argv, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: --impressions {n}: expected an integer from 1000 to 100000000 (as "
                   "experiment.impressions)"]  # fmt: skip
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


def _refused_before_launch(argv: list[str], capsys, tmp_path: Path) -> str:
    """Exit 2 with one line on stderr, nothing started, tracked or written."""
    config = str(ROOT / "configs/wechat_entry.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", config, "--scale", "small", "--tracking-uri", uri, *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists()
    return err


@pytest.mark.parametrize("n", ["-1", "0"])
def test_a_worker_count_below_one_is_a_usage_error_before_ray_starts(
    n, capsys, monkeypatch, tmp_path
):
    """-1 started Ray and failed in its resource check with a traceback; 0 silently meant
    'all cores' (the flag's value read as unset)."""
    monkeypatch.chdir(tmp_path)
    err = _refused_before_launch(["--workers", n, "--out", str(tmp_path / "runs")], capsys,
                                 tmp_path)  # fmt: skip
    assert err == f"error: --workers {n}: expected a positive integer\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_out_directory_that_is_a_file_is_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").write_text("a file\n")
    err = _refused_before_launch(["--sequential", "--out", str(tmp_path / "out")], capsys,
                                 tmp_path)  # fmt: skip
    assert "exists and is not a directory" in err
    assert (tmp_path / "out").read_text() == "a file\n"


@pytest.mark.parametrize("launch_id", ["a/../../escape", "..", ".hidden", "a\\b", "", "x" * 129])
def test_a_launch_id_that_is_not_one_safe_name_is_refused(launch_id, capsys, monkeypatch, tmp_path):
    """``a/../../escape`` wrote the launch directory outside --out."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "deep" / "runs"
    err = _refused_before_launch(["--sequential", "--out", str(out), "--launch-id", launch_id],
                                 capsys, tmp_path)  # fmt: skip
    assert err.startswith(f"error: --launch-id {launch_id!r}: expected one name of letters")
    assert list(tmp_path.iterdir()) == []


def test_a_launch_id_already_under_out_is_refused_and_left_alone(capsys, monkeypatch, tmp_path):
    """A reused id silently overwrote runs/<id>/ and tagged a second set of MLflow runs
    with the same launch_id."""
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "runs" / "L1"
    earlier.mkdir(parents=True)
    (earlier / "table.txt").write_text("earlier\n")
    err = _refused_before_launch(["--sequential", "--out", str(tmp_path / "runs"),
                                  "--launch-id", "L1"], capsys, tmp_path)  # fmt: skip
    assert f"--launch-id 'L1': {earlier} already exists" in err
    assert [p.name for p in earlier.iterdir()] == ["table.txt"]
    assert (earlier / "table.txt").read_text() == "earlier\n"
