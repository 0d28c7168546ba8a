"""The indexed decision rows' list columns: 32-bit offsets, refused past their range."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from allocator.errors import InvalidInputError
from allocator.logs.indexed import list_column


def test_a_list_column_past_32_bit_offsets_is_refused_not_wrapped():
    col = list_column(np.array([0, 2, 3]), pa.array([1.0, 2.0, 3.0]))
    assert col.to_pylist() == [[1.0, 2.0], [3.0]]
    with pytest.raises(InvalidInputError, match="exceeds the log schema's 32-bit offsets"):
        list_column(np.array([0, 2**31]), pa.array([1.0]))
