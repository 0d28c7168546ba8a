"""The CLI validates configs; every bundled config is valid; the README example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from allocator.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=str)
def test_bundled_engine_configs_validate(path, capsys):
    assert main(["check", str(path)]) == 0
    assert '"kind"' in capsys.readouterr().out


STUDIES = sorted((ROOT / "experiments").glob("*/*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=str)
def test_every_study_config_validates_and_has_a_readme(path, capsys):
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert '"strategies"' in out or '"policies"' in out
    rel = path.relative_to(ROOT).as_posix()
    assert f"allocator run {rel}" in (path.parent / "README.md").read_text(encoding="utf-8")


def test_there_is_at_least_one_study():
    assert STUDIES


def test_cli_reports_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: {kind: beta_bernoulli, epsilon: 2}\n")
    assert main(["check", str(bad)]) == 2
    assert "policy.beta_bernoulli.epsilon" in capsys.readouterr().err


def test_readme_python_examples_run(monkeypatch):
    monkeypatch.chdir(ROOT)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_set_up_is_the_main_job_and_the_tests_and_ci_runs_the_second():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands == [
        "python -m pip install -e . && allocator run configs/wechat_entry.yaml",
        'python -m pip install -e ".[test]" && python -m pytest',
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert '-e ".[test]"' in ci and "python -m pytest" in ci
