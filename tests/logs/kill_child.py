"""Child process of the kill test: an allocator with a decision log, deciding as fast as it
can on the wall clock and printing ``<decisions made> <monotonic time>`` every 50 decisions."""

from __future__ import annotations

import sys
import time

from allocator.serving import Allocator, AllocatorConfig

log_dir, flush_interval_s = sys.argv[1], float(sys.argv[2])
arms = [{"id": "taobao", "group": "taobao"}, {"id": "douyin", "group": "douyin"}]
arms += [{"id": f"merchant:{i}", "group": "mini_shop"} for i in range(20)]
cfg = AllocatorConfig.model_validate({
    "engine": {"policy": {"kind": "beta_bernoulli"}},
    "arms": arms,
    "serving": {"reward_wait_s": 1e9, "time": "wall"},
})  # fmt: skip
alloc = Allocator(cfg, seed=1, log_dir=log_dir, log_flush_interval_s=flush_interval_s)
alloc.warmup()
cand = ["taobao", "douyin"] + [f"merchant:{i}" for i in range(8)]
n = 0
while True:
    alloc.decide(cand, attrs={"slot": "top"})
    n += 1
    if n % 50 == 0:
        print(n, time.monotonic(), flush=True)
