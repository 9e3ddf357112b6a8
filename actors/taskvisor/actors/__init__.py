"""taskvisor.actors: the task model, task actors, executors, events and record stores."""

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
    TaskFailedError,
    TaskvisorError,
    UnknownTask,
    Unsupported,
    WaitTimeout,
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

__all__ = [
    "KINDS",
    "IllegalTransition",
    "IncompatibleStore",
    "InvalidData",
    "InvalidSpec",
    "ObjectMeta",
    "RejectReason",
    "Restart",
    "StoreError",
    "SubmissionError",
    "TargetImportError",
    "Task",
    "TaskFailedError",
    "TaskPhase",
    "TaskRecord",
    "TaskRun",
    "TaskSpec",
    "TaskState",
    "TaskStatus",
    "TaskvisorError",
    "UnknownTask",
    "Unsupported",
    "WaitTimeout",
    "from_data",
    "now_ms",
    "to_data",
]

from ._publish import publish

publish(__name__, {name: globals()[name] for name in __all__})
