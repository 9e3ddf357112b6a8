"""The base class of taskvisor's pykka actors, the threads they run on, and bounded waits.

Every thread here survives whatever the code it runs raises, ``BaseException``
included: it logs the error with its traceback and keeps working.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import numbers
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

if TYPE_CHECKING:
    from pykka._actor import ActorInbox

__all__ = [
    "MAX_WAIT",
    "ActorCrash",
    "ActorThreads",
    "BaseActor",
    "Latch",
    "deadline_in",
    "deadline_of",
    "join_until",
    "seconds_of",
    "time_left",
    "wait_timeout",
]

logger = logging.getLogger("taskvisor")

_Job = Callable[[], None]

#: The longest single wait handed to ``threading`` (more overflows
#: ``threading.TIMEOUT_MAX``); longer waits are taken in steps of this.
MAX_WAIT = min(threading.TIMEOUT_MAX, 3600.0)


def join_until(thread: threading.Thread, deadline: float) -> bool:
    """Join ``thread`` until ``deadline`` (``time.monotonic()`` seconds, may be inf).

    Returns:
        Whether the thread has ended.
    """
    while thread.is_alive():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        thread.join(min(left, MAX_WAIT))
    return True


def seconds_of(timeout: object) -> float:
    """A timeout given to a public call, as seconds in ``[0, inf]``.

    NaN and a negative number count as 0 (look once, do not wait); a
    positive number too large for a float (an int like ``10**400``) counts as
    inf.

    Raises:
        TypeError: when ``timeout`` is not a real number.
    """
    if not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"timeout: expected seconds (a number, or None), got a {type(timeout).__name__}"
        )
    try:
        seconds = float(timeout)
    except OverflowError:  # an int too large for a float, either way
        return 0.0 if timeout < 0 else math.inf
    return seconds if seconds > 0 else 0.0  # NaN is not > 0 either


def wait_timeout(timeout: object) -> float | None:
    """A public wait's ``timeout`` as ``threading`` and pykka take it: None or finite seconds.

    None stays None (no bound). NaN and a negative number count as 0 (look
    once); inf, and anything beyond ``threading.TIMEOUT_MAX`` (about 292
    years), is no bound: None.

    Raises:
        TypeError: when ``timeout`` is not a number.
    """
    if timeout is None:
        return None
    seconds = seconds_of(timeout)
    return None if seconds >= threading.TIMEOUT_MAX else seconds


def deadline_of(timeout: object) -> float | None:
    """The monotonic deadline of a public wait's ``timeout`` (None: no bound), as
    ``wait_timeout`` reads it."""
    seconds = wait_timeout(timeout)
    return None if seconds is None else time.monotonic() + seconds


def time_left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (never negative); None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def deadline_in(timeout: float | None, default: float) -> float:
    """Return the monotonic deadline ``timeout`` seconds from now (``None``: ``default``).

    NaN counts as 0 (no wait); a negative timeout too; inf (or an int too
    large for a float) is no deadline.
    """
    return time.monotonic() + seconds_of(default if timeout is None else timeout)


class ActorCrash(Exception):
    """Raised in place of a ``BaseException`` that is not an ``Exception``.

    When an actor's ``on_start``, ``on_receive``, ``on_stop`` or
    ``on_failure`` raises ``SystemExit``, ``KeyboardInterrupt``,
    ``GeneratorExit`` or another bare ``BaseException``, ``BaseActor``
    re-raises it as this (the original is its ``__cause__``). pykka then
    treats it as that actor's failure (the asker gets the error; a told
    message fails the actor) instead of stopping every actor in the
    process, which is what pykka does with a bare ``BaseException``.
    """


def _crash(actor: pykka.Actor, name: str, exc: BaseException) -> ActorCrash:
    crash = ActorCrash(f"{type(actor).__name__}.{name} raised {exc!r}")
    crash.__cause__ = exc
    return crash


def _guard(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an actor callback so a bare ``BaseException`` leaves it as ``ActorCrash``."""
    name = method.__name__
    guarded: Callable[..., Any]
    if name == "on_receive":  # the hot path: one argument, no packing

        def guarded(self: pykka.Actor, message: Any) -> Any:
            try:
                return method(self, message)
            except Exception:
                raise
            except BaseException as exc:
                raise _crash(self, name, exc) from exc

    else:

        def guarded(self: pykka.Actor, *args: Any) -> Any:
            try:
                return method(self, *args)
            except Exception:
                raise
            except BaseException as exc:
                raise _crash(self, name, exc) from exc

    functools.update_wrapper(guarded, method)
    guarded.__taskvisor_guarded__ = True  # type: ignore[union-attr]
    return guarded


_GUARDED = ("on_start", "on_receive", "on_stop", "on_failure")


class ActorThreads:
    """Threads that run actor loops, each reused once its actor has stopped.

    Starting an actor on an idle thread costs a hand-over instead of a
    thread start. Up to ``max_idle`` threads wait for the next actor;
    ``close()`` ends them and joins every thread, so a stopped runtime
    leaves none behind. A job that raises anything (``BaseException``
    included) is logged with its traceback on the ``taskvisor`` logger and
    its thread serves the next job.
    """

    _names = itertools.count(1)

    def __init__(self, max_idle: int = 256) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Job | None]] = []
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def run(self, job: _Job) -> None:
        """Run ``job`` (an actor's loop) on an idle thread, or on a new one.

        Raises:
            RuntimeError: when ``close()`` was called.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the actor threads are closed")
            if self._idle:
                self._idle.pop().put(job)
                return
            # The first job goes through the thread's slot, not ``args``: a
            # thread keeps its ``args`` for life, and with them its first actor.
            slot: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
            slot.put(job)
            thread = threading.Thread(
                target=self._serve,
                args=(slot,),
                name=f"taskvisor-actor-{next(self._names)}",
                daemon=True,
            )
            self._threads.add(thread)
        thread.start()

    def _serve(self, slot: queue.SimpleQueue[_Job | None]) -> None:
        # An idle pool thread waits for its next job without a bound, on purpose:
        # it is a daemon that ``close()`` ends by putting None in its slot.
        me = threading.current_thread()
        job: _Job | None = slot.get()
        try:
            while job is not None:
                try:
                    job()
                except BaseException:  # a job never ends its thread
                    _log_quietly("an actor loop failed; its thread serves on")
                job = None  # drop it (and what it holds) while idle
                with self._lock:
                    if self._closed or len(self._idle) >= self.max_idle:
                        break
                    self._idle.append(slot)
                job = slot.get()
        finally:
            with self._lock:
                self._threads.discard(me)

    @property
    def size(self) -> int:
        """Threads alive now, busy or idle."""
        with self._lock:
            return len(self._threads)

    def close(self, timeout: float | None = 10.0) -> None:
        """End the idle threads and join every thread (call after the actors stopped).

        Args:
            timeout: one deadline in seconds for all the joins together
                (``None``: 10.0). Threads still busy then are left to end
                on their own (they are daemons) and logged at ERROR.
        """
        deadline = deadline_in(timeout, 10.0)
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for slot in idle:
            slot.put(None)
        me = threading.current_thread()
        busy = [t.name for t in threads if t is not me and not join_until(t, deadline)]
        if busy:
            logger.error("actor threads still busy at the close deadline: %s", ", ".join(busy))


def _log_quietly(message: str) -> None:
    """Log ``message`` with the exception being handled; a broken logging setup is ignored."""
    with contextlib.suppress(BaseException):
        logger.exception(message)


class Latch:
    """A one-shot signal on a bare lock: much cheaper to create than ``threading.Event``.

    Set once, never cleared; ``set()`` again changes nothing. Any number of
    threads may wait on it.
    """

    __slots__ = ("_lock", "_open")

    #: Makes ``set()`` once-only between threads (setting is rare: one lock for all).
    _setting = threading.Lock()

    def __init__(self) -> None:
        self._open = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        """Open the latch; later calls do nothing."""
        with Latch._setting:
            if self._open:
                return
            self._open = True
        self._lock.release()

    def is_set(self) -> bool:
        """Whether the latch is open."""
        return self._open

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the latch is open, at most ``timeout`` seconds; return whether it is.

        ``None`` waits as long as it takes (callers bound it themselves).
        """
        seconds = math.inf if timeout is None else seconds_of(timeout)
        if seconds <= MAX_WAIT:  # the common case: one wait
            if self._lock.acquire(timeout=seconds):
                self._lock.release()
                return True
            return False
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if self._lock.acquire(timeout=max(0.0, min(left, MAX_WAIT))):
                self._lock.release()
                return True
            if left <= 0:
                return False


class BaseActor(pykka.ThreadingActor):
    """A ``ThreadingActor`` on a daemon thread with a C-implemented inbox.

    Daemon threads start in constant time (pykka's non-daemon threads make
    starting N actors O(N^2) on Python 3.11); taskvisor's own ordered
    shutdown joins them. ``queue.SimpleQueue`` hands a message over several
    times faster than ``queue.Queue``, which pykka uses by default. Given
    ``ActorThreads``, the actor runs on a reused thread.

    A subclass's ``on_start``, ``on_receive``, ``on_stop`` and
    ``on_failure`` are wrapped so that a ``BaseException`` that is not an
    ``Exception`` comes out as ``ActorCrash``: that actor fails, the others
    run on (pykka alone would stop every actor in the process).
    """

    use_daemon_thread = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _GUARDED:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "__taskvisor_guarded__", False):
                setattr(cls, name, _guard(method))

    def __init__(
        self, *, threads: ActorThreads | None = None, loop_ended: Latch | None = None
    ) -> None:
        super().__init__()
        self._actor_threads = threads
        #: Opens when the actor's loop has ended (its thread is free, or gone).
        self.loop_ended = loop_ended if loop_ended is not None else Latch()

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        inbox: ActorInbox = queue.SimpleQueue()
        return inbox

    def _start_actor_loop(self) -> None:
        if self._actor_threads is None:
            super()._start_actor_loop()
            return
        try:
            self._actor_threads.run(self._actor_loop)
        except BaseException:
            # No thread will run this actor (its runtime has closed): pykka
            # registered it already, so take it out again, as stopped.
            self.actor_stopped.set()
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.loop_ended.set()
            raise

    # pykka private name, pinned by tests/test_base.py::test_pykka_private_names_we_rely_on:
    # the loop is the job _start_actor_loop runs; overriding it is how we learn it ended.
    def _actor_loop(self) -> None:
        try:
            super()._actor_loop()
        except BaseException:  # never lose the thread, nor leave waiters on loop_ended
            _log_quietly(f"the loop of {type(self).__name__} failed")
        finally:
            self.loop_ended.set()
