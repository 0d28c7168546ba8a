"""Snapshot files: named numpy arrays plus JSON meta, checksummed, written atomically.

The container is an uncompressed ``.npz``; it is parsed, not trusted. Only a regular file
no larger than a bound is opened (a FIFO or device never blocks the reader), every member
must be stored uncompressed with an ``.npy`` header whose declared size is exactly the
bytes present (a forged header cannot make us allocate more than the file holds), and
members may not overlap; the ``.npy`` headers are parsed with numpy's header parser (never
``allow_pickle``, object dtypes refused): loading never executes code. A SHA-256 over
the meta and every array (name, dtype, shape, bytes) is stored beside them, so a corrupt,
truncated or foreign file is refused before anything is built from it (it subsumes the
zip CRCs, which the reader does not recompute).

Arrays stream: the writer hashes and writes each array from its own memory in 1 MiB
slices, the reader reads each member with one pass into a fresh array, hashing each slice
as it lands (no intermediate ``bytes``, each byte touched while it is in cache). At 10^6
merchants that halves save and load (see ``benchmarks/README.md``).

The SHA-256 is integrity, not authentication. With a shared key, the writer also stores an
HMAC-SHA256 tag over the same content, and a keyed reader refuses a file without a valid
tag (and an unkeyed reader refuses a tagged file: the two ends must agree). Digests and tags
are compared in constant time.

Writes go to a temporary file created exclusively, with an unpredictable name, in the
target's directory (``.<name>.<pid>.<random>.tmp``, never following a symlink); it is
fsynced, renamed over the target (which replaces a symlink at the target, never its
target) and removed on any failure: a crash leaves the old or the new complete snapshot.
Temp files that crashed writers left behind are removed by the next save to the same
target: only regular files of ours matching that pattern (or the older ``.<name>.<pid>.tmp``)
whose writer process is gone from this host or that are older than :data:`ORPHAN_AGE_S`.
The pid test assumes one host writes a given target (a shared directory written by
several hosts under one name would need the age rule alone).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import stat
import struct
import tempfile
import time
import tokenize
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from allocator.errors import ConfigError, SnapshotError

FORMAT = "entry-alloc-snapshot"
FORMAT_VERSION = 1
_META = "__meta__"
_CHECKSUM = "__checksum__"
_TAG = "__tag__"
#: files larger than this are refused before being read (``max_bytes`` overrides it)
DEFAULT_MAX_BYTES = 16 * 2**30
#: a temp file untouched this long is an orphan even if its pid is alive (pid reuse)
ORPHAN_AGE_S = 3600.0
#: shortest accepted shared key
MIN_KEY_BYTES = 16
_MAX_MEMBERS = 4096
_NPY_HEADER_MAX = 10_000
#: bytes hashed and written (or read and hashed) at a time
_CHUNK = 1 << 20
#: a zip local file header: signature, then (at byte 26) the name and extra field lengths
_LOCAL_HEADER = struct.Struct("<4s22xHH")
# parse failures of a damaged container (zipfile, the .npy header parser, numpy)
_DAMAGED = (
    zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, TypeError, KeyError, IndexError,
    OSError, EOFError, NotImplementedError, SyntaxError, OverflowError, MemoryError,
    RecursionError, tokenize.TokenError, struct.error,
)  # fmt: skip


def load_key(source: bytes | str | Path | None) -> bytes | None:
    """A shared snapshot key: ``bytes`` as given, or read from a key file (``str``/``Path``,
    surrounding whitespace stripped). The key is never part of a message."""
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        where = f"snapshot key file {source}"
        try:
            key = Path(source).read_bytes().strip()
        except OSError as err:
            raise ConfigError(f"{where}: cannot read it ({err.strerror})") from None
    elif isinstance(source, (bytes, bytearray)):
        key, where = bytes(source), "snapshot_key"
    else:
        raise ConfigError(
            f"snapshot_key must be bytes or a key file path, got {type(source).__name__}"
        )
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{where}: the key has {len(key)} bytes, expected >= {MIN_KEY_BYTES}")
    return key


class _Digest:
    """The SHA-256 and, with a key, the HMAC-SHA256 over the meta then every array (name,
    dtype, shape, bytes) in name order, fed as the arrays stream to or from the file."""

    def __init__(self, meta_bytes: bytes, key: bytes | None):
        self.hashes: list[Any] = [hashlib.sha256()]
        if key is not None:
            self.hashes.append(hmac.new(key, digestmod=hashlib.sha256))
        self.update(meta_bytes)

    def update(self, data: bytes | memoryview) -> None:
        for h in self.hashes:
            h.update(data)

    def head(self, name: str, arr: np.ndarray) -> None:
        self.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())

    def result(self) -> tuple[bytes, bytes | None]:
        """The digest and the tag (None without a key), hex."""
        digest = self.hashes[0].hexdigest().encode()
        return digest, self.hashes[1].hexdigest().encode() if len(self.hashes) > 1 else None


def _chunks(arr: np.ndarray) -> Iterator[memoryview]:
    """The bytes of a C-contiguous ``arr`` in slices of :data:`_CHUNK` (no copies): each
    slice is hashed and written (or read and hashed) while it is in cache."""
    data = arr.reshape(-1).view(np.uint8).data if arr.size else memoryview(b"")
    for lo in range(0, len(data), _CHUNK):
        yield data[lo : lo + _CHUNK]


# --------------------------------------------------------------------------- writing
def write_snapshot(
    path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
    key: bytes | None = None,
) -> None:  # fmt: skip
    """Atomically write ``arrays`` and ``meta`` (JSON-able) to ``path``, tagged with ``key``
    if given; any failure is a :class:`SnapshotError` and leaves no temp file behind."""
    path = Path(path)
    for name, arr in arrays.items():
        if name.startswith("__") or arr.dtype.hasobject:
            raise SnapshotError(f"array {name!r} cannot be stored (reserved name or object dtype)")
    full_meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    meta_bytes = json.dumps(full_meta, sort_keys=True).encode()
    if not path.parent.is_dir():
        raise SnapshotError(f"cannot save snapshot {path}: directory {path.parent} does not exist")
    remove_orphans(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=path.parent)  # fmt: skip
        with os.fdopen(fd, "wb") as f:
            _write_members(f, arrays, meta_bytes, key)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise SnapshotError(f"cannot save snapshot {path}: {err.strerror or err}") from None
    finally:
        if tmp is not None:
            with suppress(OSError):
                os.unlink(tmp)


def _write_members(
    f: BinaryIO, arrays: Mapping[str, np.ndarray], meta_bytes: bytes, key: bytes | None
) -> None:
    """The container: one stored ``.npy`` member per array (name order, each hashed as it
    is written, straight from the array's memory), then the meta, checksum and tag."""
    digest = _Digest(meta_bytes, key)
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in sorted(arrays):
            arr = np.ascontiguousarray(arrays[name])
            digest.head(name, arr)
            _write_member(zf, name, arr, digest)
        checksum, tag = digest.result()
        _write_member(zf, _META, np.frombuffer(meta_bytes, dtype=np.uint8))
        _write_member(zf, _CHECKSUM, np.frombuffer(checksum, dtype=np.uint8))
        if tag is not None:
            _write_member(zf, _TAG, np.frombuffer(tag, dtype=np.uint8))


def _write_member(
    zf: zipfile.ZipFile, name: str, arr: np.ndarray, digest: _Digest | None = None
) -> None:  # fmt: skip
    with zf.open(f"{name}.npy", "w", force_zip64=True) as m:
        np.lib.format.write_array_header_1_0(m, np.lib.format.header_data_from_array_1_0(arr))
        for chunk in _chunks(arr):
            if digest is not None:
                digest.update(chunk)
            m.write(chunk)


def _tmp_pattern(target: str) -> re.Pattern[str]:
    return re.compile(re.escape(f".{target}.") + r"(\d+)(?:\.[a-z0-9_]{8})?\.tmp")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_orphans(path: str | Path, now: float | None = None) -> list[str]:
    """Remove temp files that crashed writers of ``path`` left (see the module docstring);
    returns their names. Symlinks, directories and other users' files are left alone."""
    path = Path(path)
    pattern = _tmp_pattern(path.name)
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        names = [e.name for e in os.scandir(path.parent) if pattern.fullmatch(e.name)]
    except OSError:
        return removed
    for name in names:
        candidate = path.parent / name
        try:
            st = os.lstat(candidate)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            continue
        pid = int(pattern.fullmatch(name)[1])  # type: ignore[index]
        writer_gone = pid != os.getpid() and not _alive(pid)
        if writer_gone or now - st.st_mtime > ORPHAN_AGE_S:
            with suppress(OSError):
                os.unlink(candidate)  # a name swapped for a symlink meanwhile: the link goes
                removed.append(name)
    return removed


# --------------------------------------------------------------------------- reading
def _open_regular(path: Path, max_bytes: int) -> io.BufferedReader:
    """Open ``path`` for reading if it is a regular file of at most ``max_bytes``; never
    blocks (``O_NONBLOCK``: a FIFO or device is refused, not waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SnapshotError(f"snapshot {path} does not exist") from None
    except OSError as err:
        raise SnapshotError(f"snapshot {path} cannot be opened: {err.strerror or err}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
            raise SnapshotError(f"snapshot {path} is {kind}, not a regular file")
        if st.st_size > max_bytes:
            raise SnapshotError(
                f"snapshot {path} has {st.st_size} bytes, more than the bound of {max_bytes}: "
                "refused unread (raise max_bytes if it is genuine)"
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True)
class _Member:
    """Where a member's array lies in the file, from its checked headers."""

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran: bool


def _locate(f: io.BufferedReader, info: zipfile.ZipInfo, size: int) -> _Member:
    """Check one member's zip and ``.npy`` headers: stored, and the array it declares is
    exactly the bytes it holds (a forged header cannot make us allocate more)."""
    if (
        info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size
        or info.flag_bits & 0x1  # encrypted
    ):  # fmt: skip
        raise ValueError(f"member {info.filename!r} is compressed, encrypted or inconsistent")
    if info.file_size > size:
        raise ValueError(f"member {info.filename!r} declares more bytes than the file has")
    f.seek(info.header_offset)
    signature, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    name = f.read(name_len).decode("utf-8" if info.flag_bits & 0x800 else "cp437")
    if signature != b"PK\x03\x04" or name != info.orig_filename:
        raise ValueError(f"member {info.filename!r} has no matching local header")
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if start + info.file_size > size:
        raise ValueError(f"member {info.filename!r} declares more bytes than the file has")
    f.seek(start)
    head = io.BytesIO(f.read(min(info.file_size, _NPY_HEADER_MAX + 16)))
    version = np.lib.format.read_magic(head)
    read_header = (
        np.lib.format.read_array_header_1_0 if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )  # fmt: skip
    shape, fortran, dtype = read_header(head, max_header_size=_NPY_HEADER_MAX)
    if dtype.hasobject:
        raise ValueError(f"member {info.filename!r} has an object dtype")
    n = 1
    for dim in shape:
        n *= int(dim)
    if n * dtype.itemsize != info.file_size - head.tell():
        raise ValueError(f"member {info.filename!r} declares a size it does not hold")
    return _Member(start + head.tell(), tuple(shape), dtype, bool(fortran))


def _read_array(
    f: io.BufferedReader, member: _Member, name: str, digest: _Digest | None
) -> np.ndarray:
    """A located member read in one pass into a fresh array (hashed slice by slice)."""
    shape = member.shape[::-1] if member.fortran else member.shape
    arr = np.empty(shape, dtype=member.dtype)
    if digest is not None:
        digest.head(name, arr.T if member.fortran else arr)
    f.seek(member.offset)
    for chunk in _chunks(arr):
        if f.readinto(chunk) != len(chunk):
            raise EOFError(f"member {name!r} is truncated")
        if digest is not None:
            digest.update(chunk)
    return arr.T if member.fortran else arr


def _locate_members(f: io.BufferedReader, size: int) -> dict[str, _Member]:
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
    if len(infos) > _MAX_MEMBERS:
        raise ValueError(f"{len(infos)} members")
    members: dict[str, _Member] = {}
    for info in infos:
        name = info.filename.removesuffix(".npy")
        if name == info.filename or name in members:
            raise ValueError(f"member {info.filename!r} is not an array or is repeated")
        members[name] = _locate(f, info, size)
    if sum(info.file_size for info in infos) > size:  # overlapping members: a bomb's shape
        raise ValueError("members declare more bytes than the file has")
    return members


def read_snapshot(
    path: str | Path, *, key: bytes | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a snapshot (and its tag, with ``key``); any defect is a
    :class:`SnapshotError` naming the file."""
    path = Path(path)
    with _open_regular(path, max_bytes) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            members = _locate_members(f, size)
            if _META not in members or _CHECKSUM not in members:
                raise SnapshotError(f"{path} is not an entry-alloc snapshot (no meta or checksum)")
            small = {
                name: _read_array(f, members.pop(name), name, None).tobytes()
                for name in (_META, _CHECKSUM, _TAG) if name in members
            }  # fmt: skip
            digest = _Digest(small[_META], key)
            entries = {
                name: _read_array(f, members[name], name, digest) for name in sorted(members)
            }
        except _DAMAGED as err:
            raise SnapshotError(f"snapshot {path} is corrupt or truncated: {err}") from None
    meta_bytes = small[_META]
    checksum, tag = digest.result()
    if not hmac.compare_digest(checksum, small[_CHECKSUM]):
        raise SnapshotError(f"snapshot {path} fails its checksum: corrupt or altered")
    _authenticate(path, tag, small.get(_TAG))
    try:
        meta = json.loads(meta_bytes)
    except ValueError:
        raise SnapshotError(f"snapshot {path} has unreadable meta") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise SnapshotError(f"{path} is not an entry-alloc snapshot (format {found!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot {path} has format version {meta.get('format_version')}, "
            f"this build reads version {FORMAT_VERSION}"
        )
    return entries, meta


def _authenticate(path: Path, expected: bytes | None, stored: bytes | None) -> None:
    """Check the stored tag against the keyed one (``expected``; None without a key)."""
    if expected is None and stored is not None:
        raise SnapshotError(
            f"snapshot {path} is authenticated (tagged), but no snapshot key is configured "
            "here: configure the writer's key to load it"
        )
    if expected is not None and stored is None:
        raise SnapshotError(
            f"snapshot {path} is not authenticated (no tag), and a snapshot key is required"
        )
    if expected is not None and stored is not None and not hmac.compare_digest(expected, stored):
        raise SnapshotError(
            f"snapshot {path} fails authentication: written with another key, or altered"
        )
