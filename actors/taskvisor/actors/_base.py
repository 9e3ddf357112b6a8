"""The base class of taskvisor's pykka actors, and the threads they run on."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pykka

if TYPE_CHECKING:
    from pykka._actor import ActorInbox

__all__ = ["ActorThreads", "BaseActor", "Latch"]

logger = logging.getLogger("taskvisor")

_Job = Callable[[], None]


class ActorThreads:
    """Threads that run actor loops, each reused once its actor has stopped.

    Starting an actor on an idle thread costs a hand-over instead of a
    thread start. Up to ``max_idle`` threads wait for the next actor;
    ``close()`` ends them and joins every thread, so a stopped runtime
    leaves none behind.
    """

    _names = itertools.count(1)

    def __init__(self, max_idle: int = 256) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Job | None]] = []
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def run(self, job: _Job) -> None:
        """Run ``job`` (an actor's loop) on an idle thread, or on a new one."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the actor threads are closed")
            if self._idle:
                self._idle.pop().put(job)
                return
            thread = threading.Thread(
                target=self._serve,
                args=(job,),
                name=f"taskvisor-actor-{next(self._names)}",
                daemon=True,
            )
            self._threads.add(thread)
        thread.start()

    def _serve(self, job: _Job | None) -> None:
        slot: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        me = threading.current_thread()
        while job is not None:
            try:
                job()
            except BaseException:  # pragma: no cover - pykka's loop handles its errors
                logger.exception("an actor loop failed")
            with self._lock:
                if self._closed or len(self._idle) >= self.max_idle:
                    break
                self._idle.append(slot)
            job = slot.get()
        with self._lock:
            self._threads.discard(me)

    @property
    def size(self) -> int:
        """Threads alive now, busy or idle."""
        with self._lock:
            return len(self._threads)

    def close(self, timeout: float | None = 10.0) -> None:
        """End the idle threads and join every thread (call after the actors stopped)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for slot in idle:
            slot.put(None)
        me = threading.current_thread()
        for thread in threads:
            if thread is not me:
                thread.join(timeout)


class Latch:
    """A one-shot signal on a bare lock: much cheaper to create than ``threading.Event``."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        """Open the latch (once)."""
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the latch is open; return whether it is."""
        if self._lock.acquire(timeout=-1 if timeout is None else timeout):
            self._lock.release()
            return True
        return False


class BaseActor(pykka.ThreadingActor):
    """A ``ThreadingActor`` on a daemon thread with a C-implemented inbox.

    Daemon threads start in constant time (pykka's non-daemon threads make
    starting N actors O(N^2) on Python 3.11); taskvisor's own ordered
    shutdown joins them. ``queue.SimpleQueue`` hands a message over several
    times faster than ``queue.Queue``, which pykka uses by default. Given
    ``ActorThreads``, the actor runs on a reused thread.
    """

    use_daemon_thread = True

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
        else:
            self._actor_threads.run(self._actor_loop)

    def _actor_loop(self) -> None:
        try:
            super()._actor_loop()
        finally:
            self.loop_ended.set()
