from __future__ import annotations

import numpy as np
import pytest

from allocator import ArmRegistry


def make_registry(n: int, group: str = "g", capacity: int = 16) -> ArmRegistry:
    reg = ArmRegistry(capacity=capacity)
    reg.add([f"arm:{i}" for i in range(n)], group)
    return reg


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def pytest_configure(config: pytest.Config) -> None:
    """Expose whether slow tests were selected, for tests that scale their sample size."""
    markexpr = config.getoption("markexpr", "") or ""
    pytest.slow_enabled = "not slow" not in markexpr  # type: ignore[attr-defined]
