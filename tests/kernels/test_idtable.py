"""The tagged id table: a probe whose tag matches but whose id differs (a tag collision,
one in 2**23 probes) is passed over, in every query form and in the short and staged
lookups alike, and table entries keep arm indices up to the 40-bit limit apart."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.errors import UnknownArmError
from allocator.kernels import idtable as kid
from allocator.registry import ArmRegistry


def _table_with_collision() -> tuple[ArmRegistry, str, str]:
    """A registry whose table holds, in the home slot of ``victim``, a forged entry with
    ``victim``'s tag pointing at ``decoy`` (another arm), entered before every real id
    (so ``victim``'s own entry sits further along its probe sequence)."""
    reg = ArmRegistry(capacity=64)
    reg.add([f"m{i}" for i in range(60)], "g")
    table, chars, offsets = reg.id_table()
    victim, decoy = "m7", "m3"
    q = np.frombuffer(victim.encode("latin-1"), np.uint8)
    h = int(kid._hash(q, 0, q.shape[0]))
    table[:] = -1
    table[h & (table.shape[0] - 1)] = 3 | (h >> 41) << 40
    assert kid.insert(table, chars, offsets, 0, reg.n_arms) == -1
    return reg, victim, decoy


@pytest.mark.parametrize("n_ids", [1, 40])  # the short lookup, and the staged one
def test_a_tag_collision_probes_on_to_the_real_entry(n_ids):
    reg, victim, decoy = _table_with_collision()
    assert reg.index_of(victim) == 7 and reg.index_of(decoy) == 3
    cands = [victim] + [f"m{i}" for i in range(8, 8 + n_ids - 1)]
    got = reg.lookup(cands)
    assert got[0] == 7 and list(got[1:]) == list(range(8, 8 + n_ids - 1))
    assert reg.lookup(np.array(cands))[0] == 7
    assert reg.lookup([decoy])[0] == 3
    with pytest.raises(UnknownArmError, match="unknown arm id 'm99' at position 1"):
        reg.lookup([victim, "m99"])


def test_entries_keep_large_indices_apart_from_their_tags():
    table = np.full(64, -1, dtype=np.int64)
    chars = np.frombuffer(b"abcd", np.uint8)
    offsets = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    assert kid.insert(table, chars, offsets, 0, 4) == -1
    used = table[table >= 0]
    assert sorted(used & ((1 << 40) - 1)) == [0, 1, 2, 3]
    out = np.empty(4, dtype=np.int64)
    q = np.frombuffer(b"d\x00c\x00b\x00a", np.uint8)
    active = np.ones(4, dtype=np.bool_)
    assert kid.lookup_joined(table, chars, offsets, active, kid.ACTIVE, q, out) == (kid.FOUND, -1)
    assert list(out) == [3, 2, 1, 0]


def _codepoints(text: str, dtype: type) -> np.ndarray:
    return np.array([ord(c) for c in text], dtype=dtype)


@pytest.mark.parametrize("table_dtype", [np.uint8, np.uint32])
@pytest.mark.parametrize("query_dtype", [np.uint8, np.uint32])
def test_ids_compare_equal_exactly_when_every_codepoint_does(table_dtype, query_dtype):
    """The comparison reads 8-byte words when both sides share a width: an id that differs
    from the stored one in any single codepoint (first word, middle, the last overlapping
    word), or only in length, is told apart; equal ids at any offset are equal."""
    rng = np.random.default_rng(3)
    for n in range(1, 34):
        stored = "".join(chr(c) for c in rng.integers(33, 127, n))
        pad = int(rng.integers(0, 9))  # ids start anywhere in the arrays, unaligned
        chars = _codepoints("#" * pad + stored + "~", table_dtype)
        for k in [None, *range(n)]:
            given = stored if k is None else stored[:k] + chr(ord(stored[k]) ^ 1) + stored[k + 1 :]
            lead = int(rng.integers(0, 9))
            q = _codepoints("@" * lead + given + "!", query_dtype)
            same = kid._same(chars, pad, pad + n, q, lead, lead + n)
            assert same == (given == stored), (n, k, table_dtype, query_dtype)
        q = _codepoints(stored + "x", query_dtype)  # a longer id with the same prefix
        assert not kid._same(chars, pad, pad + n, q, 0, n + 1)
        assert not kid._same(chars, pad, pad + n, q, 0, n - 1)


@pytest.mark.parametrize("wide", [False, True])
def test_a_tag_collision_between_long_ids_differing_in_one_place_probes_on(wide):
    """A forged entry with the victim's tag pointing at a long decoy that differs from it
    in one codepoint only (in the first, a middle or the last word): never taken for it."""
    stem = "merchant:店-" if wide else "merchant:u-"
    ids = [f"{stem}{i:08d}" for i in range(60)]
    for decoy_at, victim_at in ((3, 7), (10, 13), (20, 29)):
        reg = ArmRegistry(capacity=64)
        reg.add(ids, "g")
        table, chars, offsets = reg.id_table()
        assert (chars.dtype == np.uint32) == wide
        victim = ids[victim_at]
        q = _codepoints(victim, chars.dtype)
        h = int(kid._hash(q, 0, q.shape[0]))
        table[:] = -1
        table[h & (table.shape[0] - 1)] = decoy_at | (h >> 41) << 40
        assert kid.insert(table, chars, offsets, 0, reg.n_arms) == -1
        cands = [victim, *ids[30:59]]  # the staged lookup
        assert reg.lookup(cands)[0] == victim_at
        assert reg.lookup(np.array(cands))[0] == victim_at
        assert reg.lookup([victim])[0] == victim_at  # the short lookup
        assert reg.lookup([ids[decoy_at]])[0] == decoy_at


def test_prefetch_compiles_to_the_llvm_hint_and_changes_no_value():
    from numba import config, njit

    from allocator.kernels.prefetch import prefetch

    @njit
    def touch(a, idx):
        for i in idx:
            prefetch(a, i)
        return a.sum()

    a = np.arange(1000.0)
    assert touch(a, np.array([0, 999, 5])) == a.sum()
    if not config.DISABLE_JIT:  # compiled: the hint is really there
        assert "@llvm.prefetch" in "".join(touch.inspect_llvm().values())
