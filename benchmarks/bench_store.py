"""Committed record transitions per second, for each record store.

Each transition is one ``store.transition(...)`` call, alternating a record
between RUNNING and a terminal state, and committed before the call returns
(for ``SqliteStore``: written to the WAL with ``synchronous=NORMAL``).
Measured with one writer thread and with four, each thread on records of its
own. Raw ``sqlite3`` doing the same read-modify-write on a record's JSON
runs alongside as the floor the store is built on.

Each case runs ``--rounds`` times, alternating with the others, and the
table shows the median (the machine may be busy with other work).

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

from taskvisor.actors import MemoryStore, SqliteStore, TaskRecord, TaskState, TaskStore

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


def _run_store(store: TaskStore, writers: int, seconds: float, tag: str) -> float:
    """Return committed transitions per second with ``writers`` threads."""
    stop = threading.Event()
    counts: list[int] = []
    threads = [
        threading.Thread(target=_writer, args=(store, f"{tag}w{n}", stop, counts), daemon=True)
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
        for n in range(rounds):
            for name, writers, make in cases:
                with make() as store:
                    rate = _run_store(store, writers, seconds, f"r{n}")
                samples.setdefault((name, writers), []).append(rate)
            raw_samples.append(_raw_sqlite(os.path.join(tmp, "raw.db"), seconds))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
