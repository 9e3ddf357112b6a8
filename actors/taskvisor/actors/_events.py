"""Lifecycle events relayed by the event bus (frozen attrs classes).

Per task the bus carries ``TaskAccepted`` first, then for each attempt an
``AttemptStarted`` and an ``AttemptFinished``, and ``TaskFinished`` exactly
once, when the task has ended for good (it will not be restarted).
``TaskStarted`` marks the first time the work really began. A rejected
submission produces only ``TaskRejected``, which carries no task id.
"""

from __future__ import annotations

import attrs

from ._errors import RejectReason
from ._model import TaskRun, TaskStatus

__all__ = [
    "AttemptFinished",
    "AttemptStarted",
    "CallbackFailed",
    "Event",
    "HookFailed",
    "TaskAccepted",
    "TaskFinished",
    "TaskRejected",
    "TaskStarted",
]


@attrs.frozen
class Event:
    """Base of every event; ``at`` is wall-clock milliseconds since the epoch."""

    at: int = attrs.field(kw_only=True, default=0)


@attrs.frozen
class TaskAccepted(Event):
    """A task was accepted and given its id."""

    task_id: str
    name: str


@attrs.frozen
class TaskRejected(Event):
    """A submission was rejected; it has no task id."""

    reason: RejectReason
    message: str


@attrs.frozen
class TaskStarted(Event):
    """The task's work really began (its first attempt)."""

    task_id: str


@attrs.frozen
class AttemptStarted(Event):
    """An attempt began (the first, or a restart)."""

    task_id: str
    attempt: int


@attrs.frozen
class AttemptFinished(Event):
    """An attempt ended; ``run`` is the closed ``TaskRun``."""

    task_id: str
    run: TaskRun


@attrs.frozen
class TaskFinished(Event):
    """The task ended for good, with its terminal status."""

    task_id: str
    status: TaskStatus


@attrs.frozen
class CallbackFailed(Event):
    """A timer's callback raised on the timer thread; the other timers keep firing.

    ``callback`` is its repr and ``error`` the exception's type and message,
    each cut to a bounded length.
    """

    callback: str
    error: str


@attrs.frozen
class HookFailed(Event):
    """A subscriber's hook raised; sent to every *other* subscriber.

    ``hook`` is the failing subscriber's repr, ``event`` the type name of
    the event it failed on, ``error`` the exception's type and message
    (each cut to a bounded length). A hook that fails on a ``HookFailed``
    is logged and counted but not reported again, so failures never chain.
    """

    hook: str
    event: str
    error: str
