"""The task actor's turn: work that ends is handled in message order, on whichever thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest
from pykka._envelope import Envelope

from helpers import double, stubborn
from taskvisor.actors import (
    AttemptEnded,
    ExecutorService,
    Request,
    Task,
    TaskContext,
    TaskPhase,
    TaskSnapshot,
    TaskSpec,
    Verdict,
)
from taskvisor.actors._actor import TaskActor, TaskRef, _Begin, _Cancel, _Snapshot, _Terminate
from taskvisor.actors._executors import CallExecutor


def actor_of(ref: TaskRef) -> TaskActor:
    actor = ref._ref._actor_weakref()
    assert isinstance(actor, TaskActor)
    return actor


class Once:
    """An owner that may restart (so ends are handled on the work's thread) but never does."""

    restarts = True

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
        assert holding.wait(10)
        assert not actor.turn.locked()
        assert actor.actor_inbox.unhandled == 1  # the cancel, taken but not handled
        release.set()  # the work returns "late", ignoring the cancel
        deadline = time.monotonic() + 10
        while actor.actor_inbox.unhandled < 2 and time.monotonic() < deadline:
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


def test_an_idle_actor_handles_the_end_of_work_on_the_works_thread() -> None:
    executor, owner = CallExecutor(), Once()
    seen: list[str] = []

    def note(ctx: TaskContext) -> str:
        seen.append(threading.current_thread().name)
        return "ok"

    spec = TaskSpec(name="n", target=note)
    ref = TaskRef.start(Task.new("n", spec), executor, owner, begin=False)
    try:
        actor = actor_of(ref)
        ref.snapshot()  # the actor is up and idle
        handled_on: list[str] = []
        real = actor._on_work_done

        def spy(message: Any) -> None:
            handled_on.append(threading.current_thread().name)
            real(message)

        actor._on_work_done = spy  # type: ignore[method-assign]
        ref.begin()
        assert owner.done.wait(10)
    finally:
        ref.stop()
        executor.close()
    assert handled_on == seen  # the work's own thread, not the actor's
    assert seen[0].startswith("taskvisor-call")


def test_messages_that_reach_a_stopped_actor_are_answered() -> None:
    with ExecutorService() as svc:
        handle = svc.submit(TaskSpec(name="d", target=double, args=[4]))
        assert handle.result() == 8
        ref = handle._ref
        assert ref is not None
        assert ref._loop_ended.wait(10)  # the service stops a task's actor once it ended
        inbox = ref._ref.actor_inbox

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
