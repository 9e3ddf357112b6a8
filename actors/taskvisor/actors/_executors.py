"""Task kinds: the control plane that starts, cancels and feeds running work.

Built-in kinds:

- ``call``: ``fn(ctx, *args, **kwargs)`` on a worker thread of the task's
  own, kept across restarts so a restart starts no thread;
- ``async``: ``await fn(ctx, *args, **kwargs)`` on one event-loop thread
  shared by the executor's tasks; cancel is ``Task.cancel()``;
- ``subprocess``: an argv list (a shell only with ``shell=True``) in a
  session of its own; cancel sends the spec's ``stop_signal`` (SIGTERM by
  default) to its process group, ``kill`` sends SIGKILL; the exit code is
  recorded, a signal death as ``-signum``; an exit code in the spec's
  ``success_exit_codes`` (default ``(0,)``) ends the attempt ``SUCCEEDED``,
  any other ``FAILED``.

Child output (``subprocess``)
-----------------------------

``stdout`` / ``stderr`` of the spec: ``"inherit"`` and ``"null"`` hand the
child the host's stream or ``/dev/null``; ``"prefix"`` and a file path pipe
the stream to one pump thread per attempt (``taskvisor-output-<task id>``),
which logs each line on ``taskvisor.output`` as ``[<task id>] line`` (a
tree's task id is the child's path, ``app/db``) or appends it to the file,
rotating it by size. The pump reads 64 KiB at a time and keeps at most one
cut line (``OUTPUT_LINE_MAX``) per stream, so output costs the host no
memory however much of it there is; a slow handler slows the child (its
pipe fills), never the host. The pump ends when the child's whole group
has exited (end of file on every pipe); the waiter drains it before it
reports the end, so every line is logged before the exit is known, and
gives up on it after ``_DRAIN_TIMEOUT`` (2 s) when a process that left the
group still holds the pipe.

Every executor reports how the work ended through ``ctx.sink.finished``
exactly once per attempt, from a thread of its own, never the task actor's.

Cancellation is honest: an attempt ends ``CANCELLED`` only when the tree
asked for it (``ctx.cancelled``). ``TaskCancelled`` or
``asyncio.CancelledError`` raised by the work when no cancel was requested
is reported ``FAILED`` with an error saying so, for every kind alike.
Work that ignores a cancel is abandoned by its actor after its grace
(``kill`` returns False for what cannot be killed: a thread, a coroutine
that swallows ``CancelledError``) and never holds up ``close()``.

Process lifetime (``subprocess``)
---------------------------------

A child must not outlive the process hosting its tree, even when that
process is SIGKILLed. Two layers see to it:

1. On Linux each child is spawned with ``PR_SET_PDEATHSIG = SIGKILL``: the
   kernel kills it when its parent dies. The signal fires when the *thread*
   that forked the child ends, not the process, so every child is forked by
   one long-lived spawner thread of the executor (started with the first
   child, ended by ``close()``), never by a task actor's thread.

   The flag is set by ``setpriv --pdeathsig KILL -- <command>``
   (util-linux, present on nearly every Linux): a small C program that
   sets it and execs the command under the same pid. ``subprocess`` can
   then keep its fast ``vfork`` path, and no Python code runs between fork
   and exec. The program is looked up before the spawn, so a missing one is
   still a start error (``FileNotFoundError``), not an exit code 127, and
   one that cannot run is a ``PermissionError`` saying why (a directory,
   not executable), where ``Popen`` says only "Permission denied".
   Where ``setpriv`` is missing (or too old for ``--pdeathsig``), the flag
   is set in a ``preexec_fn`` instead. Python warns that ``preexec_fn`` can
   deadlock in a threaded parent, because the child runs Python code
   between fork and exec and may wait for a lock another thread held at
   fork time; the function used takes no such lock (it calls one ``prctl``
   resolved through ``ctypes`` before the fork, and ``os.getppid()``, and
   kills itself if the parent already died), but it forces a full ``fork``,
   measured 10 to 20 times slower per spawn (14-28 ms against 1-3 ms, with
   600 threads in the parent). Set-uid programs drop the flag at exec.
2. ``PDEATHSIG`` reaches the direct child only. For the rest of its process
   group (a shell's children, a server's workers), one small guard process
   per executor (``python -I -S -c``) keeps the set of live groups, which the
   executor writes to a pipe; when the pipe closes, because the host exited
   or died, the guard SIGKILLs every group still listed and exits. This
   layer works on macOS and the BSDs too.

Other platforms: macOS and the BSDs have no ``PDEATHSIG``; there the guard
alone kills the groups of a SIGKILLed host, a moment after the host dies.
Windows is not supported by the ``subprocess`` kind (process groups and
``killpg`` are POSIX). If the guard cannot start (no ``sys.executable``), a
warning is logged and only layer 1 remains.

Each attempt's ``ctx.pid``, ``ctx.pgid`` and ``ctx.started`` (a start-time
fingerprint) are set before ``start()`` returns, so the run can record
them; a tree resumed after its host died calls ``kill_stale_group`` with
them to kill a group that survived (another host's, or a platform without
either layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import importlib
import inspect
import itertools
import linecache
import logging
import os
import queue
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from stat import S_ISDIR, S_ISREG
from typing import Any, Protocol, runtime_checkable

from ._base import deadline_of, time_left, wait_timeout
from ._context import Outcome, TaskContext
from ._errors import TargetImportError, TaskCancelled, Unsupported
from ._model import OUTPUT_LINE_MAX, Task, TaskPhase, TaskSpec, is_async_def, is_output_file
from ._publish import logging_wanted

__all__ = [
    "AsyncExecutor",
    "BaseExecutor",
    "CallExecutor",
    "SubprocessExecutor",
    "TaskExecutor",
    "default_executors",
    "kill_stale_group",
    "process_start_time",
    "resolve_target",
]

logger = logging.getLogger("taskvisor.executors")
#: The logger of ``stdout="prefix"`` / ``stderr="prefix"`` child output.
output_logger = logging.getLogger("taskvisor.output")

#: How long ``close()`` waits, in seconds, when given no timeout.
CLOSE_TIMEOUT = 10.0


@runtime_checkable
class TaskExecutor(Protocol):
    """The control plane of one task kind. Methods are called from task actors."""

    kind: str

    def start(self, task: Task, ctx: TaskContext) -> None:
        """Begin the attempt ``ctx.attempt``; return once the work is under way.

        Raising means the work never began (the attempt fails without a start).
        """
        ...

    def cancel(self, task: Task, ctx: TaskContext) -> None:
        """Ask the work to wind down; it may still end succeeded or failed."""
        ...

    def kill(self, task: Task, ctx: TaskContext) -> bool:
        """Stop the work at once if the kind can; return whether it will still report.

        Never blocks; calling it again is harmless. False means the work
        cannot be killed (a thread, a coroutine that ignores cancellation):
        the actor abandons it and closes the run itself.
        """
        ...

    def deliver(self, task: Task, message: Any, ctx: TaskContext) -> None:
        """Hand an inbound message to the work."""
        ...

    def reconcile(self, task: Task, ctx: TaskContext) -> None:
        """Refresh the state of polled kinds."""
        ...

    def release(self, task_id: str) -> None:
        """Free what the executor keeps for a task whose actor has stopped."""
        ...

    def close(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Stop shared resources (threads, loops, processes) once no task uses them.

        Args:
            timeout: seconds the whole close may take (default
                ``CLOSE_TIMEOUT``, 10 s); None waits as long as it takes.
                What has not ended by then (abandoned work) is left behind.
        """
        ...


class BaseExecutor:
    """Defaults for optional operations: each raises ``Unsupported`` naming the kind."""

    kind = "base"

    def start(self, task: Task, ctx: TaskContext) -> None:
        raise Unsupported(f"task kind {self.kind!r} cannot start task {task.id!r}")

    def cancel(self, task: Task, ctx: TaskContext) -> None:
        ctx.request_cancel()

    def kill(self, task: Task, ctx: TaskContext) -> bool:
        """Cancel; work that ignores it is abandoned by its actor."""
        self.cancel(task, ctx)
        return False

    def deliver(self, task: Task, message: Any, ctx: TaskContext) -> None:
        """Raises: Unsupported: always, for kinds that take no messages."""
        raise Unsupported(f"task kind {self.kind!r} does not accept messages (task {task.id!r})")

    def reconcile(self, task: Task, ctx: TaskContext) -> None:
        """Raises: Unsupported: always, for kinds that are not polled."""
        raise Unsupported(f"task kind {self.kind!r} does not support reconcile (task {task.id!r})")

    def release(self, task_id: str) -> None:
        """Nothing is kept per task by default."""

    def close(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Nothing is shared by default."""


def resolve_target(target: Callable[..., Any] | str | None, where: str = "target") -> Any:
    """Return the callable for ``target``, importing ``"package.module:function"``.

    Raises:
        TargetImportError: when the module or the attribute cannot be found,
            or the result is not callable.
    """
    if callable(target):
        return target
    if not isinstance(target, str) or ":" not in target:
        raise TargetImportError(
            f"{where}: expected a callable or 'module:function', got {target!r}"
        )
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise TargetImportError(
            f"{where}: cannot import module {module_name!r} for {target!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetImportError(
                f"{where}: module {module_name!r} has no attribute {attr_path!r} (from {target!r})"
            ) from None
    if not callable(obj):
        raise TargetImportError(f"{where}: {target!r} is not callable, got {obj!r}")
    return obj


def _error_text(exc: BaseException) -> str:
    """Format a traceback as text, cheaply (no column carets), skipping the runner's frame.

    Chained causes and contexts come first, as Python prints them.
    """
    lines: list[str] = []
    seen: set[int] = set()
    _format_chain(exc, lines, seen, skip_first=True)
    return "".join(lines).rstrip()


def _format_chain(
    exc: BaseException, lines: list[str], seen: set[int], *, skip_first: bool = False
) -> None:
    seen.add(id(exc))
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and id(cause) not in seen:
        _format_chain(cause, lines, seen)
        lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif context is not None and not exc.__suppress_context__ and id(context) not in seen:
        _format_chain(context, lines, seen)
        lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    tb = exc.__traceback__
    if skip_first and tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        lines.append("Traceback (most recent call last):\n")
    while tb is not None:
        code, lineno = tb.tb_frame.f_code, tb.tb_lineno
        lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
        source = linecache.getline(code.co_filename, lineno).strip()
        if source:
            lines.append(f"    {source}\n")
        tb = tb.tb_next
    lines.append(_exception_line(exc))


def _exception_line(exc: BaseException) -> str:
    """``traceback.format_exception_only`` for the common case, several times faster."""
    if isinstance(exc, SyntaxError):  # shows the offending line: leave that to traceback
        return "".join(traceback.format_exception_only(exc))
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    try:
        text = str(exc)
    except Exception:
        text = "<exception str() failed>"
    line = f"{name}: {text}\n" if text else f"{name}\n"
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list | tuple):
        line += "".join(f"{note}\n" for note in notes)
    return line


# --------------------------------------------------------------------------- cancellation


def _cancelled_outcome(exc: BaseException, ctx: TaskContext) -> Outcome:
    """The outcome of work that ended with a cancellation exception.

    ``CANCELLED`` only when the tree asked for a cancel; otherwise the end
    is abnormal (``FAILED``), with an error saying no cancel was requested.
    """
    if ctx.cancelled:
        return Outcome(TaskPhase.CANCELLED, error="cancelled")
    name = type(exc).__name__
    if isinstance(exc, asyncio.CancelledError):
        name = "asyncio.CancelledError"
    return Outcome(
        TaskPhase.FAILED,
        error=f"{name} raised but no cancel was requested\n{_error_text(exc)}",
    )


def _report(ctx: TaskContext, outcome: Outcome) -> None:
    """Report an attempt's end; a sink that raises is logged, never fatal to the thread."""
    try:
        ctx.sink.finished(outcome)
    except BaseException:
        logger.exception("reporting the end of %s attempt %s failed", ctx.task_id, ctx.attempt)


# --------------------------------------------------------------------------- call


class _Worker:
    """A thread that runs one job at a time and survives whatever a job raises."""

    __slots__ = ("jobs", "thread")

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        get = self.jobs.get
        while (job := get()) is not None:
            try:
                job()
            except BaseException:  # the thread keeps serving: log it and go on
                logger.exception("a job on %s raised", threading.current_thread().name)
            job = None  # drop it (and the attempt it holds) while idle

    def stop(self) -> None:
        self.jobs.put(None)


class _WorkerPool:
    """One worker per task id, kept across its attempts.

    A released worker (its task's actor stopped) is parked and handed to the
    next task, so starting a task usually starts no thread. An abandoned
    worker (stuck in work that ignored cancellation) is never reused, and
    ``close()`` does not wait for it.
    """

    def __init__(self, prefix: str, max_idle: int = 256) -> None:
        self._prefix = prefix
        self._max_idle = max_idle
        self._workers: dict[str, _Worker] = {}
        self._idle: list[_Worker] = []
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def run(self, task_id: str, job: Callable[[], None]) -> None:
        with self._lock:
            worker = self._workers.get(task_id)
            if worker is None:
                worker = self._idle.pop() if self._idle else None
                if worker is None:
                    worker = _Worker(f"{self._prefix}-{next(self._count)}")
                self._workers[task_id] = worker
        worker.jobs.put(job)

    def abandon(self, task_id: str) -> None:
        """Let the current worker finish whenever it does; the next attempt gets another."""
        with self._lock:
            worker = self._workers.pop(task_id, None)
        if worker is not None:
            worker.stop()

    def release(self, task_id: str, timeout: float = 5.0) -> None:
        """Park the task's worker for reuse (or stop it, waiting up to ``timeout`` s)."""
        with self._lock:
            worker = self._workers.pop(task_id, None)
            if worker is None:
                return
            if len(self._idle) < self._max_idle:
                self._idle.append(worker)
                return
        worker.stop()
        worker.thread.join(timeout)

    def close(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Stop every worker; join them (not the abandoned ones) within ``timeout`` s overall."""
        deadline = deadline_of(timeout)
        with self._lock:
            workers = [*self._workers.values(), *self._idle]
            self._workers, self._idle = {}, []
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.thread.join(time_left(deadline))


class CallExecutor(BaseExecutor):
    """Run ``fn(ctx, *args, **kwargs)`` on the task's own worker thread."""

    kind = "call"

    def __init__(self) -> None:
        self._pool = _WorkerPool("taskvisor-call")

    def start(self, task: Task, ctx: TaskContext) -> None:
        """Raises: TargetImportError: when the target cannot be imported, or is an async def."""
        spec = task.spec
        fn = resolve_target(spec.target, f"{spec.name}.target")
        # A callable target was checked when the spec was built; an import path only now.
        if isinstance(spec.target, str) and is_async_def(fn):
            raise TargetImportError(
                f"{spec.name}.target: {spec.target!r} is an async def, which kind 'call' "
                "would call without awaiting: use kind='async'"
            )
        self._pool.run(task.id, lambda: _call(fn, spec, ctx))

    def deliver(self, task: Task, message: Any, ctx: TaskContext) -> None:
        ctx.mailbox.put(message)

    def kill(self, task: Task, ctx: TaskContext) -> bool:
        """Cancel and give up the worker: Python threads cannot be killed; returns False."""
        ctx.request_cancel()
        self._pool.abandon(task.id)
        return False

    def release(self, task_id: str) -> None:
        self._pool.release(task_id)

    def close(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Stop the workers, joining them within ``timeout`` s (not the abandoned ones)."""
        self._pool.close(timeout)


def _call(fn: Callable[..., Any], spec: TaskSpec, ctx: TaskContext) -> None:
    try:
        output = fn(ctx, *spec.args, **spec.kwargs)
    except (TaskCancelled, asyncio.CancelledError) as exc:
        outcome = _cancelled_outcome(exc, ctx)
    except BaseException as exc:
        outcome = Outcome(TaskPhase.FAILED, error=_error_text(exc))
    else:
        if inspect.iscoroutine(output):  # never awaited: close it, and say why it failed
            output.close()
            outcome = Outcome(
                TaskPhase.FAILED,
                error=f"{spec.name}.target returned a coroutine, which kind 'call' does not "
                f"await (its work never ran): use kind='async' for an async def, got {output!r}",
            )
        else:
            outcome = Outcome(TaskPhase.SUCCEEDED, output=output)
    _report(ctx, outcome)


# --------------------------------------------------------------------------- async


class AsyncExecutor(BaseExecutor):
    """Run coroutine functions on one shared event-loop thread.

    The loop thread starts with the first task and stops on ``close()``.
    Starts and cancels from task actors queue up in order and the loop
    takes them in batches: a burst of them wakes the loop once, not once
    each. The loop thread survives any exception raised by what it runs
    (logged, and the loop runs on).

    A coroutine that swallows ``CancelledError`` cannot be stopped: ``kill``
    cancels it once more and returns False, and its actor abandons it; it
    keeps its place on the loop without holding up the loop's other tasks
    (as long as it awaits), and ``close()`` gives up on it at its deadline.
    A coroutine that blocks the thread (``time.sleep``) blocks every task on
    the loop: use a ``call`` task for blocking work.
    """

    kind = "async"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._jobs: deque[Callable[[], None]] = deque()
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        #: Coroutines given up by ``kill`` (touched on the loop thread only).
        self._abandoned: weakref.WeakSet[asyncio.Task[None]] = weakref.WeakSet()

    def _send(self, loop: asyncio.AbstractEventLoop, job: Callable[[], None]) -> None:
        """Run ``job`` on the loop, after every job sent before it.

        Raises:
            RuntimeError: when the loop has closed.
        """
        self._jobs.append(job)
        with self._wake_lock:
            if self._wake_pending:  # the loop has yet to run a batch that will take it
                return
            self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._run_jobs)
        except RuntimeError:
            with self._wake_lock:
                self._wake_pending = False
            raise

    def _run_jobs(self) -> None:
        with self._wake_lock:
            self._wake_pending = False
        jobs = self._jobs
        while jobs:
            job = jobs.popleft()
            try:
                job()
            except BaseException:  # the loop keeps running the rest
                logger.exception("a job on the taskvisor event loop raised")

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                loop.set_exception_handler(_loop_error)
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=_serve_loop, args=(loop, ready), name="taskvisor-async", daemon=True
                )
                self._thread.start()
                ready.wait(CLOSE_TIMEOUT)
                self._loop = loop
            return self._loop

    def start(self, task: Task, ctx: TaskContext) -> None:
        """Raises: TargetImportError: when the target cannot be imported or is not async."""
        spec = task.spec
        fn = resolve_target(spec.target, f"{spec.name}.target")
        if isinstance(spec.target, str) and not is_async_def(fn):
            raise TargetImportError(
                f"{spec.name}.target: an 'async' task needs a coroutine function (an async "
                f"def), got {fn!r}: use kind='call' for a plain function"
            )
        loop = self._running_loop()
        self._send(loop, functools.partial(_spawn, loop, fn, spec, ctx))

    def cancel(self, task: Task, ctx: TaskContext) -> None:
        ctx.request_cancel()
        loop = self._loop
        if loop is not None:
            # Runs after the _spawn queued by start (jobs keep their order).
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing runs there
                self._send(loop, functools.partial(_cancel_spawned, ctx))

    def kill(self, task: Task, ctx: TaskContext) -> bool:
        """Cancel the coroutine once more and give it up; returns False (it cannot be killed).

        ``close()`` does not wait for it again: it had its grace.
        """
        self.cancel(task, ctx)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing runs there
                self._send(loop, functools.partial(_abandon, self._abandoned, ctx))
        return False

    def deliver(self, task: Task, message: Any, ctx: TaskContext) -> None:
        ctx.mailbox.put(message)

    def close(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """Cancel what still runs, stop the loop and join its thread, within ``timeout`` s.

        Coroutines still running when half of ``timeout`` has passed (they
        ignore cancellation) are given up: the loop stops without them. One
        already given up (``kill``) is cancelled once more and not waited for.
        """
        timeout = wait_timeout(timeout)
        deadline = deadline_of(timeout)
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        grace = None if timeout is None else timeout / 2

        abandoned = self._abandoned

        async def shutdown() -> None:
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in pending:
                t.cancel()
            pending = [t for t in pending if t not in abandoned]
            if pending:
                await asyncio.wait(pending, timeout=grace)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(loop.shutdown_asyncgens(), grace)
            loop.stop()

        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        except RuntimeError:  # pragma: no cover - the loop closed already
            return
        thread.join(time_left(deadline))
        if thread.is_alive():
            logger.warning("the taskvisor event loop did not stop within %ss", timeout)
            return
        loop.close()


def _serve_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    """The event-loop thread: run the loop until it is stopped, whatever escapes it."""
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    while True:
        try:
            loop.run_forever()
        except BaseException:  # SystemExit/KeyboardInterrupt from a callback: run on
            logger.exception("the taskvisor event loop caught an exception; it keeps running")
            continue
        return


def _spawn(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], spec: TaskSpec, ctx: TaskContext
) -> None:
    """On the loop: start the attempt's coroutine as a task (its handle, for cancel)."""
    ctx.handle = task = loop.create_task(_arun(fn, spec, ctx))
    task.add_done_callback(lambda done: _cancelled_unstarted(done, ctx))


def _cancelled_unstarted(task: asyncio.Task[None], ctx: TaskContext) -> None:
    """Report a coroutine cancelled before its first step: ``_arun`` never ran to say so."""
    if task.cancelled():
        _report(ctx, _cancelled_outcome(asyncio.CancelledError("before its first step"), ctx))


def _abandon(abandoned: weakref.WeakSet[asyncio.Task[None]], ctx: TaskContext) -> None:
    if isinstance(ctx.handle, asyncio.Task):
        abandoned.add(ctx.handle)


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What the loop reports (an abandoned coroutine destroyed pending, say): on our logger."""
    exc = context.get("exception")
    logger.warning("taskvisor event loop: %s", context.get("message", "an error"), exc_info=exc)


def _cancel_spawned(ctx: TaskContext) -> None:
    if isinstance(ctx.handle, asyncio.Task):
        ctx.handle.cancel()


async def _arun(fn: Callable[..., Any], spec: TaskSpec, ctx: TaskContext) -> None:
    try:
        output = await fn(ctx, *spec.args, **spec.kwargs)
    except (TaskCancelled, asyncio.CancelledError) as exc:
        outcome = _cancelled_outcome(exc, ctx)
    except BaseException as exc:
        outcome = Outcome(TaskPhase.FAILED, error=_error_text(exc))
    else:
        outcome = Outcome(TaskPhase.SUCCEEDED, output=output)
    _report(ctx, outcome)


# --------------------------------------------------------------------------- subprocess


def describe_exit(code: int) -> str:
    """Say how a process ended, from its return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"


def process_start_time(pid: int) -> int | None:
    """Return the start time of process ``pid`` (Linux ``/proc/<pid>/stat`` field 22).

    The value counts clock ticks since boot: with the pid it names one
    process, so a later process given the same pid is told apart. Returns
    None when the process does not exist or ``/proc`` is not there.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (the command) is in parentheses and may hold spaces: count after it.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22; fields[0] is field 3
    except (IndexError, ValueError):  # pragma: no cover - a kernel that formats otherwise
        return None


def _group_alive(pgid: int) -> bool:
    """Whether group ``pgid`` has a member that is not a zombie (a zombie runs nothing)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - no /proc: count zombies as alive
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # it ended meanwhile
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == b"%d" % pgid and fields[0] != b"Z":
            return True
    return False


def kill_stale_group(
    pgid: int, pid: int | None = None, started: int | None = None, *, timeout: float = 5.0
) -> bool:
    """SIGKILL a process group left running by a host that died; return whether one was.

    A resumed tree calls this with what the lost run recorded (``pgid``,
    ``pid``, ``started``) before it starts a new attempt, so the old work
    never runs beside the new one.

    Pid reuse: when ``pid`` and ``started`` are given and a process with
    that pid is alive with another start time, the pid was reused, which
    the kernel allows only once the old group is gone: nothing is killed.
    When the recorded leader is gone but its group lives on (orphaned
    children), the group is killed: a group id stays taken while any member
    lives, so the group is the old one unless the id was reused twice. The
    caller's own process group is never killed.

    Args:
        pgid: the recorded process group id.
        pid: the recorded pid of the group's leader (the attempt's process).
        started: its recorded start time (``process_start_time``).
        timeout: seconds to wait, at most, for the group to be gone after
            the signal (default 5); the members are no children of ours, so
            they are polled, not reaped.

    Returns:
        True when a live group was found and sent SIGKILL.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        return False
    if pid is not None and started is not None:
        now_started = process_start_time(pid)
        if now_started is not None and now_started != started:
            return False  # that pid names another process now: our group is gone
    if not _group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    except PermissionError:
        logger.warning("process group %s is alive but not ours to kill", pgid)
        return False
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.005)  # polled: the members are not our children
    return True


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """Resolve ``prctl`` once, before any fork (None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _load_prctl()


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die with the thread that forks it (Linux)."""
    prctl = _prctl
    if prctl is None:
        return None
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:  # runs in the child between fork and exec: no locks, no imports
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sigkill)

    return preexec


_setpriv: list[str | None] = []  # [path or None], found once per process


def _find_setpriv() -> str | None:
    """Return the path of a ``setpriv`` that supports ``--pdeathsig``, or None."""
    if not _setpriv:
        found = shutil.which("setpriv") if _prctl is not None else None
        if found is not None:
            try:
                probe = subprocess.run(
                    [found, "--pdeathsig", "KILL", "--", "true"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=10,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                found = None
            else:
                found = found if probe.returncode == 0 else None
        _setpriv.append(found)
    return _setpriv[0]


def _check_program(argv: list[str], env: dict[str, str] | None, cwd: str | None) -> None:
    """Raise the ``OSError`` ``Popen`` would for a program that cannot run, naming the cause.

    A path with a ``/`` is relative to ``cwd``; a bare name is looked up on
    the ``PATH`` of ``env`` (or of this process). ``Popen`` says "Permission
    denied" both for a file that is not executable and for a directory; the
    error raised here says which.

    Raises:
        FileNotFoundError: when ``argv[0]`` is not there (a bare name: in no
            folder of ``PATH``).
        PermissionError: when it is there but cannot be run: a directory,
            not a regular file, or not executable (the text says which).
        OSError: when its path cannot be looked at (a name too long, a
            folder on the way that cannot be searched), as ``os.stat`` says.
    """
    program = argv[0]
    if os.sep in program:
        _check_executable(program, program if cwd is None else os.path.join(cwd, program))
        return
    search = (env if env is not None else os.environ).get("PATH", os.defpath)
    if shutil.which(program, path=search) is not None:
        return
    for folder in search.split(os.pathsep):  # there but not runnable: Popen says why, so do we
        path = os.path.join(folder, program)
        if os.path.exists(path):
            _check_executable(program, path)
    raise FileNotFoundError(errno.ENOENT, "No such file or directory", program)


def _check_executable(program: str, path: str) -> None:
    """Raise an ``OSError`` naming ``program`` when the file at ``path`` cannot be executed."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:  # missing, a dangling link, a name too long: as stat says
        raise OSError(exc.errno, exc.strerror, program) from None
    if S_ISDIR(mode):
        why = "a directory, not a program"
    elif not S_ISREG(mode):
        why = "not a regular file"
    elif not os.access(path, os.X_OK):
        why = "not executable"
    else:
        return
    raise PermissionError(errno.EACCES, f"Permission denied ({why})", program)


_GUARD = """
import os, signal, sys
groups = set()
for line in sys.stdin.buffer:
    pgid = int(line[1:])
    if line[:1] == b"+":
        groups.add(pgid)
    else:
        groups.discard(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class _Guard:
    """A helper process that SIGKILLs the listed process groups when the host goes.

    The host writes ``+pgid`` when a child starts and ``-pgid`` before it
    reaps it; the guard reads until end of file, which comes when the host
    closes the pipe (``close``) or dies, and then kills what is listed.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GUARD],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to the host's group leaves it be
            )
        except OSError as exc:
            logger.warning(
                "the process-group guard could not start (%s): a SIGKILLed host may leave "
                "grandchildren of its subprocess tasks running",
                exc,
            )
            return
        assert self.proc.stdin is not None
        self._fd = self.proc.stdin.fileno()

    def _write(self, line: bytes) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, line)  # shorter than PIPE_BUF: atomic, no lock needed
        except OSError as exc:
            logger.warning("the process-group guard is gone (%s); going on without it", exc)
            self._fd = -1

    def add(self, pgid: int) -> None:
        self._write(b"+%d\n" % pgid)

    def discard(self, pgid: int) -> None:
        self._write(b"-%d\n" % pgid)

    def close(self, timeout: float | None) -> None:
        """Close the pipe; the guard kills what is still listed and exits (reaped here)."""
        proc = self.proc
        if proc is None:
            return
        self._fd = -1
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- child output

#: How much of a child's output a pump reads at once, in bytes.
_READ_SIZE = 64 * 1024
#: How long an ended attempt waits for its output to drain, in seconds: the
#: group is dead by then, so end of file comes at once unless a process that
#: left the group still holds the pipe; then the pump is told to stop.
_DRAIN_TIMEOUT = 2.0


class _Lines:
    """Cut a byte stream into lines and log each, holding at most ``limit`` bytes.

    A line longer than ``limit`` bytes is logged cut at ``limit``, with a
    marker saying so, and the rest of it (up to its newline) is dropped:
    memory stays bounded whatever the child prints.
    """

    __slots__ = ("_buf", "_extra", "_label", "_level", "_limit", "_skipping")

    def __init__(self, label: str, stream: str, level: int, limit: int = OUTPUT_LINE_MAX) -> None:
        self._label = label
        self._level = level
        self._limit = limit
        self._extra = {"task_id": label, "stream": stream}
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> None:
        start = 0
        while (newline := data.find(b"\n", start)) >= 0:
            piece = data[start:newline]
            start = newline + 1
            if self._skipping:  # the end of a line already logged cut
                self._skipping = False
                continue
            if len(self._buf) + len(piece) > self._limit:
                self._buf += piece[: self._limit - len(self._buf)]
                self._emit(cut=True)
            elif self._buf:
                self._buf += piece
                self._emit()
            else:
                self._log(piece, cut=False)
        if self._skipping:
            return
        rest = data[start:]
        if len(self._buf) + len(rest) > self._limit:
            self._buf += rest[: self._limit - len(self._buf)]
            self._emit(cut=True)
            self._skipping = True
        else:
            self._buf += rest

    def close(self) -> None:
        """Log the last line if it had no newline."""
        if self._buf:
            self._emit()

    def _emit(self, *, cut: bool = False) -> None:
        line = bytes(self._buf)
        self._buf.clear()
        self._log(line, cut=cut)

    def _log(self, line: bytes, *, cut: bool) -> None:
        if not logging_wanted(output_logger, self._level):
            return
        text = line.decode("utf-8", "replace").removesuffix("\r")
        if cut:
            text += f" … [line cut at {self._limit:,} bytes]"
        output_logger.log(self._level, "[%s] %s", self._label, text, extra=self._extra)


class _OutputFile:
    """A child's output file: appended to, rotated when it would pass ``max_bytes``.

    Rotation keeps ``backups`` older files (``path.1`` the newest; 0 keeps
    none: the file starts afresh). A path that is not a regular file (a
    device such as ``/dev/null``, a FIFO) is never rotated. A file never grows past ``max_bytes``
    (0: it is never rotated) and is cut after the last whole line that fits
    of what has been read; a line is split across two files only when it
    is longer than a file or when a read ended inside it.

    Raises:
        OSError: from the constructor, when the file cannot be opened.
    """

    __slots__ = ("_backups", "_fd", "_max", "_size", "path")

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self._max = max_bytes
        self._backups = backups
        self._fd = self._open()
        stat = os.fstat(self._fd)
        self._size = stat.st_size
        if not S_ISREG(stat.st_mode):  # a device, FIFO or socket: written to, never renamed
            self._max = 0

    def _open(self, flags: int = 0) -> int:
        return os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | flags, 0o644
        )

    def feed(self, data: bytes) -> None:
        while data:
            room = self._max - self._size
            if not self._max or len(data) <= room:
                self._write(data)
                return
            part = data[: max(room, 0)]
            newline = part.rfind(b"\n")
            if newline >= 0:
                part = part[: newline + 1]
            elif self._size:
                part = b""  # the line starts the next file
            self._write(part)
            data = data[len(part) :]
            self._rotate()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        if self._backups == 0:
            self._fd = self._open(os.O_TRUNC)
        else:
            for i in range(self._backups - 1, 0, -1):
                older = f"{self.path}.{i}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
            self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Sink(Protocol):
    def feed(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _Output:
    """Where one attempt's stdout and stderr go: ``Popen`` arguments and their sinks.

    Built by ``start()`` before the spawn, so a file that cannot be opened
    is a start error.
    """

    __slots__ = ("files", "stderr", "stderr_sink", "stdout", "stdout_sink")

    def __init__(self, spec: TaskSpec, label: str) -> None:
        self.files: dict[str, _OutputFile] = {}
        self.stdout_sink: _Sink | None = None
        self.stderr_sink: _Sink | None = None
        try:
            self.stdout, self.stdout_sink = self._plan(spec, spec.stdout, label, "stdout")
            if spec.stderr == "stdout":
                self.stderr = subprocess.STDOUT
            else:
                self.stderr, self.stderr_sink = self._plan(spec, spec.stderr, label, "stderr")
        except BaseException:
            self.close_files()
            raise

    def _plan(self, spec: TaskSpec, mode: str, label: str, stream: str) -> tuple[Any, _Sink | None]:
        if mode == "inherit":
            return None, None
        if mode == "null":
            return subprocess.DEVNULL, None
        if mode == "prefix":
            level = logging.INFO if stream == "stdout" else logging.WARNING
            return subprocess.PIPE, _Lines(label, stream, level)
        assert is_output_file(mode)
        key = os.path.abspath(mode)
        sink = self.files.get(key)
        if sink is None:
            try:
                sink = self.files[key] = _OutputFile(
                    mode, spec.output_max_bytes, spec.output_backups
                )
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"{spec.name}.{stream}: cannot open the output file: {exc.strerror}",
                    mode,
                ) from exc
        return subprocess.PIPE, sink

    def close_files(self) -> None:
        for file in self.files.values():
            with contextlib.suppress(OSError):
                file.close()


class _Pump:
    """One thread per attempt that moves the child's piped output into its sinks.

    It reads at most ``_READ_SIZE`` bytes at a time and keeps nothing
    beyond one cut line per stream, so a child that prints without end
    costs the host no memory; a slow sink slows the child (the pipe
    fills), never the host. It ends when every pipe reaches end of file
    (the child's whole group has exited) or ``stop()`` is called, closes
    the pipes and the sinks, and logs (never raises) what fails: a sink
    that raises is dropped, and its stream is still drained.
    """

    def __init__(self, label: str, streams: list[tuple[Any, _Sink]], files: _Output) -> None:
        self._label = label
        self._streams = streams
        self._output = files
        self._wake_r, self._wake_w = os.pipe()  # not inherited by children (PEP 446)
        self.thread = threading.Thread(
            target=self._run, name=f"taskvisor-output-{label}", daemon=True
        )

    def start(self) -> None:
        """Start the pump's thread.

        Raises:
            RuntimeError: when the thread cannot start (``close()`` it then).
        """
        self.thread.start()

    def close(self) -> None:
        """Free the wake-up pipe of a pump whose thread never started."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def stop(self) -> None:
        """Ask the pump to end now, with what it has read (harmless when it has ended)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def finish(self, timeout: float = _DRAIN_TIMEOUT) -> None:
        """Wait for the output to drain (``timeout`` seconds at most), then end the pump."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            logger.warning(
                "the output of %s did not reach its end within %ss of the exit (a process "
                "that left the group holds it?); it is no longer read",
                self._label,
                timeout,
            )
            self.stop()
            self.thread.join(timeout)

    def _run(self) -> None:
        try:
            self._pump()
        except BaseException:  # a library thread: log, and end cleanly below
            logger.exception("reading the output of %s failed", self._label)
        finally:
            for pipe, sink in self._streams:
                with contextlib.suppress(BaseException):
                    pipe.close()
                try:
                    sink.close()
                except BaseException:
                    logger.exception("closing the output of %s failed", self._label)
            self._output.close_files()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _pump(self) -> None:
        with selectors.DefaultSelector() as selector:
            for pipe, sink in self._streams:
                selector.register(pipe.fileno(), selectors.EVENT_READ, sink)
            selector.register(self._wake_r, selectors.EVENT_READ, None)
            broken: set[int] = set()
            open_pipes = len(self._streams)
            while open_pipes:
                for key, _ in selector.select():
                    sink = key.data
                    if sink is None:  # stop(): take what is there, then end
                        self._drain_ready(selector, broken)
                        return
                    data = os.read(key.fd, _READ_SIZE)
                    if not data:
                        selector.unregister(key.fd)
                        open_pipes -= 1
                    elif key.fd not in broken:
                        self._feed(sink, data, key.fd, broken)

    def _drain_ready(self, selector: selectors.BaseSelector, broken: set[int]) -> None:
        for key, _ in selector.select(0):
            if key.data is not None:
                data = os.read(key.fd, _READ_SIZE)
                if data and key.fd not in broken:
                    self._feed(key.data, data, key.fd, broken)

    def _feed(self, sink: _Sink, data: bytes, fd: int, broken: set[int]) -> None:
        try:
            sink.feed(data)
        except BaseException:
            broken.add(fd)
            logger.exception(
                "writing the output of %s failed; the rest of that stream is dropped",
                self._label,
            )


class _Child:
    """One attempt's process; signalled and reaped under one lock, so a signal
    never reaches a group id reused after the reap."""

    __slots__ = ("lock", "pgid", "pid", "proc", "pump", "reaped")

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # a session of its own: it leads its group
        self.lock = threading.Lock()
        self.reaped = False
        self.pump: _Pump | None = None  # set by start() when output is piped

    def close_pipes(self) -> None:
        """Close the read ends of the child's pipes (when no pump will read them)."""
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def signal(self, sig: signal.Signals) -> None:
        with self.lock:
            if self.reaped:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)

    def reap(self) -> int:
        with self.lock:
            code = self.proc.wait()  # it has exited: returns at once
            self.reaped = True
        return code


def _wait_exited(pid: int) -> None:
    """Block until child ``pid`` has exited, leaving it unreaped (a zombie).

    Where ``os.waitid`` is missing (macOS before Python 3.13) this returns at
    once, and the reap that follows waits instead: the group's leftovers are
    then killed just after the reap rather than before it.
    """
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # pragma: no cover - Linux has it
        return
    with contextlib.suppress(ChildProcessError):
        waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


class _Spawn:
    """A request to the spawner thread, answered once (or given up by its asker)."""

    __slots__ = (
        "abandoned",
        "argv",
        "child",
        "cwd",
        "done",
        "env",
        "error",
        "lock",
        "stderr",
        "stdout",
    )

    def __init__(
        self,
        argv: str | list[str],
        env: dict[str, str] | None,
        cwd: str | None,
        stdout: Any = None,
        stderr: Any = None,
    ) -> None:
        self.argv, self.env, self.cwd = argv, env, cwd
        self.stdout, self.stderr = stdout, stderr
        self.child: _Child | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False


class SubprocessExecutor(BaseExecutor):
    """Run an argv list as a child process in a session (process group) of its own.

    Every child is forked by one spawner thread that lives until
    ``close()`` (see the module docstring: the child dies with that thread
    on Linux, and a guard process kills its group when the host dies).
    ``start()`` hands the spawn to that thread and waits for the pid, at
    most ``spawn_timeout`` seconds: a fork and exec take milliseconds, so
    the wait is short and the start error (a missing program) is raised by
    ``start()`` itself, as the task actor expects.

    Args:
        spawn_timeout: seconds ``start()`` waits for the spawner (default 10).
            A spawn that comes later is killed at once.
        guard: whether to run the guard process (default True).
    """

    kind = "subprocess"

    def __init__(self, *, spawn_timeout: float = 10.0, guard: bool = True) -> None:
        self.spawn_timeout = spawn_timeout
        self._use_guard = guard
        self._pool = _WorkerPool("taskvisor-wait")
        self._lock = threading.Lock()
        self._children: dict[int, _Child] = {}
        self._spawns: queue.SimpleQueue[_Spawn | None] | None = None
        self._spawner: threading.Thread | None = None
        self._guard: _Guard | None = None
        self._closing = False

    def _spawner_queue(self) -> queue.SimpleQueue[_Spawn | None]:
        with self._lock:
            if self._spawns is None:
                self._spawns = queue.SimpleQueue()
                self._spawner = threading.Thread(
                    target=self._spawn_loop,
                    args=(self._spawns,),
                    name="taskvisor-spawner",
                    daemon=True,
                )
                self._spawner.start()
            return self._spawns

    def _spawn_loop(self, spawns: queue.SimpleQueue[_Spawn | None]) -> None:
        """The spawner thread: fork every child, so they die with it (and with the host)."""
        if self._use_guard:
            self._guard = _Guard()  # forked here too, though it needs no death signal
        setpriv = _find_setpriv()
        preexec = None if setpriv is not None else _die_with_parent(os.getpid())
        while (job := spawns.get()) is not None:
            try:
                self._spawn_one(job, setpriv, preexec)
            except BaseException:  # the spawner keeps serving
                logger.exception("the subprocess spawner failed")

    def _spawn_one(
        self, job: _Spawn, setpriv: str | None, preexec: Callable[[], None] | None
    ) -> None:
        try:
            # shell=True: run what Popen would run
            argv = ["/bin/sh", "-c", job.argv] if isinstance(job.argv, str) else job.argv
            _check_program(argv, job.env, job.cwd)  # the cause, not setpriv's exit 127
            if setpriv is not None:
                argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
            proc = subprocess.Popen(
                argv,
                env=job.env,
                cwd=job.cwd,
                stdin=subprocess.DEVNULL,
                stdout=job.stdout,
                stderr=job.stderr,
                bufsize=0,  # unbuffered pipes: the pump reads the raw fds
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - lock-free, see the module docstring
            )
        except BaseException as exc:
            job.error = exc
            job.done.set()
            return
        child = _Child(proc)
        if self._guard is not None:
            self._guard.add(child.pgid)
        with self._lock:
            orphan = self._closing
            if not orphan:
                self._children[child.pid] = child
        with job.lock:
            orphan = orphan or job.abandoned
            if not orphan:
                job.child = child
                job.done.set()
        if orphan:  # nobody will watch it: kill and reap it now
            child.signal(signal.SIGKILL)
            child.close_pipes()
            self._forget(child)
            with self._lock:
                self._children.pop(child.pid, None)
            with job.lock:
                job.error = OSError("the subprocess executor is closing")
                job.done.set()

    def _forget(self, child: _Child) -> int:
        """Reap an exited child; tell the guard first (the group id is ours until the reap)."""
        if self._guard is not None:
            self._guard.discard(child.pgid)
        return child.reap()

    def start(self, task: Task, ctx: TaskContext) -> None:
        """Start the attempt's process; set ``ctx.pid``, ``ctx.pgid`` and ``ctx.started``.

        Output the spec pipes (``"prefix"`` or a file) is read by a pump
        thread of the attempt, which ends when the process group has exited.

        Raises:
            OSError: when the program cannot be started (the work never
                began), an output file cannot be opened, or the spawner did
                not answer within ``spawn_timeout`` seconds.
        """
        spec = task.spec
        assert spec.command is not None
        env = None if spec.env is None else {**os.environ, **spec.env}
        argv: str | list[str] = spec.command[0] if spec.shell else list(spec.command)
        output = _Output(spec, task.id)
        try:
            child = self._spawn(argv, env, spec.cwd, output)
        except BaseException:
            output.close_files()
            raise
        streams: list[tuple[Any, _Sink]] = []
        if child.proc.stdout is not None and output.stdout_sink is not None:
            streams.append((child.proc.stdout, output.stdout_sink))
        if child.proc.stderr is not None and output.stderr_sink is not None:
            streams.append((child.proc.stderr, output.stderr_sink))
        if streams:
            pump = _Pump(task.id, streams, output)
            try:
                pump.start()
            except BaseException:  # pragma: no cover - no thread to read: the child gets EPIPE
                logger.exception("the output of %s cannot be read", task.id)
                child.close_pipes()
                output.close_files()
                pump.close()
            else:
                child.pump = pump
        else:
            output.close_files()
        ctx.handle = child
        ctx.pid, ctx.pgid = child.pid, child.pgid
        ctx.started = process_start_time(child.pid)
        codes = spec.success_exit_codes
        self._pool.run(task.id, lambda: self._wait(child, ctx, codes))

    def _spawn(
        self, argv: str | list[str], env: dict[str, str] | None, cwd: str | None, output: _Output
    ) -> _Child:
        job = _Spawn(argv, env, cwd, output.stdout, output.stderr)
        self._spawner_queue().put(job)
        if not job.done.wait(self.spawn_timeout):
            with job.lock:
                if not job.done.is_set():
                    job.abandoned = True
            if job.abandoned:
                raise OSError(f"the process did not start within {self.spawn_timeout}s")
        if job.error is not None:
            raise job.error
        assert job.child is not None
        return job.child

    def _wait(self, child: _Child, ctx: TaskContext, codes: tuple[int, ...] = (0,)) -> None:
        """On the task's waiter thread: wait for the exit, kill the group's rest, reap, report.

        The output is drained before the end is reported, so every line the
        child printed is logged (or written) before its end is known.
        """
        try:
            # Wait without reaping, so the group id cannot be reused before the
            # leftovers of the group are killed; then reap.
            _wait_exited(child.pid)
            child.signal(signal.SIGKILL)
            code = self._forget(child)
            _finish_output(child)
        except BaseException as exc:
            outcome = Outcome(TaskPhase.FAILED, error=f"waiting for the process failed: {exc!r}")
        else:
            if code in codes:
                outcome = Outcome(TaskPhase.SUCCEEDED, exit_code=code)
            else:
                error = describe_exit(code)
                if codes != (0,) and code >= 0:
                    error += f" (success_exit_codes are {list(codes)})"
                outcome = Outcome(TaskPhase.FAILED, error=error, exit_code=code)
        finally:
            with self._lock:
                self._children.pop(child.pid, None)
        _report(ctx, outcome)

    def cancel(self, task: Task, ctx: TaskContext) -> None:
        """Send the spec's ``stop_signal`` (SIGTERM by default) to the process group.

        At once; again is harmless. SIGKILL follows from ``kill`` when the
        grace runs out.
        """
        ctx.request_cancel()
        if isinstance(ctx.handle, _Child):
            ctx.handle.signal(task.spec.stop_signal)

    def kill(self, task: Task, ctx: TaskContext) -> bool:
        """Send SIGKILL to the process group (at once; again is harmless); returns True.

        The exit is still reported, by the attempt's waiter thread.
        """
        ctx.request_cancel()
        if isinstance(ctx.handle, _Child):
            ctx.handle.signal(signal.SIGKILL)
        return True

    def reconcile(self, task: Task, ctx: TaskContext) -> None:
        """Nothing to poll: the attempt's waiter thread reports the exit."""

    def release(self, task_id: str) -> None:
        self._pool.release(task_id)

    def live_children(self) -> list[int]:
        """Return the pids of the children started and not yet reaped."""
        with self._lock:
            return sorted(self._children)

    def close(self, timeout: float | None = CLOSE_TIMEOUT) -> None:
        """SIGKILL every process group still running, reap each, stop the threads.

        Returns within ``timeout`` seconds (default ``CLOSE_TIMEOUT``); a
        SIGKILLed process ends at once, so its waiter reaps it well within.
        The executor can be used again after (it starts its threads anew).
        """
        deadline = deadline_of(timeout)
        with self._lock:
            self._closing = True
            spawns, spawner = self._spawns, self._spawner
            self._spawns = self._spawner = None
        try:
            if spawns is not None and spawner is not None:
                spawns.put(None)
                spawner.join(time_left(deadline))  # spawns queued before close end here
            with self._lock:
                children = list(self._children.values())
            for child in children:
                child.signal(signal.SIGKILL)
            self._pool.close(time_left(deadline))
            with self._lock:
                left = list(self._children.values())
            for child in left:  # a waiter did not get to it in time: reap it here
                child.signal(signal.SIGKILL)
                _wait_exited(child.pid)
                self._forget(child)
                left_s = time_left(deadline)
                _finish_output(child, _DRAIN_TIMEOUT if left_s is None else left_s)
            guard, self._guard = self._guard, None
            if guard is not None:
                guard.close(time_left(deadline))
        finally:
            with self._lock:
                self._closing = False


def _finish_output(child: _Child, timeout: float = _DRAIN_TIMEOUT) -> None:
    """End the child's pump, if it has one, within about ``2 * timeout`` seconds."""
    pump = child.pump
    if pump is not None:
        pump.finish(timeout)


def default_executors() -> dict[str, TaskExecutor]:
    """Return a fresh executor for each built-in kind."""
    return {e.kind: e for e in (CallExecutor(), AsyncExecutor(), SubprocessExecutor())}
