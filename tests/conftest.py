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
