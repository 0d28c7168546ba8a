"""A validated :class:`ConstraintSet` resolved against the arm registry into flat arrays.

Targets become group codes or arm indices (unknown ones are a :class:`ConfigError` naming
the constraint); caps that together cap every group of the catalogue below 1, and group
caps below a floor on an arm of that group (known only here), are refused; scopes become
a boolean table over request-attribute value codes, so the kernel tests a request's scope
with a few array lookups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from allocator.constraints.config import (
    SHAPE_CODES,
    ArmTarget,
    ColdArmsTarget,
    Constraint,
    ConstraintSet,
    GroupTarget,
)
from allocator.constraints.feasibility import check_caps_above_floors, check_caps_cover
from allocator.errors import ConfigError, InvalidInputError, brief
from allocator.kernels import constraints as kc
from allocator.registry import ArmRegistry

KIND_CODES = {"floor": kc.FLOOR, "cap": kc.CAP, "tilt": kc.TILT}


@dataclass(frozen=True)
class CompiledConstraints:
    """Definition arrays, one row per constraint in priority order (highest first)."""

    spec: ConstraintSet
    order: tuple[Constraint, ...]
    attrs: tuple[str, ...]
    vocab: tuple[dict[str, int], ...]
    def_i: np.ndarray  # int64 (K, N_DEF_I), columns kc.I_*
    def_f: np.ndarray  # float64 (K, N_DEF_F), columns kc.F_*
    allowed: np.ndarray  # bool (K, A, V)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.order]

    def encode(self, attrs: Mapping[str, str] | None, out: np.ndarray) -> np.ndarray:
        """Request attribute values → codes (0 = a value no scope mentions).

        Every key and value must be a string, named or not by a scope: they are logged.
        """
        out[:] = 0
        if attrs is None:
            return out
        check_attrs(attrs)
        for i, name in enumerate(self.attrs):
            value = attrs.get(name)
            out[i] = 0 if value is None else self.vocab[i].get(value, 0)
        return out


def check_attrs(attrs: object) -> None:
    """Raise unless ``attrs`` is a mapping of strings to strings."""
    if not isinstance(attrs, Mapping):
        raise InvalidInputError(f"attrs must be a mapping of strings, got {type(attrs).__name__}")
    for name, value in attrs.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidInputError(f"attrs[{brief(name)}] = {brief(value)}: expected a string")


def _target(c: Constraint, registry: ArmRegistry) -> tuple[int, int]:
    t = c.target
    try:
        if isinstance(t, GroupTarget):
            return kc.TARGET_GROUP, registry.group_code(t.group)
        if isinstance(t, ArmTarget):
            return kc.TARGET_ARM, int(registry.lookup([t.arm], allow_retired=True)[0])
        assert isinstance(t, ColdArmsTarget)
        return kc.TARGET_COLD, registry.group_code(t.cold_in_group)
    except KeyError as err:
        raise ConfigError(f"constraint {c.name!r}: unknown target: {err}") from None


def _arm_group(registry: ArmRegistry, arm: str) -> str | None:
    """The group of arm id ``arm`` (None if unknown: :func:`_target` names it)."""
    try:
        return registry.group_of(int(registry.lookup([arm], allow_retired=True)[0]))
    except KeyError:
        return None


def compile_constraints(spec: ConstraintSet, registry: ArmRegistry) -> CompiledConstraints:
    """Resolve ``spec`` against ``registry``; order by priority (stable)."""
    try:
        check_caps_cover(spec.constraints, registry.groups)
        check_caps_above_floors(spec.constraints, lambda arm: _arm_group(registry, arm))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    order = tuple(sorted(spec.constraints, key=lambda c: -c.priority))
    k = len(order)
    attrs = tuple(sorted({a for c in order for a in c.scope}))
    vocab = tuple(
        {v: i + 1 for i, v in enumerate(sorted({v for c in order for v in c.scope.get(a, [])}))}
        for a in attrs
    )
    width = 1 + max((len(v) for v in vocab), default=0)
    allowed = np.ones((k, len(attrs), width), dtype=np.bool_)
    for ci, c in enumerate(order):
        for ai, a in enumerate(attrs):
            if a in c.scope:
                allowed[ci, ai, :] = False
                for v in c.scope[a]:
                    allowed[ci, ai, vocab[ai][v]] = True
    def_i = np.zeros((k, kc.N_DEF_I), dtype=np.int64)
    def_f = np.zeros((k, kc.N_DEF_F), dtype=np.float64)
    for ci, c in enumerate(order):
        tkind, tid = _target(c, registry)
        cold = c.target if isinstance(c.target, ColdArmsTarget) else None
        s = c.schedule
        def_i[ci, kc.I_KIND] = KIND_CODES[c.kind]
        def_i[ci, kc.I_TARGET_KIND] = tkind
        def_i[ci, kc.I_TARGET_ID] = tid
        def_i[ci, kc.I_N_MIN] = cold.n_min if cold else 0
        def_i[ci, kc.I_SHAPE] = SHAPE_CODES[s.shape]
        def_i[ci, kc.I_STEPS] = s.steps
        def_i[ci, kc.I_CARRY] = 1 if c.on_missing == "carry" else 0
        def_f[ci, kc.F_MAX_AGE] = cold.max_age_s if cold else 0.0
        def_f[ci, kc.F_T0] = s.start.timestamp()
        def_f[ci, kc.F_T1] = s.end.timestamp()
        def_f[ci, kc.F_V0] = s.start_value
        def_f[ci, kc.F_V1] = s.final_value
    return CompiledConstraints(spec, order, attrs, vocab, def_i, def_f, allowed)
