"""Work functions and recorders shared by the runtime tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from typing import Any

from taskvisor.actors import Event, Outcome, TaskContext, TaskHook, TaskPhase, TaskStatus


class Recorder(TaskHook):
    """A hook that records every event and every ``on_*`` call, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def on_event(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            self._changed.notify_all()
        super().on_event(event)

    def on_accepted(self, task_id: str) -> None:
        self.calls.append(("accepted", task_id))

    def on_rejected(self, error: Exception) -> None:
        self.calls.append(("rejected", str(error)))

    def on_started(self, task_id: str) -> None:
        self.calls.append(("started", task_id))

    def on_finished(self, task_id: str, status: TaskStatus) -> None:
        self.calls.append(("finished", (task_id, status.phase)))

    def per_task(self) -> dict[str, list[str]]:
        """Map each task id to the names of its on_* calls, in order."""
        out: dict[str, list[str]] = defaultdict(list)
        for name, arg in self.calls:
            if name == "finished":
                out[arg[0]].append(name)
            elif name != "rejected":
                out[arg].append(name)
        return dict(out)

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        """Wait until ``predicate(events)`` holds (events arrive on the bus thread)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True


class RaisesWhenRead(dict):  # type: ignore[type-arg]
    """An output whose conversion raises ``error``, any ``BaseException``: its
    ``items()``, which a converter calls, is the user's code."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(a=1)
        self.error = error

    def items(self) -> Any:
        raise self.error


class IteratesBadly(list):  # type: ignore[type-arg]
    """An output that JSON encoding reads through ``__iter__``, which raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__([1])
        self.error = error

    def __iter__(self) -> Any:
        raise self.error


def double(ctx: TaskContext, x: int) -> int:
    return x * 2


def fail(ctx: TaskContext) -> None:
    raise ValueError("boom")


def until_cancelled(ctx: TaskContext) -> str:
    ctx.wait_cancelled(60)
    return "stopped"


def stubborn(ctx: TaskContext, release: threading.Event) -> str:
    """Ignore cancellation until the test releases it."""
    release.wait(60)
    return "late"


def echo(ctx: TaskContext) -> str:
    request = ctx.receive(10)
    request.reply(("echo", ctx.attempt, request.message))
    return "answered"


def serve(ctx: TaskContext) -> None:
    """Answer requests until cancelled; a request of 'crash' makes it fail."""
    while True:
        request = ctx.receive(60)  # raises TaskCancelled when the attempt is cancelled
        if request.message == "crash":
            request.reply("crashing")
            raise RuntimeError("asked to crash")
        request.reply((ctx.attempt, request.message))


async def adouble(ctx: TaskContext, x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


async def afail(ctx: TaskContext) -> None:
    await asyncio.sleep(0)
    raise ValueError("boom")


async def asleep(ctx: TaskContext) -> None:
    await asyncio.sleep(60)


async def aecho(ctx: TaskContext) -> str:
    request = await ctx.receive_async(10)
    request.reply(("echo", ctx.attempt, request.message))
    return "answered"


def phases(events: list[Event]) -> list[TaskPhase]:
    return [e.status.phase for e in events if hasattr(e, "status")]


def worker(ctx: TaskContext) -> str:
    """Serve requests: 'crash' fails the attempt, 'exit' ends it normally."""
    while True:
        request = ctx.receive(60)
        if request.message == "crash":
            request.reply("crashing")
            raise RuntimeError("asked to crash")
        if request.message == "exit":
            request.reply("exiting")
            return "exited"
        request.reply((ctx.attempt, request.message))


class Custom(BaseException):
    """A bare BaseException subclass of the user's own."""


#: Every kind of exception a hook, a callback, a task or a store may raise.
RAISED: list[type[BaseException]] = [
    RuntimeError,
    SystemExit,
    KeyboardInterrupt,
    GeneratorExit,
    Custom,
]


class Sink:
    """Collects what an executor reports (the task actor's part, without an actor)."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.done = threading.Event()

    def progress(self, value: Any) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.done.set()
