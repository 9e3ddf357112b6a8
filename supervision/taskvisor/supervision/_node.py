"""One supervisor node as a state machine: inputs in, commands out, no I/O.

A ``Node`` holds everything one supervisor knows (its children, the
restart policy's state, what it is waiting for) and changes only in
``step(input, now)``, which returns the commands to carry out. It starts
no thread, reads no clock and never waits: time is the ``now`` argument,
a wait is a state, and every effect is a command. The actor shell
(``_supervisor.py``) turns messages into inputs and commands into
messages; the simulator (``_simulate.py``) drives the same class on a
fake clock. There is one copy of the rules.

The node is a mutable object, like h11's ``Connection``: a supervisor
with 10,000 children changes one child per step, and copying them all
each time would cost more than the step.

States of the node::

      Boot                  plan done                    child ended, policy
    ───────► STARTING ─────────────────► RUNNING ──────► gives up / shuts down
    (IDLE,    start children            ▲    │  ▲              │
     EXITED,  in order, one             │    │  │ terminate    ▼
     STOPPED) at a time                 │    │  │ plan    EXITING: terminate every
                │ a child fails         │    │  └─ busy   child, reverse order
                │ to start              │    │                 │ done
                ▼                       │    │ StopNode        ▼
            EXITING ──► EXITED ─────────┘    ▼             EXITED (children held;
                        (Boot: restart  STOPPING ──► STOPPED  report to the parent,
                         afresh)        (reverse order)        which restarts it
                                                               (Boot) or not (Settle))

While a *plan* runs (terminate some children one by one, then start some
one by one, as OTP's supervisor does synchronously), the node is busy:
other children's ends, timers and API calls wait in ``deferred`` and are
handled, in order, when the plan is done. A stop request does not wait:
it replaces the plan.

Children: ``pending`` (defined, not running), ``starting`` (start sent,
not confirmed), ``running``, ``terminating`` (terminate sent, not
confirmed), ``restarting`` (waiting out a restart delay; its attempt count
is unchanged) and ``ended`` (will not be restarted by the policy).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from taskvisor.actors import Event, InvalidData, Restart, TaskPhase, TaskSpec

from ._errors import Failure
from ._policy import (
    AutoShutdown,
    ChildExit,
    ChildInfo,
    Decision,
    GiveUp,
    Ignore,
    Policy,
    RestartChildren,
    Shutdown,
    SupervisorState,
    decide,
    removed,
    started,
    stopped,
)
from ._spec import ChildSpec, DynamicSupervisorSpec, SupervisorSpec, _check_child

__all__ = [
    "Boot",
    "Call",
    "ChildEnded",
    "ChildStarted",
    "ChildTerminated",
    "Command",
    "Decided",
    "ForgetChild",
    "Input",
    "Node",
    "PersistHistory",
    "Publish",
    "Reply",
    "ReportEnded",
    "ReportStarted",
    "ReportStopped",
    "RestartHistory",
    "Settle",
    "SettleChild",
    "StartChild",
    "StartTimer",
    "StopNode",
    "TerminateChild",
    "TimerFired",
]

AnySupervisorSpec: TypeAlias = SupervisorSpec | DynamicSupervisorSpec

# Node states.
IDLE, STARTING, RUNNING, EXITING, EXITED, STOPPING, STOPPED = (
    "idle",
    "starting",
    "running",
    "exiting",
    "exited",
    "stopping",
    "stopped",
)
# Child states.
PENDING, CHILD_STARTING, CHILD_RUNNING, TERMINATING, RESTARTING, ENDED = (
    "pending",
    "starting",
    "running",
    "terminating",
    "restarting",
    "ended",
)
_ACTIVE = frozenset({CHILD_STARTING, CHILD_RUNNING, TERMINATING})


# ----------------------------------------------------------------------------- events


@attrs.frozen
class RestartScheduled(Event):
    """A supervisor will restart ``restart`` (start order) after ``delay`` seconds."""

    supervisor: str
    child: str
    restart: tuple[str, ...]
    delay: float


@attrs.frozen
class SupervisorGaveUp(Event):
    """A supervisor's restart budget ran out when ``child`` ended; it is exiting."""

    supervisor: str
    child: str
    reason: str


@attrs.frozen
class Escalated(Event):
    """A supervisor that gave up reported it to its parent ``parent``."""

    supervisor: str
    parent: str


@attrs.frozen
class SupervisorStopped(Event):
    """A supervisor ended: ``reason`` is ``shutdown`` (auto), ``gave_up``,
    ``start_failed`` or ``stopped``."""

    supervisor: str
    reason: str


# ----------------------------------------------------------------------------- inputs


@attrs.frozen
class Boot:
    """Start the node afresh from its spec: every static child, in order, none added at run time.

    ``restored`` maps static children found ended in a store (a tree resumed
    after its process died) to their stored phase and attempt count: they
    are not started.
    """

    restored: Mapping[str, tuple[TaskPhase, int]] = attrs.Factory(dict)
    history: RestartHistory | None = None


@attrs.frozen
class RestartHistory:
    """What a supervisor's restart budget remembers, to persist and resume.

    ``restarts`` are the times (the node's clock) of the restarts inside the
    intensity window, oldest first; ``failures`` the consecutive restarts of
    each child, for its backoff.
    """

    restarts: tuple[float, ...] = ()
    failures: Mapping[str, int] = attrs.Factory(dict)

    @classmethod
    def of(cls, state: SupervisorState) -> RestartHistory:
        """The history in a policy state (this looks at every child: O(children))."""
        return cls(state.restarts, state.failures)


@attrs.frozen
class ChildStarted:
    """A child's attempt began (a child supervisor: all its children started)."""

    child: str
    attempt: int
    pid: int | None = None


@attrs.frozen
class ChildEnded:
    """A child's attempt ended by itself (or, with ``started=False``, could not start)."""

    child: str
    attempt: int
    phase: TaskPhase
    error: str | None = None
    started: bool = True
    chain: tuple[Failure, ...] = ()


@attrs.frozen
class ChildTerminated:
    """The terminate numbered ``seq`` of ``child`` is done: the child does not run."""

    child: str
    seq: int


@attrs.frozen
class TimerFired:
    """The timer ``token`` fired (a stale token is ignored)."""

    token: int


@attrs.frozen
class Call:
    """An API call numbered ``id``: ``start_child``, ``terminate_child``,
    ``restart_child`` or ``delete_child`` with ``args``; answered by ``Reply``."""

    id: int
    name: str
    args: tuple[Any, ...] = ()


@attrs.frozen
class StopNode:
    """Terminate every child, in reverse start order, then ``ReportStopped``.

    ``final``: the children end for good (a tree's stop); otherwise they are
    held, and a later ``Boot`` starts them afresh (the parent restarts this
    node). ``brutal``: kill at once instead of within each child's grace.
    """

    final: bool = True
    brutal: bool = False


@attrs.frozen
class Settle:
    """The parent's answer after the node ended by itself: ``final`` ends the held children."""

    final: bool


Input: TypeAlias = (
    Boot | ChildStarted | ChildEnded | ChildTerminated | TimerFired | Call | StopNode | Settle
)


# ----------------------------------------------------------------------------- commands


@attrs.frozen
class StartChild:
    """Start a new attempt of ``child`` (``first``: its first ever; create it)."""

    child: str
    spec: ChildSpec
    first: bool


@attrs.frozen
class TerminateChild:
    """Stop ``child``'s attempt; answer with ``ChildTerminated(child, seq)``."""

    child: str
    seq: int
    brutal: bool
    final: bool


@attrs.frozen
class SettleChild:
    """Close the ended attempt of ``child``.

    ``phase`` overrides the run's phase (``EXHAUSTED``); ``then`` says what
    follows: ``restart`` (a new attempt at once), ``hold`` (wait for
    ``StartChild``) or ``final`` (the child ends for good). ``event``, when
    set, is published right after the run's end, so the end comes first.
    """

    child: str
    attempt: int
    phase: TaskPhase | None
    then: Literal["restart", "hold", "final"]
    event: Event | None = None


@attrs.frozen
class ForgetChild:
    """Drop ``child``: end it for good (if it still runs) and release its actor."""

    child: str


@attrs.frozen
class StartTimer:
    """Send ``TimerFired(token)`` after ``delay`` seconds."""

    token: int
    delay: float


@attrs.frozen
class PersistHistory:
    """Save the restart history (a resumed tree keeps its restart budget).

    ``state`` is the policy's state (immutable); ``RestartHistory.of(state)``
    makes what to save, on the shell's side, only when it keeps one.
    """

    state: SupervisorState


@attrs.frozen
class ReportStarted:
    """Tell the parent: this node's attempt began."""

    attempt: int


@attrs.frozen
class ReportEnded:
    """Tell the parent: this node's attempt ended by itself (``started=False``: it
    could not start)."""

    attempt: int
    phase: TaskPhase
    reason: str | None
    chain: tuple[Failure, ...]
    started: bool = True


@attrs.frozen
class ReportStopped:
    """Tell whoever sent ``StopNode``: every child has been terminated."""

    attempt: int


@attrs.frozen
class Reply:
    """Answer the API call ``call`` with ``value``, or fail it with ``error``."""

    call: int
    value: Any = None
    error: Exception | None = None


@attrs.frozen
class Publish:
    """Publish ``event`` on the tree's bus (the node reads no clock: the shell stamps
    ``event.at`` with the wall-clock time it publishes it at)."""

    event: Event


@attrs.frozen
class Decided:
    """The policy decided ``decision`` (for observers such as the simulator)."""

    decision: Decision
    exit: ChildExit


Command: TypeAlias = (
    StartChild
    | TerminateChild
    | SettleChild
    | ForgetChild
    | StartTimer
    | ReportStarted
    | ReportEnded
    | ReportStopped
    | Reply
    | Publish
    | Decided
    | PersistHistory
)


class NodeError(InvalidData):
    """An API call the node refuses (OTP's ``{error, Reason}``); ``reason`` names the case."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ----------------------------------------------------------------------------- state


@attrs.define(slots=True, eq=False)
class Child:
    """What a node knows of one child."""

    spec: ChildSpec
    info: ChildInfo
    dynamic: bool = False
    status: str = PENDING
    attempt: int = 0
    restarts: int = 0
    phase: TaskPhase = TaskPhase.PENDING
    error: str | None = None
    since: float = 0.0
    pid: int | None = None
    token: int = 0  # the timer of a delayed restart (0: none)
    seq: int = 0  # the latest terminate sent
    was_active: bool = False  # an attempt ran when the latest terminate was sent
    created: bool = False  # a StartChild(first=True) was sent
    #: The attempt that could not begin, in a group restart: the child stays
    #: active (its end is decided once the group has started) but shows as restarting.
    unbegun: int = 0

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def is_supervisor(self) -> bool:
        return not isinstance(self.spec, TaskSpec)


# A plan step: ("terminate", child id, brutal, final) or ("start", child id).
_Step: TypeAlias = tuple[Any, ...]


@attrs.define(slots=True, eq=False)
class _Plan:
    steps: deque[_Step]
    then: str  # what to do when the steps are done
    waiting: str | None = None  # the child whose confirmation the current step awaits
    call: int | None = None  # the API call answered when the plan is done
    failed: list[ChildEnded] = attrs.Factory(list)  # start failures to decide afterwards
    restart: tuple[str, ...] = ()  # with then == "delay": children to restart after the delay
    delay: float = 0.0
    token: int = 0


class Node:
    """One supervisor's state and rules. See the module docstring for its states.

    Args:
        spec: the supervisor's spec.
        path: its path in the tree (``"app/db"``), used in events and errors.
        seed: the seed for backoff jitter where ``Backoff.seed`` is None.
    """

    def __init__(self, spec: AnySupervisorSpec, path: str, *, seed: int = 0) -> None:
        self.spec = spec
        self.path = path
        self.policy = Policy.of(spec)
        self.seed = seed
        self.status = IDLE
        self.attempt = 0
        self.children: dict[str, Child] = {}
        self.policy_state = SupervisorState.initial((), 0.0, seed=seed)
        self.plan: _Plan | None = None
        self.deferred: deque[Input] = deque()
        #: child id -> (API call answered by its start, whether a failed start drops the child)
        self.calls: dict[str, tuple[int, bool]] = {}
        self.exit: tuple[TaskPhase, str | None, tuple[Failure, ...]] | None = None
        self.final = True  # the current stop ends children for good
        self.start_failed = False  # the node is exiting because a child could not start
        self.announce_stop = False  # a stop of a running node publishes SupervisorStopped
        self._tokens = 0
        self._timers: dict[int, tuple[str, ...]] = {}  # token -> children it restarts
        self._dynamic_ids = 0
        self._infos: tuple[ChildInfo, ...] | None = ()
        self._out: list[Command] = []
        self._now = 0.0

    # ------------------------------------------------------------------- public

    def fresh(self) -> Node:
        """A node to replace this one after it broke (the supervisor crashed).

        It is idle, keeps the static children (held: a ``Boot`` restarts
        them) and counts attempts and timer tokens on, so that a timer of
        the broken node is never taken for one of its own.
        """
        new = Node(self.spec, self.path, seed=self.seed)
        new.attempt = self.attempt
        new._tokens = self._tokens
        for cid, child in self.children.items():
            if not child.dynamic:
                child.status, child.token = PENDING, 0
                new.children[cid] = child
        return new

    @property
    def running(self) -> bool:
        """Whether the node supervises (started and not ended or stopped)."""
        return self.status == RUNNING

    @property
    def busy(self) -> bool:
        """Whether a plan (children terminated or started one by one) is under way."""
        return self.plan is not None

    def step(self, event: Input, now: float) -> list[Command]:
        """Take one input at time ``now`` (monotonic seconds); return the commands to carry out.

        Never raises for an input that arrives late or twice (a stale timer,
        the end of an attempt already handled): such inputs change nothing.
        """
        self._now = now
        out = self._out = []
        self._handle(event)
        while self.deferred and self.plan is None and self.status == RUNNING:
            self._handle(self.deferred.popleft())
        self._out = []
        return out

    def infos(self) -> tuple[ChildInfo, ...]:
        """The children's ``ChildInfo``, in start order."""
        if self._infos is None:
            self._infos = tuple(c.info for c in self.children.values())
        return self._infos

    # ------------------------------------------------------------------- dispatch

    def _handle(self, event: Input) -> None:
        handler = _INPUTS.get(type(event))
        if handler is None:
            raise TypeError(f"not an input of a supervisor node: {event!r}")
        handler(self, event)

    def _emit(self, command: Command) -> None:
        self._out.append(command)

    # ------------------------------------------------------------------- boot

    def _on_boot(self, event: Boot) -> None:
        if self.status not in (IDLE, EXITED, STOPPED):
            return
        now = self._now
        old = self.children
        static = self.spec.children if isinstance(self.spec, SupervisorSpec) else ()
        fresh: dict[str, Child] = {}
        for spec in static:
            previous = old.get(spec.name)
            child = Child(spec, ChildInfo.of(spec))
            if previous is not None and not previous.dynamic:
                child.created = previous.created
                child.attempt = previous.attempt
                child.restarts = previous.restarts
                child.phase, child.error = previous.phase, previous.error
            fresh[spec.name] = child
        for cid, child in old.items():
            if cid not in fresh and child.created:
                self._emit(ForgetChild(cid))
        self.children = fresh
        self._infos = None
        self.attempt += 1
        self.exit = None
        self._dynamic_ids = 0  # a fresh start numbers its children from 1 again
        self.calls.clear()
        self._drop_deferred()
        state = SupervisorState.initial(self.infos(), now, seed=self.seed)
        steps: deque[_Step] = deque()
        for cid, child in fresh.items():
            found = event.restored.get(cid)
            if found is not None:
                state = stopped(state, cid)
                child.status, child.since = ENDED, now
                child.phase, child.attempt = found
            else:
                steps.append(("start", cid))
        if event.history is not None:
            state = _seeded(state, event.history)
        self.policy_state = state
        self.status = STARTING
        self._run(_Plan(steps, "booted"))

    # ------------------------------------------------------------------- plans

    def _run(self, plan: _Plan) -> None:
        """Carry ``plan`` on until a step must wait for a child, or it is done."""
        self.plan = plan
        steps = plan.steps
        while steps:
            step = steps.popleft()
            if step[0] == "forget":
                self._forget_id(step[1])
                continue
            child = self.children.get(step[1])
            if child is None:
                continue
            if step[0] == "finalize":
                self._terminate(child, brutal=step[2], final=True)
                plan.waiting = child.id
                return
            if step[0] == "terminate":
                if child.status in _ACTIVE:
                    self._terminate(child, brutal=step[2], final=step[3])
                    plan.waiting = child.id
                    return
                if child.status == RESTARTING:
                    child.token = 0
                    child.status = PENDING
            elif child.status in (PENDING, ENDED, RESTARTING):
                self._start(child)
                plan.waiting = child.id
                return
        plan.waiting = None
        self.plan = None
        self._plan_done(plan)

    def _shut_down_if_restored_ended(self) -> None:
        """Apply ``auto_shutdown`` at once to significant children that ended in a previous life.

        A tree resumed from a store does not run a significant child that had
        ended for good (``Boot.restored``); it shuts down as it would have
        when that child ended, instead of running on with nothing to wait for.
        """
        auto = self.policy.auto_shutdown
        if auto is AutoShutdown.NEVER:
            return
        significant = [c for c in self.children.values() if c.info.significant]
        ended = [c for c in significant if c.status == ENDED]
        if not ended or (auto is AutoShutdown.ALL_SIGNIFICANT and len(ended) < len(significant)):
            return
        child = ended[-1]
        active = tuple(c.id for c in reversed(self.children.values()) if c.status in _ACTIVE)
        self.policy_state = self.policy_state._replace(shut_down=True)
        self._emit(Decided(Shutdown(child.id, active), ChildExit(child.id, child.phase)))
        self.exit = (TaskPhase.SUCCEEDED, "auto_shutdown", ())
        self._exit_plan()

    def _advance(self, child: Child) -> None:
        """``child`` confirmed the step the plan waited for."""
        plan = self.plan
        if plan is not None and plan.waiting == child.id:
            plan.waiting = None
            self._run(plan)

    def _plan_done(self, plan: _Plan) -> None:
        then = plan.then
        if then == "booted":
            self.status = RUNNING
            self._emit(ReportStarted(self.attempt))
            self._shut_down_if_restored_ended()
        elif then == "exit":
            self._exited()
        elif then == "stopped":
            self._stopped()
        elif then == "settled":
            self.status = STOPPED
            for held in list(self.children.values()):
                if held.dynamic:
                    self._forget(held)
        elif then == "delay":
            for cid in plan.restart:
                due = self.children.get(cid)
                if due is not None and due.status not in _ACTIVE:
                    due.status, due.token = RESTARTING, plan.token
            self._timers[plan.token] = plan.restart
            self._emit(StartTimer(plan.token, plan.delay))
        elif then == "terminated" and plan.call is not None:
            self._emit(Reply(plan.call))
        # "restarted": nothing more to do
        self.deferred.extendleft(reversed(plan.failed))

    def _answer_start(self, child: Child) -> None:
        """A child added or restarted by the API is stopped before its start was
        confirmed: the call is answered (the child was begun; the stop came after)."""
        waiting = self.calls.pop(child.id, None)
        if waiting is not None:
            self._emit(Reply(waiting[0], child.id))

    def _terminate(self, child: Child, *, brutal: bool, final: bool) -> None:
        """Stop ``child`` (an ended one too, with ``final``: its actor ends for good)."""
        self._answer_start(child)
        child.seq += 1
        if child.status != TERMINATING:  # a second terminate keeps what the first found
            child.was_active = child.status in _ACTIVE
        child.status = TERMINATING
        child.token = 0
        self._emit(TerminateChild(child.id, child.seq, brutal, final))

    def _start(self, child: Child) -> None:
        child.token = 0
        child.status = CHILD_STARTING
        child.since = self._now
        child.attempt += 1  # confirmed (or corrected) by ChildStarted
        first = not child.created
        child.created = True
        self._emit(StartChild(child.id, child.spec, first))

    # ------------------------------------------------------------------- children

    def _on_started(self, event: ChildStarted) -> None:
        child = self.children.get(event.child)
        if child is None:
            return
        if child.status != CHILD_STARTING:
            return
        child.status = CHILD_RUNNING
        child.attempt = event.attempt
        child.phase = TaskPhase.RUNNING
        child.pid = event.pid
        waiting = self.calls.pop(child.id, None)
        if waiting is not None:
            self._emit(Reply(waiting[0], child.id))
        self._advance(child)

    def _on_terminated(self, event: ChildTerminated) -> None:
        child = self.children.get(event.child)
        if child is None or child.status != TERMINATING or event.seq != child.seq:
            return
        if child.was_active:  # its attempt was stopped
            child.status, child.phase = PENDING, TaskPhase.CANCELLED
        else:  # it had ended: ending it for good changes nothing about its last attempt
            child.status = ENDED
        child.since = self._now
        child.pid = None
        self._advance(child)

    def _on_ended(self, event: ChildEnded) -> None:
        child = self.children.get(event.child)
        if child is None or child.status not in (CHILD_STARTING, CHILD_RUNNING):
            return  # gone, or being terminated (a terminate answers for it)
        if event.attempt < child.attempt:
            return  # an attempt already handled
        plan = self.plan
        if not event.started and child.status == CHILD_STARTING:
            self._start_failed(child, event)
            return
        if plan is not None or self.status == STARTING:
            self.deferred.append(event)
            return
        if self.status != RUNNING:
            self._settle(child, event, None, "hold")
            return
        self._decide(child, event)

    def _start_failed(self, child: Child, event: ChildEnded) -> None:
        """``child`` could not start its attempt ``event.attempt``."""
        waiting = self.calls.pop(child.id, None)
        plan = self.plan
        if self.status == STARTING and plan is not None and plan.then == "booted":
            # OTP: a supervisor whose child cannot start does not start.
            self._settle(child, event, None, "hold")
            child.status, child.phase, child.error = ENDED, event.phase, event.error
            reason = f"child {child.id!r} could not start: {event.error}"
            failure = Failure(self.path, child.id, event.phase, event.error)
            self.exit = (TaskPhase.FAILED, reason, (*event.chain, failure))
            self._exit_plan(start_failed=True)
            return
        if waiting is not None:
            # A child added or restarted by the API: the caller hears why. OTP
            # discards the spec of a child that start_child could not start.
            call, discard = waiting
            self._settle(child, event, None, "final")
            child.status, child.phase, child.error = ENDED, event.phase, event.error
            error = NodeError("start_failed", f"{self.path}/{child.id}: {event.error}")
            self._emit(Reply(call, None, error))
            if discard or child.dynamic or child.info.restart is Restart.TEMPORARY:
                self._forget(child)
            self._advance(child)
            return
        if plan is not None and plan.waiting == child.id:
            # Part of a group restart: the rest starts; the policy decides about this one after.
            child.status, child.unbegun = CHILD_RUNNING, event.attempt
            child.error = event.error
            plan.failed.append(event)
            self._advance(child)
            return
        if self.status != RUNNING:
            self._settle(child, event, None, "hold")
            child.status = PENDING
            return
        if plan is not None:  # a plan waits for another child: decide after it, in order
            self.deferred.append(event)
            return
        child.status = CHILD_RUNNING
        self._decide(child, event)

    # ------------------------------------------------------------------- decisions

    def _decide(self, child: Child, event: ChildEnded) -> None:
        now = self._now
        cid = child.id
        exit_ = ChildExit(cid, event.phase, event.error)
        self.policy_state, decision = decide(
            self.policy, self.infos(), self.policy_state, exit_, now
        )
        self._emit(Decided(decision, exit_))
        if type(decision) is not Ignore:
            self._emit(PersistHistory(self.policy_state))
        child.attempt = event.attempt
        child.phase, child.error, child.since, child.pid = event.phase, event.error, now, None
        kind = type(decision)
        if kind is RestartChildren:
            self._restart(child, event, decision)  # type: ignore[arg-type]
        elif kind is Ignore:
            child.status = ENDED
            self._settle(child, event, None, "final")
            if decision.remove or self.policy.dynamic:  # type: ignore[union-attr]
                self._forget(child)
        elif kind is GiveUp:
            child.status = ENDED
            child.phase = TaskPhase.EXHAUSTED
            self._settle(child, event, TaskPhase.EXHAUSTED, "hold")
            failure = Failure(self.path, cid, event.phase, event.error)
            reason = decision.reason  # type: ignore[union-attr]
            self.exit = (TaskPhase.EXHAUSTED, reason, (*event.chain, failure))
            self._emit(Publish(SupervisorGaveUp(self.path, cid, reason)))
            self._exit_plan()
        else:
            assert isinstance(decision, Shutdown)
            child.status = ENDED
            self._settle(child, event, None, "hold")
            self.exit = (TaskPhase.SUCCEEDED, "auto_shutdown", ())
            self._exit_plan()

    def _restart(self, child: Child, event: ChildEnded, decision: RestartChildren) -> None:
        delay = decision.delay
        notice = RestartScheduled(self.path, child.id, decision.restart, delay)
        for cid in decision.restart:
            restarted = self.children.get(cid)
            if restarted is not None:
                restarted.restarts += 1
        alone = decision.restart == (child.id,) and not decision.terminate and not decision.drop
        if alone and delay <= 0:
            # The child closes its run and begins the next attempt at once. It
            # is starting until known to have begun (a ChildStarted: a
            # subprocess's pid, or what which_children learned from the task),
            # or until it reports that it could not begin (ChildEnded, started=False).
            child.status, child.since = CHILD_STARTING, self._now
            child.attempt += 1
            self._settle(child, event, None, "restart", notice)
            return
        self._settle(child, event, None, "hold", notice)
        child.status = PENDING
        # Terminate the others (reverse start order), forget dropped temporaries,
        # then start in start order, now or when the delay is over.
        steps: deque[_Step] = deque(("terminate", cid, False, False) for cid in decision.terminate)
        steps.extend(("forget", cid) for cid in decision.drop)
        if delay > 0:
            self._tokens += 1
            plan = _Plan(steps, "delay", restart=decision.restart, delay=delay, token=self._tokens)
        else:
            steps.extend(("start", cid) for cid in decision.restart)
            plan = _Plan(steps, "restarted")
        self._run(plan)

    def _settle(
        self,
        child: Child,
        event: ChildEnded,
        phase: TaskPhase | None,
        then: Literal["restart", "hold", "final"],
        notice: Event | None = None,
    ) -> None:
        self._emit(SettleChild(child.id, event.attempt, phase, then, notice))

    def _exit_plan(self, *, start_failed: bool = False) -> None:
        """Terminate every active child in reverse start order, held; then report the end."""
        self.status = EXITING
        self._refuse_waiting()
        self._cancel_restarts()
        steps: deque[_Step] = deque(
            ("terminate", c.id, False, False)
            for c in reversed(self.children.values())
            if c.status in _ACTIVE
        )
        self.start_failed = start_failed
        self._run(_Plan(steps, "exit"))

    def _exited(self) -> None:
        assert self.exit is not None
        phase, reason, chain = self.exit
        self.status = EXITED
        started = not self.start_failed
        why = {TaskPhase.EXHAUSTED: "gave_up", TaskPhase.SUCCEEDED: "shutdown"}.get(
            phase, "start_failed"
        )
        self._emit(Publish(SupervisorStopped(self.path, why)))
        if "/" in self.path and phase is TaskPhase.EXHAUSTED:
            self._emit(Publish(Escalated(self.path, self.path.rpartition("/")[0])))
        self._emit(ReportEnded(self.attempt, phase, reason, chain, started))

    def _cancel_restarts(self) -> None:
        self._timers.clear()
        for child in self.children.values():
            if child.status == RESTARTING:
                child.status, child.token = PENDING, 0

    # ------------------------------------------------------------------- timers

    def _on_timer(self, event: TimerFired) -> None:
        if self.status != RUNNING:
            return
        if self.plan is not None:
            self.deferred.append(event)
            return
        token = event.token
        waiting = self._timers.pop(token, ())
        due = []
        for cid in waiting:  # in start order
            child = self.children.get(cid)
            if child is not None and child.token == token and child.status == RESTARTING:
                due.append(cid)
        if not due:
            return
        if len(due) == 1:
            child = self.children[due[0]]
            self._start(child)
            return
        self._run(_Plan(deque(("start", cid) for cid in due), "restarted"))

    # ------------------------------------------------------------------- stop

    def _on_stop(self, event: StopNode) -> None:
        self.final = event.final
        if self.status in (IDLE, STOPPED) and self.plan is None:
            self._emit(ReportStopped(self.attempt))
            return
        self._refuse_waiting()
        self._cancel_restarts()
        if self.status in (STARTING, RUNNING):
            self.announce_stop = True
        self.status = STOPPING
        self._run(_Plan(self._stop_steps(event.final, event.brutal), "stopped"))

    def _stop_steps(self, final: bool, brutal: bool) -> deque[_Step]:
        """Terminate the children in reverse start order: the active ones, or with
        ``final`` every child ever started (ended ones answer at once), for good."""
        children = reversed(self.children.values())
        if final:
            return deque(("finalize", c.id, brutal) for c in children if c.created)
        return deque(("terminate", c.id, brutal, False) for c in children if c.status in _ACTIVE)

    def _stopped(self) -> None:
        if self.final:
            self.status = STOPPED
            for child in list(self.children.values()):
                if child.dynamic:
                    self._forget(child)
            if self.announce_stop:
                self._emit(Publish(SupervisorStopped(self.path, "stopped")))
        else:
            self.status = EXITED
        self.announce_stop = False
        self._emit(ReportStopped(self.attempt))

    def _on_settle(self, event: Settle) -> None:
        if self.status != EXITED or not event.final:
            return
        # The parent will not restart this node: end its held children for good.
        self.status = STOPPING
        self._run(_Plan(self._stop_steps(True, False), "settled"))

    # ------------------------------------------------------------------- API

    def _on_call(self, call: Call) -> None:
        if self.status == STARTING or (self.status == RUNNING and self.plan is not None):
            self.deferred.append(call)  # answered once the start or the plan is done
            return
        if self.status != RUNNING:
            self._refuse(call)
            return
        try:
            method = _CALLS[call.name]
        except KeyError:
            self._emit(Reply(call.id, None, NodeError("unknown", f"no such call {call.name!r}")))
            return
        try:
            method(self, call)
        except NodeError as exc:
            self._emit(Reply(call.id, None, exc))
        except InvalidData as exc:
            self._emit(Reply(call.id, None, exc))

    def _refuse_waiting(self) -> None:
        """Answer every API call still waiting (the node is stopping or exiting)."""
        for call, _ in self.calls.values():
            self._emit(Reply(call, None, NodeError("stopped", f"{self.path} is stopping")))
        self.calls.clear()
        self._drop_deferred()
        plan = self.plan
        if plan is not None and plan.call is not None:
            self._emit(Reply(plan.call, None, NodeError("stopped", f"{self.path} is stopping")))
            plan.call = None

    def _drop_deferred(self) -> None:
        """Forget the inputs waiting for a plan; the API calls among them are refused."""
        for waiting in self.deferred:
            if type(waiting) is Call:
                self._refuse(waiting)
        self.deferred.clear()

    def _refuse(self, call: Call) -> None:
        self._emit(Reply(call.id, None, NodeError("stopped", f"{self.path} is not running")))

    def _get(self, cid: Any) -> Child:
        child = self.children.get(cid) if isinstance(cid, str) else None
        if child is None:
            raise NodeError("not_found", f"{self.path}: no child {cid!r}")
        return child

    def _call_start_child(self, call: Call) -> None:
        spec, args, kwargs, child_id = call.args
        own = self.spec
        number = 0  # the N of a name-N made here
        if isinstance(own, DynamicSupervisorSpec):
            if spec is not None:
                raise NodeError(
                    "bad_spec",
                    f"{self.path}: a dynamic supervisor makes its children from its template; "
                    "pass args/kwargs (and id) instead of a child spec",
                )
            if child_id is None:
                child_id, number = self._next_dynamic_id(own.template.name)
            spec = _from_template(own.template, child_id, args, kwargs)
        elif not isinstance(spec, (TaskSpec, SupervisorSpec, DynamicSupervisorSpec)):
            raise NodeError(
                "bad_spec",
                f"{self.path}: start_child needs a child spec (a TaskSpec, SupervisorSpec "
                f"or DynamicSupervisorSpec), got {type(spec).__name__}",
            )
        _check_child("spec", spec, self.policy.auto_shutdown)
        existing = self.children.get(spec.name)
        if existing is not None:
            reason = "running" if existing.status in _ACTIVE else "already_present"
            raise NodeError(reason, f"{self.path}: child {spec.name!r} is {reason}")
        limit = own.max_children if isinstance(own, DynamicSupervisorSpec) else None
        if limit is not None and len(self.children) >= limit:
            raise NodeError("max_children", f"{self.path}: max_children ({limit}) reached")
        dynamic = isinstance(own, DynamicSupervisorSpec)
        if number:
            self._dynamic_ids = number  # the number is taken only by a child that is added
        child = Child(spec, ChildInfo.of(spec), dynamic=dynamic)
        self.children[child.id] = child
        self._infos = None
        self.policy_state = started(self.policy_state, child.id, self._now)
        self.calls[child.id] = (call.id, True)
        self._start(child)

    def _next_dynamic_id(self, name: str) -> tuple[str, int]:
        """The next free ``name-N`` and its N (taken only when the child is added)."""
        number = self._dynamic_ids + 1
        while f"{name}-{number}" in self.children:
            number += 1
        return f"{name}-{number}", number

    def _call_terminate_child(self, call: Call) -> None:
        (cid,) = call.args
        child = self._get(cid)
        self.policy_state = stopped(self.policy_state, child.id)
        forget = child.info.restart is Restart.TEMPORARY or child.dynamic
        if child.status in _ACTIVE:
            steps: deque[_Step] = deque([("terminate", child.id, False, True)])
            if forget:
                steps.append(("forget", child.id))
            self._run(_Plan(steps, "terminated", call=call.id))
            return
        child.status, child.token = ENDED, 0
        if forget:
            self._forget(child)
        self._emit(Reply(call.id))

    def _get_idle(self, cid: Any) -> Child:
        """The child ``cid``, which must neither run nor wait out a restart delay."""
        child = self._get(cid)
        if child.status in _ACTIVE:
            raise NodeError("running", f"{self.path}: child {cid!r} is running")
        if child.status == RESTARTING:
            raise NodeError("restarting", f"{self.path}: child {cid!r} is restarting")
        return child

    def _call_restart_child(self, call: Call) -> None:
        (cid,) = call.args
        child = self._get_idle(cid)
        self.policy_state = started(self.policy_state, child.id, self._now)
        self.calls[child.id] = (call.id, False)
        self._start(child)

    def _call_delete_child(self, call: Call) -> None:
        (cid,) = call.args
        child = self._get_idle(cid)
        self._forget(child)
        self._emit(Reply(call.id))

    def _forget(self, child: Child) -> None:
        self._forget_id(child.id)

    def _forget_id(self, cid: str) -> None:
        child = self.children.pop(cid, None)
        if child is None:
            return
        self._infos = None
        self.policy_state = removed(self.policy_state, cid)
        self._answer_start(child)
        if child.created:
            self._emit(ForgetChild(cid))
        if self.deferred:
            # What the forgotten child told and the node has not read yet is
            # about it alone: a child added later under the same id (attempts
            # counted from 1 again) must not take that as its own.
            self.deferred = deque(e for e in self.deferred if not _is_news_of(e, cid))


def _is_news_of(event: Input, cid: str) -> bool:
    """Whether ``event`` is something child ``cid`` told about itself."""
    return isinstance(event, (ChildStarted, ChildEnded, ChildTerminated)) and event.child == cid


#: What the node does with each kind of input.
_INPUTS: dict[type, Callable[[Node, Any], None]] = {
    ChildEnded: Node._on_ended,
    ChildStarted: Node._on_started,
    ChildTerminated: Node._on_terminated,
    TimerFired: Node._on_timer,
    Call: Node._on_call,
    StopNode: Node._on_stop,
    Boot: Node._on_boot,
    Settle: Node._on_settle,
}

_CALLS = {
    "start_child": Node._call_start_child,
    "terminate_child": Node._call_terminate_child,
    "restart_child": Node._call_restart_child,
    "delete_child": Node._call_delete_child,
}


def _seeded(state: SupervisorState, history: RestartHistory) -> SupervisorState:
    """``state`` carrying on a persisted restart history (a resumed tree's budget)."""
    records = dict(state.history.items())
    for cid, failures in history.failures.items():
        record = records.get(cid)
        if record is not None:
            records[cid] = record._replace(failures=failures)
    changes = {cid: records[cid] for cid in history.failures if cid in records}
    return state._replace(restarts=tuple(history.restarts), history=state.history.update(changes))


def _from_template(
    template: ChildSpec, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> ChildSpec:
    if isinstance(template, TaskSpec):
        return template.evolve(
            name=name, args=(*template.args, *args), kwargs={**template.kwargs, **kwargs}
        )
    return attrs.evolve(template, name=name)
