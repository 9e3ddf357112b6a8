"""Errors raised by taskvisor.

Every error taskvisor raises derives from one root, and each also subclasses
the built-in exception it resembles, so ``except ValueError`` keeps working
for callers that do not know taskvisor::

    TaskvisorError(Exception)
    ├── InvalidData(TaskvisorError, ValueError)       data that does not fit a model class
    │   └── InvalidSpec(InvalidData)                  a spec or tree that cannot be built
    │       └── TargetImportError(InvalidSpec, ImportError)  "pkg.mod:fn" does not import
    ├── IllegalTransition(TaskvisorError, ValueError) a state change the model forbids
    ├── StoreError(TaskvisorError, RuntimeError)      a record store cannot do its work
    │   ├── IncompatibleStore(StoreError, ValueError) not a taskvisor store, or too new
    │   ├── StoreLocked(StoreError)                   the store is owned by another live tree
    │   └── UnknownTask(StoreError, KeyError)         no record with that id
    ├── Unsupported(TaskvisorError, NotImplementedError)  a kind without that operation
    ├── UnexpectedMessage(TaskvisorError, TypeError)  ``ctx.receive(expect=T)`` got no ``T``
    ├── SubmissionError(TaskvisorError, RuntimeError) a submission was rejected
    ├── TaskFailedError(TaskvisorError, RuntimeError) a task ended without a result
    ├── WaitTimeout(TaskvisorError, TimeoutError)     a wait ran out of time
    └── (taskvisor.supervision adds SupervisorExhausted and ChildStartError)

    BaseException
    └── TaskCancelled(BaseException)                  raised in work whose attempt was cancelled

``TaskCancelled`` is not a ``TaskvisorError``: like trio's ``Cancelled`` and
asyncio's ``CancelledError`` it derives from ``BaseException``, so a user's
``except Exception:`` does not swallow a stop the tree asked for.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._model import Task

__all__ = [
    "IllegalTransition",
    "IncompatibleStore",
    "InvalidData",
    "InvalidSpec",
    "RejectReason",
    "StoreError",
    "StoreLocked",
    "SubmissionError",
    "TargetImportError",
    "TaskCancelled",
    "TaskFailedError",
    "TaskvisorError",
    "UnexpectedMessage",
    "UnknownTask",
    "Unsupported",
    "WaitTimeout",
]


class TaskvisorError(Exception):
    """Root of every error taskvisor raises."""


class InvalidData(TaskvisorError, ValueError):
    """Raised when data does not fit a model class.

    The message names the field path of each problem, for example
    ``children[2].restart: expected one of permanent, transient, temporary,
    got 'always'``. It is at most ``MAX_MESSAGE`` (1,000) characters long,
    and so is each of ``problems``: a longer text keeps its start (the path)
    and its end, joined by ``" … "``.
    """

    #: The field the problem is in, when one field is to blame.
    field: str | None = None

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        message = bounded(message)
        super().__init__(message)
        self.problems = tuple(bounded(p) for p in problems) or (message,)


class InvalidSpec(InvalidData):
    """Raised when a task or supervisor spec cannot be built."""


class TargetImportError(InvalidSpec, ImportError):
    """Raised when a ``"package.module:function"`` target cannot be imported."""


class IllegalTransition(TaskvisorError, ValueError):
    """Raised when a task is asked to move to a phase its state machine forbids."""


class StoreError(TaskvisorError, RuntimeError):
    """Raised when a record store cannot read or write."""


class IncompatibleStore(StoreError, ValueError):
    """Raised when a file is not a taskvisor store or has a newer schema."""


class StoreLocked(StoreError):
    """Raised by ``TaskStore.acquire`` when another live tree owns the store.

    The message names the store and its owner: the tree's name, its process
    id and host, and since when it has owned the store. An owner whose
    process has ended no longer owns the store: the next ``acquire`` takes it
    over without any action.
    """


class UnknownTask(StoreError, KeyError):
    """Raised when a store holds no record with the given id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Unsupported(TaskvisorError, NotImplementedError):
    """Raised when a task kind does not support an operation (e.g. deliver)."""


class RejectReason(enum.Enum):
    """Why a submission was rejected."""

    INVALID_SPEC = "invalid_spec"
    DUPLICATE_ID = "duplicate_id"
    CAPACITY = "capacity"
    SHUTTING_DOWN = "shutting_down"


class SubmissionError(TaskvisorError, RuntimeError):
    """Raised when a submission is rejected; a rejected submission has no task id."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TaskFailedError(TaskvisorError, RuntimeError):
    """Raised by ``TaskHandle.result()`` when the task ended without succeeding."""

    def __init__(self, task: Task) -> None:
        status = task.status
        detail = f": {status.error}" if status.error else ""
        super().__init__(f"task {task.metadata.id!r} ended {status.phase.value}{detail}")
        self.task = task


class WaitTimeout(TaskvisorError, TimeoutError):
    """Raised when waiting for a task or a tree runs out of time."""


class NoReply(WaitTimeout):
    """Raised by ``ask`` as soon as it is known that no reply will come.

    The attempt that took the request ended without replying (it raised,
    returned, timed out or was stopped), or the task ended for good, or its
    actor stopped, with the request unanswered. OTP's ``gen_server:call``
    fails the same way when the server dies. It is a ``WaitTimeout`` that
    comes early, so code that handles a timed-out ``ask`` handles it too.
    """


class TaskCancelled(BaseException):
    """Raised inside running work by ``ctx.receive()`` when its attempt is cancelled.

    It derives from ``BaseException`` (as trio's ``Cancelled`` and asyncio's
    ``CancelledError`` do), not from ``TaskvisorError``: ``except Exception:``
    in the work does not catch it, so a stop cannot be swallowed by mistake.
    Catch it by name only to clean up, then re-raise it.

    Raised by the work when the tree did not ask for a cancel (the attempt's
    ``ctx.cancelled`` is False), it ends the attempt abnormally: ``FAILED``,
    with an error saying no cancel was requested, for every kind alike.
    """


# --------------------------------------------------------------------------- message helpers

#: The longest message an ``InvalidData`` carries, in characters.
MAX_MESSAGE = 1000
#: The longest echo of a bad value in a message, in characters.
MAX_SHOWN = 80
# Ints longer than this many bits are described, not printed: str() of an int
# over 4,300 digits raises ValueError, and a shorter one is still too long.
_INT_BITS = 200


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """Return a repr of ``value`` for an error message, at most ``limit`` characters.

    Safe for any value: strings and containers are cut (``"…"`` marks the
    cut), huge ints are described by their size, nesting is shown three
    levels deep, and a ``__repr__`` that raises gives ``<type object>``.
    Never raises.
    """
    try:
        text = _repr(value, limit, 3)
    except Exception:  # a user's __repr__ may raise anything; the message must not
        text = f"<{_type_name(value)} object>"
    return cut(text, limit)


def described(exc: BaseException, *, named: bool = True) -> str:
    """``"Type: message"`` of an exception (or only its message, unless ``named``).

    Never raises: an exception raised by user code may have a ``__str__``
    that raises too.
    """
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # its __str__ raised as well
        return f"{name} (its message cannot be shown)"
    if not named:
        return text
    return f"{name}: {text}" if text else name


def cut(text: str, limit: int) -> str:
    """Return ``text``, or its first ``limit - 1`` characters and ``"…"`` when longer."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """Return ``message`` cut to ``limit`` characters, keeping its start and its end."""
    if len(message) <= limit:
        return message
    head = (limit - 3) // 2
    tail = limit - 3 - head
    return message[:head] + " … " + message[len(message) - tail :]


def _type_name(value: object) -> str:
    try:
        return type(value).__name__
    except Exception:  # pragma: no cover - type() of anything has a name
        return "value"


def _repr(value: object, budget: int, depth: int) -> str:
    kind = type(value)
    if value is None or kind is bool or kind is float:
        return repr(value)
    if kind is int:
        bits = value.bit_length()  # type: ignore[attr-defined]
        if bits > _INT_BITS:
            sign = "negative " if value < 0 else ""  # type: ignore[operator]
            return f"<{sign}int of about {int(bits * 0.30103) + 1} digits>"
        return repr(value)
    if kind is str:
        return repr(value[: budget + 1])  # type: ignore[index]
    if kind is bytes:
        return repr(value[: budget + 1])  # type: ignore[index]
    if kind in (list, tuple, dict):
        return _repr_container(value, budget, depth)
    return cut(repr(value), budget + 1)


def _repr_container(value: object, budget: int, depth: int) -> str:
    if isinstance(value, dict):
        opening, closing = "{", "}"
        items: object = value.items()
    else:
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
        items = value
    size = len(value)  # type: ignore[arg-type]
    if not size:
        return opening + closing
    if depth <= 0:
        return opening + "…" + closing
    parts: list[str] = []
    used = 2
    for item in items:  # type: ignore[attr-defined]
        if used > budget:
            parts.append("…")
            break
        if isinstance(value, dict):
            key, val = item
            part = _repr(key, budget, depth - 1) + ": " + _repr(val, budget, depth - 1)
        else:
            part = _repr(item, budget, depth - 1)
        parts.append(part)
        used += len(part) + 2
    if closing == ")" and size == 1 and parts[-1] != "…":
        return f"({parts[0]},)"
    return opening + ", ".join(parts) + closing


class UnexpectedMessage(TaskvisorError, TypeError):
    """Raised by ``ctx.receive(expect=T)`` when the next message is not a ``T``.

    The message has been taken from the mailbox; it is ``received``. A
    ``Request`` taken so is never answered unless the work answers it.
    """

    def __init__(self, text: str, received: object) -> None:
        super().__init__(text)
        self.received = received
