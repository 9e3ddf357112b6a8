"""Child output and process control: stdout/stderr modes, stop_signal, success_exit_codes.

Real processes throughout. The line cutter and the rotating file are also
property-tested against naive models, for every way the stream can be cut
into reads.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import wait_until
from helpers import Recorder, Sink
from taskvisor.actors import (
    AttemptFinished,
    InvalidSpec,
    Outcome,
    Task,
    TaskContext,
    TaskPhase,
    TaskSpec,
)
from taskvisor.actors._context import Mailbox
from taskvisor.actors._executors import SubprocessExecutor, _Lines, _OutputFile
from taskvisor.supervision import Supervisor, SupervisorSpec

PY = sys.executable
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX processes")


class Lines(logging.Handler):
    """Keeps each record of the ``taskvisor.output`` logger (or only its size)."""

    def __init__(self, *, keep: bool = True) -> None:
        super().__init__(logging.DEBUG)
        self.keep = keep
        self.records: list[logging.LogRecord] = []
        self.count = 0
        self.longest = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.longest = max(self.longest, len(record.getMessage()))
        if self.keep:
            self.records.append(record)

    def messages(self) -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in self.records]


@pytest.fixture
def output() -> Iterator[Lines]:
    """A handler on ``taskvisor.output``, with the logger at INFO for the test."""
    log = logging.getLogger("taskvisor.output")
    handler = Lines()
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)
    log.setLevel(level)


@pytest.fixture
def executor() -> Iterator[SubprocessExecutor]:
    ex = SubprocessExecutor()
    yield ex
    ex.close()


def run(
    executor: SubprocessExecutor, code: str, name: str = "t", **fields: Any
) -> tuple[TaskContext, Sink, Task]:
    """Start ``python -c code`` as task ``name`` with the given spec fields."""
    spec = TaskSpec(name, kind="subprocess", command=[PY, "-c", code], **fields)
    task = Task.new(f"app/{name}", spec)
    sink = Sink()
    ctx = TaskContext(task.id, 1, Mailbox(), sink)
    executor.start(task, ctx)
    return ctx, sink, task


def ended(sink: Sink) -> Outcome:
    assert sink.done.wait(30), "the child's end was never reported"
    [outcome] = sink.outcomes
    return outcome


PRINTS = (
    "import sys\n"
    "print('hello'); print('world', flush=True)\n"
    "print('oops', file=sys.stderr, flush=True)\n"
    "sys.stdout.write('no newline at the end')\n"
)

# --------------------------------------------------------------------------- prefix


def test_prefix_logs_each_line_with_the_childs_path(
    executor: SubprocessExecutor, output: Lines
) -> None:
    _, sink, _ = run(executor, PRINTS, stdout="prefix", stderr="prefix")
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    # every line is logged before the end is reported
    assert sorted(output.messages()) == sorted(
        [
            (logging.INFO, "[app/t] hello"),
            (logging.INFO, "[app/t] world"),
            (logging.INFO, "[app/t] no newline at the end"),
            (logging.WARNING, "[app/t] oops"),
        ]
    )
    assert {r.name for r in output.records} == {"taskvisor.output"}
    streams = {(r.getMessage(), r.stream, r.task_id) for r in output.records}  # type: ignore[attr-defined]
    assert ("[app/t] oops", "stderr", "app/t") in streams
    assert ("[app/t] hello", "stdout", "app/t") in streams


def test_a_line_longer_than_64_kib_is_cut_with_a_marker(
    executor: SubprocessExecutor, output: Lines
) -> None:
    code = "import sys; sys.stdout.write('x' * 200_000 + '\\nafter\\n' + 'y' * 70_000)"
    _, sink, _ = run(executor, code, stdout="prefix")
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    messages = [m for _, m in output.messages()]
    assert len(messages) == 3
    assert messages[0] == "[app/t] " + "x" * 65536 + " … [line cut at 65,536 bytes]"
    assert messages[1] == "[app/t] after"
    assert messages[2] == "[app/t] " + "y" * 65536 + " … [line cut at 65,536 bytes]"


def test_prefix_with_stderr_merged_logs_both_as_stdout(
    executor: SubprocessExecutor, output: Lines
) -> None:
    _, sink, _ = run(executor, PRINTS, stdout="prefix", stderr="stdout")
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    assert [m for _, m in output.messages()] == [
        "[app/t] hello",
        "[app/t] world",
        "[app/t] oops",
        "[app/t] no newline at the end",
    ]
    assert {level for level, _ in output.messages()} == {logging.INFO}


def test_output_logged_under_a_real_tree_carries_the_childs_tree_path(output: Lines) -> None:
    spec = SupervisorSpec(
        "app",
        children=[
            TaskSpec(
                "worker",
                kind="subprocess",
                command=[PY, "-c", "print('serving', flush=True)"],
                stdout="prefix",
                restart="transient",
                significant=True,
            )
        ],
        auto_shutdown="any_significant",
    )
    with Supervisor.start(spec) as tree:
        tree.wait(30)
    assert output.messages() == [(logging.INFO, "[app/worker] serving")]


# --------------------------------------------------------------------------- null, inherit


def test_null_discards_and_inherit_passes_through(
    executor: SubprocessExecutor, output: Lines, capfd: pytest.CaptureFixture[str]
) -> None:
    _, sink, _ = run(executor, PRINTS, stdout="null", stderr="null")
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    assert capfd.readouterr() == ("", "")
    _, sink, _ = run(executor, PRINTS)  # inherit: the host's own streams
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    captured = capfd.readouterr()
    assert captured.out == "hello\nworld\nno newline at the end"
    assert captured.err == "oops\n"
    assert output.records == []  # neither mode logs


def test_stderr_merged_into_inherited_stdout(
    executor: SubprocessExecutor, capfd: pytest.CaptureFixture[str]
) -> None:
    _, sink, _ = run(executor, PRINTS, stderr="stdout")
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    captured = capfd.readouterr()
    assert captured.out == "hello\nworld\noops\nno newline at the end"
    assert captured.err == ""


# --------------------------------------------------------------------------- files


def test_file_output_is_appended_and_stderr_merged(
    executor: SubprocessExecutor, tmp_path: Path
) -> None:
    log = tmp_path / "out.log"
    log.write_text("from before\n")
    _, sink, _ = run(executor, PRINTS, stdout=str(log), stderr="stdout")
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    assert log.read_text() == "from before\nhello\nworld\noops\nno newline at the end"


def test_stdout_and_stderr_to_the_same_file_and_to_two_files(
    executor: SubprocessExecutor, tmp_path: Path
) -> None:
    both = tmp_path / "both.log"
    _, sink, _ = run(executor, PRINTS, stdout=str(both), stderr=str(both))
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    assert sorted(both.read_text().replace("end", "end\n").split()) == sorted(
        ["hello", "world", "oops", "no", "newline", "at", "the", "end"]
    )
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    _, sink, _ = run(executor, PRINTS, stdout=str(out), stderr=str(err))
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    assert out.read_text() == "hello\nworld\nno newline at the end"
    assert err.read_text() == "oops\n"


def test_file_output_rotates_at_the_size_limit_keeping_n_backups(
    executor: SubprocessExecutor, tmp_path: Path
) -> None:
    log = tmp_path / "out.log"
    # 50 lines of 100 bytes into files of 1000 bytes: 5 files' worth, 3 kept
    code = "for i in range(50): print(f'{i:03d}' + '.' * 96)"
    _, sink, _ = run(executor, code, stdout=str(log), output_max_bytes=1000, output_backups=2)
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    line = "{:03d}" + "." * 96 + "\n"
    assert log.read_text() == "".join(line.format(i) for i in range(40, 50))
    assert Path(f"{log}.1").read_text() == "".join(line.format(i) for i in range(30, 40))
    assert Path(f"{log}.2").read_text() == "".join(line.format(i) for i in range(20, 30))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log", "out.log.1", "out.log.2"]


def test_an_output_path_that_is_not_a_regular_file_is_never_rotated(
    executor: SubprocessExecutor, tmp_path: Path
) -> None:
    # A device (/dev/null) or a FIFO given as stdout is written to as it is:
    # renaming it at the size limit would replace a device with a plain file.
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that the writer's open returns
    read = bytearray()
    try:
        code = "for i in range(50): print(f'{i:03d}' + '.' * 96)"
        _, sink, _ = run(executor, code, stdout=str(fifo), output_max_bytes=1000)
        assert ended(sink).phase is TaskPhase.SUCCEEDED
        while len(read) < 5000:
            try:
                chunk = os.read(reader, 65536)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not chunk:
                break
            read += chunk
    finally:
        os.close(reader)
    assert len(read) == 5000
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo"]


def test_file_output_with_no_backups_starts_afresh(
    executor: SubprocessExecutor, tmp_path: Path
) -> None:
    log = tmp_path / "out.log"
    code = "for i in range(25): print(f'{i:03d}' + '.' * 96)"
    _, sink, _ = run(executor, code, stdout=str(log), output_max_bytes=1000, output_backups=0)
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    assert log.read_text() == "".join(f"{i:03d}" + "." * 96 + "\n" for i in range(20, 25))
    assert [p.name for p in tmp_path.iterdir()] == ["out.log"]


def test_an_output_file_that_cannot_be_opened_is_a_start_error(
    executor: SubprocessExecutor, tmp_path: Path
) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "out.log"
    with pytest.raises(OSError, match=r"t\.stdout: cannot open the output file"):
        run(executor, "pass", stdout=str(missing))
    assert executor.live_children() == []


def test_a_file_that_fails_to_write_is_logged_and_the_stream_still_drained(
    executor: SubprocessExecutor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # /dev/full takes the open and fails every write (ENOSPC); the child
    # prints far more than a pipe holds, so it would block if not drained.
    code = "import sys\nfor _ in range(2000): print('x' * 200)\nprint('done', file=sys.stderr)"
    err = tmp_path / "err.log"
    _, sink, _ = run(executor, code, stdout="/dev/full", stderr=str(err))
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    assert err.read_text() == "done\n"  # the other stream is unaffected
    [record] = [r for r in caplog.records if "writing the output of app/t failed" in r.message]
    assert record.exc_info is not None
    assert "the rest of that stream is dropped" in record.message


# --------------------------------------------------------------------------- the pump


def _rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")  # pragma: no cover


@pytest.mark.slow
def test_100_mb_printed_to_a_prefixed_stream_does_not_grow_the_hosts_memory(
    executor: SubprocessExecutor,
) -> None:
    log = logging.getLogger("taskvisor.output")
    counter = Lines(keep=False)  # counts, keeps nothing
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(counter)
    log.propagate = False  # pytest's own capture keeps every record: not the host's doing
    # 40 MB of 1000-byte lines, then one 60 MB line: a host that kept either
    # (or the line whole) would grow past the bound
    code = (
        "import sys\n"
        "w = sys.stdout.buffer.write\n"
        "line = b'x' * 999 + b'\\n'\n"
        "for _ in range(40_000): w(line)\n"
        "chunk = b'y' * 1_000_000\n"
        "for _ in range(60): w(chunk)\n"
        "w(b'\\nlast\\n')\n"
    )
    peak = [_rss_kib()]
    before = peak[0]
    try:
        _, sink, _ = run(executor, code, stdout="prefix")
        while not sink.done.wait(0.05):  # sample the host's RSS while the child prints
            peak.append(_rss_kib())
        assert ended(sink).phase is TaskPhase.SUCCEEDED
    finally:
        log.propagate = True
        log.removeHandler(counter)
        log.setLevel(level)
    growth_mb = (max(peak) - before) / 1024
    print(
        f"100 MB through a prefixed stream: {counter.count} lines logged, longest "
        f"{counter.longest} chars, host RSS {before / 1024:.1f} MB before, peak growth "
        f"{growth_mb:.1f} MB over {len(peak)} samples"
    )
    assert counter.count == 40_000 + 2  # the cut line is logged once, then "last"
    assert counter.longest == len("[app/t] ") + 65536 + len(" … [line cut at 65,536 bytes]")
    assert growth_mb < 50


def test_a_child_killed_while_its_output_is_read_ends_and_leaves_no_thread(
    executor: SubprocessExecutor, output: Lines
) -> None:
    code = "import itertools\nfor i in itertools.count(): print(i, flush=True)"
    ctx, sink, task = run(executor, code, stdout="prefix", stderr="prefix")
    assert wait_until(lambda: len(output.records) > 100, timeout=10)
    assert executor.kill(task, ctx) is True
    assert ended(sink).exit_code == -signal.SIGKILL
    assert not [t for t in threading.enumerate() if t.name.startswith("taskvisor-output")]


@pytest.mark.slow
def test_a_process_that_left_the_group_holding_the_pipe_does_not_hang_the_end(
    executor: SubprocessExecutor, output: Lines
) -> None:
    # The grandchild leaves the group (setsid) and keeps the pipe open for 300 s.
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
    )
    _, sink, _ = run(executor, code, stdout="prefix")
    try:
        outcome = ended(sink)  # the drain gives up after its bound; the end is reported
        assert outcome.phase is TaskPhase.SUCCEEDED
        assert not [t for t in threading.enumerate() if t.name.startswith("taskvisor-output")]
    finally:
        for _, message in output.messages():
            os.kill(int(message.split()[-1]), signal.SIGKILL)


def test_a_process_that_prints_nothing_and_one_that_closes_its_stdout_early(
    executor: SubprocessExecutor, output: Lines
) -> None:
    _, sink, _ = run(executor, "pass", stdout="prefix", stderr="prefix")
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    code = "import os, time; print('bye', flush=True); os.close(1); time.sleep(0.1)"
    _, sink, _ = run(executor, code, "u", stdout="prefix")
    assert ended(sink).phase is TaskPhase.SUCCEEDED
    assert output.messages() == [(logging.INFO, "[app/u] bye")]


# --------------------------------------------------------------------------- properties


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _expected_lines(data: bytes, limit: int) -> list[str]:
    """The naive model: split on newlines, cut each line at ``limit`` bytes."""
    *whole, tail = data.split(b"\n")
    out = []
    for line in [*whole, tail] if tail else whole:
        text = line[:limit].decode("utf-8", "replace").removesuffix("\r")
        out.append(
            "[p] " + (text + f" … [line cut at {limit:,} bytes]" if len(line) > limit else text)
        )
    return out


@given(
    data=st.lists(
        st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"0123456789", b"\xff"]), max_size=40
    ),
    cuts=st.lists(st.integers(0, 400), max_size=10),
    limit=st.integers(1, 12),
)
def test_lines_match_a_naive_split_however_the_reads_fall(
    data: list[bytes], cuts: list[int], limit: int
) -> None:
    stream = b"".join(data)
    log = logging.getLogger("taskvisor.output")
    handler = _Collect()
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        lines = _Lines("p", "stdout", logging.INFO, limit=limit)
        points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
        for a, b in itertools.pairwise(points):
            lines.feed(stream[a:b])
        lines.close()
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert handler.messages == _expected_lines(stream, limit)


@given(
    sizes=st.lists(st.integers(1, 30), max_size=30),
    cuts=st.lists(st.integers(0, 600), max_size=10),
    max_bytes=st.integers(1, 60),
    backups=st.integers(0, 3),
)
def test_a_rotated_file_keeps_the_tail_whole_lines_and_the_size_bound(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    cuts: list[int],
    max_bytes: int,
    backups: int,
) -> None:
    directory = tmp_path_factory.mktemp("rot")
    path = directory / "out.log"
    stream = b"".join(bytes([65 + i % 26]) * (n - 1) + b"\n" for i, n in enumerate(sizes))
    file = _OutputFile(str(path), max_bytes, backups)
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    for a, b in itertools.pairwise(points):
        file.feed(stream[a:b])
    file.close()
    kept = [Path(f"{path}.{i}") for i in range(backups, 0, -1)] + [path]
    contents = [p.read_bytes() for p in kept if p.exists()]
    assert all(len(c) <= max_bytes for c in contents)
    joined = b"".join(contents)
    assert stream.endswith(joined)  # the newest part of the stream, in order, nothing lost between
    assert len(list(directory.iterdir())) <= backups + 1


# --------------------------------------------------------------------------- stop_signal

TRAPS_INT = (
    "import signal, sys, pathlib\n"
    "marker = pathlib.Path(sys.argv[1])\n"
    "def on_int(signum, frame):\n"
    "    marker.write_text(signal.Signals(signum).name)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGINT, on_int)\n"
    "(marker.parent / 'ready').write_text('')\n"
    "signal.pause()\n"
)


def test_stop_signal_is_what_a_graceful_stop_sends(
    executor: SubprocessExecutor, tmp_path: Path
) -> None:
    marker = tmp_path / "got"
    spec = TaskSpec(
        "t", kind="subprocess", command=[PY, "-c", TRAPS_INT, str(marker)], stop_signal="INT"
    )
    task = Task.new("app/t", spec)
    sink = Sink()
    ctx = TaskContext(task.id, 1, Mailbox(), sink)
    executor.start(task, ctx)
    assert wait_until((tmp_path / "ready").exists, timeout=10)
    executor.cancel(task, ctx)
    assert ended(sink) == Outcome(TaskPhase.SUCCEEDED, exit_code=0)  # its handler ran
    assert marker.read_text() == "SIGINT"


def test_the_default_stop_signal_sigterm_kills_a_child_that_traps_only_sigint(
    executor: SubprocessExecutor, tmp_path: Path
) -> None:
    marker = tmp_path / "got"
    spec = TaskSpec("t", kind="subprocess", command=[PY, "-c", TRAPS_INT, str(marker)])
    assert spec.stop_signal is signal.SIGTERM
    task = Task.new("app/t", spec)
    sink = Sink()
    ctx = TaskContext(task.id, 1, Mailbox(), sink)
    executor.start(task, ctx)
    assert wait_until((tmp_path / "ready").exists, timeout=10)
    executor.cancel(task, ctx)
    assert ended(sink).exit_code == -signal.SIGTERM
    assert not marker.exists()


def test_a_tree_stops_a_child_with_its_stop_signal(tmp_path: Path) -> None:
    marker = tmp_path / "got"
    child = TaskSpec(
        "svc",
        kind="subprocess",
        command=[PY, "-c", TRAPS_INT, str(marker)],
        stop_signal=signal.SIGINT,
        shutdown=30.0,
    )
    recorder = Recorder()
    with Supervisor.start(SupervisorSpec("app", children=[child]), hooks=[recorder]) as tree:
        assert wait_until((tmp_path / "ready").exists, timeout=10)
        tree.stop()
    assert marker.read_text() == "SIGINT"
    assert recorder.wait_for(lambda es: any(isinstance(e, AttemptFinished) for e in es))
    [run] = [e.run for e in recorder.events if isinstance(e, AttemptFinished)]
    assert (run.phase, run.exit_code) == (TaskPhase.CANCELLED, 0)


def test_a_child_that_ignores_its_stop_signal_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = (
        "import signal, pathlib, sys\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "pathlib.Path(sys.argv[1]).write_text('')\n"
        "signal.pause()\n"
    )
    ready = tmp_path / "ready"
    child = TaskSpec(
        "deaf",
        kind="subprocess",
        command=[PY, "-c", code, str(ready)],
        stop_signal="INT",
        shutdown=0.2,
    )
    recorder = Recorder()
    with Supervisor.start(SupervisorSpec("app", children=[child]), hooks=[recorder]) as tree:
        assert wait_until(ready.exists, timeout=10)
        tree.stop()
    assert _attempts(recorder, "app/deaf") == [(TaskPhase.CANCELLED, -signal.SIGKILL)]


# --------------------------------------------------------------------------- success_exit_codes


def _attempts(recorder: Recorder, path: str) -> list[tuple[TaskPhase, int | None]]:
    return [
        (e.run.phase, e.run.exit_code)
        for e in recorder.events
        if isinstance(e, AttemptFinished) and e.task_id == path
    ]


def transient_tree(command: list[str], **fields: Any) -> SupervisorSpec:
    child = TaskSpec(
        "job", kind="subprocess", command=command, restart="transient", significant=True, **fields
    )
    return SupervisorSpec("app", children=[child], auto_shutdown="any_significant")


def test_a_transient_child_exiting_with_a_listed_code_succeeded_and_is_not_restarted() -> None:
    recorder = Recorder()
    spec = transient_tree([PY, "-c", "raise SystemExit(3)"], success_exit_codes=[0, 3])
    with Supervisor.start(spec, hooks=[recorder]) as tree:
        tree.wait(30)
    assert _attempts(recorder, "app/job") == [(TaskPhase.SUCCEEDED, 3)]


def test_a_transient_child_exiting_with_another_code_failed_and_is_restarted(
    tmp_path: Path,
) -> None:
    # exits 4 the first time, 3 the second (a listed code: done)
    code = (
        "import pathlib, sys\n"
        "seen = pathlib.Path(sys.argv[1])\n"
        "if seen.exists(): raise SystemExit(3)\n"
        "seen.write_text('')\n"
        "raise SystemExit(4)\n"
    )
    recorder = Recorder()
    spec = transient_tree([PY, "-c", code, str(tmp_path / "seen")], success_exit_codes=[0, 3])
    with Supervisor.start(spec, hooks=[recorder]) as tree:
        tree.wait(30)
    assert _attempts(recorder, "app/job") == [(TaskPhase.FAILED, 4), (TaskPhase.SUCCEEDED, 3)]


def test_an_unlisted_exit_code_says_which_codes_count_as_success(
    executor: SubprocessExecutor,
) -> None:
    _, sink, _ = run(executor, "raise SystemExit(0)", success_exit_codes=[3])
    outcome = ended(sink)
    assert (outcome.phase, outcome.exit_code) == (TaskPhase.FAILED, 0)
    assert outcome.error == "exited with code 0 (success_exit_codes are [3])"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stdout": "stdout"}, "stdout: expected 'inherit', 'prefix', 'null' or a file path"),
        ({"stdout": ""}, "stdout: expected 'inherit'"),
        ({"stderr": 5}, "stderr: expected 'inherit', 'prefix', 'null' or a file path, or 'stdout'"),
        ({"stop_signal": "WINCH"}, "stop_signal: expected a signal name (TERM, INT, HUP"),
        ({"stop_signal": 99}, "stop_signal: expected a signal name"),
        ({"stop_signal": True}, "stop_signal: expected a signal name"),
        ({"success_exit_codes": []}, "success_exit_codes: expected a non-empty list"),
        ({"success_exit_codes": [256]}, "success_exit_codes: expected a non-empty list"),
        ({"success_exit_codes": 0}, "success_exit_codes: expected a non-empty list"),
        ({"output_max_bytes": -1}, "output_max_bytes: expected an integer >= 0"),
        (
            {"stdout": "/tmp/x.log", "output_backups": 1001},
            "output_backups: expected an integer from 0 to 1000",
        ),
        (
            {"stdout": "/tmp/x.log", "output_backups": 10**400},
            "output_backups: expected an integer from 0 to 1000",
        ),
        ({"output_backups": 2}, "output_backups: applies to an output file"),
        ({"output_max_bytes": 5, "stdout": "prefix"}, "output_max_bytes: applies to an output"),
    ],
)
def test_process_fields_are_validated_naming_the_field(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        TaskSpec("p", kind="subprocess", command=["x"], **fields)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"stdout": "prefix"},
        {"stderr": "null"},
        {"stop_signal": "INT"},
        {"success_exit_codes": [0, 3]},
        {"output_backups": 1},
    ],
)
@pytest.mark.parametrize("kind", ["call", "async"])
def test_process_fields_are_refused_for_other_kinds(fields: dict[str, Any], kind: str) -> None:
    from helpers import adouble, double

    target = adouble if kind == "async" else double
    with pytest.raises(InvalidSpec, match="only a 'subprocess' task takes") as caught:
        TaskSpec("p", kind=kind, target=target, **fields)  # type: ignore[arg-type]
    assert f"this task's kind is {kind!r}" in str(caught.value)


def test_stop_signal_and_exit_codes_are_stored_normalised() -> None:
    def spec(**fields: Any) -> TaskSpec:
        return TaskSpec("p", kind="subprocess", command=["x"], **fields)

    for given_signal in ("INT", "SIGINT", "int", 2, signal.SIGINT):
        assert spec(stop_signal=given_signal).stop_signal is signal.SIGINT
    assert spec(success_exit_codes=(3, 0, 3)).success_exit_codes == (0, 3)
    assert spec().stdout == spec().stderr == "inherit"
    assert spec(stdout="./stdout").stdout == "./stdout"  # a file of that name
