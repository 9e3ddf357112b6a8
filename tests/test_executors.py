"""Each task kind, really run: success, failure, timeout, cancel, deliver, abandonment."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_until
from helpers import (
    Recorder,
    adouble,
    aecho,
    afail,
    asleep,
    double,
    echo,
    fail,
    stubborn,
    until_cancelled,
)
from taskvisor.actors import (
    AttemptFinished,
    AttemptStarted,
    ExecutorService,
    InvalidSpec,
    Mailbox,
    ManualClock,
    Task,
    TaskAccepted,
    TaskCancelled,
    TaskContext,
    TaskFailedError,
    TaskFinished,
    TaskPhase,
    TaskSpec,
    TaskStarted,
    Unsupported,
    resolve_target,
)
from taskvisor.actors._executors import AsyncExecutor, _exception_line, describe_exit

PY = sys.executable


def ok_spec(kind: str) -> TaskSpec:
    if kind == "call":
        return TaskSpec(name="ok", target=double, args=[21])
    if kind == "async":
        return TaskSpec(name="ok", kind="async", target=adouble, args=[21])
    return TaskSpec(name="ok", kind="subprocess", command=[PY, "-c", "pass"])


def fail_spec(kind: str) -> TaskSpec:
    if kind == "call":
        return TaskSpec(name="bad", target=fail)
    if kind == "async":
        return TaskSpec(name="bad", kind="async", target=afail)
    return TaskSpec(name="bad", kind="subprocess", command=[PY, "-c", "raise SystemExit(3)"])


def long_spec(kind: str, **extra: object) -> TaskSpec:
    if kind == "call":
        return TaskSpec(name="long", target=until_cancelled, **extra)  # type: ignore[arg-type]
    if kind == "async":
        return TaskSpec(name="long", kind="async", target=asleep, **extra)  # type: ignore[arg-type]
    return TaskSpec(name="long", kind="subprocess", command=["sleep", "60"], **extra)  # type: ignore[arg-type]


KINDS = ["call", "async", "subprocess"]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def service(recorder: Recorder) -> Iterator[ExecutorService]:
    with ExecutorService(hooks=[recorder]) as svc:
        yield svc


def wait_started(handle: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not handle.runs():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "task never started"
        time.sleep(0.002)


@pytest.mark.parametrize("kind", KINDS)
def test_success(kind: str, service: ExecutorService, recorder: Recorder) -> None:
    handle = service.submit(ok_spec(kind))
    task = handle.wait(10)
    assert task.status.phase is TaskPhase.SUCCEEDED
    assert task.status.attempt == 1
    if kind == "subprocess":
        assert task.status.exit_code == 0
    else:
        assert handle.result() == 42
    (run,) = handle.runs()
    assert run.phase is TaskPhase.SUCCEEDED
    assert run.finished_at is not None
    assert run.finished_at >= run.started_at
    service.shutdown()
    assert recorder.per_task() == {"ok": ["accepted", "started", "finished"]}
    kinds = [type(e) for e in recorder.events]
    assert kinds == [TaskAccepted, AttemptStarted, TaskStarted, AttemptFinished, TaskFinished]


@pytest.mark.parametrize("kind", KINDS)
def test_failure(kind: str, service: ExecutorService) -> None:
    handle = service.submit(fail_spec(kind))
    task = handle.wait(10)
    assert task.status.phase is TaskPhase.FAILED
    if kind == "subprocess":
        assert task.status.exit_code == 3
        assert task.status.error == "exited with code 3"
    else:
        assert "ValueError: boom" in (task.status.error or "")
        assert "Traceback" in (task.status.error or "")
    with pytest.raises(TaskFailedError, match="ended failed"):
        handle.result()


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_uses_the_injected_clock(kind: str, recorder: Recorder) -> None:
    clock = ManualClock()
    with ExecutorService(hooks=[recorder], clock=clock) as svc:
        handle = svc.submit(long_spec(kind, timeout=5.0))
        wait_started(handle)
        clock.advance(4.9)
        assert not handle.done()
        clock.advance(0.2)
        task = handle.wait(10)
    assert task.status.phase is TaskPhase.TIMEOUT
    assert task.status.error == "timed out after 5.0s"
    assert handle.runs()[-1].phase is TaskPhase.TIMEOUT
    if kind == "subprocess":
        assert task.status.exit_code == -signal.SIGTERM


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_while_running(kind: str, service: ExecutorService, recorder: Recorder) -> None:
    handle = service.submit(long_spec(kind))
    wait_started(handle)
    handle.cancel()
    task = handle.wait(10)
    assert task.status.phase is TaskPhase.CANCELLED
    assert task.status.error == "cancelled"
    service.shutdown()
    assert recorder.per_task()["long"] == ["accepted", "started", "finished"]


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_before_start_finishes_without_started(kind: str, recorder: Recorder) -> None:
    release = threading.Event()
    with ExecutorService(hooks=[recorder], max_running=1) as svc:
        blocker = svc.submit(TaskSpec(name="blocker", target=stubborn, args=[release]))
        queued = svc.submit(ok_spec(kind))
        assert queued.status().status.phase is TaskPhase.PENDING
        queued.cancel()
        task = queued.wait(10)
        release.set()
        blocker.wait(10)
    assert task.status.phase is TaskPhase.CANCELLED
    assert task.status.attempt == 0
    assert queued.runs() == ()
    assert recorder.per_task()["ok"] == ["accepted", "finished"]


def test_queued_task_starts_when_a_slot_frees(recorder: Recorder) -> None:
    release = threading.Event()
    with ExecutorService(hooks=[recorder], max_running=1) as svc:
        first = svc.submit(TaskSpec(name="first", target=stubborn, args=[release]))
        second = svc.submit(ok_spec("call"))
        wait_started(first)
        assert second.status().status.phase is TaskPhase.PENDING
        release.set()
        assert second.result(10) == 42
        assert first.result(10) == "late"


@pytest.mark.parametrize(("kind", "target"), [("call", echo), ("async", aecho)])
def test_deliver_and_ask(kind: str, target: object, service: ExecutorService) -> None:
    handle = service.submit(TaskSpec(name="echo", kind=kind, target=target))  # type: ignore[arg-type]
    assert handle.ask("ping", timeout=10) == ("echo", 1, "ping")
    assert handle.result(10) == "answered"


def test_deliver_plain_message(service: ExecutorService) -> None:
    def take(ctx: object) -> object:
        return ctx.receive(10)  # type: ignore[attr-defined]

    handle = service.submit(TaskSpec(name="take", target=take))
    handle.deliver({"n": 1})
    assert handle.result(10) == {"n": 1}


def test_subprocess_takes_no_messages(service: ExecutorService) -> None:
    handle = service.submit(long_spec("subprocess"))
    with pytest.raises(Unsupported, match="task kind 'subprocess' does not accept messages"):
        handle.deliver("hello")
    handle.cancel()
    handle.wait(10)


def test_subprocess_signal_death_is_negative_exit_code(service: ExecutorService) -> None:
    spec = TaskSpec(
        name="die", kind="subprocess", command=[PY, "-c", "import os; os.kill(os.getpid(), 9)"]
    )
    task = service.submit(spec).wait(10)
    assert task.status.phase is TaskPhase.FAILED
    assert task.status.exit_code == -9
    assert task.status.error == "killed by SIGKILL"


def test_subprocess_ignoring_sigterm_is_killed_after_grace(
    service: ExecutorService, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
    )
    spec = TaskSpec(name="deaf", kind="subprocess", command=[PY, "-c", code], shutdown=0.3)
    handle = service.submit(spec)
    assert wait_until(ready.exists, timeout=30)  # its handler is in place before the signal
    handle.cancel()
    task = handle.wait(10)
    assert task.status.phase is TaskPhase.CANCELLED
    assert task.status.exit_code == -signal.SIGKILL


def test_subprocess_cancel_kills_the_whole_process_group(
    service: ExecutorService, tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    handle = service.submit(TaskSpec(name="tree", kind="subprocess", command=["sh", "-c", script]))
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    grandchild = int(pid_file.read_text())
    handle.cancel()
    handle.wait(10)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{grandchild}").exists():
        status = Path(f"/proc/{grandchild}/status").read_text()
        if "zombie" in status:  # reaped by init soon; it is dead
            break
        assert time.monotonic() < deadline, "grandchild survived its group's cancel"
        time.sleep(0.01)


def test_subprocess_env_cwd_and_shell(service: ExecutorService, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    spec = TaskSpec(
        name="env",
        kind="subprocess",
        command=[f'echo "$GREETING" > {out.name}; pwd >> {out.name}'],
        shell=True,
        env={"GREETING": "hello"},
        cwd=str(tmp_path),
    )
    assert service.submit(spec).wait(10).status.phase is TaskPhase.SUCCEEDED
    assert out.read_text().split() == ["hello", str(tmp_path)]


def test_subprocess_missing_program_fails_without_starting(
    service: ExecutorService, recorder: Recorder
) -> None:
    spec = TaskSpec(name="nope", kind="subprocess", command=["/nonexistent/program"])
    task = service.submit(spec).wait(10)
    assert task.status.phase is TaskPhase.FAILED
    assert "FileNotFoundError" in (task.status.error or "")
    service.shutdown()
    assert recorder.per_task()["nope"] == ["accepted", "finished"]


def test_call_ignoring_cancel_is_abandoned_and_does_not_block_shutdown(
    recorder: Recorder,
) -> None:
    release = threading.Event()
    try:
        svc = ExecutorService(hooks=[recorder])
        spec = TaskSpec(name="deaf", target=stubborn, args=[release], shutdown=0.1)
        handle = svc.submit(spec)
        wait_started(handle)
        handle.cancel()
        task = handle.wait(10)
        assert task.status.phase is TaskPhase.CANCELLED
        assert "abandoned" in (task.status.error or "")
        assert "within its 0.1s grace" in (task.status.error or "")
        still = svc.submit(TaskSpec(name="deaf2", target=stubborn, args=[release], shutdown=0.1))
        wait_started(still)
        started = time.monotonic()
        svc.shutdown(timeout=10)
        assert time.monotonic() - started < 5  # shutdown waited out the grace, not the work
        assert still.wait(0).status.phase is TaskPhase.CANCELLED
    finally:
        release.set()


def test_brutal_shutdown_abandons_at_once(service: ExecutorService) -> None:
    release = threading.Event()
    try:
        spec = TaskSpec(name="deaf", target=stubborn, args=[release], shutdown="brutal")
        handle = service.submit(spec)
        wait_started(handle)
        handle.cancel()
        assert "did not stop at once" in (handle.wait(10).status.error or "")
    finally:
        release.set()


def test_string_targets_resolve_and_fail_clearly(service: ExecutorService) -> None:
    ok = service.submit(TaskSpec(name="repr", target="builtins:repr"))
    assert ok.result(10).startswith("<taskvisor.actors.TaskContext")
    missing = service.submit(TaskSpec(name="missing", target="no_such_module_xyz:run")).wait(10)
    assert missing.status.phase is TaskPhase.FAILED
    assert "cannot import module 'no_such_module_xyz'" in (missing.status.error or "")
    attr = service.submit(TaskSpec(name="attr", target="json:no_such_function")).wait(10)
    assert "module 'json' has no attribute 'no_such_function'" in (attr.status.error or "")


def test_resolve_target_errors() -> None:
    assert resolve_target("os.path:join") is os.path.join
    with pytest.raises(ImportError, match="is not callable"):
        resolve_target("os:sep")
    with pytest.raises(ValueError, match="expected a callable"):
        resolve_target("no-colon")


def test_async_target_must_be_a_coroutine_function(service: ExecutorService) -> None:
    # A callable is checked where the spec is made, with the fix in the message ...
    with pytest.raises(InvalidSpec, match="double is not one: use kind='call'"):
        TaskSpec(name="sync", kind="async", target=double, args=[1])
    # ... an import path when it is imported, at start.
    spec = TaskSpec(name="sync", kind="async", target="helpers:double", args=[1])
    task = service.submit(spec).wait(10)
    assert task.status.phase is TaskPhase.FAILED
    assert "needs a coroutine function" in (task.status.error or "")


def test_an_async_def_with_kind_call_is_refused_where_the_spec_is_made() -> None:
    with pytest.raises(InvalidSpec) as caught:
        TaskSpec("worker", target=adouble, args=[1])
    assert caught.value.field == "target"
    assert "adouble is an async def" in str(caught.value)
    assert "use kind='async'" in str(caught.value)
    # a partial of one, and an object whose __call__ is async, too
    with pytest.raises(InvalidSpec, match="use kind='async'"):
        TaskSpec("worker", target=functools.partial(adouble, x=1))

    class Server:
        async def __call__(self, ctx: TaskContext) -> None:
            await asyncio.sleep(0)

    with pytest.raises(InvalidSpec, match="use kind='async'"):
        TaskSpec("worker", target=Server())
    assert TaskSpec("worker", kind="async", target=Server()).kind == "async"


def test_an_async_def_named_by_path_with_kind_call_fails_its_start_naming_the_fix(
    service: ExecutorService,
) -> None:
    """Not "ended succeeded" after a "coroutine was never awaited" warning (warnings are errors)."""
    task = service.submit(TaskSpec("worker", target="helpers:adouble", args=[1])).wait(10)
    assert task.status.phase is TaskPhase.FAILED
    error = task.status.error or ""
    assert "'helpers:adouble' is an async def" in error
    assert "use kind='async'" in error


def test_a_call_target_that_returns_a_coroutine_fails_naming_the_fix(
    service: ExecutorService,
) -> None:
    def wrapper(ctx: TaskContext) -> object:
        return adouble(ctx, 1)  # a coroutine, never awaited by kind 'call'

    task = service.submit(TaskSpec("worker", target=wrapper)).wait(10)
    assert task.status.phase is TaskPhase.FAILED
    error = task.status.error or ""
    assert "worker.target returned a coroutine" in error
    assert "use kind='async'" in error
    # closed, not left to warn "never awaited" (warnings fail the tests)


def test_progress_is_reported(service: ExecutorService, recorder: Recorder) -> None:
    def work(ctx: object) -> int:
        for i in range(3):
            ctx.report(i)  # type: ignore[attr-defined]
        return 3

    assert service.submit(TaskSpec(name="p", target=work)).result(10) == 3
    service.shutdown()
    values = [e.value for e in recorder.events if type(e).__name__ == "AttemptProgress"]
    assert values == [0, 1, 2]


def test_describe_exit() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-15) == "killed by SIGTERM"
    assert describe_exit(-200) == "killed by signal 200"


def test_unsupported_reconcile_names_the_kind() -> None:
    from taskvisor.actors import CallExecutor, Mailbox, Task, TaskContext

    task = Task.new("t", ok_spec("call"))
    ctx = TaskContext("t", 1, Mailbox(), sink=None)  # type: ignore[arg-type]
    with pytest.raises(Unsupported, match="kind 'call' does not support reconcile"):
        CallExecutor().reconcile(task, ctx)


class _Custom(Exception):
    pass


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def _with_note(exc: BaseException, *notes: str) -> BaseException:
    for note in notes:
        exc.add_note(note)
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("boom"),
        ValueError(),
        KeyError("k"),
        _Custom("from a module"),
        _BadStr(),
        _with_note(OSError(2, "gone"), "first note", "second"),
        SyntaxError("bad", ("f.py", 3, 4, "x = (", 3, 5)),
        KeyboardInterrupt(),
    ],
    ids=repr,
)
def test_error_lines_match_the_standard_traceback(exc: BaseException) -> None:
    assert _exception_line(exc) == "".join(traceback.format_exception_only(exc))


def test_an_async_attempt_cancelled_before_its_first_step_is_not_abandoned() -> None:
    # The cancel lands between handing the coroutine to the loop and its first
    # step, as often as the race allows: each must end cancelled, never abandoned.
    with ExecutorService() as svc:
        for i in range(30):
            handle = svc.submit(TaskSpec(name=f"a{i}", kind="async", target=asleep, shutdown=30.0))
            handle.cancel()
            task = handle.wait(10)
            assert task.status.phase is TaskPhase.CANCELLED
            assert "abandoned" not in (task.status.error or "")


def test_async_jobs_from_many_threads_run_once_each_in_their_order() -> None:
    # Task actors hand starts and cancels to the loop through one queue, with
    # one wake-up per batch: none may be lost, run twice or overtake another.
    executor = AsyncExecutor()
    loop = executor._running_loop()
    ran: list[tuple[int, int]] = []
    senders, per_sender = 4, 2000
    all_sent = threading.Barrier(senders + 1)

    def send(sender: int) -> None:
        for i in range(per_sender):
            executor._send(loop, functools.partial(ran.append, (sender, i)))
        all_sent.wait()

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for t in threads:
        t.start()
    all_sent.wait()
    done = threading.Event()
    executor._send(loop, done.set)  # runs after every job sent before it
    assert done.wait(10)
    for t in threads:
        t.join()
    assert len(ran) == senders * per_sender
    for s in range(senders):
        assert [i for sender, i in ran if sender == s] == list(range(per_sender))
    executor.close()
    with pytest.raises(RuntimeError):  # a closed loop runs nothing, and says so
        executor._send(loop, done.set)
    assert not executor._wake_pending


# --------------------------------------------------------------------------- kind H


def test_task_cancelled_is_not_an_exception() -> None:
    assert issubclass(TaskCancelled, BaseException)
    assert not issubclass(TaskCancelled, Exception)


def swallow_everything(ctx: TaskContext, swallowed: list[str]) -> str:
    """User code with a broad ``except Exception``: it must not eat a stop."""
    try:
        ctx.receive(60)
    except Exception as exc:
        swallowed.append(repr(exc))
        return "swallowed"
    return "got a message"


def test_except_exception_in_the_work_does_not_swallow_a_cancel(service: ExecutorService) -> None:
    swallowed: list[str] = []
    handle = service.submit(TaskSpec(name="broad", target=swallow_everything, args=[swallowed]))
    wait_started(handle)
    handle.cancel()
    task = handle.wait(10)
    assert task.status.phase is TaskPhase.CANCELLED
    assert swallowed == []  # TaskCancelled went past ``except Exception``
    assert "abandoned" not in (task.status.error or "")


def raise_cancelled(ctx: TaskContext) -> None:
    raise TaskCancelled("the work raised it itself")


async def araise_cancelled(ctx: TaskContext) -> None:
    await asyncio.sleep(0)
    raise TaskCancelled("the work raised it itself")


async def astray_cancel(ctx: TaskContext) -> None:
    """A coroutine whose inner future is cancelled by someone else than the tree."""
    inner = asyncio.get_running_loop().create_future()
    inner.cancel()
    await inner


def stray_asyncio_cancel(ctx: TaskContext) -> None:
    raise asyncio.CancelledError("from a library")


@pytest.mark.parametrize(
    ("kind", "target", "name"),
    [
        ("call", raise_cancelled, "TaskCancelled"),
        ("call", stray_asyncio_cancel, "asyncio.CancelledError"),
        ("async", araise_cancelled, "TaskCancelled"),
        ("async", astray_cancel, "asyncio.CancelledError"),
    ],
)
def test_a_cancel_nobody_asked_for_is_an_abnormal_end(
    kind: str, target: object, name: str, service: ExecutorService
) -> None:
    handle = service.submit(TaskSpec(name="stray", kind=kind, target=target))  # type: ignore[arg-type]
    task = handle.wait(10)
    assert task.status.phase is TaskPhase.FAILED
    assert (task.status.error or "").startswith(f"{name} raised but no cancel was requested")


def test_unrequested_cancel_outcome_for_every_kind_alike() -> None:
    """The executors' own rule, without actors: CANCELLED only when the tree asked."""
    from taskvisor.actors._executors import _cancelled_outcome

    class Sink:
        def progress(self, value: object) -> None: ...

        def finished(self, outcome: object) -> None: ...

    for exc in (TaskCancelled("x"), asyncio.CancelledError()):
        ctx = TaskContext("t", 1, Mailbox(), Sink())
        assert _cancelled_outcome(exc, ctx).phase is TaskPhase.FAILED
        ctx.request_cancel()
        assert _cancelled_outcome(exc, ctx).phase is TaskPhase.CANCELLED


async def adeaf(ctx: TaskContext, release: threading.Event, running: threading.Event) -> str:
    """Swallow every cancellation (but keep awaiting) until the test releases it."""
    running.set()
    while not release.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.01)
    return "late"


def test_async_ignoring_cancel_is_abandoned_without_blocking_the_loop(
    service: ExecutorService,
) -> None:
    release, running = threading.Event(), threading.Event()
    try:
        handle = service.submit(
            TaskSpec(name="deaf", kind="async", target=adeaf, args=[release, running], shutdown=0.1)
        )
        assert running.wait(10)  # past its first step: a cancel now reaches the coroutine
        handle.cancel()
        task = handle.wait(10)
        assert task.status.phase is TaskPhase.CANCELLED
        assert "abandoned" in (task.status.error or "")
        # The loop still runs other coroutines while the deaf one goes on.
        other = service.submit(TaskSpec(name="other", kind="async", target=adouble, args=[4]))
        assert other.result(10) == 8
        with pytest.raises(TaskFailedError):
            handle.result(0)
    finally:
        release.set()


def test_async_close_gives_up_on_a_coroutine_that_never_stops() -> None:
    executor = AsyncExecutor()
    release, running = threading.Event(), threading.Event()
    try:
        done = threading.Event()

        class Sink:
            def progress(self, value: object) -> None: ...

            def finished(self, outcome: object) -> None:
                done.set()

        spec = TaskSpec(name="deaf", kind="async", target=adeaf, args=[release, running])
        ctx = TaskContext("deaf", 1, Mailbox(), Sink())
        executor.start(Task.new("deaf", spec), ctx)
        assert running.wait(10)
        assert executor.kill(Task.new("deaf", spec), ctx) is False  # cannot be killed
        thread = executor._thread
        assert thread is not None
        executor.close(timeout=0.5)
        assert not thread.is_alive()  # the loop stopped without it
        assert not done.is_set()  # it was given up, not finished
    finally:
        release.set()


def test_the_event_loop_thread_survives_a_base_exception_from_a_callback(
    service: ExecutorService, caplog: pytest.LogCaptureFixture
) -> None:
    executor = service.executors["async"]
    assert isinstance(executor, AsyncExecutor)
    loop = executor._running_loop()

    def escape() -> None:
        raise SystemExit("from a callback")

    loop.call_soon_threadsafe(escape)  # escapes run_forever
    executor._send(loop, functools.partial(_raise, KeyboardInterrupt()))  # a job that raises
    handle = service.submit(TaskSpec(name="after", kind="async", target=adouble, args=[5]))
    assert handle.result(10) == 10
    assert executor._thread is not None
    assert executor._thread.is_alive()
    messages = [r.getMessage() for r in caplog.records]
    assert any("keeps running" in m for m in messages)
    assert any("a job on the taskvisor event loop raised" in m for m in messages)


def _raise(exc: BaseException) -> None:
    raise exc


def test_a_worker_thread_survives_a_base_exception_from_its_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from taskvisor.actors._executors import _WorkerPool

    pool = _WorkerPool("taskvisor-test")
    ran = threading.Event()
    names: list[str] = []
    pool.run("t", functools.partial(_raise, SystemExit("in a job")))
    pool.run("t", lambda: (names.append(threading.current_thread().name), ran.set()))
    assert ran.wait(10)  # the same worker, still serving
    assert names == ["taskvisor-test-1"]
    assert any("raised" in r.getMessage() for r in caplog.records)
    pool.close(5)


def test_an_object_with_an_async_call_runs_as_kind_async() -> None:
    """The spec accepts such a target for kind 'async'; the executor runs it (one rule for both)."""
    import threading

    from taskvisor.supervision import Supervisor, SupervisorSpec

    ran = threading.Event()

    class Handler:
        async def __call__(self, ctx: object) -> str:
            ran.set()
            return "done"

    spec = SupervisorSpec(
        "objs",
        children=[TaskSpec("h", kind="async", target=Handler(), restart="transient")],
    )
    with Supervisor.start(spec) as tree:
        assert ran.wait(10)
        assert wait_until(lambda: tree.which_children()[0].phase is TaskPhase.SUCCEEDED, 10)
