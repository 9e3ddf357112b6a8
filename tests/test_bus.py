"""The event bus: one order for all, isolation from bad hooks, drain on stop."""

from __future__ import annotations

import logging
import threading

import pytest

from conftest import wait_until
from helpers import Recorder
from taskvisor.actors import (
    AttemptStarted,
    Event,
    EventBus,
    RejectReason,
    TaskAccepted,
    TaskFinished,
    TaskHook,
    TaskPhase,
    TaskRejected,
    TaskStarted,
    TaskStatus,
    WaitTimeout,
)


class Raising(TaskHook):
    def on_event(self, event: Event) -> None:
        raise RuntimeError(f"hook broke on {type(event).__name__}")


class Blocking(TaskHook):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.release.wait(30)
        self.seen.append(event)


def test_every_subscriber_sees_the_bus_order() -> None:
    a, b = Recorder(), Recorder()
    bus = EventBus([a, b])
    publishers = [
        threading.Thread(
            target=lambda n=n: [bus.publish(AttemptStarted(f"t{n}", i)) for i in range(200)]
        )
        for n in range(4)
    ]
    for t in publishers:
        t.start()
    for t in publishers:
        t.join()
    bus.stop()
    assert len(a.events) == 800
    assert a.events == b.events
    for n in range(4):  # each publisher's own order is kept
        mine = [e.attempt for e in a.events if e.task_id == f"t{n}"]
        assert mine == list(range(200))


def test_raising_and_blocking_hooks_do_not_hold_up_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    normal, raising, blocking = Recorder(), Raising(), Blocking()
    bus = EventBus([raising, blocking, normal])
    events = [AttemptStarted("t", i) for i in range(50)]
    with caplog.at_level(logging.ERROR, logger="taskvisor.events"):
        try:
            for event in events:
                bus.publish(event)
            # The blocking hook has not even taken its first event, yet the normal one has all.
            assert normal.wait_for(lambda seen: len(seen) == 50)
            assert blocking.seen == []
            assert wait_until(lambda: bus.stats().delivered[repr(raising)] == 50)
            stats = bus.stats()
            assert stats.published == 50
            assert stats.errors[repr(raising)] == 50
            assert stats.errors[repr(normal)] == 0
            assert stats.delivered[repr(blocking)] == 0
        finally:
            blocking.release.set()
        bus.stop()
    assert normal.events == events
    assert blocking.seen == events
    assert caplog.text.count("RuntimeError: hook broke on AttemptStarted") == 50
    assert "Traceback" in caplog.text


def test_stop_delivers_everything_already_published() -> None:
    slow = Blocking()
    bus = EventBus([slow])
    events = [AttemptStarted("t", i) for i in range(100)]
    for event in events:
        bus.publish(event)
    threading.Timer(0.05, slow.release.set).start()
    bus.stop()
    assert slow.seen == events
    assert not bus.running
    bus.publish(AttemptStarted("t", 999))  # after stop: dropped, no error


def test_stop_times_out_on_a_hook_that_never_returns() -> None:
    stuck = Blocking()
    bus = EventBus([stuck], stop_timeout=0.05)
    bus.publish(AttemptStarted("t", 1))
    try:
        bus.stop(timeout=10)  # the actor gives up on the hook after stop_timeout
    finally:
        stuck.release.set()
    assert not bus.running


def test_stop_raises_wait_timeout_when_the_bus_does_not_drain() -> None:
    stuck = Blocking()
    bus = EventBus([stuck], stop_timeout=5)
    bus.publish(AttemptStarted("t", 1))
    try:
        with pytest.raises(WaitTimeout, match="did not drain"):
            bus.stop(timeout=0.05)
    finally:
        stuck.release.set()
    bus.stop()


def test_hook_methods_route_lifecycle_events() -> None:
    rec = Recorder()
    bus = EventBus([rec])
    status = TaskStatus(phase=TaskPhase.SUCCEEDED, attempt=1)
    for event in (
        TaskRejected(RejectReason.CAPACITY, "full"),
        TaskAccepted("t", "t"),
        TaskStarted("t"),
        AttemptStarted("t", 1),
        TaskFinished("t", status),
    ):
        bus.publish(event)
    bus.stop()
    assert rec.calls == [
        ("rejected", "full"),
        ("accepted", "t"),
        ("started", "t"),
        ("finished", ("t", TaskPhase.SUCCEEDED)),
    ]


def test_plain_callables_subscribe_and_unsubscribe() -> None:
    seen: list[Event] = []
    bus = EventBus()
    bus.subscribe(seen.append)
    bus.publish(TaskStarted("a"))
    bus.unsubscribe(seen.append)
    bus.publish(TaskStarted("b"))
    bus.stop()
    assert seen == [TaskStarted("a")]


def test_default_hook_ignores_everything() -> None:
    hook = TaskHook()
    bus = EventBus([hook])
    bus.publish(TaskAccepted("t", "t"))
    bus.publish(TaskRejected(RejectReason.CAPACITY, "x"))
    bus.publish(TaskStarted("t"))
    bus.publish(TaskFinished("t", TaskStatus()))
    assert bus.stats().errors == {repr(hook): 0}
    bus.stop()
