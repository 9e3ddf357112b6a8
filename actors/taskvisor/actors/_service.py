"""``ExecutorService``: submit task specs, get handles; each task runs once.

Restarts belong to supervisors (``taskvisor.supervision``); the service is
the simple front door: accept or reject a submission, run it in a task
actor, publish its lifecycle events, and shut everything down in order.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import attrs

from ._actor import AttemptEnded, TaskRef, TaskSnapshot, Verdict
from ._args import clock_of, count_of, executors_of, hooks_of, store_of
from ._base import ActorThreads, deadline_of, time_left, wait_timeout
from ._bus import EventBus, Subscriber
from ._clock import Clock, SystemClock
from ._errors import (
    InvalidData,
    NoReply,
    RejectReason,
    SubmissionError,
    TaskFailedError,
    WaitTimeout,
    shown,
)
from ._events import TaskAccepted, TaskFinished, TaskRejected
from ._executors import TaskExecutor, default_executors, kill_stale_group
from ._model import (
    Restart,
    Task,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskSpec,
    TaskState,
    TaskStatus,
    bound_text,
    now_ms,
    stamp_ms,
)

__all__ = ["ExecutorService", "TaskHandle", "close_shared", "resume_record"]

logger = logging.getLogger("taskvisor.service")


def kill_leftover(run: TaskRun) -> str | None:
    """Kill the process group a lost run left running, if it recorded one that lives.

    Reads ``run.pgid``, ``run.pid`` and ``run.process_started`` (absent
    fields count as None) and, when ``run.host`` is recorded, acts only on
    that host.
    Returns a sentence for the run's error when a group was killed.
    """
    pgid = getattr(run, "pgid", None)
    if not isinstance(pgid, int):
        return None
    host = getattr(run, "host", None)
    if isinstance(host, str) and host and host != socket.gethostname():
        return None  # another machine's process: not ours to see or kill
    pid = getattr(run, "pid", None)
    started = getattr(run, "process_started", None)
    killed = kill_stale_group(
        pgid,
        pid if isinstance(pid, int) else None,
        started if isinstance(started, int) else None,
    )
    if not killed:
        return None
    logger.warning("killed process group %s left running by a lost run", pgid)
    return f"its process group {pgid} was still running and was killed"


def resume_record(record: TaskRecord, spec: TaskSpec, *, now: int | None = None) -> bool:
    """Bring a record found in a store at start-up up to date; return whether to run the task.

    A ``SUCCEEDED`` record is not run again. A record found ``RUNNING`` was
    lost with the process that ran it: a process group its open run
    recorded (``pgid``, guarded against pid reuse by ``pid`` and
    ``process_started``) that is still alive is killed first (``kill_stale_group``,
    which waits up to 5 s for it to be gone), so the old work never runs
    beside a new attempt; then the run is closed as ``FAILED`` with an error
    saying so, and the task runs again unless it is ``TEMPORARY``. A record
    that ended (any terminal state) is not run again: its output and status
    are restored.
    """
    stamp = stamp_ms(now)
    if record.state is TaskState.RUNNING:
        lost = "lost: the process running this attempt ended before it finished"
        for run in record.runs:
            if run.is_active:
                killed = kill_leftover(run)
                run.finish(TaskPhase.FAILED, f"{lost}; {killed}" if killed else lost, now=stamp)
        record.transition(TaskState.FAILED, now=stamp)
        record.error = lost
        return spec.restart is not Restart.TEMPORARY
    return record.state is TaskState.PENDING


def close_shared(
    threads: ActorThreads,
    real_clock: SystemClock,
    executors: Mapping[str, TaskExecutor],
    bus: EventBus,
    timeout: float | None,
) -> None:
    """Release what the actors of a service or tree shared, once every actor has stopped.

    Joins the actor threads and the timer thread, closes the executors
    (their workers, loop and processes: every child process group still
    running is killed), then stops the bus after it has delivered every
    event. ``timeout`` (seconds, None for no bound) is one deadline for all
    of it, not a bound per step.
    """
    deadline = deadline_of(timeout)
    threads.close(time_left(deadline))
    real_clock.close(time_left(deadline))
    for executor in executors.values():
        try:
            executor.close(time_left(deadline))
        except Exception:  # one executor's failure must not leave the others open
            logger.exception("closing the %r executor failed", executor.kind)
    bus.stop(time_left(deadline))


class TaskHandle:
    """The submitter's view of one task.

    A handle keeps working after its task ended, for as long as it is held:
    it keeps the final snapshot (task, runs, output), not the task's actor,
    which is released as soon as the task ends.
    """

    __slots__ = ("__weakref__", "_begun", "_done", "_final", "_ref", "_seq", "_task", "id")

    def __init__(self, service: ExecutorService, task: Task) -> None:
        self.id = task.id
        self._task = task  # as submitted: what a handle given up at shutdown reports
        self._seq = 0  # submission order, set by the service
        self._ref: TaskRef | None = None
        self._final: TaskSnapshot | None = None
        self._done = threading.Event()
        self._begun = False

    def status(self, timeout: float | None = 10.0) -> Task:
        """Return a copy of the task as it stands (metadata, spec, status).

        Args:
            timeout: seconds to wait at most for the task's actor to answer
                (default 10; None: no bound). A task that has ended answers
                at once.

        Raises:
            WaitTimeout: when the actor does not answer in time.
        """
        return self._snapshot(timeout).task

    def runs(self, timeout: float | None = 10.0) -> tuple[TaskRun, ...]:
        """Return the task's runs, oldest first (``timeout`` as for ``status``).

        Raises:
            WaitTimeout: when the actor does not answer in time.
        """
        return self._snapshot(timeout).runs

    def done(self) -> bool:
        """Whether the task has ended for good."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Task:
        """Wait for the task to end and return it, in its terminal phase.

        Args:
            timeout: seconds to wait at most; None (the default, as in
                ``concurrent.futures``) waits until the task ends, which it
                does at the latest when the service shuts down.

        Raises:
            WaitTimeout: when it has not ended within ``timeout`` seconds.
        """
        timeout = wait_timeout(timeout)
        if not self._done.wait(timeout):
            raise WaitTimeout(f"task {self.id!r} still running after {timeout}s")
        assert self._final is not None
        return self._final.task

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task and return its output.

        Args:
            timeout: as for ``wait`` (None, the default, waits until it ends).

        Raises:
            TaskFailedError: when it ended without succeeding (carries the task).
            WaitTimeout: when it has not ended within ``timeout`` seconds.
        """
        task = self.wait(timeout)
        if task.status.phase is not TaskPhase.SUCCEEDED:
            raise TaskFailedError(task)
        assert self._final is not None
        return self._final.output

    def cancel(self) -> None:
        """Ask the task to stop; a task that has not started ends without starting."""
        ref = self._ref
        if ref is not None and not self._done.is_set():
            ref.cancel()

    def deliver(self, message: Any) -> None:
        """Put ``message`` in the task's mailbox (``ctx.receive()`` takes it).

        Raises:
            Unsupported: when the task's kind takes no messages.
            TaskFailedError: never; a message to an ended task is dropped with a warning.
        """
        ref = self._ref
        if ref is None or self._done.is_set():
            logger.warning("task %s has ended; message %r dropped", self.id, message)
            return
        ref.deliver(message)

    def ask(self, message: Any, timeout: float | None = 10.0) -> Any:
        """Send ``message`` as a ``Request`` and return the work's reply.

        Args:
            timeout: seconds to wait for the reply (default 10).

        Raises:
            NoReply: at once when the task has ended, or as soon as the
                attempt that took the request ends without replying.
            WaitTimeout: when no reply comes within ``timeout`` seconds, or
                the task has not started yet.
            Unsupported: when the task's kind takes no messages.
        """
        timeout = wait_timeout(timeout)  # a bad one is refused before anything else
        if self._done.is_set():
            phase = self.wait(0).status.phase.value
            raise NoReply(f"task {self.id!r} has ended ({phase}): no attempt will answer")
        ref = self._ref
        if ref is None:
            raise WaitTimeout(f"task {self.id!r} is not running")
        return ref.ask(message, timeout)

    def _snapshot(self, timeout: float | None) -> TaskSnapshot:
        timeout = wait_timeout(timeout)
        deadline = deadline_of(timeout)
        ref = self._ref
        if self._final is None and ref is not None:
            with contextlib.suppress(WaitTimeout):
                return ref.snapshot(time_left(deadline))
        # It ended (and its actor stopped) between the check and the ask.
        if not self._done.wait(time_left(deadline)):
            raise WaitTimeout(f"task {self.id!r} did not answer within {timeout}s")
        assert self._final is not None
        return self._final

    def _finished(self, snapshot: TaskSnapshot) -> None:
        self._final = snapshot
        self._done.set()

    def _given_up(self) -> None:
        """End a task the shutdown could not end in time (or never started): ``CANCELLED``.

        Its waiters return; ``status()`` shows the attempt it had reached.
        """
        if self._done.is_set():
            return
        ref = self._ref
        task = ref.task if ref is not None else self._task
        status = TaskStatus(
            phase=TaskPhase.CANCELLED,
            attempt=task.status.attempt,
            error="the service shut down before the task ended (given up at its deadline)",
        )
        final = attrs.evolve(task, status=status)
        self._finished(TaskSnapshot(task=final, runs=(), output=None, done=True))

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id!r} {'done' if self.done() else 'active'}>"


@attrs.define
class _Owner:
    """The service as a task owner: runs each task once."""

    service: ExecutorService
    handle: TaskHandle
    restarts = False

    def attempt_ended(self, notice: AttemptEnded) -> Verdict:
        return Verdict(notice.attempt)

    def task_done(self, snapshot: TaskSnapshot) -> None:
        ref = self.service._task_done(self.handle, snapshot)
        if ref is not None:
            ref.stop_soon()  # the task ran once; free its thread


class ExecutorService:
    """Accept task specs, run each once in its own task actor, publish lifecycle events.

    Args:
        hooks: subscribers to the service's event bus (``TaskHook`` or callables).
        store: a ``TaskStore`` to persist records in (and resume from).
        clock: the clock for timeouts (tests pass a ``ManualClock``).
        executors: executors by kind (defaults: call, async, subprocess).
        max_tasks: how many unfinished tasks may be accepted at once.
        max_running: how many may run at once; the rest wait, ``PENDING``.
        keep_finished: how many handles of finished tasks ``get`` still
            finds although nobody holds them (default 1,000; the most
            recently finished are kept).
        name: the owner's name a ``store`` records while the service owns it.

    Raises:
        StoreLocked: when ``store`` is owned by another live tree or service.
        TypeError: when an argument is of the wrong kind (``hooks`` a string,
            ``clock`` not a clock, a count not an int), naming it.
        InvalidData: when a count is out of range (``max_tasks`` and
            ``max_running`` at least 1, ``keep_finished`` at least 0).

    Memory stays bounded however many tasks pass through: a finished
    task's actor, thread and executor state are released when it ends, and
    the service keeps its handle only weakly (``get`` finds it while the
    submitter holds it) plus the last ``keep_finished`` in a bounded list.
    An id is taken while ``get`` finds its task: a finished task's id can
    be submitted again once its handle is let go and has left the last
    ``keep_finished``.

    Usable as a context manager: leaving it shuts the service down.
    """

    def __init__(
        self,
        *,
        hooks: Iterable[Subscriber] = (),
        store: Any = None,
        clock: Clock | None = None,
        executors: Mapping[str, TaskExecutor] | None = None,
        max_tasks: int | None = None,
        max_running: int | None = None,
        keep_finished: int = 1000,
        name: str = "executor-service",
    ) -> None:
        # Every argument is checked before anything is held or started.
        hooks = hooks_of(hooks, "ExecutorService(hooks)")
        clock = clock_of(clock, "ExecutorService(clock)")
        given = executors_of(executors, "ExecutorService(executors)")
        max_tasks = count_of(max_tasks, "ExecutorService(max_tasks)", low=1)
        max_running = count_of(max_running, "ExecutorService(max_running)", low=1)
        kept = count_of(keep_finished, "ExecutorService(keep_finished)", low=0, none=False)
        store = store_of(store, "ExecutorService(store)")
        acquire = getattr(store, "acquire", None)
        if callable(acquire):
            acquire(name)  # one live owner per store; raises StoreLocked naming it
        self.bus = EventBus(hooks)
        self.store = store
        self.clock = clock
        self.executors = given if given is not None else default_executors()
        self.max_tasks = max_tasks
        self.max_running = max_running
        self.keep_finished = 0 if kept is None else kept
        self._lock = threading.Lock()
        self._handles: dict[str, TaskHandle] = {}  # unfinished tasks, in submission order
        self._refs: dict[str, TaskRef] = {}  # their actors
        self._finished: weakref.WeakValueDictionary[str, TaskHandle] = weakref.WeakValueDictionary()
        self._kept: OrderedDict[str, TaskHandle] = OrderedDict()  # the last keep_finished
        self._threads = ActorThreads()
        self._real_clock = SystemClock(keep_thread=True)
        self._active = 0
        self._running = 0
        self._queued: deque[TaskHandle] = deque()
        self._closing = False
        self._ids = itertools.count(1)

    # submission ------------------------------------------------------------------

    def submit(self, spec: TaskSpec | Mapping[str, Any], *, id: str | None = None) -> TaskHandle:
        """Accept ``spec`` and start it; return its handle.

        ``id`` defaults to the spec's name. A ``spec`` may also be plain
        data, as a config file holds it.

        Raises:
            SubmissionError: with ``reason`` INVALID_SPEC, DUPLICATE_ID,
                CAPACITY or SHUTTING_DOWN; a ``rejected`` event is published
                and the submission gets no task id.
        """
        if not isinstance(spec, TaskSpec):
            try:
                from ._convert import from_data

                spec = from_data(TaskSpec, spec, where="spec")
            except InvalidData as exc:
                raise self._reject(RejectReason.INVALID_SPEC, str(exc)) from None
        task_id = id if id is not None else spec.name
        executor = self.executors.get(spec.kind)
        with self._lock:
            if self._closing:
                raise self._reject(RejectReason.SHUTTING_DOWN, "the service is shutting down")
            if executor is None:
                raise self._reject(
                    RejectReason.INVALID_SPEC,
                    f"kind: no executor for task kind {shown(spec.kind)} "
                    f"(known: {', '.join(sorted(self.executors))})",
                )
            if task_id in self._handles or task_id in self._finished:
                raise self._reject(RejectReason.DUPLICATE_ID, f"duplicate task id {shown(task_id)}")
            if self.max_tasks is not None and self._active >= self.max_tasks:
                raise self._reject(
                    RejectReason.CAPACITY,
                    f"capacity reached: {self._active} of {self.max_tasks} tasks unfinished",
                )
            try:
                task = Task.new(task_id, spec)
            except InvalidData as exc:
                raise self._reject(RejectReason.INVALID_SPEC, str(exc)) from None
            handle = TaskHandle(self, task)
            handle._seq = next(self._ids)
            self._handles[task_id] = handle
            self._active += 1
            record, run_it = self._resume(task_id, spec)
            self.bus.publish(TaskAccepted(task_id, spec.name, at=task.metadata.created_at))
            if not run_it:
                assert record is not None
                self._restore(handle, task, record)
                self._release(handle)
                return handle
            begin = self.max_running is None or self._running < self.max_running
            if begin:
                self._running += 1
                handle._begun = True
            ref = TaskRef.start(
                task,
                executor,
                _Owner(self, handle),
                bus=self.bus,
                store=self.store,
                clock=self.clock,
                record=record,
                begin=begin,
                threads=self._threads,
                real_clock=self._real_clock,
            )
            handle._ref = ref
            self._refs[task_id] = ref
            if not begin:
                self._queued.append(handle)
        return handle

    def _reject(self, reason: RejectReason, message: str) -> SubmissionError:
        self.bus.publish(TaskRejected(reason, message, at=now_ms()))
        return SubmissionError(reason, f"submission rejected: {message}")

    def _resume(self, task_id: str, spec: TaskSpec) -> tuple[TaskRecord | None, bool]:
        if self.store is None:
            return None, True
        record: TaskRecord | None = self.store.get(task_id)
        if record is None:
            return None, True
        run_it = resume_record(record, spec)
        self.store.put(record)
        return record, run_it

    def _restore(self, handle: TaskHandle, task: Task, record: TaskRecord) -> None:
        """Finish a handle from a stored, ended record without running it again."""
        phase = TaskPhase(record.state.value)
        task.status = attrs.evolve(
            task.status, phase=phase, attempt=record.attempts, error=record.error
        )
        snapshot = TaskSnapshot(task=task, runs=tuple(record.runs), output=record.output, done=True)
        self.bus.publish(TaskFinished(task.id, task.status, at=now_ms()))
        self._active -= 1
        handle._finished(snapshot)

    def _release(self, handle: TaskHandle) -> TaskRef | None:
        """Forget a finished task's actor; keep its handle weakly (and among the last few).

        Call with the lock held. Returns the task's ref, for the caller to stop.
        """
        task_id = handle.id
        if self._handles.get(task_id) is handle:
            del self._handles[task_id]
        ref = handle._ref
        if ref is not None and self._refs.get(task_id) is ref:
            del self._refs[task_id]
        # The handle keeps the final snapshot only: a ref reaches the actor (its
        # inbox answers late messages through it), which must be freed.
        handle._ref = None
        self._finished[task_id] = handle
        if self.keep_finished > 0:
            self._kept[task_id] = handle
            self._kept.move_to_end(task_id)
            while len(self._kept) > self.keep_finished:
                self._kept.popitem(last=False)
        return ref

    def _task_done(self, handle: TaskHandle, snapshot: TaskSnapshot) -> TaskRef | None:
        """On the task's actor thread: the task ended; returns its ref, to be stopped."""
        handle._finished(snapshot)
        with self._lock:
            ref = self._release(handle)
            self._active -= 1
            if handle._begun:
                self._running -= 1
            while self._queued and (self.max_running is None or self._running < self.max_running):
                queued = self._queued.popleft()
                if queued.done():
                    continue
                self._running += 1
                queued._begun = True
                assert queued._ref is not None
                queued._ref.begin()
        return ref

    # inspection ------------------------------------------------------------------

    def get(self, task_id: str) -> TaskHandle:
        """Return the handle of ``task_id``.

        Finds every unfinished task, and a finished one while its handle is
        held somewhere or is among the last ``keep_finished`` to finish.

        Raises:
            KeyError: when no task has that id (an id that is not a str
                included), or it finished and its handle was let go.
        """
        if not isinstance(task_id, str):
            raise KeyError(shown(task_id))
        with self._lock:
            handle = self._handles.get(task_id)
            if handle is None:
                handle = self._finished.get(task_id)
        if handle is None:
            raise KeyError(bound_text(task_id, 200))
        return handle

    def handles(self) -> list[TaskHandle]:
        """Return the handles ``get`` can find, in submission order."""
        with self._lock:
            live = list(self._handles.values())
            done = [h for h in self._finished.values() if h.id not in self._handles]
        return sorted([*done, *live], key=lambda h: h._seq)

    # shutdown --------------------------------------------------------------------

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Stop accepting, end every task (reverse submission order), stop every thread.

        Returns when every task actor, worker thread and child process is gone
        and every event has been delivered to the hooks, or when ``timeout``
        seconds (default 30; None: no bound) have passed: one deadline for
        all of it. Child processes still running then are killed and reaped
        all the same; work that cannot be killed (a thread) is abandoned and
        logged. Safe to call more than once.
        """
        deadline = deadline_of(timeout)
        with self._lock:
            self._closing = True
            refs = list(reversed(self._refs.values()))
            self._queued.clear()
        requests = [ref.terminate() for ref in refs if ref.alive]
        for request in requests:
            try:
                request.wait(time_left(deadline))
            except WaitTimeout:
                logger.warning("a task did not end within %ss at shutdown", timeout)
        for ref in refs:  # every actor stops at once; closing their threads waits for all
            ref.stop_soon()
        close_shared(self._threads, self._real_clock, self.executors, self.bus, time_left(deadline))
        with self._lock:  # queued ones, and those that did not end in time: their waiters return
            unfinished = [h for h in self._handles.values() if not h.done()]
        for handle in unfinished:
            handle._given_up()
        release = getattr(self.store, "release", None)
        if callable(release):
            release()

    def __enter__(self) -> ExecutorService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
