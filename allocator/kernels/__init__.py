"""Numba kernels over flat arrays: arithmetic only, no validation, no Python objects.

Each public function here is compiled with ``cache=True, nogil=True`` and documented with
the shapes it expects. The Python layer (``allocator.policies``) checks inputs and shapes
state before calling them.
"""
