"""The event bus: one order for all, isolation from bad hooks, drain on stop."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import wait_until
from helpers import RAISED, Recorder
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
from taskvisor.actors._events import HookFailed  # not exported yet: see the report


class Raising(TaskHook):
    def on_event(self, event: Event) -> None:
        raise RuntimeError(f"hook broke on {type(event).__name__}")


class Blocking(TaskHook):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.seen: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.entered.set()
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
            assert normal.wait_for(lambda seen: len(attempts(seen)) == 50)
            assert blocking.seen == []
            assert wait_until(lambda: bus.stats().delivered[repr(raising)] == 50)
            stats = bus.stats()
            assert stats.published == 100  # the 50 events and 50 reports of the raising hook
            assert stats.errors[repr(raising)] == 50
            assert stats.errors[repr(normal)] == 0
            assert stats.delivered[repr(blocking)] == 0
        finally:
            blocking.release.set()
        bus.stop()
    assert attempts(normal.events) == events
    assert attempts(blocking.seen) == events
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


# --- no silent death (fault 6) and bounded waits (fault 15) ---------------------------------


class RaisesOnEven(TaskHook):
    """Records every event, then raises ``kind`` on even attempts."""

    def __init__(self, kind: type[BaseException]) -> None:
        self.kind = kind
        self.seen: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.seen.append(event)
        if isinstance(event, AttemptStarted) and event.attempt % 2 == 0:
            raise self.kind(f"raised on attempt {event.attempt}")


def attempts(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, AttemptStarted)]


def test_fault6_a_hook_raising_system_exit_keeps_its_thread_and_later_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 8, fault 6: SystemExit in a hook killed its thread; later events were lost."""

    class ExitOnFirst(TaskHook):
        def __init__(self) -> None:
            self.seen: list[Event] = []

        def on_event(self, event: Event) -> None:
            self.seen.append(event)
            if len(self.seen) == 1:
                raise SystemExit(3)

    hook = ExitOnFirst()
    bus = EventBus([hook])
    events = [AttemptStarted("t", i) for i in range(20)]
    with caplog.at_level(logging.ERROR, logger="taskvisor.events"):
        for event in events:
            bus.publish(event)
        bus.flush(timeout=10)  # returns: the thread is alive and caught up
        stats = bus.stats()
    assert hook.seen == events
    assert stats.errors == {repr(hook): 1}
    assert stats.delivered == {repr(hook): 20}
    assert "raised SystemExit" in caplog.text
    assert "Traceback" in caplog.text
    bus.stop()


@pytest.mark.parametrize("kind", RAISED, ids=lambda k: k.__name__)
def test_a_hook_raising_any_base_exception_is_logged_counted_reported_and_fed_on(
    kind: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    bad, other = RaisesOnEven(kind), Recorder()
    bus = EventBus([bad, other])
    events: list[Event] = [AttemptStarted("t", i) for i in range(10)]
    with caplog.at_level(logging.ERROR, logger="taskvisor.events"):
        for event in events:
            bus.publish(event)
        bus.flush(timeout=10)
        bus.flush(timeout=10)  # the failure reports told while the first flush ran
        stats = bus.stats()
    bus.stop()
    assert bad.seen == events  # in order, none lost after a failure
    assert attempts(other.events) == events
    failures = [e for e in other.events if isinstance(e, HookFailed)]
    assert [f.event for f in failures] == ["AttemptStarted"] * 5
    assert all(f.hook == repr(bad) and f.error.startswith(kind.__name__) for f in failures)
    assert failures[0].error == f"{kind.__name__}: raised on attempt 0"
    assert stats.errors == {repr(bad): 5, repr(other): 0}
    assert stats.published == 15
    assert caplog.text.count(f"raised {kind.__name__} on AttemptStarted") == 5
    assert caplog.text.count("Traceback") == 5


def test_a_hook_failing_on_a_failure_report_is_not_reported_again() -> None:
    one, two = Raising(), Raising()
    bus = EventBus([one, two])
    bus.publish(TaskStarted("t"))
    bus.flush(timeout=10)
    bus.flush(timeout=10)
    stats = bus.stats()
    bus.stop()
    # Each failed on the event and on the other's report; the reports end there.
    assert stats.published == 3
    assert stats.errors == {repr(one): 2, repr(two): 2}


def test_a_hook_with_a_broken_repr_is_still_served() -> None:
    class Ugly(Recorder):
        def __repr__(self) -> str:
            raise SystemExit("no repr")

    hook = Ugly()
    bus = EventBus([hook])
    bus.publish(TaskStarted("t"))
    bus.stop(timeout=10)
    assert hook.events == [TaskStarted("t")]
    assert list(bus.stats().delivered.values()) == [1]


def test_fault15_blocked_hooks_are_abandoned_at_one_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 8, fault 15: one blocked hook held stop 30 s; three made it raise after 60 s."""
    stuck = [Blocking() for _ in range(3)]
    normal = Recorder()
    bus = EventBus([*stuck, normal])
    events = [AttemptStarted("t", i) for i in range(5)]
    for event in events:
        bus.publish(event)
    assert all(h.entered.wait(10) for h in stuck)
    returned = False
    try:
        with caplog.at_level(logging.ERROR, logger="taskvisor.events"):
            bus.stop(timeout=0.2)  # no WaitTimeout: the deadline is kept, hooks are given up
        returned = True
        still_blocked = [not h.release.is_set() for h in stuck]
        stats = bus.stats()
    finally:
        for hook in stuck:
            hook.release.set()
    assert returned
    assert all(still_blocked)  # stop returned while all three were still blocked
    assert not bus.running
    assert normal.events == events
    assert stats.abandoned == {repr(h): 4 for h in stuck}  # each was in event 0, missed 1..4
    for hook in stuck:
        assert f"hook {hook!r} still busy at the stop deadline: abandoned" in caplog.text
        assert wait_until(lambda hook=hook: hook.seen == events[:1])
    assert caplog.text.count("did not get 4 event(s)") == 3
    for hook in stuck:  # released, an abandoned hook gets nothing more
        assert hook.seen == events[:1]


def test_stop_is_one_deadline_for_all_hooks_not_one_per_hook() -> None:
    stuck = [Blocking() for _ in range(10)]
    bus = EventBus(stuck)
    bus.publish(TaskStarted("t"))
    start = time.monotonic()
    try:
        bus.stop(timeout=0.5)
        took = time.monotonic() - start
    finally:
        for hook in stuck:
            hook.release.set()
    # A deadline per hook would take 10 x 0.5 s: the contract is one deadline. This
    # bounds a deadline, not speed; the margin is wide for a loaded machine.
    assert took < 4.0
    assert set(bus.stats().abandoned) == {repr(h) for h in stuck}


def test_stop_without_timeout_uses_stop_timeout() -> None:
    stuck = Blocking()
    bus = EventBus([stuck], stop_timeout=0.05)
    bus.publish(AttemptStarted("t", 1))
    assert stuck.entered.wait(10)
    try:
        bus.stop()  # the default deadline is the bus's stop_timeout
        assert not stuck.release.is_set()
    finally:
        stuck.release.set()
    assert not bus.running
    assert bus.stats().abandoned == {repr(stuck): 0}


def test_stop_from_a_hook_returns_and_the_rest_is_still_delivered() -> None:
    done = threading.Event()
    seen: list[Event] = []
    other = Recorder()

    def stopper(event: Event) -> None:
        seen.append(event)
        if event == TaskStarted("stop"):
            bus.stop(timeout=10)
            done.set()

    bus = EventBus([stopper, other])
    events = [TaskStarted("a"), TaskStarted("stop"), TaskStarted("b")]
    for event in events:
        bus.publish(event)
    assert done.wait(10)  # stop() called on the hook's own thread returned
    assert wait_until(lambda: seen == events)  # its own queue still drains
    assert other.events == events
    assert not bus.running


def test_concurrent_stops_all_return_after_delivery() -> None:
    slow = Blocking()
    bus = EventBus([slow])
    events = [AttemptStarted("t", i) for i in range(20)]
    for event in events:
        bus.publish(event)
    stoppers = [threading.Thread(target=bus.stop, kwargs={"timeout": 10}) for _ in range(3)]
    for t in stoppers:
        t.start()
    slow.release.set()
    for t in stoppers:
        t.join(10)
    assert not any(t.is_alive() for t in stoppers)
    assert slow.seen == events
    assert bus.stats().abandoned == {}
    bus.stop(timeout=1)  # once more: returns at once


def test_flush_is_bounded_and_names_the_busy_hook() -> None:
    stuck, normal = Blocking(), Recorder()
    bus = EventBus([stuck, normal])
    bus.publish(TaskStarted("t"))
    try:
        with pytest.raises(WaitTimeout, match=re.escape(repr(stuck))):
            bus.flush(timeout=0.05)
    finally:
        stuck.release.set()
    bus.flush(timeout=10)
    assert stuck.seen == [TaskStarted("t")]
    bus.stop()


def test_flush_from_a_hook_does_not_wait_for_itself() -> None:
    flushed = threading.Event()

    def hook(event: Event) -> None:
        bus.flush(timeout=10)
        flushed.set()

    bus = EventBus([hook, Recorder()])
    bus.publish(TaskStarted("t"))
    assert flushed.wait(10)
    bus.stop()


def test_unsubscribe_abandons_a_blocked_hook_at_its_deadline() -> None:
    stuck = Blocking()
    bus = EventBus([stuck])
    bus.publish(TaskStarted("a"))
    bus.publish(TaskStarted("b"))
    assert stuck.entered.wait(10)
    try:
        bus.unsubscribe(stuck, timeout=0.05)
        assert not bus.wanted
        assert not stuck.release.is_set()
    finally:
        stuck.release.set()
    bus.stop()
    assert wait_until(lambda: stuck.seen == [TaskStarted("a")])


@pytest.mark.parametrize("method", ["stop", "flush", "unsubscribe"])
def test_the_bus_reads_a_timeout_as_every_wait_does(method: str) -> None:
    bus = EventBus([Recorder()])
    calls = {
        "stop": lambda timeout: bus.stop(timeout=timeout),
        "flush": lambda timeout: bus.flush(timeout=timeout),
        "unsubscribe": lambda timeout: bus.unsubscribe(print, timeout=timeout),
    }
    try:
        for not_seconds in ("3", b"3", Decimal(3)):
            with pytest.raises(TypeError, match=r"^timeout: expected seconds"):
                calls[method](not_seconds)
        with contextlib.suppress(WaitTimeout):  # no time to wait: it may not be answered
            calls[method](math.nan)  # looks once, as a negative timeout does
        calls[method](math.inf)
    finally:
        bus.stop()


def test_the_bus_refuses_a_stop_timeout_that_is_not_seconds() -> None:
    with pytest.raises(TypeError, match=r"^EventBus\(stop_timeout\): expected seconds"):
        EventBus(stop_timeout="5")  # type: ignore[arg-type]


class Scripted(TaskHook):
    """Follows a script: for an attempt number, raise an exception or block briefly."""

    def __init__(self, script: dict[int, object]) -> None:
        self.script = script
        self.seen: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.seen.append(event)
        if not isinstance(event, AttemptStarted):
            return
        action = self.script.get(event.attempt)
        if isinstance(action, float):
            threading.Event().wait(action)  # a slow hook, not a wait for a window
        elif action is not None:
            raise action  # type: ignore[misc]


actions = st.one_of(
    st.none(),
    st.sampled_from(RAISED).map(lambda kind: kind("scripted")),
    st.sampled_from([0.0, 0.001, 0.003]),
)


@settings(max_examples=40)
@given(scripts=st.lists(st.lists(actions, max_size=30), min_size=1, max_size=3))
def test_every_hook_sees_every_event_in_order_whatever_the_others_do(
    scripts: list[list[object]],
) -> None:
    n = max(len(s) for s in scripts)
    hooks = [Scripted(dict(enumerate(script))) for script in scripts]
    plain = Recorder()
    bus = EventBus([*hooks, plain])
    events = [AttemptStarted("t", i) for i in range(n)]
    for event in events:
        bus.publish(event)
    bus.flush(timeout=30)
    bus.flush(timeout=30)
    stats = bus.stats()
    bus.stop(timeout=30)
    raised = [sum(isinstance(a, BaseException) for a in script) for script in scripts]
    for i, hook in enumerate(hooks):
        assert attempts(hook.seen) == events
        assert stats.errors[repr(hook)] == raised[i]
        reports = [e for e in hook.seen if isinstance(e, HookFailed)]
        assert len(reports) == sum(raised) - raised[i]
    assert attempts(plain.events) == events
    assert sum(isinstance(e, HookFailed) for e in plain.events) == sum(raised)
    assert stats.errors[repr(plain)] == 0
    assert stats.abandoned == {}


def test_a_stray_message_does_not_stop_the_bus(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    bus = EventBus([rec])
    with caplog.at_level(logging.ERROR, logger="taskvisor.events"):
        bus._ref.tell("not an event")
    bus.publish(TaskStarted("t"))
    bus.stop(timeout=10)
    assert rec.events == [TaskStarted("t")]
    assert "dropped an unexpected message 'not an event'" in caplog.text
