"""Random request batches for the policy tests, in the kernels' CSR form."""

from __future__ import annotations

import numpy as np


def random_requests(
    rng: np.random.Generator, n: int, n_arms: int, min_size: int = 1, max_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` requests, each of a uniform number of distinct arms in
    ``[min_size, max_size]`` (``max_size`` defaults to ``n_arms``) drawn without
    replacement: ``(ptr (n + 1,), idx (ptr[-1],))``, both int64."""
    sizes = rng.integers(min_size, (n_arms if max_size is None else max_size) + 1, n)
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    idx = np.concatenate([rng.choice(n_arms, s, replace=False) for s in sizes]).astype(np.int64)
    return ptr, idx
