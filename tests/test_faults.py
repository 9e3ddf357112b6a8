"""Issue 8's numbered faults on a live tree, fault injection, and stop()'s contract.

Each ``test_faultN_*`` replays fault N of issue 8 through ``Supervisor.start``
and a ``SupervisorRef``: real threads, real processes (``sleep``, a host
process that is SIGKILLed), real SQLite files under ``tmp_path``. Time that
restart windows and backoff depend on is a ``ManualClock``; the only
real-time waits are bounded polls for something to happen.

``bounded(fn)`` runs a call that used to hang on a thread of its own and
fails the test when it does not return in time, so a regression fails here
instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

import fault_host
from conftest import wait_until
from helpers import (
    RAISED,
    IteratesBadly,
    RaisesWhenRead,
    Recorder,
    double,
    stubborn,
    until_cancelled,
    worker,
)
from taskvisor.actors import (
    RUNS_KEPT,
    AttemptFinished,
    AttemptStarted,
    CallExecutor,
    Event,
    InvalidSpec,
    ManualClock,
    MemoryStore,
    RecordNotSaved,
    SqliteStore,
    StoreError,
    SystemClock,
    Task,
    TaskActor,
    TaskContext,
    TaskFinished,
    TaskHook,
    TaskPhase,
    TaskRecord,
    TaskSpec,
    TaskState,
    TaskStore,
    TaskvisorError,
    WaitTimeout,
)
from taskvisor.actors._model import ERROR_TEXT_MAX, MAX_SECONDS
from taskvisor.supervision import (
    Backoff,
    DynamicSupervisorSpec,
    Intensity,
    Supervisor,
    SupervisorError,
    SupervisorExhausted,
    SupervisorRef,
    SupervisorSpec,
    spec_from_data,
)
from taskvisor.supervision import _supervisor as supervisor_module

try:  # the error a second owner gets; a StoreError either way
    from taskvisor.actors import StoreLocked  # type: ignore[attr-defined]
except ImportError:
    from taskvisor.actors._errors import StoreLocked

LINUX = sys.platform.startswith("linux")
HERE = Path(__file__).parent

# ------------------------------------------------------------------------------ helpers


def bounded(fn: Callable[[], Any], timeout: float = 20.0, what: str = "the call") -> Any:
    """Run ``fn`` on a thread of its own; fail unless it returns (or raises) within ``timeout``.

    What ``fn`` raised is raised here, so ``pytest.raises`` works around it.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the test thread
            error.append(exc)

    thread = threading.Thread(target=run, name="test-bounded", daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{what} did not return within {timeout}s"
    if error:
        raise error[0]
    return result[0] if result else None


def library_threads(before: set[threading.Thread]) -> list[str]:
    """Names of live threads that were not there in ``before`` (besides the test's own)."""
    return sorted(
        t.name
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith("test-")
    )


def children_of_this_process() -> set[int]:
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except OSError:  # pragma: no cover - Linux has it
        return set()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def count(events: list[Event], kind: type, **fields: Any) -> int:
    return sum(
        1
        for e in events
        if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
    )


def task(name: str, **extra: Any) -> TaskSpec:
    return TaskSpec(name=name, target=worker, shutdown=2.0, **extra)


class LogSizes(logging.Handler):
    """Record the length of each library log line, without passing 1 MB lines to pytest."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.lines.append((len(message), message[:200]))


@contextlib.contextmanager
def log_sizes() -> Iterator[LogSizes]:
    """Collect the library's log lines here only (they do not reach the root logger)."""
    logger = logging.getLogger("taskvisor")
    handler = LogSizes()
    propagate, level = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)


@pytest.fixture
def trees() -> Iterator[list[SupervisorRef]]:
    """Trees a test started: each is stopped (bounded) at the end, even when the test failed."""
    refs: list[SupervisorRef] = []
    yield refs
    for ref in refs:
        bounded(lambda ref=ref: ref.stop(timeout=20), 40, "the final stop")


# ------------------------------------------------------------------------------ fault 1


def test_fault1_stop_returns_with_300_dynamic_call_children() -> None:
    """300 ``call`` children waiting for cancellation: stop() returned after 210 s or never."""
    before = set(threading.enumerate())
    template = TaskSpec(name="w", target=until_cancelled, shutdown=5.0)
    ref = Supervisor.start(DynamicSupervisorSpec("pool", template=template))
    try:
        ids = [ref.start_child(timeout=10) for _ in range(300)]
        assert len(set(ids)) == 300
        assert ref.count_children()["active"] == 300
    finally:
        bounded(lambda: ref.stop(timeout=20), 30, "stop() of 300 call children")
    assert not ref.running
    assert library_threads(before) == []  # stop returned after every thread was gone


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_fault1_stop_returns_with_300_subprocess_children_and_leaves_none() -> None:
    """300 ``sleep 300`` children: stop() hung and 43 processes stayed alive."""
    before = set(threading.enumerate())
    template = TaskSpec(name="s", kind="subprocess", command=["sleep", "300"], shutdown=5.0)
    ref = Supervisor.start(DynamicSupervisorSpec("pool", template=template))
    pids: list[int] = []
    try:
        for _ in range(300):
            ref.start_child(timeout=10)
        rows = ref.which_children()
        pids = [row.pid for row in rows if row.pid is not None]
        assert len(pids) == 300
        assert all(alive(pid) for pid in pids)
    finally:
        bounded(lambda: ref.stop(timeout=20), 30, "stop() of 300 subprocess children")
    assert [pid for pid in pids if alive(pid)] == []
    assert children_of_this_process() & set(pids) == set()  # reaped, not zombies
    assert library_threads(before) == []


# ------------------------------------------------------------------------------ fault 2


@pytest.mark.slow
def test_fault2_a_child_whose_program_is_gone_fails_by_message_until_the_tree_gives_up(
    tmp_path: Path,
) -> None:
    """Restarts that fail to start: a RecursionError after ~330 left the tree hanging."""
    program = tmp_path / "once.sh"
    program.write_text('#!/bin/sh\nrm -f "$0"\nexit 3\n')
    program.chmod(0o755)
    store = MemoryStore()
    recorder = Recorder()
    restarts = 400  # past the ~330 nested starts that blew the stack
    spec = SupervisorSpec(
        "app",
        children=[TaskSpec(name="p", kind="subprocess", command=[str(program)])],
        intensity=Intensity(restarts, 60),
    )
    ref = Supervisor.start(spec, store=store, clock=ManualClock(), hooks=[recorder])
    try:
        with pytest.raises(SupervisorExhausted) as info:
            bounded(lambda: ref.wait(timeout=60), 70, "wait() on a crash-looping tree")
    finally:
        bounded(lambda: ref.stop(timeout=10), 20)
    assert not program.exists()
    assert not ref.running
    assert "app/p" in str(info.value) or any(f.child == "p" for f in info.value.chain)
    record = store.get("app/p")
    assert record is not None
    assert record.attempts == restarts + 1  # every failed start was one ordinary attempt
    assert record.state is TaskState.EXHAUSTED
    assert [run.phase for run in record.runs[:-1]] == [TaskPhase.FAILED] * (len(record.runs) - 1)
    assert record.runs[-1].phase is TaskPhase.EXHAUSTED
    assert count(recorder.events, AttemptStarted, task_id="app/p") == 1  # only the first began


# ------------------------------------------------------------------------------ fault 3


def test_fault3_start_on_a_closed_memory_store_raises_and_leaves_nothing() -> None:
    before = set(threading.enumerate())
    store = MemoryStore()
    store.close()
    with pytest.raises(TaskvisorError):
        bounded(
            lambda: Supervisor.start(SupervisorSpec("app", children=[task("a")]), store=store),
            20,
            "Supervisor.start on a closed store",
        )
    assert wait_until(lambda: library_threads(before) == [])
    assert pykka.ActorRegistry.get_all() == []


def test_fault3_start_on_a_store_with_a_damaged_row_raises_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tree.db"
    with SqliteStore(path) as store:
        store.put(TaskRecord.new("app/a"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE tasks SET data = '{damaged' WHERE id = 'app/a'")
    before = set(threading.enumerate())
    with SqliteStore(path) as store:
        with pytest.raises(TaskvisorError) as info:
            bounded(
                lambda: Supervisor.start(
                    SupervisorSpec("app", children=[task("a"), task("b")]), store=store
                ),
                20,
                "Supervisor.start on a damaged store",
            )
        assert "damaged" in str(info.value)
        assert store.owner is None  # a failed start gives the store back
    assert wait_until(lambda: library_threads(before) == [])
    assert pykka.ActorRegistry.get_all() == []


class HangingStore(MemoryStore):
    """A store whose ``acquire`` or ``get`` blocks until the test lets it go."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.let_go, self.given_back = threading.Event(), threading.Event()

    def acquire(self, owner: str) -> Any:
        if self.where == "acquire":
            self.let_go.wait(30)
        return super().acquire(owner)

    def get(self, task_id: str) -> Any:
        if self.where == "get":
            self.let_go.wait(30)
        return super().get(task_id)

    def release(self) -> None:
        super().release()
        self.given_back.set()


def test_fault3_a_store_whose_acquire_blocks_cannot_hold_start_past_its_timeout() -> None:
    before = set(threading.enumerate())
    store = HangingStore("acquire")
    spec = SupervisorSpec("app", children=[task("a")])
    with pytest.raises(WaitTimeout, match=r"the store's acquire did not return in time"):
        bounded(lambda: Supervisor.start(spec, store=store, timeout=0.5), 20, "start")
    assert pykka.ActorRegistry.get_all() == []  # nothing was started
    store.let_go.set()
    assert store.given_back.wait(10)  # taken late, then given back
    assert store.owner is None
    assert wait_until(lambda: library_threads(before) == [])


def test_fault3_a_store_whose_reads_block_holds_start_to_one_deadline() -> None:
    before = set(threading.enumerate())
    store = HangingStore("get")
    spec = SupervisorSpec("app", children=[task("a")])
    try:
        # One deadline of 2 s for the start and the stop of the failed start, not one each.
        with pytest.raises(WaitTimeout, match=r"did not start within 2\.0s"):
            bounded(lambda: Supervisor.start(spec, store=store, timeout=2), 3.5, "start")
    finally:
        store.let_go.set()
    assert wait_until(lambda: library_threads(before) == [])
    assert pykka.ActorRegistry.get_all() == []


def test_fault3_the_error_of_a_damaged_row_names_the_record(tmp_path: Path) -> None:
    """Bad input gets an error naming where it is: which of the records is damaged."""
    path = tmp_path / "tree.db"
    with SqliteStore(path) as store:
        store.put(TaskRecord.new("app/a"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE tasks SET data = '{damaged' WHERE id = 'app/a'")
    with SqliteStore(path) as store, pytest.raises(TaskvisorError) as info:
        bounded(lambda: Supervisor.start(SupervisorSpec("app", children=[task("a")]), store=store))
    assert "app/a" in str(info.value)


# ------------------------------------------------------------------------------ fault 4


def test_fault4_stop_from_another_thread_then_wait_returns() -> None:
    ref = Supervisor.start(SupervisorSpec("app", children=[task("a"), task("b")]))
    stopper = threading.Thread(target=ref.stop, name="test-stopper")
    try:
        stopper.start()
        assert wait_until(lambda: not ref.running)
        # wait(timeout) does not say "still running" once the stop is on its way.
        bounded(lambda: ref.wait(timeout=10), 20, "wait() after stop() from another thread")
        bounded(ref.wait, 20, "wait() without a timeout")
    finally:
        stopper.join(20)
        bounded(ref.stop, 20)
    assert not stopper.is_alive()


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_fault4_stop_from_a_signal_handler_then_wait_returns() -> None:
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signal handlers run on the main thread")
    ref = Supervisor.start(SupervisorSpec("app", children=[task("a")]))
    handled = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        ref.stop()
        handled.set()

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert wait_until(handled.is_set, 20)
        bounded(lambda: ref.wait(timeout=10), 20, "wait() after a stop in a signal handler")
        assert not ref.running
    finally:
        signal.signal(signal.SIGUSR1, previous)
        bounded(ref.stop, 20)


# ------------------------------------------------------------------------------ fault 5


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_fault5_two_threads_stopping_at_once_both_return_after_everything_is_gone() -> None:
    before = set(threading.enumerate())
    procs_before = children_of_this_process()
    spec = SupervisorSpec(
        "app",
        children=[
            task("a"),
            TaskSpec(name="s", kind="subprocess", command=["sleep", "300"], shutdown=2.0),
            task("b"),
        ],
    )
    ref = Supervisor.start(spec, hooks=[Recorder()])
    seen: dict[str, tuple[list[str], set[int]]] = {}
    go = threading.Barrier(2)

    def stop(name: str) -> None:
        go.wait(10)
        ref.stop(timeout=20)
        seen[name] = (library_threads(before), children_of_this_process() - procs_before)

    stoppers = [
        threading.Thread(target=stop, args=(f"test-stop-{i}",), name=f"test-stop-{i}")
        for i in range(2)
    ]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join(40)
    assert not any(t.is_alive() for t in stoppers), "a stop() did not return"
    assert seen == {"test-stop-0": ([], set()), "test-stop-1": ([], set())}


def test_fault5_stop_from_a_hook_starts_the_stop_and_returns() -> None:
    holder: dict[str, SupervisorRef] = {}
    returned = threading.Event()

    class StopOnFinish(TaskHook):
        def on_finished(self, task_id: str, status: Any) -> None:
            if task_id == "app/once":
                holder["ref"].stop()
                returned.set()

    recorder = Recorder()
    spec = SupervisorSpec("app", children=[task("a"), task("once", restart="temporary")])
    ref = Supervisor.start(spec, hooks=[StopOnFinish(), recorder])
    holder["ref"] = ref
    try:
        assert ref.child("once").ask("exit") == "exiting"
        assert returned.wait(10), "stop() called from a hook did not return"
        bounded(lambda: ref.wait(timeout=10), 20, "wait() after a stop from a hook")
    finally:
        bounded(ref.stop, 20)
    assert not ref.running
    finished = [e.task_id for e in recorder.events if isinstance(e, TaskFinished)]
    assert sorted(finished) == ["app/a", "app/once"]  # the stop still delivered everything


# ------------------------------------------------------------------------------ faults 7, 8


def start_host(store: Path) -> tuple[subprocess.Popen[str], dict[str, int]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    host = subprocess.Popen(
        [sys.executable, str(HERE / "fault_host.py"), str(store)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert host.stdout is not None
    line = host.stdout.readline()
    assert line, "the host printed nothing"
    return host, json.loads(line)


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="reads /proc; PR_SET_PDEATHSIG")
def test_fault7_a_tree_resumed_after_its_host_was_sigkilled_runs_its_child_once(
    tmp_path: Path, hosts: list[subprocess.Popen[str]], trees: list[SupervisorRef]
) -> None:
    path = tmp_path / "tree.db"
    host, pids = start_host(path)
    hosts.append(host)
    old = pids["child"]
    assert alive(old)
    os.kill(host.pid, signal.SIGKILL)
    host.wait(10)
    # The old child died with its host: nothing of the old host still runs.
    assert wait_until(lambda: not alive(old), 10), f"the old child {old} outlived its host"

    old_alive_at_new_start: list[bool] = []

    class Watch(TaskHook):
        def on_event(self, event: Event) -> None:
            if isinstance(event, AttemptStarted) and event.task_id == "host/sleeper":
                old_alive_at_new_start.append(alive(old))

    store = SqliteStore(path)
    try:
        ref = Supervisor.start(fault_host.spec(), store=store, hooks=[Watch()])
        trees.append(ref)
        ref.bus.flush()
        (row,) = ref.which_children()
        assert (row.running, row.attempt) == (True, 2)
        assert row.pid is not None
        assert row.pid != old
        assert alive(row.pid)
        assert old_alive_at_new_start == [False]  # no second copy beside the first
        record = store.get("host/sleeper")
        assert record is not None
        first = record.runs[0]
        assert first.phase is TaskPhase.FAILED
        assert first.error is not None
        assert "lost" in first.error
        assert record.runs[1].is_active
        assert record.attempts == 2
    finally:
        for ref in trees:
            bounded(lambda ref=ref: ref.stop(timeout=10), 20)
        store.close()


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="flock and /proc")
def test_fault8_a_second_tree_on_a_live_store_fails_and_takes_it_over_once_the_owner_died(
    tmp_path: Path, hosts: list[subprocess.Popen[str]], trees: list[SupervisorRef]
) -> None:
    path = tmp_path / "tree.db"
    host, pids = start_host(path)
    hosts.append(host)
    before = set(threading.enumerate())
    with SqliteStore(path) as store:
        with pytest.raises(StoreError) as info:
            bounded(lambda: Supervisor.start(fault_host.spec(), store=store), 20)
        assert isinstance(info.value, StoreLocked)
        assert f"pid {host.pid}" in str(info.value)  # the error names the owner
        assert "'host'" in str(info.value)
        # The refused start changed nothing: the owner's run is still live and running.
        assert wait_until(lambda: library_threads(before) == [])
        record = store.get("host/sleeper")
        assert record is not None
        assert (record.state, record.attempts) == (TaskState.RUNNING, 1)
        assert record.runs[0].is_active
        assert alive(pids["child"])

        os.kill(host.pid, signal.SIGKILL)
        host.wait(10)
        ref = bounded(lambda: Supervisor.start(fault_host.spec(), store=store), 20)
        trees.append(ref)
        try:
            assert store.owner is not None
            assert store.owner.pid == os.getpid()
            (row,) = ref.which_children()
            assert (row.running, row.attempt) == (True, 2)
            assert not alive(pids["child"])
        finally:
            bounded(lambda: ref.stop(timeout=10), 20)
        record = store.get("host/sleeper")
        assert record is not None
        assert record.runs[0].error is not None
        assert "lost" in record.runs[0].error


# ------------------------------------------------------------------------------ fault 9


def returns(ctx: TaskContext, ran: list[int], make: Callable[[], object]) -> object:
    ran.append(ctx.attempt)
    return make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: {1, 2},
        lambda: RaisesWhenRead(SystemExit(9)),
        lambda: RaisesWhenRead(KeyboardInterrupt()),
        lambda: RaisesWhenRead(GeneratorExit()),
        lambda: IteratesBadly(SystemExit(5)),
    ],
    ids=["a set", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "a list's __iter__"],
)
def test_fault9_an_output_that_is_not_json_still_ends_the_record_and_is_not_run_again(
    tmp_path: Path, make: Callable[[], object]
) -> None:
    path = tmp_path / "tree.db"
    ran: list[int] = []
    spec = SupervisorSpec(
        "app",
        children=[
            TaskSpec(name="set", target=returns, args=[ran, make], restart="transient"),
            task("a"),
        ],
    )
    recorder = Recorder()
    with SqliteStore(path) as store:
        ref = Supervisor.start(spec, store=store, hooks=[recorder])
        try:
            assert recorder.wait_for(lambda ev: count(ev, TaskFinished, task_id="app/set") == 1)
            record = store.get("app/set")
        finally:
            bounded(lambda: ref.stop(timeout=10), 20)
    assert record is not None
    assert record.state is TaskState.SUCCEEDED
    assert record.output is None
    assert record.error is not None
    assert "output" in record.error
    assert ran == [1]
    with SqliteStore(path) as store:
        ref = Supervisor.start(spec, store=store)
        try:
            rows = {row.id: row for row in ref.which_children()}
            assert not rows["set"].running
            assert rows["set"].phase is TaskPhase.SUCCEEDED
        finally:
            bounded(lambda: ref.stop(timeout=10), 20)
    assert ran == [1]  # the job was not run again


# ------------------------------------------------------------------------------ fault 10


def test_fault10_a_dynamic_supervisor_restarted_by_its_parent_comes_back_empty(
    trees: list[SupervisorRef],
) -> None:
    recorder = Recorder()
    pool = DynamicSupervisorSpec(
        "pool", template=TaskSpec(name="w", target=worker, shutdown=2.0), intensity=Intensity(0, 5)
    )
    spec = SupervisorSpec("app", children=[task("a"), pool], intensity=Intensity(5, 5))
    ref = Supervisor.start(spec, clock=ManualClock(), hooks=[recorder])
    trees.append(ref)
    handle = ref.child("pool")
    ids = [handle.start_child(timeout=10) for _ in range(3)]
    assert handle.count_children()["active"] == 3
    assert ref.child(f"pool/{ids[1]}").ask("crash") == "crashing"  # pool gives up at once

    def pool_row() -> tuple[str, bool, int]:
        row = ref.which_children()[1]
        return (row.status, row.running, row.attempt)

    assert wait_until(lambda: pool_row() == ("running", True, 2)), pool_row()
    rows = {row.id: row for row in ref.which_children()}
    assert (rows["pool"].running, rows["pool"].attempt) == (True, 2)
    assert rows["a"].attempt == 1  # one_for_one: only the pool was restarted
    handle = ref.child("pool")
    assert handle.which_children() == []
    assert handle.count_children() == {"specs": 0, "active": 0, "supervisors": 0, "workers": 0}
    # None of the old children ran again, and the restarted pool works.
    for i in ids:
        assert count(recorder.events, AttemptStarted, task_id=f"app/pool/{i}") == 1
    new = handle.start_child(timeout=10)
    assert ref.child(f"pool/{new}").ask("hi") == (1, "hi")


# ------------------------------------------------------------------------------ fault 11


def finish_at_once(ctx: TaskContext, contexts: list[weakref.ref[TaskContext]]) -> int:
    contexts.append(weakref.ref(ctx))
    return 1


def live_task_actors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, TaskActor))


#: How many finished children may still be held (a few stopped actors stay referenced by
#: their ended threads until the tree prunes them): a small constant, where all 3,500 were.
HELD = 50


@pytest.mark.slow
def test_fault11_finished_dynamic_children_are_released(trees: list[SupervisorRef]) -> None:
    contexts: list[weakref.ref[TaskContext]] = []
    template = TaskSpec(
        name="q", target=finish_at_once, args=[contexts], restart="temporary", shutdown=2.0
    )
    ref = Supervisor.start(DynamicSupervisorSpec("pool", template=template))
    trees.append(ref)
    gc.collect()
    actors_before = live_task_actors()
    registered_before = len(pykka.ActorRegistry.get_all())
    n = 3500
    for _ in range(n):
        ref.start_child(timeout=10)
    assert wait_until(lambda: ref.count_children()["specs"] == 0, 20)
    assert wait_until(lambda: len(pykka.ActorRegistry.get_all()) <= registered_before + HELD, 20)

    def released() -> bool:
        gc.collect()
        return sum(1 for r in contexts if r() is not None) <= HELD

    assert len(contexts) == n
    assert wait_until(released, 20), (
        f"{sum(1 for r in contexts if r() is not None)} of {n} finished children are still held"
    )
    assert wait_until(lambda: live_task_actors() <= actors_before + HELD, 10), live_task_actors()


# ------------------------------------------------------------------------------ fault 12


def test_fault12_a_child_waiting_out_its_backoff_is_restarting_with_its_attempt_unchanged(
    trees: list[SupervisorRef],
) -> None:
    clock = ManualClock()
    recorder = Recorder()
    spec = SupervisorSpec(
        "app",
        children=[task("a"), task("b")],
        backoff=Backoff(initial=10, maximum=10),
        intensity=Intensity(5, 60),
    )
    ref = Supervisor.start(spec, clock=clock, hooks=[recorder])
    trees.append(ref)
    assert ref.child("b").ask("crash") == "crashing"
    assert wait_until(lambda: ref.which_children()[1].status == "restarting")
    rows = {row.id: row for row in ref.which_children()}
    b = rows["b"]
    assert (b.running, b.attempt, b.phase, b.pid) == (False, 1, TaskPhase.FAILED, None)
    assert b.error is not None
    assert "asked to crash" in b.error
    assert rows["a"].status == "running"
    assert ref.count_children()["active"] == 1
    assert count(recorder.events, AttemptStarted, task_id="app/b") == 1
    clock.advance(10)
    assert recorder.wait_for(lambda ev: count(ev, AttemptStarted, task_id="app/b") == 2)
    assert wait_until(lambda: ref.which_children()[1].status == "running")
    b = ref.which_children()[1]
    assert (b.running, b.attempt, b.restarts) == (True, 2, 1)


def test_fault12_a_restarted_child_is_starting_until_its_attempt_has_begun(
    trees: list[SupervisorRef],
) -> None:
    """Rows never call an attempt running before it began: a restart in place is
    "starting" while its start is under way, and one that cannot start never runs."""
    gate = threading.Event()

    class Gated(CallExecutor):
        def start(self, task: Task, ctx: TaskContext) -> None:
            if ctx.attempt == 2:  # hold the restart's start, then fail it
                gate.wait(10)
                raise RuntimeError("cannot start attempt 2")
            super().start(task, ctx)

    executor = Gated()
    spec = SupervisorSpec("app", children=[task("b")], intensity=Intensity(5, 60))
    ref = Supervisor.start(spec, executors={"call": executor})
    trees.append(ref)
    try:
        assert ref.child("b").ask("crash") == "crashing"
        assert wait_until(lambda: ref.which_children()[0].attempt == 2)
        row = ref.which_children()[0]
        assert (row.status, row.attempt, row.restarts) == ("starting", 2, 1)
        gate.set()
        assert wait_until(lambda: ref.which_children()[0].attempt == 3)
        assert wait_until(lambda: ref.which_children()[0].status == "running")
        row = ref.which_children()[0]
        assert (row.attempt, row.restarts) == (3, 2)
        assert row.error is not None
        assert "cannot start attempt 2" in row.error
    finally:
        gate.set()
        ref.stop(timeout=10)
        executor.close(5)


# ------------------------------------------------------------------------------ fault 13


def test_fault13_a_refused_start_child_checks_the_spec_first_and_leaves_nothing(
    trees: list[SupervisorRef],
) -> None:
    recorder = Recorder()
    ref = Supervisor.start(SupervisorSpec("app", children=[task("a")]), hooks=[recorder])
    trees.append(ref)
    ref.bus.flush()
    threads = set(threading.enumerate())
    actors = len(pykka.ActorRegistry.get_all())
    mark = len(recorder.events)
    significant = task("sig", restart="transient", significant=True)  # a valid TaskSpec
    taken = task("a", restart="transient", significant=True)
    # A significant child under auto_shutdown="never": OTP's bad_combination.
    with pytest.raises(InvalidSpec):
        ref.start_child(significant, timeout=10)
    # The spec is checked before the id: a bad spec under a taken id is a spec error.
    with pytest.raises(InvalidSpec):
        ref.start_child(taken, timeout=10)
    with pytest.raises(SupervisorError) as refused:
        ref.start_child(task("a"), timeout=10)
    assert refused.value.reason in ("already_present", "running")
    ref.bus.flush()
    assert recorder.events[mark:] == []  # nothing was published for a refused child
    assert [row.id for row in ref.which_children()] == ["a"]
    assert len(pykka.ActorRegistry.get_all()) == actors
    assert wait_until(lambda: library_threads(threads) == [])


# ------------------------------------------------------------------------------ fault 14


@pytest.mark.parametrize(
    "make",
    [
        lambda: TaskSpec(name="t", target=double, timeout=1e10),
        lambda: TaskSpec(name="t", target=double, timeout=math.inf),
        lambda: TaskSpec(name="t", target=double, shutdown=1e10),
        lambda: Backoff(initial=1e10, maximum=1e10),
    ],
    ids=["timeout", "timeout-inf", "shutdown", "backoff"],
)
def test_fault14_times_that_would_break_a_timer_are_refused_at_spec_time(
    make: Callable[[], Any],
) -> None:
    with pytest.raises(InvalidSpec):
        make()


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"children": [{"name": "t", "target": "helpers:double", "timeout": 1e10}]}, "timeout"),
        ({"children": [{"name": "t", "target": "helpers:double", "shutdown": 1e10}]}, "shutdown"),
        ({"backoff": {"initial": 1e10, "maximum": 1e10}, "children": []}, "backoff.initial"),
    ],
    ids=["timeout", "shutdown", "backoff"],
)
def test_fault14_a_tree_file_with_such_a_time_is_refused_naming_its_path(
    data: dict[str, Any], path: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        spec_from_data({"name": "app", **data})
    assert path in str(info.value)


def test_fault14_the_longest_times_allowed_do_not_break_the_trees_timers(
    trees: list[SupervisorRef],
) -> None:
    """A task timeout, backoff and grace at MAX_SECONDS: the other timers still fire."""
    recorder = Recorder()
    spec = SupervisorSpec(
        "app",
        children=[
            TaskSpec(
                name="long",
                target=until_cancelled,
                timeout=MAX_SECONDS,
                shutdown=MAX_SECONDS,
                restart="transient",
            ),
            TaskSpec(name="short", target=until_cancelled, timeout=0.2, restart="temporary"),
        ],
        backoff=Backoff(initial=MAX_SECONDS, maximum=MAX_SECONDS),
    )
    ref = Supervisor.start(spec, hooks=[recorder])
    trees.append(ref)
    assert recorder.wait_for(lambda ev: count(ev, AttemptFinished, task_id="app/short") == 1, 10), (
        "the 0.2 s timeout beside a MAX_SECONDS one never fired"
    )
    (finished,) = [
        e for e in recorder.events if isinstance(e, AttemptFinished) and e.task_id == "app/short"
    ]
    assert finished.run.phase is TaskPhase.TIMEOUT
    bounded(lambda: ref.stop(timeout=10), 20, "stop() with a MAX_SECONDS grace")
    assert not ref.running
    assert count(recorder.events, TaskFinished, task_id="app/long") == 1


# ------------------------------------------------------------------------------ fault 15


class Blocking(TaskHook):
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def on_event(self, event: Event) -> None:
        self.entered.set()
        self.release.wait(60)


def test_fault15_blocked_hooks_do_not_hold_stop_past_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = [Blocking() for _ in range(3)]
    ref = Supervisor.start(SupervisorSpec("app", children=[task("a")]), hooks=stuck)
    returned_while_blocked = False
    try:
        assert all(h.entered.wait(10) for h in stuck)
        with caplog.at_level("ERROR", logger="taskvisor"):
            bounded(lambda: ref.stop(timeout=1.0), 10, "stop(1.0) with three blocked hooks")
        returned_while_blocked = not any(h.release.is_set() for h in stuck)
        stats = ref.bus.stats()
    finally:
        for hook in stuck:
            hook.release.set()
    assert returned_while_blocked
    assert sorted(stats.abandoned) == sorted(repr(h) for h in stuck)  # reported
    for hook in stuck:
        assert repr(hook) in caplog.text


# ------------------------------------------------------------------------------ fault 16

LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()  # held until the test says so
db.execute("COMMIT")
db.close()
print("released", flush=True)
"""


@pytest.mark.slow
def test_fault16_records_not_saved_under_a_foreign_write_lock_are_reported_and_saved_later(
    tmp_path: Path, trees: list[SupervisorRef]
) -> None:
    """Another process holds the write lock (a short store timeout): nothing is lost silently."""
    path = tmp_path / "tree.db"
    SqliteStore(path).close()  # the schema exists before the other process locks it
    names = [f"t{i}" for i in range(5)]
    ids = {f"app/{n}" for n in names}

    def stored() -> list[TaskRecord | None]:
        with SqliteStore(path) as reader:  # reads are not blocked by the writer (WAL)
            return [reader.get(i) for i in sorted(ids)]

    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    store = SqliteStore(path, timeout=0.05)
    try:
        assert locker.stdout is not None
        assert locker.stdin is not None
        assert locker.stdout.readline() == "locked\n"
        recorder = Recorder()
        spec = SupervisorSpec(
            "app",
            children=[
                TaskSpec(name=n, target=double, args=[i], restart="transient")
                for i, n in enumerate(names)
            ],
        )
        ref = bounded(lambda: Supervisor.start(spec, store=store, hooks=[recorder]), 30)
        trees.append(ref)
        # While the lock is held: the tasks still end, each failed save is an event,
        # and the tree names the records it could not save.
        assert recorder.wait_for(lambda ev: count(ev, TaskFinished) == 5, 20)
        not_saved = {e.task_id for e in recorder.events if isinstance(e, RecordNotSaved)}
        assert not_saved == ids
        assert ref.unsaved == ids
        assert stored() == [None] * 5
        locker.stdin.write("go\n")
        locker.stdin.flush()
        assert locker.stdout.readline() == "released\n"
        # Saved once the lock is gone (the saves are retried), and no longer named.
        assert wait_until(
            lambda: all(r is not None and r.state is TaskState.SUCCEEDED for r in stored()), 20
        )
        assert wait_until(lambda: ref.unsaved == frozenset())
    finally:
        locker.kill()
        locker.wait(10)
        for pipe in (locker.stdin, locker.stdout):
            if pipe is not None:
                pipe.close()
        for ref in trees:
            bounded(lambda ref=ref: ref.stop(timeout=10), 20)
        trees.clear()
        store.close()
    with SqliteStore(path) as reader:
        for i, n in enumerate(names):
            record = reader.get(f"app/{n}")
            assert record is not None
            assert (record.state, record.output) == (TaskState.SUCCEEDED, 2 * i)


# ------------------------------------------------------------------------------ fault 18


def crash_with_a_megabyte(ctx: TaskContext) -> None:
    raise ValueError("x" * 1_000_000)


def test_fault18_a_crash_loop_with_a_1mb_error_keeps_the_stored_record_small(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tree.db"
    restarts = 60
    spec = SupervisorSpec(
        "app",
        children=[TaskSpec(name="big", target=crash_with_a_megabyte)],
        intensity=Intensity(restarts, 60),
    )
    with SqliteStore(path) as store, log_sizes():
        ref = Supervisor.start(spec, store=store, clock=ManualClock())
        try:
            with pytest.raises(SupervisorExhausted) as info:
                bounded(lambda: ref.wait(timeout=30), 40)
        finally:
            bounded(lambda: ref.stop(timeout=10), 20)
        record = store.get("app/big")
    assert len(str(info.value)) < 100_000
    assert record is not None
    assert record.attempts == restarts + 1
    assert 0 < len(record.runs) <= RUNS_KEPT
    for run in record.runs:
        assert run.error is not None
        assert len(run.error) <= ERROR_TEXT_MAX
    assert record.error is None or len(record.error) <= ERROR_TEXT_MAX
    with sqlite3.connect(path) as db:
        (head,) = db.execute("SELECT length(data) FROM tasks WHERE id = 'app/big'").fetchone()
        (runs,) = db.execute(
            "SELECT coalesce(sum(length(data)), 0) FROM runs WHERE task_id = 'app/big'"
        ).fetchone()
    assert head + runs < (RUNS_KEPT + 2) * (ERROR_TEXT_MAX + 2048)  # 47 MB before the fix


def test_fault18_the_restart_log_of_a_crash_loop_bounds_the_error_text() -> None:
    """Each restart is logged at WARNING with its error: cut like a stored one, not 1 MB."""
    spec = SupervisorSpec(
        "app",
        children=[TaskSpec(name="big", target=crash_with_a_megabyte)],
        intensity=Intensity(2, 60),
    )
    with log_sizes() as logs:
        ref = Supervisor.start(spec, clock=ManualClock())
        try:
            with pytest.raises(SupervisorExhausted):
                bounded(lambda: ref.wait(timeout=30), 40)
        finally:
            bounded(lambda: ref.stop(timeout=10), 20)
    assert sum(1 for _, text in logs.lines if "restarting big" in text) == 2
    too_long = [(size, text[:100]) for size, text in logs.lines if size > 2 * ERROR_TEXT_MAX]
    assert too_long == []


# ------------------------------------------------------------------------------ fault 19


class DelegatingStore:
    """A store that hands every call to ``inner``; subclasses change what they test."""

    def __init__(self, inner: TaskStore) -> None:
        self.inner = inner

    def acquire(self, owner: str) -> Any:
        return self.inner.acquire(owner)

    def release(self) -> None:
        self.inner.release()

    def put(self, record: TaskRecord) -> None:
        self.inner.put(record)

    def get(self, task_id: str) -> TaskRecord | None:
        return self.inner.get(task_id)

    def list(self, *, state: TaskState | None = None) -> list[TaskRecord]:
        return self.inner.list(state=state)

    def delete(self, task_id: str) -> bool:
        return self.inner.delete(task_id)

    def transition(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.transition(*args, **kwargs)

    def close(self) -> None:
        self.inner.close()


class GatedStore(DelegatingStore):
    """A store whose ``n``-th ``get`` of one id blocks until released (a slow start-up)."""

    def __init__(self, inner: TaskStore, task_id: str, nth: int) -> None:
        super().__init__(inner)
        self.task_id = task_id
        self.nth = nth
        self.gets = 0
        self.blocked = threading.Event()
        self.release_gate = threading.Event()

    def get(self, task_id: str) -> TaskRecord | None:
        if task_id == self.task_id:
            self.gets += 1
            if self.gets == self.nth:
                self.blocked.set()
                self.release_gate.wait(30)
        return self.inner.get(task_id)


def test_fault19_a_finished_tasks_record_is_terminal_while_the_tree_is_still_starting(
    tmp_path: Path,
) -> None:
    n = 200
    names = [f"c{i:04d}" for i in range(n)]
    spec = SupervisorSpec(
        "app",
        children=[
            TaskSpec(name=name, target=double, args=[i], restart="transient")
            for i, name in enumerate(names)
        ],
    )
    with SqliteStore(tmp_path / "tree.db") as inner:
        # The start-up stalls when it creates c0150 (its second read: the first is at boot).
        store = GatedStore(inner, "app/c0150", nth=2)
        result: list[Any] = []
        starter = threading.Thread(
            target=lambda: result.append(Supervisor.start(spec, store=store, timeout=60)),
            name="test-starter",
        )
        starter.start()
        try:
            assert store.blocked.wait(20), "the start-up never reached c0150"
            assert starter.is_alive()  # the tree is still starting

            def terminal(i: int) -> bool:
                record = inner.get(f"app/{names[i]}")
                return record is not None and record.state is TaskState.SUCCEEDED

            assert wait_until(lambda: all(terminal(i) for i in range(100)), 10), [
                names[i] for i in range(100) if not terminal(i)
            ]
            assert starter.is_alive()
            assert not store.release_gate.is_set()
            record = inner.get("app/c0007")
            assert record is not None
            assert record.output == 14
        finally:
            store.release_gate.set()
            starter.join(30)
            for ref in result:
                bounded(lambda ref=ref: ref.stop(timeout=10), 20)
        assert not starter.is_alive()
        assert len(result) == 1


# ------------------------------------------------------------------------------ fault injection


KINDS = RAISED
KIND_IDS = [k.__name__ for k in KINDS]


def raise_once_then_serve(ctx: TaskContext, kind: type[BaseException]) -> str:
    if ctx.attempt == 1:
        raise kind("injected")
    return worker(ctx)


class RaisingHook(Recorder):
    def __init__(self, kind: type[BaseException]) -> None:
        super().__init__()
        self.kind = kind

    def on_event(self, event: Event) -> None:
        super().on_event(event)
        raise self.kind("injected")


def stop_and_wait_are_bounded(ref: SupervisorRef) -> None:
    bounded(lambda: ref.stop(timeout=10), 20, "stop()")
    with contextlib.suppress(SupervisorExhausted):
        bounded(lambda: ref.wait(timeout=10), 20, "wait()")
    assert not ref.running


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_injected_a_hook_raising_any_base_exception_breaks_nothing(
    kind: type[BaseException],
) -> None:
    bad = RaisingHook(kind)
    good = Recorder()
    ref = bounded(
        lambda: Supervisor.start(
            SupervisorSpec("app", children=[task("a"), task("b")]),
            hooks=[bad, good],
            clock=ManualClock(),
        )
    )
    try:
        assert bounded(lambda: ref.child("a").ask("crash")) == "crashing"
        assert good.wait_for(lambda ev: count(ev, AttemptStarted, task_id="app/a") == 2)
        assert bad.wait_for(lambda ev: count(ev, AttemptStarted, task_id="app/a") == 2)
        assert bounded(lambda: ref.child("a").ask("hi")) == (2, "hi")
        assert ref.running
        assert sum(ref.bus.stats().errors.values()) >= len(bad.events)
    finally:
        stop_and_wait_are_bounded(ref)
    assert count(good.events, TaskFinished) == 2


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_injected_a_timer_callback_raising_any_base_exception_stops_no_other_timer(
    kind: type[BaseException],
) -> None:
    clock = ManualClock()
    recorder = Recorder()
    spec = SupervisorSpec(
        "app",
        children=[task("a")],
        backoff=Backoff(initial=1.0, maximum=1.0),
        intensity=Intensity(5, 60),
    )
    ref = bounded(lambda: Supervisor.start(spec, hooks=[recorder], clock=clock))
    ran: list[str] = []

    def bad() -> None:
        ran.append("bad")
        raise kind("injected")

    try:
        assert bounded(lambda: ref.child("a").ask("crash")) == "crashing"
        assert wait_until(lambda: ref.which_children()[0].status == "restarting")
        clock.call_later(0.5, bad)  # due before the tree's backoff timer, on the tree's clock
        bounded(lambda: clock.advance(1.0), 10, "advance() past a raising callback")
        assert ran == ["bad"]
        assert recorder.wait_for(lambda ev: count(ev, AttemptStarted, task_id="app/a") == 2)
        assert bounded(lambda: ref.child("a").ask("hi")) == (2, "hi")
        assert ref.running
    finally:
        stop_and_wait_are_bounded(ref)


def test_injected_raising_callbacks_on_the_trees_system_clock_stop_no_other_timer() -> None:
    """The timer thread of a real clock survives every kind; a task's timeout still fires."""
    clock = SystemClock(keep_thread=True)
    recorder = Recorder()
    ran: list[str] = []

    def raiser(kind: type[BaseException]) -> Callable[[], None]:
        def bad() -> None:
            ran.append(kind.__name__)
            raise kind("injected")

        return bad

    spec = SupervisorSpec(
        "app",
        children=[
            task("a"),
            TaskSpec(name="short", target=until_cancelled, timeout=0.3, restart="temporary"),
        ],
    )
    ref = bounded(lambda: Supervisor.start(spec, hooks=[recorder], clock=clock))
    try:
        for kind in KINDS:
            clock.call_later(0.0, raiser(kind))
        assert wait_until(lambda: len(ran) == len(KINDS))
        assert recorder.wait_for(lambda ev: count(ev, AttemptFinished, task_id="app/short") == 1)
        (ended,) = [
            e
            for e in recorder.events
            if isinstance(e, AttemptFinished) and e.task_id == "app/short"
        ]
        assert ended.run.phase is TaskPhase.TIMEOUT
        assert bounded(lambda: ref.child("a").ask("hi")) == (1, "hi")
    finally:
        stop_and_wait_are_bounded(ref)
        clock.close(10)
    assert ran == KIND_IDS


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_injected_work_raising_any_base_exception_is_a_failed_attempt(
    kind: type[BaseException],
) -> None:
    recorder = Recorder()
    spec = SupervisorSpec(
        "app",
        children=[TaskSpec(name="w", target=raise_once_then_serve, args=[kind], shutdown=2.0)],
        intensity=Intensity(3, 60),
    )
    ref = bounded(lambda: Supervisor.start(spec, hooks=[recorder], clock=ManualClock()))
    try:
        assert recorder.wait_for(lambda ev: count(ev, AttemptStarted, task_id="app/w") == 2)
        assert bounded(lambda: ref.child("w").ask("hi")) == (2, "hi")
        first = next(e for e in recorder.events if isinstance(e, AttemptFinished))
        assert first.run.phase is TaskPhase.FAILED
        assert first.run.error is not None
        assert kind.__name__ in first.run.error
        assert ref.running
    finally:
        stop_and_wait_are_bounded(ref)


class RaisingStore(DelegatingStore):
    """A MemoryStore whose put and/or get raise ``kind``."""

    def __init__(self, kind: type[BaseException], *, put: bool, get: bool) -> None:
        super().__init__(MemoryStore())
        self.kind = kind
        self.fail_put = put
        self.fail_get = get
        self.raised = 0

    def _raise(self) -> None:
        self.raised += 1
        raise self.kind("injected")

    def put(self, record: TaskRecord) -> None:
        if self.fail_put:
            self._raise()
        self.inner.put(record)

    def get(self, task_id: str) -> TaskRecord | None:
        if self.fail_get:
            self._raise()
        return self.inner.get(task_id)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_injected_a_store_whose_put_raises_any_base_exception_is_reported_and_runs_on(
    kind: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    before = set(threading.enumerate())
    store = RaisingStore(kind, put=True, get=False)
    recorder = Recorder()
    spec = SupervisorSpec("app", children=[task("a"), task("b")], intensity=Intensity(3, 60))
    ref = bounded(
        lambda: Supervisor.start(spec, store=store, hooks=[recorder], clock=ManualClock())
    )
    try:
        # Every waiter returns, and the tree runs on: a failed save is not a failed task.
        assert bounded(lambda: ref.child("a").ask("hi", timeout=5)) == (1, "hi")
        assert [row.status for row in bounded(ref.which_children)] == ["running", "running"]
        assert bounded(ref.count_children)["active"] == 2
        with pytest.raises(SupervisorError):
            bounded(lambda: ref.restart_child("zzz"))
        assert recorder.wait_for(
            lambda ev: (
                {e.task_id for e in ev if isinstance(e, RecordNotSaved)} == {"app/a", "app/b"}
            )
        )
        assert ref.unsaved == {"app/a", "app/b"}  # the failed saves are named
        error = next(e.error for e in recorder.events if isinstance(e, RecordNotSaved))
        assert kind.__name__ in error
        # A crash is still handled by the policy.
        assert bounded(lambda: ref.child("b").ask("crash", timeout=5)) == "crashing"
        assert recorder.wait_for(lambda ev: count(ev, AttemptStarted, task_id="app/b") == 2)
        assert ref.running
    finally:
        with caplog.at_level("ERROR", logger="taskvisor"):
            stop_and_wait_are_bounded(ref)
    assert store.raised > 0
    assert "could not be saved" in caplog.text  # stop() reports what it could not save
    assert wait_until(lambda: library_threads(before) == [])


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_injected_a_store_whose_get_raises_any_base_exception_fails_the_start_in_bounds(
    kind: type[BaseException],
) -> None:
    before = set(threading.enumerate())
    store = RaisingStore(kind, put=False, get=True)
    spec = SupervisorSpec("app", children=[task("a"), task("b")])
    with pytest.raises(TaskvisorError):
        bounded(lambda: Supervisor.start(spec, store=store, timeout=10), 30)
    assert store.raised > 0
    assert store.inner.owner is None  # the store was given back
    assert wait_until(lambda: library_threads(before) == [])


# ------------------------------------------------------------------------------ stop()'s contract


def test_stop_is_idempotent_and_safe_from_any_thread() -> None:
    before = set(threading.enumerate())
    ref = Supervisor.start(SupervisorSpec("app", children=[task("a")]))
    bounded(lambda: ref.stop(timeout=10), 20)
    assert library_threads(before) == []
    for _ in range(3):  # again, from this thread and from others: at once, nothing to do
        bounded(ref.stop, 5)
        bounded(lambda: ref.stop(timeout=0), 5)
    bounded(ref.wait, 5)
    assert not ref.running


@pytest.mark.parametrize("broken", ["stop_node", "clock.close"])
def test_a_stop_that_breaks_part_way_still_kills_and_releases_everything(
    broken: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Fault injection inside the stop itself: the root can never be told to
    # stop, or closing the timer thread fails once. The stop logs it, kills
    # what is left and releases every thread and process; the tree counts as
    # stopped.
    before = set(threading.enumerate())
    spec = SupervisorSpec(
        "app",
        children=[task("a"), TaskSpec(name="p", kind="subprocess", command=["sleep", "300"])],
    )
    ref = Supervisor.start(spec)
    pid = ref.which_children()[1].pid
    assert pid is not None
    if broken == "stop_node":

        def refuse(*_args: Any, **_kwargs: Any) -> None:
            raise RuntimeError("injected: the root cannot be told to stop")

        monkeypatch.setattr(supervisor_module._SupervisorPort, "stop_node", refuse)
    else:
        clock = ref._runtime.real_clock
        close = clock.close
        calls = []

        def close_once_broken(timeout: float | None = 10.0) -> None:
            calls.append(timeout)
            if len(calls) == 1:
                raise RuntimeError("injected: the timer thread cannot be closed")
            close(timeout)

        monkeypatch.setattr(clock, "close", close_once_broken)
    with caplog.at_level(logging.ERROR, logger="taskvisor"):
        bounded(lambda: ref.stop(timeout=10), 20)
    assert "stopping the tree failed: killing what is left" in caplog.text
    assert not ref.running
    bounded(lambda: ref.wait(5), 10)
    assert wait_until(lambda: library_threads(before) == [])
    assert wait_until(lambda: not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[1].split()[0] != "Z"


def stop_own_tree(ctx: TaskContext, holder: dict[str, Any], returned: threading.Event) -> str:
    ready = holder["ready"]
    assert isinstance(ready, threading.Event)
    ready.wait(10)
    holder["ref"].stop()
    returned.set()
    ctx.wait_cancelled(30)
    return "stopped"


def test_stop_from_a_tasks_own_work_starts_the_stop_and_returns() -> None:
    holder: dict[str, Any] = {"ready": threading.Event()}
    returned = threading.Event()
    spec = SupervisorSpec(
        "app",
        children=[
            task("a"),
            TaskSpec(name="self", target=stop_own_tree, args=[holder, returned], shutdown=5.0),
        ],
    )
    ref = Supervisor.start(spec)
    holder["ref"] = ref
    holder["ready"].set()
    try:
        assert returned.wait(10), "stop() from the task's own work did not return"
        bounded(lambda: ref.wait(timeout=10), 20, "wait() after a task stopped its tree")
    finally:
        bounded(ref.stop, 20)
    assert not ref.running


def test_wait_returns_once_the_tree_shut_itself_down_and_stop_then_returns_at_once() -> None:
    before = set(threading.enumerate())
    recorder = Recorder()
    spec = SupervisorSpec(
        "app",
        children=[task("a"), task("sig", restart="transient", significant=True)],
        auto_shutdown="any_significant",
    )
    ref = Supervisor.start(spec, hooks=[recorder])
    try:
        assert ref.child("sig").ask("exit") == "exiting"
        bounded(lambda: ref.wait(timeout=10), 20, "wait() on a tree that shut itself down")
        assert not ref.running
        # Released like a stopped tree, before anyone called stop().
        assert wait_until(lambda: library_threads(before) == [])
    finally:
        bounded(ref.stop, 5, "stop() after the tree ended by itself")
    assert count(recorder.events, TaskFinished) == 2


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_a_tree_that_gave_up_released_its_threads_and_processes_before_any_stop() -> None:
    before = set(threading.enumerate())
    procs_before = children_of_this_process()
    spec = SupervisorSpec(
        "app",
        children=[
            TaskSpec(name="s", kind="subprocess", command=["sleep", "300"], shutdown=2.0),
            task("a"),
        ],
        intensity=Intensity(0, 5),
    )
    ref = Supervisor.start(spec, clock=ManualClock())
    try:
        (pid,) = [row.pid for row in ref.which_children() if row.pid is not None]
        assert ref.child("a").ask("crash") == "crashing"
        with pytest.raises(SupervisorExhausted):
            bounded(lambda: ref.wait(timeout=10), 20, "wait() on a tree that gave up")
        assert not ref.running
        assert wait_until(lambda: library_threads(before) == [])
        assert children_of_this_process() - procs_before == set()
        assert not alive(pid)
    finally:
        bounded(ref.stop, 5, "stop() after the tree gave up")
    with pytest.raises(SupervisorExhausted):  # every later waiter gets the same answer
        bounded(lambda: ref.wait(timeout=1), 5)


async def swallows_every_cancel(ctx: TaskContext) -> None:
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(100)


@pytest.mark.parametrize("timeout", [30.0, None])
def test_a_coroutine_that_keeps_swallowing_cancels_is_abandoned_after_its_grace_on_stop(
    timeout: float | None, capfd: pytest.CaptureFixture[str]
) -> None:
    # Once its grace is over the coroutine is given up; closing the event loop
    # must not wait for it again (it used to wait half the deadline, and
    # forever with no deadline). What asyncio says of it goes to our logger.
    before = set(threading.enumerate())
    spec = SupervisorSpec(
        "app",
        children=[TaskSpec(name="a", kind="async", target=swallows_every_cancel, shutdown=0.2)],
    )
    ref = Supervisor.start(spec)
    bounded(lambda: ref.stop(timeout), 10, "stop")
    assert library_threads(before) == []
    assert "Task was destroyed" not in capfd.readouterr().err


def test_stop_with_a_call_that_ignores_cancellation_returns_by_its_deadline() -> None:
    release = threading.Event()
    recorder = Recorder()
    spec = SupervisorSpec(
        "app",
        children=[
            task("a"),
            TaskSpec(name="stubborn", target=stubborn, args=[release], shutdown=30.0),
        ],
    )
    ref = Supervisor.start(spec, hooks=[recorder])
    try:
        stopped = threading.Event()
        stopper = threading.Thread(
            target=lambda: (ref.stop(timeout=1.0), stopped.set()), name="test-stopper"
        )
        stopper.start()
        # The deadline is 1 s; the grace of 30 s is not waited out.
        assert stopped.wait(10), "stop(timeout=1.0) did not return near its deadline"
        assert not release.is_set()  # the work still ignores its cancel
        stopper.join(5)
    finally:
        release.set()
    finished = [
        e for e in recorder.events if isinstance(e, TaskFinished) and e.task_id == "app/stubborn"
    ]
    assert len(finished) == 1
    error = finished[0].status.error
    assert error is not None
    assert "abandon" in error
