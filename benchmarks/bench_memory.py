"""Memory per task that has come and gone: RSS growth over many submit/finish cycles.

Kind F of issue 8: finished tasks and their actors are released, so
100,000 start/finish cycles grow the process by less than 10 MB. This
script measures it for an ``ExecutorService``: quick ``call`` tasks are
submitted in batches and each batch is waited for; after a warm-up (so
pools, the kept-handles list and the allocator reach their steady state)
RSS is read after a full collection at every checkpoint.

Usage: ``python benchmarks/bench_memory.py [cycles] [batch]``
(defaults: 100,000 cycles in batches of 100).
"""

from __future__ import annotations

import gc
import sys
import time

from common import rss_kib
from taskvisor.actors import ExecutorService, TaskContext, TaskSpec


def quick(ctx: TaskContext, x: int) -> int:
    return x + 1


def cycles(svc: ExecutorService, first: int, count: int, batch: int) -> None:
    """Submit ``count`` tasks, ``batch`` at a time, waiting for each batch."""
    for start in range(first, first + count, batch):
        handles = [
            svc.submit(TaskSpec(name="q", target=quick, args=[i]), id=f"q{i}")
            for i in range(start, min(start + batch, first + count))
        ]
        for handle in handles:
            handle.result(30)


def settled_rss() -> int:
    gc.collect()
    return rss_kib()


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    warmup = max(batch, min(5_000, total // 10))
    checkpoints = 10
    step = max(batch, total // checkpoints)
    print(f"ExecutorService: {total:,} submit/finish cycles of quick call tasks, batch {batch}")
    with ExecutorService() as svc:
        began = time.perf_counter()
        cycles(svc, 0, warmup, batch)
        base = settled_rss()
        print(f"  after {warmup:,} warm-up cycles: RSS {base / 1024:.1f} MB")
        done = 0
        t0 = time.perf_counter()
        while done < total:
            n = min(step, total - done)
            cycles(svc, warmup + done, n, batch)
            done += n
            rss = settled_rss()
            rate = done / (time.perf_counter() - t0)
            print(
                f"  {done:>7,} cycles: RSS {rss / 1024:.1f} MB, "
                f"growth {(rss - base) / 1024:+.2f} MB ({rate:,.0f} cycles/s)",
                flush=True,
            )
        growth_kib = settled_rss() - base
        held = len(svc.handles())
    per_100k_mb = growth_kib / 1024 * 100_000 / total
    per_task_bytes = growth_kib * 1024 / total
    print(
        f"growth: {growth_kib / 1024:+.2f} MB over {total:,} cycles = "
        f"{per_100k_mb:+.2f} MB per 100,000 = {per_task_bytes:+.1f} bytes per task "
        f"(goal < 10 MB per 100,000); handles still findable: {held:,}; "
        f"total time {time.perf_counter() - began:.1f}s"
    )


if __name__ == "__main__":
    main()
