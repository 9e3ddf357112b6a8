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
    │   └── UnknownTask(StoreError, KeyError)         no record with that id
    ├── Unsupported(TaskvisorError, NotImplementedError)  a kind without that operation
    ├── SubmissionError(TaskvisorError, RuntimeError) a submission was rejected
    ├── TaskFailedError(TaskvisorError, RuntimeError) a task ended without a result
    ├── WaitTimeout(TaskvisorError, TimeoutError)     a wait ran out of time
    ├── TaskCancelled(TaskvisorError)                 raised in work whose attempt was cancelled
    └── (taskvisor.supervision adds SupervisorExhausted and ChildStartError)
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
    "SubmissionError",
    "TargetImportError",
    "TaskCancelled",
    "TaskFailedError",
    "TaskvisorError",
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
    got 'always'``.
    """

    #: The field the problem is in, when one field is to blame.
    field: str | None = None

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


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


class TaskCancelled(TaskvisorError):
    """Raised inside running work by ``ctx.receive()`` when its attempt is cancelled."""
