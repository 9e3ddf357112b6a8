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

import gc
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from heapq import heappop, heappush
from operator import attrgetter
from typing import Any, TypeAlias

import attrs

from taskvisor.actors import InvalidSpec, TaskPhase, TaskSpec

from ._errors import Failure, SupervisorExhausted, invalid
from ._policy import (
    ChildExit,
    ChildInfo,
    Decision,
    GiveUp,
    Ignore,
    Policy,
    RestartChildren,
    SupervisorState,
    decide,
    started,
)
from ._spec import ChildSpec, DynamicSupervisorSpec, SupervisorSpec

__all__ = [
    "ChildOutcome",
    "Exit",
    "Fail",
    "ScriptEvent",
    "Simulation",
    "Start",
    "Timeout",
    "simulate",
]


def _check_at(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise invalid(attribute.name, "expected a finite time in seconds >= 0", value)


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
class Fail:
    """At time ``at``, the child at path ``child`` fails with ``error``."""

    at: float = attrs.field(validator=_check_at)
    child: str = attrs.field(validator=_check_path)
    error: str = "failed"


@attrs.frozen
class Exit:
    """At time ``at``, the child at path ``child`` ends normally (succeeds)."""

    at: float = attrs.field(validator=_check_at)
    child: str = attrs.field(validator=_check_path)


@attrs.frozen
class Timeout:
    """At time ``at``, the child at path ``child`` runs out of time."""

    at: float = attrs.field(validator=_check_at)
    child: str = attrs.field(validator=_check_path)


@attrs.frozen
class Start:
    """At time ``at``, start a child from the template of the dynamic supervisor at path
    ``supervisor`` (``""``: the root) under ``id`` (default ``"<template name>-<n>"``)."""

    at: float = attrs.field(validator=_check_at)
    supervisor: str = attrs.field(default="", validator=_check_sup_path)
    id: str | None = attrs.field(default=None, validator=_check_optional_id)


ScriptEvent: TypeAlias = Fail | Exit | Timeout | Start

_KINDS = frozenset({Fail, Exit, Timeout, Start})
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
        attempts: how many times it was started (restarts of its subtree included).
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
            outcome = f"still running at {self.end:g}s"
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
        return f"add      {event.supervisor or '(root)'}: new child"
    if kind == "skip":
        event, reason = args
        return f"skipped  {type(event).__name__.lower()} {getattr(event, 'child', '')}: {reason}"
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


class _Run:
    __slots__ = ("attempts", "phase", "running", "task")

    def __init__(self) -> None:
        self.phase = TaskPhase.PENDING
        self.attempts = 0
        self.running = False
        self.task = True  # the child is a task, not a supervisor (known once started)


class _Sup:
    """One running supervisor instance (a fresh one after each restart of its subtree)."""

    __slots__ = (
        "alive",
        "counter",
        "infos",
        "name",
        "parent",
        "path",
        "pending",
        "policy",
        "prefix",
        "spec",
        "specs",
        "state",
        "subs",
    )

    def __init__(
        self,
        spec: SupervisorSpec | DynamicSupervisorSpec,
        now: float,
        seed: int,
        *,
        parent: _Sup | None = None,
        name: str = "",
    ) -> None:
        self.spec = spec
        self.parent = parent
        self.name = name
        # path: the supervisor's own path, the root's name first ("app/db");
        # prefix: what goes before a child id to make its path from the root ("db/").
        if parent is None:
            self.path, self.prefix = spec.name, ""
        else:
            self.path, self.prefix = f"{parent.path}/{name}", f"{parent.prefix}{name}/"
        self.policy = Policy.of(spec)
        if isinstance(spec, SupervisorSpec):
            self.infos: tuple[ChildInfo, ...] = spec.child_infos()
            self.specs: dict[str, ChildSpec] = {c.name: c for c in spec.children}
        else:
            self.infos = ()
            self.specs = {}
        self.state = SupervisorState.initial(self.infos, now, seed=seed)
        self.subs: dict[str, _Sup] = {}
        self.pending: dict[str, int] = {}
        self.alive = True
        self.counter = 0

    def forget(self, ids: Iterable[str]) -> None:
        gone = set(ids)
        self.infos = tuple(i for i in self.infos if i.id not in gone)
        for cid in gone:
            self.specs.pop(cid, None)
            self.pending.pop(cid, None)


class _Engine:
    def __init__(self, spec: SupervisorSpec | DynamicSupervisorSpec, seed: int) -> None:
        self.seed = seed
        self.runs: dict[str, _Run] = {}
        self.decisions: list[tuple[float, str, Decision]] = []
        self.log: list[Any] = []  # see Simulation._log
        self.skipped: list[tuple[ScriptEvent, str]] = []
        self.heap: list[tuple[float, int, _Sup, tuple[str, ...]]] = []
        self.seq = 0
        self.done = False
        self.gave_up = False
        self.shut_down = False
        self.chain: tuple[Failure, ...] = ()
        self.reason: str | None = None
        self.end = 0.0
        # ChildExit values are immutable: reuse one per (child, kind of event, error).
        self.exits: dict[tuple[str, type, str | None], ChildExit] = {}
        self.root = _Sup(spec, 0.0, seed)
        for info in self.root.infos:
            self.start(self.root, info.id, 0.0)

    # -- children

    def start(self, sup: _Sup, cid: str, now: float) -> None:
        path = sup.prefix + cid
        run = self.runs.get(path)
        if run is None:
            run = self.runs[path] = _Run()
        run.attempts += 1
        run.running = True
        run.phase = _RUNNING
        if sup.pending:
            sup.pending.pop(cid, None)
        self.log.append(path)  # at the time of the entry before it
        spec = sup.specs[cid]
        run.task = isinstance(spec, TaskSpec)
        if not isinstance(spec, TaskSpec):
            sub = _Sup(spec, now, self.seed, parent=sup, name=cid)
            sup.subs[cid] = sub
            for info in sub.infos:
                self.start(sub, info.id, now)

    def terminate(self, sup: _Sup, cid: str) -> None:
        sup.pending.pop(cid, None)
        run = self.runs.get(sup.prefix + cid)
        if run is not None and run.running:
            sub = sup.subs.pop(cid, None)
            if sub is not None:
                self.stop_tree(sub)
            run.running = False
            run.phase = TaskPhase.CANCELLED

    def stop_tree(self, sup: _Sup) -> None:
        sup.alive = False
        for info in reversed(sup.infos):
            self.terminate(sup, info.id)

    # -- decisions

    def child_ended(
        self,
        sup: _Sup,
        event: ChildExit,
        now: float,
        chain: tuple[Failure, ...],
    ) -> None:
        state, decision = decide(sup.policy, sup.infos, sup.state, event, now)
        sup.state = state
        entry = (now, sup.path, decision)
        self.decisions.append(entry)
        self.log.append(entry)
        self.carry_out(sup, decision, event, now, chain)

    def carry_out(
        self,
        sup: _Sup,
        decision: Decision,
        event: ChildExit,
        now: float,
        chain: tuple[Failure, ...],
    ) -> None:
        if type(decision) is RestartChildren:
            if decision.terminate:
                for other in decision.terminate:
                    self.terminate(sup, other)
            if decision.drop:
                sup.forget(decision.drop)
            delay = decision.delay
            if delay <= 0:
                for restarted in decision.restart:
                    self.start(sup, restarted, now)
            else:
                self.seq = seq = self.seq + 1
                pending = sup.pending
                for restarted in decision.restart:
                    pending[restarted] = seq
                heappush(self.heap, (now + delay, seq, sup, decision.restart))
        elif isinstance(decision, Ignore):
            if decision.remove:
                sup.forget((event.child,))
        elif isinstance(decision, GiveUp):
            cid, phase, error = event.child, event.phase, event.error
            self.runs[sup.prefix + cid].phase = TaskPhase.EXHAUSTED
            self.stop_tree(sup)
            link = (*chain, Failure(sup.path, cid, phase, error))
            self.supervisor_ended(sup, TaskPhase.EXHAUSTED, decision.reason, now, link)
        else:
            self.stop_tree(sup)
            self.supervisor_ended(sup, TaskPhase.SUCCEEDED, None, now, ())

    def supervisor_ended(
        self,
        sup: _Sup,
        phase: TaskPhase,
        reason: str | None,
        now: float,
        chain: tuple[Failure, ...],
    ) -> None:
        parent = sup.parent
        if parent is None:
            self.done = True
            self.end = now
            if phase is TaskPhase.EXHAUSTED:
                self.gave_up, self.chain, self.reason = True, chain, reason
            else:
                self.shut_down = True
            return
        run = self.runs[sup.prefix[:-1]]
        run.running = False
        run.phase = phase
        parent.subs.pop(sup.name, None)
        self.child_ended(parent, ChildExit(sup.name, phase, reason), now, chain)

    # -- the clock

    def run_due(self, until: float) -> None:
        heap, log = self.heap, self.log
        while heap and heap[0][0] <= until and not self.done:
            at, seq, sup, ids = heappop(heap)
            self.end = at
            if not sup.alive:
                continue
            log.append(at)  # the clock, for the starts that follow
            pending = sup.pending
            for cid in ids:
                if pending.get(cid) == seq:
                    self.start(sup, cid, at)

    def play(self, events: list[ScriptEvent], limit: float) -> None:  # noqa: PLR0915
        """Handle ``events`` (sorted by time) up to ``limit``, due restarts first.

        The common case, a running task child of the root ends and the root
        decides, is written out here (``run_due``, ``handle``, ``child_ended``
        and ``start`` in one); everything else goes to those methods.
        """
        heap, runs, exits, root = self.heap, self.runs, self.exits, self.root
        record, log = self.decisions.append, self.log.append
        root_path, root_pending, policy = root.path, root.pending, root.policy
        for event in events:
            at = event.at
            if at > limit:
                break
            if self.done:
                self.skip(event, "the tree has stopped")
                continue
            # run_due(at); self.end is set below, to at
            while heap and heap[0][0] <= at:
                due, seq, sup, ids = heappop(heap)
                if not sup.alive:
                    continue
                log(due)
                pending = sup.pending
                for cid in ids:
                    if pending.get(cid) != seq:
                        continue
                    if sup is root:
                        due_run = runs[cid]
                        if due_run.task:  # start(root, cid, due)
                            del pending[cid]
                            due_run.attempts += 1
                            due_run.running = True
                            due_run.phase = _RUNNING
                            log(cid)
                            continue
                    self.start(sup, cid, due)
            if isinstance(event, Start):
                self.end = at
                self.add_child(event)
                continue
            path = event.child
            run = runs.get(path)
            if run is None or not run.running or "/" in path:
                self.handle(event)
                continue
            self.end = at
            log(event)
            kind = type(event)
            run.running = False
            run.phase = phase = _PHASE_OF[kind]
            if root.subs:
                sub = root.subs.pop(path, None)
                if sub is not None:  # a supervisor itself crashed: its children go with it
                    self.stop_tree(sub)
            error = event.error if kind is Fail else None  # type: ignore[union-attr]
            key = (path, kind, error)
            exit_event = exits.get(key)
            if exit_event is None:
                exit_event = exits[key] = ChildExit(path, phase, error)
            state, decision = decide(policy, root.infos, root.state, exit_event, at)
            root.state = state
            entry = (at, root_path, decision)
            record(entry)
            log(entry)
            if type(decision) is not RestartChildren:
                self.carry_out(root, decision, exit_event, at, ())
                continue
            _, terminate, restart, drop, delay = decision
            if terminate or drop:
                self.carry_out(root, decision, exit_event, at, ())
                continue
            if delay > 0:
                self.seq = seq = self.seq + 1
                for cid in restart:
                    root_pending[cid] = seq
                heappush(heap, (at + delay, seq, root, restart))
            elif run.task and restart == (path,):  # start(root, path, at)
                # (a running child is never waiting for a delayed restart: not in root_pending)
                run.attempts += 1
                run.running = True
                run.phase = _RUNNING
                log(path)
            else:
                for cid in restart:
                    self.start(root, cid, at)

    def resolve(self, path: str) -> tuple[_Sup, str] | str:
        sup = self.root
        parts = path.split("/")
        for depth, part in enumerate(parts[:-1]):
            sub = sup.subs.get(part)
            if sub is None:
                return f"supervisor {'/'.join(parts[: depth + 1])!r} is not running"
            sup = sub
        cid = parts[-1]
        run = self.runs.get(path)
        if cid not in sup.specs or run is None:
            return f"no child {cid!r} under {sup.path!r}"
        if not run.running:
            return "not running"
        return sup, cid

    def handle(self, event: Fail | Exit | Timeout) -> None:
        """Handle a script event about a child that is not a running child of the root."""
        now = event.at
        self.end = now
        found = self.resolve(event.child)
        if isinstance(found, str):
            self.skip(event, found)
            return
        sup, cid = found
        run = self.runs[event.child]
        kind = type(event)
        phase = _PHASE_OF[kind]
        self.log.append(event)
        run.running = False
        run.phase = phase
        sub = sup.subs.pop(cid, None)
        if sub is not None:  # a supervisor itself crashed: its children go with it
            self.stop_tree(sub)
        error = event.error if isinstance(event, Fail) else None
        self.child_ended(sup, ChildExit(cid, phase, error), now, ())

    def add_child(self, event: Start) -> None:
        sup = self.root
        if event.supervisor:
            found = self.resolve(event.supervisor)
            if isinstance(found, str):
                self.skip(event, found)
                return
            parent, name = found
            sup = parent.subs[name]
        spec = sup.spec
        if not isinstance(spec, DynamicSupervisorSpec):
            self.skip(event, f"{sup.path!r} is not a dynamic supervisor")
            return
        if spec.max_children is not None and len(sup.infos) >= spec.max_children:
            self.skip(event, f"max_children ({spec.max_children}) reached")
            return
        cid = event.id
        if cid is None:
            sup.counter += 1
            cid = f"{spec.template.name}-{sup.counter}"
        if cid in sup.specs:
            self.skip(event, f"child {cid!r} is already there")
            return
        self.log.append(event)
        sup.infos = (*sup.infos, spec.child_info(cid))
        sup.specs[cid] = spec.template
        sup.state = started(sup.state, cid, event.at)
        self.start(sup, cid, event.at)

    def skip(self, event: ScriptEvent, reason: str) -> None:
        self.skipped.append((event, reason))
        self.log.append((event.at, "skip", event, reason))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a while, as ``timeit`` does.

    A simulation keeps every decision and log entry it makes: hundreds of
    thousands of small objects, none of them garbage. With the collector
    on, CPython walks them all again each time their number grows by a
    quarter: a quarter of the run time of a long script. Reference counting
    still frees everything else at once; the collector is turned back on
    (if it was on) when the simulation ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_script(spec: SupervisorSpec | DynamicSupervisorSpec, script: list[ScriptEvent]) -> None:
    """Reject script events whose path cannot exist in ``spec`` (typos fail loudly)."""
    top = spec.child_infos() if isinstance(spec, SupervisorSpec) else ()
    top_level = {info.id for info in top}
    kinds = set(map(type, script))
    if kinds <= _EXITS and top_level.issuperset(map(_child, script)):
        return  # the common case, checked without a Python loop: children of the root
    for i, event in enumerate(script):
        kind = type(event)
        if kind not in _KINDS:
            raise invalid(f"script[{i}]", "expected a Fail, Exit, Timeout or Start event", event)
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
                    where = "/".join([spec.name, *walked])
                    raise invalid(
                        f"script[{i}].{field}", f"no child {part!r} under {where!r}", path
                    ) from None
            else:
                task = "/".join(walked)
                raise invalid(f"script[{i}].{field}", f"{task!r} is a task, not a supervisor", path)
            walked.append(part)
        if isinstance(event, Start) and not isinstance(node, DynamicSupervisorSpec):
            raise invalid(
                f"script[{i}].supervisor", "expected the path of a dynamic supervisor", path
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
        InvalidSpec: when an event names a path that cannot exist in ``spec``.
    """
    if not isinstance(spec, (SupervisorSpec, DynamicSupervisorSpec)):
        raise InvalidSpec(f"spec: expected a SupervisorSpec or DynamicSupervisorSpec, got {spec!r}")
    events = list(script)
    _check_script(spec, events)
    events.sort(key=_at)
    limit = math.inf if until is None else until
    with _collector_paused():
        engine = _Engine(spec, seed)
        engine.play(events, limit)
        if not engine.done:
            engine.run_due(limit)
    runs = engine.runs
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
