"""Any bad config file makes the real CLI process exit 2 with one line on stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from allocator.config_files import MAX_YAML_BYTES, load_yaml
from allocator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

BOMB = (
    "\n".join(
        ["anchors:", "  a0: &a0 [{id: m, group: g}, {id: m, group: g}, {id: m, group: g}]"]
        + [f"  a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 25)]
    )
    + "\nengine: {policy: {kind: beta_bernoulli}}\narms: *a24\n"
)  # 1 kB, 10^15 arms

ARMS = "arms: [{id: taobao, group: taobao}, {id: m1, group: mini_shop}]\n"
CAP = "{{name: {0}, kind: cap, target: {{group: {0}}}, schedule: {{start: '2025-10-01T00:00:00Z', end: '2025-11-01T00:00:00Z', start_value: {1}}}}}"  # noqa: E501

CASES: dict[str, tuple[bytes | str | None, str]] = {
    "not UTF-8": (b"policy: {kind: beta_bernoulli}\n# \xff\xfe\n", "not UTF-8 text"),
    "deep flow nesting": ("policy: " + "[" * 100_000, "nesting depth|nested too deeply"),
    "deep block nesting": ("- " * 5000 + "x\n", "nesting depth|nested too deeply"),
    "alias bomb": (BOMB, "more than 1,000,000 values once its aliases are expanded"),
    "too large": ("# " + "x" * MAX_YAML_BYTES + "\n", "larger than 4,194,304 bytes"),
    "wrong type": ("policy: {kind: beta_bernoulli, epsilon: [0.1]}\n", "epsilon"),
    "top level list": ("- 1\n- 2\n", "invalid configuration"),
    "duplicate key": (
        "policy: {kind: beta_bernoulli}\nobjective: {order: 1}\nobjective: {click: 1}\n",
        "line 3: key 'objective' appears twice",
    ),
    "python tag": ("policy: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    "unterminated": ("policy: {kind: [\n", "not valid YAML"),
    # scalars the safe constructor cannot build (a raw ValueError and a traceback once)
    "impossible date": (ARMS + "start: 2025-13-01\n", "not valid YAML: month must be in 1..12"),
    "5,000-digit int": ("seed: " + "9" * 5000 + "\n", "not valid YAML: Exceeds the limit"),
    "int tag on a float": ("seed: !!int 1e5\n", "not valid YAML: invalid literal for int"),
    "a directory": (None, "not a regular file"),
    "unknown group": (
        "engine: {policy: {kind: beta_bernoulli}, objective: {take_rates: {taobo: 0.03}}}\n" + ARMS,
        r"take_rates: unknown groups \['taobo'\]; known groups: \['mini_shop', 'taobao'\]",
    ),
    "caps leave no room": (
        "engine: {policy: {kind: beta_bernoulli}}\n"
        + ARMS
        + f"constraints: {{constraints: [{CAP.format('taobao', 0.3)}, "
        + f"{CAP.format('mini_shop', 0.1)}]}}\n",
        r"caps \['taobao', 'mini_shop'\] cap every group .* sum to 0.400 < 1",
    ),
}


#: Run by default (each process imports the library: seconds); the others run with -m slow.
DEFAULT = ("not UTF-8", "deep flow nesting", "alias bomb", "caps leave no room", "impossible date")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every selected case through its own CLI process, all started at once (``check``),
    plus one ``run`` of a file with a repeated key."""
    slow = pytest.slow_enabled  # type: ignore[attr-defined]
    tmp = tmp_path_factory.mktemp("bad")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {}
    for i, (name, (content, _)) in enumerate(CASES.items()):
        if not slow and name not in DEFAULT and name != "duplicate key":
            continue
        path = tmp / f"case{i}.yaml"
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        if name == "duplicate key":
            procs["run: duplicate key"] = _start(["run", "--sequential", str(path)], env, tmp)
        if slow or name in DEFAULT:
            procs[name] = _start(["check", str(path)], env, tmp)
    return {name: (p, *p.communicate(timeout=300)) for name, p in procs.items()}


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "allocator.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
    )  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [*DEFAULT, "run: duplicate key"]
    + [pytest.param(n, marks=pytest.mark.slow) for n in CASES if n not in DEFAULT],
)
def test_bad_config_file_exits_2_with_one_line(outcomes, name):
    proc, out, err = outcomes[name]
    match = CASES[name.removeprefix("run: ")][1]
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert len(lines[0]) < 2100
    assert re.search(match, lines[0]), lines[0]


@pytest.mark.parametrize("name", ["impossible date", "5,000-digit int", "int tag on a float"])
def test_scalars_yaml_cannot_build_are_config_errors(tmp_path, name):
    content, match = CASES[name]
    path = tmp_path / "bad.yaml"
    path.write_text(str(content), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"config file {re.escape(str(path))} is {match}"):
        load_yaml(path)


def test_a_bad_impressions_override_exits_2_with_one_line_before_launch(tmp_path):
    """The override is held to ``experiment.impressions``' bound, as a config file is."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["run", "--sequential", str(ROOT / "configs" / "wechat_entry.yaml"),
            "--impressions", "0", "--out", str(tmp_path / "runs")]  # fmt: skip
    proc = _start(args, env, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (out, err)
    assert err.splitlines() == ["error: --impressions 0: expected an integer from 1000 to "
                                "100000000 (as experiment.impressions)"]  # fmt: skip
    assert out == "" and list(tmp_path.iterdir()) == []
