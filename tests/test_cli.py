"""The ``taskvisor`` command: run, check and simulate, in process and as a real host process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import wait_until

from taskvisor.cli import EXIT_GAVE_UP, EXIT_OK, EXIT_USAGE, JsonFormatter, main
from taskvisor.cli._main import _run_tree, _signals_noted
from taskvisor.supervision import check_tree_file, load_tree_file

ROOT = Path(__file__).resolve().parent.parent

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``main(argv)`` in this process; return its exit code, stdout and stderr."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------- usage


@pytest.mark.parametrize("command", [(), ("run",), ("check",), ("simulate",)])
def test_every_subcommand_has_help_with_the_exit_codes(cli: Run, command: tuple[str, ...]) -> None:
    code, out, err = cli(*command, "--help")
    assert code == EXIT_OK
    assert out.startswith(f"usage: taskvisor {' '.join(command)}".rstrip())
    assert "exit codes:" in out
    assert "2  bad usage" in out
    assert err == ""


def test_run_help_lists_its_options(cli: Run) -> None:
    _, out, _ = cli("run", "--help")
    for option in ("--store PATH", "--log-level LEVEL", "--log-format {text,json}", "TREE"):
        assert option in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "the following arguments are required: COMMAND"),
        (("bogus",), "invalid choice: 'bogus'"),
        (("run",), "the following arguments are required: TREE"),
        (("run", "t.toml", "--log-level", "loud"), "argument --log-level: invalid choice"),
        (("check", "t.toml", "--bogus"), "unrecognized arguments: --bogus"),
        (("simulate", "t.toml"), "the following arguments are required: SCRIPT"),
    ],
)
def test_bad_usage_exits_2_with_the_reason(cli: Run, argv: tuple[str, ...], message: str) -> None:
    code, _, err = cli(*argv)
    assert code == EXIT_USAGE
    assert message in err
    assert "Traceback" not in err


def test_a_user_mistake_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskvisor", "run", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_USAGE
    assert done.stderr.splitlines() == [
        f"{tmp_path}/missing.toml: cannot read: No such file or directory",
        f"{tmp_path}/missing.toml: 1 problem; nothing started",
    ]


# --------------------------------------------------------------------------- check


def test_check_of_a_good_tree_prints_one_ok_line(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "good_cli_a.py", "def work(ctx):\n    return 1\n")
    tree = write(
        tmp_path / "tree.toml",
        """\
        name = "app"

        [[children]]
        name = "a"
        target = "good_cli_a:work"

        [[children]]
        name = "pool"
        template = { name = "w", kind = "subprocess", command = ["${PY}", "-V"] }
        """,
    )
    monkeypatch.setenv("PY", sys.executable)
    code, out, err = cli("check", str(tree))
    assert (code, err) == (EXIT_OK, "")
    assert out == f"{tree}: OK: tree 'app', 2 task(s), 1 supervisor(s)\n"


def test_check_prints_every_problem_with_path_and_line(cli: Run, tmp_path: Path) -> None:
    tree = write(
        tmp_path / "tree.yaml",
        """\
        name: app
        strategy: one_for_al
        children:
          - name: a
            target: nomodule_cli_b:work
          - name: b
            kind: cal
            target: m:f
          - name: c
            kind: subprocess
            command: [no-such-program-cli-b]
        """,
    )
    code, out, err = cli("check", str(tree))
    assert code == EXIT_USAGE
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == (
        f"{tree}:2: strategy: expected one of one_for_one, one_for_all, rest_for_one, "
        "got 'one_for_al'"
    )
    assert lines[1].startswith(f"{tree}:5: children[0].target: cannot import module")
    assert lines[2] == (
        f"{tree}:7: children[1].kind: unknown kind 'cal' (valid kinds: async, call, subprocess)"
    )
    assert (
        lines[3]
        == f"{tree}:11: children[2].command: program 'no-such-program-cli-b' not found on PATH"
    )
    assert lines[4] == f"{tree}: 4 problems; nothing started"


def test_check_never_runs_a_task(cli: Run, tmp_path: Path) -> None:
    write(
        tmp_path / "marker_cli_c.py",
        "from pathlib import Path\n"
        "def work(ctx):\n    Path(__file__).with_suffix('.ran').touch()\n",
    )
    marker = tmp_path / "ran.txt"
    tree = write(
        tmp_path / "tree.json",
        json.dumps(
            {
                "name": "app",
                "children": [
                    {"name": "a", "target": "marker_cli_c:work"},
                    {
                        "name": "p",
                        "kind": "subprocess",
                        "command": ["/usr/bin/touch", str(marker)],
                    },
                ],
            }
        ),
    )
    code, _, _ = cli("check", str(tree))
    assert code == EXIT_OK
    assert not marker.exists()
    assert not (tmp_path / "marker_cli_c.ran").exists()


# --------------------------------------------------------------------------- run, in process


def test_run_of_a_tree_that_ends_by_itself_exits_0_with_logs(cli: Run, tmp_path: Path) -> None:
    write(
        tmp_path / "ends_cli_d.py",
        """\
        import threading

        attempts = []
        restarted = threading.Event()

        def flaky(ctx):
            attempts.append(ctx.attempt)
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails")
            restarted.set()

        def done(ctx):
            restarted.wait(30)  # end the tree only after flaky's restart ran
            return "ok"
        """,
    )
    tree = write(
        tmp_path / "tree.toml",
        """\
        name = "app"
        auto_shutdown = "any_significant"

        [[children]]
        name = "flaky"
        target = "ends_cli_d:flaky"
        restart = "transient"

        [[children]]
        name = "done"
        target = "ends_cli_d:done"
        restart = "temporary"
        significant = true
        """,
    )
    handlers = list(logging.getLogger().handlers)
    code, _, err = cli("run", str(tree))
    assert code == EXIT_OK, err
    assert logging.getLogger().handlers == handlers  # the command's handler is gone again
    assert "INFO taskvisor.cli: app: running" in err
    assert "app/flaky: attempt 1 ended failed" in err
    assert "INFO taskvisor.supervision: app: restarting flaky" in err
    assert "INFO taskvisor.cli: app: the tree shut itself down; exiting with 0" in err


def test_run_logs_as_json_lines_and_honours_the_level(cli: Run, tmp_path: Path) -> None:
    tree = write(
        tmp_path / "tree.json",
        json.dumps(
            {
                "name": "app",
                "auto_shutdown": "any_significant",
                "children": [
                    {
                        "name": "p",
                        "kind": "subprocess",
                        "command": [sys.executable, "-c", "pass"],
                        "restart": "temporary",
                        "significant": True,
                    }
                ],
            }
        ),
    )
    code, _, err = cli("run", str(tree), "--log-format", "json")
    assert code == EXIT_OK
    records = [json.loads(line) for line in err.splitlines()]
    assert records
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert any(r["message"] == "app: the tree shut itself down; exiting with 0" for r in records)
    assert records[0]["time"].endswith("+00:00")
    code, _, err = cli("run", str(tree), "--log-level", "warning")
    assert code == EXIT_OK
    assert err == ""  # nothing at WARNING or above happened


def test_the_json_formatter_adds_exception_text() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
        record.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed here"
    assert out["level"] == "ERROR"
    assert out["exc_info"].endswith("ValueError: bad")


def test_the_json_formatter_adds_stack_text() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "here", (), None, sinfo="Stack")
    assert json.loads(JsonFormatter().format(record))["stack_info"] == "Stack"


def test_signals_while_the_tree_starts_are_noted_then_handlers_restored() -> None:
    pending: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    with _signals_noted(pending):
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_until(lambda: pending == [signal.SIGTERM], 5)
    assert signal.getsignal(signal.SIGTERM) is before
    done: list[bool] = []

    def elsewhere() -> None:  # not the main thread: no handler can be installed there
        with _signals_noted(pending):
            done.append(signal.getsignal(signal.SIGTERM) is before)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(5)
    assert done == [True]


def test_a_signal_while_the_tree_starts_stops_it_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The target's module sends SIGTERM when it is imported, which the start does."""
    write(
        tmp_path / "early_cli_g.py",
        """\
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)


        def serve(ctx):
            while not ctx.wait_cancelled(0.5):
                pass
        """,
    )
    tree = write(
        tmp_path / "tree.toml",
        """\
        name = "app"

        [[children]]
        name = "a"
        target = "early_cli_g:serve"
        """,
    )
    from taskvisor.supervision._files import add_to_sys_path

    add_to_sys_path(tmp_path)
    caplog.set_level(logging.INFO, logger="taskvisor")
    assert _run_tree(load_tree_file(tree), None) == EXIT_OK
    assert "app: SIGTERM received while starting: stopping the tree in order" in caplog.messages
    assert "app/a: attempt 1 ended cancelled" in caplog.text


def test_run_of_a_tree_that_gives_up_prints_the_chain_and_exits_1(cli: Run, tmp_path: Path) -> None:
    tree = write(
        tmp_path / "tree.toml",
        """\
        name = "app"
        intensity = { max_restarts = 1, within = 60.0 }

        [[children]]
        name = "broken"
        kind = "subprocess"
        command = ["${PY:-python3}", "-c", "raise SystemExit(3)"]
        """,
    )
    code, _, err = cli("run", str(tree))
    assert code == EXIT_GAVE_UP
    assert (
        "ERROR taskvisor.cli: supervisor 'app' gave up (reached max restart intensity: "
        "more than 1 restart(s) within 60s); chain of failures, first cause first:\n"
        "  1. app: child 'broken' ended failed: exited with code 3"
    ) in err
    code, _, err = cli("run", str(tree), "--log-format", "json")
    assert code == EXIT_GAVE_UP
    records = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    last = records[-1]
    assert last["level"] == "ERROR"
    assert last["message"].startswith("supervisor 'app' gave up")
    assert "1. app: child 'broken' ended failed: exited with code 3" in last["message"]


def test_json_log_lines_carry_the_output_extras(cli: Run, tmp_path: Path) -> None:
    tree = write(
        tmp_path / "tree.toml",
        f"""\
        name = "app"
        auto_shutdown = "any_significant"

        [[children]]
        name = "p"
        kind = "subprocess"
        command = ["{sys.executable}", "-c", "print('hello from p')"]
        stdout = "prefix"
        restart = "temporary"
        significant = true
        """,
    )
    code, _, err = cli("run", str(tree), "--log-format", "json")
    assert code == EXIT_OK
    lines = [json.loads(line) for line in err.splitlines()]
    output = [r for r in lines if r["logger"].startswith("taskvisor.output")]
    assert output, lines
    assert output[0]["message"] == "[app/p] hello from p"
    assert output[0]["task_id"] == "app/p"
    assert output[0]["stream"] == "stdout"


def test_version(cli: Run) -> None:
    code, out, _ = cli("--version")
    assert code == EXIT_OK
    assert out.startswith("taskvisor ")


def test_run_on_a_store_another_live_tree_owns_exits_2(cli: Run, tmp_path: Path) -> None:
    from taskvisor.actors import SqliteStore, TaskSpec
    from taskvisor.supervision import Supervisor, SupervisorSpec

    db = tmp_path / "owned.db"
    tree = write(tmp_path / "t.toml", 'name = "app"\n')
    spec = SupervisorSpec(
        "owner", children=[TaskSpec("s", target=lambda ctx: ctx.wait_cancelled())]
    )
    with SqliteStore(db) as store, Supervisor.start(spec, store=store):
        code, _, err = cli("run", str(tree), "--store", str(db))
    assert code == EXIT_USAGE
    assert "taskvisor: error: " in err
    assert "owned by tree 'owner'" in err
    assert "Traceback" not in err


def test_check_names_an_output_file_whose_folder_is_missing(cli: Run, tmp_path: Path) -> None:
    tree = write(
        tmp_path / "t.toml",
        f"""\
        name = "app"

        [[children]]
        name = "p"
        kind = "subprocess"
        command = ["{sys.executable}", "-c", "pass"]
        stdout = "{tmp_path}/no/such/dir/out.log"
        stderr = "{tmp_path}/err.log"
        """,
    )
    code, _, err = cli("check", str(tree))
    assert code == EXIT_USAGE
    assert "children[0].stdout: the folder" in err
    assert "does not exist" in err
    assert "children[0].stderr" not in err  # its folder exists
    assert "1 problem; nothing started" in err


def test_run_of_an_invalid_tree_starts_nothing_and_exits_2(cli: Run, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    tree = write(
        tmp_path / "tree.toml",
        f"""\
        name = "app"

        [[children]]
        name = "p"
        kind = "subprocess"
        command = ["/usr/bin/touch", "{marker}"]

        [[children]]
        name = "q"
        restart = "always"
        target = "m:f"
        """,
    )
    code, _, err = cli("run", str(tree))
    assert code == EXIT_USAGE
    assert f"{tree}:10: children[1].restart: expected one of" in err
    assert not marker.exists()


def test_run_with_a_store_resumes_without_redoing_finished_work(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "resume_cli_e.py",
        """\
        def note(ctx, path, what):
            with open(path, "a") as f:
                f.write(what + "\\n")
        """,
    )
    setup = """\
        name = "app"
        auto_shutdown = "any_significant"

        [[children]]
        name = "setup"
        target = "resume_cli_e:note"
        kwargs = { path = "${OUT}", what = "setup" }
        restart = "transient"
        significant = true
        """
    first = write(tmp_path / "first.toml", setup)
    second = write(
        tmp_path / "second.toml",
        setup.replace("significant = true", "")
        + """
        [[children]]
        name = "serve"
        target = "resume_cli_e:note"
        kwargs = { path = "${OUT}", what = "serve" }
        restart = "transient"
        significant = true
        """,
    )
    out = tmp_path / "out.txt"
    monkeypatch.setenv("OUT", str(out))
    store = str(tmp_path / "records.db")
    assert cli("run", str(first), "--store", store)[0] == EXIT_OK
    assert cli("run", str(second), "--store", store)[0] == EXIT_OK
    assert out.read_text().split() == ["setup", "serve"]  # setup succeeded: not run again
    assert cli("run", str(second))[0] == EXIT_OK  # without the store it starts afresh
    # Both run again (their work runs side by side: the order of the lines is free).
    assert sorted(out.read_text().split()[2:]) == ["serve", "setup"]


def test_run_with_an_unusable_store_exits_2(cli: Run, tmp_path: Path) -> None:
    tree = write(tmp_path / "t.toml", 'name = "app"\n')
    code, _, err = cli("run", str(tree), "--store", str(tmp_path / "no" / "dir" / "x.db"))
    assert code == EXIT_USAGE
    assert err.startswith("taskvisor: error: ")
    assert "Traceback" not in err


def test_run_of_a_tree_that_cannot_start_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "gone.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    tree = write(
        tmp_path / "t.toml",
        f"""\
        name = "app"

        [[children]]
        name = "p"
        kind = "subprocess"
        command = ["{script}"]
        """,
    )
    assert check_tree_file(tree)[1] == ()
    script.unlink()  # gone between the check and the start
    assert _run_tree(load_tree_file(tree), None) == EXIT_GAVE_UP
    err = capsys.readouterr().err
    assert err.startswith("taskvisor: error: the tree 'app' could not start: child 'app/p'")


# --------------------------------------------------------------------------- simulate


SIM_TREE = """\
name = "app"
intensity = { max_restarts = 2, within = 10.0 }

[[children]]
name = "db"
target = "app.db:serve"

[[children]]
name = "web"
target = "app.web:serve"
"""


def test_simulate_until_runs_the_clock_there_and_names_unplayed_events(
    cli: Run, tmp_path: Path
) -> None:
    tree = write(tmp_path / "tree.toml", SIM_TREE)
    script = write(
        tmp_path / "script.toml",
        """\
        until = 12.0

        [[events]]
        at = 1.0
        event = "restart_child"
        child = "db"

        [[events]]
        at = 20.0
        event = "fail"
        child = "web"
        """,
    )
    code, out, _ = cli("simulate", str(tree), str(script))
    assert code == EXIT_OK
    assert "not played: 1 script event(s) after until=12s" in out
    assert out.rstrip().splitlines()[-1] == "outcome: running: the tree still runs at 12s"
    assert "1.000  skipped  restart_child db: child 'db' is already there" in out  # as spelled


def test_simulate_prints_the_timeline_and_who_gave_up(cli: Run, tmp_path: Path) -> None:
    tree = write(tmp_path / "tree.toml", SIM_TREE)
    script = write(
        tmp_path / "script.toml",
        """\
        [[events]]
        at = 1.0
        event = "fail"
        child = "db"
        error = "connection lost"

        [[events]]
        at = 2.0
        event = "exit"
        child = "web"

        [[events]]
        at = 3.0
        event = "timeout"
        child = "db"

        [[events]]
        at = 4.0
        event = "fail"
        child = "db"
        """,
    )
    code, out, err = cli("simulate", str(tree), str(script))
    assert (code, err) == (EXIT_OK, "")
    assert "     1.000  fail     db: connection lost" in out
    assert "     1.000  decide   app restarts db" in out
    assert "     2.000  exit     web (normal end)" in out
    assert "     3.000  timeout  db" in out
    assert "GIVE UP  app: reached max restart intensity" in out
    assert "     4.000  skipped  fail db: the tree has stopped" in out
    assert out.rstrip().splitlines()[-1] == (
        "outcome: gave up: supervisor 'app' at 3s (reached max restart intensity: "
        "more than 2 restart(s) within 10s)"
    )


def test_simulate_takes_json_and_yaml_scripts_and_api_events(cli: Run, tmp_path: Path) -> None:
    tree = write(tmp_path / "tree.toml", SIM_TREE)
    events = [
        {"at": 1, "event": "terminate_child", "child": "web"},
        {"at": 2, "event": "restart_child", "child": "web"},
        {"at": 3, "event": "terminate_child", "child": "web"},
        {"at": 4, "event": "delete_child", "child": "web"},
        {"at": 5, "event": "start", "spec": {"name": "extra", "target": "m:f"}},
    ]
    script = write(tmp_path / "s.json", json.dumps(events))
    code, out, _ = cli("simulate", str(tree), str(script))
    assert code == EXIT_OK
    assert "terminate web" in out
    assert "restart  web" in out
    assert "delete   web" in out
    assert "add      (root): new child" in out
    assert "start    extra" in out
    assert out.rstrip().endswith("outcome: running: the tree still runs at 5s")
    script = write(
        tmp_path / "s.yaml",
        "until: 30\nseed: 3\nevents:\n  - {at: 1, event: exit, child: db}\n",
    )
    code, out, _ = cli("simulate", str(tree), str(script))
    assert code == EXIT_OK
    assert "exit     db (normal end)" in out


def test_simulate_of_an_auto_shutdown_tree_says_it_shut_down(cli: Run, tmp_path: Path) -> None:
    tree = write(
        tmp_path / "tree.toml",
        """\
        name = "app"
        auto_shutdown = "any_significant"

        [[children]]
        name = "job"
        target = "m:f"
        restart = "transient"
        significant = true
        """,
    )
    script = write(
        tmp_path / "s.json", '{"events": [{"at": 2.5, "event": "exit", "child": "job"}]}'
    )
    code, out, _ = cli("simulate", str(tree), str(script))
    assert code == EXIT_OK
    assert out.rstrip().endswith("outcome: shut down: the root 'app' shut itself down at 2.5s")


@pytest.mark.parametrize(
    ("script", "messages"),
    [
        (
            '{"events": [{"at": 1, "event": "explode", "child": "db"}]}',
            [
                ":1: events[0].event: expected one of fail, exit, timeout, terminate_child, "
                "restart_child, delete_child, start, got 'explode'"
            ],
        ),
        (
            '{\n"events": [\n{"at": -1, "event": "fail", "child": "db"},\n'
            '{"event": "exit", "child": "db"},\n'
            '{"at": 1, "event": "exit", "child": "db", "error": "x"},\n'
            '{"at": 1, "child": "db"},\n"x"\n],\n"until": "soon", "seed": 1.5, "extra": 1\n}',
            [
                ":1: (top level): unknown field(s) ['extra'] "
                "(expected some of events, until, seed)",
                ":3: events[0].at: ",
                ":4: events[1].at: required field missing",
                ":5: events[2]: unknown field(s) ['error'] for event 'exit'",
                ":6: events[3].event: required field missing",
                ":7: events[4]: expected a mapping with at and event, got str",
                ":9: until: expected seconds (a number), got str",
                ":9: seed: expected an integer, got float",
            ],
        ),
        (
            '{"events": [{"at": 1, "event": "fail", "child": "cache"}]}',
            [":1: events[0].child: no child 'cache' under 'app'"],
        ),
        ('{"events": {}}', [":1: events: expected a list of events, got dict"]),
        ('"x"', [":1: (top level): expected a mapping with events, got str"]),
    ],
)
def test_simulate_names_every_bad_event_by_path_and_line(
    cli: Run, tmp_path: Path, script: str, messages: list[str]
) -> None:
    tree = write(tmp_path / "tree.toml", SIM_TREE)
    path = write(tmp_path / "s.json", script)
    code, out, err = cli("simulate", str(tree), str(path))
    assert (code, out) == (EXIT_USAGE, "")
    *lines, summary = err.splitlines()
    assert summary.startswith(f"{path}: {len(messages)} problem")
    for line in lines:
        assert line.startswith(str(path)), line
    got = sorted(line.removeprefix(str(path)) for line in lines)
    assert len(got) == len(messages), got
    for line, message in zip(got, sorted(messages), strict=True):
        assert line.startswith(message), (line, message)


def test_simulate_of_a_bad_tree_exits_2(cli: Run, tmp_path: Path) -> None:
    tree = write(tmp_path / "tree.toml", 'name = "app"\nstrategy = "x"\n')
    script = write(tmp_path / "s.json", "[]")
    code, _, err = cli("simulate", str(tree), str(script))
    assert code == EXIT_USAGE
    assert f"{tree}:2: strategy: expected one of" in err


# --------------------------------------------------------------------------- signals, for real

# Three worker processes that note their pid, and one Python callable: the "Done when".
SERVICE = """\
name = "service"

[[children]]
name = "api"
target = "service_tasks:serve"
kwargs = {{ marker = "${{WORK}}/api.started" }}

{workers}
"""

WORKER = """\
[[children]]
name = "worker{n}"
kind = "subprocess"
command = ["${{PY}}", "-c", "{code}", "${{WORK}}/worker{n}.pid"]
shutdown = {grace}
"""

WORKER_CODE = (
    "import os, signal, sys, time\\n"
    "{ignore}"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\\n"
    "while True:\\n    time.sleep(0.05)"
)

TASKS = """\
from pathlib import Path


def serve(ctx, marker):
    Path(marker).write_text(str(ctx.attempt))
    while not ctx.wait_cancelled(0.5):
        pass
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_service(
    tmp_path: Path, hosts: list[subprocess.Popen[str]], *, ignore_term: bool = False
) -> tuple[subprocess.Popen[str], list[int], list[str]]:
    """Start ``taskvisor run`` on the service tree; return the host, worker pids and its lines."""
    code = WORKER_CODE.format(
        ignore="signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if ignore_term else ""
    )
    grace = 60.0 if ignore_term else 10.0
    workers = "\n".join(WORKER.format(n=n, code=code, grace=grace) for n in (1, 2, 3))
    (tmp_path / "service_tasks.py").write_text(TASKS)
    tree = write(tmp_path / "service.toml", SERVICE.format(workers=workers))
    env = {**os.environ, "PY": sys.executable, "WORK": str(tmp_path)}
    host = subprocess.Popen(
        [sys.executable, "-m", "taskvisor", "run", str(tree)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    hosts.append(host)
    lines = read_until(host, "service: running")
    pid_files = [tmp_path / f"worker{n}.pid" for n in (1, 2, 3)]
    assert wait_until(lambda: all(p.exists() and p.read_text() for p in pid_files), 30)
    assert (tmp_path / "api.started").read_text() == "1"
    pids = [int(p.read_text()) for p in pid_files]
    assert all(alive(pid) for pid in pids)
    return host, pids, lines


def read_until(host: subprocess.Popen[str], text: str) -> list[str]:
    """The host's output lines up to the first that holds ``text`` (pytest's timeout bounds it)."""
    assert host.stdout is not None
    lines = []
    for line in host.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never came; output:\n{''.join(lines)}")


def finish(host: subprocess.Popen[str], lines: list[str]) -> str:
    out, _ = host.communicate(timeout=60)
    return "".join(lines) + out


def assert_all_gone(pids: list[int]) -> None:
    assert wait_until(lambda: not any(alive(pid) for pid in pids), 10), [
        pid for pid in pids if alive(pid)
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_service_in_order_and_leaves_no_process(
    tmp_path: Path, hosts: list[subprocess.Popen[str]], signum: signal.Signals
) -> None:
    host, pids, lines = start_service(tmp_path, hosts)
    os.kill(host.pid, signum)
    output = finish(host, lines)
    assert host.returncode == EXIT_OK, output
    assert_all_gone(pids)
    assert (
        f"INFO taskvisor.supervision: service: {signum.name} received: stopping the tree in order"
        in output
    )
    for n in (1, 2, 3):
        assert f"service/worker{n}: attempt 1 ended cancelled" in output
    assert "service/api: attempt 1 ended cancelled" in output
    assert "INFO taskvisor.supervision: service: tree stopped" in output
    assert "service: the tree was stopped by a signal; exiting with 0" in output
    assert "Traceback" not in output
    # In order: children stop in reverse start order, the workers before the callable.
    assert output.index("worker3: attempt 1 ended") < output.index("api: attempt 1 ended")


def test_a_second_sigint_stops_at_once_and_leaves_no_process(
    tmp_path: Path, hosts: list[subprocess.Popen[str]]
) -> None:
    """Workers that ignore SIGTERM would hold an orderly stop for their 60 s grace."""
    host, pids, lines = start_service(tmp_path, hosts, ignore_term=True)
    os.kill(host.pid, signal.SIGINT)
    lines += read_until(host, "SIGINT received: stopping the tree in order")
    assert all(alive(pid) for pid in pids)  # still in their grace
    os.kill(host.pid, signal.SIGINT)
    output = finish(host, lines)  # well within the 60 s graces
    assert host.returncode == EXIT_OK, output
    assert_all_gone(pids)
    assert "SIGINT received again: killing every child now" in output
    assert "INFO taskvisor.supervision: service: tree stopped" in output
