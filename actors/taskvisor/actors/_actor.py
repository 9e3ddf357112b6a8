"""The task actor: one pykka actor per task, owning its ``Task``, runs and record.

The actor thread never runs user work. Work runs on an executor's thread
and reports back by message, so cancel, deliver and timeouts are handled
while it runs. When an attempt's work ends, the actor asks its owner for a
``Verdict`` (close the run as is, or as ``EXHAUSTED``; restart after a delay
or end for good). The owner answers at once (a service) or later by
message (a supervisor). A restart reuses the same actor, so the reference
callers hold stays valid.

Every change is persisted to the store before its event is published.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, overload

import attrs
import pykka
import pykka.messages

from ._base import ActorThreads, BaseActor, Latch, wait_timeout
from ._bus import EventBus
from ._clock import Clock, SystemClock, Timer
from ._context import Mailbox, Outcome, Request, TaskContext
from ._errors import NoReply, TaskvisorError, Unsupported, WaitTimeout, cut, described, shown
from ._events import (
    AttemptFinished,
    AttemptStarted,
    Event,
    TaskFinished,
    TaskStarted,
)
from ._executors import BaseExecutor, TaskExecutor
from ._model import (
    ERROR_TEXT_MAX,
    Task,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskState,
    begun_run,
    bound_text,
    now_ms,
    replace,
)
from ._publish import logging_wanted

if TYPE_CHECKING:
    from pykka._actor import ActorInbox
    from pykka._envelope import Envelope

__all__ = [
    "RUNS_KEPT",
    "AttemptBegan",
    "AttemptEnded",
    "AttemptProgress",
    "RecordNotSaved",
    "Replier",
    "TaskActor",
    "TaskOwner",
    "TaskRef",
    "TaskSnapshot",
    "Verdict",
]

logger = logging.getLogger("taskvisor.tasks")

#: How many of the latest runs a task keeps (and persists); ``attempts`` counts all.
RUNS_KEPT = 50


@attrs.frozen
class AttemptEnded:
    """Notice to a task's owner: the work of ``attempt`` ended; its run awaits a verdict."""

    task_id: str
    attempt: int
    phase: TaskPhase
    error: str | None = None
    exit_code: int | None = None
    started: bool = True


@attrs.frozen
class AttemptBegan:
    """Notice to a task's owner: attempt ``attempt`` began (``pid`` of a subprocess)."""

    task_id: str
    attempt: int
    pid: int | None = None


@attrs.frozen
class Verdict:
    """An owner's answer to ``AttemptEnded``.

    Attributes:
        attempt: the attempt this answers.
        phase: close the run in this phase instead of the work's own (``EXHAUSTED``).
        restart_after: start the next attempt after this many seconds;
            None ends the task for good (unless ``hold``).
        hold: close the run and wait, idle, for ``TaskRef.restart()`` (a
            supervisor that restarts siblings in order first stops them).
        event: published right after the run's end (a supervisor's
            ``RestartScheduled``), so that the end comes first.
    """

    attempt: int
    phase: TaskPhase | None = None
    restart_after: float | None = None
    hold: bool = False
    event: Event | None = None


@attrs.frozen
class TaskSnapshot:
    """A consistent copy of a task's state: the task, its latest runs, its last output."""

    task: Task
    runs: tuple[TaskRun, ...]
    output: Any = None
    progress: Any = None
    done: bool = False


@attrs.frozen
class _Closed:
    """A run just closed: what recording it needs."""

    run: TaskRun
    stamp: int
    output: Any


@attrs.frozen
class AttemptProgress(Event):
    """The work of an attempt reported progress."""

    task_id: str
    attempt: int
    value: Any


@attrs.frozen
class RecordNotSaved(Event):
    """A task's record could not be saved: the store failed. The save is retried."""

    task_id: str
    error: str


class Replier(Protocol):
    """Whoever waits for the answer to a terminate: a ``Request``, or a shell's notifier."""

    def reply(self, value: Any) -> None: ...
    def fail(self, error: BaseException) -> None: ...


class TaskOwner(Protocol):
    """Who a task actor reports to. Called on the task actor's thread: keep it quick.

    An owner may also define ``attempt_began(notice: AttemptBegan)``, called
    each time an attempt has begun (a supervisor waits for it before it
    starts the next child).
    """

    def attempt_ended(self, notice: AttemptEnded) -> Verdict | None:
        """Return a verdict now, or None and send one later with ``TaskRef.verdict``."""
        ...

    def task_done(self, snapshot: TaskSnapshot) -> None:
        """Learn that the task ended for good."""
        ...


# ----------------------------------------------------------------------------- messages


@attrs.frozen
class _Begin:
    reply: Request | None = None  # answered with None once begun, or the start error


@attrs.frozen
class _WorkDone:
    ctx: TaskContext
    outcome: Outcome


@attrs.frozen
class _Progress:
    ctx: TaskContext
    value: Any


@attrs.frozen
class _Deadline:
    ctx: TaskContext
    kind: str  # "timeout" or "grace"


@attrs.frozen
class _Cancel:
    pass


@attrs.frozen
class _Restart:
    attempt: int  # the attempt that must still be the latest when the timer fires


@attrs.frozen
class _Resume:
    reply: Request | None = None  # answered like _Begin's


@attrs.frozen
class _Terminate:
    reply: Replier
    brutal: bool
    final: bool  # end for good, or stop this attempt and wait for a restart


@attrs.frozen
class _Snapshot:
    pass


@attrs.frozen
class _AttemptState:
    pass


@attrs.frozen
class _SaveAgain:
    pass


class _Sink:
    """The ``TaskSink`` of one attempt: turns reports into messages to the actor."""

    __slots__ = ("_ctx", "_tell")

    def __init__(self, tell: Callable[[Any], None]) -> None:
        self._tell = tell
        self._ctx: TaskContext | None = None

    def bind(self, ctx: TaskContext) -> None:
        self._ctx = ctx

    def progress(self, value: Any) -> None:
        assert self._ctx is not None
        _tell_quietly(self._tell, _Progress(self._ctx, value))

    def finished(self, outcome: Outcome) -> None:
        assert self._ctx is not None
        _tell_quietly(self._tell, _WorkDone(self._ctx, outcome))


class _ClosingInbox:
    """A task actor's inbox: once closed, it answers what is put instead of keeping it unread."""

    __slots__ = ("_closed", "_lock", "bounce", "empty", "get", "put_raw")

    def __init__(self) -> None:
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.get = inbox.get
        self.empty = inbox.empty
        self.put_raw = inbox.put
        self._lock = threading.Lock()
        self._closed = False
        #: Answers a message that reached the inbox after it closed.
        self.bounce: Callable[[Envelope[Any]], None] = lambda _envelope: None

    def put(self, envelope: Envelope[Any]) -> None:
        with self._lock:
            if not self._closed:
                self.put_raw(envelope)
                return
        self.bounce(envelope)

    def close(self) -> list[Envelope[Any]]:
        """Take no more messages; return those still unread."""
        with self._lock:
            self._closed = True
        unread = []
        while not self.empty():
            unread.append(self.get())
        return unread


def _tell_quietly(tell: Callable[[Any], None], message: Any) -> None:
    try:
        tell(message)
    except pykka.ActorDeadError:
        logger.debug("task actor gone; dropped %r", message)


# ----------------------------------------------------------------------------- the actor

_PENDING, _RUNNING, _AWAITING, _IDLE, _DONE = "pending", "running", "awaiting", "idle", "done"


class TaskActor(BaseActor):
    """Own one task: run its attempts through an executor, persist, publish, report."""

    def __init__(
        self,
        task: Task,
        executor: TaskExecutor,
        owner: TaskOwner,
        *,
        bus: EventBus | None = None,
        store: Any = None,
        clock: Clock | None = None,
        record: TaskRecord | None = None,
        restored: bool = False,
        mailbox: Mailbox | None = None,
        threads: ActorThreads | None = None,
        loop_ended: Latch | None = None,
        real_clock: SystemClock | None = None,
        begin: bool = False,
        unsaved: set[str] | None = None,
    ) -> None:
        super().__init__(threads=threads, loop_ended=loop_ended)
        self.actor_inbox.bounce = self._bounce
        self.begin = begin  # start the first attempt as soon as the actor runs
        #: Grace periods are about real threads and processes: they use real time.
        self.real_clock = real_clock or _REAL_CLOCK
        self.task = task
        self.runs: deque[TaskRun] = deque(maxlen=RUNS_KEPT)
        self.executor = executor
        self.owner = owner
        self.began: Callable[[AttemptBegan], None] | None = getattr(owner, "attempt_began", None)
        self.unsaved = unsaved
        self.dirty = False  # the latest save failed: the store is behind
        self.save_retry: Timer | None = None
        self.save_delay = _SAVE_RETRY_FIRST
        self.crashed = False
        self.starting = False  # inside executor.start
        self.bus = bus
        self.store = store
        self.clock: Clock = clock or self.real_clock
        self.mailbox = mailbox if mailbox is not None else Mailbox()
        self.record = record
        if store is not None and record is None:
            self.record = TaskRecord.new(task.id, now=task.metadata.created_at)
            self.record.metadata.update(task.spec.labels)
            self._save()
        elif record is not None:
            # Resuming: carry on the stored history and attempt count.
            self.runs.extend(attrs.evolve(r) for r in record.runs)
            task.status = attrs.evolve(task.status, attempt=record.attempts)
        self.state = _PENDING
        self.restored = restored and record is not None and record.state.is_terminal
        if self.restored:
            # An ended task found in the store: done, with its stored status and output.
            assert record is not None
            phase = TaskPhase(record.state.value)
            task.status = attrs.evolve(task.status, phase=phase, error=record.error)
            self.state = _DONE
        self.ctx: TaskContext | None = None
        self.end_reason: str | None = None  # "cancel", "timeout" or "terminate"
        self.pending: Outcome | None = None  # work's outcome while awaiting a verdict
        self.output: Any = record.output if self.restored and record is not None else None
        self.progress: Any = None
        self.ever_started = False
        self.brutal = False  # the current wind-down kills at once
        self.terminate_final = False  # a terminate asked to end the task for good
        self.start_error: str | None = None  # why the latest attempt could not start
        self.restart_by_message = False  # the attempt awaiting a verdict never started
        self.resume_pending = False  # a restart asked for while an attempt was terminated
        self.timeout_timer: Timer | None = None
        self.grace_timer: Timer | None = None
        self.restart_timer: Timer | None = None
        self.waiters: list[Replier] = []

    # pykka entry points ---------------------------------------------------------

    actor_inbox: _ClosingInbox

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        return _ClosingInbox()

    def _actor_loop_teardown(self) -> None:
        for envelope in self.actor_inbox.close():
            self._bounce(envelope)

    def _bounce(self, envelope: Envelope[Any]) -> None:
        """Answer whoever waits on a message that came after the actor stopped.

        A terminate gets the task's final snapshot (it has ended), a start
        confirmation the reason it did not start, an ``ask`` ``ActorDeadError``.
        """
        message = envelope.message
        if isinstance(message, _Terminate):
            message.reply.reply(self._snapshot(done=self.state == _DONE))
        elif isinstance(message, (_Begin, _Resume)) and message.reply is not None:
            message.reply.reply(f"task {self.task.id!r} has stopped")
        if envelope.reply_to is not None:
            if isinstance(message, pykka.messages._ActorStop):
                envelope.reply_to.set(None)
            else:
                error = pykka.ActorDeadError(f"{self.actor_ref} stopped before handling it")
                envelope.reply_to.set_exception(exc_info=(pykka.ActorDeadError, error, None))

    def on_receive(self, message: Any) -> Any:
        try:
            return _HANDLERS[type(message)](self, message)
        except BaseException as exc:  # a bug here is this task's failure, not the tree's
            self._crash(exc)
            return None

    def on_start(self) -> None:
        try:
            if self.restored:
                self._publish(TaskFinished(self.task.id, self.task.status, at=now_ms()))
            elif self.begin:
                self._start_attempt()
        except BaseException as exc:
            self._crash(exc)

    def _crash(self, exc: BaseException) -> None:
        """An unexpected error in a handler: end the current attempt as failed, once.

        The owner hears of it like any failed attempt and decides (a restart
        that follows comes by message); every waiter is answered. An error
        while reporting the first ends the task for good, as failed.
        """
        logger.error("task %s: internal error", self.task.id, exc_info=exc)
        error = f"internal error in the task actor: {described(exc)}"
        if self.crashed:
            self._end_after_crash(error)
            return
        self.crashed = True
        try:
            ctx = self.ctx
            if self.state == _RUNNING and ctx is not None:
                try:
                    self.executor.kill(self.task, ctx)
                except BaseException:
                    logger.exception("task %s: could not kill its work", self.task.id)
                self.end_reason = None
                # A start that broke never began: a restart comes by message.
                self._work_ended(ctx, Outcome(TaskPhase.FAILED, error=error), not self.starting)
            elif self.state == _PENDING:
                self._end_unstarted()
            else:
                self._reply_waiters()
        except BaseException:
            logger.exception("task %s: could not report its internal error", self.task.id)
            self._end_after_crash(error)
        finally:
            self.crashed = False
            self.starting = False

    def _end_after_crash(self, error: str) -> None:
        """End the task for good, as failed, when even reporting an error failed."""
        stamp = now_ms()
        try:
            if self.task.status.phase is TaskPhase.RUNNING:
                self.task.transition_finished(TaskPhase.FAILED, error, None, now=stamp)
                if self.runs and self.runs[-1].is_active:
                    self.runs[-1].finish(TaskPhase.FAILED, error, None, now=stamp)
            self.state = _DONE
            self._publish(TaskFinished(self.task.id, self.task.status, at=stamp))
            self.owner.task_done(self._snapshot(done=True))
        except BaseException:
            logger.exception("task %s: could not end after an internal error", self.task.id)
        self.state = _DONE
        self._refuse_requests()
        self._reply_waiters()

    def _refuse_requests(self) -> None:
        """The task ended for good: a request waiting for its next attempt fails now."""
        phase = self.task.status.phase.value
        self.mailbox.refuse(f"task {self.task.id!r} has ended ({phase})")

    def on_stop(self) -> None:
        if self.state != _DONE:
            self.mailbox.refuse(f"task {self.task.id!r} has stopped")
        self._cancel_timers(save_retry=True)
        self.executor.release(self.task.id)
        if self.dirty:
            self._save()  # a last try

    def on_failure(self, *_exc: object) -> None:  # pragma: no cover - handlers do not raise
        self.mailbox.refuse(f"task {self.task.id!r} has stopped")
        self._cancel_timers(save_retry=True)
        self.executor.release(self.task.id)

    # attempts ---------------------------------------------------------------------

    def _on_begin(self, message: _Begin) -> None:
        if self.state == _PENDING:
            self._start_attempt()
        if message.reply is not None:
            message.reply.reply(self.start_error)

    def _on_restart(self, message: _Restart) -> None:
        if self.state == _IDLE and self.task.status.attempt == message.attempt:
            self.restart_timer = None
            self._start_attempt()

    def _on_resume(self, message: _Resume) -> None:
        if self.state in (_IDLE, _DONE, _PENDING):
            self._cancel_timers()
            self._start_attempt()
        elif self.state == _AWAITING:
            # An owner that never answered (a supervisor that broke) was replaced:
            # the new one starts the task afresh, so the ended run closes as it is.
            outcome, self.pending = self.pending, None
            assert outcome is not None
            self._start_attempt(self._close(outcome, None, final=False, record=False))
        elif self.state == _RUNNING and self.end_reason == "terminate":
            self.resume_pending = True  # started as soon as the terminated attempt ends
        if message.reply is not None:
            message.reply.reply(self.start_error)

    def _start_attempt(
        self, closed: _Closed | None = None, event: Event | None = None, *, notify: bool = True
    ) -> None:
        """Start the next attempt; ``closed`` is the previous run, closed but not yet recorded.

        The bookkeeping (persist, publish the previous run's end and
        ``event``) comes first and the hand-over of the work last, so that
        the work runs as soon as this thread lets go. Work that cannot start
        ends the attempt as failed, reported to the owner like any end (a
        restart that follows comes by message, never by recursion). Once the
        work has begun the owner hears ``attempt_began``, unless ``notify``
        is False and there is no pid to tell: a restart in place, whose
        owner asks when it needs to know (``TaskRef.attempt_state``) rather
        than be woken at each restart.
        """
        task = self.task
        stamp = now_ms()
        task.transition_starting(now=stamp)
        attempt = task.status.attempt
        sink = _Sink(self.actor_ref.tell)
        self.mailbox.accept()  # after an end for good, requests wait for this attempt again
        ctx = TaskContext(task.id, attempt, self.mailbox, sink)
        sink.bind(ctx)
        self.ctx, self.state, self.end_reason, self.pending = ctx, _RUNNING, None, None
        self.brutal = self.terminate_final = False
        run = begun_run(attempt, stamp)
        self.runs.append(run)
        self._record_start(closed, stamp)
        if event is not None:
            self._publish(event)
        if task.spec.timeout is not None:
            self.timeout_timer = self._later(task.spec.timeout, _Deadline(ctx, "timeout"), True)
        self.starting = True  # until start() returns: an error in it is no begun attempt
        try:
            self.executor.start(task, ctx)
        except Exception as exc:  # the work never began: report that as the attempt's end
            self.starting = False
            self.start_error = described(exc)
            self._work_ended(ctx, Outcome(TaskPhase.FAILED, error=self.start_error), False)
            return
        self.starting = False
        self.start_error = None
        if ctx.pid is not None:
            run.pid, run.pgid, run.host = ctx.pid, ctx.pgid, _HOST
            run.process_started = ctx.started
            self._persist(TaskState.RUNNING, stamp)  # the pid, for a resumed tree to find
        if self._wanted():
            self._publish(AttemptStarted(task.id, attempt, at=stamp))
        if logging_wanted(logger, logging.INFO):
            pid = "" if ctx.pid is None else f" (pid {ctx.pid})"
            logger.info("%s: attempt %d started%s", task.id, attempt, pid)
        if not self.ever_started:
            self.ever_started = True
            self._publish(TaskStarted(task.id, at=stamp))
        if self.began is not None and (notify or ctx.pid is not None):
            self.began(AttemptBegan(task.id, attempt, ctx.pid))

    def _on_progress(self, message: _Progress) -> None:
        if message.ctx is self.ctx:
            self.progress = message.value
            self._publish(AttemptProgress(self.task.id, message.ctx.attempt, message.value))

    def _on_work_done(self, message: _WorkDone) -> None:
        if message.ctx is self.ctx and self.state == _RUNNING:
            self._work_ended(message.ctx, message.outcome, True)

    def _work_ended(
        self, ctx: TaskContext, outcome: Outcome, started: bool, abandoned: str | None = None
    ) -> None:
        self._cancel_timers()
        if outcome.error is not None and len(outcome.error) > ERROR_TEXT_MAX:
            # Cut once, here: the record, the notice, the logs and the rows all carry it.
            outcome = attrs.evolve(outcome, error=bound_text(outcome.error))
        reason = self.end_reason
        if reason is not None:
            # The work ended because it was asked to: say why, not how it died.
            if reason == "timeout":
                phase, error = TaskPhase.TIMEOUT, f"timed out after {self.task.spec.timeout}s"
            else:
                phase, error = TaskPhase.CANCELLED, _END_REASONS[reason]
            if abandoned:
                error = f"{error}; {abandoned}"
            elif outcome.phase is TaskPhase.FAILED and outcome.error and outcome.exit_code is None:
                # OTP's shutdown_error: what went wrong while stopping is kept, not dropped.
                logger.warning(
                    "%s: attempt %d failed while being stopped: %s",
                    self.task.id,
                    ctx.attempt,
                    outcome.error,
                )
                raised = cut(_what_was_raised(outcome.error), 200)
                error = f"{error}; it failed while stopping: {raised}"
            outcome = attrs.evolve(outcome, phase=phase, error=error, output=None)
        self.ctx = None
        self._log_end(ctx.attempt, outcome)
        self._answer_taken(ctx, outcome)
        if self.end_reason == "terminate":
            self._close(outcome, None, final=self.terminate_final)
            self._reply_waiters()
            if self.resume_pending and not self.terminate_final:
                self.resume_pending = False
                self._start_attempt()
            return
        self.pending = outcome
        self.state = _AWAITING
        self.restart_by_message = not started
        if self.record is not None:
            # Saved before anything else happens: a finished attempt is never run again.
            self._persist_end(outcome)
        notice = AttemptEnded(
            self.task.id, ctx.attempt, outcome.phase, outcome.error, outcome.exit_code, started
        )
        verdict = self.owner.attempt_ended(notice)
        if verdict is not None:
            self._apply(verdict)

    def _log_end(self, attempt: int, outcome: Outcome) -> None:
        """Log how the work ended, before its owner hears of it (causal order in the log)."""
        level = logging.WARNING if outcome.phase.is_abnormal else logging.INFO
        if logging_wanted(logger, level):
            code = "" if outcome.exit_code is None else f" with exit code {outcome.exit_code}"
            error = f": {outcome.error}" if outcome.error else ""
            logger.log(
                level,
                "%s: attempt %d ended %s%s%s",
                self.task.id,
                attempt,
                outcome.phase.value,
                code,
                error,
            )

    def _answer_taken(self, ctx: TaskContext, outcome: Outcome) -> None:
        """Fail the requests the ended attempt took and did not answer: its asker
        hears now, instead of waiting out the timeout of its ``ask``."""
        unanswered = self.mailbox.end(ctx.taken)
        if not unanswered:
            return
        how = outcome.phase.value
        if outcome.error:
            how += ": " + cut(_what_was_raised(outcome.error), 200)
        why = f"task {self.task.id!r}: attempt {ctx.attempt} ended {how}, without replying"
        for request in unanswered:
            request.fail(NoReply(f"{why} to {shown(request.message)}"))

    def _on_verdict(self, verdict: Verdict) -> None:
        if self.state == _AWAITING and verdict.attempt == self.task.status.attempt:
            self._apply(verdict)

    def _apply(self, verdict: Verdict) -> None:
        outcome = self.pending
        assert outcome is not None
        self.pending = None
        final = verdict.restart_after is None and not verdict.hold
        delay = verdict.restart_after or 0.0
        if not final and not verdict.hold and delay <= 0 and not self.restart_by_message:
            # Restart now: hand the work over before recording the closed run.
            closed = self._close(outcome, verdict.phase, final=False, record=False)
            self._start_attempt(closed, verdict.event, notify=False)
            return
        self._close(outcome, verdict.phase, final=final)
        if verdict.event is not None:
            self._publish(verdict.event)
        if not final and not verdict.hold:
            # After a start that failed, even "at once" goes through the inbox:
            # a kind that keeps failing to start never recurses.
            message = _Restart(self.task.status.attempt)
            if delay <= 0:
                _tell_quietly(self.actor_ref.tell, message)
            else:
                self.restart_timer = self._later(delay, message, True)

    def _close(
        self, outcome: Outcome, override: TaskPhase | None, *, final: bool, record: bool = True
    ) -> _Closed:
        """Close the current run; persist and publish it (unless ``record`` is False,
        for ``_start_attempt`` to do); end the task for good if ``final``."""
        phase = override or outcome.phase
        error = outcome.error
        if override is TaskPhase.EXHAUSTED:
            error = f"restart budget exhausted; last end: {outcome.phase.value}" + (
                f": {error}" if error else ""
            )
        stamp = now_ms()
        self.task.transition_finished(phase, error, outcome.exit_code, now=stamp)
        run = self.runs[-1]
        run.finish(phase, error, outcome.exit_code, now=stamp)
        if phase is TaskPhase.SUCCEEDED:
            self.output = outcome.output
        closed = _Closed(run, stamp, outcome.output)
        self.state = _IDLE
        if record:
            self._record_close(closed, save=True)
        if final:
            self._finish(stamp)
        return closed

    def _record_close(self, closed: _Closed, *, save: bool) -> None:
        self._persist(TaskState.of(closed.run.phase), closed.stamp, closed.output, save=save)
        if self._wanted():
            self._publish(AttemptFinished(self.task.id, replace(closed.run), at=closed.stamp))

    def _record_start(self, closed: _Closed | None, stamp: int) -> None:
        if closed is not None:
            self._record_close(closed, save=False)  # one write below covers both
        self._persist(TaskState.RUNNING, stamp)

    def _finish(self, stamp: int) -> None:
        self.state = _DONE
        self._refuse_requests()
        self._cancel_timers()
        self.executor.release(self.task.id)  # hand its worker to the next task now
        self._publish(TaskFinished(self.task.id, self.task.status, at=stamp))
        self.owner.task_done(self._snapshot(done=True))
        self._reply_waiters()

    def _reply_waiters(self) -> None:
        if self.waiters:
            snapshot = self._snapshot(done=self.state == _DONE)
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                waiter.reply(snapshot)

    # cancel, timeouts, termination --------------------------------------------------

    def _on_cancel(self, _message: _Cancel) -> None:
        if self.state == _PENDING:
            self._end_unstarted()
        elif self.state == _RUNNING and self.end_reason is None:
            self._wind_down("cancel", brutal=False)

    def _on_deadline(self, message: _Deadline) -> None:
        if message.ctx is not self.ctx or self.state != _RUNNING:
            return
        if message.kind == "timeout":
            self.timeout_timer = None
            if self.end_reason is None:
                self._wind_down("timeout", brutal=False)
            return
        self.grace_timer = None
        logger.warning(
            "%s: attempt %d did not stop within its %ss grace: killing it",
            self.task.id,
            message.ctx.attempt,
            self.task.spec.shutdown,
        )
        self._kill(message.ctx)

    def _wind_down(self, reason: str, *, brutal: bool) -> None:
        ctx = self.ctx
        assert ctx is not None
        self.end_reason = reason
        grace = self.task.spec.shutdown
        if brutal or grace == "brutal":
            self.brutal = True
            self._kill(ctx)
            return
        try:
            self.executor.cancel(self.task, ctx)
        except TaskvisorError:  # pragma: no cover - built-in kinds all cancel
            logger.exception("cancel of task %s failed", self.task.id)
        self.grace_timer = self._later(float(grace), _Deadline(ctx, "grace"), False)

    def _kill(self, ctx: TaskContext) -> None:
        if self.executor.kill(self.task, ctx):
            return  # the kind still reports the end (a killed process)
        grace = self.task.spec.shutdown
        what = "at once" if self.brutal else f"within its {grace}s grace"
        logger.warning(
            "%s: attempt %d abandoned: it did not stop %s", self.task.id, ctx.attempt, what
        )
        self._work_ended(
            ctx,
            Outcome(TaskPhase.CANCELLED),
            True,
            abandoned=f"abandoned: the work did not stop {what}; it was left to finish on its own",
        )

    def _end_unstarted(self) -> None:
        stamp = now_ms()
        self.task.transition_finished(TaskPhase.CANCELLED, "cancelled before it started", now=stamp)
        self._persist(TaskState.CANCELLED, stamp)
        self._finish(stamp)

    def _on_terminate(self, message: _Terminate) -> None:
        self.waiters.append(message.reply)
        self.resume_pending = False  # the latest word wins: stop
        if self.state == _DONE:
            self._reply_waiters()
            return
        self.terminate_final = self.terminate_final or message.final
        if self.state == _PENDING:
            if message.final:
                self._end_unstarted()
            else:
                self._reply_waiters()
        elif self.state == _RUNNING:
            if self.end_reason is None or message.brutal:
                first = self.end_reason is None
                self.end_reason = "terminate"
                if first or message.brutal:
                    self._cancel_timers()
                    self._wind_down("terminate", brutal=message.brutal)
            else:
                self.end_reason = "terminate"
        elif self.state == _AWAITING:
            assert self.pending is not None
            outcome, self.pending = self.pending, None
            self._close(outcome, None, final=message.final)
            self._reply_waiters()
        else:  # idle between attempts
            self._cancel_timers()
            if message.final:
                self._finish(now_ms())
            else:
                self._reply_waiters()

    # snapshots, persistence, events -------------------------------------------------

    def _on_snapshot(self, _message: _Snapshot) -> TaskSnapshot:
        return self._snapshot(done=self.state == _DONE)

    def _on_attempt_state(self, _message: _AttemptState) -> tuple[int, bool, int | None]:
        # Handlers run one at a time: an attempt being started has begun or failed by now.
        began = self.state != _PENDING and self.start_error is None
        ctx = self.ctx
        pid = ctx.pid if self.state == _RUNNING and ctx is not None else None
        return self.task.status.attempt, began, pid

    def _snapshot(self, *, done: bool) -> TaskSnapshot:
        return TaskSnapshot(
            task=replace(self.task),
            runs=tuple(replace(r) for r in self.runs),
            output=self.output,
            progress=self.progress,
            done=done,
        )

    def _persist(
        self, state: TaskState, stamp: int, output: Any = None, *, save: bool = True
    ) -> None:
        record = self.record
        if record is None:
            return
        if record.state is not state and not record.transition(state, now=stamp):
            if not (record.state.is_terminal and state.is_terminal):
                return
            # The owner closed the run in another phase than the work's own
            # (``EXHAUSTED``): the record, saved with the work's, follows.
            record.state, record.updated_at, record.finished_at = state, stamp, stamp
        record.error = self.task.status.error
        if state is TaskState.SUCCEEDED:
            record.output = output
        if save:
            record.runs = [replace(r) for r in self.runs]
            self._save()

    def _persist_end(self, outcome: Outcome) -> None:
        """Save the attempt's end as the work gave it, before the owner's verdict."""
        record = self.record
        assert record is not None
        stamp = now_ms()
        state = TaskState.of(outcome.phase)
        if not record.transition(state, now=stamp):
            return
        record.error = outcome.error
        if state is TaskState.SUCCEEDED:
            record.output = outcome.output
        runs = [replace(r) for r in self.runs]
        if runs and runs[-1].is_active:
            runs[-1].finish(outcome.phase, outcome.error, outcome.exit_code, now=stamp)
        record.runs = runs
        self._save()

    def _save(self) -> None:
        """Save the record; on a store error, say so (log and event) and try again later."""
        assert self.record is not None
        try:
            self.store.put(self.record)
        except BaseException as exc:  # whatever a store raises, the task goes on
            error = described(exc)
            logger.error("task %s: cannot save its record: %s", self.task.id, error)
            self.dirty = True
            if self.unsaved is not None:
                self.unsaved.add(self.task.id)
            self._publish(RecordNotSaved(self.task.id, error, at=now_ms()))
            if self.save_retry is None and not self.actor_stopped.is_set():
                delay, self.save_delay = self.save_delay, min(_SAVE_RETRY_MAX, self.save_delay * 2)
                self.save_retry = self._later(delay, _SaveAgain(), False)
            return
        self.save_delay = _SAVE_RETRY_FIRST
        self.dirty = False
        if self.unsaved is not None:
            self.unsaved.discard(self.task.id)

    def _on_save_again(self, _message: _SaveAgain) -> None:
        self.save_retry = None
        if self.record is not None:
            self._save()

    def _publish(self, event: Event) -> None:
        if self.bus is not None:
            self.bus.publish(event)

    def _wanted(self) -> bool:
        return self.bus is not None and self.bus.wanted

    def _later(self, delay: float, message: Any, injected: bool) -> Timer:
        clock = self.clock if injected else self.real_clock
        tell = self.actor_ref.tell
        return clock.call_later(delay, lambda: _tell_quietly(tell, message))

    def _cancel_timers(self, *, save_retry: bool = False) -> None:
        """Cancel the attempt's timers (and, with ``save_retry``, a pending save's)."""
        for timer in (self.timeout_timer, self.grace_timer, self.restart_timer):
            if timer is not None:
                timer.cancel()
        self.timeout_timer = self.grace_timer = self.restart_timer = None
        if save_retry and self.save_retry is not None:
            self.save_retry.cancel()
            self.save_retry = None


#: What the task actor does with each message it receives.
_HANDLERS: dict[type, Callable[[TaskActor, Any], Any]] = {
    _Begin: TaskActor._on_begin,
    _WorkDone: TaskActor._on_work_done,
    _Progress: TaskActor._on_progress,
    _Deadline: TaskActor._on_deadline,
    _Cancel: TaskActor._on_cancel,
    Verdict: TaskActor._on_verdict,
    _Restart: TaskActor._on_restart,
    _Resume: TaskActor._on_resume,
    _Terminate: TaskActor._on_terminate,
    _Snapshot: TaskActor._on_snapshot,
    _AttemptState: TaskActor._on_attempt_state,
    _SaveAgain: TaskActor._on_save_again,
}


#: Grace periods are about real threads and processes, so they use real time.
_REAL_CLOCK = SystemClock()


_END_REASONS = {"cancel": "cancelled", "terminate": "terminated by its owner"}

#: The name of this host, recorded in the runs of subprocess attempts.
_HOST = socket.gethostname()

#: A save that failed is tried again after this many seconds, doubling up to the maximum.
_SAVE_RETRY_FIRST, _SAVE_RETRY_MAX = 0.5, 10.0


def _what_was_raised(error: str) -> str:
    """The end of an error text after its traceback's last frame, on one line:
    the exception, its message and notes (all of ``error`` when it has no frames)."""
    lines = error.rstrip().splitlines()
    start = len(lines)
    while start > 0 and not lines[start - 1].startswith("  "):  # frames are indented
        start -= 1
    return " ".join(line.strip() for line in lines[start:] if line.strip())


# ----------------------------------------------------------------------------- reference


class TaskRef:
    """A reference to a running task actor; valid across restarts."""

    __slots__ = ("_loop_ended", "_ref", "executor", "id", "mailbox", "task")

    def __init__(
        self,
        ref: pykka.ActorRef[TaskActor],
        task: Task,
        executor: TaskExecutor,
        mailbox: Mailbox,
        loop_ended: Latch,
    ) -> None:
        self._ref = ref
        self._loop_ended = loop_ended
        self.id = task.id
        self.task = task
        self.executor = executor
        self.mailbox = mailbox

    @classmethod
    def start(
        cls,
        task: Task,
        executor: TaskExecutor,
        owner: TaskOwner,
        *,
        bus: EventBus | None = None,
        store: Any = None,
        clock: Clock | None = None,
        record: TaskRecord | None = None,
        restored: bool = False,
        begin: bool = True,
        threads: ActorThreads | None = None,
        real_clock: SystemClock | None = None,
        unsaved: set[str] | None = None,
    ) -> TaskRef:
        """Start the actor for ``task`` (and its first attempt, if ``begin``).

        With ``restored``, a terminal ``record`` is taken as the task's end:
        the actor starts done, publishes the task's finish and runs nothing
        until it is restarted.
        """
        mailbox = Mailbox()
        loop_ended = Latch()
        ref = TaskActor.start(
            task,
            executor,
            owner,
            bus=bus,
            store=store,
            clock=clock,
            record=record,
            restored=restored,
            mailbox=mailbox,
            threads=threads,
            loop_ended=loop_ended,
            real_clock=real_clock,
            begin=begin,
            unsaved=unsaved,
        )
        return cls(ref, task, executor, mailbox, loop_ended)

    @property
    def alive(self) -> bool:
        """Whether the actor still runs."""
        return self._ref.is_alive()

    def begin(self) -> None:
        """Start the first attempt of a task started with ``begin=False``."""
        _tell_quietly(self._ref.tell, _Begin())

    def restart(self) -> None:
        """Start a new attempt now (of a held, idle or ended task)."""
        _tell_quietly(self._ref.tell, _Resume())

    def verdict(self, verdict: Verdict) -> None:
        """Answer an ``AttemptEnded`` notice."""
        _tell_quietly(self._ref.tell, verdict)

    def cancel(self) -> None:
        """Ask the current attempt to wind down (a pending task ends at once)."""
        _tell_quietly(self._ref.tell, _Cancel())

    def deliver(self, message: Any) -> None:
        """Put ``message`` in the task's mailbox, kept across restarts.

        Fire and forget, like a tell: a message to a task whose actor has
        stopped is never read (``ask`` fails at once instead).

        Raises:
            Unsupported: when the task's kind takes no messages.
        """
        if type(self.executor).deliver is _BASE_DELIVER:
            raise Unsupported(
                f"task kind {self.executor.kind!r} does not accept messages (task {self.id!r})"
            )
        self.mailbox.put(message)

    def ask(self, message: Any, timeout: float | None = 10.0) -> Any:
        """Deliver a ``Request`` carrying ``message`` and wait for the work's reply.

        The request waits in the mailbox, across restarts, until an attempt
        takes it. When the attempt that took it ends without replying (it
        raised, returned, timed out or was stopped), ``ask`` raises
        ``NoReply`` at once, as OTP's ``gen_server:call`` fails when the
        server dies; so it does when the task has ended for good (or its
        actor stopped) with the request unanswered, or had already.

        Raises:
            NoReply: as soon as no reply can come (a ``WaitTimeout``).
            WaitTimeout: when no reply comes within ``timeout`` seconds (None:
                no bound).
            Unsupported: when the task's kind takes no messages.
            TypeError: when ``timeout`` is not a number (nothing is delivered).
        """
        timeout = wait_timeout(timeout)
        if not self._ref.is_alive():
            raise NoReply(f"task actor {self.id!r} has stopped: no attempt will answer")
        request = Request(message)
        self.deliver(request)
        return request.wait(timeout)

    def attempt_state(self) -> pykka.Future[tuple[int, bool, int | None]]:
        """Ask, without waiting, for ``(attempt, began, pid)``: the latest attempt's
        number, whether its work began (it may have ended since), and the
        process id of a subprocess attempt that still runs.

        The answer comes once the actor has finished what it was doing, so an
        attempt being started is either begun or ended by then. The future
        raises ``pykka.ActorDeadError`` when the actor has stopped.
        """
        future: pykka.Future[tuple[int, bool, int | None]] = self._ref.ask(
            _AttemptState(), block=False
        )
        return future

    def snapshot(self, timeout: float | None = 10.0) -> TaskSnapshot:
        """Return a consistent copy of the task's state.

        Raises:
            WaitTimeout: when the actor does not answer in time.
        """
        timeout = wait_timeout(timeout)
        try:
            result: TaskSnapshot = self._ref.ask(  # type: ignore[assignment]
                _Snapshot(), timeout=timeout
            )
        except pykka.Timeout:
            raise WaitTimeout(f"task {self.id!r} did not answer within {timeout}s") from None
        except pykka.ActorDeadError:
            raise WaitTimeout(f"task actor {self.id!r} has stopped") from None
        return result

    @overload
    def terminate(
        self, *, brutal: bool = False, final: bool = True, reply: None = None
    ) -> Request: ...

    @overload
    def terminate(self, *, brutal: bool = False, final: bool = True, reply: Replier) -> Replier: ...

    def terminate(
        self, *, brutal: bool = False, final: bool = True, reply: Replier | None = None
    ) -> Replier:
        """Stop the current attempt (its run closes ``CANCELLED``).

        With ``final`` the task ends for good; otherwise it waits, idle, for
        ``restart()``. ``reply`` (default: a new ``Request``, returned) is
        answered with a snapshot once the attempt has ended, or failed with
        ``WaitTimeout`` when the actor has already stopped.
        """
        request: Replier = Request(None) if reply is None else reply
        try:
            self._ref.tell(_Terminate(request, brutal, final))
        except pykka.ActorDeadError:
            request.fail(WaitTimeout(f"task {self.id!r} has already stopped"))
        return request

    def stop_soon(self) -> None:
        """Ask the actor to stop after the messages already queued (from any thread)."""
        self._ref.stop(block=False)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the actor (after ``terminate``) and wait until its loop has ended."""
        timeout = wait_timeout(timeout)
        try:
            self._ref.stop(block=True, timeout=timeout)
        except pykka.Timeout:  # pragma: no cover - the actor thread never blocks
            raise WaitTimeout(f"task actor {self.id!r} did not stop in {timeout}s") from None
        self._loop_ended.wait(timeout)


_BASE_DELIVER = BaseExecutor.deliver
