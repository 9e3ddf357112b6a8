"""The Supervisor actor on real threads: OTP's worked examples, escalation, shutdown, API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import Recorder, double, worker
from taskvisor.actors import (
    AttemptFinished,
    AttemptStarted,
    Event,
    ManualClock,
    MemoryStore,
    SqliteStore,
    TaskFinished,
    TaskPhase,
    TaskRecord,
    TaskSpec,
    TaskState,
    WaitTimeout,
)
from taskvisor.supervision import (
    Backoff,
    ChildStartError,
    DynamicSupervisorSpec,
    Intensity,
    Strategy,
    SupervisorExhausted,
    SupervisorSpec,
)
from taskvisor.supervision._supervisor import (
    Escalated,
    RestartScheduled,
    Supervisor,
    SupervisorError,
    SupervisorGaveUp,
    SupervisorRef,
)


def child(name: str, **extra: object) -> TaskSpec:
    return TaskSpec(name=name, target=worker, shutdown=2.0, **extra)  # type: ignore[arg-type]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def start(recorder: Recorder, clock: ManualClock) -> Iterator[Callable[..., SupervisorRef]]:
    refs: list[SupervisorRef] = []

    def starter(spec: SupervisorSpec | DynamicSupervisorSpec) -> SupervisorRef:
        ref = Supervisor.start(spec, hooks=[recorder], clock=clock)
        refs.append(ref)
        ref.bus.flush()  # the start's events are in: tests can take a mark
        return ref

    yield starter
    for ref in refs:
        ref.stop()


def attempts(ref: SupervisorRef, path: str = "") -> dict[str, int]:
    return {row.id: row.attempt for row in ref.which_children()}


def crash(ref: SupervisorRef, child_id: str) -> None:
    assert ref.child(child_id).ask("crash") == "crashing"


def started_after(recorder: Recorder, mark: int) -> list[str]:
    return [e.task_id for e in recorder.events[mark:] if isinstance(e, AttemptStarted)]


def settle(recorder: Recorder, predicate: Callable[[list[Event]], bool]) -> None:
    assert recorder.wait_for(predicate), "the tree never reached the expected state"


def count(kind: type, **fields: object) -> Callable[[list[Event]], int]:
    def counter(events: list[Event]) -> int:
        return sum(
            1
            for e in events
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
        )

    return counter


def test_one_for_one_restarts_only_the_failed_child(
    start: Callable[..., SupervisorRef], recorder: Recorder
) -> None:
    ref = start(SupervisorSpec("app", children=[child("a"), child("b"), child("c")]))
    mark = len(recorder.events)
    crash(ref, "b")
    settle(recorder, lambda ev: count(AttemptStarted, task_id="app/b")(ev) == 2)
    assert attempts(ref) == {"a": 1, "b": 2, "c": 1}
    assert ref.child("b").ask("hi") == (2, "hi")
    assert started_after(recorder, mark) == ["app/b"]


def test_one_for_all_stops_the_others_in_reverse_order_and_restarts_all_in_order(
    start: Callable[..., SupervisorRef], recorder: Recorder
) -> None:
    spec = SupervisorSpec(
        "app", strategy=Strategy.ONE_FOR_ALL, children=[child("a"), child("b"), child("c")]
    )
    ref = start(spec)
    mark = len(recorder.events)
    crash(ref, "b")
    settle(recorder, lambda ev: len(started_after(recorder, mark)) == 3)
    assert attempts(ref) == {"a": 2, "b": 2, "c": 2}
    closed = [
        (e.task_id, e.run.phase) for e in recorder.events[mark:] if isinstance(e, AttemptFinished)
    ]
    assert closed == [
        ("app/b", TaskPhase.FAILED),
        ("app/c", TaskPhase.CANCELLED),
        ("app/a", TaskPhase.CANCELLED),
    ]
    assert started_after(recorder, mark) == ["app/a", "app/b", "app/c"]
    restarts = [e for e in recorder.events if isinstance(e, RestartScheduled)]
    assert [(e.child, e.restart) for e in restarts] == [("b", ("a", "b", "c"))]


def test_rest_for_one_restarts_the_failed_child_and_those_after_it(
    start: Callable[..., SupervisorRef], recorder: Recorder
) -> None:
    spec = SupervisorSpec(
        "app", strategy="rest_for_one", children=[child("a"), child("b"), child("c")]
    )
    ref = start(spec)
    mark = len(recorder.events)
    crash(ref, "b")
    settle(recorder, lambda ev: len(started_after(recorder, mark)) == 2)
    assert attempts(ref) == {"a": 1, "b": 2, "c": 2}
    assert started_after(recorder, mark) == ["app/b", "app/c"]


def test_restart_types(start: Callable[..., SupervisorRef], recorder: Recorder) -> None:
    ref = start(
        SupervisorSpec(
            "app",
            children=[
                child("perm"),
                child("trans", restart="transient"),
                child("temp", restart="temporary"),
            ],
        )
    )
    assert ref.child("perm").ask("exit") == "exiting"  # a normal end: permanent restarts
    settle(recorder, lambda ev: count(AttemptStarted, task_id="app/perm")(ev) == 2)
    assert ref.child("trans").ask("exit") == "exiting"  # normal end: transient does not
    settle(recorder, lambda ev: count(TaskFinished, task_id="app/trans")(ev) == 1)
    crash(ref, "temp")  # temporary: never restarted, and its spec is deleted
    settle(recorder, lambda ev: count(TaskFinished, task_id="app/temp")(ev) == 1)
    rows = {row.id: row for row in ref.which_children()}
    assert set(rows) == {"perm", "trans"}
    assert rows["perm"].running
    assert rows["perm"].attempt == 2
    assert not rows["trans"].running
    assert rows["trans"].phase is TaskPhase.SUCCEEDED
    ref.restart_child("trans")
    assert ref.child("trans").ask("x") == (2, "x")
    crash(ref, "trans")  # abnormal end: transient restarts
    settle(recorder, lambda ev: count(AttemptStarted, task_id="app/trans")(ev) == 3)


def test_intensity_window_uses_the_injected_clock(
    start: Callable[..., SupervisorRef], recorder: Recorder, clock: ManualClock
) -> None:
    ref = start(SupervisorSpec("app", intensity=Intensity(2, 10.0), children=[child("a")]))
    for n in (2, 3):
        crash(ref, "a")
        settle(recorder, lambda ev, n=n: count(AttemptStarted, task_id="app/a")(ev) == n)
    clock.advance(10.5)  # both restarts leave the window
    for n in (4, 5):
        crash(ref, "a")
        settle(recorder, lambda ev, n=n: count(AttemptStarted, task_id="app/a")(ev) == n)
    crash(ref, "a")  # the third inside 10s: give up
    with pytest.raises(SupervisorExhausted) as exhausted:
        ref.wait(10)
    assert [(f.supervisor, f.child, f.phase) for f in exhausted.value.chain] == [
        ("app", "a", TaskPhase.FAILED)
    ]
    settle(recorder, lambda ev: count(TaskFinished, task_id="app/a")(ev) == 1)
    last = [e for e in recorder.events if isinstance(e, TaskFinished)][-1]
    assert last.status.phase is TaskPhase.EXHAUSTED


def test_escalation_through_three_levels(
    start: Callable[..., SupervisorRef], recorder: Recorder
) -> None:
    leaf = SupervisorSpec("leaf", intensity=Intensity(0, 5), children=[child("w"), child("v")])
    mid = SupervisorSpec("mid", intensity=Intensity(0, 5), children=[leaf, child("m")])
    root = SupervisorSpec("root", intensity=Intensity(0, 5), children=[mid, child("r")])
    ref = start(root)
    ref.child("mid/leaf/w").ask("crash")
    with pytest.raises(SupervisorExhausted) as exhausted:
        ref.wait(10)
    chain = [(f.supervisor, f.child, f.phase) for f in exhausted.value.chain]
    assert chain == [
        ("root/mid/leaf", "w", TaskPhase.FAILED),
        ("root/mid", "leaf", TaskPhase.EXHAUSTED),
        ("root", "mid", TaskPhase.EXHAUSTED),
    ]
    assert "chain of failures" in str(exhausted.value)
    ref.stop()  # returns once every event has been delivered
    gave_up = [e.supervisor for e in recorder.events if isinstance(e, SupervisorGaveUp)]
    assert gave_up == ["root/mid/leaf", "root/mid", "root"]
    escalated = [(e.supervisor, e.parent) for e in recorder.events if isinstance(e, Escalated)]
    assert escalated == [("root/mid/leaf", "root/mid"), ("root/mid", "root")]
    finished = {e.task_id: e.status.phase for e in recorder.events if isinstance(e, TaskFinished)}
    assert finished == {
        "root/mid/leaf/w": TaskPhase.EXHAUSTED,
        "root/mid/leaf/v": TaskPhase.CANCELLED,
        "root/mid/m": TaskPhase.CANCELLED,
        "root/r": TaskPhase.CANCELLED,
    }


def test_a_child_supervisor_is_restarted_by_its_parent(
    start: Callable[..., SupervisorRef], recorder: Recorder
) -> None:
    sub = SupervisorSpec("sub", intensity=Intensity(0, 5), children=[child("x"), child("y")])
    ref = start(SupervisorSpec("root", children=[child("a"), sub]))
    ref.child("sub/x").ask("crash")
    settle(recorder, lambda ev: count(AttemptStarted, task_id="root/sub/y")(ev) == 2)
    settle(recorder, lambda ev: count(AttemptStarted, task_id="root/sub/x")(ev) == 2)
    assert ref.running
    assert attempts(ref) == {"a": 1, "sub": 2}
    assert ref.child("sub/y").ask("hi") == (2, "hi")
    assert [row.id for row in ref.child("sub").which_children()] == ["x", "y"]
    with pytest.raises(SupervisorError, match="is below a task"):
        ref.child("a/deeper")


def test_stop_terminates_in_reverse_start_order(
    start: Callable[..., SupervisorRef], recorder: Recorder
) -> None:
    ref = start(SupervisorSpec("app", children=[child("a"), child("b"), child("c")]))
    ref.stop()
    finished = [e.task_id for e in recorder.events if isinstance(e, TaskFinished)]
    assert finished == ["app/c", "app/b", "app/a"]
    assert not ref.running
    ref.stop()  # idempotent


def test_a_child_that_cannot_start_fails_the_start_and_stops_the_others(
    recorder: Recorder,
) -> None:
    spec = SupervisorSpec(
        "app", children=[child("a"), TaskSpec(name="bad", target="no_such_mod_q:run"), child("c")]
    )
    with pytest.raises(ChildStartError) as failed:
        Supervisor.start(spec, hooks=[recorder])
    assert failed.value.child == "app/bad"
    assert "cannot import module 'no_such_mod_q'" in str(failed.value)
    assert [e.task_id for e in recorder.events if isinstance(e, AttemptStarted)] == ["app/a"]
    finished = {e.task_id: e.status.phase for e in recorder.events if isinstance(e, TaskFinished)}
    assert finished["app/a"] is TaskPhase.CANCELLED


def test_dynamic_supervisor(start: Callable[..., SupervisorRef], recorder: Recorder) -> None:
    template = TaskSpec(name="job", target=double, args=[], restart="transient")
    ref = start(DynamicSupervisorSpec("pool", template=template, max_children=2))
    assert ref.count_children() == {"specs": 0, "active": 0, "supervisors": 0, "workers": 0}
    first = ref.start_child(args=[1])
    second = ref.start_child(args=[2], id="named")
    assert (first, second) == ("job-1", "named")
    settle(recorder, lambda ev: count(TaskFinished)(ev) == 2)
    # A dynamic supervisor forgets children that end without a restart.
    assert ref.count_children()["specs"] == 0
    wspec = TaskSpec(name="w", target=worker, shutdown=2.0)
    ref2 = start(DynamicSupervisorSpec("workers", template=wspec, max_children=2))
    ids = [ref2.start_child(), ref2.start_child()]
    with pytest.raises(SupervisorError) as full:
        ref2.start_child()
    assert full.value.reason == "max_children"
    assert ref2.count_children() == {"specs": 2, "active": 2, "supervisors": 0, "workers": 2}
    ref2.terminate_child(ids[0])
    assert [row.id for row in ref2.which_children()] == [ids[1]]


def test_dynamic_api_on_a_static_supervisor(
    start: Callable[..., SupervisorRef], recorder: Recorder
) -> None:
    ref = start(SupervisorSpec("app", children=[child("a")]))
    assert ref.start_child(child("b")) == "b"
    with pytest.raises(SupervisorError) as dup:
        ref.start_child(child("b"))
    assert dup.value.reason == "running"
    with pytest.raises(SupervisorError) as running:
        ref.delete_child("b")
    assert running.value.reason == "running"
    ref.terminate_child("b")
    assert {r.id: r.running for r in ref.which_children()} == {"a": True, "b": False}
    with pytest.raises(SupervisorError) as present:
        ref.start_child(child("b"))
    assert present.value.reason == "already_present"
    ref.restart_child("b")
    assert ref.child("b").ask("hi") == (2, "hi")
    with pytest.raises(SupervisorError) as again:
        ref.restart_child("b")
    assert again.value.reason == "running"
    ref.terminate_child("b")
    ref.delete_child("b")
    assert [r.id for r in ref.which_children()] == ["a"]
    with pytest.raises(SupervisorError) as missing:
        ref.terminate_child("zzz")
    assert missing.value.reason == "not_found"
    with pytest.raises(SupervisorError) as failed:
        ref.start_child(TaskSpec(name="bad", target="no_such_mod_q:run"))
    assert failed.value.reason == "start_failed"
    assert [r.id for r in ref.which_children()] == ["a"]


def test_auto_shutdown_when_a_significant_child_ends(
    start: Callable[..., SupervisorRef], recorder: Recorder
) -> None:
    spec = SupervisorSpec(
        "app",
        auto_shutdown="any_significant",
        children=[child("main", restart="transient", significant=True), child("helper")],
    )
    ref = start(spec)
    assert ref.child("main").ask("exit") == "exiting"
    ref.wait(10)  # a normal end: no error
    assert not ref.running
    settle(recorder, lambda ev: count(TaskFinished)(ev) == 2)
    finished = {e.task_id: e.status.phase for e in recorder.events if isinstance(e, TaskFinished)}
    assert finished == {"app/main": TaskPhase.SUCCEEDED, "app/helper": TaskPhase.CANCELLED}


def test_backoff_delays_restarts_on_the_injected_clock(
    start: Callable[..., SupervisorRef], recorder: Recorder, clock: ManualClock
) -> None:
    spec = SupervisorSpec(
        "app",
        intensity=Intensity(10, 100),
        backoff=Backoff(initial=1.0, maximum=8.0, multiplier=2.0),
        children=[child("a")],
    )
    ref = start(spec)
    crash(ref, "a")
    settle(recorder, lambda ev: count(RestartScheduled)(ev) == 1)
    delays = [e.delay for e in recorder.events if isinstance(e, RestartScheduled)]
    assert delays == [1.0]
    settle(recorder, lambda ev: count(AttemptFinished, task_id="app/a")(ev) == 1)
    assert count(AttemptStarted, task_id="app/a")(recorder.events) == 1
    clock.advance(0.9)
    assert count(AttemptStarted, task_id="app/a")(recorder.events) == 1
    clock.advance(0.2)
    settle(recorder, lambda ev: count(AttemptStarted, task_id="app/a")(ev) == 2)
    crash(ref, "a")
    settle(recorder, lambda ev: count(RestartScheduled)(ev) == 2)
    assert [e.delay for e in recorder.events if isinstance(e, RestartScheduled)] == [1.0, 2.0]


def test_wait_times_out_while_running(start: Callable[..., SupervisorRef]) -> None:
    ref = start(SupervisorSpec("app", children=[child("a")]))
    with pytest.raises(WaitTimeout):
        ref.wait(0.01)


_TREE = textwrap.dedent(
    """
    import sys, time
    from taskvisor.actors import SqliteStore, TaskSpec, TaskHook
    from taskvisor.supervision import Supervisor, SupervisorSpec

    class Ready(TaskHook):
        def on_finished(self, task_id, status):
            if task_id == "app/once":
                print("once finished", flush=True)

    spec = SupervisorSpec("app", children=[
        TaskSpec(name="once", target="helpers:double", args=[21], restart="transient"),
        TaskSpec(name="server", target="helpers:worker"),
        TaskSpec(name="probe", target="helpers:worker", restart="temporary"),
    ])
    Supervisor.start(spec, store=SqliteStore(sys.argv[1]), hooks=[Ready()])
    time.sleep(60)
    """
)


def test_a_tree_resumes_from_its_store_after_the_process_is_killed(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "tree.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _TREE, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "once finished\n"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    spec = SupervisorSpec(
        "app",
        children=[
            TaskSpec(name="once", target=double, args=[21], restart="transient"),
            child("server"),
            child("probe", restart="temporary"),
        ],
    )
    with SqliteStore(path) as store:
        with Supervisor.start(spec, store=store, hooks=[recorder]) as ref:
            ref.bus.flush()
            # Finished work is not run again; lost work is, unless it is temporary.
            assert started_after(recorder, 0) == ["app/server"]
            rows = {row.id: (row.running, row.phase, row.attempt) for row in ref.which_children()}
            assert rows["server"] == (True, TaskPhase.RUNNING, 2)
            assert rows["once"] == (False, TaskPhase.SUCCEEDED, 1)
            assert rows["probe"] == (False, TaskPhase.FAILED, 1)
            assert ref.child("server").ask("hi") == (2, "hi")
            assert ref.child("once").snapshot().output == 42
            # A restored child can still be restarted by hand: its attempts go on.
            ref.restart_child("probe")
            assert ref.child("probe").ask("hi") == (2, "hi")
        once_events = [
            type(e).__name__ for e in recorder.events if getattr(e, "task_id", "") == "app/once"
        ]
        assert once_events == ["TaskAccepted", "TaskFinished"]
        server = store.get("app/server")
        probe = store.get("app/probe")
        once = store.get("app/once")
    assert server is not None
    assert probe is not None
    assert once is not None
    assert server.runs[0].error is not None
    assert "lost" in server.runs[0].error
    assert (probe.state, probe.attempts) == (TaskState.CANCELLED, 2)  # the tree stopped it
    assert [run.phase for run in probe.runs] == [TaskPhase.FAILED, TaskPhase.CANCELLED]
    assert once.output == 42


@pytest.mark.parametrize(
    ("restart", "state", "runs"),
    [
        ("permanent", TaskState.SUCCEEDED, True),
        ("permanent", TaskState.CANCELLED, True),
        ("transient", TaskState.SUCCEEDED, False),
        ("transient", TaskState.CANCELLED, True),
        ("transient", TaskState.EXHAUSTED, True),
        ("transient", TaskState.PENDING, True),
        ("temporary", TaskState.FAILED, False),
        ("temporary", TaskState.PENDING, True),
    ],
)
def test_which_stored_children_run_again(
    recorder: Recorder, restart: str, state: TaskState, runs: bool
) -> None:
    store = MemoryStore()
    store.put(TaskRecord(id="app/a", state=state, attempts=0 if state is TaskState.PENDING else 3))
    with Supervisor.start(
        SupervisorSpec("app", children=[child("a", restart=restart)]), store=store, hooks=[recorder]
    ) as ref:
        (row,) = ref.which_children()
        assert row.running is runs
        expected = 4 if runs and state is not TaskState.PENDING else (1 if runs else 3)
        assert row.attempt == expected


def test_a_resumed_tree_keeps_its_restart_budget(tmp_path: Path, recorder: Recorder) -> None:
    # Kind E: the intensity window is saved with the records, so a tree that
    # comes back (here: started again on the same store) does not get a fresh budget.
    spec = SupervisorSpec("app", intensity=Intensity(2, 3600.0), children=[child("a")])
    store = SqliteStore(tmp_path / "tree.db")
    try:
        with Supervisor.start(spec, store=store, clock=ManualClock(), hooks=[recorder]) as ref:
            started = count(AttemptStarted, task_id="app/a")
            for restarts in (1, 2):
                crash(ref, "a")
                settle(recorder, lambda ev, n=restarts: started(ev) == n + 1)
        ref = Supervisor.start(spec, store=store, clock=ManualClock(), hooks=[recorder])
        try:
            crash(ref, "a")  # the third restart within the hour: over the budget of 2
            with pytest.raises(SupervisorExhausted):
                ref.wait(10)
        finally:
            ref.stop()
        saved = store.get_state("restart-history:app")
        assert len(saved["restarts"]) == 3
        assert saved["failures"] == {}
    finally:
        store.close()
