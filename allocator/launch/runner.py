"""Run a grid of independent tasks one after another or on Ray, with the same results.

A task is ``fn(shared, task)``: ``shared`` (the world, the logs) goes to the Ray object store
once and every task reads it from there; ``task`` is small. Results come back to the driver
in grid order, failures included: a task that raises becomes a :class:`TaskResult` with its
error text, never a missing row. Ray is started here, by the runner, only when a Ray runner
runs; importing this module does not import Ray.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

TaskFn = Callable[[Any, Any], Any]

#: environment of every Ray worker: one numba / BLAS thread, so tasks scale by processes
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one grid task: ``value`` on success, ``error`` (traceback) on failure;
    its wall ``seconds`` and the CPU seconds of the process that ran it over that time
    (a worker runs one task at a time: on a shared machine wall time counts the waits for
    a core, CPU time only the task's work)."""

    index: int
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def local_ray_auth() -> None:
    """Say explicitly what a local Ray cluster uses: token authentication (Ray's default
    since 2.5x, with a token it generates in ``~/.ray/auth_token``), unless the user chose
    otherwise with ``RAY_AUTH_MODE``. Left unset, Ray warns about it on every launch.

    Ray reads the mode when it is imported, and a cluster started with a mode its driver
    did not import with refuses the driver: so this only acts before Ray's first import
    (as in a CLI launch); in a process that already imported Ray, the mode stays Ray's.
    """
    from allocator.settings import RAY_AUTH_MODE, load_settings

    if "ray" not in sys.modules and load_settings().ray_auth_mode is None:
        os.environ[RAY_AUTH_MODE] = "token"


class Runner(Protocol):
    def run(self, fn: TaskFn, tasks: Sequence[Any], shared: Any) -> list[TaskResult]: ...


class Progress:
    """A one-line progress bar on the driver's stderr (plain lines when not a terminal)."""

    def __init__(self, total: int, label: str = "tasks", stream: TextIO | None = None) -> None:
        self.total, self.label, self.done, self.failed = total, label, 0, 0
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        line = (
            f"[{bar}] {self.done}/{self.total} {self.label}"
            f"{f', {self.failed} failed' if self.failed else ''}"
            f"  {time.perf_counter() - self.start:6.1f}s"
        )
        end = "\n" if (not self._tty or self.done == self.total) else ""
        self.stream.write(("\r" if self._tty else "") + line + end)
        self.stream.flush()


def _call(fn: TaskFn, shared: Any, task: Any, index: int) -> TaskResult:
    from threadpoolctl import threadpool_limits

    start, cpu = time.perf_counter(), time.process_time()
    value, error = None, None
    try:
        # One BLAS thread wherever a task runs: thread count changes float rounding, and
        # the sequential runner must reproduce the Ray workers bit for bit.
        with threadpool_limits(limits=1):
            value = fn(shared, task)
    except Exception:  # the task's own error, reported with its traceback
        error = traceback.format_exc()
    return TaskResult(index, value, error, time.perf_counter() - start, time.process_time() - cpu)


class SequentialRunner:
    """Runs tasks in order in this process: the reference the Ray runner must match."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def run(self, fn: TaskFn, tasks: Sequence[Any], shared: Any) -> list[TaskResult]:
        bar = Progress(len(tasks)) if self.progress else None
        results = []
        for i, task in enumerate(tasks):
            results.append(_call(fn, shared, task, i))
            if bar:
                bar.advance(results[-1].ok)
        return results


class RayRunner:
    """Runs tasks as Ray tasks (one CPU each) on a local Ray or a cluster.

    ``address`` None starts a local Ray with ``num_cpus`` (default: all cores) and shuts it
    down afterwards; otherwise the runner joins that cluster and leaves it running.
    ``max_retries`` re-runs tasks whose worker died; ``retry_exceptions`` also re-runs tasks
    that raised (off by default: a simulation that raises will raise again).
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        max_retries: int = 2,
        retry_exceptions: bool = False,
        progress: bool = True,
        ray_module: Any = None,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        self.progress = progress
        self._ray = ray_module

    def _ray_module(self) -> Any:
        if self._ray is None:
            import ray

            self._ray = ray
        return self._ray

    def run(self, fn: TaskFn, tasks: Sequence[Any], shared: Any) -> list[TaskResult]:
        if self.address is None:
            local_ray_auth()  # before Ray's import (see there)
        ray = self._ray_module()
        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
            if self.address is None:
                kwargs["num_cpus"] = self.num_cpus
            ray.init(address=self.address, runtime_env={"env_vars": WORKER_ENV}, **kwargs)
            started = True
        try:
            return self._run(ray, fn, tasks, shared)
        finally:
            if started and self.address is None:
                ray.shutdown()

    def _run(self, ray: Any, fn: TaskFn, tasks: Sequence[Any], shared: Any) -> list[TaskResult]:
        remote = ray.remote(_call).options(
            num_cpus=1, max_retries=self.max_retries, retry_exceptions=self.retry_exceptions
        )
        shared_ref = ray.put(shared)
        fn_ref = ray.put(fn)
        pending = {remote.remote(fn_ref, shared_ref, task, i): i for i, task in enumerate(tasks)}
        results: list[TaskResult | None] = [None] * len(tasks)
        bar = Progress(len(tasks)) if self.progress else None
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except Exception as err:  # the worker died or the task could not run
                    results[i] = TaskResult(i, None, f"{type(err).__name__}: {err}")
                if bar:
                    bar.advance(results[i].ok)  # type: ignore[union-attr]
        return [r for r in results if r is not None]
