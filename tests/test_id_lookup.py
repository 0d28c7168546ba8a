"""Candidate ids resolved by the compiled id table, in every accepted form, against the
dict lookup it replaced (``tests/naive.py``): same indices, same errors, same decisions."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import ArmRegistry, IntIds, InvalidInputError, SnapshotError, UnknownArmError
from allocator.serving import Allocator
from tests.naive import dict_lookup
from tests.serving.helpers import T0, config

WIDE = ["商户:1", "émile", "a\u0301", "x" * 300, "\U0001f600"]


def _registry(ids: list[str], retired: list[str]) -> ArmRegistry:
    reg = ArmRegistry(capacity=4)
    for lo in range(0, len(ids), 97):  # many small adds: the table is rebuilt as it grows
        reg.add(ids[lo : lo + 97], "g")
    reg.retire(retired)
    return reg


def _forms(cands: list[str]) -> list:
    arr = np.array(cands)
    out = [cands, tuple(cands), arr, arr.astype(arr.dtype.newbyteorder(">"))]  # any byte order
    if all(c.lstrip("-").isdigit() and str(int(c)) == c for c in cands):
        out.append(IntIds(np.array([int(c) for c in cands], dtype=np.int64)))
    return out


@pytest.mark.parametrize("kind", ["latin", "wide", "integers"])
@pytest.mark.heavy
def test_every_form_matches_the_dict_lookup(kind):
    rng = np.random.default_rng(3)
    n = 3000
    if kind == "integers":
        ids = [str(v) for v in rng.choice(10**12, n, replace=False) - 10**11]
        ids[:2] = [str(np.iinfo(np.int64).min), str(np.iinfo(np.int64).max)]
    else:
        ids = [f"merchant:{i}" for i in range(n)] + (WIDE if kind == "wide" else [])
    retired = [ids[i] for i in rng.choice(len(ids), 40, replace=False)]
    reg = _registry(ids, retired)
    assert reg._chars.dtype == (np.uint32 if kind == "wide" else np.uint8)
    active = reg.active[: reg.n_arms]
    live = [a for a in ids if a not in set(retired)]
    for _ in range(50):
        cands = [live[i] for i in rng.choice(len(live), 200, replace=False)]
        want = dict_lookup(ids, active, cands)
        for form in _forms(cands):
            np.testing.assert_array_equal(reg.lookup(form), want)
    assert reg.all_ids() == ids
    again = ArmRegistry.from_arrays(reg.to_arrays())
    np.testing.assert_array_equal(again.lookup(np.array(live)), reg.lookup(live))


@pytest.mark.parametrize(
    "cands",
    [
        ["7", "12", "99"],  # unknown
        ["7", "5", "12"],  # retired
        ["7", "12", "5", "99"],  # retired before unknown
        ["99", "5"],  # unknown before retired
        ["7", "-0"],  # not a canonical spelling of an int: unknown
    ],
)
def test_unknown_and_retired_raise_as_the_dict_lookup_did_for_every_form(cands):
    reg = ArmRegistry()
    reg.add([str(i) for i in range(20)], "g")
    reg.retire(["5"])
    with pytest.raises(KeyError) as ref:
        dict_lookup(reg.all_ids(), reg.active, cands)
    kind, arm_id, pos = ref.value.args[0]
    text = (
        f"unknown arm id '{arm_id}' at position {pos}" if kind == "unknown"
        else f"arm '{arm_id}' at position {pos} is retired"
    )  # fmt: skip
    forms = _forms(cands)
    if "-0" not in cands:
        forms.append(IntIds([int(c) for c in cands]))
    for form in forms:
        with pytest.raises(UnknownArmError) as err:
            reg.lookup(form)
        assert err.value.args[0] == text, type(form)


@pytest.mark.parametrize(
    ("cands", "text"),
    [
        (["a", 7], "unknown arm id 7 at position 1"),
        (["a", "b\x00c"], "unknown arm id 'b\\x00c' at position 1"),
        (["a", ""], "unknown arm id '' at position 1"),
        (["a", "\u4e00"], "unknown arm id '\u4e00' at position 1"),
        (["zz", "a\x00"], "unknown arm id 'zz' at position 0"),
    ],
)
def test_inputs_the_joined_form_cannot_carry_get_the_same_errors(cands, text):
    reg = ArmRegistry()
    reg.add(["a", "b"], "g")
    with pytest.raises(UnknownArmError) as err:
        reg.lookup(cands)
    assert err.value.args[0] == text


def test_bad_registrations_and_snapshots_are_refused():
    reg = ArmRegistry()
    with pytest.raises(InvalidInputError, match=r"ids\[1\] = 'b\\x00' contains a NUL"):
        reg.add(["a", "b\x00"], "g")
    assert reg.n_arms == 0
    with pytest.raises(InvalidInputError, match=r"ids\[1\] = 'b\\udc00': expected UTF-8"):
        reg.add(["a", "b\udc00"], "g")  # a lone surrogate: no log part could hold it
    assert reg.n_arms == 0
    reg.add(["a", "b"], "g")
    bad = [("ids", ["a", "a"]), ("ids", ["a", ""]), ("ids", ["a", "b\x00c"]),
           ("ids", ["a", "\ud800"]), ("groups", ["g\udfff"]), ("groups", ["g", "g"])]  # fmt: skip
    for name, values in bad:
        arrays = reg.to_arrays()
        arrays[f"registry.{name}"] = np.array(values)
        with pytest.raises(SnapshotError, match="repeated or empty ids or groups"):
            ArmRegistry.from_arrays(arrays)
    with pytest.raises(InvalidInputError, match="1-d integer array"):
        IntIds(np.array([1.5]))
    with pytest.raises(InvalidInputError, match="fit in int64"):
        IntIds(np.array([2**63], dtype=np.uint64))


@pytest.mark.parametrize("kind", ["beta_bernoulli", "shared_linear"])
@pytest.mark.heavy
def test_id_forms_and_indices_give_identical_decisions_and_errors(kind):
    """Same seed, same requests: candidates as a list of str, a numpy string array,
    IntIds (an all-integer catalogue) and dict-resolved indices decide identically; a
    duplicate id is refused with the index path's message in every form."""
    cfg = config(kind, n_merchants=300)
    data = cfg.model_dump()
    for i, arm in enumerate(data["arms"]):
        if arm["group"] == "mini_shop":
            arm["id"] = str(10**9 + i)
    allocs = [Allocator(data, seed=11) for _ in range(4)]
    ids = allocs[0].registry.all_ids()
    rng = np.random.default_rng(5)
    x = [1.0, 0.5, 0.0] if kind == "shared_linear" else None
    for r in range(300):
        cands = [ids[i] for i in rng.choice(len(ids) - 2, 30, replace=False) + 2]
        idx = dict_lookup(ids, allocs[0].registry.active, cands)
        forms = [idx, cands, np.array(cands), IntIds([int(c) for c in cands])]
        got = [a.decide(f, x, timestamp=T0 + r) for a, f in zip(allocs, forms, strict=True)]
        assert len({(d.arm_index, d.arm_id, d.propensity) for d in got}) == 1
        reward = {"order": float(rng.random() < 0.3)}
        for a, d in zip(allocs, got, strict=True):
            a.update(d.decision_id, reward, timestamp=T0 + r)
    dup = [*ids[5:8], ids[6]]
    dup_idx = dict_lookup(ids, allocs[0].registry.active, dup)
    forms = [dup_idx, dup, np.array(dup), IntIds([int(c) for c in dup])]
    for a, form in zip(allocs, forms, strict=True):
        with pytest.raises(InvalidInputError, match=r"candidates\[3\] = 6 appears twice"):
            a.decide(form, x, timestamp=T0 + 400)
