"""Snapshot files: named numpy arrays plus JSON meta, checksummed, written atomically.

The container is an uncompressed ``.npz`` read with ``allow_pickle=False``: loading never
executes code. A SHA-256 over the meta and every array (name, dtype, shape, bytes) is stored
beside them, so a corrupt, truncated or foreign file is refused before anything is built
from it. Writes go to a temporary file in the same directory, are fsynced, then renamed
over the target: a crash leaves either the old or the new complete snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from allocator.errors import SnapshotError

FORMAT = "entry-alloc-snapshot"
FORMAT_VERSION = 1
_META = "__meta__"
_CHECKSUM = "__checksum__"


def _digest(meta_bytes: bytes, arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256(meta_bytes)
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def write_snapshot(
    path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Atomically write ``arrays`` and ``meta`` (JSON-able) to ``path``."""
    path = Path(path)
    for name, arr in arrays.items():
        if name.startswith("__") or arr.dtype.hasobject:
            raise SnapshotError(f"array {name!r} cannot be stored (reserved name or object dtype)")
    full_meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    meta_bytes = json.dumps(full_meta, sort_keys=True).encode()
    entries = dict(arrays)
    entries[_META] = np.frombuffer(meta_bytes, dtype=np.uint8)
    entries[_CHECKSUM] = np.frombuffer(_digest(meta_bytes, arrays).encode(), dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **entries)  # type: ignore[arg-type]  # numpy stubs
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_snapshot(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a snapshot; any defect is a :class:`SnapshotError` naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise SnapshotError(f"snapshot {path} does not exist") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise SnapshotError(f"snapshot {path} is corrupt or truncated: {err}") from None
    if _META not in entries or _CHECKSUM not in entries:
        raise SnapshotError(f"{path} is not an entry-alloc snapshot (no meta or checksum)")
    meta_bytes = entries.pop(_META).tobytes()
    stored = entries.pop(_CHECKSUM).tobytes().decode(errors="replace")
    if _digest(meta_bytes, entries) != stored:
        raise SnapshotError(f"snapshot {path} fails its checksum: corrupt or altered")
    try:
        meta = json.loads(meta_bytes)
    except ValueError:
        raise SnapshotError(f"snapshot {path} has unreadable meta") from None
    if meta.get("format") != FORMAT:
        raise SnapshotError(
            f"{path} is not an entry-alloc snapshot (format {meta.get('format')!r})"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot {path} has format version {meta.get('format_version')}, "
            f"this build reads version {FORMAT_VERSION}"
        )
    return entries, meta
