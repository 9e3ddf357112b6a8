"""Task actors against raw pykka, measured in one run, printed as ratios.

Usage: python benchmarks/bench_actors.py [--quick]

Figures:
  ask round trip   raw pykka ``ask`` vs a running task: its actor (snapshot)
                   and its work (``TaskHandle.ask`` answered by the task)
  start            raw ``Actor.start()`` until ``on_start`` ran, vs
                   ``submit()`` until the task's work ran (call, async kinds)
  bus throughput   raw pykka ``tell`` to one actor vs events delivered in
                   order to one hook through the EventBus
  10k async tasks  start, stop and RSS per task vs 10k raw pykka actors
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from common import Started, raw_many, rss_kib
from taskvisor.actors import (
    AttemptStarted,
    Event,
    EventBus,
    ExecutorService,
    TaskContext,
    TaskSpec,
)


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


class Echo(pykka.ThreadingActor):
    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        return message


class Counter(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, total: int, done: threading.Event) -> None:
        super().__init__()
        self.total, self.count, self.done = total, 0, done

    def on_receive(self, message: Any) -> None:
        self.count += 1
        if self.count == self.total:
            self.done.set()


def serve(ctx: TaskContext) -> None:
    while True:
        request = ctx.receive(60)
        if request.message is None:
            request.reply(None)
            return
        request.reply(request.message)


def signal_start(ctx: TaskContext, flag: threading.Event) -> None:
    flag.set()


async def asignal_start(ctx: TaskContext, flag: threading.Event) -> None:
    flag.set()


async def park(ctx: TaskContext, started: list[int], total: int, all_in: threading.Event) -> None:
    import asyncio

    started.append(1)
    if len(started) == total:
        all_in.set()
    await asyncio.sleep(3600)


def timed(fn: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_ask(n: int) -> list[tuple[str, float, float]]:
    raw = Echo.start()
    raw_samples = timed(lambda: raw.ask(1, timeout=5), n)
    raw.stop()
    with ExecutorService() as svc:
        handle = svc.submit(TaskSpec(name="serve", target=serve))
        ref = handle._ref
        assert ref is not None
        actor_samples = timed(ref.snapshot, n)
        work_samples = timed(lambda: handle.ask(1, timeout=5), n)
        handle.ask(None)
    base = median_us(raw_samples)
    return [
        ("ask: raw pykka ask (median us)", base, 1.0),
        ("ask: task actor snapshot", median_us(actor_samples), median_us(actor_samples) / base),
        ("ask: task work via handle.ask", median_us(work_samples), median_us(work_samples) / base),
    ]


def bench_start(n: int) -> list[tuple[str, float, float]]:
    raw: list[float] = []
    for _ in range(n):
        flag = threading.Event()
        t0 = time.perf_counter()
        ref = Started.start(flag)
        flag.wait(5)
        raw.append(time.perf_counter() - t0)
        ref.stop()
    rows = [("start: raw pykka start -> on_start (median us)", median_us(raw), 1.0)]
    for kind, target in (("call", signal_start), ("async", asignal_start)):
        samples: list[float] = []
        with ExecutorService() as svc:
            for i in range(n):
                flag = threading.Event()
                spec = TaskSpec(name=f"{kind}{i}", kind=kind, target=target, args=[flag])
                t0 = time.perf_counter()
                handle = svc.submit(spec)
                flag.wait(5)
                samples.append(time.perf_counter() - t0)
                handle.wait(5)
        value = median_us(samples)
        rows.append((f"start: submit -> work ran ({kind})", value, value / rows[0][1]))
    return rows


def bench_bus(n: int) -> list[tuple[str, float, float]]:
    done = threading.Event()
    counter = Counter.start(n, done)
    t0 = time.perf_counter()
    tell = counter.tell
    for i in range(n):
        tell(i)
    done.wait(60)
    raw_rate = n / (time.perf_counter() - t0)
    counter.stop()

    seen: list[Event] = []
    last = threading.Event()

    def hook(event: Event) -> None:
        seen.append(event)
        if len(seen) == n:
            last.set()

    bus = EventBus([hook])
    events = [AttemptStarted("t", i) for i in range(n)]
    t0 = time.perf_counter()
    publish = bus.publish
    for event in events:
        publish(event)
    last.wait(60)
    bus_rate = n / (time.perf_counter() - t0)
    bus.stop()
    assert seen == events
    return [
        ("bus: raw pykka tell throughput (msg/s)", raw_rate, 1.0),
        ("bus: events/s delivered in order to one hook", bus_rate, bus_rate / raw_rate),
    ]


def bench_many(n: int) -> list[tuple[str, float, float]]:
    raw_start, raw_stop, raw_rss_kb = raw_many(n)
    raw_rss = raw_rss_kb * 1000
    gc.collect()
    base_rss = rss_kib()
    started: list[int] = []
    all_in = threading.Event()
    svc = ExecutorService()
    t0 = time.perf_counter()
    for i in range(n):
        svc.submit(TaskSpec(name=f"a{i}", kind="async", target=park, args=[started, n, all_in]))
    all_in.wait(120)
    ours_start = time.perf_counter() - t0
    ours_rss = (rss_kib() - base_rss) * 1024 / n
    t0 = time.perf_counter()
    svc.shutdown(timeout=120)
    ours_stop = time.perf_counter() - t0
    return [
        (f"{n} actors: raw pykka start (s)", raw_start, 1.0),
        (f"{n} async tasks: start, all running (s)", ours_start, ours_start / raw_start),
        (f"{n} actors: raw pykka stop (s)", raw_stop, 1.0),
        (f"{n} async tasks: shutdown (s)", ours_stop, ours_stop / raw_stop),
        (f"{n} actors: raw pykka RSS per actor (kB)", raw_rss / 1000, 1.0),
        (f"{n} async tasks: RSS per task (kB)", ours_rss / 1000, ours_rss / raw_rss),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    q = args.quick
    rows = [
        *bench_ask(200 if q else 5000),
        *bench_start(20 if q else 300),
        *bench_bus(2000 if q else 100_000),
        *bench_many(200 if q else 10_000),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>12}  {'ratio to raw':>12}")
    for name, value, ratio in rows:
        shown = f"{value:>12,.1f}" if value >= 100 else f"{value:>12.3f}"
        print(f"{name:<{width}}  {shown}  {ratio:>11.2f}x")


if __name__ == "__main__":
    main()
