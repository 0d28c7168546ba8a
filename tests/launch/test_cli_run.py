"""The experiment commands' argument and config checks (no cell is launched here)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
