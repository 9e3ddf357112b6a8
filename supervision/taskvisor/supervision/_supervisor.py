"""The Supervisor actor: OTP supervision on task actors.

A supervisor is a pykka actor that starts its children in order, hears
when one ends, asks the pure core (``decide``) what to do, and does it:
restart children in place, give up, or shut down. It never blocks on user
work; it blocks only while it terminates children, as OTP's does.

Children end in two steps. A child whose work ended reports it and waits
for a verdict; the supervisor answers "restart" (now, after a backoff
delay, or once its siblings are stopped), "end for good", or "close as
``EXHAUSTED``". Siblings stopped for a ONE_FOR_ALL or REST_FOR_ONE restart
close their runs as ``CANCELLED`` and are held until they are restarted in
start order. Nested supervisors follow the same protocol, so escalation is
a child supervisor's run ending ``EXHAUSTED``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import attrs
import pykka

from taskvisor.actors import (
    AttemptEnded,
    BaseActor,
    Clock,
    Event,
    EventBus,
    Request,
    Restart,
    Subscriber,
    SystemClock,
    Task,
    TaskAccepted,
    TaskExecutor,
    TaskPhase,
    TaskRecord,
    TaskRef,
    TaskSnapshot,
    TaskSpec,
    TaskState,
    TaskvisorError,
    Verdict,
    WaitTimeout,
    default_executors,
    now_ms,
    resume_record,
)
from taskvisor.actors._base import ActorThreads
from taskvisor.actors._publish import logging_wanted
from taskvisor.actors._service import close_shared

from ._errors import ChildStartError, Failure, SupervisorExhausted
from ._policy import (
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
from ._spec import ChildSpec, DynamicSupervisorSpec, SupervisorSpec

__all__ = [
    "ChildRow",
    "ChildSupervisorEnded",
    "Escalated",
    "RestartScheduled",
    "Supervisor",
    "SupervisorError",
    "SupervisorGaveUp",
    "SupervisorRef",
    "SupervisorStopped",
]

logger = logging.getLogger("taskvisor.supervision")

AnySupervisorSpec = SupervisorSpec | DynamicSupervisorSpec


class SupervisorError(TaskvisorError, RuntimeError):
    """Raised when a dynamic-API call cannot be done (OTP's ``{error, Reason}``).

    ``reason`` is one of ``not_found``, ``running``, ``not_running``,
    ``already_present``, ``max_children``, ``stopped``, ``start_failed``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------------ events


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
    """A supervisor ended: ``reason`` is ``shutdown`` (auto), ``gave_up`` or ``stopped``."""

    supervisor: str
    reason: str


@attrs.frozen
class ChildSupervisorEnded:
    """Notice from a child supervisor to its parent (like ``AttemptEnded``, with the chain)."""

    notice: AttemptEnded
    chain: tuple[Failure, ...]


@attrs.frozen
class ChildRow:
    """One row of ``which_children``: OTP's ``{Id, Child, Type, Modules}`` and more."""

    id: str
    kind: str  # "worker" or "supervisor"
    running: bool
    phase: TaskPhase
    attempt: int
    restart: Restart


# ------------------------------------------------------------------------------ runtime


@attrs.define
class _Runtime:
    """What every actor of one tree shares."""

    bus: EventBus
    executors: dict[str, TaskExecutor]
    store: Any
    clock: Clock
    ports: list[Any] = attrs.Factory(list)  # every actor started, for the final stop
    lock: threading.Lock = attrs.Factory(threading.Lock)
    threads: ActorThreads = attrs.Factory(ActorThreads)  # every actor of the tree runs on these
    real_clock: SystemClock = attrs.Factory(lambda: SystemClock(keep_thread=True))  # graces

    def track(self, port: Any) -> None:
        with self.lock:
            self.ports.append(port)


class _Port(Protocol):
    """What a supervisor needs of a child: a task actor or a child supervisor."""

    def begin_and_confirm(self) -> Request: ...
    def verdict(self, verdict: Verdict) -> None: ...
    def restart(self) -> None: ...
    def restart_and_confirm(self) -> Request: ...
    def terminate(self, *, brutal: bool = False, final: bool = True) -> Request: ...
    def stop(self, timeout: float | None = 10.0) -> None: ...
    def stop_soon(self) -> None: ...


@attrs.define(eq=False)
class _Child:
    spec: ChildSpec
    info: ChildInfo
    port: _Port
    running: bool = False  # an attempt is running or awaits our verdict
    settled: int = 0  # highest attempt number already handled
    attempt: int = 0
    phase: TaskPhase = TaskPhase.PENDING
    restored: bool = False  # ended in a previous life (found in the store): not started

    @property
    def id(self) -> str:
        return self.spec.name

    @property
    def is_supervisor(self) -> bool:
        return not isinstance(self.spec, TaskSpec)


class _ChildOwner:
    """A task child's owner: forwards its notices to the supervisor's inbox.

    A lone restart of this child is decided at once, on the child's thread,
    when the supervisor is idle (``SupervisorActor.decide_alone``); any
    other decision goes through the supervisor's inbox.
    """

    __slots__ = ("_child_id", "_decide_alone", "_tell")

    restarts = True

    def __init__(
        self,
        tell: Callable[[Any], None],
        child_id: str,
        decide_alone: Callable[[str, AttemptEnded], Verdict | None],
    ) -> None:
        self._tell = tell
        self._child_id = child_id
        self._decide_alone = decide_alone

    def attempt_ended(self, notice: AttemptEnded) -> Verdict | None:
        verdict = self._decide_alone(self._child_id, notice)
        if verdict is None:
            _quiet(self._tell, _ChildEnded(self._child_id, notice, ()))
        return verdict

    def task_done(self, snapshot: TaskSnapshot) -> None:
        _quiet(self._tell, _ChildDone(self._child_id, snapshot.task.status.phase))


def _quiet(tell: Callable[[Any], None], message: Any) -> None:
    try:
        tell(message)
    except pykka.ActorDeadError:
        logger.debug("supervisor gone; dropped %r", message)


# ------------------------------------------------------------------------------ messages


@attrs.frozen
class _Init:
    reply: Request


@attrs.frozen
class _ChildEnded:
    child: str
    notice: AttemptEnded
    chain: tuple[Failure, ...]


@attrs.frozen
class _ChildDone:
    child: str
    phase: TaskPhase


@attrs.frozen
class _RestartDue:
    ids: tuple[str, ...]
    token: int


@attrs.frozen
class _Api:
    name: str
    args: tuple[Any, ...]


@attrs.frozen
class _Terminate:
    reply: Request
    brutal: bool
    final: bool


@attrs.frozen
class _ParentVerdict:
    verdict: Verdict


@attrs.frozen
class _Resume:
    reply: Request | None = None


# ------------------------------------------------------------------------------ the actor

_STARTING, _RUNNING, _EXITED, _HELD, _STOPPED = "starting", "running", "exited", "held", "stopped"

#: Reports a supervisor's own end to whoever owns it (a parent, or the root's ref).
Report = Callable[[ChildSupervisorEnded], None]


class SupervisorActor(BaseActor):
    """One supervisor of a tree. Use ``Supervisor.start`` rather than this class."""

    def __init__(self, spec: AnySupervisorSpec, path: str, runtime: _Runtime, report: Report):
        super().__init__(threads=runtime.threads)
        self.spec = spec
        self.path = path
        self.runtime = runtime
        self.report = report
        self.policy = Policy.of(spec)
        self.clock = runtime.clock
        self.children: list[_Child] = []
        self.by_id: dict[str, _Child] = {}
        self.infos: tuple[ChildInfo, ...] = ()
        self.state = SupervisorState.initial((), 0.0)
        self.status = _STARTING
        self.attempt = 0  # incarnations of this supervisor (restarts in place)
        self.token = itertools.count(1)  # invalidates restart timers of older decisions
        self.pending_restart: int | None = None
        self.dynamic_ids = itertools.count(1)
        self.exit_chain: tuple[Failure, ...] = ()
        # Held while a message is handled, and by a child deciding its lone restart.
        self.lock = threading.Lock()
        self._handlers: dict[type, Callable[[Any], Any]] = {
            _Init: self._on_init,
            _ChildEnded: self._on_child_ended,
            _ChildDone: self._on_child_done,
            _RestartDue: self._on_restart_due,
            _Api: self._on_api,
            _Terminate: self._on_terminate,
            _ParentVerdict: self._on_parent_verdict,
            _Resume: self._on_resume,
        }

    def on_receive(self, message: Any) -> Any:
        with self.lock:
            return self._handlers[type(message)](message)

    # starting ---------------------------------------------------------------------

    def _on_init(self, message: _Init) -> None:
        try:
            self._start_all(first=True)
        except ChildStartError as exc:
            message.reply.fail(exc)
            return
        message.reply.reply(None)

    def _start_all(self, *, first: bool) -> None:
        """Start (or restart fresh) every child in order; on a failure stop the started ones.

        Raises:
            ChildStartError: naming the child that could not start.
        """
        self.attempt += 1
        now = self.clock.now()
        if first:
            specs: Sequence[ChildSpec] = (
                self.spec.children if isinstance(self.spec, SupervisorSpec) else ()
            )
            for spec in specs:
                self._define(spec, index=False, resume=True)
            self.infos = tuple(c.info for c in self.children)
        else:
            for child in list(self.children):  # a restarted supervisor forgets temporaries
                if child.info.restart is Restart.TEMPORARY and not child.running:
                    self._forget(child)
        self.state = SupervisorState.initial(self.infos, now)
        self.status = _RUNNING
        begun: list[_Child] = []
        for child in self.children:
            if first and child.restored:
                self.state = stopped(self.state, child.id)
                continue
            request = child.port.begin_and_confirm() if first else child.port.restart_and_confirm()
            error = self._confirm(child, request)
            if error is not None:
                self._terminate_all(reversed(begun), final=True)
                self.status = _STOPPED
                raise ChildStartError(f"{self.path}/{child.id}", error)
            begun.append(child)

    def _define(self, spec: ChildSpec, *, index: bool = True, resume: bool = False) -> _Child:
        """Create the child's actor (not started) and add it at the end.

        With ``resume`` (a tree's first start), a task child found in the store
        that should not run again starts as ended, with its stored status.
        """
        path = f"{self.path}/{spec.name}"
        tell = self.actor_ref.tell
        port: _Port
        record: TaskRecord | None = None
        restored = False
        if isinstance(spec, TaskSpec):
            executor = self.runtime.executors.get(spec.kind)
            if executor is None:
                raise ChildStartError(path, f"no executor for task kind {spec.kind!r}")
            record = self._stored(path, spec)
            restored = resume and record is not None and not _runs_again(record, spec)
            task = Task.new(path, spec)
            self.runtime.bus.publish(TaskAccepted(path, spec.name, at=task.metadata.created_at))
            port = TaskRef.start(
                task,
                executor,
                _ChildOwner(tell, spec.name, self.decide_alone),
                bus=self.runtime.bus,
                store=self.runtime.store,
                clock=self.clock,
                record=record,
                restored=restored,
                begin=False,
                threads=self.runtime.threads,
                real_clock=self.runtime.real_clock,
            )
        else:
            name = spec.name

            def report(ended: ChildSupervisorEnded) -> None:
                _quiet(tell, _ChildEnded(name, ended.notice, ended.chain))

            port = _SupervisorPort.start(spec, path, self.runtime, report)
        self.runtime.track(port)
        child = _Child(spec, ChildInfo.of(spec), port, restored=restored)
        if record is not None:
            child.attempt = child.settled = record.attempts
            child.phase = TaskPhase(record.state.value)
        self.children.append(child)
        self.by_id[child.id] = child
        if index:
            self.infos = tuple(c.info for c in self.children)
        return child

    def _stored(self, path: str, spec: TaskSpec) -> TaskRecord | None:
        """The child's record from the store; a run lost with its process is closed."""
        store = self.runtime.store
        if store is None:
            return None
        record: TaskRecord | None = store.get(path)
        if record is not None and record.state is TaskState.RUNNING:
            resume_record(record, spec)
            store.put(record)
        return record

    def _on_child_ended(self, message: _ChildEnded) -> None:
        child = self.by_id.get(message.child)
        notice = message.notice
        if child is None or notice.attempt <= child.settled or self.status != _RUNNING:
            if child is not None and self.status != _RUNNING and notice.attempt > child.settled:
                # Ended while we were exiting or starting: settle it, held.
                child.settled = notice.attempt
                child.port.verdict(Verdict(notice.attempt, hold=True))
            return
        self._settle(child, notice)
        self.state, decision = self._decide(child, notice)
        if isinstance(decision, Ignore):
            child.running = False
            child.port.verdict(Verdict(notice.attempt))
            if decision.remove:
                self._forget(child)
        elif isinstance(decision, RestartChildren):
            self._restart(child, notice, decision)
        elif isinstance(decision, GiveUp):
            failure = Failure(self.path, child.id, notice.phase, notice.error)
            self.exit_chain = (*message.chain, failure)
            child.port.verdict(Verdict(notice.attempt, phase=TaskPhase.EXHAUSTED, hold=True))
            child.running = False
            child.phase = TaskPhase.EXHAUSTED
            self._publish(SupervisorGaveUp(self.path, child.id, decision.reason, at=now_ms()))
            logger.error("%s: giving up: %s", self.path, decision.reason)
            self._exit(TaskPhase.EXHAUSTED, decision.reason, decision.terminate)
        else:
            assert isinstance(decision, Shutdown)
            child.running = False
            child.port.verdict(Verdict(notice.attempt, hold=True))
            self._exit(TaskPhase.SUCCEEDED, "auto_shutdown", decision.terminate)

    def decide_alone(self, child_id: str, notice: AttemptEnded) -> Verdict | None:
        """Decide a child's lone restart on the child's own thread, saving two hops.

        Only when this supervisor is idle (its lock is free) and the decision
        restarts that child alone; otherwise return None, and the notice goes
        through the inbox as usual. ``decide`` is pure, so a decision not
        taken here leaves no trace.
        """
        if not self.lock.acquire(blocking=False):
            return None
        try:
            child = self.by_id.get(child_id)
            if child is None or self.status != _RUNNING or notice.attempt <= child.settled:
                return None
            state, decision = self._decide(child, notice)
            if not isinstance(decision, RestartChildren) or not _alone(child, decision):
                return None
            self.state = state
            self._settle(child, notice)
            return self._restart_alone(child, notice, decision)
        finally:
            self.lock.release()

    def _settle(self, child: _Child, notice: AttemptEnded) -> None:
        child.settled = child.attempt = notice.attempt
        child.phase = notice.phase

    def _decide(self, child: _Child, notice: AttemptEnded) -> tuple[SupervisorState, Decision]:
        exit_ = ChildExit(child.id, notice.phase, notice.error)
        return decide(self.policy, self.infos, self.state, exit_, self.clock.now())

    def _restart_alone(
        self, child: _Child, notice: AttemptEnded, decision: RestartChildren
    ) -> Verdict:
        """The child restarts itself, after its delay (ONE_FOR_ONE and the like)."""
        child.attempt += 1
        self._restarting(child, notice, decision)
        return Verdict(notice.attempt, restart_after=decision.delay)

    def _restarting(self, child: _Child, notice: AttemptEnded, decision: RestartChildren) -> None:
        delay = decision.delay
        if self.runtime.bus.wanted:
            event = RestartScheduled(self.path, child.id, decision.restart, delay, at=now_ms())
            self._publish(event)
        if logging_wanted(logger, logging.WARNING):
            logger.warning(
                "%s: child %r ended %s, restarting %s: %s",
                self.path,
                child.id,
                notice.phase.value,
                ", ".join(decision.restart),
                notice.error,
            )

    def _restart(self, child: _Child, notice: AttemptEnded, decision: RestartChildren) -> None:
        delay = decision.delay
        if _alone(child, decision):
            child.port.verdict(self._restart_alone(child, notice, decision))
            return
        self._restarting(child, notice, decision)
        child.running = False
        child.port.verdict(Verdict(notice.attempt, hold=True))
        self._terminate_all(
            (self.by_id[i] for i in decision.terminate if i in self.by_id), final=False
        )
        for dropped in decision.drop:
            if dropped in self.by_id:
                self.by_id[dropped].port.terminate(final=True).wait(None)
                self._forget(self.by_id[dropped])
        token = next(self.token)
        self.pending_restart = token
        if delay <= 0:
            self._restart_now(decision.restart)
        else:
            self.clock.call_later(
                delay, lambda: _quiet(self.actor_ref.tell, _RestartDue(decision.restart, token))
            )

    def _on_restart_due(self, message: _RestartDue) -> None:
        if self.status == _RUNNING and self.pending_restart == message.token:
            self._restart_now(message.ids)

    def _restart_now(self, ids: Iterable[str]) -> None:
        """Restart children one by one, in start order, each confirmed before the next."""
        self.pending_restart = None
        for child_id in ids:
            child = self.by_id.get(child_id)
            if child is not None and not child.running:
                self._confirm(child, child.port.restart_and_confirm())

    def _confirm(self, child: _Child, request: Request) -> str | None:
        """Wait for a child's start; it runs (or, if it could not start, reports a failure)."""
        try:
            error: str | None = request.wait(60)
        except WaitTimeout:
            error = "did not confirm its start within 60s"
        child.running = True  # a start error arrives as the end of this attempt
        child.attempt += 1
        self.state = started(self.state, child.id, self.clock.now())
        return error

    def _on_child_done(self, message: _ChildDone) -> None:
        child = self.by_id.get(message.child)
        if child is not None:
            child.phase = message.phase

    # exiting ----------------------------------------------------------------------

    def _exit(self, phase: TaskPhase, reason: str, terminate: Iterable[str]) -> None:
        """Stop the other children (reverse start order, held) and report to the owner."""
        self.status = _EXITED
        self._terminate_all((self.by_id[i] for i in terminate if i in self.by_id), final=False)
        self._terminate_all(reversed([c for c in self.children if c.running]), final=False)
        self._publish(
            SupervisorStopped(
                self.path, "gave_up" if phase is TaskPhase.EXHAUSTED else "shutdown", at=now_ms()
            )
        )
        if "/" in self.path and phase is TaskPhase.EXHAUSTED:
            self._publish(Escalated(self.path, self.path.rpartition("/")[0], at=now_ms()))
        notice = AttemptEnded(self.path, self.attempt, phase, reason)
        self.report(ChildSupervisorEnded(notice, self.exit_chain))

    def _terminate_all(self, children: Iterable[_Child], *, final: bool) -> None:
        """Terminate each child in the given order, waiting for each (OTP's shutdown)."""
        for child in children:
            brutal = child.spec.shutdown == "brutal"
            request = child.port.terminate(brutal=brutal, final=final)
            grace = child.spec.shutdown
            timeout = None if grace == "infinity" else (0 if brutal else float(grace)) + 30.0
            try:
                snapshot = request.wait(timeout)
            except WaitTimeout:
                logger.error("%s: child %r did not stop in time", self.path, child.id)
                continue
            except TaskvisorError:
                snapshot = None
            child.running = False
            if isinstance(snapshot, TaskSnapshot):
                child.settled = max(child.settled, snapshot.task.status.attempt)
                child.phase = snapshot.task.status.phase
            elif isinstance(snapshot, _SupervisorSnapshot):
                child.settled = max(child.settled, snapshot.attempt)
                child.phase = snapshot.phase

    def _forget(self, child: _Child) -> None:
        """Delete a child's spec and stop its actor (after what it was already told)."""
        self.children.remove(child)
        del self.by_id[child.id]
        self.infos = tuple(c.info for c in self.children)
        self.state = removed(self.state, child.id)
        if child.running:
            child.port.terminate(final=True).wait(None)
        child.port.stop()

    def _on_terminate(self, message: _Terminate) -> None:
        """Stop every child in reverse start order; held (final=False) or for good."""
        self.pending_restart = None
        was = self.status
        self.status = _EXITED
        self._terminate_all(reversed(self.children), final=message.final)
        if message.final:
            self.status = _STOPPED
            if was != _STOPPED:
                self._publish(SupervisorStopped(self.path, "stopped", at=now_ms()))
        else:
            self.status = _HELD
        message.reply.reply(self._snapshot())

    def _on_parent_verdict(self, message: _ParentVerdict) -> None:
        verdict = message.verdict
        if self.status != _EXITED or verdict.attempt != self.attempt:
            return
        if verdict.hold:
            self.status = _HELD
        elif verdict.restart_after is None:
            self._terminate_all(reversed(self.children), final=True)
            self.status = _STOPPED
        elif verdict.restart_after <= 0:
            self._resume()
        else:
            self.status = _HELD
            self.clock.call_later(
                verdict.restart_after, lambda: _quiet(self.actor_ref.tell, _Resume())
            )

    def _on_resume(self, message: _Resume) -> None:
        if self.status in (_HELD, _EXITED):
            self._resume()
        if message.reply is not None:
            message.reply.reply(None if self.status == _RUNNING else "could not restart")

    def _resume(self) -> None:
        """Restart in place: every child starts fresh, in order."""
        self.exit_chain = ()
        try:
            self._start_all(first=False)
        except ChildStartError as exc:
            self.status = _EXITED
            self.exit_chain = (Failure(self.path, exc.child, TaskPhase.FAILED, exc.error),)
            notice = AttemptEnded(self.path, self.attempt, TaskPhase.FAILED, str(exc))
            self.report(ChildSupervisorEnded(notice, self.exit_chain))

    def _snapshot(self) -> _SupervisorSnapshot:
        phase = {
            _EXITED: TaskPhase.EXHAUSTED if self.exit_chain else TaskPhase.SUCCEEDED,
            _STOPPED: TaskPhase.CANCELLED,
            _HELD: TaskPhase.CANCELLED,
        }.get(self.status, TaskPhase.RUNNING)
        return _SupervisorSnapshot(self.path, self.attempt, phase)

    # the dynamic API --------------------------------------------------------------

    def _on_api(self, message: _Api) -> Any:
        if self.status == _STOPPED:
            raise SupervisorError("stopped", f"{self.path} has stopped")
        method: Callable[..., Any] = getattr(self, f"_api_{message.name}")
        return method(*message.args)

    def _api_start_child(
        self,
        spec: ChildSpec | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        child_id: str | None,
    ) -> str:
        if isinstance(self.spec, DynamicSupervisorSpec):
            limit = self.spec.max_children
            if limit is not None and len(self.children) >= limit:
                raise SupervisorError(
                    "max_children", f"{self.path}: max_children ({limit}) reached"
                )
            spec = _from_template(
                self.spec.template,
                child_id or f"{self.spec.template.name}-{next(self.dynamic_ids)}",
                args,
                kwargs,
            )
        elif spec is None:
            raise SupervisorError("not_found", f"{self.path}: start_child needs a child spec")
        if spec.name in self.by_id:
            existing = self.by_id[spec.name]
            reason = "running" if existing.running else "already_present"
            raise SupervisorError(reason, f"{self.path}: child {spec.name!r} is {reason}")
        try:
            child = self._define(spec)
        except ChildStartError as exc:
            raise SupervisorError("start_failed", str(exc)) from None
        error = self._confirm(child, child.port.begin_and_confirm())
        if error is not None:
            self._forget(child)
            raise SupervisorError("start_failed", f"{self.path}/{spec.name}: {error}")
        return child.id

    def _child(self, child_id: str) -> _Child:
        child = self.by_id.get(child_id)
        if child is None:
            raise SupervisorError("not_found", f"{self.path}: no child {child_id!r}")
        return child

    def _api_terminate_child(self, child_id: str) -> None:
        child = self._child(child_id)
        self._terminate_all([child], final=True)
        self.state = stopped(self.state, child.id)
        if child.info.restart is Restart.TEMPORARY or isinstance(self.spec, DynamicSupervisorSpec):
            self._forget(child)

    def _api_restart_child(self, child_id: str) -> None:
        child = self._child(child_id)
        if child.running:
            raise SupervisorError("running", f"{self.path}: child {child_id!r} is running")
        self._confirm(child, child.port.restart_and_confirm())

    def _api_delete_child(self, child_id: str) -> None:
        child = self._child(child_id)
        if child.running:
            raise SupervisorError("running", f"{self.path}: child {child_id!r} is running")
        self._forget(child)

    def _api_which_children(self) -> list[ChildRow]:
        return [
            ChildRow(
                c.id,
                "supervisor" if c.is_supervisor else "worker",
                c.running,
                TaskPhase.RUNNING if c.running else c.phase,
                c.attempt,
                c.info.restart,
            )
            for c in self.children
        ]

    def _api_count_children(self) -> dict[str, int]:
        sups = sum(1 for c in self.children if c.is_supervisor)
        return {
            "specs": len(self.children),
            "active": sum(1 for c in self.children if c.running),
            "supervisors": sups,
            "workers": len(self.children) - sups,
        }

    def _api_child(self, child_id: str) -> _Port:
        return self._child(child_id).port

    def _api_status(self) -> str:
        return self.status

    def _publish(self, event: Event) -> None:
        self.runtime.bus.publish(event)


def _alone(child: _Child, decision: RestartChildren) -> bool:
    """Whether ``decision`` restarts ``child`` and stops or drops nothing else."""
    return decision.restart == (child.id,) and not decision.terminate and not decision.drop


def _runs_again(record: TaskRecord, spec: TaskSpec) -> bool:
    """Whether a child found in the store runs when its tree starts again.

    PERMANENT children always do; TEMPORARY ones never do once they ran;
    TRANSIENT ones do unless they succeeded (a run lost with its process
    counts as failed, and a run cancelled by a shutdown did not finish).
    """
    if record.state is TaskState.PENDING or spec.restart is Restart.PERMANENT:
        return True
    return spec.restart is Restart.TRANSIENT and record.state is not TaskState.SUCCEEDED


def _from_template(
    template: ChildSpec, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> ChildSpec:
    if isinstance(template, TaskSpec):
        return template.evolve(
            name=name, args=(*template.args, *args), kwargs={**template.kwargs, **kwargs}
        )
    return attrs.evolve(template, name=name)


@attrs.frozen
class _SupervisorSnapshot:
    path: str
    attempt: int
    phase: TaskPhase


class _SupervisorPort:
    """A parent's handle on a child supervisor: the same protocol as a ``TaskRef``."""

    def __init__(self, ref: pykka.ActorRef[SupervisorActor]) -> None:
        self.ref = ref

    @classmethod
    def start(
        cls, spec: AnySupervisorSpec, path: str, runtime: _Runtime, report: Report
    ) -> _SupervisorPort:
        return cls(SupervisorActor.start(spec, path, runtime, report))

    def begin_and_confirm(self) -> Request:
        request = Request(None)
        inner = Request(None)
        self.ref.tell(_Init(inner))
        try:
            inner.wait(None)
        except ChildStartError as exc:
            request.reply(str(exc))
            return request
        request.reply(None)
        return request

    def verdict(self, verdict: Verdict) -> None:
        _quiet(self.ref.tell, _ParentVerdict(verdict))

    def restart(self) -> None:
        _quiet(self.ref.tell, _Resume())

    def restart_and_confirm(self) -> Request:
        request = Request(None)
        try:
            self.ref.tell(_Resume(request))
        except pykka.ActorDeadError:
            request.reply("the supervisor has stopped")
        return request

    def terminate(self, *, brutal: bool = False, final: bool = True) -> Request:
        request = Request(None)
        try:
            self.ref.tell(_Terminate(request, brutal, final))
        except pykka.ActorDeadError:
            request.reply(None)
        return request

    def stop(self, timeout: float | None = 10.0) -> None:
        self.ref.stop(block=True, timeout=timeout)

    def stop_soon(self) -> None:
        self.ref.stop(block=False)

    def call(self, name: str, *args: Any, timeout: float | None = 60.0) -> Any:
        try:
            return self.ref.ask(_Api(name, args), timeout=timeout)
        except pykka.ActorDeadError:
            raise SupervisorError("stopped", "the supervisor has stopped") from None

    def which_children(self) -> list[ChildRow]:
        """Return one row per child of this supervisor, in start order."""
        rows: list[ChildRow] = self.call("which_children")
        return rows

    def child(self, child_id: str) -> Any:
        """Return the reference of one of this supervisor's children."""
        return self.call("child", child_id)


# ------------------------------------------------------------------------------ public API


class SupervisorRef:
    """A running supervision tree (its root supervisor).

    Use it as a context manager, or call ``stop()``: a stopped tree leaves
    no thread, no child process and no undelivered event behind.
    """

    def __init__(self, port: _SupervisorPort, runtime: _Runtime, path: str) -> None:
        self._port = port
        self._runtime = runtime
        self.path = path
        self._ended = threading.Event()
        self._end: ChildSupervisorEnded | None = None
        self._stopped = False
        self._stop_lock = threading.Lock()

    @property
    def bus(self) -> EventBus:
        """The tree's event bus (subscribe more hooks here)."""
        return self._runtime.bus

    def _root_ended(self, ended: ChildSupervisorEnded) -> None:
        self._end = ended
        # The root has no parent to restart it: its children end for good.
        self._port.verdict(Verdict(ended.notice.attempt))
        self._ended.set()

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the root supervisor exits on its own.

        Returns when it shut down normally (``auto_shutdown``).

        Raises:
            SupervisorExhausted: when it gave up; carries the chain of failures.
            WaitTimeout: when it is still running after ``timeout`` seconds.
        """
        if not self._ended.wait(timeout):
            raise WaitTimeout(f"supervisor {self.path!r} still running after {timeout}s")
        assert self._end is not None
        if self._end.notice.phase is TaskPhase.EXHAUSTED:
            raise SupervisorExhausted(self._end.chain, self._end.notice.error)

    @property
    def running(self) -> bool:
        """Whether the root supervisor is still supervising."""
        return not self._ended.is_set() and not self._stopped

    def _call(self, name: str, *args: Any) -> Any:
        return self._port.call(name, *args)

    def start_child(
        self,
        spec: ChildSpec | None = None,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        id: str | None = None,
    ) -> str:
        """Add a child and start it; return its id.

        A dynamic supervisor builds the child from its template, with
        ``args`` appended and ``kwargs`` merged, named ``id`` or
        ``template-N``.

        Raises:
            SupervisorError: ``already_present``/``running`` for a taken id,
                ``max_children`` when full, ``start_failed`` when it could not start.
        """
        result: str = self._call("start_child", spec, tuple(args), dict(kwargs or {}), id)
        return result

    def terminate_child(self, child_id: str) -> None:
        """Stop a child for good (its spec is kept, except temporary and dynamic ones).

        Raises:
            SupervisorError: ``not_found``.
        """
        self._call("terminate_child", child_id)

    def restart_child(self, child_id: str) -> None:
        """Start a terminated child again.

        Raises:
            SupervisorError: ``not_found`` or ``running``.
        """
        self._call("restart_child", child_id)

    def delete_child(self, child_id: str) -> None:
        """Forget a terminated child's spec.

        Raises:
            SupervisorError: ``not_found`` or ``running``.
        """
        self._call("delete_child", child_id)

    def which_children(self) -> list[ChildRow]:
        """Return one row per child, in start order."""
        rows: list[ChildRow] = self._call("which_children")
        return rows

    def count_children(self) -> dict[str, int]:
        """Return counts: ``specs``, ``active``, ``supervisors``, ``workers``."""
        counts: dict[str, int] = self._call("count_children")
        return counts

    def child(self, path: str) -> Any:
        """Return a child's reference by its path below this tree (``"db/cache"``).

        A task's reference is a ``TaskRef`` (``ask``, ``deliver``, ``snapshot``);
        a child supervisor's answers ``which_children`` and ``child`` too.

        Raises:
            SupervisorError: ``not_found`` naming the missing part of the path.
        """
        port: Any = self._port
        for part in path.split("/"):
            if not isinstance(port, _SupervisorPort):
                raise SupervisorError("not_found", f"{path!r}: {part!r} is below a task")
            port = port.call("child", part)
        return port

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop the tree: children in reverse start order, then every actor and thread.

        Returns when every child has ended and every event was delivered.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        request = self._port.terminate(final=True)
        try:
            request.wait(timeout)
        except TaskvisorError:
            logger.exception("stopping %s", self.path)
        with self._runtime.lock:
            ports = list(reversed(self._runtime.ports))
        for port in ports:  # every actor stops at once; closing their threads waits for all
            port.stop_soon()
        self._port.stop_soon()
        runtime = self._runtime
        close_shared(runtime.threads, runtime.real_clock, runtime.executors, runtime.bus, timeout)

    def __enter__(self) -> SupervisorRef:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Supervisor:
    """Start supervision trees."""

    @staticmethod
    def start(
        spec: AnySupervisorSpec,
        *,
        store: Any = None,
        hooks: Iterable[Subscriber] = (),
        clock: Clock | None = None,
        executors: Mapping[str, TaskExecutor] | None = None,
    ) -> SupervisorRef:
        """Start the tree described by ``spec``: every child, in order, depth first.

        Args:
            spec: the root supervisor's spec.
            store: a ``TaskStore``; children resume from their stored records.
            hooks: subscribers to the tree's event bus.
            clock: the clock for restart windows, backoff and timeouts.
            executors: executors by task kind (defaults: call, async, subprocess).

        Raises:
            ChildStartError: when a child could not start; the children
                already started are stopped first, and nothing is left running.
        """
        real_clock = SystemClock(keep_thread=True)
        runtime = _Runtime(
            bus=EventBus(hooks),
            executors=dict(executors) if executors is not None else default_executors(),
            store=store,
            clock=clock or real_clock,
            real_clock=real_clock,
        )
        holder: list[SupervisorRef] = []

        def root_ended(ended: ChildSupervisorEnded) -> None:
            holder[0]._root_ended(ended)

        port = _SupervisorPort.start(spec, spec.name, runtime, root_ended)
        ref = SupervisorRef(port, runtime, spec.name)
        holder.append(ref)
        inner = Request(None)
        port.ref.tell(_Init(inner))
        try:
            inner.wait(None)
        except ChildStartError:
            ref.stop()
            raise
        return ref
