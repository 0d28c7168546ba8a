"""Fork server for the kill test: builds the allocator's config and warms its code once, then
per line on stdin forks a writer that saves a fresh allocator to one path over and over.

Protocol on stdout: ``pid <pid>`` for each writer; the writer prints the count of saves it
completed after each one (``0``, ``1``, …); once the test has killed it, ``done``. A fork
replaces the ~2 s interpreter start-up and import of a new process per trial.
"""

from __future__ import annotations

import os
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
cand = np.arange(20, dtype=np.int64)
warm = Allocator(cfg, seed=1)  # compiles (or loads) every kernel a writer runs
warm.decide(cand, timestamp=1.76e9)
warm.save(path + ".warm")
os.unlink(path + ".warm")


def write_forever() -> None:
    alloc = Allocator(cfg, seed=1)
    i = 0
    while True:
        alloc.decide(cand, timestamp=1.76e9 + i)
        alloc.save(path)
        print(i, flush=True)
        i += 1


for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            write_forever()
        finally:
            os._exit(1)  # a failing writer must not go on as a second server
    print("pid", pid, flush=True)
    os.waitpid(pid, 0)
    print("done", flush=True)
