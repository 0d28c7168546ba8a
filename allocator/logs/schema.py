"""Arrow schemas and record types of the decision log.

The log is append-only streams of Parquet parts in one directory: *decisions* (one row
per impression, written when the allocator decides), *outcomes* (one row per learned
reward, written when feedback arrives or the wait expires) and, since schema version 3,
the *catalogue* (one row per arm id, written once when a writer first logs for a registry
and appended when arms are added). Version 3 decision rows carry their candidates and
choice as int32 catalogue indices instead of id strings (the strings were most of a
row's bytes and of the writer's encoding CPU); version 2 rows carry the strings. Every
field carries its own description as Arrow field metadata (``doc``), so a part documents
itself; the key-value metadata of each file names the schema version and the stream
(:data:`META_VERSION`, :data:`META_KIND`), so the loader can refuse anything that is not
ours.

Records are validated here, once, at the boundary: a record that passes
:func:`check_decision` / :func:`check_outcome` can always be written and read back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from allocator.errors import InvalidInputError, brief
from allocator.inputs import is_utf8

SCHEMA_VERSION: Final = 3
META_VERSION: Final = b"entry_alloc.schema_version"
META_KIND: Final = b"entry_alloc.kind"
Kind = Literal["catalogue", "decisions", "outcomes"]
#: in the order a writer drains its buffers: catalogue rows reach the disk no later than
#: the decisions that refer to them
KINDS: Final[tuple[Kind, ...]] = ("catalogue", "decisions", "outcomes")
OUTCOME_SOURCES: Final = ("feedback", "expired_default")

# Candidate probabilities are the allocator's exact final distribution; these tolerances
# only absorb float64 rounding, not a different distribution.
SUM_TOL = 1e-6
PROPENSITY_TOL = 1e-9
_INT64_END = 2**63

FloatSequence = Sequence[float] | npt.NDArray[np.float64]
StrSequence = Sequence[str] | npt.NDArray[np.str_] | npt.NDArray[np.object_]


def _field(name: str, type_: pa.DataType, doc: str, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"doc": doc.encode()})


def _list(item: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("element", item, nullable=False))


DECISION_SCHEMA: Final = pa.schema(
    [
        _field("decision_id", pa.string(), "Unique id the allocator gave the decision."),
        _field("request_id", pa.string(), "Caller's request id, if it sent one.", nullable=True),
        _field("timestamp", pa.float64(), "Decision time, epoch seconds UTC."),
        _field("arm_id", pa.string(), "Chosen arm (destination) id."),
        _field("arm_index", pa.int64(), "Chosen arm's registry index at decision time."),
        _field("group", pa.string(), "Chosen arm's group (partner platform or mini shop)."),
        _field(
            "propensity",
            pa.float64(),
            "Exact probability, in (0, 1], that the whole procedure (policy, epsilon mixing, "
            "constraints) chose this arm.",
        ),
        _field("forced", pa.bool_(), "A constraint forced the choice onto its target."),
        _field("model_version", pa.int64(), "Version of the posterior that decided."),
        _field("policy_kind", pa.string(), "Policy family, e.g. beta_bernoulli."),
        _field("candidates", _list(pa.string()), "Eligible arm ids, in request order."),
        _field(
            "candidate_probabilities",
            _list(pa.float64()),
            "Final choice probability of each candidate (aligned with candidates).",
        ),
        _field(
            "context",
            _list(pa.float64()),
            "Context vector the policy saw; null for context-free policies.",
            nullable=True,
        ),
        _field(
            "attrs",
            pa.map_(pa.string(), pa.string()),
            "Request attributes (category, slot, ...); may be empty.",
        ),
        _field(
            "adjusted_by",
            _list(pa.string()),
            "Names of the constraints that moved probability mass in this decision.",
        ),
    ]
)

OUTCOME_SCHEMA: Final = pa.schema(
    [
        _field("decision_id", pa.string(), "Decision this outcome belongs to."),
        _field("timestamp", pa.float64(), "Time the outcome was learned, epoch seconds UTC."),
        _field("click", pa.float64(), "Clicks observed (>= 0)."),
        _field("order", pa.float64(), "Orders observed (>= 0)."),
        _field("gmv", pa.float64(), "Gross merchandise value observed (>= 0)."),
        _field("reward", pa.float64(), "Objective's reward that the policy learned."),
        _field(
            "source",
            pa.string(),
            "'feedback' (reported by the caller) or 'expired_default' (the wait ran out "
            "and the configured default outcome was learned).",
        ),
    ]
)

_INDEX_DOC = " Index into the catalogue epoch named by the row's ``catalogue``."
# version 3 replaces the id strings of version 2 (None: dropped, the catalogue holds it)
_BY_INDEX: Final[Mapping[str, pa.Field | None]] = {
    "arm_id": _field("catalogue", pa.int64(), "Catalogue epoch the row's indices refer to."),
    "arm_index": _field("arm_index", pa.int32(), "Chosen arm." + _INDEX_DOC),
    "group": None,
    "candidates": _field(
        "candidate_indices", _list(pa.int32()), "Eligible arms, in request order." + _INDEX_DOC
    ),
}
INDEXED_DECISION_SCHEMA: Final = pa.schema(
    [g for f in DECISION_SCHEMA if (g := _BY_INDEX.get(f.name, f)) is not None]
)

CATALOGUE_SCHEMA: Final = pa.schema(
    [
        _field(
            "epoch",
            pa.int64(),
            "Random token of one registry's numbering: an index names one id per epoch.",
        ),
        _field("arm_index", pa.int32(), "The arm's registry index (never reused in an epoch)."),
        _field("arm_id", pa.string(), "The arm's id."),
        _field("group", pa.string(), "The arm's group (partner platform or mini shop)."),
    ]
)

#: the schema of each stream at each version the loader reads
VERSIONED: Final[Mapping[tuple[Kind, int], pa.Schema]] = {
    ("decisions", 2): DECISION_SCHEMA,
    ("decisions", 3): INDEXED_DECISION_SCHEMA,
    ("outcomes", 2): OUTCOME_SCHEMA,
    ("outcomes", 3): OUTCOME_SCHEMA,
    ("catalogue", 3): CATALOGUE_SCHEMA,
}


def schema_version(kind: Kind, names: Sequence[str]) -> int:
    """The version a part of ``kind`` with columns ``names`` is written as: decisions
    with id strings stay version 2, everything else is :data:`SCHEMA_VERSION`."""
    return 2 if kind == "decisions" and "candidates" in names else SCHEMA_VERSION


def file_metadata(kind: Kind, version: int = SCHEMA_VERSION) -> dict[bytes, bytes]:
    """Key-value metadata stored in every Parquet part of ``kind``."""
    return {META_VERSION: str(version).encode(), META_KIND: kind.encode()}


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class DecisionRecord:
    """One logged decision; fields as in :data:`DECISION_SCHEMA`."""

    decision_id: str
    request_id: str | None = None
    timestamp: float
    arm_id: str
    arm_index: int
    group: str
    propensity: float
    forced: bool
    model_version: int
    policy_kind: str
    candidates: StrSequence
    candidate_probabilities: FloatSequence
    context: FloatSequence | None = None
    attrs: Mapping[str, str] = field(default_factory=dict)
    adjusted_by: StrSequence = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeRecord:
    """One logged outcome; fields as in :data:`OUTCOME_SCHEMA`."""

    decision_id: str
    timestamp: float
    click: float
    order: float
    gmv: float
    reward: float
    source: Literal["feedback", "expired_default"]


def _bad(name: str, value: Any, expected: str) -> InvalidInputError:
    return InvalidInputError(f"{name} = {brief(value)}: expected {expected}")


def _text(name: str, value: Any, *, empty: bool = False) -> None:
    if not isinstance(value, str) or (not empty and not value) or not is_utf8(value):
        raise _bad(name, value, f"{'a' if empty else 'a non-empty'} string of UTF-8 text")


def _integer(name: str, value: Any) -> None:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or not 0 <= value < _INT64_END:
        raise _bad(name, value, "an integer in [0, 2**63)")


def _finite(name: str, value: Any, *, nonnegative: bool = False) -> None:
    ok = isinstance(value, float | int | np.floating | np.integer) and not isinstance(value, bool)
    try:
        ok = ok and math.isfinite(value) and not (nonnegative and value < 0)
    except OverflowError:  # an int beyond float range
        ok = False
    if not ok:
        raise _bad(name, value, "a finite number" + (" >= 0" if nonnegative else ""))


def _strings(name: str, values: Any) -> list[str]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise _bad(name, values, "a sequence of strings")
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, str) or not is_utf8(v):
            raise _bad(f"{name}[{i}]", v, "a string of UTF-8 text")
    return out


def _floats(name: str, values: Any) -> npt.NDArray[np.float64]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise _bad(name, values, "a sequence of floats")
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):  # ragged nesting
        raise _bad(name, values, "a flat sequence of floats") from None
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "fiu"):
        raise _bad(name, values, "a flat sequence of floats")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _bad(f"{name}[{i}]", float(arr[i]), "a finite number")
    return arr


def check_decision(record: DecisionRecord) -> None:
    """Raise :class:`InvalidInputError` naming the first bad field of ``record``."""
    if not isinstance(record, DecisionRecord):
        raise _bad("record", type(record).__name__, "a DecisionRecord")
    r = record
    _text("decision_id", r.decision_id)
    if r.request_id is not None:
        _text("request_id", r.request_id, empty=True)
    _finite("timestamp", r.timestamp)
    _text("arm_id", r.arm_id)
    _integer("arm_index", r.arm_index)
    _text("group", r.group)
    p = r.propensity
    _finite("propensity", p)
    if not 0.0 < p <= 1.0:
        raise _bad("propensity", p, "a probability in (0, 1]")
    if not isinstance(r.forced, bool | np.bool_):
        raise _bad("forced", r.forced, "a bool")
    _integer("model_version", r.model_version)
    _text("policy_kind", r.policy_kind)
    candidates = _strings("candidates", r.candidates)
    if not candidates:
        raise _bad("candidates", candidates, "at least one candidate")
    if len(set(candidates)) != len(candidates):
        raise _bad("candidates", candidates, "distinct arm ids")
    probs = _floats("candidate_probabilities", r.candidate_probabilities)
    if len(probs) != len(candidates):
        raise _bad(
            "candidate_probabilities",
            probs.tolist(),
            f"one probability per candidate ({len(candidates)}), got {len(probs)}",
        )
    if probs.min() < 0.0 or probs.max() > 1.0 or abs(probs.sum() - 1.0) > SUM_TOL:
        raise _bad(
            "candidate_probabilities", probs.tolist(), "probabilities in [0, 1] summing to 1"
        )
    try:
        pos = candidates.index(r.arm_id)
    except ValueError:
        raise _bad("arm_id", r.arm_id, f"one of the candidates {candidates}") from None
    if abs(probs[pos] - p) > PROPENSITY_TOL:
        raise _bad("propensity", p, f"the chosen arm's candidate probability {float(probs[pos])!r}")
    if r.context is not None:
        _floats("context", r.context)
    if not isinstance(r.attrs, Mapping):
        raise _bad("attrs", r.attrs, "a mapping of strings to strings")
    for key, value in r.attrs.items():
        _text("attrs key", key, empty=True)
        _text(f"attrs[{key!r}]", value, empty=True)
    _strings("adjusted_by", r.adjusted_by)


def check_outcome(record: OutcomeRecord) -> None:
    """Raise :class:`InvalidInputError` naming the first bad field of ``record``."""
    if not isinstance(record, OutcomeRecord):
        raise _bad("record", type(record).__name__, "an OutcomeRecord")
    _text("decision_id", record.decision_id)
    _finite("timestamp", record.timestamp)
    for name in ("click", "order", "gmv"):
        _finite(name, getattr(record, name), nonnegative=True)
    _finite("reward", record.reward)
    if record.source not in OUTCOME_SOURCES:
        raise _bad("source", record.source, f"one of {OUTCOME_SOURCES}")


def decisions_table(records: Sequence[DecisionRecord]) -> pa.Table:
    """Column-wise Arrow table of already validated decision records."""
    columns: dict[str, list[Any]] = {name: [] for name in DECISION_SCHEMA.names}
    for r in records:
        for name, column in columns.items():
            column.append(getattr(r, name))
    columns["attrs"] = [list(a.items()) for a in columns["attrs"]]
    return pa.Table.from_pydict(columns, schema=DECISION_SCHEMA)


def outcomes_table(records: Sequence[OutcomeRecord]) -> pa.Table:
    """Column-wise Arrow table of already validated outcome records."""
    return pa.Table.from_pydict(
        {name: [getattr(r, name) for r in records] for name in OUTCOME_SCHEMA.names},
        schema=OUTCOME_SCHEMA,
    )
