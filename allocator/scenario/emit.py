"""A cell's decisions as the allocator's own decision log, so ``allocator replay`` reads them.

A cell run with ``--emit-logs`` keeps every impression it decided in a :class:`LogBuffer`
and writes it, once at the end, through :meth:`DecisionLogWriter.write_table` — the same
schema, parts and loader as a serving fleet's log: chosen arm with its exact propensity,
the whole candidate distribution, the user context, the request attributes (category, city
tier), and the outcome the world drew (reward = app value). Next to it go the world's arm
catalogue (``arms.parquet``: ids, groups, features, what the shared-model families are
built with) and a replay config that points at both and proposes the launch's learning
strategies, contracts included, as candidates. The truth of the simulated world then
checks any estimator on real files. The same buffer, kept in memory, feeds the cell's own
off-policy check.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from allocator.logs import DECISION_SCHEMA, DecisionLogWriter
from allocator.scenario.strategies import ScenarioArms


class LogBuffer:
    """Per-tick arrays of one cell, concatenated once at the end (written, or evaluated)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, **arrays: np.ndarray) -> None:
        for key, arr in arrays.items():
            self.parts.setdefault(key, []).append(arr)

    def concat(self, key: str) -> np.ndarray:
        return np.concatenate(self.parts[key])


def _lists(sizes: np.ndarray, values: pa.Array, type_: pa.DataType) -> pa.Array:
    """The list column ``type_`` of rows of ``sizes`` values, built with 64-bit offsets so
    that a cell past 2^31 candidates fails the cast to the schema's type loudly rather
    than wrapping (``logs.indexed.list_column`` serves a writer's bounded parts)."""
    offsets = np.zeros(sizes.shape[0] + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return pa.LargeListArray.from_arrays(offsets, values).cast(type_)


def decision_tables(
    buf: LogBuffer, cell: str, arms: ScenarioArms, policy_kind: str,
    contract_names: tuple[str, ...] = (),
) -> tuple[pa.Table, pa.Table]:  # fmt: skip
    """The decisions and outcomes tables of a cell's buffer (columns as the log schema).

    The buffer holds per impression ``timestamps``, ``actions`` (arm index), ``pscores``,
    ``contexts`` (n, d), ``category``, ``city_tier``, ``batch`` (the model version the
    decision was made with), ``click``, ``order``, ``gmv``, ``rewards``, and, when the
    strategy has contracts, ``forced`` (the forcing contract or -1) and ``adjusted`` (a
    bitmask over ``contract_names``); per candidate ``cand_size`` (n,), ``cand_idx`` and
    ``probs`` (flat).
    """
    c = {key: buf.concat(key) for key in buf.parts}
    n = c["actions"].shape[0]
    ids = pa.array(arms.ids, pa.string())
    groups = pa.array(arms.groups, pa.string())
    decision_id = pa.array(np.char.add(f"{cell}#", np.arange(n).astype(np.str_)), pa.string())
    actions = pa.array(c["actions"], pa.int64())
    d = c["contexts"].shape[1]
    keys = pa.array(np.tile(np.array(["category", "city_tier"]), n), pa.string())
    values = np.empty(2 * n, dtype=object)
    values[0::2] = np.asarray(arms.categories, dtype=object)[c["category"]]
    values[1::2] = np.asarray(arms.city_tiers, dtype=object)[c["city_tier"]]
    field = DECISION_SCHEMA.field
    forced = c["forced"] >= 0 if "forced" in c else np.zeros(n, dtype=np.bool_)
    k = len(contract_names)
    adjusted = c.get("adjusted", np.zeros(n, dtype=np.int64))
    bits = (adjusted[:, None] >> np.arange(k)) & 1 if k else np.zeros((n, 0), dtype=np.int64)
    moved_by = np.array(contract_names, dtype=object)[np.nonzero(bits)[1]]
    decisions = pa.table(
        {
            "decision_id": decision_id,
            "request_id": pa.nulls(n, pa.string()),
            "timestamp": c["timestamps"],
            "arm_id": ids.take(actions),
            "arm_index": actions,
            "group": groups.take(actions),
            "propensity": c["pscores"],
            "forced": forced,
            "model_version": c["batch"].astype(np.int64),
            "policy_kind": pa.repeat(pa.scalar(policy_kind), n),
            "candidates": _lists(
                c["cand_size"], ids.take(pa.array(c["cand_idx"], pa.int64())),
                field("candidates").type,
            ),
            "candidate_probabilities": _lists(
                c["cand_size"], pa.array(c["probs"]), field("candidate_probabilities").type
            ),
            "context": _lists(
                np.full(n, d), pa.array(c["contexts"].ravel()), field("context").type
            ),
            "attrs": pa.MapArray.from_arrays(
                np.arange(0, 2 * n + 1, 2, dtype=np.int32), keys, pa.array(values, pa.string())
            ),
            "adjusted_by": _lists(
                bits.sum(axis=1), pa.array(moved_by, pa.string()), field("adjusted_by").type
            ),
        }
    )  # fmt: skip
    outcomes = pa.table(
        {
            "decision_id": decision_id,
            "timestamp": c["timestamps"],  # outcomes are folded in with the decision's batch
            "click": c["click"],
            "order": c["order"],
            "gmv": c["gmv"],
            "reward": c["rewards"],
            "source": pa.repeat(pa.scalar("feedback"), n),
        }
    )
    return decisions, outcomes


#: the arm catalogue written next to a launch's logs (one per directory)
ARMS_FILE = "arms.parquet"


def write_cell_log(
    directory: Path, cell: str, buf: LogBuffer, arms: ScenarioArms, policy_kind: str,
    contract_names: tuple[str, ...] = (), candidates: tuple[dict[str, Any], ...] = (),
    left_out: tuple[str, ...] = (),
) -> Path:  # fmt: skip
    """``<directory>/<cell>/`` (a decision log), the arm catalogue and
    ``<cell>.replay.yaml`` (``candidates``: learning policy entries it proposes; the
    strategies ``left_out``, with why, in a comment at its top); returns the log."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", cell)
    decisions, outcomes = decision_tables(buf, cell, arms, policy_kind, contract_names)
    with DecisionLogWriter(directory / stem, rotate_rows=1_000_000) as writer:
        writer.write_table("decisions", decisions)
        writer.write_table("outcomes", outcomes)
    write_catalogue(directory / ARMS_FILE, arms)
    config = replay_config(stem, buf.parts["contexts"][0].shape[1], cell, candidates)
    notes = "".join(f"# left out: {line}\n" for line in left_out)
    text = yaml.safe_dump(config, sort_keys=False)
    (directory / f"{stem}.replay.yaml").write_text(notes + text)
    return directory / stem


def write_catalogue(path: Path, arms: ScenarioArms) -> None:
    """The world's arms as a catalogue file (``id``, ``group``, ``features``), written to a
    temporary name and renamed: cells on several workers may write the same file at once,
    and a reader never sees half of one."""
    table = pa.table({
        "id": pa.array(arms.ids, pa.string()),
        "group": pa.array(arms.groups, pa.string()),
        "features": pa.array(list(arms.features), pa.list_(pa.float64())),
    })  # fmt: skip
    fd, tmp = tempfile.mkstemp(prefix=".arms-", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replay_config(
    log_dir: str, n_context: int, cell: str, candidates: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    """A ready ``allocator replay`` config over one emitted log and the arm catalogue:
    frozen context-free and contextual candidates and the given learning ones, scored on
    the reward column (app value per impression)."""
    return {
        "logs": {"decision_log": log_dir, "arms_file": ARMS_FILE},
        "experiment": {"name": f"replay-{cell.split('/')[0]}", "seeds": [1], "shards": 1},
        "policies": [
            {"name": "normal_gamma_ts", "engine": {"policy": {"kind": "normal_gamma"}}},
            {"name": "linear_ts",
             "engine": {"policy": {"kind": "linear_gaussian", "n_features": n_context}}},
            *candidates,
        ],
    }  # fmt: skip
