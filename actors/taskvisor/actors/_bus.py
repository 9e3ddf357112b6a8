"""The event bus: one actor relaying lifecycle events to hook subscribers.

Guarantees:

- every subscriber sees events in the order the bus received them;
- each subscriber is fed by a delivery thread of its own, so a hook that
  raises or blocks cannot hold up task execution, result publication or
  any other subscriber; hook errors are logged with their traceback and
  counted;
- ``stop()`` delivers every event already published, then stops.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pykka

from ._base import BaseActor
from ._errors import SubmissionError, WaitTimeout
from ._events import Event, TaskAccepted, TaskFinished, TaskRejected, TaskStarted
from ._model import TaskStatus

__all__ = ["BusStats", "EventBus", "Subscriber", "TaskHook"]

logger = logging.getLogger("taskvisor.events")


class TaskHook:
    """Base class for lifecycle observers; every method is a no-op by default.

    Hooks run on a delivery thread owned by the bus, one thread per
    subscriber, never on a task's thread. Override the four ``on_*``
    methods, or ``on_event`` to see every event (attempts, restarts,
    supervisor decisions) in one place.

    Per task: ``on_accepted`` comes first; ``on_started`` only when the work
    really began; ``on_finished`` exactly once, with the terminal status
    (a task cancelled before it started finishes without ``on_started``).
    A rejected submission gets only ``on_rejected``.
    """

    def on_accepted(self, task_id: str) -> None:
        """Call when a submission was accepted as ``task_id``."""

    def on_rejected(self, error: SubmissionError) -> None:
        """Call when a submission was rejected (it has no task id)."""

    def on_started(self, task_id: str) -> None:
        """Call when the task's work really began."""

    def on_finished(self, task_id: str, status: TaskStatus) -> None:
        """Call once, when the task has ended for good."""

    def on_event(self, event: Event) -> None:
        """Receive every event; the default routes the four lifecycle events to ``on_*``."""
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


#: A subscriber is a ``TaskHook`` or a plain callable taking each event.
Subscriber = TaskHook | Callable[[Event], Any]


@attrs.frozen
class BusStats:
    """Counters of a bus: events relayed to subscribers, and per subscriber (by repr)
    the events delivered and the errors its hook raised."""

    published: int
    delivered: dict[str, int]
    errors: dict[str, int]


_STOP = object()


class _Delivery:
    """One subscriber's queue and delivery thread."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.name = repr(subscriber)
        self.call: Callable[[Event], Any] = (
            subscriber.on_event if isinstance(subscriber, TaskHook) else subscriber
        )
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.delivered = 0
        self.errors = 0
        self.thread = threading.Thread(
            target=self._run, name=f"taskvisor-hook-{self.name[:40]}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        get, call = self.queue.get, self.call
        while (event := get()) is not _STOP:
            if type(event) is _Barrier:
                event.passed.release()
                continue
            try:
                call(event)
            except Exception:
                self.errors += 1
                logger.exception("hook %s raised on %r", self.name, event)
            self.delivered += 1


class _BusActor(BaseActor):
    def __init__(self, subscribers: Iterable[Subscriber], stop_timeout: float) -> None:
        super().__init__()
        self.deliveries = [_Delivery(s) for s in subscribers]
        self.published = 0
        self.stop_timeout = stop_timeout

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Event):
            self.published += 1
            for delivery in self.deliveries:
                delivery.queue.put(message)
            return None
        if isinstance(message, _Subscribe):
            self.deliveries.append(_Delivery(message.subscriber))
            return len(self.deliveries)
        if isinstance(message, _Unsubscribe):
            for delivery in list(self.deliveries):
                if delivery.subscriber == message.subscriber:
                    self.deliveries.remove(delivery)
                    self._finish([delivery])
            return len(self.deliveries)
        if isinstance(message, _Flush):
            barriers = [_Barrier() for _ in self.deliveries]
            for delivery, barrier in zip(self.deliveries, barriers, strict=True):
                delivery.queue.put(barrier)
            return barriers
        if isinstance(message, _Stats):
            return BusStats(
                published=self.published,
                delivered={d.name: d.delivered for d in self.deliveries},
                errors={d.name: d.errors for d in self.deliveries},
            )
        raise TypeError(f"event bus: unexpected message {message!r}")

    def on_stop(self) -> None:
        self._finish(self.deliveries)

    def on_failure(self, *_exc: object) -> None:  # pragma: no cover - on_receive never raises
        self._finish(self.deliveries)

    def _finish(self, deliveries: list[_Delivery]) -> None:
        for delivery in deliveries:
            delivery.queue.put(_STOP)
        for delivery in deliveries:
            delivery.thread.join(self.stop_timeout)
            if delivery.thread.is_alive():
                logger.error(
                    "hook %s still busy after %.1fs; left behind", delivery.name, self.stop_timeout
                )


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

    __slots__ = ("passed",)

    def __init__(self) -> None:
        self.passed = threading.Lock()
        self.passed.acquire()


class EventBus:
    """Relay events, in one order, to every subscriber.

    ``publish`` may be called from any thread and never blocks on hooks.
    """

    def __init__(self, subscribers: Iterable[Subscriber] = (), *, stop_timeout: float = 30.0):
        initial = list(subscribers)
        self._ref = _BusActor.start(initial, stop_timeout)
        self._tell = self._ref.tell
        # Read without a lock by publishers: with no subscriber, an event goes nowhere.
        self._subscribers = len(initial)

    @property
    def wanted(self) -> bool:
        """Whether anyone subscribes: hot paths skip building events nobody takes."""
        return self._subscribers > 0

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every subscriber (dropped once the bus has stopped)."""
        if not self._subscribers:
            return
        try:
            self._tell(event)
        except pykka.ActorDeadError:
            logger.debug("event bus stopped; dropped %r", event)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Add a subscriber; it sees events published from now on."""
        self._subscribers = self._ref.ask(_Subscribe(subscriber), timeout=10)  # type: ignore[assignment]

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove a subscriber after delivering what was published before."""
        self._subscribers = self._ref.ask(_Unsubscribe(subscriber), timeout=60)  # type: ignore[assignment]

    def stats(self) -> BusStats:
        """Return the bus counters (after every earlier publish was handed out)."""
        result: BusStats = self._ref.ask(_Stats(), timeout=10)  # type: ignore[assignment]
        return result

    def flush(self, timeout: float | None = 30.0) -> None:
        """Return once every subscriber has handled every event published before the call.

        Raises:
            WaitTimeout: when a subscriber is still busy after ``timeout`` seconds.
        """
        try:
            barriers: list[_Barrier] = self._ref.ask(_Flush(), timeout=timeout)  # type: ignore[assignment]
        except pykka.ActorDeadError:
            return  # stopped: everything was delivered
        for barrier in barriers:
            if not barrier.passed.acquire(timeout=-1 if timeout is None else timeout):
                raise WaitTimeout(f"a subscriber did not catch up within {timeout}s")

    @property
    def running(self) -> bool:
        """Whether the bus still accepts events."""
        return self._ref.is_alive()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Deliver every event already published, then stop the bus and its threads.

        Raises:
            WaitTimeout: when delivery did not finish within ``timeout`` seconds.
        """
        try:
            self._ref.stop(block=True, timeout=timeout)
        except pykka.Timeout:
            raise WaitTimeout(f"event bus did not drain within {timeout}s") from None
