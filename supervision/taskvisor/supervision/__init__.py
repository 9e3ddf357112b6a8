"""taskvisor.supervision: supervisors, restart policies and the policy simulator.

The pure core (``decide`` and its values) says what a supervisor does when a
child ends; specs describe trees in code or config files; ``simulate`` runs
a spec against a scripted list of failures with a fake clock.
"""

from taskvisor.actors import Restart as Restart

from ._errors import ChildStartError, Failure, SupervisorExhausted
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
    ChildSpec,
    DynamicSupervisorSpec,
    SupervisorShutdown,
    SupervisorSpec,
    spec_from_data,
    spec_to_data,
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
    "decide",
    "removed",
    "simulate",
    "spec_from_data",
    "spec_to_data",
    "started",
    "stopped",
]

from taskvisor.actors._publish import publish

publish(__name__, {name: globals()[name] for name in __all__})
