"""taskvisor.supervision: supervisors, restart policies and the policy simulator.

The pure core (``decide`` and its values) says what a supervisor does when a
child ends; specs describe trees in code or tree files (TOML, JSON, YAML:
``load_tree_file``, ``check_tree_file``, ``write_tree_file``); ``simulate`` runs
a spec against a scripted list of failures with a fake clock.
"""

from taskvisor.actors import Restart as Restart

from ._errors import ChildStartError, Failure, SupervisorExhausted
from ._files import (
    FileFormat,
    TreeFileError,
    TreeFileProblem,
    check_tree_file,
    dump_tree,
    load_tree_file,
    write_tree_file,
)
from ._policy import (
    MAX_COUNT,
    MAX_MULTIPLIER,
    AutoShutdown,
    Backoff,
    ChildExit,
    ChildHistory,
    ChildInfo,
    Decision,
    GiveUp,
    Ignore,
    Intensity,
    PMap,
    Policy,
    RestartChildren,
    Shutdown,
    Strategy,
    SupervisorState,
    decide,
    removed,
    started,
    stopped,
)
from ._simulate import (
    ChildOutcome,
    DeleteChild,
    Exit,
    Fail,
    RestartChild,
    ScriptEvent,
    Simulation,
    Start,
    TerminateChild,
    Timeout,
    simulate,
)
from ._spec import (
    MAX_DATA_DEPTH,
    MAX_DEPTH,
    AutoShutdownName,
    ChildSpec,
    DynamicSupervisorSpec,
    StrategyName,
    SupervisorShutdown,
    SupervisorSpec,
    dynamic_supervisor_spec_from_data,
    spec_from_data,
    spec_to_data,
    supervisor_spec_from_data,
)
from ._supervisor import (
    ChildRow,
    Escalated,
    RestartScheduled,
    Supervisor,
    SupervisorError,
    SupervisorGaveUp,
    SupervisorHandle,
    SupervisorRef,
    SupervisorStopped,
)

# ``Restart`` is re-exported above for convenience; it is defined (and listed)
# in taskvisor.actors, so it stays out of this module's ``__all__``.
__all__ = [
    "MAX_COUNT",
    "MAX_DATA_DEPTH",
    "MAX_DEPTH",
    "MAX_MULTIPLIER",
    "AutoShutdown",
    "AutoShutdownName",
    "Backoff",
    "ChildExit",
    "ChildHistory",
    "ChildInfo",
    "ChildOutcome",
    "ChildRow",
    "ChildSpec",
    "ChildStartError",
    "Decision",
    "DeleteChild",
    "DynamicSupervisorSpec",
    "Escalated",
    "Exit",
    "Fail",
    "Failure",
    "FileFormat",
    "GiveUp",
    "Ignore",
    "Intensity",
    "PMap",
    "Policy",
    "RestartChild",
    "RestartChildren",
    "RestartScheduled",
    "ScriptEvent",
    "Shutdown",
    "Simulation",
    "Start",
    "Strategy",
    "StrategyName",
    "Supervisor",
    "SupervisorError",
    "SupervisorExhausted",
    "SupervisorGaveUp",
    "SupervisorHandle",
    "SupervisorRef",
    "SupervisorShutdown",
    "SupervisorSpec",
    "SupervisorState",
    "SupervisorStopped",
    "TerminateChild",
    "Timeout",
    "TreeFileError",
    "TreeFileProblem",
    "check_tree_file",
    "decide",
    "dump_tree",
    "dynamic_supervisor_spec_from_data",
    "load_tree_file",
    "removed",
    "simulate",
    "spec_from_data",
    "spec_to_data",
    "started",
    "stopped",
    "supervisor_spec_from_data",
    "write_tree_file",
]

from taskvisor.actors._publish import publish

publish(__name__, {name: globals()[name] for name in __all__})
