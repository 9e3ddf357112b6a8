"""The supervisor actor: a thin shell around one ``Node`` state machine.

Each supervisor of a tree is a pykka actor that owns a ``Node`` (see
``_node.py``). It turns messages (a child began or ended, a terminate is
done, a timer fired, an API call, a stop) into node inputs, and the node's
commands into messages (start, terminate or settle a child, start a timer,
report to the parent, reply to a caller, publish an event). No handler
ever waits: a terminate is answered by a message, a start by the child's
``attempt_began`` notice.

The root's owner is a ``SupervisorRef``. Its ``stop(timeout)`` is one
deadline for the whole tree: children stop in reverse start order within
their graces; what is still running close to the deadline is killed (a
``call`` that cannot be killed is abandoned and reported), and every
thread and process is gone when it returns.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import pykka
import pykka.messages

from taskvisor.actors import (
    AttemptBegan,
    AttemptEnded,
    BaseActor,
    CallbackFailed,
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
from taskvisor.actors._actor import _ClosingInbox
from taskvisor.actors._args import clock_of, executors_of, hooks_of, store_of
from taskvisor.actors._base import (
    ActorThreads,
    Latch,
    deadline_in,
    deadline_of,
    time_left,
    wait_timeout,
)
from taskvisor.actors._errors import described, shown
from taskvisor.actors._model import NAME_MAX, bound_text
from taskvisor.actors._publish import logging_wanted
from taskvisor.actors._service import close_shared

from ._errors import ChildStartError, Failure, SupervisorExhausted
from ._node import (
    CHILD_RUNNING,
    CHILD_STARTING,
    RESTARTING,
    TERMINATING,
    Boot,
    Call,
    ChildEnded,
    ChildStarted,
    ChildTerminated,
    Command,
    Decided,
    Escalated,
    ForgetChild,
    Input,
    Node,
    NodeError,
    PersistHistory,
    Publish,
    Reply,
    ReportEnded,
    ReportStarted,
    ReportStopped,
    RestartHistory,
    RestartScheduled,
    Settle,
    SettleChild,
    StartChild,
    StartTimer,
    StopNode,
    SupervisorGaveUp,
    SupervisorStopped,
    TerminateChild,
    TimerFired,
)
from ._policy import GiveUp, RestartChildren, Shutdown, SupervisorState
from ._spec import ChildSpec, DynamicSupervisorSpec, SupervisorSpec

__all__ = [
    "ChildRow",
    "Escalated",
    "RestartScheduled",
    "Supervisor",
    "SupervisorError",
    "SupervisorGaveUp",
    "SupervisorHandle",
    "SupervisorRef",
    "SupervisorStopped",
]

logger = logging.getLogger("taskvisor.supervision")

AnySupervisorSpec = SupervisorSpec | DynamicSupervisorSpec
_H = TypeVar("_H", "TaskRef", "SupervisorHandle")

#: Where a supervisor's restart history is kept in the store (before its path).
_HISTORY_KEY = "restart-history:"

#: How long an API call waits for the supervisor's answer by default (seconds).
CALL_TIMEOUT = 60.0


class SupervisorError(TaskvisorError, RuntimeError):
    """Raised when an API call cannot be done (OTP's ``{error, Reason}``).

    ``reason`` is one of ``not_found``, ``running``, ``restarting``,
    ``already_present``, ``max_children``, ``bad_spec``, ``stopped``,
    ``start_failed``, ``crashed``, ``not_main_thread``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.reason, str(self))


@attrs.frozen
class ChildRow:
    """One row of ``which_children``: OTP's ``{Id, Child, Type, Modules}`` and more.

    Attributes:
        id: the child's id.
        kind: ``"worker"`` or ``"supervisor"``.
        running: whether an attempt runs (or is being started or stopped).
        phase: ``RUNNING`` while an attempt starts or runs, else how the
            latest attempt ended.
        attempt: how many attempts it has begun; unchanged while it waits
            out a restart delay.
        restart: its restart type.
        status: ``running``, ``starting`` (an attempt, a restart's
            included, is being started and has not yet begun: one that
            cannot begin never shows as running; see ``which_children``),
            ``terminating``, ``restarting`` (waiting out a restart delay,
            OTP's ``restarting``), ``pending`` (defined, not running) or
            ``ended`` (not restarted).
        restarts: how many restarts of it were decided.
        error: the error of the latest attempt that ended with one (while a
            later attempt runs, the one before it), or None.
        since: when it entered ``status``, on the tree's clock (seconds).
        pid: the process id of a running ``subprocess`` child.
    """

    id: str
    kind: str
    running: bool
    phase: TaskPhase
    attempt: int
    restart: Restart
    status: str = "running"
    restarts: int = 0
    error: str | None = None
    since: float = 0.0
    pid: int | None = None


# ------------------------------------------------------------------------------ runtime


@attrs.define
class _Runtime:
    """What every actor of one tree shares."""

    bus: EventBus
    executors: dict[str, TaskExecutor]
    store: Any
    clock: Clock
    ports: dict[int, Any] = attrs.Factory(dict)  # every live actor, for the final stop
    lock: threading.Lock = attrs.Factory(threading.Lock)
    threads: ActorThreads = attrs.Factory(ActorThreads)
    real_clock: SystemClock = attrs.Factory(lambda: SystemClock(keep_thread=True))
    unsaved: set[str] = attrs.Factory(set)  # tasks whose latest record could not be saved

    def track(self, port: Any) -> None:
        with self.lock:
            self.ports[id(port)] = port

    def untrack(self, port: Any) -> None:
        with self.lock:
            self.ports.pop(id(port), None)

    def all_ports(self) -> list[Any]:
        with self.lock:
            return list(self.ports.values())


def _quiet(tell: Callable[[Any], None], message: Any) -> None:
    try:
        tell(message)
    except pykka.ActorDeadError:
        logger.debug("supervisor gone; dropped %r", message)


# ------------------------------------------------------------------------------ messages


#: The node inputs other actors, timers and ports tell a supervisor as they are.
_TOLD_INPUTS = frozenset({Boot, ChildStarted, ChildEnded, ChildTerminated, TimerFired, Settle})


@attrs.frozen
class _Confirmed:
    """A task restarted in place said its attempt ``attempt`` began (``which_children``)."""

    child: str
    attempt: int
    pid: int | None


@attrs.frozen
class _Stop:
    seq: int
    request: StopNode


@attrs.frozen
class _Api:
    name: str
    args: tuple[Any, ...]
    reply: Request


@attrs.frozen
class _Query:
    name: str
    args: tuple[Any, ...] = ()


class _Notify:
    """A ``Replier`` that turns a task actor's answer into a message to the supervisor."""

    __slots__ = ("_message", "_tell")

    def __init__(self, tell: Callable[[Any], None], message: Any) -> None:
        self._tell = tell
        self._message = message

    def reply(self, _value: Any) -> None:
        _quiet(self._tell, self._message)

    def fail(self, _error: BaseException) -> None:
        _quiet(self._tell, self._message)


class _ChildOwner:
    """A task child's owner: forwards its notices to the supervisor's inbox."""

    __slots__ = ("_child_id", "_tell")

    def __init__(self, tell: Callable[[Any], None], child_id: str) -> None:
        self._tell = tell
        self._child_id = child_id

    def attempt_began(self, notice: AttemptBegan) -> None:
        _quiet(self._tell, ChildStarted(self._child_id, notice.attempt, notice.pid))

    def attempt_ended(self, notice: AttemptEnded) -> Verdict | None:
        ended = ChildEnded(
            self._child_id, notice.attempt, notice.phase, notice.error, notice.started
        )
        _quiet(self._tell, ended)
        return None

    def task_done(self, snapshot: TaskSnapshot) -> None:
        pass


#: How a supervisor reports to its owner: (a Report* command, the seq of the stop it answers).
Report = Callable[[Command, int], None]


# ------------------------------------------------------------------------------ the actor


class SupervisorActor(BaseActor):
    """One supervisor of a tree. Use ``Supervisor.start`` rather than this class."""

    def __init__(self, spec: AnySupervisorSpec, path: str, runtime: _Runtime, report: Report):
        super().__init__(threads=runtime.threads)
        self.spec = spec
        self.path = path
        self.runtime = runtime
        self.report = report
        self.clock = runtime.clock
        self.node = Node(spec, path)
        self.ports: dict[str, Any] = {}
        self.records: dict[str, TaskRecord] = {}
        self.calls: dict[int, Request] = {}
        self.call_ids = itertools.count(1)
        self.stop_seq = 0
        self.booted = False
        self.forgotten: dict[str, _SupervisorPort] = {}
        self.actor_inbox.bounce = self._bounce

    actor_inbox: _ClosingInbox

    @staticmethod
    def _create_actor_inbox() -> Any:
        return _ClosingInbox()

    def _actor_loop_teardown(self) -> None:
        for envelope in self.actor_inbox.close():
            self._bounce(envelope)

    def _bounce(self, envelope: Any) -> None:
        """Answer whoever waits on a message that came after the actor stopped."""
        message = envelope.message
        if isinstance(message, _Api):
            message.reply.fail(SupervisorError("stopped", f"supervisor {self.path!r} has stopped"))
        elif isinstance(message, _Stop) and self.stop_seq >= -1:
            self.stop_seq = message.seq
            self.report(ReportStopped(self.node.attempt), message.seq)
        if envelope.reply_to is not None:
            if isinstance(message, pykka.messages._ActorStop):
                envelope.reply_to.set(None)
            else:
                error = pykka.ActorDeadError(f"supervisor {self.path!r} has stopped")
                envelope.reply_to.set_exception(exc_info=(pykka.ActorDeadError, error, None))

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is _Query:
            return self._query(message)  # its errors go back to the asker
        try:
            if kind in _TOLD_INPUTS:
                self._step(message)
            elif kind is _Confirmed:
                self._confirmed(message)
            elif kind is _Stop:
                self.stop_seq = message.seq
                self._step(message.request)
            elif kind is _Api:
                call_id = next(self.call_ids)
                self.calls[call_id] = message.reply
                self._step(Call(call_id, message.name, message.args))
        except BaseException as exc:  # a bug here is this supervisor's failure, not the tree's
            self._crash(exc)
        return None

    # ------------------------------------------------------------------- inputs

    def _confirmed(self, message: _Confirmed) -> None:
        """A task restarted in place told ``which_children`` that its attempt began."""
        child = self.node.children.get(message.child)
        if child is None or child.status != CHILD_STARTING or child.attempt != message.attempt:
            return  # it moved on since (ended, restarted again, or forgotten)
        self._step(ChildStarted(message.child, message.attempt, message.pid))

    def _step(self, event: Input) -> None:
        if type(event) is Boot and not self.booted:
            self.booted = True
            event = Boot(self._restored(), self._stored_history())
        elif type(event) is ChildTerminated and event.child in self.forgotten:
            port = self.forgotten.pop(event.child)
            port.stop_soon()
            self.runtime.untrack(port)
            return
        self._execute(self.node.step(event, self.clock.now()))

    def _persist_history(self, state: SupervisorState) -> None:
        """Save the restart budget in the store, under ``restart-history:<path>``.

        Times are kept as wall-clock milliseconds, so that another process
        can read them against its own clock. A store without
        ``put_state`` keeps none; a failed save is logged and the tree goes
        on (a resumed tree would then start with a fuller budget).
        """
        put_state = getattr(self.runtime.store, "put_state", None)
        if put_state is None:
            return
        history = RestartHistory.of(state)
        wall, mono = now_ms(), self.clock.now()
        data = {
            "restarts": [round(wall - (mono - t) * 1000) for t in history.restarts],
            "failures": dict(history.failures),
        }
        try:
            put_state(_HISTORY_KEY + self.path, data)
        except Exception:
            logger.exception("%s: cannot save its restart history", self.path)

    def _stored_history(self) -> RestartHistory | None:
        """The restart history a previous run of this tree saved, if any."""
        get_state = getattr(self.runtime.store, "get_state", None)
        if get_state is None:
            return None
        data = get_state(_HISTORY_KEY + self.path)
        if data is None:
            return None
        try:
            wall, mono = now_ms(), self.clock.now()
            restarts = tuple(mono - (wall - int(ms)) / 1000 for ms in data["restarts"])
            failures = {str(k): int(v) for k, v in data["failures"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("%s: ignoring an unreadable restart history", self.path)
            return None
        return RestartHistory(restarts, failures)

    def _restored(self) -> dict[str, tuple[TaskPhase, int]]:
        """Children found ended in the store, not to run again (a tree's first start)."""
        store = self.runtime.store
        if store is None or not isinstance(self.spec, SupervisorSpec):
            return {}
        restored: dict[str, tuple[TaskPhase, int]] = {}
        for spec in self.spec.children:
            if not isinstance(spec, TaskSpec):
                continue
            record: TaskRecord | None = store.get(f"{self.path}/{spec.name}")
            if record is None:
                continue
            if record.state is TaskState.RUNNING:
                resume_record(record, spec)
                store.put(record)
            self.records[spec.name] = record
            if not _runs_again(record, spec):
                restored[spec.name] = (TaskPhase(record.state.value), record.attempts)
                self._create(spec, restored=True)
        return restored

    # ------------------------------------------------------------------- commands

    def _execute(self, commands: Iterable[Command]) -> None:
        for command in commands:
            _COMMANDS[type(command)](self, command)

    def _publish(self, event: Event) -> None:
        bus = self.runtime.bus
        if bus.wanted:
            bus.publish(attrs.evolve(event, at=now_ms()))

    def _tell(self, message: Any) -> None:
        _quiet(self.actor_ref.tell, message)

    def _create(self, spec: ChildSpec, *, restored: bool = False) -> Any:
        """Create the actor of a child (not started)."""
        path = f"{self.path}/{spec.name}"
        tell = self.actor_ref.tell
        port: Any
        if isinstance(spec, TaskSpec):
            executor = self.runtime.executors.get(spec.kind)
            if executor is None:
                raise ChildStartError(path, f"no executor for task kind {spec.kind!r}")
            record = self.records.pop(spec.name, None)
            if record is None and self.runtime.store is not None:
                record = self.runtime.store.get(path)
            task = Task.new(path, spec)
            self.runtime.bus.publish(TaskAccepted(path, spec.name, at=task.metadata.created_at))
            port = TaskRef.start(
                task,
                executor,
                _ChildOwner(tell, spec.name),
                bus=self.runtime.bus,
                store=self.runtime.store,
                clock=self.clock,
                record=record,
                restored=restored,
                begin=False,
                threads=self.runtime.threads,
                real_clock=self.runtime.real_clock,
                unsaved=self.runtime.unsaved,
            )
        else:
            port = _SupervisorPort.start(spec, path, self.runtime, _child_report(tell, spec.name))
            port.parent = self.actor_ref
            port.name = spec.name
        self.runtime.track(port)
        self.ports[spec.name] = port
        return port

    def _start_child(self, command: StartChild) -> None:
        port = self.ports.get(command.child)
        if port is None:
            try:
                port = self._create(command.spec)
            except ChildStartError as exc:
                self._tell(ChildEnded(command.child, 1, TaskPhase.FAILED, exc.error, False))
                return
            if isinstance(port, TaskRef):
                port.begin()
            else:
                port.boot()
        elif isinstance(port, TaskRef):
            port.restart()
        else:
            port.boot()

    def _terminate_child(self, command: TerminateChild) -> None:
        port = self.ports.get(command.child)
        done = ChildTerminated(command.child, command.seq)
        if port is None:
            self._tell(done)
        elif isinstance(port, TaskRef):
            port.terminate(
                brutal=command.brutal, final=command.final, reply=_Notify(self._tell, done)
            )
        else:
            port.stop_node(command.seq, brutal=command.brutal, final=command.final)

    def _settle_child(self, command: SettleChild) -> None:
        port = self.ports.get(command.child)
        if isinstance(port, TaskRef):
            event = command.event
            if event is not None:
                event = attrs.evolve(event, at=now_ms()) if self.runtime.bus.wanted else None
            verdict = Verdict(
                command.attempt,
                phase=command.phase,
                restart_after=0.0 if command.then == "restart" else None,
                hold=command.then == "hold",
                event=event,
            )
            port.verdict(verdict)
            return
        if command.event is not None:
            self._publish(command.event)
        if port is None:
            return
        if command.then == "restart":
            port.boot()
        elif command.then == "final":
            port.settle(final=True)

    def _forget_child(self, child_id: str) -> None:
        port = self.ports.pop(child_id, None)
        if port is None:
            return
        if isinstance(port, TaskRef):
            port.terminate(final=True)
            port.stop_soon()
            self.runtime.untrack(port)
        else:
            self.forgotten[child_id] = port
            port.stop_node(-1, brutal=False, final=True)

    def _start_timer(self, command: StartTimer) -> None:
        message = TimerFired(command.token)
        tell = self.actor_ref.tell
        self.clock.call_later(command.delay, lambda: _quiet(tell, message))

    def _reply(self, command: Reply) -> None:
        request = self.calls.pop(command.call, None)
        if request is None:
            return
        error = command.error
        if error is None:
            request.reply(command.value)
        elif isinstance(error, NodeError):
            request.fail(SupervisorError(error.reason, str(error)))
        else:
            request.fail(error)

    def _log_decision(self, command: Decided) -> None:
        decision, exit_ = command.decision, command.exit
        if isinstance(decision, RestartChildren):
            if logging_wanted(logger, logging.INFO):
                child = self.node.children.get(exit_.child)
                restarts = child.restarts if child is not None else 1  # already counted
                logger.info(
                    "%s: restarting %s (restart %d of %r)%s",
                    self.path,
                    ", ".join(decision.restart) or "nothing",
                    restarts,
                    exit_.child,
                    f" after {decision.delay:.3f}s" if decision.delay else "",
                )
        elif isinstance(decision, Shutdown):
            if logging_wanted(logger, logging.INFO):
                logger.info(
                    "%s: significant child %r ended %s: shutting down (auto_shutdown=%s)",
                    self.path,
                    exit_.child,
                    exit_.phase.value,
                    self.node.spec.auto_shutdown.value,
                )
        elif isinstance(decision, GiveUp):
            logger.error(
                "%s: giving up: %s; last failure: %r ended %s: %s",
                self.path,
                decision.reason,
                exit_.child,
                exit_.phase.value,
                exit_.error,
            )

    # ------------------------------------------------------------------- failures

    def _crash(self, exc: BaseException) -> None:
        """An unexpected error: this supervisor exits abnormally and its parent decides.

        Its children are told to stop (held), every caller waiting on it
        gets an error, and a fresh node replaces the broken one: the parent
        restarts it afresh from its spec, or ends it.
        """
        logger.error("%s: internal error", self.path, exc_info=exc)
        text = f"internal error in supervisor {self.path!r}: {type(exc).__name__}: {exc}"
        text = bound_text(text) or text
        old = self.node
        for request in self.calls.values():
            request.fail(SupervisorError("crashed", text))
        self.calls.clear()
        try:
            for child_id, port in reversed(list(self.ports.items())):
                child = old.children.get(child_id)
                if child is not None and child.dynamic:
                    self._forget_child(child_id)
                elif isinstance(port, TaskRef):
                    port.terminate(final=False)
                else:
                    port.stop_node(-2, brutal=False, final=False)
        except BaseException:
            logger.exception("%s: could not stop the children after an internal error", self.path)
        self.node = old.fresh()
        self.booted = True
        if old.status in ("stopping",) or self.stop_seq < 0:
            self.report(ReportStopped(old.attempt), self.stop_seq)
            return
        failure = Failure(self.path, "(supervisor)", TaskPhase.FAILED, text)
        started = old.status not in ("idle", "starting")
        ended = ReportEnded(old.attempt, TaskPhase.FAILED, text, (failure,), started)
        try:
            self.report(ended, self.stop_seq)
        except BaseException:
            logger.exception("%s: could not report its internal error", self.path)

    # ------------------------------------------------------------------- queries

    def _query(self, message: _Query) -> Any:
        name = message.name
        node = self.node
        if name == "which_children":
            rows = [_row(c) for c in node.children.values()]
            # A task restarted in place does not report that its attempt began
            # (that would wake this thread at each restart): the asker asks it.
            starting = {
                c.id: port
                for c in node.children.values()
                if c.status == CHILD_STARTING and isinstance(port := self.ports.get(c.id), TaskRef)
            }
            return rows, starting
        if name == "count_children":
            children = list(node.children.values())
            sups = sum(1 for c in children if c.is_supervisor)
            return {
                "specs": len(children),
                "active": sum(1 for c in children if c.status in _RUNNING_STATES),
                "supervisors": sups,
                "workers": len(children) - sups,
            }
        if name == "child":
            (child_id,) = message.args
            port = self.ports.get(child_id) if child_id in node.children else None
            if port is None:
                raise SupervisorError("not_found", f"{self.path}: no child {child_id!r}")
            return port
        raise SupervisorError("not_found", f"{self.path}: no query {name!r}")


_RUNNING_STATES = frozenset({CHILD_RUNNING, CHILD_STARTING, TERMINATING})


def _report_command(actor: SupervisorActor, command: Any) -> None:
    actor.report(command, actor.stop_seq)


#: How a supervisor carries out each command of its node.
_COMMANDS: dict[type, Callable[[SupervisorActor, Any], None]] = {
    StartChild: SupervisorActor._start_child,
    TerminateChild: SupervisorActor._terminate_child,
    SettleChild: SupervisorActor._settle_child,
    Publish: lambda actor, command: actor._publish(command.event),
    Reply: SupervisorActor._reply,
    StartTimer: SupervisorActor._start_timer,
    ForgetChild: lambda actor, command: actor._forget_child(command.child),
    Decided: SupervisorActor._log_decision,
    PersistHistory: lambda actor, command: actor._persist_history(command.state),
    ReportStarted: _report_command,
    ReportEnded: _report_command,
    ReportStopped: _report_command,
}


#: How long ``which_children`` waits, at most, for tasks to say whether their
#: attempt began; one that has not answered by then is still starting it.
CONFIRM_WAIT = 0.5


def _confirm_started(
    rows: list[ChildRow],
    starting: dict[str, TaskRef],
    deadline: float,
    supervisor: pykka.ActorRef[SupervisorActor],
) -> list[ChildRow]:
    """Rows of ``starting`` tasks whose attempt has begun, turned to ``running``.

    The supervisor is told what its tasks said (it takes it as their
    ``ChildStarted`` if that attempt is still starting), so that it asks no
    more until their next restart.
    """
    asked = {cid: port.attempt_state() for cid, port in starting.items()}
    attempts = {row.id: row.attempt for row in rows}
    until = min(deadline, time.monotonic() + CONFIRM_WAIT)
    begun: dict[str, int | None] = {}  # the pid of each task whose attempt began
    for cid, future in asked.items():
        try:
            attempt, began, pid = future.get(timeout=max(0.0, until - time.monotonic()))
        except (pykka.Timeout, pykka.ActorDeadError):
            continue  # still starting (or gone): its row says so
        if began and attempt == attempts.get(cid):
            begun[cid] = pid
            _quiet(supervisor.tell, _Confirmed(cid, attempt, pid))
    return [
        attrs.evolve(row, status="running", pid=begun[row.id]) if row.id in begun else row
        for row in rows
    ]


def _row(child: Any) -> ChildRow:
    status, phase = child.status, child.phase
    if status == CHILD_RUNNING and child.unbegun == child.attempt:
        # Its attempt could not begin (a failed start); decided once its group has started.
        status, phase = RESTARTING, TaskPhase.FAILED
    running = status in _RUNNING_STATES
    return ChildRow(
        child.id,
        "supervisor" if child.is_supervisor else "worker",
        running,
        TaskPhase.RUNNING if status in (CHILD_RUNNING, CHILD_STARTING) else phase,
        child.attempt,
        child.info.restart,
        status,
        child.restarts,
        child.error,
        child.since,
        child.pid if status == CHILD_RUNNING else None,
    )


def _child_report(tell: Callable[[Any], None], name: str) -> Report:
    """How a child supervisor named ``name`` reports to its parent (``tell``)."""

    def report(command: Command, seq: int) -> None:
        message: Input
        if isinstance(command, ReportStarted):
            message = ChildStarted(name, command.attempt)
        elif isinstance(command, ReportEnded):
            message = ChildEnded(
                name,
                command.attempt,
                command.phase,
                command.reason,
                command.started,
                command.chain,
            )
        else:
            message = ChildTerminated(name, seq)
        _quiet(tell, message)

    return report


def _runs_again(record: TaskRecord, spec: TaskSpec) -> bool:
    """Whether a child found in the store runs when its tree starts again.

    PERMANENT children always do; TEMPORARY ones never do once they ran;
    TRANSIENT ones do unless they succeeded (a run lost with its process
    counts as failed, and a run cancelled by a shutdown did not finish).
    """
    if record.state is TaskState.PENDING or spec.restart is Restart.PERMANENT:
        return True
    return spec.restart is Restart.TRANSIENT and record.state is not TaskState.SUCCEEDED


# ------------------------------------------------------------------------------ handles


#: What a task's handle offers and a supervisor's does not.
_TASK_CALLS = frozenset({"ask", "deliver", "snapshot", "mailbox"})


class SupervisorHandle:
    """What every supervisor of a running tree offers: OTP's supervisor API.

    The root's handle is a ``SupervisorRef``; ``tree.child("pool")`` gives
    a nested supervisor's. Each call is answered by the supervisor's actor
    and waits at most ``timeout`` seconds (``CALL_TIMEOUT``, 60, by default).
    """

    path: str

    if not TYPE_CHECKING:  # at run time only: type checkers still flag a missing name

        def __getattr__(self, name: str) -> Any:
            # Only for names the class lacks: say what a supervisor is, not its private class.
            if name in _TASK_CALLS:
                raise AttributeError(
                    f"{name}: {self.path!r} is a supervisor, which takes no messages; "
                    f"use one of its tasks: .task(NAME).{name}(...)"
                )
            raise AttributeError(f"a supervisor's handle ({self.path!r}) has no attribute {name!r}")

    def _actor(self) -> pykka.ActorRef[SupervisorActor]:
        raise NotImplementedError

    def _call(self, name: str, *args: Any, timeout: float | None = CALL_TIMEOUT) -> Any:
        timeout = wait_timeout(timeout)
        request = Request(name)
        try:
            self._actor().tell(_Api(name, args, request))
        except pykka.ActorDeadError:
            raise SupervisorError("stopped", f"supervisor {self.path!r} has stopped") from None
        try:
            return request.wait(timeout)
        except WaitTimeout:
            raise WaitTimeout(
                f"supervisor {self.path!r} did not answer {name} within {timeout}s"
            ) from None

    def _ask(self, name: str, *args: Any, timeout: float | None = CALL_TIMEOUT) -> Any:
        timeout = wait_timeout(timeout)
        try:
            return self._actor().ask(_Query(name, args), timeout=timeout)
        except pykka.ActorDeadError:
            raise SupervisorError("stopped", f"supervisor {self.path!r} has stopped") from None
        except pykka.Timeout:
            raise WaitTimeout(
                f"supervisor {self.path!r} did not answer {name} within {timeout}s"
            ) from None

    def start_child(
        self,
        spec: ChildSpec | None = None,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        id: str | None = None,
        timeout: float | None = CALL_TIMEOUT,
    ) -> str:
        """Add a child and start it; return its id once it runs.

        A static supervisor takes a child ``spec``. A dynamic supervisor
        builds the child from its template, with ``args`` appended and
        ``kwargs`` merged, named ``id`` or ``template-N``; giving it a spec
        is an error. The spec is checked first (as OTP's
        ``check_childspecs``), then the id, then ``max_children``. A refused
        call publishes nothing and leaves nothing running.

        Raises:
            InvalidSpec: when the spec is invalid (a ``/`` in its name, a
                significant child under ``auto_shutdown="never"``).
            SupervisorError: ``bad_spec``, ``already_present``/``running``
                for a taken id, ``max_children`` when full, ``start_failed``
                when it could not start, ``stopped``.
            WaitTimeout: when the supervisor does not answer in time.
            TypeError: when ``args``, ``kwargs`` or ``id`` is of the wrong kind.
        """
        if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
            raise TypeError(f"args: expected a list of arguments, got {shown(args)}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs: expected a mapping of arguments, got {shown(kwargs)}")
        if id is not None and not isinstance(id, str):
            raise TypeError(f"id: expected a child's name (a str), got {shown(id)}")
        result: str = self._call(
            "start_child", spec, tuple(args), dict(kwargs or {}), id, timeout=timeout
        )
        return result

    def terminate_child(self, child_id: str, *, timeout: float | None = CALL_TIMEOUT) -> None:
        """Stop a child for good (its spec is kept, except temporary and dynamic ones).

        Raises:
            SupervisorError: ``not_found``, ``stopped``.
            WaitTimeout: when the supervisor does not answer in time.
        """
        self._call("terminate_child", self._child_id(child_id), timeout=timeout)

    def restart_child(self, child_id: str, *, timeout: float | None = CALL_TIMEOUT) -> None:
        """Start a terminated child again.

        Raises:
            SupervisorError: ``not_found``, ``running``, ``restarting``, ``start_failed``.
            WaitTimeout: when the supervisor does not answer in time.
        """
        self._call("restart_child", self._child_id(child_id), timeout=timeout)

    def delete_child(self, child_id: str, *, timeout: float | None = CALL_TIMEOUT) -> None:
        """Forget a terminated child's spec.

        Raises:
            SupervisorError: ``not_found``, ``running`` or ``restarting``.
            WaitTimeout: when the supervisor does not answer in time.
        """
        self._call("delete_child", self._child_id(child_id), timeout=timeout)

    def which_children(self, *, timeout: float | None = CALL_TIMEOUT) -> list[ChildRow]:
        """Return one row per child, in start order.

        A task restarted in place does not tell its supervisor that its new
        attempt began (that would cost a thread wake-up per restart): while
        the supervisor counts it ``starting``, this asks the task, waiting
        ``CONFIRM_WAIT`` seconds (0.5) at most, shows it ``running`` if its
        attempt has begun, and passes the answer on to the supervisor, so
        that it is asked once per restart. A task busy starting its attempt
        for longer stays ``starting``. Rows show what the supervisor knows:
        an attempt that has just ended shows until its end has reached it.

        Raises:
            SupervisorError: ``stopped``.
            WaitTimeout: when the supervisor does not answer in time.
        """
        deadline = deadline_in(timeout, CALL_TIMEOUT)
        answer: tuple[list[ChildRow], dict[str, TaskRef]] = self._ask(
            "which_children", timeout=timeout
        )
        rows, starting = answer
        if starting:
            rows = _confirm_started(rows, starting, deadline, self._actor())
        return rows

    def count_children(self, *, timeout: float | None = CALL_TIMEOUT) -> dict[str, int]:
        """Return counts: ``specs``, ``active``, ``supervisors``, ``workers``."""
        counts: dict[str, int] = self._ask("count_children", timeout=timeout)
        return counts

    def child(
        self, path: str, *, timeout: float | None = CALL_TIMEOUT
    ) -> TaskRef | SupervisorHandle:
        """Return a child's handle by its path below this supervisor (``"db/cache"``).

        The path is relative to this supervisor: on a tree named ``app``,
        ``tree.child("db/cache")`` (not ``"app/db/cache"``). A task's handle
        is a ``TaskRef`` (``ask``, ``deliver``, ``snapshot``); a nested
        supervisor's is a ``SupervisorHandle`` with this same API. ``task()``
        and ``supervisor()`` return the same handles typed by their kind.

        Raises:
            SupervisorError: ``not_found`` naming the missing part of the path
                (and the fix, when the path starts with this supervisor's own
                name).
            WaitTimeout: when a supervisor on the way does not answer within
                ``timeout`` seconds.
        """
        if not isinstance(path, str):
            raise TypeError(f"path: expected a child's path (a str), got {type(path).__name__}")
        handle: TaskRef | SupervisorHandle = self
        own = self.path.rpartition("/")[2]
        for depth, part in enumerate(path.split("/")):
            if not isinstance(handle, SupervisorHandle):
                raise SupervisorError("not_found", f"{shown(path)}: {shown(part)} is below a task")
            try:
                handle = handle._ask("child", handle._child_id(part, "path"), timeout=timeout)
            except SupervisorError as exc:
                message = str(exc)
                if depth == 0 and part == own and "/" in path:
                    rest = path.partition("/")[2]
                    message += (
                        f"; paths are relative to the supervisor {self.path!r}: "
                        f"use child({shown(rest)})"
                    )
                raise SupervisorError(exc.reason, message) from None
        return handle

    def task(self, path: str, *, timeout: float | None = CALL_TIMEOUT) -> TaskRef:
        """Return the handle of the task at ``path`` (see ``child()``).

        Raises:
            SupervisorError: ``not_found`` when there is no child at ``path``
                or it is a supervisor, not a task.
        """
        return self._child_of(TaskRef, path, timeout, "a supervisor, not a task")

    def supervisor(self, path: str, *, timeout: float | None = CALL_TIMEOUT) -> SupervisorHandle:
        """Return the handle of the nested supervisor at ``path`` (see ``child()``).

        Raises:
            SupervisorError: ``not_found`` when there is no child at ``path``
                or it is a task, not a supervisor.
        """
        return self._child_of(SupervisorHandle, path, timeout, "a task, not a supervisor")

    def _child_id(self, child_id: object, what: str = "child_id") -> str:
        """Check a child's name given to a call, before it reaches the supervisor.

        Raises:
            TypeError: when it is not a str.
            SupervisorError: ``not_found`` when it is longer than any name can be.
        """
        if not isinstance(child_id, str):
            raise TypeError(f"{what}: expected a child's name (a str), got {shown(child_id)}")
        if len(child_id) > NAME_MAX:
            raise SupervisorError(
                "not_found",
                f"{self.path}: no child {shown(child_id)} (names have at most {NAME_MAX} "
                "characters)",
            )
        return child_id

    def _child_of(self, kind: type[_H], path: str, timeout: float | None, otherwise: str) -> _H:
        handle = self.child(path, timeout=timeout)
        if not isinstance(handle, kind):
            raise SupervisorError("not_found", f"{shown(path)} is {otherwise}")
        return handle


class _SupervisorPort(SupervisorHandle):
    """A parent's handle on a child supervisor, and the user's (``tree.child("db")``)."""

    def __init__(self, ref: pykka.ActorRef[SupervisorActor], path: str) -> None:
        self.ref = ref
        self.path = path
        self.parent: pykka.ActorRef[SupervisorActor] | None = None
        self.name = path.rpartition("/")[2]

    def _actor(self) -> pykka.ActorRef[SupervisorActor]:
        return self.ref

    @classmethod
    def start(
        cls, spec: AnySupervisorSpec, path: str, runtime: _Runtime, report: Report
    ) -> _SupervisorPort:
        return cls(SupervisorActor.start(spec, path, runtime, report), path)

    def boot(self) -> None:
        _quiet(self.ref.tell, Boot())

    def settle(self, *, final: bool) -> None:
        _quiet(self.ref.tell, Settle(final))

    def stop_node(self, seq: int, *, brutal: bool, final: bool) -> None:
        try:
            self.ref.tell(_Stop(seq, StopNode(final=final, brutal=brutal)))
        except pykka.ActorDeadError:
            if self.parent is not None:
                _quiet(self.parent.tell, ChildTerminated(self.name, seq))

    def stop_soon(self) -> None:
        self.ref.stop(block=False)

    def stop(self, timeout: float | None = CALL_TIMEOUT) -> None:
        """Stop this supervisor for good (its parent's ``terminate_child``).

        Called from one of the tree's own threads (a task, a hook) it starts
        the stop and returns at once, as ``SupervisorRef.stop`` does: a task
        of this supervisor would otherwise wait on its own end.

        Raises:
            WaitTimeout: when it has not stopped within ``timeout`` seconds
                (it goes on stopping).
        """
        if self.parent is None:
            raise SupervisorError("not_found", f"{self.path!r} has no parent")
        timeout = wait_timeout(timeout)
        request = Request("terminate_child")
        try:
            self.parent.tell(_Api("terminate_child", (self.name,), request))
        except pykka.ActorDeadError:
            return
        if _on_a_tree_thread():
            return
        try:
            request.wait(timeout)
        except WaitTimeout:
            raise WaitTimeout(
                f"supervisor {self.path!r} did not stop within {timeout}s (it goes on stopping)"
            ) from None


class SupervisorRef(SupervisorHandle):
    """A running supervision tree (its root supervisor).

    Use it as a context manager, or call ``stop()``: a stopped tree leaves
    no thread, no child process and no undelivered event behind. A tree that
    ends by itself (its root gave up or shut down) releases them too.
    """

    def __init__(self, runtime: _Runtime, path: str) -> None:
        self._runtime = runtime
        self.path = path
        self._port: _SupervisorPort | None = None
        self._lock = threading.Lock()
        self._began = threading.Event()  # the root started, or could not
        self._root_stopped = threading.Event()  # the root terminated every child
        self._released = threading.Event()  # every actor, thread and process is gone
        self._end: ReportEnded | None = None  # the root ended by itself
        self._start_failure: ReportEnded | None = None
        self._stopper: threading.Thread | None = None
        self._stop_requested = False

    def _actor(self) -> pykka.ActorRef[SupervisorActor]:
        assert self._port is not None
        return self._port.ref

    @property
    def bus(self) -> EventBus:
        """The tree's event bus (subscribe more hooks here)."""
        return self._runtime.bus

    @property
    def unsaved(self) -> frozenset[str]:
        """Ids of tasks whose latest record could not be saved (the saves are retried)."""
        return frozenset(self._runtime.unsaved)

    # The root's reports arrive on its actor thread: never wait here.
    def _report(self, command: Command, _seq: int) -> None:
        if isinstance(command, ReportStarted):
            self._began.set()
        elif isinstance(command, ReportEnded):
            if not command.started and not self._began.is_set():
                self._start_failure = command
            else:
                self._end = command
            self._began.set()
            assert self._port is not None
            self._port.settle(final=True)  # the root has no parent to restart it
            self._begin_stop(CALL_TIMEOUT)
        else:
            self._root_stopped.set()

    @property
    def running(self) -> bool:
        """Whether the root supervisor still supervises (it has not ended, no stop was asked)."""
        return self._end is None and not self._stop_requested and not self._released.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the tree has ended, whoever ended it, and has released everything.

        Args:
            timeout: seconds to wait at most; None (the default) waits as long
                as the tree runs.

        Returns when it was stopped (``stop()``, from any thread) or shut
        itself down normally (``auto_shutdown``).

        Raises:
            SupervisorExhausted: when the root gave up; carries the chain of failures.
            WaitTimeout: when it still runs after ``timeout`` seconds.
        """
        timeout = wait_timeout(timeout)
        if not self._released.wait(timeout):
            state = "still running" if self.running else "still stopping"
            raise WaitTimeout(f"supervisor {self.path!r} {state} after {timeout}s")
        end = self._end
        if end is not None and end.phase is not TaskPhase.SUCCEEDED:
            raise SupervisorExhausted(end.chain, end.reason)

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop the tree: children in reverse start order, then every actor and thread.

        ``timeout`` (seconds; None: no bound) is one deadline for the whole
        tree. Children stop within their graces; what still runs close to the
        deadline is killed at once (a ``call`` whose thread cannot be killed
        is abandoned and reported), every child process is killed, and the
        bus delivers what it can until the deadline.

        Safe from any thread and idempotent: concurrent calls all wait for the
        same stop. Called from one of the tree's own threads (a hook, a task,
        an actor) it starts the stop and returns at once, since waiting there
        would wait on itself. A tree that ended by itself returns at once.
        """
        timeout = wait_timeout(timeout)
        self._begin_stop(timeout)
        if _on_a_tree_thread():
            return
        wait = None if timeout is None else timeout + 5.0
        if not self._released.wait(wait):
            logger.error("%s: stop did not finish within %ss", self.path, timeout)

    def run_forever(self) -> int | None:
        """Run until the tree ends or a signal stops it; what ``taskvisor run`` does.

        Installs handlers for SIGTERM and SIGINT for as long as it runs (the
        previous handlers are put back before it returns). The first signal
        stops the tree in order: children in reverse start order, each
        within its own ``shutdown`` grace (no overall deadline beyond the
        graces). A second signal stops it at once: every child is killed
        (brutal), every process group included. SIGHUP is logged and
        ignored (re-reading a tree file is not supported). The handlers run
        on the main thread and never wait.

        Returns:
            The number of the signal that stopped the tree, or None when the
            tree ended by itself (``auto_shutdown``, or stopped from elsewhere).

        Raises:
            SupervisorError: ``not_main_thread`` when called from another
                thread (Python delivers signals to the main thread only).
            SupervisorExhausted: when the root gave up (as ``wait()``).
        """
        if threading.current_thread() is not threading.main_thread():
            raise SupervisorError(
                "not_main_thread",
                "run_forever() installs signal handlers and must run on the main thread; "
                "from another thread use wait() and stop()",
            )
        received: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            received.append(signum)
            name = signal.Signals(signum).name
            if len(received) == 1:
                logger.info(
                    "%s: %s received: stopping the tree in order (send it again to stop at once)",
                    self.path,
                    name,
                )
                self._begin_stop(None)
            elif len(received) == 2:
                logger.warning("%s: %s received again: killing every child now", self.path, name)
                self._kill_children()

        def on_hangup(_signum: int, _frame: object) -> None:
            logger.warning(
                "%s: SIGHUP ignored: re-reading the tree file is not supported; "
                "restart the service to apply a changed file",
                self.path,
            )

        wanted: dict[signal.Signals, Callable[[int, Any], None]] = {
            signal.SIGTERM: on_signal,
            signal.SIGINT: on_signal,
        }
        if hasattr(signal, "SIGHUP"):
            wanted[signal.SIGHUP] = on_hangup
        previous = {signum: signal.signal(signum, handler) for signum, handler in wanted.items()}
        try:
            while not self._released.wait(0.5):  # the handlers run between two waits
                pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.wait(0)
        return received[0] if received else None

    def _kill_children(self) -> None:
        """Kill every child at once (brutal), process groups included; never waits.

        Every task is told even when the root (or another task) cannot be.
        """
        tell: list[Callable[[], Any]] = []
        port = self._port
        if port is not None:
            tell.append(lambda: port.stop_node(0, brutal=True, final=True))
        for other in self._runtime.all_ports():
            if isinstance(other, TaskRef):
                tell.append(functools.partial(other.terminate, brutal=True, final=True))
        for kill in tell:
            try:
                kill()
            except Exception:
                logger.exception("%s: could not kill a child", self.path)

    def _begin_stop(self, timeout: float | None) -> None:
        with self._lock:
            self._stop_requested = True
            if self._stopper is not None:
                return
            deadline = None if timeout is None else time.monotonic() + timeout
            self._stopper = threading.Thread(
                target=self._teardown, args=(deadline,), name="taskvisor-stop", daemon=True
            )
        self._stopper.start()

    def _teardown(self, deadline: float | None) -> None:
        try:
            self._shut_down(deadline)
        except BaseException:
            logger.exception("%s: stopping the tree failed: killing what is left", self.path)
            self._last_resort(deadline)
        finally:
            self._began.set()
            self._released.set()

    def _last_resort(self, deadline: float | None) -> None:
        """After a stop that broke: kill every child, stop every actor, close what they shared.

        Each step is tried even when the one before it failed, within what is
        left of the deadline; actors told to stop end by themselves after it.
        """
        runtime = self._runtime

        def stop_actors() -> None:
            for other in runtime.all_ports():
                other.stop_soon()
            if self._port is not None:
                self._port.stop_soon()

        def close() -> None:
            close_shared(
                runtime.threads,
                runtime.real_clock,
                runtime.executors,
                runtime.bus,
                time_left(deadline),
            )

        for step in (self._kill_children, stop_actors, close):
            try:
                step()
            except BaseException:
                logger.exception("%s: a step of the last-resort stop failed", self.path)

    def _shut_down(self, deadline: float | None) -> None:
        def left(reserve: float = 0.0) -> float | None:
            if deadline is None:
                return None
            return max(0.0, deadline - time.monotonic() - reserve)

        runtime = self._runtime
        port = self._port
        total = None if deadline is None else max(0.0, deadline - time.monotonic())
        reserve = 0.0 if total is None else min(2.0, total * 0.2)
        if port is not None:
            port.stop_node(0, brutal=False, final=True)
            if not self._root_stopped.wait(left(reserve)):
                logger.error(
                    "%s: children still running close to the stop deadline: killing them",
                    self.path,
                )
                self._kill_children()
                self._root_stopped.wait(left(reserve / 2))
        for other in runtime.all_ports():
            other.stop_soon()
        if port is not None:
            port.stop_soon()
        close_shared(runtime.threads, runtime.real_clock, runtime.executors, runtime.bus, left())
        release = getattr(runtime.store, "release", None)
        if callable(release):
            release()
        if logging_wanted(logger, logging.INFO):
            logger.info("%s: tree stopped", self.path)
        if runtime.unsaved:
            logger.error(
                "%s: the records of %d task(s) could not be saved: %s",
                self.path,
                len(runtime.unsaved),
                ", ".join(sorted(runtime.unsaved)[:20]),
            )

    def __enter__(self) -> SupervisorRef:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _on_a_tree_thread() -> bool:
    """Whether this is a thread a tree runs (an actor, a task's worker, a hook, a timer)."""
    return threading.current_thread().name.startswith("taskvisor-")


def _acquire(store: Any, owner: str, deadline: float | None) -> None:
    """Make the tree ``owner`` the store's owner (``store.acquire``) by ``deadline``.

    The store's code runs on a thread of its own, so that one that blocks
    cannot hold ``Supervisor.start`` past its timeout: it is left to return
    there, and a store it took after all is released.

    Raises:
        WaitTimeout: when ``acquire`` did not return in time.
        Exception: what ``acquire`` raised (``StoreLocked``, say).
    """
    acquire = getattr(store, "acquire", None)
    if not callable(acquire):
        return
    done, lock = Latch(), threading.Lock()
    outcome: list[tuple[bool, Any]] = []
    given_up = False

    def run() -> None:
        try:
            result: tuple[bool, Any] = (True, acquire(owner))
        except BaseException as exc:  # handed to the caller, or logged when it gave up
            result = (False, exc)
        with lock:
            outcome.append(result)
            late = given_up
        done.set()
        if late:
            logger.error("%s: the store's acquire returned after start gave up", owner)
            if result[0]:
                with contextlib.suppress(Exception):
                    store.release()

    threading.Thread(target=run, name="taskvisor-store-acquire", daemon=True).start()
    if not done.wait(time_left(deadline)):
        with lock:
            given_up = not outcome
        if given_up:
            raise WaitTimeout(
                f"tree {owner!r}: the store's acquire did not return in time; nothing was started"
            )
    ok, value = outcome[0]
    if not ok:
        raise value


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
        timeout: float | None = CALL_TIMEOUT,
    ) -> SupervisorRef:
        """Start the tree described by ``spec``: every child, in order, depth first.

        Args:
            spec: the root supervisor's spec.
            store: a ``TaskStore``; children resume from their stored records.
                The tree owns the store while it runs (``store.acquire``).
            hooks: subscribers to the tree's event bus.
            clock: the clock for restart windows, backoff and timeouts.
            executors: executors by task kind (defaults: call, async, subprocess).
            timeout: seconds to wait for the store and every child to start
                (default 60): one deadline for the whole start, the stop of
                a start that fails included.

        Raises:
            ChildStartError: when a child could not start; the children
                already started are stopped first, and nothing is left running.
            SupervisorError: ``start_failed`` when the root could not start
                for another reason (a record in the store it cannot read, say).
            WaitTimeout: when the store or the children did not all start in
                time (the tree is stopped; a store that blocks is left to
                return on a thread of its own, and logged).
            StoreError: when the store is closed, or owned by another live
                tree (``StoreLocked``, naming the owner).
            TypeError: when ``hooks``, ``clock``, ``executors`` or ``store``
                is of the wrong kind, naming it (nothing is started).
        """
        timeout = wait_timeout(timeout)
        if not isinstance(spec, (SupervisorSpec, DynamicSupervisorSpec)):
            raise SupervisorError(
                "bad_spec",
                "spec: expected a SupervisorSpec or DynamicSupervisorSpec, "
                f"got {type(spec).__name__}",
            )
        # Every argument is checked before anything is held or started.
        hooks = hooks_of(hooks, "Supervisor.start(hooks)")
        clock = clock_of(clock, "Supervisor.start(clock)")
        executors = executors_of(executors, "Supervisor.start(executors)")
        store = store_of(store, "Supervisor.start(store)")
        deadline = deadline_of(timeout)
        _acquire(store, spec.name, deadline)
        bus = EventBus(hooks)
        real_clock = SystemClock(keep_thread=True, on_error=_reporter(bus))
        runtime = _Runtime(
            bus=bus,
            executors=dict(executors) if executors is not None else default_executors(),
            store=store,
            clock=clock or real_clock,
            real_clock=real_clock,
        )
        ref = SupervisorRef(runtime, spec.name)
        port = _SupervisorPort.start(spec, spec.name, runtime, ref._report)
        ref._port = port
        port.boot()
        if not ref._began.wait(time_left(deadline)):
            ref.stop(time_left(deadline))
            raise WaitTimeout(f"tree {spec.name!r}: its children did not start within {timeout}s")
        failure = ref._start_failure
        if failure is not None:
            ref.stop(time_left(deadline))
            raise _start_error(failure)
        return ref


def _reporter(bus: EventBus) -> Callable[[Callable[[], None], BaseException], None]:
    """What the tree's timer thread does with a callback that raised (it also logs it)."""

    def report(callback: Callable[[], None], exc: BaseException) -> None:
        error = bound_text(described(exc), 500) or ""
        name = getattr(callback, "__qualname__", None)
        what = bound_text(name, 200) if isinstance(name, str) else shown(callback)
        bus.publish(CallbackFailed(what or "", error, at=now_ms()))

    return report


def _start_error(failure: ReportEnded) -> TaskvisorError:
    """The error ``Supervisor.start`` raises when the root could not start."""
    chain = failure.chain
    if chain and chain[0].child != "(supervisor)":
        first = chain[0]
        return ChildStartError(f"{first.supervisor}/{first.child}", first.error or "failed")
    return SupervisorError("start_failed", failure.reason or "the root could not start")
