"""Cached argument lists for a policy's single-call kernels (the serving hot path).

A decide kernel takes ~40 arguments, almost all of them the policy's own arrays; building
that tuple and resolving the overload cost more than the kernel's own work on a short
candidate list. A :class:`BoundCall` keeps the list built and the compiled entry point
bound (``allocator.kernels.entry``) under a *key*: the generation counters of everything
whose arrays it holds (the model state, the registry, the policy's buffers). Any
reallocation bumps a counter, so the next call rebuilds the list and rebinds the entry
for the new arrays' types; between reallocations only the per-call slots are written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from allocator.kernels.entry import entry_point


class BoundCall:
    """``kernel`` over a cached argument list, rebuilt by ``build(*extra)`` when the key
    changes (``extra``: what :meth:`bind` was given, e.g. the call's contract arrays)."""

    __slots__ = ("args", "build", "entry", "kernel", "key")

    def __init__(self, kernel: Any, build: Callable[..., list[Any]]) -> None:
        self.kernel = kernel
        self.build = build
        self.key: Any = None
        self.args: list[Any] = []
        self.entry: Any = None

    def bind(self, key: Any, *extra: Any) -> list[Any]:
        """The argument list for ``key`` (rebuilt, and the entry rebound, when it changed);
        the caller writes its per-call slots, then calls :attr:`entry` with it."""
        if key != self.key:
            self.args = self.build(*extra)
            self.entry = entry_point(self.kernel, tuple(self.args))
            self.key = key
        return self.args
