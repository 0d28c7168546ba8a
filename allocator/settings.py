"""Deployment settings: where to run and where to track, separate from science configs.

The library reads the environment only here, once per call to :func:`load_settings`, so a
config file describes an experiment and never a machine. Command-line flags override these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from allocator.errors import ConfigError

#: environment variables read (and only these)
ENV_RAY_ADDRESS = "ALLOCATOR_RAY_ADDRESS"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_WORKERS = "ALLOCATOR_WORKERS"
#: Ray's own switch for token authentication of a local cluster (read, and set when absent)
RAY_AUTH_MODE = "RAY_AUTH_MODE"


class Settings(BaseModel):
    """Where experiments run and are tracked; ``None`` means the embedded default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Ray cluster to join ("auto" or "ray://host:10001"); None starts a local Ray
    ray_address: str | None = None
    #: MLflow tracking URI; None is the local sqlite store ``./mlflow.db``
    tracking_uri: str | None = None
    #: CPUs of a locally started Ray (None = all of this machine's)
    workers: int | None = None
    #: Ray's RAY_AUTH_MODE as the user set it; None means a local launch sets "token"
    ray_auth_mode: str | None = None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (``os.environ`` unless given)."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_WORKERS) or None
    workers = None
    if raw is not None:
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"{ENV_WORKERS} = {raw!r}: expected a positive integer")
        workers = int(raw)
    return Settings(
        ray_address=env.get(ENV_RAY_ADDRESS) or None,
        tracking_uri=env.get(ENV_TRACKING_URI) or None,
        workers=workers,
        ray_auth_mode=env.get(RAY_AUTH_MODE) or None,
    )
