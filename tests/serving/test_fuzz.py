"""Seeded fuzzing of the public :class:`Allocator` API, every family, with and without contracts.

Each example builds an allocator and drives it with a sequence of calls mixing valid and
malformed arguments (junk types, unknown or repeated ids, NaN, infinities, absurd but finite
numbers, bad times, forged deltas). After every call:

- a rejection is an :class:`AllocatorError` and the whole snapshot state (model arrays,
  pending table, contract queues, clocks, id counter; everything but the counters) hashes
  exactly as before the call;
- an accepted call leaves no NaN or infinity in any float array of the state;

and at the end valid traffic is still decided and learned. The default run makes about
4,800 calls over the nine families; ``-m slow`` about 21,000.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocator import AllocatorError
from allocator.kernels import constraints as kc
from allocator.serving import Allocator, UpdateStatus

FAMILIES = (
    "beta_bernoulli", "normal_gamma", "linear_gaussian", "shared_linear", "logistic",
    "shared_logistic", "hybrid_linear", "hybrid_logistic", "factored_value",
)  # fmt: skip
SHARED = ("shared_linear", "shared_logistic", "hybrid_linear", "hybrid_logistic", "factored_value")
#: families learning the events themselves: a valid outcome is a consistent event record
EVENTS = ("factored_value",)
CONTEXTUAL = ("linear_gaussian", "logistic", *SHARED)
BINARY = ("beta_bernoulli", "logistic", "shared_logistic", "hybrid_logistic")
T0 = 1_760_000_000.0
FEATURES = ("age", "tier", "referral")
MAX_CALLS = 14


def allocator_config(kind: str, contracts: bool) -> dict[str, Any]:
    policy: dict[str, Any] = {"kind": kind}
    arms: list[dict[str, Any]] = [{"id": p, "group": p} for p in ("taobao", "douyin")]
    arms += [{"id": f"merchant:{i}", "group": "mini_shop"} for i in range(5)]
    if kind in ("linear_gaussian", "logistic"):
        policy["n_features"] = len(FEATURES)
    if kind in SHARED:
        policy.update(n_context_features=len(FEATURES), n_arm_features=2)
        for i, arm in enumerate(arms):
            arm["features"] = [1.0, i / len(arms)]
    schedule = {"start": "2025-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    constraints = [
        {"name": "taobao_floor", "kind": "floor", "target": {"group": "taobao"},
         "schedule": {**schedule, "start_value": 0.2}},
        {"name": "mini_shop_cap", "kind": "cap", "target": {"group": "mini_shop"},
         "schedule": {**schedule, "start_value": 0.6}},
        {"name": "new_shops", "kind": "floor", "target": {"cold_in_group": "mini_shop"},
         "schedule": {**schedule, "start_value": 0.05}},
    ]  # fmt: skip
    objective = {"order": 1.0, "gmv": 0.0 if kind in BINARY else 0.01}
    if kind in EVENTS:
        policy["objective"] = objective
    return {
        "engine": {"policy": policy, "objective": objective},
        "arms": arms,
        "constraints": {"constraints": constraints if contracts else []},
        "serving": {"reward_wait_s": 600.0, "time": "event", "pending_capacity": 64,
                    "feature_names": list(FEATURES) if kind in CONTEXTUAL else None},
    }  # fmt: skip


def state_hash(alloc: Allocator) -> str:
    """Everything a snapshot holds except the counters (a rejection is counted, by design)."""
    arrays, meta = alloc.snapshot_state()
    meta = {k: v for k, v in meta.items() if k != "counters"}
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=repr).encode())
    for name in sorted(arrays):
        value = arrays[name]
        digest.update(f"{name}|{value.dtype}|{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def _worst_unset(st_f: np.ndarray) -> np.ndarray:
    ok = np.zeros(st_f.shape, dtype=bool)
    ok[:, kc.S_WORST] = st_f[:, kc.S_WORST] == np.inf
    return ok


#: Sentinels by design: a contract's first-seen time of an arm not seen yet is NaN, its worst
#: window share is +inf before its first window, and the latest decision time is -inf
#: before the first decision.
SENTINELS = {"constraints.first_seen": np.isnan, "constraints.st_f": _worst_unset}


def nonfinite_arrays(alloc: Allocator) -> list[str]:
    arrays, meta = alloc.snapshot_state()
    bad = []
    for name, value in arrays.items():
        if value.dtype.kind not in "fc":
            continue
        ok = np.isfinite(value) | (SENTINELS[name](value) if name in SENTINELS else False)
        if not ok.all():
            bad.append(name)
    if not (
        math.isfinite(meta["last_t"]) or (meta["last_t"] == -math.inf and meta["next_id"] == 0)
    ):
        bad.append("last_t")
    return bad


# ------------------------------------------------------------------------- values
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(max_magnitude=1e3),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2),
    st.sampled_from([object(), np.array([[1, 2]]), np.array(["x"]), (1,), {1, 2}, ...]),
)
ABSURD = st.sampled_from(
    [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e150, 1e7, -1e7, 1e-320, 2**64, -(2**63)]
)


class Driver:
    """Draws calls against one allocator: valid, or with one argument corrupted."""

    def __init__(self, kind: str, contracts: bool, data: st.DataObject) -> None:
        self.kind = kind
        self.contracts = contracts
        self.data = data
        self.alloc = Allocator(allocator_config(kind, contracts), seed=7)
        self.ids: list[str] = self.alloc.registry.all_ids()
        self.retired: set[str] = set()
        self.issued: list[str] = []
        self.t = T0
        self.new_arm = 0

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def corrupt(self, *arguments: str) -> str | None:
        """Which argument of the next call to corrupt (None: a valid call, half the time)."""
        return self.draw(st.one_of(st.none(), st.sampled_from(arguments)))

    # ------------------------------------------------------------- arguments
    def active(self) -> list[str]:
        return [i for i in self.ids if i not in self.retired]

    def candidates(self, bad: bool) -> Any:
        active = self.active()
        pick = st.lists(st.sampled_from(active), min_size=1, max_size=len(active), unique=True)
        if not bad:
            return self.draw(st.one_of(
                pick,
                pick.map(np.array),
                pick.map(lambda ids: np.array([self.ids.index(i) for i in ids], dtype=np.int64)),
            ))  # fmt: skip
        return self.draw(st.one_of(
            JUNK,
            st.just([]),
            pick.map(lambda ids: ids + ids[:1]),
            pick.map(lambda ids: [*ids, "no-such-arm"]),
            pick.map(lambda ids: [*ids, *sorted(self.retired)[:1], "no-such-arm"]),
            pick.map(lambda ids: [*ids, 3]),
            pick.map(lambda ids: [ids]),
            st.lists(st.integers(-5, 50), min_size=1, max_size=4).map(np.array),
        ))  # fmt: skip

    def context(self, bad: bool) -> Any:
        d = len(FEATURES)
        good = st.floats(-3, 3)
        if not bad:
            if self.kind not in CONTEXTUAL:
                return None
            return self.draw(st.one_of(
                st.lists(good, min_size=d, max_size=d),
                st.lists(good, min_size=d, max_size=d).map(np.array),
                st.fixed_dictionaries({}, optional=dict.fromkeys(FEATURES, good)),
            ))  # fmt: skip
        absurd = st.lists(good, min_size=d - 1, max_size=d - 1).flatmap(
            lambda x: ABSURD.map(lambda v: [*x, v])
        )
        return self.draw(st.one_of(
            JUNK,
            absurd,
            st.lists(good, min_size=d, max_size=d).map(lambda x: np.array(x) + 1j),
            st.lists(good, min_size=0, max_size=d + 2).filter(lambda x: len(x) != d),
            st.dictionaries(st.sampled_from(FEATURES), st.one_of(ABSURD, JUNK), min_size=1),
            st.just({"nope": 1.0}),
        ))  # fmt: skip

    def attrs(self, bad: bool) -> Any:
        if not bad:
            return self.draw(st.sampled_from([None, {}, {"category": "apparel"}]))
        return self.draw(st.one_of(JUNK, st.just({"category": 3}), st.just({3: "x"})))

    def timestamp(self, bad: bool) -> Any:
        if not bad:
            return self.t + self.draw(st.floats(0.0, 30.0))
        return self.draw(st.one_of(
            JUNK,
            ABSURD,
            st.sampled_from([self.t - 1e6, self.t + 1e9, 1e12, -1.0, "2026-01-01T00:00:00Z"]),
        ))  # fmt: skip

    def decision_id(self, bad: bool) -> Any:
        if not bad and self.issued:
            return self.draw(st.sampled_from(self.issued))
        return self.draw(st.one_of(st.text(max_size=6), JUNK))

    def outcome(self, bad: bool) -> Any:
        if not bad and self.kind in EVENTS:
            click, order = self.draw(st.sampled_from([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]))
            gmv = self.draw(st.floats(0, 500)) if order else 0.0
            return {"click": click, "order": order, "gmv": gmv}
        if not bad:
            return self.draw(st.fixed_dictionaries(
                {"order": st.sampled_from([0.0, 1.0])},
                optional={"gmv": st.floats(0, 500), "click": st.just(1.0)},
            ))  # fmt: skip
        field = st.sampled_from(["click", "order", "gmv"])
        return self.draw(st.one_of(
            JUNK,
            st.dictionaries(field, st.one_of(ABSURD, JUNK, st.floats(-5, -1e-9)), min_size=1),
            st.just({"click": 1.0}),
            st.just({"order": 1.0, "refund": 1.0}),
        ))  # fmt: skip

    def request(self, bad: str | None) -> dict[str, Any]:
        return {
            "candidates": self.candidates(bad == "candidates"),
            "context": self.context(bad == "context"),
            "attrs": self.attrs(bad == "attrs"),
            "timestamp": self.timestamp(bad == "timestamp"),
        }

    def delta(self, bad: bool) -> Any:
        other = Allocator(allocator_config(self.kind, self.contracts), seed=11)
        active = self.active()
        for k in range(3):
            x = [0.5] * len(FEATURES) if self.kind in CONTEXTUAL else None
            d = other.decide([active[k % len(active)]], x, timestamp=T0 + k)
            other.update(d.decision_id, {"click": 1.0, "order": 1.0, "gmv": 10.0})
        delta = other.export_delta()
        if not bad:
            return delta
        how = self.draw(st.sampled_from(
            ["nan", "inf", "negative", "huge", "shape", "drop", "extra", "dtype", "junk"]
        ))  # fmt: skip
        if how == "junk":
            return self.draw(JUNK)
        name = self.draw(st.sampled_from(sorted(delta)))
        value = delta[name]
        if how in ("nan", "inf", "negative", "huge") and value.size and value.dtype.kind == "f":
            value = value.copy()
            value.flat[self.draw(st.integers(0, value.size - 1))] = {
                "nan": np.nan, "inf": np.inf, "negative": -5.0, "huge": 1e300}[how]  # fmt: skip
        elif how == "shape":
            value = np.concatenate([value.ravel(), value.ravel()[:1]])
        elif how == "dtype":  # the family tag (a string) becomes a number
            value = np.array(7) if value.dtype.kind == "U" else value.astype(np.complex128)
        delta = {**delta, name: value}
        if how == "drop":
            del delta[name]
        if how == "extra":
            delta["extra"] = np.zeros(3)
        return delta

    # ------------------------------------------------------------------ calls
    def call(self) -> tuple[str, Any]:
        op = self.draw(st.sampled_from(
            ["decide"] * 5 + ["decide_many"] * 2 + ["update"] * 4
            + ["update_many", "add_arms", "retire_arms", "merge", "expire"]
        ))  # fmt: skip
        a = self.alloc
        if op == "decide":
            bad = self.corrupt("candidates", "context", "attrs", "timestamp", "request_id")
            req = self.request(bad)
            rid = self.draw(JUNK.filter(lambda v: v is not None)) if bad == "request_id" else "q"
            return op, lambda: a.decide(**req, request_id=rid)
        if op == "decide_many":
            bad = self.corrupt("candidates", "context", "attrs", "timestamp", "requests")
            if bad == "requests":
                reqs = self.draw(st.one_of(JUNK, st.just([{"candidates": ["taobao"], "t": 1}])))
            else:
                reqs = [self.request(None), self.request(bad), self.request(None)]
            return op, lambda: a.decide_many(reqs)
        if op == "update":
            bad = self.corrupt("decision_id", "outcome", "timestamp")
            ts = self.timestamp(bad == "timestamp") if self.draw(st.booleans()) else None
            args = (self.decision_id(bad == "decision_id"), self.outcome(bad == "outcome"), ts)
            return op, lambda: a.update(*args)
        if op == "update_many":
            bad = self.corrupt("decision_id", "outcome", "pairs")
            pairs: Any = [
                (self.decision_id(bad == "decision_id" and i == 1),
                 self.outcome(bad == "outcome" and i == 1))
                for i in range(3)
            ]  # fmt: skip
            if bad == "pairs":
                pairs = self.draw(st.one_of(JUNK, st.just([*pairs, ("x",)])))
            return op, lambda: a.update_many(pairs)
        if op == "add_arms":
            bad = self.corrupt("ids", "group", "features")
            self.new_arm += 1
            ids: Any = [f"new:{self.new_arm}", f"new:{self.new_arm}b"]
            if bad == "ids":
                ids = self.draw(st.one_of(JUNK, st.just(self.ids[:1]), st.just(["a", "a"])))
            group: Any = self.draw(st.sampled_from(["mini_shop", "newgroup"]))
            if bad == "group":
                group = self.draw(st.one_of(JUNK, st.sampled_from(["", "taobao"])))
            features: Any = np.ones((2, 2)) if self.kind in SHARED else None
            if bad == "features":
                features = self.draw(st.one_of(
                    JUNK, st.just(np.full((2, 2), np.nan)), st.just(np.ones((3, 2))),
                    st.just(np.full((2, 2), 1e300)),
                ))  # fmt: skip
            if bad == "ids" and self.draw(st.booleans()):
                ids = [self.ids[0], "fresh-id"]  # an active id among new ones
            return op, lambda: a.add_arms(ids, group, features)
        if op == "retire_arms":
            bad = self.corrupt("ids")
            merchants = [i for i in self.active() if i.startswith(("merchant", "new"))][:1]
            ids = (
                self.draw(st.one_of(JUNK, st.just([*merchants, "no-such-arm"])))
                if bad
                else merchants
            )
            return op, lambda: a.retire_arms(ids)
        if op == "merge":
            delta = self.delta(self.corrupt("delta") is not None)
            return op, lambda: a.merge(delta)
        now = self.draw(st.one_of(JUNK, ABSURD)) if self.corrupt("now") else self.t + 700.0
        return op, lambda: a.expire(now)

    def record(self, op: str, result: Any) -> None:
        """Track what valid calls changed (issued ids, the clock, the catalogue)."""
        if op == "decide":
            self.issued.append(result.decision_id)
        if op == "decide_many":
            self.issued.extend(result.decision_ids)
        self.ids = self.alloc.registry.all_ids()
        active = self.alloc.registry.active
        self.retired = {i for k, i in enumerate(self.ids) if not active[k]}
        self.t = max(self.t, self.alloc.snapshot_state()[1]["last_t"])


def drive(kind: str, contracts: bool, data: st.DataObject) -> None:
    driver = Driver(kind, contracts, data)
    alloc = driver.alloc
    for _ in range(data.draw(st.integers(1, MAX_CALLS))):
        op, call = driver.call()
        before = state_hash(alloc)
        try:
            result = call()
        except AllocatorError:
            assert state_hash(alloc) == before, f"a rejected {op} changed the state"
        except Exception as err:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{op} raised an untyped {type(err).__name__}: {err}")
        else:
            driver.record(op, result)
            assert nonfinite_arrays(alloc) == [], f"{op} left NaN/inf in the state"
    # valid traffic still works
    x = [0.1, 0.2, 0.3] if kind in CONTEXTUAL else None
    d = alloc.decide(driver.active()[:3], x, timestamp=driver.t + 1.0)
    outcome = {"click": 1.0, "order": 1.0, "gmv": 80.0} if kind in EVENTS else {"order": 1.0}
    assert alloc.update(d.decision_id, outcome) is UpdateStatus.APPLIED
    assert nonfinite_arrays(alloc) == []


@pytest.mark.parametrize(
    "examples",
    [pytest.param(25, id="quick"), pytest.param(170, id="long", marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("contracts", [False, True], ids=["plain", "contracts"])
@pytest.mark.parametrize("kind", FAMILIES)
def test_fuzzed_calls_are_typed_atomic_and_finite(kind, contracts, examples):
    run = settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(given(data=st.data())(lambda data: drive(kind, contracts, data)))
    run()
