from __future__ import annotations

import pytest
from pydantic import ValidationError

from allocator.errors import ConfigError
from allocator.settings import Settings, load_settings


def test_settings_default_to_the_embedded_defaults():
    assert load_settings({}) == Settings(ray_address=None, tracking_uri=None, workers=None)


def test_settings_read_only_their_own_variables():
    env = {
        "ALLOCATOR_RAY_ADDRESS": "ray://head:10001",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "ALLOCATOR_WORKERS": "3",
        "RAY_ADDRESS": "ignored",
    }
    s = load_settings(env)
    assert (s.ray_address, s.tracking_uri, s.workers) == (
        "ray://head:10001",
        "http://127.0.0.1:5000",
        3,
    )


def test_empty_variables_mean_unset_and_settings_are_frozen():
    s = load_settings({"ALLOCATOR_RAY_ADDRESS": "", "MLFLOW_TRACKING_URI": ""})
    assert s.ray_address is None and s.tracking_uri is None
    with pytest.raises(ValidationError):
        s.workers = 2  # type: ignore[misc]
    for bad in ("two", "0", "-1"):
        with pytest.raises(ConfigError, match=r"ALLOCATOR_WORKERS = .*positive integer"):
            load_settings({"ALLOCATOR_WORKERS": bad})
