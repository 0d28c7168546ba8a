"""``Engine.resolve_many``: a batch's candidate lists resolved by one compiled lookup per
form give the indices, and raise the errors, of the request-by-request path."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import Engine, UnknownArmError
from allocator.config import BetaBernoulliConfig
from allocator.errors import AllocatorError
from allocator.registry import ArmRegistry
from tests.naive import dict_lookup
from tests.serving.helpers import ID_FORMS, id_form


def _engine() -> Engine:
    """An all-integer catalogue of 500 arms (every id form applies), 5 retired."""
    reg = ArmRegistry.build([str(10**6 + i) for i in range(500)], ["g"] * 500)
    engine = Engine(BetaBernoulliConfig(), None, reg)
    engine.retire_arms([str(10**6 + i) for i in (7, 70, 170, 270, 370)])
    return engine


def _one_by_one(engine: Engine, given: list) -> tuple[np.ndarray, np.ndarray]:
    cands = [engine.resolve(c) for c in given]
    return np.cumsum([0] + [c.shape[0] for c in cands]), np.concatenate(cands)


def _same_refusal(engine: Engine, given: list, kind: type[AllocatorError]) -> str:
    """The text of the error the batch lookup raises for ``given``, checked to be the one
    the one-by-one path raises (same type and text)."""
    with pytest.raises(kind) as want:
        _one_by_one(engine, given)
    with pytest.raises(type(want.value)) as got:
        engine.resolve_many(given)
    assert str(got.value) == str(want.value)
    return str(got.value)


def _batch(rng: np.random.Generator, n: int = 40) -> list[list[str]]:
    live = [i for i in range(500) if i % 100 != 70 and i != 7]
    return [
        [str(10**6 + live[i]) for i in rng.choice(len(live), rng.integers(1, 60), replace=False)]
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "given",
    [[np.array(5), np.array(6)], [5, 6], [None], [np.zeros((2, 2), dtype=np.int64)]],
)
def test_batches_of_non_lists_are_refused_as_one_by_one(given):
    _same_refusal(_engine(), given, AllocatorError)


@pytest.mark.parametrize("form", [*ID_FORMS, "indices", "mixed"])
def test_every_form_resolves_as_one_request_at_a_time(form):
    engine = _engine()
    rng = np.random.default_rng(1)
    for _ in range(5):
        ids = _batch(rng)
        if form == "indices":
            given = [engine.resolve(c) for c in ids]
        elif form == "mixed":
            given = [id_form(ID_FORMS[r % 4], c) for r, c in enumerate(ids)]
        else:
            given = [id_form(form, c) for c in ids]
        ptr, idx = engine.resolve_many(given)
        want_ptr, want_idx = _one_by_one(engine, given)
        np.testing.assert_array_equal(ptr, want_ptr)
        np.testing.assert_array_equal(idx, want_idx)
        assert ptr.dtype == idx.dtype == np.int64


@pytest.mark.parametrize("form", ID_FORMS)
@pytest.mark.parametrize(
    ("bad", "at"),
    [("1999999", 4), ("1000070", 0), ("1000007", 11)],  # unknown, retired, retired
)
def test_unknown_and_retired_ids_raise_for_the_request_the_one_by_one_path_names(form, bad, at):
    engine = _engine()
    ids = _batch(np.random.default_rng(2))
    ids[17][at] = bad
    ids[23][0] = "1999998"  # a later bad request is not the one named
    given = [id_form(form, c) for c in ids]
    assert f"'{bad}' at position {at}" in _same_refusal(engine, given, UnknownArmError)


@pytest.mark.parametrize(
    "odd",
    [
        ["1000001", 5],  # a non-str
        ["1000001", "10\x0002"],  # a NUL inside an id
        ["1000001", "\u4e00"],  # a codepoint no id has
        [],  # an empty list: the kernel refuses it, after every lookup
        "1000001",  # a str, not a list
    ],
)
@pytest.mark.parametrize("same_kind", [False, True])
def test_what_the_joined_form_cannot_carry_takes_the_one_by_one_path(odd, same_kind):
    engine = _engine()
    given: list = [["1000001", "1000002"], odd, ["1999999"]]
    if same_kind:  # every request in the odd form
        given = [odd, odd]
    try:
        want = _one_by_one(engine, given)
    except AllocatorError as err:
        with pytest.raises(type(err)) as got:
            engine.resolve_many(given)
        assert str(got.value) == str(err)
    else:
        got = engine.resolve_many(given)
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("stem", ["merchant:u-", "merchant:店-"])  # one byte, four a codepoint
@pytest.mark.parametrize("form", ["list", "tuple", "array"])
@pytest.mark.heavy
def test_long_ids_and_near_misses_resolve_and_fail_as_one_by_one_and_the_dict(stem, form):
    """Ids of 19 codepoints, one byte or four each (the lookup's word-wise comparison; a
    forged tag collision tests that comparison itself, in tests/kernels/test_idtable.py):
    the batch resolves them as the dict lookup does, and an unknown id differing from a
    known one in its first, a middle or its last codepoint is named exactly as request by
    request."""
    ids = [f"{stem}{i:08d}" for i in range(400)]
    engine = Engine(BetaBernoulliConfig(), None, ArmRegistry.build(ids, ["g"] * 400))
    rng = np.random.default_rng(4)
    batch = [[ids[i] for i in rng.choice(400, 50, replace=False)] for _ in range(30)]
    _, idx = engine.resolve_many([id_form(form, c) for c in batch])
    want = dict_lookup(ids, np.ones(400, dtype=bool), [a for c in batch for a in c])
    np.testing.assert_array_equal(idx, want)
    for at in (0, 9, len(ids[0]) - 1):
        near = list(batch[12])
        known = near[30]
        near[30] = known[:at] + "#" + known[at + 1 :]  # no id holds a '#'
        assert near[30] != known and len(near[30]) == len(known)
        given = [id_form(form, c) for c in [*batch[:12], near, *batch[13:]]]
        message = _same_refusal(engine, given, UnknownArmError)
        assert f"unknown arm id {near[30]!r} at position 30" in message
