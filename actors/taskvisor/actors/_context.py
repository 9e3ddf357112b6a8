"""What running work sees (``TaskContext``) and what it reports into (``TaskSink``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar, overload

import attrs

from ._base import MAX_WAIT, Latch, seconds_of, wait_timeout
from ._errors import NoReply, TaskCancelled, UnexpectedMessage, WaitTimeout, shown
from ._model import TaskPhase

__all__ = ["Mailbox", "Outcome", "Request", "TaskContext", "TaskSink"]

_M = TypeVar("_M")


def _check_expect(expect: object) -> None:
    """Refuse an ``expect`` that is not a type before a message is taken for it."""
    if expect is not None and not isinstance(expect, type):
        raise TypeError(f"expect: expected a type (a class), got a {type(expect).__name__}")


def _expected(message: object, expect: type[Any] | None) -> Any:
    if expect is not None and not isinstance(message, expect):
        raise UnexpectedMessage(
            f"expected a message of type {expect.__qualname__}, got {message!r:.80}", message
        )
    return message


@attrs.frozen
class Outcome:
    """How a piece of work ended, as its executor saw it."""

    phase: TaskPhase
    error: str | None = None
    exit_code: int | None = None
    output: Any = None


class TaskSink(Protocol):
    """Where running work pushes what happens; thread-safe, never blocks."""

    def progress(self, value: Any) -> None:
        """Report progress (any value)."""
        ...

    def finished(self, outcome: Outcome) -> None:
        """Report that the work ended; call exactly once per attempt."""
        ...


class Flag(Protocol):
    """What ``Mailbox.get`` asks of a cancel flag (``threading.Event`` has it)."""

    def is_set(self) -> bool: ...


class Mailbox:
    """A task's inbox: thread-safe, kept across restarts (like an Akka mailbox).

    A receiver that finds it empty sleeps on a lock of its own, which the
    next ``put`` releases: the receiver blocks within a few steps of looking,
    and a reply sent just before (``Request.reply``, then ``receive`` again)
    leaves the asker's thread the interpreter at once (``threading.Condition``
    takes several times as many steps to go to sleep).

    While no attempt will take what it holds (the task ended for good, or
    its actor stopped), the mailbox refuses requests: each is answered with
    ``NoReply`` at once; other messages are kept.
    """

    __slots__ = ("_items", "_lock", "_refusal", "_sleepers", "_waiters")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        #: Locks of the threads asleep in ``get``, oldest first; each is held
        #: until a ``put`` (or ``wake``) releases it.
        self._sleepers: deque[threading.Lock] = deque()
        self._waiters: list[_Waiter] = []
        #: Why requests are refused now (None: they are kept for an attempt).
        self._refusal: str | None = None

    def put(self, item: Any) -> None:
        """Add ``item`` and wake one waiting receiver (a refused request is answered)."""
        with self._lock:
            refusal = self._refusal if isinstance(item, Request) else None
            if refusal is None:
                self._items.append(item)
                sleeper = self._sleepers.popleft() if self._sleepers else None
                waiters = self._waiters
                if waiters:
                    self._waiters = []
        if refusal is not None:
            _refuse(item, refusal)
            return
        _release(() if sleeper is None else (sleeper,), waiters)

    def get(
        self,
        timeout: float | None = None,
        cancel: Flag | None = None,
        taken: Taken | None = None,
    ) -> Any:
        """Take the oldest item, waiting up to ``timeout`` seconds.

        Args:
            timeout: seconds to wait at most; None (the default) waits until
                an item arrives or ``cancel`` is set.
            cancel: a flag (``threading.Event`` or alike) whose setting ends
                the wait with ``TaskCancelled``; whoever sets it calls ``wake()``.
            taken: the attempt taking it: a ``Request`` taken is kept there
                until answered; once ``end(taken)`` was called, nothing more
                is taken for it.

        Raises:
            WaitTimeout: when nothing arrives in time.
            TaskCancelled: when ``cancel`` is set while waiting, or the
                attempt ``taken`` stands for has ended.
        """
        seconds = None if timeout is None else seconds_of(timeout)
        deadline = math.inf if seconds is None else time.monotonic() + seconds
        while True:
            with self._lock:
                if taken is not None and taken.ended:
                    if self._items and self._sleepers:
                        # A put may have woken this receiver: pass its wake on.
                        self._sleepers.popleft().release()
                    raise TaskCancelled(_ENDED)
                if self._items:
                    return self._take(taken)
                if cancel is not None and cancel.is_set():
                    raise TaskCancelled("the attempt was cancelled while receiving")
                left = deadline - time.monotonic() if timeout is not None else MAX_WAIT
                if left <= 0:
                    raise WaitTimeout(f"no message within {seconds}s")
                sleeper = threading.Lock()
                sleeper.acquire()
                self._sleepers.append(sleeper)
            if not sleeper.acquire(timeout=min(left, MAX_WAIT)):
                with self._lock, contextlib.suppress(ValueError):
                    self._sleepers.remove(sleeper)  # unless a put or wake took it meanwhile
            # Look again: an item (one a put brought as the wait ran out included),
            # a cancel, or the deadline decides.

    def _take(self, taken: Taken | None) -> Any:
        """Pop the oldest item (the lock held); keep a request in ``taken``."""
        item = self._items.popleft()
        if taken is not None and isinstance(item, Request):
            taken.keep(item)
        return item

    def end(self, taken: Taken) -> list[Request]:
        """End the attempt ``taken`` stands for: return the requests it took and
        did not answer. It takes nothing more: a receive of it still waiting
        (in a thread the work started) wakes and raises ``TaskCancelled``."""
        with self._lock:
            taken.ended = True
            unanswered = [r for r in taken.requests if not r.answered]
            taken.requests = []
            woken = self._everyone()
        _release(*woken)
        return unanswered

    def refuse(self, reason: str) -> None:
        """Answer every request held, and each one put from now on, with ``NoReply``.

        ``reason`` says why no attempt will take them (``"task 'a' has
        ended (succeeded)"``). Other messages stay. ``accept()`` undoes it.
        """
        with self._lock:
            self._refusal = reason
            requests = [item for item in self._items if isinstance(item, Request)]
            if requests:
                self._items = deque(i for i in self._items if not isinstance(i, Request))
        for request in requests:
            _refuse(request, reason)

    def accept(self) -> None:
        """Keep requests again, for an attempt to take (after ``refuse``)."""
        if self._refusal is not None:
            with self._lock:
                self._refusal = None

    def wake(self) -> None:
        """Wake every waiting receiver (to notice a cancellation or an attempt's end)."""
        with self._lock:
            woken = self._everyone()
        _release(*woken)

    def _everyone(self) -> tuple[deque[threading.Lock], list[_Waiter]]:
        """Take every waiting receiver off the lists (the lock held), to wake them."""
        sleepers, self._sleepers = self._sleepers, deque()
        waiters, self._waiters = self._waiters, []
        return sleepers, waiters

    async def get_async(self, timeout: float | None = None, taken: Taken | None = None) -> Any:
        """Take the oldest item without blocking the event loop.

        Args:
            timeout: seconds to wait at most; None (the default) waits until
                an item arrives, or until the task awaiting it is cancelled
                (``asyncio.CancelledError``, as the tree cancels ``async`` work).
            taken: as for ``get``.

        Raises:
            WaitTimeout: when nothing arrives in time.
            TaskCancelled: when the attempt ``taken`` stands for has ended.
        """
        loop = asyncio.get_running_loop()
        seconds = None if timeout is None else seconds_of(timeout)
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            with self._lock:
                if taken is not None and taken.ended:
                    raise TaskCancelled(_ENDED)
                if self._items:
                    return self._take(taken)
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            remaining = None if deadline is None else deadline - loop.time()
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                raise WaitTimeout(f"no message within {seconds}s") from None
            finally:
                if not future.done() or future.cancelled():
                    self._forget(loop, future)

    def _forget(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._waiters.remove((loop, future))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


#: A receiver awaiting in ``get_async``: its loop and the future that wakes it.
_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]


def _release(sleepers: Iterable[threading.Lock], waiters: Iterable[_Waiter]) -> None:
    """Wake the receivers taken off a mailbox's lists (outside its lock)."""
    for sleeper in sleepers:
        sleeper.release()
    for loop, future in waiters:
        with contextlib.suppress(RuntimeError):  # that loop has closed since
            loop.call_soon_threadsafe(_wake, future)


def _refuse(request: Request, reason: str) -> None:
    """Answer a request no attempt will take."""
    request.fail(NoReply(f"{reason}: no attempt will take {shown(request.message)}"))


_ENDED = "this attempt has ended: what is left in the mailbox is for the next attempt"

#: Makes answering a ``Request`` once-only between threads (rare: one lock for all).
_ANSWERING = threading.Lock()


class Taken:
    """The requests one attempt took from its mailbox and has not answered yet.

    Changed under the mailbox's lock only. Answered requests are dropped
    from time to time, so an attempt that serves requests for days keeps a
    few, not all.
    """

    __slots__ = ("ended", "requests")

    def __init__(self) -> None:
        self.ended = False
        self.requests: list[Request] = []

    def keep(self, request: Request) -> None:
        requests = self.requests
        if len(requests) >= 32:
            requests[:] = [r for r in requests if not r.answered]
        requests.append(request)


class Request:
    """A message that expects an answer: the work calls ``reply(value)`` once.

    Only the first answer counts; a later one is ignored. When the attempt
    that took a request ends without answering it, the tree answers it with
    ``NoReply`` (so the asker does not wait out its timeout), and a reply
    the work sends after that is ignored.
    """

    __slots__ = ("_answer", "_ready", "answered", "message")

    def __init__(self, message: Any) -> None:
        self.message = message
        #: Whether it has been answered (by the work, or by the tree with an error).
        self.answered = False
        self._answer: tuple[bool, Any] = (False, None)
        # A lock held until the answer is in: the cheapest one-shot signal.
        self._ready = threading.Lock()
        self._ready.acquire()

    def reply(self, value: Any) -> None:
        """Answer the request (ignored when it was answered already)."""
        self._settle(True, value)

    def fail(self, error: BaseException) -> None:
        """Answer the request with an error, raised in the asker (ignored when it
        was answered already).

        Raises:
            TypeError: when ``error`` is not an exception.
        """
        if not isinstance(error, BaseException):
            raise TypeError(f"error: expected an exception, got {shown(error)}")
        self._settle(False, error)

    def __repr__(self) -> str:
        return f"Request({shown(self.message)})"

    def _settle(self, ok: bool, value: Any) -> None:
        with _ANSWERING:  # the answer is in before anyone sees ``answered``
            if self.answered:
                return
            self._answer = (ok, value)
            self.answered = True
        self._ready.release()

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the answer (used by ``TaskHandle.ask``); any number of threads may.

        When the time runs out, the request is answered with that
        ``WaitTimeout``: a reply that comes later is ignored (``answered``
        tells the work), and every other waiter gets the same error.

        Args:
            timeout: seconds to wait at most; None (the default) waits until
                the answer comes (``TaskHandle.ask`` always passes a bound).

        Raises:
            WaitTimeout: when no answer came in time.
        """
        seconds = wait_timeout(timeout)
        if self._ready.acquire(timeout=-1 if seconds is None else seconds):
            self._ready.release()  # open for every other waiter
        else:  # give up, unless a reply came just now: the first answer wins either way
            self._settle(False, WaitTimeout(f"no reply to {shown(self.message)} within {seconds}s"))
        ok, value = self._answer
        if ok:
            return value
        raise value


class TaskContext:
    """What the running work of one attempt sees.

    Attributes:
        task_id: the task's id.
        attempt: this attempt's number (1-based).
        pid: the process id of a ``subprocess`` attempt, set by the executor
            before ``start()`` returns; None for other kinds (and when the
            start failed).
        pgid: the process group of a ``subprocess`` attempt (its own group,
            so equal to ``pid``); None for other kinds.
        started: the process's start time as the kernel counts it (Linux
            ``/proc/<pid>/stat`` field 22, clock ticks since boot), a
            fingerprint that tells the process from a later one given the
            same pid; None for other kinds or where ``/proc`` is missing.
    """

    def __init__(self, task_id: str, attempt: int, mailbox: Mailbox, sink: TaskSink) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.mailbox = mailbox
        self.sink = sink
        #: Set once when the attempt is asked to stop: a ``Latch``, not a
        #: ``threading.Event``, since every attempt makes one and few wait on it.
        self._cancel = Latch()
        #: Executor-private state of this attempt (a thread, a process, a future).
        self.handle: Any = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self.started: int | None = None
        #: The requests this attempt took and has not answered (see ``Mailbox.end``).
        self.taken = Taken()

    @property
    def cancelled(self) -> bool:
        """Whether this attempt was asked to stop (cancel, timeout or shutdown)."""
        return self._cancel.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block until this attempt is asked to stop; return whether it was.

        Args:
            timeout: seconds to wait at most; None (the default) waits until
                the attempt is cancelled, which the tree always does at the
                latest when it stops.
        """
        return self._cancel.wait(timeout)

    def request_cancel(self) -> None:
        """Ask the work to stop (called by executors); wakes a blocked ``receive``."""
        self._cancel.set()
        self.mailbox.wake()

    @overload
    def receive(self, timeout: float | None = None) -> object: ...

    @overload
    def receive(self, timeout: float | None = None, *, expect: type[_M]) -> _M: ...

    def receive(self, timeout: float | None = None, *, expect: type[Any] | None = None) -> Any:
        """Take the next delivered message (a ``Request`` for ``TaskHandle.ask``).

        A message can be anything a sender told, so it is typed ``object``:
        narrow it (``isinstance``), or say what you expect with ``expect``
        (``ctx.receive(expect=Request)``), which is checked.

        Args:
            timeout: seconds to wait at most; None (the default) waits until
                a message arrives or the attempt is cancelled or ends, which
                it does at the latest when the tree stops.
            expect: the type the message must have (the return type then).

        Raises:
            WaitTimeout: when nothing arrives within ``timeout`` seconds.
            TaskCancelled: when the attempt is cancelled while waiting, or
                has ended (work abandoned past its grace takes nothing more:
                what is left is for the next attempt).
            UnexpectedMessage: when ``expect`` is given and the message is
                not an instance of it (the message is taken all the same).
            TypeError: when ``expect`` is not a type (no message is taken).
        """
        _check_expect(expect)
        return _expected(self.mailbox.get(timeout, self._cancel, self.taken), expect)

    @overload
    async def receive_async(self, timeout: float | None = None) -> object: ...

    @overload
    async def receive_async(self, timeout: float | None = None, *, expect: type[_M]) -> _M: ...

    async def receive_async(
        self, timeout: float | None = None, *, expect: type[Any] | None = None
    ) -> Any:
        """Like ``receive``, for ``async`` tasks.

        Args:
            timeout: seconds to wait at most; None (the default) waits until
                a message arrives or the coroutine is cancelled.
            expect: the type the message must have (the return type then).

        Raises:
            WaitTimeout: when nothing arrives within ``timeout`` seconds.
            UnexpectedMessage: when ``expect`` is given and the message is
                not an instance of it.
        """
        _check_expect(expect)
        return _expected(await self.mailbox.get_async(timeout, self.taken), expect)

    def report(self, progress: Any) -> None:
        """Report progress; it shows in the task's handle and events."""
        self.sink.progress(progress)
