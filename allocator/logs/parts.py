"""One decision-log part on disk: its name, its integrity metadata, its verified bytes.

A part is a Parquet file named ``<kind>-<UTC yyyymmddTHHMMSS>-<replica>-<seq:06d>.parquet``.
Its key-value metadata names the stream and schema version, the writer (replica), the
writer's session (a random token per open) and the part's sequence number in that replica's
stream, and carries a SHA-256 of the whole file computed with the digest's own 64
characters zeroed. The digest is located by its key in the raw bytes and checked *before*
pyarrow parses anything, so a flipped bit anywhere (data pages, footer, statistics, the
metadata itself) is refused rather than decoded into different values, and a copied or
renamed part is caught by comparing its name with its metadata.

SHA-256 here is integrity, not authentication: whoever can write the directory can forge a
part with a valid digest. The content checks of :func:`~allocator.logs.tables.check_table`
still run on every part, so a forged part cannot carry values the writer would refuse.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from allocator.errors import DecisionLogError, InvalidInputError, LogCorrupt
from allocator.logs.schema import (
    KINDS,
    META_KIND,
    META_VERSION,
    VERSIONED,
    Kind,
    file_metadata,
    schema_version,
)
from allocator.logs.tables import check_table

PART_NAME: Final = re.compile(
    r"^(catalogue|decisions|outcomes)-(\d{8}T\d{6})-([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})-(\d{6,})\.parquet$"
)
REPLICA: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
META_WRITER: Final = b"entry_alloc.writer"
META_SESSION: Final = b"entry_alloc.session"
META_SEQ: Final = b"entry_alloc.seq"
META_DIGEST: Final = b"entry_alloc.sha256"
MAX_PART_BYTES: Final = 1 << 30
_ZERO: Final = b"0" * 64
# Thrift compact encoding between a KeyValue's key and its 64-byte value: the value field's
# header (field 2, binary) and its length. Checked on every write, so a pyarrow that
# encoded it differently would fail loudly at the writer, never produce unverifiable parts.
_FRAME: Final = b"\x18\x40"
_COMPRESSION: Final = "zstd"
#: zstd's fast level -3 for decisions parts: encoding them (the float64 probabilities list
#: above all) is most of the writer thread's CPU, which counts against a decision's cost;
#: -3 takes ~7-15 % off it for 1-3 % more bytes (target workload, 1,000-row parts). Other
#: parts keep the default level: a catalogue's ids grow by two thirds at -3, and it is
#: written once. Readers decode any level, so parts written before load alike.
_DECISIONS_LEVEL: Final = -3
#: the per-candidate list columns (hundreds of values a row: most of a part's encoding CPU)
#: are written without dictionary pages and without min/max statistics: candidate ids are
#: drawn from the whole catalogue and probabilities and contexts are floats, so hashing
#: them into dictionaries costs the writer more than it saves bytes, and nothing reads the
#: statistics of list elements (benchmarks/README.md, issue 15)
_PLAIN_COLUMNS: Final = frozenset(
    {"candidates", "candidate_indices", "candidate_probabilities", "context"}
)
#: candidate indices are bit-packed (as deltas, each list element against the previous):
#: ~10 % fewer bytes than zstd over plain int32 at the same CPU (benchmarks/README.md)
_INDEX_LEAF: Final = "candidate_indices.list.element"


@dataclass(frozen=True)
class PartName:
    """What a part's file name says: stream, writer and position in the writer's stream."""

    kind: Kind
    replica: str
    seq: int


@dataclass(frozen=True)
class Part:
    """A verified part: its file, name, schema version and rows (in that version's schema)."""

    file: str
    name: PartName
    version: int
    table: pa.Table


def part_name(kind: Kind, epoch_seconds: float, replica: str, seq: int) -> str:
    """File name of ``replica``'s part ``seq`` of ``kind``, written at ``epoch_seconds``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(epoch_seconds))
    return f"{kind}-{stamp}-{replica}-{seq:06d}.parquet"


def parse_name(name: str) -> PartName | None:
    """The parts of a log part's file name, or None if it is not named like one."""
    m = PART_NAME.match(name)
    if m is None:
        return None
    kind = next(k for k in KINDS if k == m.group(1))
    return PartName(kind, m.group(3), int(m.group(4)))


def check_replica(replica: object) -> str:
    """``replica`` if it can name log parts (it is part of every file name)."""
    if not isinstance(replica, str) or not REPLICA.match(replica):
        raise InvalidInputError(
            f"replica = {replica!r}: expected 1-64 characters of [A-Za-z0-9_.-], "
            "not starting with '.' or '-'"
        )
    return replica


def _digest_at(data: bytes | bytearray) -> int | None:
    key = data.rfind(META_DIGEST)
    if key < 0:
        return None
    at = key + len(META_DIGEST) + len(_FRAME)
    if data[key + len(META_DIGEST) : at] != _FRAME or at + len(_ZERO) > len(data):
        return None
    return at


def _digest(data: bytes | bytearray, at: int) -> bytes:
    view = memoryview(data)
    h = hashlib.sha256(view[:at])
    h.update(_ZERO)
    h.update(view[at + len(_ZERO) :])
    return h.hexdigest().encode()


def encode_part(table: pa.Table, name: PartName, session: str) -> bytes:
    """The bytes of a part holding ``table`` (already in its stream's schema), digest set."""
    meta = {
        **file_metadata(name.kind, schema_version(name.kind, table.column_names)),
        META_WRITER: name.replica.encode(),
        META_SESSION: session.encode(),
        META_SEQ: str(name.seq).encode(),
        META_DIGEST: _ZERO,
    }
    sink = pa.BufferOutputStream()
    small = [c for c in table.column_names if c not in _PLAIN_COLUMNS]
    indexed = "candidate_indices" in table.column_names
    packed = {_INDEX_LEAF: "DELTA_BINARY_PACKED"} if indexed else None
    level = _DECISIONS_LEVEL if name.kind == "decisions" else None
    pq.write_table(
        table.replace_schema_metadata(meta), sink, compression=_COMPRESSION,
        compression_level=level, use_dictionary=small, write_statistics=small,
        column_encoding=packed,
    )  # fmt: skip
    data = bytearray(sink.getvalue().to_pybytes())
    at = _digest_at(data)
    if at is None or data[at : at + len(_ZERO)] != _ZERO:
        raise DecisionLogError(
            "pyarrow laid out the part footer unexpectedly: no place for its digest"
        )
    data[at : at + len(_ZERO)] = _digest(data, at)
    return bytes(data)


def _read_verified(path: Path) -> bytes:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise LogCorrupt(path.name, "is not a regular file")
        if info.st_size > MAX_PART_BYTES:
            raise LogCorrupt(path.name, f"has {info.st_size} bytes, more than {MAX_PART_BYTES}")
        data = path.read_bytes()
    except OSError as err:
        raise LogCorrupt(path.name, f"is unreadable: {err}") from None
    at = _digest_at(data)
    if at is None:
        raise LogCorrupt(path.name, "carries no checksum: not a decision-log part of this version")
    if data[at : at + len(_ZERO)] != _digest(data, at):
        raise LogCorrupt(path.name, "fails its checksum: the file changed after it was written")
    return data


def _meta_text(meta: dict[bytes, bytes], key: bytes) -> str:
    return meta.get(key, b"").decode(errors="replace")


def _check_schema(path: Path, schema: pa.Schema, kind: Kind, version: int) -> None:
    expected = VERSIONED[kind, version]
    if not schema.equals(expected, check_metadata=False):
        differ = [
            f.name
            for f in expected
            if f.name not in schema.names or not schema.field(f.name).equals(f)
        ] + [name for name in schema.names if name not in expected.names]
        raise LogCorrupt(
            path.name,
            f"does not match the {kind} schema version {version}: fields {differ} differ",
        )


def read_part(path: Path) -> Part:
    """Verify and read one part; :class:`LogCorrupt` naming it if anything is wrong.

    Order: name, digest over the raw bytes, then (only for intact bytes) the metadata
    against the name, the schema, and the content checks of the writer.
    """
    name = parse_name(path.name)
    if name is None:
        raise LogCorrupt(
            path.name, "is not a decision log part: expected <kind>-<time>-<replica>-<seq>.parquet"
        )
    data = _read_verified(path)
    try:
        with pq.ParquetFile(pa.BufferReader(data)) as part:
            meta = part.metadata.metadata or {}
            schema = part.schema_arrow
            table = part.read()
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
        raise LogCorrupt(path.name, f"is unreadable: {err}") from None
    said_version = _meta_text(meta, META_VERSION)
    readable = sorted(v for k, v in VERSIONED if k == name.kind)
    version = int(said_version) if said_version in map(str, readable) else None
    if version is None:
        raise LogCorrupt(
            path.name,
            f"has schema version {said_version!r}; this loader reads {name.kind} of "
            f"versions {readable}",
        )
    said = (_meta_text(meta, META_KIND), _meta_text(meta, META_WRITER), _meta_text(meta, META_SEQ))
    if said != (name.kind, name.replica, str(name.seq)):
        raise LogCorrupt(
            path.name,
            f"holds {said[0]} of writer {said[1]!r}, part {said[2]}: its name says otherwise "
            "(renamed or copied)",
        )
    _check_schema(path, schema, name.kind, version)
    table = table.replace_schema_metadata(None)
    try:
        table = check_table(name.kind, table, version)
    except InvalidInputError as err:
        raise LogCorrupt(path.name, f"holds invalid rows: {err}") from None
    return Part(path.name, name, version, table)


def write_part(directory: Path, name: str, data: bytes) -> None:
    """Write ``data`` as ``directory/name`` atomically: an exclusive, unpredictable hidden
    temporary file, fsynced, then renamed (readers see whole parts or nothing)."""
    tmp = directory / f".{name}.{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
