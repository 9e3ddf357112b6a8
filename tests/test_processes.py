"""Child processes never outlive their host, and a stopped executor leaves none behind.

Real processes throughout: a host process that runs the executor is
SIGKILLed, and its children must be gone; a recorded group left by a dead
host is killed on resume; hundreds of children are killed and reaped by
``close()`` / ``shutdown()``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

from conftest import wait_until
from helpers import Sink
from taskvisor.actors import (
    ExecutorService,
    Outcome,
    Task,
    TaskContext,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskSpec,
    TaskState,
    _executors,
    resume_record,
)
from taskvisor.actors._context import Mailbox
from taskvisor.actors._executors import (
    SubprocessExecutor,
    kill_stale_group,
    process_start_time,
)
from taskvisor.supervision import ChildStartError, Supervisor, SupervisorSpec

PY = sys.executable
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def live_members(pgid: int) -> list[int]:
    """Pids of the processes in group ``pgid`` that are not zombies."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != b"Z":
            found.append(int(entry))
    return found


def start(executor: SubprocessExecutor, command: list[str], n: int = 1) -> tuple[TaskContext, Sink]:
    sink = Sink()
    task = Task.new(f"t{n}", TaskSpec(name=f"t{n}", kind="subprocess", command=command))
    ctx = TaskContext(task.id, 1, Mailbox(), sink)
    executor.start(task, ctx)
    return ctx, sink


HOST = textwrap.dedent(
    """
    import json, sys, threading, time
    from taskvisor.actors import Task, TaskContext, TaskSpec
    from taskvisor.actors._context import Mailbox
    from taskvisor.actors import _executors
    from taskvisor.actors._executors import SubprocessExecutor

    class Sink:
        def progress(self, value): pass
        def finished(self, outcome): pass

    guard = sys.argv[1] == "guard"
    if sys.argv[1] == "preexec":  # as where setpriv is missing: prctl in preexec_fn
        _executors._setpriv[:] = [None]
    executor = SubprocessExecutor(guard=guard)
    task = Task.new("s", TaskSpec(name="s", kind="subprocess", command=sys.argv[2:]))
    ctx = TaskContext("s", 1, Mailbox(), Sink())
    # Started from a thread that ends at once: the child must not die with it.
    starter = threading.Thread(target=executor.start, args=(task, ctx))
    starter.start()
    starter.join()
    print(json.dumps({"pid": ctx.pid, "pgid": ctx.pgid, "started": ctx.started}), flush=True)
    time.sleep(300)
    """
)


@pytest.fixture
def host_script(tmp_path: Path) -> Path:
    path = tmp_path / "host.py"
    path.write_text(HOST)
    return path


def run_host(script: Path, mode: str, command: list[str]) -> tuple[subprocess.Popen[str], Any]:
    host = subprocess.Popen(
        [PY, str(script), mode, *command], stdout=subprocess.PIPE, text=True, cwd=script.parent
    )
    assert host.stdout is not None
    line = host.stdout.readline()
    assert line, "the host printed nothing"
    return host, json.loads(line)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["plain", "preexec"])
def test_a_child_dies_with_its_host_sigkilled_by_its_death_signal(
    mode: str, host_script: Path, hosts: list[subprocess.Popen[str]]
) -> None:
    """Layer 1 alone (no guard): PR_SET_PDEATHSIG kills the direct child with its host,
    set by setpriv or, where that is missing, by a preexec_fn."""
    host, info = run_host(host_script, mode, ["sleep", "300"])
    hosts.append(host)
    assert info["pid"] == info["pgid"]  # a group of its own
    assert info["started"] == process_start_time(info["pid"])
    assert live_members(info["pgid"]) == [info["pid"]]  # alive, past its starter thread's end
    host.send_signal(signal.SIGKILL)
    host.wait(10)
    assert wait_until(lambda: not live_members(info["pgid"]), timeout=10)


@pytest.mark.slow
def test_a_childs_whole_group_dies_with_its_host_sigkilled(
    host_script: Path, hosts: list[subprocess.Popen[str]]
) -> None:
    """The guard kills the rest of the group: a shell's background child, here."""
    host, info = run_host(host_script, "guard", ["sh", "-c", "sleep 300 & sleep 301; wait"])
    hosts.append(host)
    assert wait_until(lambda: len(live_members(info["pgid"])) == 3)  # sh and two sleeps
    host.send_signal(signal.SIGKILL)
    host.wait(10)
    assert wait_until(lambda: not live_members(info["pgid"]), timeout=10)


def test_a_child_outlives_the_thread_that_asked_for_it() -> None:
    """The death signal is tied to the spawner thread, not to the caller of start()."""
    executor = SubprocessExecutor()
    out: list[tuple[TaskContext, Sink]] = []
    native: list[int] = []

    def starter() -> None:
        native.append(threading.get_native_id())
        out.append(start(executor, ["sleep", "300"]))

    thread = threading.Thread(target=starter)
    thread.start()
    thread.join()
    # Wait until the OS thread is gone: a death signal tied to it would have fired.
    assert wait_until(lambda: not os.path.exists(f"/proc/self/task/{native[0]}"))
    ((ctx, sink),) = out
    assert ctx.pid in live_members(ctx.pgid or 0)
    executor.cancel(Task.new("t1", TaskSpec(name="t1", kind="subprocess", command=["x"])), ctx)
    assert sink.done.wait(10)
    assert sink.outcomes[0].exit_code == -signal.SIGTERM  # ours, not a death signal's SIGKILL
    executor.close()


def test_start_records_pid_group_and_start_time_and_kill_is_idempotent() -> None:
    executor = SubprocessExecutor()
    try:
        ctx, sink = start(executor, ["sleep", "300"])
        assert ctx.pid is not None
        assert ctx.pgid == ctx.pid
        assert ctx.started is not None
        assert ctx.started == process_start_time(ctx.pid)
        assert executor.live_children() == [ctx.pid]
        task = Task.new("t1", TaskSpec(name="t1", kind="subprocess", command=["sleep"]))
        assert executor.kill(task, ctx) is True
        assert executor.kill(task, ctx) is True  # again: harmless
        executor.cancel(task, ctx)
        assert sink.done.wait(10)
        assert executor.kill(task, ctx) is True  # after the reap: signals nothing
        assert [o.exit_code for o in sink.outcomes] == [-signal.SIGKILL]  # reported once
        assert executor.live_children() == []
    finally:
        executor.close()


def test_other_kinds_record_no_process() -> None:
    ctx = TaskContext("x", 1, Mailbox(), Sink())
    assert (ctx.pid, ctx.pgid, ctx.started) == (None, None, None)


@pytest.mark.slow
@pytest.mark.parametrize("n", [300])
def test_close_kills_and_reaps_every_child(n: int) -> None:
    """Fault 1, executor side: every group still running is killed and reaped by close()."""
    executor = SubprocessExecutor()
    started = [start(executor, ["sleep", "300"], i) for i in range(n)]
    pgids = [ctx.pgid for ctx, _ in started]
    assert len(executor.live_children()) == n
    executor.close(timeout=5)
    assert executor.live_children() == []
    assert all(sink.done.is_set() for _, sink in started)
    assert all(not live_members(pgid or 0) for pgid in pgids)
    # the no_leaks fixture checks that no child (zombie or not) is left


@pytest.mark.slow
def test_service_shutdown_with_300_subprocess_children_leaves_none() -> None:
    """Fault 1 (subprocess half): 300 ``sleep 300`` tasks, then shutdown with a short timeout."""
    with ExecutorService() as svc:
        handles = [
            svc.submit(TaskSpec(name=f"s{i}", kind="subprocess", command=["sleep", "300"]))
            for i in range(300)
        ]
        executor = svc.executors["subprocess"]
        assert isinstance(executor, SubprocessExecutor)
        assert wait_until(lambda: len(executor.live_children()) == 300, timeout=30)
        pgids = executor.live_children()  # each leads its own group
        svc.shutdown(timeout=5)
        assert executor.live_children() == []
        assert all(not live_members(pgid) for pgid in pgids)
        assert all(h.done() for h in handles)
        assert {h.wait(0).status.phase for h in handles} == {TaskPhase.CANCELLED}


def test_close_ends_running_children_and_the_executor_can_start_again() -> None:
    executor = SubprocessExecutor()
    _, sink = start(executor, ["sleep", "300"])
    executor.close(timeout=5)
    assert sink.done.wait(0)
    # usable again: close() leaves it ready to start threads anew
    _, sink2 = start(executor, [PY, "-c", "pass"])
    assert sink2.done.wait(10)
    assert sink2.outcomes == [Outcome(TaskPhase.SUCCEEDED, exit_code=0)]
    executor.close()


def test_a_missing_program_is_a_start_error() -> None:
    executor = SubprocessExecutor()
    try:
        with pytest.raises(FileNotFoundError):
            start(executor, ["/nonexistent/taskvisor-program"])
        assert executor.live_children() == []
    finally:
        executor.close()


def make_program(tmp_path: Path, what: str) -> Path:
    """A program path that exists but cannot be run: a file of mode 644, or a directory."""
    program = tmp_path / "program"
    if what == "not executable":
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o644)
    else:
        program.mkdir()
    return program


CAUSES = {"not executable": "(not executable)", "a directory": "(a directory, not a program)"}


@pytest.mark.parametrize("spawn", ["setpriv", "preexec"])
@pytest.mark.parametrize("what", sorted(CAUSES))
def test_a_program_that_cannot_run_is_a_start_error_naming_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str, spawn: str
) -> None:
    if spawn == "preexec":  # as where setpriv is missing: Popen itself would say it
        monkeypatch.setattr(_executors, "_setpriv", [None])
    program = make_program(tmp_path, what)
    executor = SubprocessExecutor()
    try:
        with pytest.raises(PermissionError) as info:
            start(executor, [str(program)])
        assert str(info.value) == f"[Errno 13] Permission denied {CAUSES[what]}: {str(program)!r}"
        assert executor.live_children() == []
    finally:
        executor.close()


def test_a_bare_name_on_path_that_cannot_run_is_named_as_such(tmp_path: Path) -> None:
    make_program(tmp_path, "not executable")
    executor = SubprocessExecutor()
    spec = TaskSpec(name="t", kind="subprocess", command=["program"], env={"PATH": str(tmp_path)})
    task = Task.new("t", spec)
    try:
        with pytest.raises(
            PermissionError, match=r"Permission denied \(not executable\): 'program'"
        ):
            executor.start(task, TaskContext(task.id, 1, Mailbox(), Sink()))
        spec = attrs.evolve(spec, env={"PATH": str(tmp_path / "nowhere")})
        task = Task.new("t", spec)
        with pytest.raises(FileNotFoundError, match=r"No such file or directory: 'program'"):
            executor.start(task, TaskContext(task.id, 1, Mailbox(), Sink()))
    finally:
        executor.close()


@pytest.mark.parametrize("what", sorted(CAUSES))
def test_a_child_whose_program_cannot_run_fails_to_start_saying_why(
    tmp_path: Path, what: str
) -> None:
    program = make_program(tmp_path, what)
    task = TaskSpec(name="p", kind="subprocess", command=[str(program)])
    with pytest.raises(ChildStartError) as info:
        Supervisor.start(SupervisorSpec("app", children=[task]))
    assert f"PermissionError: [Errno 13] Permission denied {CAUSES[what]}" in str(info.value)
    assert "No such file" not in str(info.value)


# --------------------------------------------------------------------------- stale groups


def orphan_group() -> subprocess.Popen[bytes]:
    """A process in a group of its own, as a dead host would leave it (ours, to reap)."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


def test_kill_stale_group_kills_a_recorded_group_that_still_runs() -> None:
    proc = orphan_group()
    started = process_start_time(proc.pid)
    assert started is not None
    assert kill_stale_group(proc.pid, proc.pid, started) is True
    assert proc.wait(10) == -signal.SIGKILL
    assert kill_stale_group(proc.pid, proc.pid, started) is False  # gone now


def test_kill_stale_group_spares_a_reused_pid() -> None:
    proc = orphan_group()
    try:
        started = process_start_time(proc.pid)
        assert started is not None
        # The record names this pid with another start time: the pid was reused.
        assert kill_stale_group(proc.pid, proc.pid, started - 1) is False
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(10)


def test_kill_stale_group_never_kills_its_own_group_or_init() -> None:
    assert kill_stale_group(os.getpgrp()) is False
    assert kill_stale_group(1) is False
    assert kill_stale_group(0) is False


def test_kill_stale_group_kills_the_group_when_its_leader_is_gone(tmp_path: Path) -> None:
    """The leader exited and was reaped; its background child still holds the group."""
    pid_file = tmp_path / "child.pid"
    leader = subprocess.Popen(
        ["sh", "-c", f"sleep 300 & echo $! > {pid_file}"], start_new_session=True
    )
    assert leader.wait(10) == 0
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip())
    child = int(pid_file.read_text())
    assert live_members(leader.pid) == [child]
    assert kill_stale_group(leader.pid, leader.pid, None) is True
    assert wait_until(lambda: not live_members(leader.pid))


def test_resume_kills_the_group_a_lost_run_left_running() -> None:
    """Fault 7, resume side: the old host's child is killed before a new attempt."""
    proc = orphan_group()
    run = TaskRun.starting(
        1,
        now=1,
        pid=proc.pid,
        pgid=proc.pid,
        host=socket.gethostname(),
        process_started=process_start_time(proc.pid),
    )
    record = TaskRecord.new("s")
    record.transition(TaskState.RUNNING)
    record.runs.append(run)
    spec = TaskSpec(name="s", kind="subprocess", command=["sleep", "300"])
    assert resume_record(record, spec) is True
    assert proc.wait(10) == -signal.SIGKILL
    assert record.runs[-1].phase is TaskPhase.FAILED
    assert record.runs[-1].error is not None
    assert f"process group {proc.pid} was still running and was killed" in record.runs[-1].error


def test_resume_spares_a_group_recorded_on_another_host_or_with_a_reused_pid() -> None:
    proc = orphan_group()
    try:
        started = process_start_time(proc.pid)
        assert started is not None
        for run in (
            TaskRun.starting(1, pid=proc.pid, pgid=proc.pid, host="elsewhere"),
            TaskRun.starting(1, pid=proc.pid, pgid=proc.pid, process_started=started + 1),
        ):
            record = TaskRecord.new("s")
            record.transition(TaskState.RUNNING)
            record.runs.append(run)
            resume_record(record, TaskSpec(name="s", target=print))
            assert "was killed" not in (record.runs[-1].error or "")
            assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(10)
