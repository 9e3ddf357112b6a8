"""Task kinds: the control plane that starts, cancels and feeds running work.

Built-in kinds:

- ``call``: ``fn(ctx, *args, **kwargs)`` on a worker thread of the task's
  own, kept across restarts so a restart starts no thread;
- ``async``: ``await fn(ctx, *args, **kwargs)`` on one event-loop thread
  shared by the executor's tasks; cancel is ``Task.cancel()``;
- ``subprocess``: an argv list (a shell only with ``shell=True``) in a
  session of its own; cancel sends SIGTERM to its process group, ``kill``
  sends SIGKILL; the exit code is recorded, a signal death as ``-signum``.

Every executor reports how the work ended through ``ctx.sink.finished``
exactly once per attempt, from a thread of its own, never the task actor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import itertools
import linecache
import os
import queue
import signal
import subprocess
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ._context import Outcome, TaskContext
from ._errors import TargetImportError, Unsupported
from ._model import Task, TaskPhase, TaskSpec

__all__ = [
    "AsyncExecutor",
    "BaseExecutor",
    "CallExecutor",
    "SubprocessExecutor",
    "TaskExecutor",
    "default_executors",
    "resolve_target",
]


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
        """Stop the work at once if the kind can; return whether it will still report."""
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

    def close(self) -> None:
        """Stop shared resources (threads, loops) once no task uses them."""
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

    def close(self) -> None:
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
    frames = list(traceback.walk_tb(exc.__traceback__))
    if skip_first and len(frames) > 1:
        frames = frames[1:]
    if frames:
        lines.append("Traceback (most recent call last):\n")
    for frame, lineno in frames:
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
        source = linecache.getline(code.co_filename, lineno).strip()
        if source:
            lines.append(f"    {source}\n")
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


# --------------------------------------------------------------------------- call


class _Worker:
    """A thread that runs one job at a time."""

    __slots__ = ("jobs", "thread")

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        get = self.jobs.get
        while (job := get()) is not None:
            job()

    def stop(self) -> None:
        self.jobs.put(None)


class _WorkerPool:
    """One worker per task id, kept across its attempts.

    A released worker (its task's actor stopped) is parked and handed to the
    next task, so starting a task usually starts no thread. An abandoned
    worker (stuck in work that ignored cancellation) is never reused.
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

    def release(self, task_id: str) -> None:
        """Park the task's worker for reuse (or stop it when enough are parked)."""
        with self._lock:
            worker = self._workers.pop(task_id, None)
            if worker is None:
                return
            if len(self._idle) < self._max_idle:
                self._idle.append(worker)
                return
        worker.stop()
        worker.thread.join()

    def close(self, timeout: float = 10.0) -> None:
        """Stop every worker and join those not abandoned."""
        with self._lock:
            workers = [*self._workers.values(), *self._idle]
            self._workers, self._idle = {}, []
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.thread.join(timeout)


class CallExecutor(BaseExecutor):
    """Run ``fn(ctx, *args, **kwargs)`` on the task's own worker thread."""

    kind = "call"

    def __init__(self) -> None:
        self._pool = _WorkerPool("taskvisor-call")

    def start(self, task: Task, ctx: TaskContext) -> None:
        """Raises: TargetImportError: when the target cannot be imported."""
        spec = task.spec
        fn = resolve_target(spec.target, f"{spec.name}.target")
        self._pool.run(task.id, lambda: _call(fn, spec, ctx))

    def deliver(self, task: Task, message: Any, ctx: TaskContext) -> None:
        ctx.mailbox.put(message)

    def kill(self, task: Task, ctx: TaskContext) -> bool:
        """Cancel and give up the worker: Python threads cannot be killed."""
        ctx.request_cancel()
        self._pool.abandon(task.id)
        return False

    def release(self, task_id: str) -> None:
        self._pool.release(task_id)

    def close(self) -> None:
        self._pool.close()


def _call(fn: Callable[..., Any], spec: TaskSpec, ctx: TaskContext) -> None:
    try:
        output = fn(ctx, *spec.args, **spec.kwargs)
    except BaseException as exc:
        outcome = Outcome(TaskPhase.FAILED, error=_error_text(exc))
    else:
        outcome = Outcome(TaskPhase.SUCCEEDED, output=output)
    ctx.sink.finished(outcome)


# --------------------------------------------------------------------------- async


class AsyncExecutor(BaseExecutor):
    """Run coroutine functions on one shared event-loop thread.

    The loop thread starts with the first task and stops on ``close()``.
    Starts and cancels from task actors queue up in order and the loop
    takes them in batches: a burst of them wakes the loop once, not once
    each.
    """

    kind = "async"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._jobs: deque[Callable[[], None]] = deque()
        self._wake_lock = threading.Lock()
        self._wake_pending = False

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
            jobs.popleft()()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="taskvisor-async", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def start(self, task: Task, ctx: TaskContext) -> None:
        """Raises: TargetImportError: when the target cannot be imported or is not async."""
        spec = task.spec
        fn = resolve_target(spec.target, f"{spec.name}.target")
        if not inspect.iscoroutinefunction(fn):
            raise TargetImportError(
                f"{spec.name}.target: an 'async' task needs a coroutine function, got {fn!r}"
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

    def deliver(self, task: Task, message: Any, ctx: TaskContext) -> None:
        ctx.mailbox.put(message)

    def close(self) -> None:
        """Cancel what still runs, stop the loop and join its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await loop.shutdown_asyncgens()
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        thread.join(10)
        if not thread.is_alive():
            loop.close()


def _spawn(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], spec: TaskSpec, ctx: TaskContext
) -> None:
    """On the loop: start the attempt's coroutine as a task (its handle, for cancel)."""
    ctx.handle = task = loop.create_task(_arun(fn, spec, ctx))
    task.add_done_callback(lambda done: _cancelled_unstarted(done, ctx))


def _cancelled_unstarted(task: asyncio.Task[None], ctx: TaskContext) -> None:
    """Report a coroutine cancelled before its first step: ``_arun`` never ran to say so."""
    if task.cancelled():
        ctx.sink.finished(Outcome(TaskPhase.CANCELLED, error="cancelled"))


def _cancel_spawned(ctx: TaskContext) -> None:
    if isinstance(ctx.handle, asyncio.Task):
        ctx.handle.cancel()


async def _arun(fn: Callable[..., Any], spec: TaskSpec, ctx: TaskContext) -> None:
    try:
        output = await fn(ctx, *spec.args, **spec.kwargs)
    except asyncio.CancelledError:
        ctx.sink.finished(Outcome(TaskPhase.CANCELLED, error="cancelled"))
        return
    except BaseException as exc:
        outcome = Outcome(TaskPhase.FAILED, error=_error_text(exc))
    else:
        outcome = Outcome(TaskPhase.SUCCEEDED, output=output)
    ctx.sink.finished(outcome)


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


class SubprocessExecutor(BaseExecutor):
    """Run an argv list as a child process in a session (process group) of its own."""

    kind = "subprocess"

    def __init__(self) -> None:
        self._pool = _WorkerPool("taskvisor-wait")

    def start(self, task: Task, ctx: TaskContext) -> None:
        """Raises: OSError: when the program cannot be started (the work never began)."""
        spec = task.spec
        assert spec.command is not None
        env = None if spec.env is None else {**os.environ, **spec.env}
        args: str | list[str] = spec.command[0] if spec.shell else list(spec.command)
        proc = subprocess.Popen(
            args,
            shell=spec.shell,
            env=env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        ctx.handle = proc
        self._pool.run(task.id, lambda: _wait(proc, ctx))

    def cancel(self, task: Task, ctx: TaskContext) -> None:
        """Send SIGTERM to the process group."""
        ctx.request_cancel()
        _signal_group(ctx.handle, signal.SIGTERM)

    def kill(self, task: Task, ctx: TaskContext) -> bool:
        """Send SIGKILL to the process group; the exit is still reported."""
        ctx.request_cancel()
        _signal_group(ctx.handle, signal.SIGKILL)
        return True

    def reconcile(self, task: Task, ctx: TaskContext) -> None:
        """Poll the process (its waiter reports the exit)."""
        if ctx.handle is not None:
            ctx.handle.poll()

    def release(self, task_id: str) -> None:
        self._pool.release(task_id)

    def close(self) -> None:
        self._pool.close()


def _signal_group(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # it may end between check and kill
        os.killpg(proc.pid, sig)


def _wait(proc: subprocess.Popen[bytes], ctx: TaskContext) -> None:
    # Wait without reaping, so the group id cannot be reused before the
    # leftovers of the group are killed; then reap.
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    code = proc.wait()
    if code == 0:
        ctx.sink.finished(Outcome(TaskPhase.SUCCEEDED, exit_code=0))
    else:
        ctx.sink.finished(Outcome(TaskPhase.FAILED, error=describe_exit(code), exit_code=code))


def default_executors() -> dict[str, TaskExecutor]:
    """Return a fresh executor for each built-in kind."""
    return {e.kind: e for e in (CallExecutor(), AsyncExecutor(), SubprocessExecutor())}
