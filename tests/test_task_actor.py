"""The task actor: work that ends is handled in message order, on the actor's thread;
starts that fail, internal errors and store failures are ordinary, reported ends."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest
from pykka._envelope import Envelope

from conftest import wait_until
from helpers import double, stubborn
from taskvisor.actors import (
    AttemptEnded,
    Event,
    EventBus,
    MemoryStore,
    RecordNotSaved,
    Request,
    StoreError,
    Task,
    TaskContext,
    TaskPhase,
    TaskRecord,
    TaskSnapshot,
    TaskSpec,
    TaskState,
    Verdict,
)
from taskvisor.actors._actor import (
    _HANDLERS,
    TaskActor,
    TaskRef,
    _Begin,
    _Cancel,
    _Snapshot,
    _Terminate,
    _WorkDone,
)
from taskvisor.actors._executors import CallExecutor


def actor_inbox(ref: TaskRef) -> Any:
    return ref._ref.actor_inbox


def actor_of(ref: TaskRef) -> TaskActor:
    actor = ref._ref._actor_weakref()
    assert isinstance(actor, TaskActor)
    return actor


class Once:
    """An owner that never restarts."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.final: TaskSnapshot | None = None

    def attempt_ended(self, notice: AttemptEnded) -> Verdict:
        return Verdict(notice.attempt)

    def task_done(self, snapshot: TaskSnapshot) -> None:
        self.final = snapshot
        self.done.set()


def test_work_ending_behind_a_queued_message_is_handled_after_it() -> None:
    # The actor's thread has taken a cancel from its inbox but not yet handled
    # it when the work returns. The work's thread finds the actor's turn free,
    # but must not overtake the cancel: the run closes CANCELLED, as if the
    # actor had handled both in order.
    release = threading.Event()
    executor, owner = CallExecutor(), Once()
    spec = TaskSpec(name="s", target=stubborn, args=[release])
    ref = TaskRef.start(Task.new("s", spec), executor, owner)
    try:
        actor = actor_of(ref)
        holding, gate = threading.Event(), threading.Event()
        real_get = actor.actor_inbox.get

        def gated_get(*args: Any, **kwargs: Any) -> Any:
            envelope = real_get(*args, **kwargs)
            if isinstance(envelope.message, _Cancel):
                holding.set()
                gate.wait(10)
            return envelope

        actor.actor_inbox.get = gated_get  # type: ignore[method-assign]
        ref.snapshot()  # the actor's next read goes through gated_get
        ref.cancel()
        assert holding.wait(10)  # the cancel is taken, not yet handled
        release.set()  # the work returns "late", ignoring the cancel
        deadline = time.monotonic() + 10
        while actor.actor_inbox.empty() and time.monotonic() < deadline:
            time.sleep(0.001)  # until the work's end is queued behind the cancel
        gate.set()
        assert owner.done.wait(10)
    finally:
        release.set()
        ref.stop()
        executor.close()
    assert owner.final is not None
    assert owner.final.task.status.phase is TaskPhase.CANCELLED
    assert owner.final.runs[-1].phase is TaskPhase.CANCELLED


def test_the_end_of_work_is_handled_on_the_actors_thread_never_the_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executor, owner = CallExecutor(), Once()
    seen: list[str] = []

    def note(ctx: TaskContext) -> str:
        seen.append(threading.current_thread().name)
        return "ok"

    spec = TaskSpec(name="n", target=note)
    ref = TaskRef.start(Task.new("n", spec), executor, owner, begin=False)
    try:
        ref.snapshot()  # the actor is up and idle
        handled_on: list[str] = []
        real = _HANDLERS[_WorkDone]

        def spy(actor: TaskActor, message: Any) -> None:
            handled_on.append(threading.current_thread().name)
            real(actor, message)

        monkeypatch.setitem(_HANDLERS, _WorkDone, spy)
        ref.begin()
        assert owner.done.wait(10)
    finally:
        ref.stop()
        executor.close()
    assert seen[0].startswith("taskvisor-call")
    assert len(handled_on) == 1
    assert handled_on[0].startswith("TaskActor-")  # the actor's own thread


class Broken(CallExecutor):
    """A kind whose work can never start (a program deleted after its first run)."""

    def start(self, task: Task, ctx: TaskContext) -> None:
        raise FileNotFoundError("no such program")


class RestartAtOnce:
    """An owner that answers at once: restart, ``limit`` times, then end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ends: list[AttemptEnded] = []
        self.done = threading.Event()

    def attempt_ended(self, notice: AttemptEnded) -> Verdict:
        self.ends.append(notice)
        if len(self.ends) >= self.limit:
            return Verdict(notice.attempt)
        return Verdict(notice.attempt, restart_after=0.0)

    def task_done(self, snapshot: TaskSnapshot) -> None:
        self.done.set()


def test_a_start_that_keeps_failing_restarts_by_message_never_by_recursion() -> None:
    # Fault: every restart failed to start; the next one began on the same
    # stack, and after about 330 a RecursionError killed the actor.
    executor, owner = Broken(), RestartAtOnce(3000)
    ref = TaskRef.start(Task.new("gone", TaskSpec(name="gone", target=double)), executor, owner)
    try:
        assert owner.done.wait(60)
        snapshot = ref.snapshot()
    finally:
        ref.stop()
        executor.close()
    assert len(owner.ends) == 3000
    assert all(not e.started and e.phase is TaskPhase.FAILED for e in owner.ends)
    assert "no such program" in (owner.ends[-1].error or "")
    assert snapshot.task.status.attempt == 3000
    assert snapshot.done


class Exploding(CallExecutor):
    """A kind whose cancel raises what no handler expects."""

    def cancel(self, task: Task, ctx: TaskContext) -> None:
        raise SystemExit("bug in a kind")


@pytest.mark.parametrize("owner_answers", [True, False])
def test_an_internal_error_in_a_handler_is_a_failed_attempt_for_the_owner(
    owner_answers: bool,
) -> None:
    class Owner(Once):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[AttemptEnded] = []
            self.ended = threading.Event()

        def attempt_ended(self, notice: AttemptEnded) -> Verdict | None:  # type: ignore[override]
            self.ends.append(notice)
            self.ended.set()
            return Verdict(notice.attempt) if owner_answers else None

    release = threading.Event()
    executor, owner = Exploding(), Owner()
    spec = TaskSpec(name="x", target=stubborn, args=[release])
    ref = TaskRef.start(Task.new("x", spec), executor, owner)
    try:
        ref.snapshot()
        ref.cancel()  # Exploding.cancel raises SystemExit on the actor's thread
        assert owner.ended.wait(10)
        assert ref.alive  # the actor lives on: the error was this attempt's, not the process's
        snapshot = ref.snapshot()
    finally:
        release.set()
        ref.stop()
        executor.close()
    (end,) = owner.ends
    assert end.phase is TaskPhase.FAILED
    assert "internal error in the task actor: SystemExit: bug in a kind" in (end.error or "")
    assert snapshot.task.status.attempt == 1


def test_messages_that_reach_a_stopped_actor_are_answered() -> None:
    executor, owner = CallExecutor(), Once()
    ref = TaskRef.start(Task.new("d", TaskSpec(name="d", target=double, args=[4])), executor, owner)
    try:
        assert owner.done.wait(10)
        ref.stop()
        assert ref._loop_ended.wait(10)
        inbox = actor_inbox(ref)

        terminate = Request(None)
        inbox.put(Envelope(_Terminate(terminate, brutal=False, final=True)))
        snapshot = terminate.wait(5)  # not lost: the final state
        assert snapshot.done
        assert snapshot.task.status.phase is TaskPhase.SUCCEEDED
        assert snapshot.output == 8

        begin = Request(None)
        inbox.put(Envelope(_Begin(begin)))
        assert begin.wait(5) == "task 'd' has stopped"

        asked: pykka.Future[Any] = pykka.ThreadingFuture()
        inbox.put(Envelope(_Snapshot(), reply_to=asked))
        with pytest.raises(pykka.ActorDeadError):
            asked.get(timeout=5)
        stopped: pykka.Future[Any] = pykka.ThreadingFuture()
        inbox.put(Envelope(pykka.messages._ActorStop(), reply_to=stopped))
        assert stopped.get(timeout=5) is None
    finally:
        executor.close()


class FlakyStore(MemoryStore):
    """A store whose first ``failures`` writes raise what a real one may raise, or worse."""

    def __init__(self, failures: int, error: BaseException) -> None:
        super().__init__()
        self.failures = failures
        self.error = error

    def put(self, record: TaskRecord) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        super().put(record)


@pytest.mark.parametrize(
    "error", [StoreError("database is locked"), SystemExit("store bug")], ids=["store", "exit"]
)
def test_a_save_that_fails_is_an_event_and_is_tried_again(error: BaseException) -> None:
    # Faults 16 and E2: a store failure is never silent, and the record
    # reaches the store once the store works again.
    events: list[Event] = []
    bus = EventBus([events.append])
    executor, owner = CallExecutor(), Once()
    store = FlakyStore(3, error)  # the creation, the start and the end fail
    spec = TaskSpec(name="s", target=double, args=[21])
    ref = TaskRef.start(Task.new("s", spec), executor, owner, bus=bus, store=store)
    try:
        assert owner.done.wait(10)
        deadline = time.monotonic() + 10
        while (store.get("s") is None or not store.get("s").state.is_terminal) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)  # the retry runs on the real clock: 0.5 s, then 1 s
    finally:
        ref.stop()
        executor.close()
        bus.stop()
    record = store.get("s")
    assert record is not None
    assert record.state is TaskState.SUCCEEDED
    assert record.output == 42
    failed = [e for e in events if isinstance(e, RecordNotSaved)]
    assert len(failed) == 3
    assert all(e.task_id == "s" for e in failed)


class BrokenStart(CallExecutor):
    """A kind whose start raises what no start should (not an Exception: a bug)."""

    def start(self, task: Task, ctx: TaskContext) -> None:
        raise SystemExit("bug in a kind's start")


def test_a_start_that_raises_a_base_exception_is_a_failed_attempt() -> None:
    executor, owner = BrokenStart(), RestartAtOnce(2)
    ref = TaskRef.start(Task.new("b", TaskSpec(name="b", target=double)), executor, owner)
    try:
        assert owner.done.wait(10)
        assert ref.alive
    finally:
        ref.stop()
        executor.close()
    assert [e.phase for e in owner.ends] == [TaskPhase.FAILED, TaskPhase.FAILED]
    assert all("SystemExit: bug in a kind's start" in (e.error or "") for e in owner.ends)


class OwnerThatBreaks(Once):
    """An owner whose notice handler has a bug: the task must still end and answer."""

    def attempt_ended(self, notice: AttemptEnded) -> Verdict:
        raise RuntimeError("bug in the owner")


def test_an_error_while_reporting_an_internal_error_ends_the_task_and_answers_waiters() -> None:
    executor, owner = BrokenStart(), OwnerThatBreaks()
    ref = TaskRef.start(
        Task.new("o", TaskSpec(name="o", target=double)), executor, owner, begin=False
    )
    try:
        ref.begin()
        waiter = ref.terminate(final=True)
        snapshot = waiter.wait(10)  # answered, though every report failed
        assert ref.alive
    finally:
        ref.stop()
        executor.close()
    assert snapshot.task.status.phase is TaskPhase.FAILED


def test_a_restart_asked_for_while_an_attempt_is_terminated_starts_when_it_ends() -> None:
    # A supervisor that broke stops its children (held) and is replaced at
    # once by a fresh one, which restarts them: the restart must not be lost
    # while the old attempt is still winding down.
    release = threading.Event()

    def work(ctx: TaskContext) -> None:
        if ctx.attempt == 1:
            release.wait(60)  # ignores the cancel until the test releases it
        else:
            ctx.wait_cancelled()

    executor, owner = CallExecutor(), Once()
    spec = TaskSpec(name="s", target=work, shutdown=30.0)
    ref = TaskRef.start(Task.new("s", spec), executor, owner)
    try:
        ref.snapshot()
        held = ref.terminate(final=False)
        ref.restart()
        assert ref.snapshot().task.status.attempt == 1  # still winding down
        release.set()  # the old attempt ends (ignoring the cancel until now)
        assert held.wait(10).task.status.phase is TaskPhase.CANCELLED
        assert wait_until(lambda: ref.snapshot().task.status.attempt == 2, timeout=10)
        assert ref.snapshot().task.status.phase is TaskPhase.RUNNING
    finally:
        release.set()
        ref.terminate(final=True).wait(10)
        ref.stop()
        executor.close()
