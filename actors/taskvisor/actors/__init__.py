"""taskvisor.actors: the task model, task actors, executors, events and record stores."""

import logging as _logging

from ._actor import (
    RUNS_KEPT,
    AttemptBegan,
    AttemptEnded,
    AttemptProgress,
    RecordNotSaved,
    Replier,
    TaskActor,
    TaskOwner,
    TaskRef,
    TaskSnapshot,
    Verdict,
)
from ._base import BaseActor
from ._bus import BusStats, EventBus, Subscriber, TaskHook
from ._clock import Clock, ManualClock, SystemClock, Timer
from ._context import Mailbox, Outcome, Request, TaskContext, TaskSink
from ._convert import from_data, to_data
from ._errors import (
    IllegalTransition,
    IncompatibleStore,
    InvalidData,
    InvalidSpec,
    RejectReason,
    StoreError,
    SubmissionError,
    TargetImportError,
    TaskCancelled,
    TaskFailedError,
    TaskvisorError,
    UnknownTask,
    Unsupported,
    WaitTimeout,
)
from ._events import (
    AttemptFinished,
    AttemptStarted,
    Event,
    HookFailed,
    TaskAccepted,
    TaskFinished,
    TaskRejected,
    TaskStarted,
)
from ._executors import (
    AsyncExecutor,
    BaseExecutor,
    CallExecutor,
    SubprocessExecutor,
    TaskExecutor,
    default_executors,
    resolve_target,
)
from ._model import (
    KINDS,
    ObjectMeta,
    Restart,
    Task,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskSpec,
    TaskState,
    TaskStatus,
    now_ms,
)
from ._service import ExecutorService, TaskHandle, resume_record
from ._store import MemoryStore, SqliteStore, TaskStore

__all__ = [
    "KINDS",
    "RUNS_KEPT",
    "AsyncExecutor",
    "AttemptBegan",
    "AttemptEnded",
    "AttemptFinished",
    "AttemptProgress",
    "AttemptStarted",
    "BaseActor",
    "BaseExecutor",
    "BusStats",
    "CallExecutor",
    "Clock",
    "Event",
    "EventBus",
    "ExecutorService",
    "HookFailed",
    "IllegalTransition",
    "IncompatibleStore",
    "InvalidData",
    "InvalidSpec",
    "Mailbox",
    "ManualClock",
    "MemoryStore",
    "ObjectMeta",
    "Outcome",
    "RecordNotSaved",
    "RejectReason",
    "Replier",
    "Request",
    "Restart",
    "SqliteStore",
    "StoreError",
    "SubmissionError",
    "SubprocessExecutor",
    "Subscriber",
    "SystemClock",
    "TargetImportError",
    "Task",
    "TaskAccepted",
    "TaskActor",
    "TaskCancelled",
    "TaskContext",
    "TaskExecutor",
    "TaskFailedError",
    "TaskFinished",
    "TaskHandle",
    "TaskHook",
    "TaskOwner",
    "TaskPhase",
    "TaskRecord",
    "TaskRef",
    "TaskRejected",
    "TaskRun",
    "TaskSink",
    "TaskSnapshot",
    "TaskSpec",
    "TaskStarted",
    "TaskState",
    "TaskStatus",
    "TaskStore",
    "TaskvisorError",
    "Timer",
    "UnknownTask",
    "Unsupported",
    "Verdict",
    "WaitTimeout",
    "default_executors",
    "from_data",
    "now_ms",
    "resolve_target",
    "resume_record",
    "to_data",
]

from ._publish import publish

# The library logs (restarts at WARNING, with the error); it prints nothing
# unless the application configures logging.
_logging.getLogger("taskvisor").addHandler(_logging.NullHandler())

publish(__name__, {name: globals()[name] for name in __all__})
