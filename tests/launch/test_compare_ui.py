"""The printed link, opened in a real browser on a real ``mlflow ui``, shows the comparison.

A small launch is run through the CLI; the ``mlflow ui`` command it printed is started (on a
free port) from an unrelated directory, and headless Chromium opens the printed link. The
rendered page must hold the shared view, every strategy (or policy) as a group and the key
charts. The screenshot is kept under the test's tmp dir and, when ``ALLOCATOR_UI_ARTIFACTS``
names a directory, copied there (CI keeps it).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from allocator.cli import main
from tests.launch.test_replay_launch import POLICIES, write_experiment
from tests.launch.test_scenario_launch import STRATEGIES, small_scenario
from tests.replay.make_example_log import make_click_log

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"),
        reason="chromium is not installed (CI installs it: .ci/run)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(*args: str) -> tuple[list[str], str]:
    """Run the CLI; return the printed ``mlflow ui`` command (argv) and the printed link."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    text = out.getvalue()
    cmd = re.search(r"^MLflow: (mlflow ui .*)$", text, re.M)
    link = re.search(r"then open (\S+)$", text, re.M)
    assert cmd and link, text
    return shlex.split(cmd.group(1)), link.group(1)


@contextlib.contextmanager
def mlflow_ui(argv: list[str], port: int, cwd: Path) -> Iterator[str]:
    """The printed command on ``port`` (not 5000, which may be taken), until it answers."""
    argv = [*argv[:-1], str(port)] if argv[-2] == "--port" else argv
    cwd.mkdir()
    log = (cwd.parent / "mlflow-ui.log").open("w")
    proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                    break
            assert proc.poll() is None, (cwd.parent / "mlflow-ui.log").read_text()
            time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not answer within 120 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def render(url: str, must: list[str], shot: Path) -> str:
    """The page's DOM once every string of ``must`` is rendered (the first load compiles
    and caches the UI's scripts, so it is retried), and its screenshot."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1600,3000", "--virtual-time-budget=60000"]  # fmt: skip
    dom = ""
    for _ in range(4):
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                             timeout=300).stdout  # fmt: skip
        if all(s in dom for s in must):
            break
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=300)
    keep = os.environ.get("ALLOCATOR_UI_ARTIFACTS")
    if keep and shot.exists():
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return dom


def check_page(dom: str, must: list[str]) -> None:
    assert "viewing a shared view" in dom, "the shared view was not loaded"
    assert "Error loading shared view state" not in dom
    missing = [s for s in must if s not in dom]
    assert not missing, f"not on the rendered page: {missing}"


def test_the_printed_link_opens_the_scenario_comparison(tmp_path):
    cfg = small_scenario(tmp_path, [1, 2], ope_target=None)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    argv, link = launch("run", str(cfg), "--sequential", "--impressions", "1500",
                        "--tracking-uri", uri, "--out", str(tmp_path / "out"),
                        "--launch-id", "ui")  # fmt: skip
    assert "viewStateShareKey=" in link
    port = free_port()
    with mlflow_ui(argv, port, tmp_path / "elsewhere") as base:
        url = link.replace("http://127.0.0.1:5000", base)
        must = [
            "Value and regret", "value_per_1k", "curve.cum_regret", "regret_per_1k",
            "Partner floors: share against floor",
            "curve.share.taobao vs curve.floor.taobao_protected",
            "curve.share.douyin vs curve.floor.douyin_apparel_beauty",
            "curve.share.pinduoduo vs curve.floor.pinduoduo_protected",
            "Mini Shop", "curve.share.mini_shop", "share_end.mini_shop",
            "regret_end_per_1k.missed.mini_shop", "regret_end_per_1k.within.mini_shop",
            "Protection cost", "protection_cost_per_1k",
            *(f"Group: {s}" for s in STRATEGIES),
        ]  # fmt: skip
        dom = render(url, must, tmp_path / "compare-scenario.png")
    check_page(dom, must)
    assert (tmp_path / "compare-scenario.png").read_bytes()[:4] == b"\x89PNG"
    # artifacts went next to the store, nothing into the directories we ran from
    assert (tmp_path / "store" / "mlartifacts").is_dir()
    assert not (tmp_path / "elsewhere" / "mlartifacts").exists()
    assert not (Path.cwd() / "mlartifacts").exists()


def test_the_printed_link_opens_the_replay_comparison(tmp_path):
    cfg = write_experiment(
        tmp_path, make_click_log(1200, seed=7).text, POLICIES, seeds=[1, 2], n_boot=20
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv, link = launch("replay", str(cfg), "--sequential", "--tracking-uri", uri,
                        "--out", str(tmp_path / "out"), "--launch-id", "ui")  # fmt: skip
    with mlflow_ui(argv, free_port(), tmp_path / "elsewhere") as base:
        must = [
            "Estimates (dr for frozen policies", "interval.high vs interval.estimate vs",
            "estimate", "Diagnostics", "ess", "acceptance_rate",
            *(f"Group: {p['name']}" for p in POLICIES),
        ]  # fmt: skip
        dom = render(link.replace("http://127.0.0.1:5000", base), must,
                     tmp_path / "compare-replay.png")  # fmt: skip
    check_page(dom, must)
