"""``ExecutorService``: submit task specs, get handles; each task runs once.

Restarts belong to supervisors (``taskvisor.supervision``); the service is
the simple front door: accept or reject a submission, run it in a task
actor, publish its lifecycle events, and shut everything down in order.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import attrs

from ._actor import AttemptEnded, TaskRef, TaskSnapshot, Verdict
from ._base import ActorThreads
from ._bus import EventBus, Subscriber
from ._clock import Clock, SystemClock
from ._errors import (
    InvalidData,
    RejectReason,
    SubmissionError,
    TaskFailedError,
    WaitTimeout,
)
from ._events import TaskAccepted, TaskFinished, TaskRejected
from ._executors import TaskExecutor, default_executors
from ._model import (
    Restart,
    Task,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskSpec,
    TaskState,
    now_ms,
    stamp_ms,
)

__all__ = ["ExecutorService", "TaskHandle", "close_shared", "resume_record"]

logger = logging.getLogger("taskvisor.service")


def resume_record(record: TaskRecord, spec: TaskSpec, *, now: int | None = None) -> bool:
    """Bring a record found in a store at start-up up to date; return whether to run the task.

    A ``SUCCEEDED`` record is not run again. A record found ``RUNNING`` was
    lost with the process that ran it: its open run is closed as ``FAILED``
    with an error saying so, and the task runs again unless it is
    ``TEMPORARY``. A record that ended (any terminal state) is not run again:
    its output and status are restored.
    """
    stamp = stamp_ms(now)
    if record.state is TaskState.RUNNING:
        lost = "lost: the process running this attempt ended before it finished"
        for run in record.runs:
            if run.is_active:
                run.finish(TaskPhase.FAILED, lost, now=stamp)
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
    (their workers, loop and processes), then stops the bus after it has
    delivered every event.
    """
    threads.close(timeout)
    real_clock.close(timeout)
    for executor in executors.values():
        executor.close()
    bus.stop(timeout)


class TaskHandle:
    """The submitter's view of one task."""

    def __init__(self, service: ExecutorService, task: Task) -> None:
        self._service = service
        self.id = task.id
        self._ref: TaskRef | None = None
        self._final: TaskSnapshot | None = None
        self._done = threading.Event()
        self._begun = False

    def status(self) -> Task:
        """Return a copy of the task as it stands (metadata, spec, status)."""
        return self._snapshot().task

    def runs(self) -> tuple[TaskRun, ...]:
        """Return the task's runs, oldest first."""
        return self._snapshot().runs

    def done(self) -> bool:
        """Whether the task has ended for good."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Task:
        """Wait for the task to end and return it, in its terminal phase.

        Raises:
            WaitTimeout: when it has not ended within ``timeout`` seconds.
        """
        if not self._done.wait(timeout):
            raise WaitTimeout(f"task {self.id!r} still running after {timeout}s")
        assert self._final is not None
        return self._final.task

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task and return its output.

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
        if self._ref is not None and not self._done.is_set():
            self._ref.cancel()

    def deliver(self, message: Any) -> None:
        """Put ``message`` in the task's mailbox (``ctx.receive()`` takes it).

        Raises:
            Unsupported: when the task's kind takes no messages.
            TaskFailedError: never; a message to an ended task is dropped with a warning.
        """
        if self._ref is None or self._done.is_set():
            logger.warning("task %s has ended; message %r dropped", self.id, message)
            return
        self._ref.deliver(message)

    def ask(self, message: Any, timeout: float | None = 10.0) -> Any:
        """Send ``message`` as a ``Request`` and return the work's reply.

        Raises:
            WaitTimeout: when no reply comes within ``timeout`` seconds.
            Unsupported: when the task's kind takes no messages.
        """
        if self._ref is None:
            raise WaitTimeout(f"task {self.id!r} is not running")
        return self._ref.ask(message, timeout)

    def _snapshot(self) -> TaskSnapshot:
        ref = self._ref
        if self._final is None and ref is not None:
            with contextlib.suppress(WaitTimeout):
                return ref.snapshot()
        # It ended (and its actor stopped) between the check and the ask.
        if not self._done.wait(10):
            raise WaitTimeout(f"task {self.id!r} does not answer")
        assert self._final is not None
        return self._final

    def _finished(self, snapshot: TaskSnapshot) -> None:
        self._final = snapshot
        self._done.set()

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
        self.service._task_done(self.handle, snapshot)
        ref = self.handle._ref
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
    ) -> None:
        self.bus = EventBus(hooks)
        self.store = store
        self.clock = clock
        self.executors = dict(executors) if executors is not None else default_executors()
        self.max_tasks = max_tasks
        self.max_running = max_running
        self._lock = threading.Lock()
        self._handles: dict[str, TaskHandle] = {}
        self._refs: list[TaskRef] = []
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
                    f"kind: no executor for task kind {spec.kind!r} "
                    f"(known: {', '.join(sorted(self.executors))})",
                )
            if task_id in self._handles:
                raise self._reject(RejectReason.DUPLICATE_ID, f"duplicate task id {task_id!r}")
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
            self._handles[task_id] = handle
            self._active += 1
            record, run_it = self._resume(task_id, spec)
            self.bus.publish(TaskAccepted(task_id, spec.name, at=task.metadata.created_at))
            if not run_it:
                assert record is not None
                self._restore(handle, task, record)
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
            self._refs.append(ref)
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

    def _task_done(self, handle: TaskHandle, snapshot: TaskSnapshot) -> None:
        handle._finished(snapshot)
        with self._lock:
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

    # inspection ------------------------------------------------------------------

    def get(self, task_id: str) -> TaskHandle:
        """Return the handle of ``task_id``.

        Raises:
            KeyError: when no task has that id.
        """
        return self._handles[task_id]

    def handles(self) -> list[TaskHandle]:
        """Return every handle, in submission order."""
        with self._lock:
            return list(self._handles.values())

    # shutdown --------------------------------------------------------------------

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Stop accepting, end every task (reverse submission order), stop every thread.

        Returns when every task actor, worker thread and child process is gone
        and every event has been delivered to the hooks.

        Raises:
            WaitTimeout: when something did not stop within ``timeout`` seconds.
        """
        with self._lock:
            self._closing = True
            refs = list(reversed(self._refs))
            self._queued.clear()
        requests = [ref.terminate() for ref in refs if ref.alive]
        for request in requests:
            try:
                request.wait(timeout)
            except WaitTimeout:
                logger.warning("a task did not end within %ss at shutdown", timeout)
        for ref in refs:  # every actor stops at once; closing their threads waits for all
            ref.stop_soon()
        close_shared(self._threads, self._real_clock, self.executors, self.bus, timeout)

    def __enter__(self) -> ExecutorService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
