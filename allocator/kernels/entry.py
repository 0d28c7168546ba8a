"""Bound entry points: a kernel's compiled overload, called without numba's dispatch.

A call through a dispatcher resolves the type of every argument and looks the overload up
(~1.7 µs for the 38-42 arrays of a decide kernel, ~0.4 µs of it type resolution). A caller
whose argument types are fixed by construction (its own state plus inputs normalised at
the boundary: dtype, C order, dimensions) resolves once and calls the entry point: the same
machine code, reached directly. Passing other types to it would be unsound, so it is only
for such callers.
"""

from typing import Any

import numba


def entry_point(kernel: Any, args: tuple[Any, ...]) -> Any:
    """The compiled entry point of ``kernel`` for the types of ``args`` (compiled, or loaded
    from numba's cache, now); ``kernel`` itself when it is not compiled (NUMBA_DISABLE_JIT)."""
    if not hasattr(kernel, "overloads"):
        return kernel
    return kernel.compile(tuple(numba.typeof(a) for a in args))
