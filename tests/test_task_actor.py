"""The task actor's turn: work that ends is handled in message order, on whichever thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest
from pykka._envelope import Envelope

from helpers import double, stubborn
from taskvisor.actors import ExecutorService, Request, TaskHandle, TaskPhase, TaskSpec
from taskvisor.actors._actor import TaskActor, _Begin, _Cancel, _Snapshot, _Terminate


def actor_of(handle: TaskHandle) -> TaskActor:
    ref = handle._ref
    assert ref is not None
    actor = ref._ref._actor_weakref()
    assert isinstance(actor, TaskActor)
    return actor


def test_work_ending_behind_a_queued_message_is_handled_after_it() -> None:
    # The actor's thread has taken a cancel from its inbox but not yet handled
    # it when the work returns. The work's thread finds the actor's turn free,
    # but must not overtake the cancel: the run closes CANCELLED, as if the
    # actor had handled both in order.
    release = threading.Event()
    with ExecutorService() as svc:
        handle = svc.submit(TaskSpec(name="s", target=stubborn, args=[release]))
        actor = actor_of(handle)
        holding, gate = threading.Event(), threading.Event()
        real_get = actor.actor_inbox.get

        def gated_get(*args: Any, **kwargs: Any) -> Any:
            envelope = real_get(*args, **kwargs)
            if isinstance(envelope.message, _Cancel):
                holding.set()
                gate.wait(10)
            return envelope

        actor.actor_inbox.get = gated_get  # type: ignore[method-assign]
        handle.status()  # the actor's next read goes through gated_get
        handle.cancel()
        assert holding.wait(10)
        assert not actor.turn.locked()
        assert actor.actor_inbox.unhandled == 1  # the cancel, taken but not handled
        release.set()  # the work returns "late", ignoring the cancel
        deadline = time.monotonic() + 10
        while actor.actor_inbox.unhandled < 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # until the work's end is queued behind the cancel
        gate.set()
        task = handle.wait(10)
    assert task.status.phase is TaskPhase.CANCELLED
    assert handle.runs()[-1].phase is TaskPhase.CANCELLED


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
