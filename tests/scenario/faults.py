"""A runner wrapper that makes one named cell raise inside its worker (fault injection)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any


def raise_for(name: str, fn: Any, shared: Any, task: Any) -> Any:
    if task.name == name:
        raise RuntimeError(f"injected failure in cell {name}")
    return fn(shared, task)


class FailingCell:
    """Wraps a runner so that the cell called ``name`` raises where it runs."""

    def __init__(self, inner: Any, name: str) -> None:
        self.inner, self.name = inner, name

    def run(self, fn: Any, tasks: Sequence[Any], shared: Any) -> Any:
        return self.inner.run(partial(raise_for, self.name, fn), tasks, shared)
