"""Simulated decision logs written as files, so ``allocator replay`` can evaluate them.

A cell run with ``--emit-logs`` writes every impression it decided — chosen arm id, the
reward it earned (app value), the exact propensity, the time, the user context and the
candidate list — as a Parquet file in the foreign-log layout, plus a replay config that maps
its columns. The truth of the simulated world then checks any estimator on real files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml


class LogBuffer:
    """Per-tick arrays of one cell, concatenated once at the end (written, or evaluated)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, **arrays: np.ndarray) -> None:
        for key, arr in arrays.items():
            self.parts.setdefault(key, []).append(arr)

    def concat(self, key: str) -> np.ndarray:
        return np.concatenate(self.parts[key])

    def write(self, directory: Path, cell: str, arm_ids: tuple[str, ...],
              context_names: tuple[str, ...]) -> Path:  # fmt: skip
        """``<directory>/<cell>.parquet`` and ``<cell>.replay.yaml``; returns the Parquet path."""
        directory.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", cell)
        cat = {k: self.concat(k) for k in self.parts}
        ids = np.asarray(arm_ids, dtype=object)
        sizes = cat["cand_size"]
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        cand_ids = ids[cat["cand_idx"]]
        candidates = [";".join(cand_ids[bounds[i] : bounds[i + 1]]) for i in range(sizes.shape[0])]
        columns: dict[str, Any] = {
            "arm": pa.array(ids[cat["actions"]].tolist(), pa.string()),
            "reward": cat["rewards"],
            "propensity": cat["pscores"],
            "timestamp": cat["timestamps"],
            "candidates": pa.array(candidates, pa.string()),
        }
        for j, name in enumerate(context_names):
            columns[f"x_{name}"] = np.ascontiguousarray(cat["contexts"][:, j])
        path = directory / f"{stem}.parquet"
        tmp = directory / f".{stem}.parquet.tmp"
        pq.write_table(pa.table(columns), tmp)
        os.replace(tmp, path)
        (directory / f"{stem}.replay.yaml").write_text(
            yaml.safe_dump(replay_config(path.name, context_names, cell), sort_keys=False)
        )
        return path


def replay_config(filename: str, context_names: tuple[str, ...], cell: str) -> dict[str, Any]:
    """A ready ``allocator replay`` config over one emitted log: frozen context-free and
    contextual candidates, scored on the reward column (app value per impression)."""
    n = len(context_names)
    return {
        "logs": {
            "foreign": {
                "path": filename,
                "columns": {
                    "action": "arm",
                    "reward": "reward",
                    "propensity": "propensity",
                    "timestamp": "timestamp",
                    "candidates": "candidates",
                    "context": [f"x_{c}" for c in context_names],
                },
            }
        },
        "experiment": {"name": f"replay-{cell.split('/')[0]}", "seeds": [1], "shards": 1},
        "policies": [
            {"name": "normal_gamma_ts", "engine": {"policy": {"kind": "normal_gamma"}}},
            {"name": "linear_ts",
             "engine": {"policy": {"kind": "linear_gaussian", "n_features": n}}},
        ],
    }  # fmt: skip
