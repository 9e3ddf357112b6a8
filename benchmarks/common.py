"""What the benchmark scripts share: memory readings and the raw-pykka baselines."""

from __future__ import annotations

import gc
import threading
import time

import pykka


def rss_kib() -> int:
    """This process's resident memory, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Started(pykka.ThreadingActor):
    """A raw pykka actor that signals once it runs."""

    use_daemon_thread = True

    def __init__(self, flag: threading.Event) -> None:
        super().__init__()
        self.flag = flag

    def on_start(self) -> None:
        self.flag.set()


def raw_many(n: int) -> tuple[float, float, float]:
    """Start n raw pykka actors and wait until each ran, then stop them all.

    Returns (start seconds, stop seconds, RSS per actor in kB).
    """
    gc.collect()
    base = rss_kib()
    flags = [threading.Event() for _ in range(n)]
    t0 = time.perf_counter()
    refs = [Started.start(flag) for flag in flags]
    for flag in flags:
        flag.wait(60)
    start_s = time.perf_counter() - t0
    rss = (rss_kib() - base) * 1024 / n / 1000
    t0 = time.perf_counter()
    for ref in refs:
        ref.stop(block=False)
    for ref in refs:
        ref.actor_stopped.wait(60)
    stop_s = time.perf_counter() - t0
    del refs, flags
    time.sleep(0.5)  # let the raw threads exit before the next measurement
    gc.collect()
    return start_s, stop_s, rss
