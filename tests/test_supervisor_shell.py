"""The supervisor actor shell: its own failures, its deadlines, its refusals.

The node's rules are tested without threads in test_node.py; these tests
drive the real actors for what only the shell does: a supervisor that
breaks is its parent's business, a start that takes too long is bounded,
a stop that meets work that ignores it still keeps its deadline, and
messages that come too late are answered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, get_args

import pykka
import pytest
from pykka._envelope import Envelope

from conftest import wait_until
from helpers import Recorder, worker
from taskvisor.actors import (
    AttemptFinished,
    CallbackFailed,
    CallExecutor,
    MemoryStore,
    Request,
    Task,
    TaskCancelled,
    TaskContext,
    TaskPhase,
    TaskRef,
    TaskSpec,
    WaitTimeout,
    default_executors,
)
from taskvisor.supervision import (
    ChildStartError,
    Intensity,
    Supervisor,
    SupervisorError,
    SupervisorExhausted,
    SupervisorSpec,
)
from taskvisor.supervision import _supervisor as supervisor_module
from taskvisor.supervision._node import Command, StopNode
from taskvisor.supervision._supervisor import _COMMANDS, SupervisorRef, _Api, _Stop


def child(name: str, **extra: Any) -> TaskSpec:
    return TaskSpec(name=name, target=worker, shutdown=2.0, **extra)


class BrokenHistoryStore(MemoryStore):
    """A store whose writes of one key raise what no store should (a bug in it)."""

    def __init__(self, broken: str) -> None:
        super().__init__()
        self.broken = broken

    def put_state(self, key: str, data: Any) -> None:
        if key == self.broken:
            raise SystemExit("bug in the store")
        super().put_state(key, data)


def test_a_supervisor_that_breaks_is_restarted_afresh_by_its_parent() -> None:
    # Kind C: an unexpected error inside a supervisor is that supervisor's
    # abnormal exit. Here "sub" breaks while deciding a restart; the root
    # restarts it from its spec, and the tree goes on.
    sub = SupervisorSpec("sub", children=[child("x"), child("y")])
    spec = SupervisorSpec("root", intensity=Intensity(5, 60.0), children=[child("a"), sub])
    recorder = Recorder()
    store = BrokenHistoryStore("restart-history:root/sub")
    with Supervisor.start(spec, store=store, hooks=[recorder]) as tree:
        assert tree.child("sub/x").ask("crash") == "crashing"
        assert wait_until(
            lambda: {r.id: r.attempt for r in tree.which_children()} == {"a": 1, "sub": 2},
            timeout=10,
        )
        sub_rows = tree.child("sub").which_children
        assert wait_until(  # the fresh sub starts x, then y
            lambda: [(r.id, r.status) for r in sub_rows()] == [("x", "running"), ("y", "running")],
            timeout=10,
        )
        assert tree.child("sub/y").ask("hello") == (2, "hello")  # y was restarted too
        assert tree.running


def test_a_root_that_breaks_ends_the_tree_with_the_error_in_its_chain() -> None:
    spec = SupervisorSpec("root", intensity=Intensity(5, 60.0), children=[child("a")])
    tree = Supervisor.start(spec, store=BrokenHistoryStore("restart-history:root"))
    try:
        assert tree.child("a").ask("crash") == "crashing"
        with pytest.raises(SupervisorExhausted) as ended:
            tree.wait(10)
        assert "internal error in supervisor 'root': SystemExit: bug in the store" in str(
            ended.value
        )
        with pytest.raises(SupervisorError) as refused:
            tree.start_child(child("late"))
        assert refused.value.reason == "stopped"
    finally:
        tree.stop()


def test_a_kind_without_an_executor_fails_the_start_by_name() -> None:
    spec = SupervisorSpec("app", children=[child("a"), TaskSpec(name="b", target=worker)])
    executors = default_executors()
    del executors["call"]
    with pytest.raises(ChildStartError) as failed:
        Supervisor.start(spec, executors=executors)
    assert failed.value.child == "app/a"
    assert "no executor for task kind 'call'" in failed.value.error


class SlowStart(CallExecutor):
    """A kind whose start takes longer than the tree is given to start."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release = release

    def start(self, task: Task, ctx: TaskContext) -> None:
        self.release.wait(10)
        super().start(task, ctx)


def test_a_start_that_takes_too_long_is_bounded_and_leaves_nothing() -> None:
    release = threading.Event()
    executors = default_executors()
    executors["call"] = SlowStart(release)
    spec = SupervisorSpec("app", children=[child("a")])
    timer = threading.Timer(1.0, release.set)  # the start ends, after the deadline
    timer.start()
    try:
        with pytest.raises(WaitTimeout, match=r"did not start within 0\.2s"):
            Supervisor.start(spec, executors=executors, timeout=0.2)
    finally:
        release.set()
        timer.join()


def deaf(ctx: TaskContext) -> None:
    """Work that ignores cancellation for a long while (then gives up)."""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_stop_keeps_its_deadline_when_work_ignores_it() -> None:
    # Kind B: a graceful stop runs into a child with a long grace that never
    # stops; close to the deadline everything is killed or abandoned.
    recorder = Recorder()
    spec = SupervisorSpec("app", children=[TaskSpec(name="d", target=deaf, shutdown=30.0)])
    tree = Supervisor.start(spec, hooks=[recorder])
    started = time.monotonic()
    tree.stop(timeout=1.0)
    took = time.monotonic() - started
    assert took < 6.0  # a bound on the deadline, with a wide margin for a busy machine
    finished = [e for e in recorder.events if type(e).__name__ == "TaskFinished"]
    (end,) = finished
    assert end.status.phase is TaskPhase.CANCELLED
    assert "abandoned" in (end.status.error or "")
    # deaf's abandoned thread ends on its own within 3 s; the no_leaks fixture waits for it.


def test_a_nested_supervisor_stops_through_its_handle() -> None:
    sub = SupervisorSpec("sub", children=[child("x")])
    with Supervisor.start(SupervisorSpec("root", children=[child("a"), sub])) as tree:
        tree.child("sub").stop()
        rows = {r.id: (r.running, r.phase) for r in tree.which_children()}
        assert rows == {"a": (True, TaskPhase.RUNNING), "sub": (False, TaskPhase.CANCELLED)}
        tree.restart_child("sub")
        assert tree.child("sub/x").ask("hi") == (2, "hi")


def stops_its_own_supervisor(
    ctx: TaskContext, trees: list[SupervisorRef], ready: threading.Event, returned: threading.Event
) -> None:
    assert ready.wait(30)
    trees[0].child("sub").stop(timeout=60)  # the stop of the supervisor this task is in
    returned.set()
    ctx.wait_cancelled(60)


def test_a_nested_supervisor_stopped_by_its_own_task_starts_the_stop_and_returns() -> None:
    trees: list[SupervisorRef] = []
    ready, returned = threading.Event(), threading.Event()
    k = TaskSpec(
        name="k",
        target=stops_its_own_supervisor,
        args=[trees, ready, returned],
        shutdown=60.0,  # waiting on its own end, the call would hold for this grace
    )
    spec = SupervisorSpec("root", children=[child("a"), SupervisorSpec("sub", children=[k])])
    with Supervisor.start(spec) as tree:
        trees.append(tree)
        ready.set()
        assert returned.wait(30)
        assert wait_until(lambda: not tree.which_children()[1].running, timeout=30), (
            tree.which_children()
        )
        assert tree.which_children()[1].phase is TaskPhase.CANCELLED
        assert tree.which_children()[0].running  # its sibling runs on


def fails_while_stopping(ctx: TaskContext, started: threading.Event) -> None:
    started.set()
    try:
        ctx.wait_cancelled(60)
        raise TaskCancelled("stopped")
    except TaskCancelled:
        raise RuntimeError("flush on shutdown failed: 12 records lost") from None


async def afails_while_stopping(ctx: TaskContext, started: threading.Event) -> None:
    started.set()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        raise RuntimeError("async flush on shutdown failed") from None


@pytest.mark.parametrize("kind", ["call", "async"])
def test_an_error_while_a_child_is_stopped_is_kept_in_its_run_and_logged(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """OTP reports a child that exits with another reason than shutdown as a shutdown_error."""
    target = fails_while_stopping if kind == "call" else afails_while_stopping
    recorder, started = Recorder(), threading.Event()
    spec = SupervisorSpec(
        "app", children=[TaskSpec(name="w", kind=kind, target=target, args=[started])]
    )
    with (
        caplog.at_level(logging.WARNING, logger="taskvisor"),
        Supervisor.start(spec, hooks=[recorder]) as tree,
    ):
        assert started.wait(30)  # stopped once it runs, not before its first step
        tree.terminate_child("w")
        tree.bus.flush(10)
    (end,) = [e for e in recorder.events if isinstance(e, AttemptFinished)]
    assert end.run.phase is TaskPhase.CANCELLED  # it was stopped: no restart, no failure
    assert end.run.error is not None
    assert end.run.error.startswith("terminated by its owner; it failed while stopping: ")
    assert "RuntimeError:" in end.run.error
    assert "flush on shutdown failed" in end.run.error
    assert "failed while being stopped" in caplog.text
    assert "Traceback" in caplog.text  # the whole of it is in the log


def test_start_refuses_what_is_not_a_supervisor_spec() -> None:
    with pytest.raises(SupervisorError) as refused:
        Supervisor.start(child("a"))  # type: ignore[arg-type]
    assert refused.value.reason == "bad_spec"
    assert "expected a SupervisorSpec or DynamicSupervisorSpec, got TaskSpec" in str(refused.value)


def test_an_unreadable_restart_history_is_ignored() -> None:
    store = MemoryStore()
    store.put_state("restart-history:app", {"restarts": "garbage"})
    spec = SupervisorSpec("app", intensity=Intensity(1, 60.0), children=[child("a")])
    with Supervisor.start(spec, store=store) as tree:
        assert tree.child("a").ask("crash") == "crashing"  # one restart is within budget
        assert wait_until(lambda: tree.which_children()[0].attempt == 2, timeout=10)
        assert tree.running


def test_messages_that_reach_a_stopped_supervisor_are_answered() -> None:
    tree = Supervisor.start(SupervisorSpec("app", children=[child("a")]))
    port = tree._port
    assert port is not None
    tree.stop()
    inbox: Any = port.ref.actor_inbox
    call = Request("start_child")
    inbox.put(Envelope(_Api("start_child", (child("b"), (), {}, None), call)))
    with pytest.raises(SupervisorError) as refused:
        call.wait(5)
    assert refused.value.reason == "stopped"
    asked: pykka.Future[Any] = pykka.ThreadingFuture()
    inbox.put(Envelope(_Stop(7, StopNode()), reply_to=asked))
    with pytest.raises(pykka.ActorDeadError):
        asked.get(timeout=5)
    with pytest.raises(SupervisorError) as gone:
        tree.which_children()
    assert gone.value.reason == "stopped"


def test_stop_from_a_library_thread_returns_at_once_and_the_tree_still_ends() -> None:
    go, ended = threading.Event(), threading.Event()
    holder: list[SupervisorRef] = []

    def stopper(ctx: TaskContext) -> None:
        go.wait(10)
        holder[0].stop()  # from the task's own worker thread: must not wait on itself
        ended.set()
        ctx.wait_cancelled()

    spec = SupervisorSpec("app", children=[TaskSpec(name="s", target=stopper, restart="temporary")])
    tree = Supervisor.start(spec)
    holder.append(tree)
    go.set()
    assert ended.wait(10)
    tree.wait(10)  # the stop it began ends the tree
    assert not tree.running


def test_a_timer_callback_that_raises_is_an_event_and_the_timers_go_on() -> None:
    # Kind C: a failure on the tree's timer thread is logged and published.
    recorder = Recorder()
    fired = threading.Event()

    def broken() -> None:
        raise SystemExit("bug in a callback")

    with Supervisor.start(SupervisorSpec("app", children=[child("a")]), hooks=[recorder]) as tree:
        clock = tree._runtime.real_clock
        clock.call_later(0.0, broken)
        clock.call_later(0.01, fired.set)
        assert fired.wait(10)  # the next timer still fires
        assert recorder.wait_for(lambda ev: any(type(e) is CallbackFailed for e in ev))
    (failed,) = [e for e in recorder.events if isinstance(e, CallbackFailed)]
    assert failed.error == "SystemExit: bug in a callback"
    assert "broken" in failed.callback


def test_the_shell_carries_out_every_command_of_its_node() -> None:
    """One entry per command type: a command the table missed would raise KeyError in a
    live supervisor (its crash), though ``simulate()`` knows it."""
    assert set(_COMMANDS) == set(get_args(Command))


def test_a_restart_in_place_wakes_the_supervisor_once_and_its_row_still_says_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call task restarted in place does not report that its attempt began (one thread
    wake-up per restart saved: ``benchmarks/bench_supervision.py``); ``which_children``
    asks the task instead, so the row of a begun attempt says running all the same."""
    began: list[int] = []
    real = supervisor_module._ChildOwner.attempt_began

    def counted(owner: Any, notice: Any) -> None:
        began.append(notice.attempt)
        real(owner, notice)

    monkeypatch.setattr(supervisor_module._ChildOwner, "attempt_began", counted)
    asked: list[str] = []
    real_state = TaskRef.attempt_state

    def counted_state(ref: TaskRef) -> Any:
        asked.append(ref.id)
        return real_state(ref)

    monkeypatch.setattr(TaskRef, "attempt_state", counted_state)
    spec = SupervisorSpec("app", children=[child("w")], intensity=Intensity(10, 60))
    with Supervisor.start(spec) as tree:
        ref = tree.task("w")
        for attempt in (1, 2, 3):
            assert ref.ask("where", timeout=10) == (attempt, "where")
            row = tree.which_children()[0]
            assert (row.status, row.attempt, row.running) == ("running", attempt, True)
            if attempt < 3:
                assert ref.ask("crash", timeout=10) == "crashing"

        # What the task said was passed on to the supervisor: it stops asking.
        def asks_again() -> bool:
            before = len(asked)
            assert tree.which_children()[0].status == "running"
            return len(asked) > before

        assert wait_until(lambda: not asks_again())
    assert began == [1]  # only the first start, which the supervisor waits for
    assert asked.count("app/w") >= 2  # each restart in place was asked about


def test_a_confirmation_of_an_earlier_attempt_does_not_confirm_the_one_starting() -> None:
    """What ``which_children`` passes on is checked against the attempt still starting."""
    gate = threading.Event()

    class Gated(CallExecutor):
        def start(self, task: Task, ctx: TaskContext) -> None:
            if ctx.attempt == 3:
                gate.wait(10)  # attempt 3 is starting until the test lets it
            super().start(task, ctx)

    executor = Gated()
    spec = SupervisorSpec("app", children=[child("w")], intensity=Intensity(10, 60))
    tree = Supervisor.start(spec, executors={"call": executor})
    try:
        ref = tree.task("w")
        assert ref.ask("crash", timeout=10) == "crashing"
        assert ref.ask("where", timeout=10) == (2, "where")
        assert ref.ask("crash", timeout=10) == "crashing"
        assert wait_until(lambda: tree.which_children()[0].attempt == 3)
        tree._actor().tell(supervisor_module._Confirmed("w", 2, None))  # stale news
        row = tree.which_children()[0]
        assert (row.status, row.attempt) == ("starting", 3)
        gate.set()
        assert ref.ask("where", timeout=10) == (3, "where")
        assert wait_until(lambda: tree.which_children()[0].status == "running")
    finally:
        gate.set()
        tree.stop(timeout=10)
        executor.close(5)
