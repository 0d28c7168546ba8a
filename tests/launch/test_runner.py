from __future__ import annotations

import io

import numpy as np
import pytest

from allocator.launch.runner import Progress, RayRunner, SequentialRunner
from tests.launch.tasks import fails_on_three, noisy_sum, sleeps

TASKS = [(seed, 1000 + 10 * seed) for seed in range(6)]
SHARED = np.arange(10_000, dtype=np.float64) / 7.0


def test_sequential_runner_returns_results_in_grid_order():
    results = SequentialRunner(progress=False).run(noisy_sum, TASKS, SHARED)
    assert [r.index for r in results] == list(range(6))
    assert all(r.ok for r in results)
    assert [r.value for r in results] == [noisy_sum(SHARED, t) for t in TASKS]


def test_task_results_carry_the_cpu_time_of_their_task():
    """CPU seconds are the task's work: a computing task has some, a waiting one next to
    none of its wall time (the benchmark's cores-busy figure rests on this)."""
    busy = SequentialRunner(progress=False).run(noisy_sum, [(0, 2_000_000)], SHARED)[0]
    idle = SequentialRunner(progress=False).run(sleeps, [(0, 0)], SHARED)[0]
    assert busy.cpu_seconds > 0.0
    assert idle.seconds >= 0.2 and idle.cpu_seconds < 0.5 * idle.seconds


def test_a_failing_task_is_reported_with_its_error_not_dropped():
    results = SequentialRunner(progress=False).run(fails_on_three, TASKS, SHARED)
    assert len(results) == 6
    bad = [r for r in results if not r.ok]
    assert [r.index for r in bad] == [3]
    assert "ValueError: cell (3, 1030) exploded on purpose" in bad[0].error


def test_ray_runner_matches_the_sequential_runner(ray_local):
    seq = SequentialRunner(progress=False).run(noisy_sum, TASKS, SHARED)
    par = RayRunner(ray_module=ray_local, progress=False).run(noisy_sum, TASKS, SHARED)
    assert [r.value for r in par] == [r.value for r in seq]
    assert [r.index for r in par] == list(range(6))
    assert ray_local.is_initialized()  # a runner that did not start Ray leaves it running


def test_ray_runner_reports_a_raising_task(ray_local):
    results = RayRunner(ray_module=ray_local, progress=False, max_retries=0).run(
        fails_on_three, TASKS, SHARED
    )
    assert [r.ok for r in results] == [True, True, True, False, True, True]
    assert "exploded on purpose" in results[3].error
    assert results[2].value == noisy_sum(SHARED, TASKS[2])


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bar_counts_done_and_failed(tty):
    buf = io.StringIO()
    buf.isatty = lambda: tty  # type: ignore[method-assign]
    bar = Progress(3, "cells", stream=buf)
    for ok in (True, False, True):
        bar.advance(ok)
    text = buf.getvalue()
    assert "3/3 cells, 1 failed" in text
    assert text.endswith("\n")
    assert ("\r" in text) == tty
