"""Simulate a supervision tree against a scripted list of failures, with a fake clock.

``simulate(spec, script)`` starts every child at time 0 and plays the
script in time order through the same ``decide`` core the Supervisor actor
uses, with no threads and no sleeping: a restart with a delay happens at
``now + delay`` on the fake clock. Child supervisors are simulated
recursively; one that gives up ends ``EXHAUSTED`` for its parent, which
applies its own strategy, and so on up to the root.

Use it to see what a policy does before deploying it::

    from taskvisor.supervision import Fail, SupervisorSpec, simulate

    sim = simulate(spec, [Fail(1.0, "db/conn"), Fail(1.5, "db/conn")])
    print(sim.timeline())
    assert not sim.gave_up
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from heapq import heappop, heappush
from operator import attrgetter
from typing import Any, TypeAlias

import attrs

from taskvisor.actors import InvalidSpec, TaskPhase
from taskvisor.actors._errors import shown

from . import _node as n
from ._errors import Failure, SupervisorExhausted, invalid
from ._node import Boot, Input, Node, Reply
from ._policy import Decision, GiveUp, Ignore, RestartChildren, seconds
from ._spec import ChildSpec, DynamicSupervisorSpec, SupervisorSpec

__all__ = [
    "ChildOutcome",
    "DeleteChild",
    "Exit",
    "Fail",
    "RestartChild",
    "ScriptEvent",
    "Simulation",
    "Start",
    "TerminateChild",
    "Timeout",
    "simulate",
]


def _check_at(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    seconds(attribute.name, value)  # type: ignore[arg-type]  # it checks any value


def _check_path(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or "" in value.split("/"):
        raise invalid(attribute.name, "expected a child path like 'db' or 'db/conn'", value)


def _check_optional_id(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value or "/" in value):
        raise invalid(attribute.name, "expected a child id without '/', or None", value)


def _check_sup_path(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or (value and "" in value.split("/")):
        raise invalid(attribute.name, "expected a supervisor path ('' for the root)", value)


@attrs.frozen
class _ChildEvent:
    """Something that happens at time ``at`` to the child at path ``child``."""

    at: float = attrs.field(validator=_check_at)
    child: str = attrs.field(validator=_check_path)


@attrs.frozen
class Fail(_ChildEvent):
    """At time ``at``, the child at path ``child`` fails with ``error`` (a str).

    Raises:
        InvalidSpec: when ``error`` is not a str.
    """

    error: str = attrs.field(default="failed")

    @error.validator
    def _check_error(self, _attribute: attrs.Attribute[str], value: object) -> None:
        if not isinstance(value, str):
            raise InvalidSpec(f"error: expected a str, got {shown(value)}")


@attrs.frozen
class Exit(_ChildEvent):
    """At time ``at``, the child at path ``child`` ends normally (succeeds)."""


@attrs.frozen
class Timeout(_ChildEvent):
    """At time ``at``, the child at path ``child`` runs out of time."""


def _check_optional_spec(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    from taskvisor.actors import TaskSpec as _TaskSpec

    if value is not None and not isinstance(
        value, (_TaskSpec, SupervisorSpec, DynamicSupervisorSpec)
    ):
        raise invalid(attribute.name, "expected a child spec or None", type(value).__name__)


@attrs.frozen
class Start:
    """At time ``at``, ``start_child`` on the supervisor at path ``supervisor`` (``""``: the root).

    A dynamic supervisor makes the child from its template, under ``id``
    (default ``"<template name>-<n>"``); a static one takes ``spec``.
    """

    at: float = attrs.field(validator=_check_at)
    supervisor: str = attrs.field(default="", validator=_check_sup_path)
    id: str | None = attrs.field(default=None, validator=_check_optional_id)
    spec: ChildSpec | None = attrs.field(default=None, validator=_check_optional_spec, kw_only=True)


@attrs.frozen
class TerminateChild(_ChildEvent):
    """At time ``at``, ``terminate_child`` of the child at path ``child``."""


@attrs.frozen
class RestartChild(_ChildEvent):
    """At time ``at``, ``restart_child`` of the (terminated) child at path ``child``."""


@attrs.frozen
class DeleteChild(_ChildEvent):
    """At time ``at``, ``delete_child`` of the (terminated) child at path ``child``."""


ScriptEvent: TypeAlias = Fail | Exit | Timeout | Start | TerminateChild | RestartChild | DeleteChild

_API: dict[type, str] = {
    TerminateChild: "terminate_child",
    RestartChild: "restart_child",
    DeleteChild: "delete_child",
}
_KINDS = frozenset({Fail, Exit, Timeout, Start, *_API})
_EXITS = frozenset({Fail, Exit, Timeout})
_at, _child = attrgetter("at"), attrgetter("child")
_RUNNING = TaskPhase.RUNNING
_PHASE_OF: dict[type, TaskPhase] = {
    Fail: TaskPhase.FAILED,
    Exit: TaskPhase.SUCCEEDED,
    Timeout: TaskPhase.TIMEOUT,
}


@attrs.frozen
class ChildOutcome:
    """Where a child stands at the end of a simulation.

    Attributes:
        phase: its latest phase (``RUNNING`` while it runs).
        attempts: how many times it was started (restarts of its subtree
            included); a child that was forgotten (a temporary or dynamic
            one that ended, a deleted one) and is added again counts anew.
        running: whether it runs at the end.
    """

    phase: TaskPhase
    attempts: int
    running: bool


@attrs.frozen(eq=False)
class Simulation:
    """What happened when a spec was played against a script.

    Attributes:
        spec: the simulated tree.
        script: the script, sorted by time.
        decisions: ``(at, supervisor path, decision)`` for every decision, in order.
        children: the final ``ChildOutcome`` of every child that was ever
            started, keyed by its path from the root (``"db/conn"``), in
            order of first start.
        gave_up: the root supervisor gave up.
        shut_down: the root supervisor shut itself down (``auto_shutdown``).
        chain: when the root gave up, the failures that climbed the tree,
            first cause first.
        reason: when the root gave up, why.
        skipped: script events that found their child not running, with why.
        end: the time of the last thing that happened.
    """

    spec: SupervisorSpec | DynamicSupervisorSpec
    script: tuple[ScriptEvent, ...]
    decisions: tuple[tuple[float, str, Decision], ...]
    children: dict[str, ChildOutcome]
    gave_up: bool
    shut_down: bool
    chain: tuple[Failure, ...]
    reason: str | None
    skipped: tuple[tuple[ScriptEvent, str], ...]
    end: float
    # What happened, in order, compactly: a float sets the clock for what
    # follows; a str is the start of the child at that path; a script event
    # (at its time); (at, supervisor path, decision) as in ``decisions``; or
    # (at, "skip", event, reason).
    _log: tuple[Any, ...] = attrs.field(repr=False)

    @property
    def error(self) -> SupervisorExhausted | None:
        """The error a real tree would raise: ``SupervisorExhausted`` if the root gave up."""
        return SupervisorExhausted(self.chain, self.reason) if self.gave_up else None

    @property
    def restarts(self) -> tuple[tuple[float, str, RestartChildren], ...]:
        """The restart decisions: ``(at, supervisor path, decision)``."""
        return tuple(
            (at, sup, d) for at, sup, d in self.decisions if isinstance(d, RestartChildren)
        )

    def timeline(self) -> str:
        """Return a readable account of the simulation, one line per thing that happened."""
        lines = []
        at: float = 0.0
        attempts: dict[str, int] = {}
        for entry in self._log:
            kind = type(entry)
            if kind is str:
                count = attempts[entry] = attempts.get(entry, 0) + 1
                lines.append(f"{at:10.3f}  {_describe('start', (entry, count))}")
            elif kind is tuple:
                at = entry[0]
                if len(entry) == 3:  # (at, supervisor path, decision)
                    lines.append(f"{at:10.3f}  {_describe('decision', entry[1:])}")
                else:  # (at, "skip", event, reason)
                    lines.append(f"{at:10.3f}  {_describe('skip', entry[2:])}")
            elif kind in _KINDS:
                at = entry.at
                lines.append(f"{at:10.3f}  {_describe('event', (entry,))}")
            else:
                at = entry
        return "\n".join(lines)

    def __str__(self) -> str:
        if self.gave_up:
            outcome = f"root gave up at {self.end:g}s: {self.reason}"
        elif self.shut_down:
            outcome = f"root shut down at {self.end:g}s"
        else:
            outcome = f"still running (last change at {self.end:g}s)"
        head = (
            f"simulation of {self.spec.name!r}: {len(self.script)} script events, "
            f"{len(self.decisions)} decisions, {outcome}"
        )
        parts = [head, self.timeline()]
        if self.chain:
            parts.append("chain of failures, first cause first:")
            parts.extend(f"  {i}. {f}" for i, f in enumerate(self.chain, 1))
        parts.append("final state:")
        parts.extend(
            f"  {path}: {o.phase.value}, {o.attempts} start(s)" for path, o in self.children.items()
        )
        return "\n".join(parts)


def _names(ids: tuple[str, ...]) -> str:
    return ", ".join(ids) if ids else "nothing"


def _describe(kind: str, args: tuple[Any, ...]) -> str:
    if kind == "start":
        path, attempts = args
        return f"start    {path}" + (f" (start #{attempts})" if attempts > 1 else "")
    if kind == "event":
        (event,) = args
        if isinstance(event, Fail):
            return f"fail     {event.child}: {event.error}"
        if isinstance(event, Exit):
            return f"exit     {event.child} (normal end)"
        if isinstance(event, Timeout):
            return f"timeout  {event.child}"
        if isinstance(event, Start):
            return f"add      {event.supervisor or '(root)'}: new child"
        verb = _API[type(event)].partition("_")[0]
        return f"{verb:<8} {event.child}"
    if kind == "skip":
        event, reason = args
        name = _API.get(type(event), type(event).__name__.lower())  # as scripts spell it
        return f"skipped  {name} {getattr(event, 'child', '')}: {reason}"
    sup, decision = args
    if isinstance(decision, RestartChildren):
        text = f"{sup} restarts {_names(decision.restart)}"
        if decision.delay:
            text += f" after {decision.delay:.3f}s"
        if decision.terminate:
            text += f"; terminated {_names(decision.terminate)} first"
        if decision.drop:
            text += f"; dropped temporary {_names(decision.drop)}"
        return f"decide   {text}"
    if isinstance(decision, Ignore):
        how = "removed" if decision.remove else "not restarted"
        return f"decide   {sup}: {decision.child} {how}"
    if isinstance(decision, GiveUp):
        return f"GIVE UP  {sup}: {decision.reason}; terminated {_names(decision.terminate)}"
    return (
        f"shutdown {sup}: significant child {decision.child} ended; "
        f"terminated {_names(decision.terminate)}"
    )


def _refusal(error: Exception) -> str:
    """Why an API call of the script was refused, in a few words."""
    reason = getattr(error, "reason", None)
    text = str(error).partition(": ")[2] or str(error)
    if reason in ("already_present", "running") and "child " in text:
        return text.replace(f"is {reason}", "is already there")
    if reason == "stopped":
        return "not running"
    return text


class _Task:
    __slots__ = ("attempts", "phase", "running")

    def __init__(self) -> None:
        self.phase = TaskPhase.PENDING
        self.attempts = 0
        self.running = False


class _Engine:
    """Drives one ``Node`` per supervisor on a fake clock, as the live shell does by message.

    Inputs wait in one queue and are taken in order; a command that a live
    tree carries out by message becomes an input queued here (a task's start
    confirmation, a terminate's answer, a child supervisor's report), so
    the same node code decides in the same order as in a live tree.
    """

    def __init__(self, spec: SupervisorSpec | DynamicSupervisorSpec, seed: int) -> None:
        self.seed = seed
        self.nodes: dict[str, Node] = {}  # by path from the root ("" for the root)
        self.stop_seqs: dict[str, int] = {}
        self.tasks: dict[str, _Task] = {}  # tasks and supervisors, by path from the root
        self.decisions: list[tuple[float, str, Decision]] = []
        self.log: list[Any] = []  # see Simulation._log
        self.skipped: list[tuple[ScriptEvent, str]] = []
        self.queue: deque[tuple[str, Input]] = deque()
        self.heap: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.now = 0.0
        self.done = False
        self.gave_up = False
        self.shut_down = False
        self.chain: tuple[Failure, ...] = ()
        self.reason: str | None = None
        self.end = 0.0
        self.replies: dict[int, Reply] = {}
        self.calls = 0
        #: Paths of children forgotten since they last ran: started again, they are new
        #: children (new actors in a live tree) and count their attempts from 1.
        self.forgotten: set[str] = set()
        self.root = Node(spec, spec.name, seed=seed)
        self.nodes[""] = self.root
        self.send("", Boot())
        self.settle()

    # -- the queue

    def send(self, path: str, event: Input) -> None:
        self.queue.append((path, event))

    def settle(self) -> None:
        """Take queued inputs until none is left (everything instant happened)."""
        queue = self.queue
        while queue:
            path, event = queue.popleft()
            node = self.nodes.get(path)
            if node is None:
                continue
            self.carry_out(path, node, node.step(event, self.now))

    def carry_out(self, path: str, node: Node, commands: list[Any]) -> None:
        prefix = f"{path}/" if path else ""
        for command in commands:
            kind = type(command)
            if kind is n.StartChild:
                self.start(prefix + command.child, command.spec, path, command.child)
            elif kind is n.SettleChild:
                self.settle_child(prefix + command.child, command, path)
            elif kind is n.TerminateChild:
                self.terminate(prefix + command.child, command, path)
            elif kind is n.Decided:
                entry = (self.now, node.path, command.decision)
                self.decisions.append(entry)
                self.log.append(entry)
            elif kind is n.StartTimer:
                self.seq += 1
                heappush(self.heap, (self.now + command.delay, self.seq, path, command.token))
            elif kind is n.ForgetChild:
                child_path = prefix + command.child
                self.forget(child_path)
                if child_path in self.nodes:
                    self.stop_seqs[child_path] = -1
                    self.send(child_path, n.StopNode(final=True))
            elif kind is n.Reply:
                self.replies[command.call] = command
            elif kind in (n.ReportStarted, n.ReportEnded, n.ReportStopped):
                self.report(path, node, command)
            # Publish, PersistHistory: nothing to simulate

    def report(self, path: str, node: Node, command: Any) -> None:
        if not path:  # the root
            if type(command) is n.ReportEnded and not self.done:
                self.done = True
                self.end = self.now
                if command.phase is TaskPhase.SUCCEEDED:
                    self.shut_down = True
                else:
                    self.gave_up, self.chain, self.reason = True, command.chain, command.reason
            return
        parent, _, name = path.rpartition("/")
        if type(command) is n.ReportStopped:
            seq = self.stop_seqs.get(path, 0)
            if seq == -1:  # forgotten: its node goes
                del self.nodes[path]
                return
            self.send(parent, n.ChildTerminated(name, seq))
            return
        run = self.tasks[path]
        if type(command) is n.ReportStarted:
            self.send(parent, n.ChildStarted(name, command.attempt))
            return
        run.running, run.phase = False, command.phase
        ended = n.ChildEnded(
            name, command.attempt, command.phase, command.reason, command.started, command.chain
        )
        self.send(parent, ended)

    # -- children

    def forget(self, path: str) -> None:
        below = f"{path}/"
        self.forgotten.add(path)
        self.forgotten.update(p for p in self.tasks if p.startswith(below))

    def start(self, path: str, spec: ChildSpec, parent: str, name: str) -> None:
        run = self.tasks.get(path)
        if run is None:
            run = self.tasks[path] = _Task()
        elif path in self.forgotten:
            self.forgotten.discard(path)
            run.attempts = 0
        run.attempts += 1
        run.running = True
        run.phase = TaskPhase.RUNNING
        self.log.append(path)
        if not isinstance(spec, (SupervisorSpec, DynamicSupervisorSpec)):  # a task
            self.send(parent, n.ChildStarted(name, run.attempts))
            return
        node = self.nodes.get(path)
        if node is None:
            node = self.nodes[path] = Node(spec, f"{self.root.path}/{path}", seed=self.seed)
        self.send(path, Boot())

    def settle_child(self, path: str, command: Any, parent: str) -> None:
        run = self.tasks[path]
        if command.phase is not None:
            run.phase = command.phase
        if path in self.nodes:  # a child supervisor
            if command.then == "restart":
                self.start(path, self.nodes[path].spec, parent, command.child)
            elif command.then == "final":
                self.send(path, n.Settle(final=True))
            return
        if command.then == "restart":
            self.start(path, None, parent, command.child)  # type: ignore[arg-type]
            return

    def terminate(self, path: str, command: Any, parent: str) -> None:
        if path in self.nodes:
            self.stop_seqs[path] = command.seq
            node = self.nodes[path]
            run = self.tasks.get(path)
            if run is not None and run.running:
                run.running, run.phase = False, TaskPhase.CANCELLED
            self.send(path, n.StopNode(final=command.final, brutal=command.brutal))
            del node
            return
        run = self.tasks.get(path)
        if run is not None and run.running:
            run.running, run.phase = False, TaskPhase.CANCELLED
        self.send(parent, n.ChildTerminated(command.child, command.seq))

    def crash(self, path: str, error: str | None) -> None:
        """A supervisor crashed: its children stop with it (held); its parent decides."""
        node = self.nodes[path]
        for child in node.children.values():
            if child.dynamic:  # the live shell forgets them: new actors when added again
                self.forget(f"{path}/{child.id}")
        self.nodes[path] = node.fresh()
        for sub in [p for p in self.nodes if p.startswith(f"{path}/")]:
            del self.nodes[sub]
        for below, run in self.tasks.items():
            if below.startswith(f"{path}/") and run.running:
                run.running, run.phase = False, TaskPhase.CANCELLED
        run = self.tasks[path]
        run.running, run.phase = False, TaskPhase.FAILED
        parent, _, name = path.rpartition("/")
        self.send(parent, n.ChildEnded(name, node.attempt, TaskPhase.FAILED, error))

    # -- the clock

    def run_due(self, until: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= until and not self.done:
            at, _, path, token = heappop(heap)
            node = self.nodes.get(path)
            if node is None or not node.running:
                continue
            self.now = self.end = at
            self.log.append(at)  # the clock, for the starts that follow
            self.send(path, n.TimerFired(token))
            self.settle()

    def play(self, events: list[ScriptEvent], limit: float) -> None:
        for event in events:
            at = event.at
            if at > limit:
                break
            self.run_due(at)
            if self.done:
                self.skip(event, "the tree has stopped")
                continue
            self.now = self.end = at
            kind = type(event)
            if kind is Start:
                self.add_child(event)  # type: ignore[arg-type]
            elif kind in _API:
                self.call(event)  # type: ignore[arg-type]
            else:
                self.handle(event)  # type: ignore[arg-type]
            self.settle()

    def resolve(self, path: str) -> tuple[str, Node, str] | str:
        """The parent path, parent node and id of the child at ``path``, or why not."""
        parts = path.split("/")
        for depth in range(1, len(parts)):
            above = "/".join(parts[:depth])
            node = self.nodes.get(above)
            if node is None or not node.running:
                return f"supervisor {above!r} is not running"
        parent = "/".join(parts[:-1])
        node = self.nodes[parent]
        cid = parts[-1]
        if cid not in node.children:
            return f"no child {cid!r} under {node.path!r}"
        return parent, node, cid

    def handle(self, event: Fail | Exit | Timeout) -> None:
        found = self.resolve(event.child)
        if isinstance(found, str):
            self.skip(event, found)
            return
        parent, node, cid = found
        child = node.children[cid]
        if child.status != n.CHILD_RUNNING:
            self.skip(event, "not running")
            return
        self.log.append(event)
        error = event.error if isinstance(event, Fail) else None
        path = event.child
        if path in self.nodes:
            self.crash(path, error)
            return
        run = self.tasks[path]
        run.running = False
        run.phase = _PHASE_OF[type(event)]
        self.send(parent, n.ChildEnded(cid, child.attempt, run.phase, error))

    def supervisor_of(
        self, event: Start | TerminateChild | RestartChild | DeleteChild
    ) -> str | None:
        path = event.supervisor if isinstance(event, Start) else event.child.rpartition("/")[0]
        node = self.nodes.get(path)
        if node is None or not node.running:
            reason = "not running" if path else "the root is not running"
            if path:
                found = self.resolve(path)
                reason = found if isinstance(found, str) else "not running"
            self.skip(event, reason)
            return None
        return path

    def add_child(self, event: Start) -> None:
        path = self.supervisor_of(event)
        if path is None:
            return
        node = self.nodes[path]
        spec = None if isinstance(node.spec, DynamicSupervisorSpec) else event.spec
        self.send_call(path, event, "start_child", (spec, (), {}, event.id))

    def call(self, event: TerminateChild | RestartChild | DeleteChild) -> None:
        path = self.supervisor_of(event)
        if path is None:
            return
        name = _API[type(event)]
        self.send_call(path, event, name, (event.child.rpartition("/")[2],))

    def send_call(self, path: str, event: ScriptEvent, name: str, args: tuple[Any, ...]) -> None:
        self.calls += 1
        call = self.calls
        mark = len(self.log)
        self.log.append(event)
        self.send(path, n.Call(call, name, args))
        self.settle()
        reply = self.replies.pop(call, None)
        if reply is not None and reply.error is not None:
            del self.log[mark]
            self.skip(event, _refusal(reply.error))

    def skip(self, event: ScriptEvent, reason: str) -> None:
        self.skipped.append((event, reason))
        self.log.append((event.at, "skip", event, reason))


def _check_script(spec: SupervisorSpec | DynamicSupervisorSpec, script: list[ScriptEvent]) -> None:
    """Reject script events whose path cannot exist in ``spec`` (typos fail loudly).

    A child that a ``Start`` event adds with a spec to a static supervisor
    exists too, under that supervisor's path.
    """
    top = spec.child_infos() if isinstance(spec, SupervisorSpec) else ()
    top_level = {info.id for info in top}
    kinds = set(map(type, script))
    if kinds <= _EXITS and top_level.issuperset(map(_child, script)):
        return  # the common case, checked without a Python loop: children of the root
    added: dict[tuple[str, str], ChildSpec] = {}  # (supervisor path, name) -> spec
    for event in script:
        if isinstance(event, Start) and event.spec is not None:
            added[event.supervisor, event.spec.name] = event.spec
    for i, event in enumerate(script):
        kind = type(event)
        if kind not in _KINDS:
            raise invalid(
                f"script[{i}]",
                "expected a Fail, Exit, Timeout, Start, TerminateChild, RestartChild or "
                "DeleteChild event",
                type(event).__name__,
            )
        if kind is not Start and event.child in top_level:  # type: ignore[union-attr]
            continue  # the common case: a child of the root
        if isinstance(event, Start):
            field, path = "supervisor", event.supervisor
        else:
            field, path = "child", event.child
        node: ChildSpec = spec
        walked: list[str] = []
        for part in path.split("/") if path else ():
            if isinstance(node, DynamicSupervisorSpec):
                node = node.template  # ids under a dynamic supervisor are made at run time
            elif isinstance(node, SupervisorSpec):
                try:
                    node = node.child(part)
                except KeyError:
                    extra = added.get(("/".join(walked), part))
                    if extra is None:
                        where = "/".join([spec.name, *walked])
                        raise invalid(
                            f"script[{i}].{field}", f"no child {part!r} under {where!r}", path
                        ) from None
                    node = extra
            else:
                task = "/".join(walked)
                raise invalid(f"script[{i}].{field}", f"{task!r} is a task, not a supervisor", path)
            walked.append(part)
        if isinstance(event, Start) and not isinstance(
            node, (DynamicSupervisorSpec, SupervisorSpec)
        ):
            raise invalid(f"script[{i}].supervisor", "expected the path of a supervisor", path)
        if isinstance(event, Start) and isinstance(node, SupervisorSpec) and event.spec is None:
            raise invalid(
                f"script[{i}].spec",
                "a static supervisor's start_child needs a child spec "
                "(or name a dynamic supervisor)",
                None,
            )


def simulate(
    spec: SupervisorSpec | DynamicSupervisorSpec,
    script: Iterable[ScriptEvent],
    *,
    seed: int = 0,
    until: float | None = None,
) -> Simulation:
    """Play ``script`` against the tree ``spec`` on a fake clock and return what happened.

    Every child starts at time 0. Events are taken in time order (a stable
    sort keeps the script's order for equal times); a restart that is due
    at or before an event's time happens first. An event whose child is not
    running at that time (being restarted after a delay, terminated, or in
    a subtree that is gone) is skipped and recorded in ``skipped``. After
    the root gives up or shuts down, the remaining events are skipped.

    Args:
        spec: the tree to simulate.
        script: ``Fail``, ``Exit``, ``Timeout`` and ``Start`` events; a
            child is named by its path from the root (``"db/conn"``).
        seed: the seed for backoff jitter where ``Backoff.seed`` is None.
        until: stop the clock here (None: after the last due restart).

    Raises:
        InvalidSpec: when ``spec`` is not a supervisor spec, ``script`` is not
            a list of script events, an event names a path that cannot exist
            in ``spec``, ``until`` is not a time from 0 to ``MAX_SECONDS``, or
            ``seed`` is not an integer.
    """
    if not isinstance(spec, (SupervisorSpec, DynamicSupervisorSpec)):
        raise InvalidSpec(
            f"spec: expected a SupervisorSpec or DynamicSupervisorSpec, got {shown(spec)}"
        )
    if until is not None:
        until = seconds("until", until)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidSpec(f"seed: expected an integer, got {shown(seed)}")
    given: object = script
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise InvalidSpec(f"script: expected a list of script events, got {shown(given)}")
    events = list(script)
    _check_script(spec, events)
    events.sort(key=_at)
    limit = math.inf if until is None else until
    engine = _Engine(spec, seed)
    engine.play(events, limit)
    if not engine.done:
        engine.run_due(limit)
    runs = engine.tasks
    return Simulation(
        spec=spec,
        script=tuple(events),
        decisions=tuple(engine.decisions),
        children={p: ChildOutcome(r.phase, r.attempts, r.running) for p, r in runs.items()},
        gave_up=engine.gave_up,
        shut_down=engine.shut_down,
        chain=engine.chain,
        reason=engine.reason,
        skipped=tuple(engine.skipped),
        end=engine.end,
        log=tuple(engine.log),
    )
