"""Clocks: where actors read the time and schedule timers.

Policy code never reads the time itself: actors pass ``clock.now()`` to it,
and schedule restarts and timeouts with ``clock.call_later``. Tests swap in
a ``ManualClock`` and move time with ``advance()`` instead of sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock", "Timer"]


class Timer:
    """A scheduled callback; ``cancel()`` keeps it from running."""

    __slots__ = ("_cancel_hook", "callback", "cancelled", "deadline")

    def __init__(
        self,
        deadline: float,
        callback: Callable[[], None],
        cancel_hook: Callable[[Timer], None],
    ) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False
        self._cancel_hook = cancel_hook

    def cancel(self) -> None:
        """Keep the callback from running; harmless after it ran."""
        self._cancel_hook(self)

    def __lt__(self, other: Timer) -> bool:
        return self.deadline < other.deadline


@runtime_checkable
class Clock(Protocol):
    """Monotonic time in seconds and one-shot timers."""

    def now(self) -> float:
        """Return the current monotonic time in seconds."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` (on a clock thread, so it must be quick) after ``delay`` seconds."""
        ...


class SystemClock:
    """The real monotonic clock with one timer thread.

    Callbacks run on the timer thread and must be quick (they only send
    messages). By default the thread runs only while timers are pending.
    With ``keep_thread=True`` (a service's or tree's own clock) it stays
    until ``close()``, so a burst of short timers (a shutdown's grace
    periods) starts no thread per timer.
    """

    def __init__(self, *, keep_thread: bool = False) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._live = 0
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._keep_thread = keep_thread
        self._closed = False
        #: The deadline the timer thread sleeps until (inf: until notified). A
        #: new timer wakes it only when due before that.
        self._waiting_until = math.inf

    def close(self, timeout: float | None = 10.0) -> None:
        """Drop pending timers and end the timer thread (joined)."""
        with self._cond:
            self._closed = True
            self._keep_thread = False
            self._live = 0
            self._heap.clear()
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def now(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Schedule ``callback`` after ``delay`` seconds on the timer thread."""
        timer = Timer(time.monotonic() + max(0.0, delay), callback, self._cancelled)
        with self._cond:
            if self._closed:  # nothing runs on a closed clock
                timer.cancelled = True
                return timer
            heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))
            self._live += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taskvisor-timer", daemon=True
                )
                self._thread.start()
            elif timer.deadline < self._waiting_until:  # due before the thread wakes
                self._cond.notify()
        return timer

    def _cancelled(self, timer: Timer) -> None:
        with self._cond:
            if timer.cancelled or self._closed:  # fired, cancelled, or dropped by close
                return
            timer.cancelled = True
            self._live -= 1
            if self._live == 0:
                self._heap.clear()
                if not self._keep_thread:  # let the thread end now, not at the old deadline
                    self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._live == 0:
                        if self._keep_thread:
                            self._waiting_until = math.inf
                            self._cond.wait()
                            continue
                        self._thread = None
                        return
                    deadline, _, timer = self._heap[0]
                    if timer.cancelled:
                        heapq.heappop(self._heap)
                        continue
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        timer.cancelled = True  # fired: a later cancel() is a no-op
                        self._live -= 1
                        break
                    self._waiting_until = deadline
                    self._cond.wait(wait)
            timer.callback()


class ManualClock:
    """A clock that moves only when told to: for tests and simulations.

    ``advance(seconds)`` runs every due callback in deadline order, on the
    calling thread.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the current fake time."""
        with self._lock:
            return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Schedule ``callback`` to run when the clock is advanced past ``now + delay``."""
        with self._lock:
            timer = Timer(self._now + max(0.0, delay), callback, self._cancelled)
            heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))
        return timer

    def _cancelled(self, timer: Timer) -> None:
        with self._lock:
            timer.cancelled = True

    def pending(self) -> int:
        """Return how many timers are still scheduled."""
        with self._lock:
            return sum(1 for *_, t in self._heap if not t.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running the callbacks that fall due."""
        with self._lock:
            target = self._now + seconds
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > target:
                    self._now = target
                    return
                deadline, _, timer = heapq.heappop(self._heap)
                self._now = max(self._now, deadline)
                if timer.cancelled:
                    continue
                timer.cancelled = True
            timer.callback()
