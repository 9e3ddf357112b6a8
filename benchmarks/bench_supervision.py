"""Supervision against a hand-made restart on raw pykka, in one run, as ratios.

Usage: python benchmarks/bench_supervision.py [--quick]

Figures:
  restart latency   a supervised task fails -> its restarted attempt answers
                    a request; vs raw pykka: an actor fails, its on_failure
                    tells a watcher, the watcher starts a replacement and
                    asks it (median and p90 over many restarts); then
                    both again, alternating in blocks of 50, so that both
                    sides see the same conditions
  simulator         decisions/s of simulate() on a 1,000-child tree
  10k children      under one supervisor: start, a storm where all fail at
                    once and restart, stop; RSS per child
  dynamic cycles    a dynamic supervisor starts 100,000 children one after
                    another, each ends at once and is forgotten: how much the
                    process grows (goal < 10 MB per 100,000 cycles)
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka

from common import raw_many, rss_kib
from taskvisor.actors import AttemptStarted, Event, TaskContext, TaskSpec
from taskvisor.supervision import (
    DynamicSupervisorSpec,
    Fail,
    Intensity,
    Strategy,
    Supervisor,
    SupervisorSpec,
    simulate,
)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


# ----------------------------------------------------------------- restart latency


def crashy(ctx: TaskContext, stamps: list[float]) -> None:
    while True:
        message = ctx.receive()  # "crash" (delivered) or a Request (asked)
        if message == "crash":
            stamps.append(time.perf_counter())
            raise RuntimeError("crash")
        message.reply(ctx.attempt)


def ours_restarts(n: int) -> Iterator[float]:
    """Restart a supervised task ``n`` times; yield each restart's latency (s)."""
    stamps: list[float] = []
    spec = SupervisorSpec(
        "bench",
        intensity=Intensity(max_restarts=n + 10, within=3600),
        children=[TaskSpec(name="w", target=crashy, args=[stamps])],
    )
    with Supervisor.start(spec) as tree:
        ref = tree.child("w")
        ref.ask("warm")
        for _ in range(n):
            ref.deliver("crash")
            ref.ask("ping")  # waits in the mailbox; the restarted attempt answers it
            yield time.perf_counter() - stamps[-1]


def ours_restart_latency(n: int) -> list[float]:
    return list(ours_restarts(n))


class RawWorker(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, watcher: pykka.ActorRef[Any], stamps: list[float]) -> None:
        super().__init__()
        self.watcher, self.stamps = watcher, stamps

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            self.stamps.append(time.perf_counter())
            raise RuntimeError("crash")
        return message

    def on_failure(self, *_exc: object) -> None:
        self.watcher.tell("restart")


class RawWatcher(pykka.ThreadingActor):
    """A hand-made one_for_one: start a replacement, ask it once, signal."""

    use_daemon_thread = True

    def __init__(self, stamps: list[float]) -> None:
        super().__init__()
        self.stamps = stamps
        self.worker: pykka.ActorRef[Any] | None = None
        self.answered: list[float] = []
        self.done = threading.Semaphore(0)

    def on_start(self) -> None:
        self.worker = RawWorker.start(self.actor_ref, self.stamps)

    def on_receive(self, message: Any) -> Any:
        if message == "restart":
            self.worker = RawWorker.start(self.actor_ref, self.stamps)
            self.worker.ask("ping")
            self.answered.append(time.perf_counter())
            self.done.release()
        elif message == "worker":
            return self.worker
        return None

    def on_stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


def raw_restarts(n: int) -> Iterator[float]:
    """Restart a hand-made pykka worker ``n`` times; yield each restart's latency (s)."""
    stamps: list[float] = []
    watcher_ref = RawWatcher.start(stamps)
    watcher = watcher_ref.proxy()
    try:
        for _ in range(n):
            worker = watcher_ref.ask("worker")
            worker.tell("crash")
            watcher.done.get().acquire()
            answered = watcher.answered.get()[-1]
            yield answered - stamps[-1]
    finally:
        watcher_ref.stop()


def raw_restart_latency(n: int) -> list[float]:
    return list(raw_restarts(n))


def interleaved_restart_latency(n: int, block: int) -> tuple[list[float], list[float]]:
    """Both restarts, alternating in blocks of ``block``: raw and ours under the same conditions.

    On a VM the machine's speed drifts from second to second; run one
    after the other, each side sees its own conditions.
    """
    raw: list[float] = []
    ours: list[float] = []
    raw_side, ours_side = raw_restarts(n), ours_restarts(n)
    while len(ours) < n:
        raw.extend(itertools.islice(raw_side, block))
        ours.extend(itertools.islice(ours_side, block))
    for side in (raw_side, ours_side):
        for _ in side:  # none left: ends the generator, which stops its tree or watcher
            pass
    return raw, ours


# ----------------------------------------------------------------- simulator


def simulator_rate(children: int, events: int) -> tuple[int, float]:
    rng = random.Random(7)
    spec = SupervisorSpec(
        "sim",
        intensity=Intensity(max_restarts=events + 1, within=1.0),
        children=[TaskSpec(name=f"c{i}", target="json:dumps") for i in range(children)],
    )
    script = [Fail(i * 1e-3, f"c{rng.randrange(children)}") for i in range(events)]
    t0 = time.perf_counter()
    result = simulate(spec, script)
    elapsed = time.perf_counter() - t0
    return len(result.decisions), len(result.decisions) / elapsed


# ----------------------------------------------------------------- 10k children


async def parked(ctx: TaskContext) -> None:
    while True:
        message = await ctx.receive_async()
        if message == "crash":
            raise RuntimeError("storm")


def many_children(n: int) -> list[tuple[str, float, float | None]]:
    raw_start, raw_stop, raw_rss = raw_many(n)
    started = threading.Semaphore(0)

    def on_event(event: Event) -> None:
        if isinstance(event, AttemptStarted):
            started.release()

    gc.collect()
    base = rss_kib()
    spec = SupervisorSpec(
        "big",
        strategy=Strategy.ONE_FOR_ONE,
        intensity=Intensity(max_restarts=2 * n, within=3600),
        children=[TaskSpec(name=f"c{i}", kind="async", target=parked) for i in range(n)],
    )
    t0 = time.perf_counter()
    tree = Supervisor.start(spec, hooks=[on_event])
    start_s = time.perf_counter() - t0
    for _ in range(n):
        started.acquire()
    rss = (rss_kib() - base) * 1024 / n
    refs = [tree.child(f"c{i}") for i in range(n)]
    t0 = time.perf_counter()
    for ref in refs:
        ref.deliver("crash")
    for _ in range(n):
        started.acquire()
    storm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tree.stop(timeout=300)
    stop_s = time.perf_counter() - t0
    return [
        (f"{n} raw pykka actors: start (s)", raw_start, 1.0),
        (f"{n} children: start (s)", start_s, start_s / raw_start),
        (f"{n} children: all fail at once, all restarted (s)", storm_s, None),
        (f"{n} raw pykka actors: stop (s)", raw_stop, 1.0),
        (f"{n} children: stop (s)", stop_s, stop_s / raw_stop),
        (f"{n} raw pykka actors: RSS per actor (kB)", raw_rss, 1.0),
        (f"{n} children: RSS per child (kB)", rss / 1000, rss / 1000 / raw_rss),
    ]


# ----------------------------------------------------------------- dynamic cycles


def quick_job(ctx: TaskContext) -> None:
    return None


def dynamic_cycles(n: int, warm: int) -> tuple[float, float, int]:
    """Start ``n`` short-lived dynamic children one by one (after ``warm`` to settle).

    Returns (growth in MB over the n cycles, seconds per cycle, children left).
    """
    template = TaskSpec(name="job", target=quick_job, restart="temporary")
    with Supervisor.start(DynamicSupervisorSpec("pool", template=template)) as tree:
        for _ in range(warm):
            tree.start_child()
        gc.collect()
        base = rss_kib()
        t0 = time.perf_counter()
        for i in range(n):
            tree.start_child()
            if i % 20_000 == 19_999:
                print(f"  ... {i + 1:,} cycles", flush=True)
        elapsed = time.perf_counter() - t0
        gc.collect()
        grown = (rss_kib() - base) / 1024
        left = tree.count_children()["specs"]
    return grown, elapsed / n, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    q = args.quick
    restarts = 50 if q else 1000

    raw = raw_restart_latency(restarts)
    ours = ours_restart_latency(restarts)
    print(f"restart latency over {restarts} restarts (us)")
    print(f"  {'':34}{'median':>10}{'p90':>10}")
    raw_median, ours_median = statistics.median(raw) * 1e6, statistics.median(ours) * 1e6
    print(f"  {'raw pykka hand-made restart':34}{raw_median:>10.1f}{pct(raw, 0.9):>10.1f}")
    print(f"  {'taskvisor one_for_one restart':34}{ours_median:>10.1f}{pct(ours, 0.9):>10.1f}")
    print(f"  taskvisor is {raw_median / ours_median:.2f}x faster (median); goal: >= 2x")
    raw_mixed, ours_mixed = interleaved_restart_latency(restarts, 50)
    raw_mixed_median = statistics.median(raw_mixed) * 1e6
    ours_mixed_median = statistics.median(ours_mixed) * 1e6
    print(
        f"  alternating in blocks of 50: raw {raw_mixed_median:.1f}, taskvisor "
        f"{ours_mixed_median:.1f}: {raw_mixed_median / ours_mixed_median:.2f}x"
    )
    decisions, rate = simulator_rate(1000, 20_000 if q else 200_000)
    print(f"simulator: {decisions} decisions on a 1,000-child tree: {rate:,.0f} decisions/s")
    for name, value, ratio in many_children(500 if q else 10_000):
        shown = "" if ratio is None else f"{ratio:>10.2f}x"
        print(f"{name:<52}{value:>10.2f}{shown}")
    cycles = 10_000 if q else 100_000
    grown, per_cycle, left = dynamic_cycles(cycles, 2_000 if q else 10_000)
    print(
        f"dynamic children: {cycles:,} start/finish cycles grew the process by {grown:.2f} MB "
        f"({grown * 100_000 / cycles:.2f} MB per 100,000; goal < 10 MB), "
        f"{per_cycle * 1e6:.0f} us per cycle, {left} children left"
    )


if __name__ == "__main__":
    main()
