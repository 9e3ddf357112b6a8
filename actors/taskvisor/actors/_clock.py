"""Clocks: where actors read the time and schedule timers.

Policy code never reads the time itself: actors pass ``clock.now()`` to it,
and schedule restarts and timeouts with ``clock.call_later``. Tests swap in
a ``ManualClock`` and move time with ``advance()`` instead of sleeping.

Delays: any number of seconds is accepted; a negative delay counts as 0
(the callback runs as soon as it can, as with ``asyncio``'s ``call_later``),
``math.inf`` never fires (until cancelled, it only waits), and a delay too
long for ``threading`` is waited out in steps. NaN, or something that is not
a number, raises ``InvalidData`` at ``call_later``: nothing accepted can
break a timer. A callback that raises anything, ``BaseException``
included, is logged with its traceback on the ``taskvisor.clock`` logger
(and passed to ``on_error`` when given); the other timers keep firing.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ._args import finite_of
from ._base import MAX_WAIT, deadline_in, join_until
from ._errors import InvalidData, shown

__all__ = ["Clock", "ManualClock", "SystemClock", "Timer"]

logger = logging.getLogger("taskvisor.clock")

#: Called on the thread that ran a failed callback, with the callback and its error.
ErrorReporter = Callable[[Callable[[], None], BaseException], None]


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


def _delay(delay: float, where: str) -> float:
    """Return ``delay`` as seconds >= 0 (inf kept), or raise ``InvalidData``."""
    seconds = math.nan
    if isinstance(delay, int | float) and not isinstance(delay, bool):
        try:
            seconds = float(delay)
        except OverflowError:  # an int too large for a float: as good as forever
            seconds = math.inf
    if math.isnan(seconds):
        raise InvalidData(
            f"{where}: delay must be a number of seconds (negative counts as 0, "
            f"inf never fires), got {shown(delay)}"
        )
    return max(0.0, seconds)


def _run_callback(callback: Callable[[], None], on_error: ErrorReporter | None) -> None:
    """Run one timer callback; whatever it raises is logged and reported, never raised."""
    try:
        callback()
    except BaseException as exc:  # a callback never ends the timer thread
        with contextlib.suppress(BaseException):  # nor does broken logging, or the reporter
            logger.error("timer callback %r raised %s", callback, type(exc).__name__, exc_info=exc)
            if on_error is not None:
                on_error(callback, exc)


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

    Args:
        keep_thread: keep the timer thread while no timer is pending.
        on_error: called on the timer thread with a callback that raised
            and its exception, after the error was logged (for example to
            publish an event). What it raises is ignored.
    """

    def __init__(self, *, keep_thread: bool = False, on_error: ErrorReporter | None = None) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._live = 0
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._keep_thread = keep_thread
        self._closed = False
        self._on_error = on_error
        #: When the timer thread wakes next (inf: when notified). A new timer
        #: wakes it only when due before that.
        self._waiting_until = math.inf

    def close(self, timeout: float | None = 10.0) -> None:
        """Drop pending timers and end the timer thread.

        Args:
            timeout: seconds to wait for a callback still running
                (``None``: 10.0). Not waited when called from a callback.
        """
        with self._cond:
            self._closed = True
            self._keep_thread = False
            self._live = 0
            self._heap.clear()
            thread = self._thread
            self._cond.notify()
        if (
            thread is not None
            and thread is not threading.current_thread()
            and not join_until(thread, deadline_in(timeout, 10.0))
        ):
            logger.error("timer thread still in a callback at the close deadline")

    def now(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Schedule ``callback`` after ``delay`` seconds on the timer thread.

        A negative delay counts as 0; ``math.inf`` never fires. On a closed
        clock the timer is returned cancelled.

        Raises:
            InvalidData: when ``delay`` is NaN or not a number.
        """
        timer = Timer(time.monotonic() + _delay(delay, "call_later"), callback, self._cancelled)
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
            try:
                timer = self._next()
            except BaseException:  # pragma: no cover - a bug here must not stop every timer
                with contextlib.suppress(BaseException):
                    logger.exception("timer thread failed; it keeps running")
                continue
            if timer is None:
                return
            _run_callback(timer.callback, self._on_error)
            del timer

    def _next(self) -> Timer | None:
        """Wait for the next due timer and take it; ``None`` when the thread should end."""
        with self._cond:
            while True:
                if self._live == 0:
                    if self._keep_thread:
                        self._waiting_until = math.inf
                        self._cond.wait()
                        continue
                    self._thread = None
                    return None
                deadline, _, timer = self._heap[0]
                if timer.cancelled:
                    heapq.heappop(self._heap)
                    continue
                now = time.monotonic()
                wait = deadline - now
                if wait <= 0:
                    heapq.heappop(self._heap)
                    timer.cancelled = True  # fired: a later cancel() is a no-op
                    self._live -= 1
                    return timer
                wait = min(wait, MAX_WAIT)  # a far deadline is waited for in steps
                self._waiting_until = now + wait
                self._cond.wait(wait)


class ManualClock:
    """A clock that moves only when told to: for tests and simulations.

    ``advance(seconds)`` runs every due callback in deadline order, on the
    calling thread. A callback that raises is logged (and passed to
    ``on_error``) like on a ``SystemClock``; the later ones still run.
    """

    def __init__(self, start: float = 0.0, *, on_error: ErrorReporter | None = None) -> None:
        self._now = finite_of(
            start, "ManualClock(start)", low=-sys.float_info.max, high=sys.float_info.max
        )
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._on_error = on_error

    def now(self) -> float:
        """Return the current fake time."""
        with self._lock:
            return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Schedule ``callback`` to run when the clock is advanced past ``now + delay``.

        A negative delay counts as 0; ``math.inf`` never fires.

        Raises:
            InvalidData: when ``delay`` is NaN or not a number.
        """
        seconds = _delay(delay, "call_later")
        with self._lock:
            timer = Timer(self._now + seconds, callback, self._cancelled)
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
        """Move time forward by ``seconds``, running the callbacks that fall due.

        A negative ``seconds`` counts as 0: time never moves back.

        Raises:
            InvalidData: when ``seconds`` is NaN, inf or not a number.
        """
        step = _delay(seconds, "advance")
        if math.isinf(step):
            raise InvalidData(f"advance: seconds must be finite, got {seconds!r}")
        with self._lock:
            target = self._now + step
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
            _run_callback(timer.callback, self._on_error)
