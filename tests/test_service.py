"""ExecutorService: submissions, rejections, ordering under load, shutdown, resume."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from pathlib import Path

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import wait_until
from helpers import Recorder, double, fail, stubborn, until_cancelled
from taskvisor.actors import (
    ExecutorService,
    RejectReason,
    SqliteStore,
    StoreLocked,
    SubmissionError,
    TaskPhase,
    TaskRecord,
    TaskRejected,
    TaskRun,
    TaskSpec,
    TaskState,
    WaitTimeout,
)


def test_rejections_carry_a_reason_and_no_task_id() -> None:
    rec = Recorder()
    release = threading.Event()
    with ExecutorService(hooks=[rec], max_tasks=1) as svc:
        with pytest.raises(SubmissionError) as invalid:
            svc.submit({"name": "x", "target": "json:dumps", "restart": "always"})
        assert invalid.value.reason is RejectReason.INVALID_SPEC
        assert "spec.restart: expected one of permanent, transient, temporary" in str(invalid.value)
        with pytest.raises(SubmissionError) as unknown_kind:
            svc.submit(TaskSpec(name="k", kind="quantum", target=double))
        assert unknown_kind.value.reason is RejectReason.INVALID_SPEC
        busy = svc.submit(TaskSpec(name="busy", target=stubborn, args=[release]))
        with pytest.raises(SubmissionError) as full:
            svc.submit(TaskSpec(name="more", target=double, args=[1]))
        assert full.value.reason is RejectReason.CAPACITY
        release.set()
        busy.wait(10)
        with pytest.raises(SubmissionError) as dup:  # finished, but get() still finds it
            svc.submit(TaskSpec(name="busy", target=double, args=[1]))
        assert dup.value.reason is RejectReason.DUPLICATE_ID
        assert svc.submit(TaskSpec(name="more", target=double, args=[1])).result(10) == 2
    with pytest.raises(SubmissionError) as closed:
        svc.submit(TaskSpec(name="late", target=double, args=[1]))
    assert closed.value.reason is RejectReason.SHUTTING_DOWN
    rejected = [e for e in rec.events if isinstance(e, TaskRejected)]
    assert [e.reason for e in rejected] == [
        RejectReason.INVALID_SPEC,
        RejectReason.INVALID_SPEC,
        RejectReason.CAPACITY,
        RejectReason.DUPLICATE_ID,
    ]  # the one after shutdown is rejected too, but the bus has stopped
    assert not hasattr(rejected[0], "task_id")
    assert set(rec.per_task()) == {"busy", "more"}


def test_handle_views_and_explicit_ids() -> None:
    with ExecutorService() as svc:
        h1 = svc.submit(TaskSpec(name="same", target=double, args=[1]), id="one")
        h2 = svc.submit(TaskSpec(name="same", target=double, args=[2]), id="two")
        assert (h1.result(10), h2.result(10)) == (2, 4)
        assert svc.get("two") is h2
        assert svc.handles() == [h1, h2]
        assert h1.status().metadata.id == "one"
        assert h1.status().metadata.name == "same"
        assert h1.done()
        assert "done" in repr(h1)
        slow = svc.submit(TaskSpec(name="slow", target=until_cancelled))
        with pytest.raises(WaitTimeout):
            slow.wait(0.01)
        assert slow.status().status.phase in (TaskPhase.PENDING, TaskPhase.RUNNING)


OUTCOMES = st.sampled_from(["ok", "fail", "cancel"])


@settings(max_examples=15)
@given(plan=st.lists(st.lists(OUTCOMES, min_size=1, max_size=6), min_size=1, max_size=4))
def test_many_submitters_keep_per_task_order(plan: list[list[str]]) -> None:
    """Tasks from several threads with random outcomes: hooks see a lawful order."""
    first, second = Recorder(), Recorder()
    expected: dict[str, TaskPhase] = {}
    with ExecutorService(hooks=[first, second]) as svc:

        def submit_all(n: int, outcomes: list[str]) -> None:
            for i, outcome in enumerate(outcomes):
                name = f"t{n}-{i}"
                if outcome == "ok":
                    spec = TaskSpec(name=name, target=double, args=[i])
                    expected[name] = TaskPhase.SUCCEEDED
                elif outcome == "fail":
                    spec = TaskSpec(name=name, target=fail)
                    expected[name] = TaskPhase.FAILED
                else:
                    spec = TaskSpec(name=name, target=until_cancelled)
                    expected[name] = TaskPhase.CANCELLED
                handle = svc.submit(spec)
                if outcome == "cancel":
                    handle.cancel()

        threads = [
            threading.Thread(target=submit_all, args=(n, outcomes))
            for n, outcomes in enumerate(plan)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name, phase in expected.items():
            assert svc.get(name).wait(10).status.phase is phase
    assert first.events == second.events
    assert first.calls == second.calls
    for name, calls in first.per_task().items():
        assert calls[0] == "accepted"
        assert calls.count("finished") == 1
        assert calls[-1] == "finished"
        assert calls in (["accepted", "started", "finished"], ["accepted", "finished"])
        if expected[name] is not TaskPhase.CANCELLED:
            assert "started" in calls
    finished = {arg[0]: arg[1] for name, arg in first.calls if name == "finished"}
    assert finished == expected


def test_shutdown_cancels_running_tasks_and_returns_when_all_is_gone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "tasks.db")
    rec = Recorder()
    svc = ExecutorService(hooks=[rec], store=store)
    handles = [
        svc.submit(TaskSpec(name="call", target=until_cancelled)),
        svc.submit(TaskSpec(name="proc", kind="subprocess", command=["sleep", "60"])),
    ]
    svc.shutdown()
    store.close()
    for handle in handles:
        assert handle.wait(0).status.phase is TaskPhase.CANCELLED
    open_files = {
        os.readlink(f"/proc/self/fd/{fd}")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    }
    assert not any(str(tmp_path) in path for path in open_files)
    assert sorted(c for c in rec.calls if c[0] == "finished") == [
        ("finished", ("call", TaskPhase.CANCELLED)),
        ("finished", ("proc", TaskPhase.CANCELLED)),
    ]
    # shutdown joined what it started: no taskvisor thread is left, at once
    assert [t.name for t in threading.enumerate() if t.name.startswith("taskvisor")] == []


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), 0.3])
def test_a_shutdown_that_runs_out_of_time_still_ends_every_handle(timeout: float) -> None:
    # A running task that does not end in time and one still queued: once
    # shutdown returns, each handle is done (CANCELLED, saying why), its
    # waiters return and status() answers at once.
    release = threading.Event()
    svc = ExecutorService(max_running=1)
    running = svc.submit(TaskSpec(name="stubborn", target=stubborn, args=[release], shutdown=30))
    queued = svc.submit(TaskSpec(name="queued", target=double, args=[2]))
    assert wait_until(lambda: running.status().status.attempt == 1)
    try:
        svc.shutdown(timeout)
        for handle, attempt in ((running, 1), (queued, 0)):
            assert handle.done()
            task = handle.wait(0)
            assert task.status.phase is TaskPhase.CANCELLED
            assert task.status.attempt == attempt
            assert task.status.error  # why: given up at the deadline, or cancelled unstarted
            assert handle.status().status.phase is TaskPhase.CANCELLED
        assert "shut down before the task ended" in (running.wait(0).status.error or "")
    finally:
        release.set()  # the abandoned thread ends
    # With no time to wait, the actors told to stop end by themselves, moments later.
    assert wait_until(lambda: not pykka.ActorRegistry.get_all())


def test_records_are_persisted_and_resume_skips_finished_work(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SqliteStore(path) as store, ExecutorService(store=store) as svc:
        assert svc.submit(TaskSpec(name="done", target=double, args=[21])).result(10) == 42
        record = store.get("done")
        assert record is not None
        assert record.state is TaskState.SUCCEEDED
        assert record.output == 42
        assert record.attempts == 1
        assert [r.phase for r in record.runs] == [TaskPhase.SUCCEEDED]
        # A record left RUNNING by a process that died.
        lost = TaskRecord.new("lost")
        lost.transition(TaskState.RUNNING)
        lost.runs.append(TaskRun.starting(1))
        store.put(lost)
    calls: list[int] = []

    def counting(ctx: object, x: int) -> int:
        calls.append(x)
        return x

    rec = Recorder()
    with SqliteStore(path) as store, ExecutorService(store=store, hooks=[rec]) as svc:
        again = svc.submit(TaskSpec(name="done", target=counting, args=[1]))
        assert again.result(10) == 42  # restored, not re-run
        rerun = svc.submit(TaskSpec(name="lost", target=counting, args=[7]))
        assert rerun.result(10) == 7
        runs = rerun.runs()
        record = store.get("lost")
    assert calls == [7]
    assert rec.per_task()["done"] == ["accepted", "finished"]
    assert record is not None
    assert record.attempts == 2
    assert record.runs[0].phase is TaskPhase.FAILED
    assert "lost" in (record.runs[0].error or "")
    assert runs[-1].attempt == 2


# --------------------------------------------------------------------------- kind F


def _task_actors() -> set[int]:
    from taskvisor.actors._actor import TaskActor

    gc.collect()
    return {id(o) for o in gc.get_objects() if isinstance(o, TaskActor)}


def test_finished_tasks_release_their_actor_and_unheld_handles() -> None:
    """Fault 11: a finished task's actor is freed, and its handle once nobody holds it."""
    with ExecutorService(keep_finished=0) as svc:
        ran = threading.Event()

        def note(ctx: object) -> str:
            ran.set()
            return "ok"

        # A new actor thread keeps its first job in Thread._args (ActorThreads,
        # _base.py): let a first task take that place.
        assert svc.submit(TaskSpec(name="first", target=double, args=[1])).result(10) == 2
        before = _task_actors()
        handle = svc.submit(TaskSpec(name="t", target=note))
        (new,) = _task_actors() - before
        actor = weakref.ref(next(o for o in gc.get_objects() if id(o) == new))
        assert handle.result(10) == "ok"
        assert svc.get("t") is handle  # held: still found
        assert handle.runs()[-1].phase is TaskPhase.SUCCEEDED  # and still answers
        held = weakref.ref(handle)
        with pytest.raises(SubmissionError):  # its id is taken while the handle is held
            svc.submit(TaskSpec(name="t", target=note))
        del handle
        assert wait_until(lambda: gc.collect() >= 0 and actor() is None)
        assert held() is None
        with pytest.raises(KeyError):
            svc.get("t")
        assert "t" not in [h.id for h in svc.handles()]
        again = svc.submit(TaskSpec(name="t", target=double, args=[3]))  # the id is free again
        assert again.result(10) == 6
        assert svc.get("t") is again


def test_finished_handles_kept_are_bounded() -> None:
    with ExecutorService(keep_finished=3) as svc:
        for i in range(20):
            assert svc.submit(TaskSpec(name=f"t{i}", target=double, args=[i])).result(10) == 2 * i
        gc.collect()
        assert [h.id for h in svc._kept.values()] == ["t17", "t18", "t19"]  # the last three
        assert svc.get("t19").result(0) == 38
        for i in range(1, 17):  # not t0: ActorThreads keeps a thread's first job (see report)
            with pytest.raises(KeyError):
                svc.get(f"t{i}")
        assert not svc._handles
        assert not svc._refs


def test_a_service_owns_its_store_while_it_runs(tmp_path: Path) -> None:
    path = tmp_path / "svc.db"
    first, second = SqliteStore(path), SqliteStore(path)
    try:
        with ExecutorService(store=first, name="svc-a"), pytest.raises(StoreLocked, match="svc-a"):
            ExecutorService(store=second)
        with ExecutorService(store=second):  # released by the first one's shutdown
            pass
    finally:
        first.close()
        second.close()
