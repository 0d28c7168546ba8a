from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

from allocator import ArmRegistry

# The two pytest-xdist workers (pyproject's addopts) share two cores: a BLAS pool of two
# threads in each would oversubscribe them (OpenBLAS threads spin while they wait), and a
# BLAS-heavy test then runs at about half speed. The workers inherit this environment when
# they start; a one-process run (``-n 0``) has loaded its own pool by then (the processes it
# starts, e.g. Ray workers, get one thread).
for _pool in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_pool, "1")

# Property tests draw the same examples on every run (fixed seeds, as every other test).
settings.register_profile("derandomized", derandomize=True)
settings.load_profile("derandomized")


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``-n 2 --dist loadgroup`` (CI), the launch tests share one worker, so at most one
    local Ray cluster runs at a time on the 2-core machine."""
    for item in items:
        if item.path.parent.name == "launch":
            item.add_marker(pytest.mark.xdist_group("launch"))


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray (2 CPUs) for the whole session; runners reuse it."""
    import ray

    from allocator.launch.runner import WORKER_ENV

    ray.init(
        num_cpus=2, include_dashboard=False, logging_level="warning",
        runtime_env={"env_vars": WORKER_ENV},
    )  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.fixture
def tracking_uri(tmp_path) -> str:
    """A fresh MLflow sqlite store in a temporary directory."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
