"""Which floor and cap sets no allocator could honour, decided in bounded time.

Requests are classified by their attributes. Enumerating every combination of the values
the scopes mention grows exponentially with the number of attributes, so the check works
on *scope classes* instead: the maximal sets of constraints that some one request falls
under, built attribute by attribute and keeping only sets not contained in another (a
request under more constraints is the harder one for floors and caps alike). A class
keeps one representative request, which error messages show. Sums of the schedules are
piecewise linear between breakpoints (starts, ends, stairs), so each class is checked on
the breakpoints and just beside them (:func:`time_grid`), by a kernel sweep.

Finding the worst request is NP-hard in general (a weighted MAX-2-AND hides in scopes over
two attributes), so the number of classes is bounded (:data:`MAX_SCOPE_CLASSES`): a set
whose scopes cross into more classes is refused as too entangled to verify, never accepted
unchecked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from allocator.errors import brief
from allocator.kernels import constraints as kc
from allocator.kernels import feasibility as kf

#: An :class:`allocator.constraints.config.Constraint` (whose module validates through this
#: one, so it is not imported here).
Constraint = Any

SHAPE_CODES = {"constant": kc.SHAPE_CONSTANT, "linear": kc.SHAPE_LINEAR, "step": kc.SHAPE_STEP}

MAX_SCOPE_CLASSES = 1024
_TOL = 1e-12
_NEAR = 1e-3  # seconds beside a breakpoint (at most): a left limit, or past a stair's rounding


def _fmt(t: float) -> str:
    return datetime.fromtimestamp(round(t), tz=UTC).isoformat()


def _table(cs: Sequence[Constraint]) -> tuple[np.ndarray, np.ndarray]:
    """The schedule table of ``cs`` (see :mod:`allocator.kernels.feasibility`)."""
    sched_f = np.zeros((len(cs), 4))
    sched_i = np.zeros((len(cs), 2), dtype=np.int64)
    for i, c in enumerate(cs):
        s = c.schedule
        sched_f[i] = s.start.timestamp(), s.end.timestamp(), s.start_value, s.final_value
        sched_i[i] = SHAPE_CODES[s.shape], s.steps
    return sched_f, sched_i


def time_grid(cs: Sequence[Constraint]) -> np.ndarray:
    """Sorted times at which sums of the schedules of ``cs`` reach their extremes.

    Every start, every stair (and a little past it, where the stair's own rounding may
    still give the previous value) and a little before every end; with a linear schedule
    among them, also a little before every breakpoint (the left limit of a slope cut off
    there). "A little" is 1 ms, or half the shortest stair or span of ``cs`` when that is
    shorter, so that a sub-millisecond ramp is still looked at inside.
    """
    near = _NEAR
    for c in cs:
        t0, t1 = c.schedule.start.timestamp(), c.schedule.end.timestamp()
        stairs = c.schedule.steps if c.schedule.shape == "step" else 1
        near = min(near, 0.5 * (t1 - t0) / stairs)
    parts = []
    for c in cs:
        t0, t1 = c.schedule.start.timestamp(), c.schedule.end.timestamp()
        parts.append(np.array([t0, t1 - near]))
        if c.schedule.shape == "step":
            stairs = t0 + (t1 - t0) * np.arange(1, c.schedule.steps) / c.schedule.steps
            parts += [stairs, stairs + near]
    grid = np.concatenate(parts) if parts else np.zeros(0)
    if any(c.schedule.shape == "linear" for c in cs):
        grid = np.concatenate([grid, grid - near])
    return np.unique(grid)


def _maximal(candidates: dict[int, dict[str, str]]) -> dict[int, dict[str, str]]:
    """The masks not contained in another one (with their requests)."""
    order = sorted(candidates, key=lambda m: -m.bit_count())
    kept = np.zeros(len(order), dtype=np.uint64)
    n = 0
    out: dict[int, dict[str, str]] = {}
    for mask in order:
        m = np.uint64(mask)
        if n and bool(np.any((kept[:n] & m) == m)):
            continue
        kept[n] = m
        n += 1
        out[mask] = candidates[mask]
    return out


def scope_classes(cs: Sequence[Constraint]) -> list[tuple[int, dict[str, str]]]:
    """Maximal sets of ``cs`` (bitmasks over positions) that one request can fall under,
    each with such a request (attribute → a value its scopes name).

    Raises ``ValueError`` past :data:`MAX_SCOPE_CLASSES`.
    """
    classes: dict[int, dict[str, str]] = {(1 << len(cs)) - 1: {}}
    for attr in sorted({a for c in cs for a in c.scope}):
        free = sum(1 << i for i, c in enumerate(cs) if attr not in c.scope)
        by_value: dict[str, int] = {}
        for i, c in enumerate(cs):
            for v in c.scope.get(attr, ()):
                by_value[v] = by_value.get(v, free) | (1 << i)
        # a value no scope names only matches ``free``: contained in every named value's set
        signatures: dict[int, dict[str, str]] = {}
        for v in sorted(by_value):
            signatures.setdefault(by_value[v], {attr: v})
        values = _maximal(signatures)
        if len(classes) * len(values) > 64 * MAX_SCOPE_CLASSES:
            classes = {}  # past the bound whatever the pruning: refused below
            break
        following: dict[int, dict[str, str]] = {}
        for mask, request in classes.items():
            for sig, pick in values.items():
                following.setdefault(mask & sig, {**request, **pick})
        classes = _maximal(following)
        if len(classes) > MAX_SCOPE_CLASSES:
            break
    if not classes or len(classes) > MAX_SCOPE_CLASSES:
        names = sorted(c.name for c in cs if c.scope)
        raise ValueError(
            f"the scopes of constraints {brief(names)} split requests into more than "
            f"{MAX_SCOPE_CLASSES} classes: too entangled to verify; use fewer overlapping "
            "scopes"
        )
    return list(classes.items())


def _live(c: Constraint, t: float) -> bool:
    return c.schedule.start.timestamp() <= t < c.schedule.end.timestamp()


def _members(cs: Sequence[Constraint], mask: int) -> list[Constraint]:
    return [c for i, c in enumerate(cs) if mask >> i & 1]


def _rows(found: list[tuple[int, dict[str, str]]], k: int) -> np.ndarray:
    """Class bitmasks as a bool (M, k) table."""
    return np.array([[mask >> i & 1 for i in range(k)] for mask, _ in found], dtype=np.bool_)


def _shown(request: dict[str, str]) -> str:
    return brief(request) if request else "of every scope"


def check_floor_sums(constraints: Sequence[Constraint]) -> None:
    """Raise ``ValueError`` if floors can sum past 1 for some request at some time.

    Per target group the floor is the larger of its group floor and the sum of its cold
    floors; arm floors count as their own group (their group is only known to the
    registry), so the check is conservative there.
    """
    floors = [c for c in constraints if c.kind == "floor"]
    keys: dict[str, int] = {}
    for c in floors:
        keys.setdefault(_key(c), len(keys))
    found = [
        (mask, request)
        for mask, request in scope_classes(floors)
        if sum(max(c.schedule.start_value, c.schedule.final_value) for c in _members(floors, mask))
        > 1.0 + _TOL
    ]
    if not found:
        return
    sched_f, sched_i = _table(floors)
    union = 0
    for mask, _ in found:
        union |= mask
    times = time_grid(_members(floors, union))
    ti, m, total = kf.first_floor_excess(
        times, sched_f, sched_i, np.array([keys[_key(c)] for c in floors], dtype=np.int64),
        np.array([_group(c) is not None for c in floors]), _rows(found, len(floors)), len(keys),
        _TOL,
    )  # fmt: skip
    if ti < 0:
        return
    t = float(times[ti])
    mask, request = found[m]
    live = [c.name for c in _members(floors, mask) if c.schedule.value_at(t) > 0.0]
    raise ValueError(
        f"floors {live} sum to {total:.3f} > 1 at {_fmt(t)} for requests {_shown(request)}"
    )


def _group(c: Constraint) -> str | None:
    """The group a constraint targets as a whole (None for arm and cold-arm targets)."""
    return getattr(c.target, "group", None)


def _key(c: Constraint) -> str:
    """What a floor counts against: its group, or its arm (whose group is not known here)."""
    t = c.target
    return getattr(t, "group", None) or getattr(t, "cold_in_group", None) or f"arm:{t.arm}"


def _common_request(a: Constraint, b: Constraint) -> dict[str, str] | None:
    """A request under both scopes, or None when they are disjoint."""
    request = {}
    for attr in sorted(set(a.scope) | set(b.scope)):
        shared = set(a.scope.get(attr) or b.scope[attr]) & set(b.scope.get(attr) or a.scope[attr])
        if not shared:
            return None
        request[attr] = min(shared)
    return request


def _within(
    floor: Constraint,
    cap: Constraint,
    group_of_arm: Callable[[str], str | None],
    arms_of_group: Callable[[str], frozenset[str] | None],
) -> bool:
    """Whether every arm ``floor`` may push traffic to is also under ``cap``: the same
    target, a group cap over a cold-arm floor in that group or over an arm of it, or an
    arm cap over a floor on a group (or its cold arms) whose only arm it is."""
    if floor.target == cap.target:
        return True
    group = _group(cap)
    t = floor.target
    if group is None:
        arm = getattr(cap.target, "arm", None)
        floored = _group(floor) or getattr(t, "cold_in_group", None)
        return arm is not None and floored is not None and arms_of_group(floored) == {arm}
    cold = getattr(t, "cold_in_group", None)
    if cold is not None:
        return bool(cold == group)
    arm = getattr(t, "arm", None)
    return arm is not None and group_of_arm(arm) == group


def _no_group(arm: str) -> None:
    return None


def _no_arms(group: str) -> None:
    return None


def check_caps_above_floors(
    constraints: Sequence[Constraint],
    group_of_arm: Callable[[str], str | None] = _no_group,
    arms_of_group: Callable[[str], frozenset[str] | None] = _no_arms,
) -> None:
    """Raise ``ValueError`` if a cap is below a floor inside its target (the same target,
    cold arms or an arm of a capped group, or a group of one arm under an arm cap) for some
    request under both scopes while the cap is live: whenever such a floor's arms are
    offered, both cannot hold.

    ``group_of_arm`` names an arm's group where the registry is known (None if unknown);
    ``arms_of_group`` the ids of a group's arms where they are fixed for good (None if
    unknown or open to new arms, as a serving registry is).
    """
    pairs = [
        (cap, floor, request)
        for cap in constraints
        if cap.kind == "cap"
        for floor in constraints
        if floor.kind == "floor" and _within(floor, cap, group_of_arm, arms_of_group)
        and (request := _common_request(cap, floor)) is not None
    ]  # fmt: skip
    for cap, floor, request in pairs:
        sched_f, sched_i = _table([cap, floor])
        times = time_grid([cap, floor])
        ti = kf.first_below(times, sched_f, sched_i, 0, 1)
        if ti >= 0:
            t = float(times[ti])
            where = "the same target" if floor.target == cap.target else "arms it caps"
            raise ValueError(
                f"cap {cap.name!r} ({cap.schedule.value_at(t):.3f}) is below floor "
                f"{floor.name!r} ({floor.schedule.value_at(t):.3f}) on {where} at "
                f"{_fmt(t)} for requests {_shown(request)}"
            )


def check_caps_cover(constraints: Sequence[Constraint], groups: Sequence[str]) -> None:
    """Raise ``ValueError`` if, for some request and time, every group of the catalogue is
    capped and the caps sum below 1: then no request holding two groups can be served
    within its caps.

    Caps that leave some group free are feasible for requests holding that group; a
    request whose candidates all fall in capped groups is served by exact renormalisation
    (the last projection wins), as documented.
    """
    catalogue = sorted(set(groups))
    caps = [c for c in constraints if c.kind == "cap" and _group(c) in catalogue]
    index = {g: i for i, g in enumerate(catalogue)}
    if len(catalogue) < 2 or len({_group(c) for c in caps}) < len(catalogue):
        return
    found = []
    for mask, request in scope_classes(caps):
        lowest: dict[str, float] = {}
        for c in _members(caps, mask):
            g, s = str(_group(c)), c.schedule
            lowest[g] = min(lowest.get(g, 1.0), s.start_value, s.final_value)
        if len(lowest) == len(catalogue) and sum(lowest.values()) < 1.0 - _TOL:
            found.append((mask, request))
    if not found:
        return
    sched_f, sched_i = _table(caps)
    times = time_grid(caps)
    ti, m, total = kf.first_cap_shortfall(
        times, sched_f, sched_i,
        np.array([index[str(_group(c))] for c in caps], dtype=np.int64),
        _rows(found, len(caps)), len(catalogue), _TOL,
    )  # fmt: skip
    if ti < 0:
        return
    t = float(times[ti])
    mask, request = found[m]
    live = [c.name for c in _members(caps, mask) if _live(c, t)]
    raise ValueError(
        f"caps {live} cap every group {brief(catalogue)} and sum to {total:.3f} < 1 at "
        f"{_fmt(t)} for requests {_shown(request)}: no request holding two groups can be "
        "served within them"
    )
