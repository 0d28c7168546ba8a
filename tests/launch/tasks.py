"""Importable task functions for the runner tests (Ray ships functions by reference)."""

from __future__ import annotations

import numpy as np


def noisy_sum(shared: np.ndarray, task: tuple[int, int]) -> float:
    """A seeded computation over the shared array: same (seed, size) → same float."""
    seed, size = task
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, shared.shape[0], size)
    return float(shared[idx].sum() + rng.standard_normal())


def fails_on_three(shared: np.ndarray, task: tuple[int, int]) -> float:
    if task[0] == 3:
        raise ValueError(f"cell {task} exploded on purpose")
    return noisy_sum(shared, task)


def sleeps(shared: np.ndarray, task: tuple[int, int]) -> int:
    """Waits without computing: its CPU time stays far below its wall time."""
    import time

    time.sleep(0.2)
    return task[0]
