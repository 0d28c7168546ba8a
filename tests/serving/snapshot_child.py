"""Child process for the kill test: saves a large allocator to one path, over and over."""

from __future__ import annotations

import sys

import numpy as np

from allocator.serving import Allocator, AllocatorConfig

path, n_merchants = sys.argv[1], int(sys.argv[2])
arms = [{"id": "taobao", "group": "taobao"}]
arms += [{"id": f"merchant:{i}", "group": "mini_shop"} for i in range(n_merchants)]
cfg = AllocatorConfig.model_validate({
    "engine": {"policy": {"kind": "beta_bernoulli", "bank_rows": 64}},
    "arms": arms,
    "serving": {"reward_wait_s": 1e9},
})  # fmt: skip
alloc = Allocator(cfg, seed=1)
cand = np.arange(20, dtype=np.int64)
i = 0
while True:
    alloc.decide(cand, timestamp=1.76e9 + i)
    alloc.save(path)
    print(i, flush=True)
    i += 1
