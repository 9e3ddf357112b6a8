"""``SupervisorRef.run_forever()`` with real signals, the lifecycle log lines, typed handles.

The signal tests run a real host process (a child Python that starts a tree
and calls ``run_forever()``) and send it real signals; its subprocess
children record their pids, and every one of them must be gone afterwards.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_until
from taskvisor.actors import TaskRef, TaskSpec
from taskvisor.supervision import (
    Intensity,
    Supervisor,
    SupervisorError,
    SupervisorExhausted,
    SupervisorHandle,
    SupervisorSpec,
)

HOST = textwrap.dedent(
    """
    import sys, time
    from taskvisor.actors import TaskSpec
    from taskvisor.supervision import Supervisor, SupervisorSpec

    pids = sys.argv[1]
    grace = float(sys.argv[2])
    trap = sys.argv[3]  # what the workers do on SIGTERM: "exit" or "ignore"
    body = (
        f"import os, signal, time; open({pids!r} + '/' + str(os.getpid()), 'w').close(); "
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if trap == "ignore" else "")
        + "time.sleep(300)"
    )

    def serve(ctx):
        ctx.wait_cancelled()

    spec = SupervisorSpec(
        "svc",
        children=[
            *(
                TaskSpec(name=f"w{i}", kind="subprocess",
                         command=[sys.executable, "-c", body], shutdown=grace)
                for i in range(3)
            ),
            TaskSpec(name="py", target=serve, shutdown=grace),
        ],
    )
    tree = Supervisor.start(spec)
    print("ready", flush=True)
    stopped_by = tree.run_forever()
    print("stopped by", stopped_by, flush=True)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def host_of(tmp_path: Path, hosts: list[subprocess.Popen[str]]) -> Iterator[tuple[Path, object]]:
    pids = tmp_path / "pids"
    pids.mkdir()
    workers: list[int] = []

    def start(grace: float, trap: str) -> subprocess.Popen[str]:
        host = subprocess.Popen(
            [sys.executable, "-c", HOST, str(pids), str(grace), trap],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        hosts.append(host)
        assert host.stdout is not None
        assert host.stdout.readline().strip() == "ready"
        assert wait_until(lambda: len(list(pids.iterdir())) == 3, 20)
        workers.extend(int(p.name) for p in pids.iterdir())
        return host

    yield pids, start
    for pid in workers:  # whatever the test found, leave nothing running
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_stops_the_tree_in_order_and_leaves_no_process(
    host_of: tuple[Path, object], signum: int
) -> None:
    pids, start = host_of
    host = start(30.0, "exit")  # type: ignore[operator]
    host.send_signal(signum)
    out, _ = host.communicate(timeout=30)
    assert host.returncode == 0, out
    assert f"stopped by {int(signum)}" in out
    assert not [pid for pid in map(int, os.listdir(pids)) if _alive(pid)]


def test_a_second_signal_kills_children_that_ignore_the_first(
    host_of: tuple[Path, object],
) -> None:
    pids, start = host_of
    host = start(120.0, "ignore")  # workers ignore SIGTERM: an orderly stop would take 120 s
    host.send_signal(signal.SIGINT)
    time.sleep(0.5)  # let the orderly stop begin (the workers keep running through it)
    assert host.poll() is None
    assert all(_alive(pid) for pid in map(int, os.listdir(pids)))
    host.send_signal(signal.SIGINT)
    out, _ = host.communicate(timeout=60)  # far below the 120 s grace: only a kill ends it
    assert host.returncode == 0, out
    assert f"stopped by {int(signal.SIGINT)}" in out
    assert not [pid for pid in map(int, os.listdir(pids)) if _alive(pid)]


def test_sighup_is_logged_and_ignored(host_of: tuple[Path, object]) -> None:
    _pids, start = host_of
    host = start(30.0, "exit")  # type: ignore[operator]
    host.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert host.poll() is None  # still running
    host.send_signal(signal.SIGTERM)
    out, _ = host.communicate(timeout=30)
    assert host.returncode == 0, out


def test_run_forever_returns_none_when_the_tree_shuts_itself_down(log_lines: _Lines) -> None:
    spec = SupervisorSpec(
        "auto",
        children=[
            TaskSpec(name="job", target=lambda ctx: 1, restart="transient", significant=True)
        ],
        auto_shutdown="any_significant",
    )
    previous = signal.getsignal(signal.SIGTERM)
    tree = Supervisor.start(spec)
    assert tree.run_forever() is None
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers put back
    messages = [m for _, m in log_lines.lines]
    assert (
        "auto: significant child 'job' ended succeeded: shutting down "
        "(auto_shutdown=any_significant)" in messages
    )


def test_run_forever_raises_when_the_root_gives_up() -> None:
    def crash(_ctx: object) -> None:
        raise RuntimeError("boom")

    spec = SupervisorSpec(
        "doomed", children=[TaskSpec(name="bad", target=crash)], intensity=Intensity(1, 60)
    )
    tree = Supervisor.start(spec)
    with pytest.raises(SupervisorExhausted, match="boom"):
        tree.run_forever()


def test_run_forever_off_the_main_thread_is_refused() -> None:
    spec = SupervisorSpec(
        "t", children=[TaskSpec(name="s", target=lambda ctx: ctx.wait_cancelled())]
    )
    errors: list[BaseException] = []
    with Supervisor.start(spec) as tree:
        thread = threading.Thread(target=lambda: _capture(tree.run_forever, errors))
        thread.start()
        thread.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], SupervisorError)
    assert errors[0].reason == "not_main_thread"


def _capture(call: object, errors: list[BaseException]) -> None:
    try:
        call()  # type: ignore[operator]
    except BaseException as exc:
        errors.append(exc)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


@pytest.fixture
def log_lines() -> Iterator[_Lines]:
    handler = _Lines()
    root = logging.getLogger("taskvisor")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_lifecycle_facts_are_logged_once_logging_is_configured(
    tmp_path: Path, log_lines: _Lines
) -> None:
    marker = tmp_path / "ran"
    code = (
        f"import os, sys; p = {str(marker)!r}; "
        "first = not os.path.exists(p); open(p, 'a').close(); sys.exit(3 if first else 0)"
    )
    spec = SupervisorSpec(
        "logs",
        children=[
            TaskSpec(
                name="proc",
                kind="subprocess",
                command=[sys.executable, "-c", code],
                restart="transient",
            ),
            TaskSpec(name="idle", target=lambda ctx: ctx.wait_cancelled()),
        ],
    )
    with Supervisor.start(spec) as tree:
        assert wait_until(
            lambda: any("proc: attempt 2 ended succeeded" in m for _, m in log_lines.lines), 20
        )
        tree.stop()
    messages = [m for _, m in log_lines.lines]
    started = [m for m in messages if m.startswith("logs/proc: attempt 1 started (pid ")]
    assert len(started) == 1
    failed = [
        (lvl, m)
        for lvl, m in log_lines.lines
        if "proc: attempt 1 ended failed with exit code 3" in m
    ]
    assert failed
    assert failed[0][0] == logging.WARNING
    assert "logs: restarting proc (restart 1 of 'proc')" in messages
    assert "logs/idle: attempt 1 ended cancelled: terminated by its owner" in messages
    assert messages[-1] == "logs: tree stopped"


def test_give_up_is_logged_with_its_cause(log_lines: _Lines) -> None:
    def crash(_ctx: object) -> None:
        raise RuntimeError("disk on fire")

    spec = SupervisorSpec(
        "gu", children=[TaskSpec(name="bad", target=crash)], intensity=Intensity(0, 60)
    )
    tree = Supervisor.start(spec)
    with pytest.raises(SupervisorExhausted):
        tree.wait(30)
    errors = [m for lvl, m in log_lines.lines if lvl == logging.ERROR]
    assert any("gu: giving up" in m and "disk on fire" in m for m in errors), errors


def test_child_paths_are_relative_and_typed_handles_check_the_kind() -> None:
    spec = SupervisorSpec(
        "app",
        children=[
            SupervisorSpec(
                "db", children=[TaskSpec(name="cache", target=lambda ctx: ctx.wait_cancelled())]
            ),
        ],
    )
    with Supervisor.start(spec) as tree:
        with pytest.raises(
            SupervisorError, match=r"relative to the supervisor 'app': use child\('db/cache'\)"
        ):
            tree.child("app/db/cache")
        assert isinstance(tree.task("db/cache"), TaskRef)
        db = tree.supervisor("db")
        assert isinstance(db, SupervisorHandle)
        assert [row.id for row in db.which_children()] == ["cache"]
        with pytest.raises(SupervisorError, match="is a supervisor, not a task"):
            tree.task("db")
        with pytest.raises(SupervisorError, match="is a task, not a supervisor"):
            tree.supervisor("db/cache")
        with pytest.raises(SupervisorError, match="no child 'nope'") as caught:
            tree.child("db/nope")
        assert caught.value.__traceback__ is not None
        assert caught.value.__cause__ is None
        # A task's call on a supervisor's handle says what to use, not a private class.
        with pytest.raises(AttributeError, match=r"^ask: 'app/db' is a supervisor") as wrong:
            db.ask("hello")  # type: ignore[attr-defined]
        assert ".task(NAME).ask(...)" in str(wrong.value)
        assert "_SupervisorPort" not in str(wrong.value)
        with pytest.raises(AttributeError, match=r"^a supervisor's handle \('app'\) has no"):
            tree.no_such_call  # type: ignore[attr-defined]  # noqa: B018


def test_a_permanent_one_shot_job_gives_up_with_the_fix_in_the_reason() -> None:
    spec = SupervisorSpec(
        "jobs", children=[TaskSpec(name="once", target=lambda ctx: 42)], intensity=Intensity(3, 60)
    )
    tree = Supervisor.start(spec)
    with pytest.raises(SupervisorExhausted) as caught:
        tree.wait(30)
    assert "'once' is PERMANENT and its work returned normally" in str(caught.value)
    assert "restart='transient'" in str(caught.value)


@pytest.mark.parametrize("auto", ["any_significant", "all_significant"])
def test_a_resumed_tree_whose_significant_children_ended_shuts_itself_down(
    tmp_path: Path, auto: str
) -> None:
    from taskvisor.actors import SqliteStore

    ran: list[str] = []

    def job(ctx: object, name: str) -> str:
        ran.append(name)
        return name

    spec = SupervisorSpec(
        "resumed",
        children=[
            TaskSpec(name="a", target=job, args=["a"], restart="transient", significant=True),
            TaskSpec(name="b", target=job, args=["b"], restart="temporary", significant=True),
            TaskSpec(name="idle", target=lambda ctx: ctx.wait_cancelled()),
        ],
        auto_shutdown=auto,
    )
    path = tmp_path / "store.db"
    with SqliteStore(path) as store:
        tree = Supervisor.start(spec, store=store)
        tree.wait(30)
    first = sorted(ran)
    assert "a" in first
    with SqliteStore(path) as store:
        tree = Supervisor.start(spec, store=store)
        tree.wait(30)  # ends by itself: a and b ended for good in the first life
        assert not tree.running
    assert sorted(ran) == first  # neither ran again


def test_a_grace_that_runs_out_is_logged_before_the_kill(log_lines: _Lines) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    spec = SupervisorSpec(
        "g",
        children=[
            TaskSpec(
                "p",
                kind="subprocess",
                command=[sys.executable, "-c", stubborn],
                shutdown=0.3,
                stdout="prefix",
            )
        ],
    )
    with Supervisor.start(spec) as tree:
        assert wait_until(lambda: any(m == "[g/p] ready" for _, m in log_lines.lines), 20)
        tree.stop()  # the child ignores SIGTERM: its grace runs out
    warnings = [m for lvl, m in log_lines.lines if lvl == logging.WARNING]
    assert "g/p: attempt 1 did not stop within its 0.3s grace: killing it" in warnings
    ended = [m for _, m in log_lines.lines if m.startswith("g/p: attempt 1 ended cancelled")]
    assert ended
    assert "exit code -9" in ended[0]
