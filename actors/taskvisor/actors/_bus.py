"""The event bus: one actor relaying lifecycle events to hook subscribers.

Guarantees:

- every subscriber sees events in the order the bus received them;
- each subscriber is fed by a delivery thread of its own, so a hook that
  raises or blocks cannot hold up task execution, result publication or
  any other subscriber;
- a hook that raises anything, ``BaseException`` included (``SystemExit``,
  ``KeyboardInterrupt``, ``GeneratorExit``), is logged with its traceback
  on the ``taskvisor.events`` logger, counted in ``stats().errors`` and
  reported to the other subscribers as a ``HookFailed`` event (not once
  ``stop()`` began: failures on the final drain are logged and counted
  only); its delivery thread keeps delivering;
- ``stop(timeout)`` is one overall deadline: it delivers what was
  published until then, and abandons (and reports) a hook still busy at
  the deadline instead of waiting for it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pykka

from ._args import hooks_of
from ._base import MAX_WAIT, BaseActor, join_until, seconds_of
from ._errors import SubmissionError, WaitTimeout, described
from ._events import (
    Event,
    HookFailed,
    TaskAccepted,
    TaskFinished,
    TaskRejected,
    TaskStarted,
)
from ._model import TaskStatus

__all__ = ["BusStats", "EventBus", "Subscriber", "TaskHook"]

logger = logging.getLogger("taskvisor.events")

#: Reprs and error texts put into logs, stats and events are cut to this length.
_TEXT_MAX = 200


class TaskHook:
    """Base class for lifecycle observers; every method is a no-op by default.

    Hooks run on a delivery thread owned by the bus, one thread per
    subscriber, never on a task's or an actor's thread; so a hook may block
    without holding up anything but its own later events. Override the four
    ``on_*`` methods, or ``on_event`` to see every event (attempts,
    restarts, supervisor decisions, ``HookFailed``) in one place.

    Per task: ``on_accepted`` comes first; ``on_started`` only when the work
    really began; ``on_finished`` exactly once, with the terminal status
    (a task cancelled before it started finishes without ``on_started``).
    A rejected submission gets only ``on_rejected``.
    """

    def on_accepted(self, task_id: str) -> None:
        """Call when a submission was accepted as ``task_id`` (on the hook's delivery thread)."""

    def on_rejected(self, error: SubmissionError) -> None:
        """Call when a submission was rejected; it has no task id (on the delivery thread)."""

    def on_started(self, task_id: str) -> None:
        """Call when the task's work really began (on the hook's delivery thread)."""

    def on_finished(self, task_id: str, status: TaskStatus) -> None:
        """Call once, when the task has ended for good (on the hook's delivery thread)."""

    def on_event(self, event: Event) -> None:
        """Receive every event; the default routes the four lifecycle events to ``on_*``.

        Runs on the hook's delivery thread.
        """
        match event:
            case TaskAccepted(task_id=task_id):
                self.on_accepted(task_id)
            case TaskRejected(reason=reason, message=message):
                self.on_rejected(SubmissionError(reason, message))
            case TaskStarted(task_id=task_id):
                self.on_started(task_id)
            case TaskFinished(task_id=task_id, status=status):
                self.on_finished(task_id, status)
            case _:
                pass


#: A subscriber is a ``TaskHook`` or a plain callable taking each event; either
#: runs on a delivery thread of its own.
Subscriber = TaskHook | Callable[[Event], Any]


@attrs.frozen
class BusStats:
    """Counters of a bus.

    Attributes:
        published: events the bus relayed to its subscribers.
        delivered: per subscriber (by repr), the events its hook handled
            (returned or raised).
        errors: per subscriber, how many of those its hook raised on.
        abandoned: per subscriber abandoned at the ``stop()`` deadline, how
            many events published to it it never got (a hook abandoned by
            ``unsubscribe()`` is only logged: it has left the stats).
    """

    published: int
    delivered: dict[str, int]
    errors: dict[str, int]
    abandoned: dict[str, int] = attrs.field(factory=dict)


def _cut(text: str) -> str:
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 3] + "..."


def _safe_repr(obj: object) -> str:
    try:
        return _cut(repr(obj))
    except BaseException:  # a broken __repr__ must not break the bus
        return f"<{type(obj).__qualname__} object at {id(obj):#x}>"


def _describe(exc: BaseException) -> str:
    return _cut(described(exc))  # a broken __str__ must not break the bus


def _budget(timeout: float | None, default: float) -> float:
    """Return ``timeout`` (``None``: ``default``) as seconds to wait, read as every
    public wait reads it (``seconds_of``: NaN and negative look once, inf has no bound).

    Raises:
        TypeError: when ``timeout`` is not a number.
    """
    return default if timeout is None else seconds_of(timeout)


_STOP = object()


class _Delivery:
    """One subscriber's queue and delivery thread."""

    def __init__(
        self, subscriber: Subscriber, state: _State, report: Callable[[_Delivery, HookFailed], None]
    ) -> None:
        self.subscriber = subscriber
        self.name = _safe_repr(subscriber)
        self.call: Callable[[Event], Any] = (
            subscriber.on_event if isinstance(subscriber, TaskHook) else subscriber
        )
        self._report = report
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Which of the bus's published events were queued to it, counted on the
        # bus actor's thread without a per-event cost: those published from
        # ``joined`` until ``left``, less its own failure reports (``skipped``).
        self._state = state
        self.joined = state.published
        self.left: int | None = None
        self.skipped = 0
        #: Events its hook handled (returned or raised).
        self.delivered = 0
        self.errors = 0
        #: Set at a deadline the hook missed: its thread delivers nothing more.
        self.abandoned = False
        #: Events it never got, counted when abandoned.
        self.missed = 0
        self._abandoning = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=f"taskvisor-hook-{self.name[:40]}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        get, call = self.queue.get, self.call
        while True:
            event = get()
            if event is _STOP or self.abandoned:
                return
            if type(event) is _Barrier:
                event.passed.release()
                continue
            try:
                call(event)
            except BaseException as exc:  # a hook never ends its thread
                self.errors += 1
                self._failed(event, exc)
            self.delivered += 1

    def _failed(self, event: Event, exc: BaseException) -> None:
        try:
            logger.error(
                "hook %s raised %s on %s", self.name, type(exc).__name__, event, exc_info=exc
            )
            if type(event) is not HookFailed:  # a failure on a failure report is not reported
                self._report(self, HookFailed(self.name, type(event).__name__, _describe(exc)))
        except BaseException:  # pragma: no cover - logging itself broke
            pass

    def received(self) -> int:
        """How many events the bus queued to it."""
        left = self.left if self.left is not None else self._state.published
        return left - self.joined - self.skipped

    def abandon(self, why: str) -> None:
        """Give up on a hook still busy at a deadline: its thread ends when the hook returns."""
        with self._abandoning:
            if self.abandoned:
                return
            self.abandoned = True
            # Alive at a deadline after the end was queued: it is inside its hook.
            self.missed = max(0, self.received() - self.delivered - 1)
        logger.error(
            "hook %s still busy at the %s deadline: abandoned; it did not get %d event(s)",
            self.name,
            why,
            self.missed,
        )


class _State:
    """What the bus actor owns, readable by ``EventBus`` once the actor has stopped."""

    def __init__(self) -> None:
        self.deliveries: list[_Delivery] = []
        self.published = 0
        self.closed = False

    def stats(self) -> BusStats:
        deliveries = list(self.deliveries)
        return BusStats(
            published=self.published,
            delivered={d.name: d.delivered for d in deliveries},
            errors={d.name: d.errors for d in deliveries},
            abandoned={d.name: d.missed for d in deliveries if d.abandoned},
        )


class _BusActor(BaseActor):
    def __init__(self, state: _State, subscribers: Iterable[Subscriber]) -> None:
        super().__init__()
        self.state = state
        tell = self.actor_ref.tell

        def report(source: _Delivery, event: HookFailed) -> None:  # runs on a delivery thread
            if len(state.deliveries) > 1 and not state.closed:
                with contextlib.suppress(pykka.ActorDeadError):
                    tell(_Failure(source, event))

        self.report = report
        state.deliveries.extend(_Delivery(s, state, report) for s in subscribers)

    def on_receive(self, message: Any) -> Any:
        state = self.state
        if isinstance(message, Event):
            if state.closed:
                return None
            state.published += 1
            for delivery in state.deliveries:
                delivery.queue.put(message)
            return None
        if isinstance(message, _Failure):
            if not state.closed:
                state.published += 1
                message.source.skipped += 1  # no report of its own failure
                for delivery in state.deliveries:
                    if delivery is not message.source:
                        delivery.queue.put(message.event)
            return None
        if isinstance(message, _Subscribe):
            if state.closed:
                logger.warning(
                    "event bus stopped; %s not subscribed", _safe_repr(message.subscriber)
                )
            else:
                state.deliveries.append(_Delivery(message.subscriber, state, self.report))
            return len(state.deliveries)
        if isinstance(message, _Unsubscribe):
            gone = [d for d in state.deliveries if d.subscriber == message.subscriber]
            for delivery in gone:
                state.deliveries.remove(delivery)
                delivery.left = state.published
                delivery.queue.put(_STOP)
            return len(state.deliveries), gone
        if isinstance(message, _Flush):
            if state.closed:
                return []
            barriers = []
            for delivery in state.deliveries:
                if not delivery.abandoned:
                    barrier = _Barrier(delivery)
                    delivery.queue.put(barrier)
                    barriers.append(barrier)
            return barriers
        if isinstance(message, _Stats):
            return state.stats()
        # A stray message must not stop the bus (a told one would): log it, drop it.
        logger.error("event bus: dropped an unexpected message %s", _safe_repr(message))
        return None

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, *_exc: object) -> None:  # pragma: no cover - on_receive never raises
        self._close()

    def _close(self) -> None:
        """Let every delivery thread end after the events already queued (waits for none)."""
        state = self.state
        if not state.closed:
            state.closed = True
            for delivery in state.deliveries:
                delivery.left = state.published
                delivery.queue.put(_STOP)


@attrs.frozen
class _Failure:
    source: _Delivery
    event: HookFailed


@attrs.frozen
class _Subscribe:
    subscriber: Subscriber


@attrs.frozen
class _Unsubscribe:
    subscriber: Subscriber


@attrs.frozen
class _Stats:
    pass


@attrs.frozen
class _Flush:
    pass


class _Barrier:
    """Put behind the events to flush; released when a subscriber reaches it."""

    __slots__ = ("delivery", "passed")

    def __init__(self, delivery: _Delivery) -> None:
        self.delivery = delivery
        self.passed = threading.Lock()
        self.passed.acquire()


class EventBus:
    """Relay events, in one order, to every subscriber.

    ``publish`` may be called from any thread and never blocks on hooks.
    Each subscriber runs on a daemon delivery thread of its own. Every
    method that waits takes a timeout; none waits past it.

    Args:
        subscribers: the hooks subscribed from the start.
        stop_timeout: seconds ``stop()`` and ``unsubscribe()`` wait for
            busy hooks when given no timeout (default 30.0).
    """

    def __init__(self, subscribers: Iterable[Subscriber] = (), *, stop_timeout: float = 30.0):
        initial = hooks_of(subscribers, "hooks")
        try:
            self._stop_timeout = _budget(stop_timeout, 30.0)
        except TypeError:
            got = _safe_repr(stop_timeout)
            raise TypeError(
                f"EventBus(stop_timeout): expected seconds (a number), got {got}"
            ) from None
        self._state = _State()
        self._ref = _BusActor.start(self._state, initial)
        self._tell = self._ref.tell
        # Read without a lock by publishers: with no subscriber, an event goes nowhere.
        self._subscribers = len(initial)

    @property
    def wanted(self) -> bool:
        """Whether anyone subscribes: hot paths skip building events nobody takes."""
        return self._subscribers > 0

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every subscriber; never blocks (dropped once the bus stopped)."""
        if not self._subscribers:
            return
        try:
            self._tell(event)
        except pykka.ActorDeadError:
            logger.debug("event bus stopped; dropped %r", event)

    def subscribe(self, subscriber: Subscriber, timeout: float = 10.0) -> None:
        """Add a subscriber; it sees events published from now on, on a thread of its own.

        Raises:
            WaitTimeout: when the bus does not answer within ``timeout`` seconds.
        """
        reply = self._ask(_Subscribe(subscriber), timeout, "subscribe")
        if reply is not None:
            self._subscribers = reply

    def unsubscribe(self, subscriber: Subscriber, timeout: float | None = None) -> None:
        """Remove a subscriber after delivering to it what was published before.

        Waits until ``timeout`` seconds (``None``: the bus's ``stop_timeout``)
        for the hook to finish; a hook still busy then is abandoned and
        logged at ERROR. Called from the subscriber's own hook, it does not
        wait for that hook. Never raises on a slow hook.

        Raises:
            WaitTimeout: when the bus itself does not answer in time.
        """
        deadline = time.monotonic() + _budget(timeout, self._stop_timeout)
        reply = self._ask(_Unsubscribe(subscriber), deadline - time.monotonic(), "unsubscribe")
        if reply is None:
            return
        self._subscribers, gone = reply
        self._wait_for(gone, deadline, "unsubscribe")

    def stats(self, timeout: float = 10.0) -> BusStats:
        """Return the bus counters (after every earlier publish was handed out).

        After ``stop()`` the final counters are returned at once.

        Raises:
            WaitTimeout: when the bus does not answer within ``timeout`` seconds.
        """
        if self._state.closed:
            return self._state.stats()
        result = self._ask(_Stats(), timeout, "stats")
        return self._state.stats() if result is None else result

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every subscriber has handled every event published before the call.

        ``timeout`` (seconds, default 30.0) bounds the whole call. Abandoned
        hooks are not waited for; called from a hook, the calling hook's own
        queue is not waited for (it cannot advance while its hook runs);
        after ``stop()`` began it returns at once.

        Raises:
            WaitTimeout: when a subscriber is still busy after ``timeout``
                seconds (the message names the hooks).
        """
        deadline = time.monotonic() + _budget(timeout, 30.0)
        barriers: list[_Barrier] | None = self._ask(_Flush(), deadline - time.monotonic(), "flush")
        me = threading.current_thread()
        late = []
        for barrier in barriers or ():
            delivery = barrier.delivery
            if delivery.thread is me:
                continue
            # Short steps: a hook abandoned meanwhile (by stop) will never pass its barrier.
            while not barrier.passed.acquire(
                timeout=min(max(0.0, deadline - time.monotonic()), 0.1)
            ):
                if delivery.abandoned or not delivery.thread.is_alive():
                    break
                if time.monotonic() >= deadline:
                    late.append(delivery.name)
                    break
        if late:
            raise WaitTimeout(f"hook(s) {', '.join(late)} did not catch up within {timeout}s")

    @property
    def running(self) -> bool:
        """Whether the bus still accepts events."""
        return self._ref.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        """Deliver what was published, within one deadline, then stop the bus and its threads.

        ``timeout`` (seconds; ``None``: the bus's ``stop_timeout``, 30.0 by
        default) is one overall deadline for every hook together. A hook
        still busy at the deadline is abandoned: it gets nothing more, its
        daemon thread ends as soon as the hook returns, and it is logged at
        ERROR with the number of events it did not get (also in
        ``stats().abandoned``). Idempotent and safe from any thread,
        including a hook (which is then not waited for); every caller
        returns by its own deadline. Never raises on slow hooks.

        Raises:
            TypeError: when ``timeout`` is not a number (NaN looks once).
        """
        deadline = time.monotonic() + _budget(timeout, self._stop_timeout)
        self._subscribers = 0
        try:  # the actor stops after every event already in its inbox, handing them out
            self._ref.stop(block=True, timeout=min(max(0.0, deadline - time.monotonic()), MAX_WAIT))
        except pykka.Timeout:  # pragma: no cover - the actor never blocks
            logger.error("event bus actor did not stop in time")
        self._wait_for(self._state.deliveries, deadline, "stop")

    def _wait_for(self, deliveries: Iterable[_Delivery], deadline: float, why: str) -> None:
        me = threading.current_thread()
        waited = [d for d in deliveries if d.thread is not me]
        for delivery in waited:
            join_until(delivery.thread, deadline)
        for delivery in waited:
            if delivery.thread.is_alive():
                delivery.abandon(why)

    def _ask(self, message: object, timeout: float, what: str) -> Any:
        """Ask the bus actor; ``None`` when it has stopped."""
        timeout = seconds_of(timeout)
        try:
            return self._ref.ask(message, timeout=min(timeout, MAX_WAIT))
        except pykka.ActorDeadError:
            return None
        except pykka.Timeout:
            raise WaitTimeout(f"event bus: no answer to {what} within {timeout}s") from None
