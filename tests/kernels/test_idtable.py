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
