"""Committed record transitions per second, for each record store.

Each transition is one ``store.transition(...)`` call, alternating a record
between RUNNING and a terminal state, and committed before the call returns
(for ``SqliteStore``: written to the WAL with ``synchronous=NORMAL``).
Measured with one writer thread and with four, each thread on records of its
own. Raw ``sqlite3`` doing the same read-modify-write on a record's JSON
runs alongside as the floor the store is built on.

Each case runs ``--rounds`` times, alternating with the others, and the
table shows the median (the machine may be busy with other work).

A second table is the cost of saving a record in a crash loop whose every
error text is 1 MB (cut to ``ERROR_TEXT_MAX`` by the model): each save is
what a task actor does per attempt (``put`` when it starts, with a new
run and the oldest pruned, and ``put`` when it fails, with its run
closed), once with 1 kept run and once with 50 (``RUNS_KEPT``).
The ratio of the two is the figure: a save must not cost more as the
history grows. The stored size of the 50-run record is shown too.

Run: ``python benchmarks/bench_store.py [--seconds N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing

from taskvisor.actors import (
    MemoryStore,
    SqliteStore,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskState,
    TaskStore,
)

GOAL = 10_000  # committed transitions/s, SqliteStore, one writer
ENDS = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.TIMEOUT, TaskState.CANCELLED)
RECORDS_PER_WRITER = 4


def _writer(store: TaskStore, prefix: str, stop: threading.Event, counts: list[int]) -> None:
    ids = [f"{prefix}-{i}" for i in range(RECORDS_PER_WRITER)]
    for task_id in ids:
        store.put(TaskRecord.new(task_id))
    done = 0
    while not stop.is_set():
        for _ in range(50):  # check the clock every 100 transitions
            task_id = ids[done % RECORDS_PER_WRITER]
            store.transition(task_id, TaskState.RUNNING)
            store.transition(task_id, ENDS[done % len(ENDS)], output={"n": done})
            done += 1
    counts.append(2 * done)


def _saver(store: TaskStore, prefix: str, stop: threading.Event, counts: list[int]) -> None:
    """Save as a task actor does: ``put`` when an attempt starts and when it ends."""
    records = [TaskRecord.new(f"{prefix}-{i}") for i in range(RECORDS_PER_WRITER)]
    done = 0
    while not stop.is_set():
        for _ in range(50):
            record = records[done % RECORDS_PER_WRITER]
            record.transition(TaskState.RUNNING)
            record.runs.append(TaskRun.starting(record.attempts))
            del record.runs[:-50]
            store.put(record)
            record.runs[-1].finish(TaskPhase.SUCCEEDED)
            record.transition(TaskState.SUCCEEDED)
            record.output = {"n": done}
            store.put(record)
            done += 1
    counts.append(2 * done)


def _run_store(
    store: TaskStore, writers: int, seconds: float, tag: str, work: Callable[..., None] = _writer
) -> float:
    """Return committed transitions (or saves) per second with ``writers`` threads."""
    stop = threading.Event()
    counts: list[int] = []
    threads = [
        threading.Thread(target=work, args=(store, f"{tag}w{n}", stop, counts), daemon=True)
        for n in range(writers)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def _raw_sqlite(path: str, seconds: float) -> float:
    """Same read-modify-write in raw sqlite3 (one writer), for comparison."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, state TEXT, data TEXT)")
        conn.execute("DELETE FROM t")
        conn.execute("INSERT INTO t VALUES ('a', 'pending', ?)", (json.dumps({"state": "p"}),))
        done = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            for _ in range(100):
                conn.execute("BEGIN IMMEDIATE")
                data = json.loads(conn.execute("SELECT data FROM t WHERE id = 'a'").fetchone()[0])
                data["state"] = state = "running" if done % 2 else "succeeded"
                conn.execute(
                    "UPDATE t SET state = ?, data = ? WHERE id = 'a'", (state, json.dumps(data))
                )
                conn.execute("COMMIT")
                done += 1
        return done / (time.perf_counter() - start)


HUGE_ERROR = "Traceback (most recent call last):\n" + "x" * 1_000_000 + "\nRuntimeError: crash"


def _crash_loop(store: TaskStore, kept: int, seconds: float) -> float:
    """Return the mean cost of one save, in microseconds of CPU, with ``kept`` runs kept.

    CPU time (user and system) of the saving thread: the writes to the WAL
    are system time, and other work on the machine does not skew the ratio.

    Each attempt is saved twice, as a task actor saves it: when it starts
    (a new run, the oldest pruned) and when it fails (its run closed with a
    1 MB error).
    """
    record = TaskRecord.new(f"loop-{kept}", now=1)
    attempt = 0

    def start() -> None:
        nonlocal attempt
        attempt += 1
        record.transition(TaskState.RUNNING, now=attempt)
        record.runs.append(TaskRun.starting(attempt, now=attempt))
        del record.runs[:-kept]

    def fail() -> None:
        record.runs[-1].finish(TaskPhase.FAILED, HUGE_ERROR, now=attempt + 1)
        record.transition(TaskState.FAILED, now=attempt + 1)
        record.error = HUGE_ERROR

    for _ in range(kept + 1):  # fill the history first
        for change in (start, fail):
            change()
            store.put(record)
    saves, spent = 0, 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            for change in (start, fail):
                change()
                begin = time.thread_time()
                store.put(record)
                spent += time.thread_time() - begin
                saves += 1
    return spent / saves * 1e6


def _stored_bytes(path: str, task_id: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        head = conn.execute("SELECT length(data) FROM tasks WHERE id = ?", (task_id,)).fetchone()
        runs = conn.execute(
            "SELECT coalesce(sum(length(data)), 0) FROM runs WHERE task_id = ?", (task_id,)
        ).fetchone()
    return int(head[0]) + int(runs[0])


def _save_costs(tmp: str, seconds: float, rounds: int) -> None:
    """Print the crash-loop save cost with 1 and 50 kept runs, and their ratio."""
    costs: dict[tuple[str, int], list[float]] = {}
    size = 0
    for n in range(rounds):
        for name in ("MemoryStore", "SqliteStore"):
            for kept in (1, 50):
                path = os.path.join(tmp, f"loop-{n}-{kept}.db")
                with MemoryStore() if name == "MemoryStore" else SqliteStore(path) as store:
                    costs.setdefault((name, kept), []).append(_crash_loop(store, kept, seconds))
                if name == "SqliteStore" and kept == 50:
                    size = _stored_bytes(path, "loop-50")
    print()
    print("Cost of one save in a crash loop with 1 MB error texts (CPU microseconds, median)")
    print(f"{'store':<14}{'1 run kept':>12}{'50 kept':>12}{'50 / 1':>10}")
    for name in ("MemoryStore", "SqliteStore"):
        one = statistics.median(costs[name, 1])
        fifty = statistics.median(costs[name, 50])
        print(f"{name:<14}{one:>12,.0f}{fifty:>12,.0f}{fifty / one:>10.2f}")
    print(f"stored size of the 50-run record: {size:,} bytes")


def main(argv: list[str] | None = None) -> int:
    """Run every case and print a table and the goal verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="per case (default 3)")
    args = parser.parse_args(argv)
    seconds: float = args.seconds
    rounds: int = max(1, args.rounds)

    with tempfile.TemporaryDirectory(prefix="bench_store-") as tmp:
        cases: list[tuple[str, int, Callable[[], TaskStore]]] = []
        for writers in (1, 4):
            cases.append(("MemoryStore", writers, MemoryStore))
            path = os.path.join(tmp, f"store-{writers}.db")
            cases.append(("SqliteStore", writers, lambda path=path: SqliteStore(path)))

        samples: dict[tuple[str, int], list[float]] = {}
        raw_samples: list[float] = []
        saves: list[float] = []
        for n in range(rounds):
            for name, writers, make in cases:
                with make() as store:
                    rate = _run_store(store, writers, seconds, f"r{n}")
                samples.setdefault((name, writers), []).append(rate)
            raw_samples.append(_raw_sqlite(os.path.join(tmp, "raw.db"), seconds))
            with SqliteStore(os.path.join(tmp, "saves.db")) as store:
                saves.append(_run_store(store, 1, seconds, f"s{n}", _saver))
        results = {case: statistics.median(rates) for case, rates in samples.items()}
        raw = statistics.median(raw_samples)

    print(
        "Committed record transitions per second "
        f"(median of {rounds} rounds of {seconds:g} s per case)"
    )
    print(
        f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    )
    print()
    print(f"{'store':<14}{'1 writer':>12}{'4 writers':>12}")
    for name in ("MemoryStore", "SqliteStore"):
        print(f"{name:<14}{results[name, 1]:>12,.0f}{results[name, 4]:>12,.0f}")
    print(f"{'raw sqlite3':<14}{raw:>12,.0f}{'':>12}")
    print()
    one = results["SqliteStore", 1]
    spread = samples["SqliteStore", 1]
    print(f"SqliteStore / raw sqlite3 (1 writer): {one / raw:.2f}")
    print(f"SqliteStore, 1 writer, every round: {', '.join(f'{r:,.0f}' for r in spread)}")
    verdict = "MET" if one >= GOAL else "NOT MET"
    print(f"goal: SqliteStore >= {GOAL:,} committed transitions/s with one writer: {verdict}")
    print(
        "SqliteStore, 1 writer, saves as a task actor makes them "
        f"(put at each attempt's start and end): {statistics.median(saves):,.0f}/s"
    )
    with tempfile.TemporaryDirectory(prefix="bench_store-") as tmp:
        _save_costs(tmp, seconds / 2, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
