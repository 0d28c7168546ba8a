"""A foreign click log with a known truth, as another team might export it.

Four entry destinations (the arms), a city tier that changes which one users click, two
numeric columns that do not matter, and a logging policy that is uniform unless told
otherwise. Every number comes from ``Generator.random`` and is written with a fixed format,
so the same arguments give the same bytes (``configs/data/replay_example.csv`` is
``example_csv()``; regenerate it with ``python -m tests.replay.make_example_log``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

ARMS = ("douyin", "jd", "pdd", "taobao")  # sorted: the arm index of the loaded log
TIERS = ("t1", "t2", "t3")
TIER_SHARE = np.array([0.5, 0.3, 0.2])
#: click rate of each arm (columns, ARMS order) in each city tier (rows)
CLICK_RATE = np.array(
    [
        [0.15, 0.30, 0.45, 0.85],
        [0.60, 0.40, 0.30, 0.25],
        [0.25, 0.65, 0.35, 0.20],
    ]
)
#: the tier-averaged click rate of each arm: what a context-free policy can learn
MARGINAL_RATE = TIER_SHARE @ CLICK_RATE
UNIFORM = np.full(len(ARMS), 1.0 / len(ARMS))
HEADER = "entry,clicked,p_entry,recency_days,spend_z,city_tier"
#: the column mapping of this file, as a replay config's ``logs.foreign.columns``
COLUMNS = {
    "action": "entry",
    "reward": "clicked",
    "propensity": "p_entry",
    "context": ["recency_days", "spend_z"],
    "categorical": {"city_tier": "one_hot"},
    "levels": {"city_tier": list(TIERS)},
}
N_FEATURES = 2 + len(TIERS)
EXAMPLE_ROWS = 2000
EXAMPLE_SEED = 20240611
EXAMPLE_PATH = Path(__file__).resolve().parents[2] / "configs" / "data" / "replay_example.csv"


class ClickLog(NamedTuple):
    text: str
    tier: np.ndarray  # (n,) tier index of each row
    action: np.ndarray  # (n,) logged arm index
    reward: np.ndarray  # (n,) 0/1

    @property
    def click_rate(self) -> np.ndarray:
        """(n, K) true click rate of every arm in every row."""
        return CLICK_RATE[self.tier]


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1)


def make_click_log(n: int, seed: int, logging: np.ndarray = UNIFORM) -> ClickLog:
    """n rounds logged by the fixed distribution ``logging`` over ARMS, as CSV text."""
    u = np.random.default_rng(seed).random((n, 5))
    tier = _draw(np.cumsum(TIER_SHARE), u[:, 0])
    action = _draw(np.cumsum(logging), u[:, 1])
    reward = (u[:, 2] < CLICK_RATE[tier, action]).astype(np.int64)
    recency = 30.0 * u[:, 3]
    spend = 4.0 * u[:, 4] - 2.0
    p_text = [str(float(p)) for p in logging]
    lines = [HEADER]
    lines += [
        f"{ARMS[a]},{r},{p_text[a]},{x:.2f},{z:.3f},{TIERS[t]}"
        for a, r, x, z, t in zip(action, reward, recency, spend, tier, strict=True)
    ]
    return ClickLog("\n".join(lines) + "\n", tier, action, reward)


def example_csv() -> bytes:
    """The bytes of ``configs/data/replay_example.csv``."""
    return make_click_log(EXAMPLE_ROWS, EXAMPLE_SEED).text.encode("utf-8")


if __name__ == "__main__":
    EXAMPLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    EXAMPLE_PATH.write_bytes(example_csv())
    print(f"wrote {EXAMPLE_PATH} ({EXAMPLE_PATH.stat().st_size:,} bytes)")
