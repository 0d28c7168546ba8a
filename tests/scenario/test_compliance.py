"""Floors re-measured from what was served use the library's schedule, element for element."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.constraints import Schedule


@pytest.mark.parametrize("shape", ["constant", "linear", "step"])
def test_values_at_is_value_at_over_an_array(shape):
    s = Schedule(start="2025-10-01T00:00:00Z", end="2025-11-01T00:00:00Z", start_value=0.4,
                 end_value=0.1, shape=shape, steps=5)  # fmt: skip
    t0, t1 = s.start.timestamp(), s.end.timestamp()
    t = np.concatenate([[t0 - 1.0, t0, t1, t1 + 5.0], np.linspace(t0, t1, 997, endpoint=False)])
    np.testing.assert_array_equal(s.values_at(t), [s.value_at(float(x)) for x in t])
