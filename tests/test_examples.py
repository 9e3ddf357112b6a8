"""Every example under examples/ runs, as a user would run it, and says what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # the library prints nothing unless logging is configured
    return done.stdout


def test_every_example_is_tested() -> None:
    tested = {
        "supervision_tree.py",
        "executor_service.py",
        "simulate_policy.py",
        "quickstart_tasks.py",  # the targets of quickstart.toml, run by its tests below
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested
    tree_files = {"quickstart.toml", "quickstart_failures.toml"}
    assert {p.name for p in EXAMPLES.iterdir() if p.suffix in (".toml", ".json", ".yaml")} == (
        tree_files
    )


def taskvisor(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the ``taskvisor`` console script of this venv from the repository root."""
    script = Path(sys.executable).parent / "taskvisor"
    return subprocess.run(
        [str(script), *argv],
        cwd=EXAMPLES.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quickstart_checks_clean() -> None:
    done = taskvisor("check", "examples/quickstart.toml")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout
        == "examples/quickstart.toml: OK: tree 'quickstart', 3 task(s), 0 supervisor(s)\n"
    )


def test_quickstart_failures_simulate_a_give_up() -> None:
    done = taskvisor("simulate", "examples/quickstart.toml", "examples/quickstart_failures.toml")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "     0.500  fail     flaky: connection refused" in out
    assert "     1.000  start    flaky (start #4)" in out
    assert "     2.000  skipped  exit batch: the tree has stopped" in out
    assert out.rstrip().splitlines()[-1] == (
        "outcome: gave up: supervisor 'quickstart' at 1.25s "
        "(reached max restart intensity: more than 3 restart(s) within 5s)"
    )


@pytest.mark.slow
def test_quickstart_runs_restarts_and_ends_by_itself() -> None:
    """The README's first command: it returns by itself, exit 0, a restart in its log."""
    done = taskvisor("run", "examples/quickstart.toml")
    assert done.returncode == 0, done.stderr
    log = done.stderr
    for line in (
        "WARNING taskvisor.tasks: quickstart/flaky: attempt 1 ended failed",
        "RuntimeError: flaky: the first attempt fails on purpose",
        "INFO taskvisor.supervision: quickstart: restarting flaky (restart 1 of 'flaky')",
        "INFO quickstart: flaky: attempt 2 succeeded",
        "INFO quickstart: batch: finished",
        "quickstart: significant child 'batch' ended succeeded: shutting down",
        "quickstart/worker: attempt 1 ended cancelled",
        "INFO taskvisor.supervision: quickstart: tree stopped",
        "INFO taskvisor.cli: quickstart: the tree shut itself down; exiting with 0",
    ):
        assert line in log, line
    assert "worker: tick 0" in done.stdout  # the subprocess child's own output, inherited
    assert "Traceback (most recent call last)" in log  # the flaky attempt's, logged
    assert log.count("Traceback") == 1


@pytest.mark.slow
def test_supervision_tree_survives_injected_failures() -> None:
    out = run("supervision_tree.py")
    for line in (
        "app/ticker: attempt 1 failed exited with code 3",
        "app/ticker: attempt 2 started",
        "asking counter: attempt 1, request 1",
        "app/counter: attempt 1 failed RuntimeError: injected failure",
        "asking counter: attempt 2, request 1",
        "app/db: cache ended; restarting pool, cache",
        "app/db/pool: attempt 1 cancelled terminated by its owner",
        "asking db/cache: attempt 2, request 1",
        "app: stopped (stopped)",
    ):
        assert line in out, line
    # Shutdown runs in reverse start order: db's children, then counter, then ticker.
    tail = out[out.index("stopping the tree") :]
    order = [tail.index(f"app/{c}: finished") for c in ("db/cache", "db/pool", "counter", "ticker")]
    assert order == sorted(order)


def test_executor_service_runs_all_three_kinds() -> None:
    out = run("executor_service.py")
    assert "count   -> 4" in out
    assert "fetch   -> fetched after 0.05s" in out
    assert "compute -> succeeded exit code 0" in out
    assert "broken  -> task 'broken' ended failed: exited with code 2" in out
    assert "hook  rejected  (duplicate_id) duplicate task id 'count'" in out
    for task, phase in (("count", "succeeded"), ("fetch", "succeeded"), ("broken", "failed")):
        assert f"hook  finished  {task}: {phase}" in out
        assert out.index(f"hook  accepted  {task}") < out.index(f"hook  started   {task}")
        assert out.index(f"hook  started   {task}") < out.index(f"hook  finished  {task}")


def test_simulate_policy_shows_escalation() -> None:
    out = run("simulate_policy.py")
    assert (
        "GIVE UP  app/db: reached max restart intensity: more than 2 restart(s) within 10s" in out
    )
    assert "decide   app restarts db after 0.500s" in out
    assert "start    db/cache (start #4)" in out
    assert "skipped  timeout api: the tree has stopped" in out
    assert "gave up: True" in out
    assert "api        exhausted  starts=1 running=False" in out
