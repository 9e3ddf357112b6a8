"""The task model: state machines against an independent model, and spec validation."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from tests.strategies import phases, states, task_specs

from taskvisor.actors import (
    CustomKind,
    IllegalTransition,
    InvalidData,
    InvalidSpec,
    ObjectMeta,
    Restart,
    SystemClock,
    Task,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskSpec,
    TaskState,
    TaskStatus,
    from_data,
    now_ms,
    to_data,
)
from taskvisor.actors._model import MAX_SECONDS, _make_updater, begun_run

# The legal moves, written out from the design rather than taken from the code.
TERMINAL = {"succeeded", "failed", "timeout", "cancelled", "exhausted"}
ALL = {"pending", "running", *TERMINAL}


def legal(src: str, dst: str) -> bool:
    """pending -> running | cancelled; running -> any terminal; terminal -> running."""
    if src == "pending":
        return dst in {"running", "cancelled"}
    if src == "running":
        return dst in TERMINAL
    assert src in TERMINAL
    return dst == "running"


def test_independent_table_matches_the_enums() -> None:
    for src in ALL:
        for dst in ALL:
            assert TaskPhase(src).can_transition_to(TaskPhase(dst)) is legal(src, dst)
            assert TaskState(src).can_transition_to(TaskState(dst)) is legal(src, dst)


def snapshot(obj: Any) -> str:
    return json.dumps(to_data(obj), sort_keys=True)


# --------------------------------------------------------------------------- Task


class TaskMachine(RuleBasedStateMachine):
    """Drive a real ``Task`` and a naive model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = 1_000
        spec = TaskSpec(name="job", target="json:dumps", labels={"team": "a"})
        self.task = Task.new("job-1", spec, now=self.clock)
        self.phase = "pending"
        self.attempt = 0
        self.version = 1
        self.error: str | None = None
        self.exit_code: int | None = None
        self.updated_at = self.clock

    def tick(self) -> int:
        self.clock += 7
        return self.clock

    def accepted(self, now: int) -> None:
        before = self.version
        self.version += 1
        assert self.task.metadata.resource_version > before
        self.updated_at = now

    @rule()
    def start(self) -> None:
        before = snapshot(self.task)
        now = self.tick()
        if legal(self.phase, "running"):
            self.task.transition_starting(now=now)
            self.phase, self.attempt = "running", self.attempt + 1
            self.error = self.exit_code = None
            self.accepted(now)
        else:
            with pytest.raises(IllegalTransition, match="cannot start attempt"):
                self.task.transition_starting(now=now)
            assert snapshot(self.task) == before

    @rule(
        phase=phases,
        error=st.none() | st.text(max_size=10),
        exit_code=st.none() | st.integers(-9, 255),
    )
    def finish(self, phase: TaskPhase, error: str | None, exit_code: int | None) -> None:
        before = snapshot(self.task)
        now = self.tick()
        if phase.value in TERMINAL and legal(self.phase, phase.value):
            self.task.transition_finished(phase, error, exit_code, now=now)
            self.phase, self.error, self.exit_code = phase.value, error, exit_code
            self.accepted(now)
        else:
            with pytest.raises(IllegalTransition, match=repr(phase.value)):
                self.task.transition_finished(phase, error, exit_code, now=now)
            assert snapshot(self.task) == before

    @invariant()
    def agrees_with_model(self) -> None:
        status = self.task.status
        assert status.phase.value == self.phase
        assert status.attempt == self.attempt
        assert status.error == self.error
        assert status.exit_code == self.exit_code
        assert self.task.metadata.resource_version == self.version
        assert self.task.metadata.updated_at == self.updated_at
        assert self.task.metadata.created_at == 1_000
        assert self.task.spec.name == "job"
        # Transitions copy without validating: every field kept is the one before.
        meta = self.task.metadata
        assert (meta.id, meta.name, meta.labels) == ("job-1", "job", {"team": "a"})
        assert meta == attrs.evolve(meta)  # what the constructor would accept, unchanged
        assert status == attrs.evolve(status)


TestTaskMachine = TaskMachine.TestCase
TestTaskMachine.settings = settings(max_examples=60, stateful_step_count=30)


# --------------------------------------------------------------------------- TaskRun


@settings(max_examples=80)
@given(attempt=st.integers(1, 50), moves=st.lists(phases, max_size=6))
def test_run_finishes_once_into_a_terminal_phase(attempt: int, moves: list[TaskPhase]) -> None:
    run = TaskRun.starting(attempt, now=10)
    assert run.is_active
    assert run.phase is TaskPhase.RUNNING
    assert run.finished_at is None
    active, closed_as = True, None
    for step, phase in enumerate(moves):
        before = snapshot(run)
        if active and phase.is_terminal:
            run.finish(phase, f"e{step}", step, now=100 + step)
            active, closed_as = False, (phase, f"e{step}", step, 100 + step)
        else:
            with pytest.raises(IllegalTransition, match=f"run {attempt}"):
                run.finish(phase, "x", 1, now=999)
            assert snapshot(run) == before
        assert run.is_active is active
    if closed_as is not None:
        assert (run.phase, run.error, run.exit_code, run.finished_at) == closed_as
    assert run.attempt == attempt
    assert run.started_at == 10


# --------------------------------------------------------------------------- TaskRecord


@settings(max_examples=150)
@given(moves=st.lists(states, max_size=25))
def test_record_transitions_agree_with_model(moves: list[TaskState]) -> None:
    record = TaskRecord.new("rec", now=5)
    state, attempts = "pending", 0
    started: int | None = None
    finished: int | None = None
    updated = 5
    record.error = "old error"
    for now, target in enumerate(moves, start=10):
        before = snapshot(record)
        ok = record.transition(target, now=now)
        assert ok is legal(state, target.value)
        if not ok:
            assert snapshot(record) == before
            continue
        state, updated = target.value, now
        if target is TaskState.RUNNING:
            attempts, started, finished = attempts + 1, now, None
            assert record.error is None
        else:
            finished = now
        assert record.state.value == state
        assert record.attempts == attempts
        assert (record.started_at, record.finished_at, record.updated_at) == (
            started,
            finished,
            updated,
        )
    assert record.created_at == 5
    assert record.attempts == sum(move is TaskState.RUNNING for move in _accepted(moves))


def _accepted(moves: list[TaskState]) -> list[TaskState]:
    state, out = "pending", []
    for move in moves:
        if legal(state, move.value):
            state = move.value
            out.append(move)
    return out


def test_record_transition_keeps_output_and_clears_error_on_restart() -> None:
    record = TaskRecord.new("r", now=1)
    assert record.transition(TaskState.RUNNING, now=2)
    record.output, record.error = {"a": 1}, "boom"
    assert record.transition(TaskState.FAILED, now=5)
    assert record.error == "boom"
    assert record.duration_millis() == 3
    assert record.transition(TaskState.RUNNING, now=9)
    assert record.error is None
    assert record.finished_at is None
    assert record.attempts == 2
    assert record.output == {"a": 1}


# --------------------------------------------------------------------------- units


def test_task_new_and_parts() -> None:
    spec = TaskSpec(name="web", target="json:dumps", labels={"tier": "front"})
    task = Task.new("web-1", spec, now=42)
    meta, got_spec, status = task.into_parts()
    assert task.id == "web-1"
    assert got_spec is spec
    assert meta == ObjectMeta(
        id="web-1", name="web", labels={"tier": "front"}, created_at=42, updated_at=42
    )
    assert status == TaskStatus(phase=TaskPhase.PENDING, attempt=0)


def test_task_stamps_wall_clock_when_now_is_omitted() -> None:
    before = now_ms()
    task = Task.new("t", TaskSpec(name="t", target="json:dumps"))
    task.transition_starting()
    after = now_ms()
    assert before <= task.metadata.created_at <= task.metadata.updated_at <= after
    assert abs(now_ms() - time.time() * 1000) < 1000


@pytest.mark.parametrize("now", ["soon", 1.5, True, None])
def test_stamps_must_be_integer_milliseconds(now: Any) -> None:
    spec = TaskSpec(name="t", target="json:dumps")
    record = TaskRecord.new("r", now=1)
    task = Task.new("t", spec, now=1)
    run = TaskRun.starting(1, now=1)
    calls = [
        lambda: Task.new("t", spec, now=now),
        lambda: task.transition_starting(now=now),
        lambda: TaskRun.starting(1, now=now),
        lambda: run.finish(TaskPhase.FAILED, now=now),
        lambda: TaskRecord.new("r", now=now),
        lambda: record.transition(TaskState.RUNNING, now=now),
    ]
    for call in calls:
        if now is None:  # the wall clock
            call()
            continue
        with pytest.raises(InvalidData, match=r"^now: expected milliseconds since the epoch"):
            call()
    if now is not None:  # a bad stamp changes nothing
        assert record.state is TaskState.PENDING
        assert task.status.phase is TaskPhase.PENDING
        assert task.metadata.resource_version == 1
        assert run.is_active


def test_finish_rejects_non_terminal_phase_by_name() -> None:
    task = Task.new("t", TaskSpec(name="t", target="json:dumps"), now=1)
    task.transition_starting(now=2)
    with pytest.raises(IllegalTransition, match="'pending', which is not a terminal phase"):
        task.transition_finished(TaskPhase.PENDING, now=3)
    with pytest.raises(IllegalTransition, match="'running', which is not a terminal phase"):
        task.transition_finished(TaskPhase.RUNNING, now=3)


def test_pending_task_can_only_be_cancelled() -> None:
    task = Task.new("t", TaskSpec(name="t", target="json:dumps"), now=1)
    with pytest.raises(IllegalTransition, match="from 'pending' to 'failed'"):
        task.transition_finished(TaskPhase.FAILED, now=2)
    task.transition_finished(TaskPhase.CANCELLED, "stopped early", now=3)
    assert task.status == TaskStatus(phase=TaskPhase.CANCELLED, attempt=0, error="stopped early")
    assert task.metadata.resource_version == 2


@pytest.mark.parametrize("phase", list(TaskPhase))
def test_is_terminal_and_is_abnormal(phase: TaskPhase) -> None:
    assert phase.is_terminal is (phase.value in TERMINAL)
    assert TaskState.of(phase).is_terminal is phase.is_terminal
    assert TaskState.of(phase).value == phase.value
    assert phase.is_abnormal is (phase.value in {"failed", "timeout", "exhausted"})


def test_duration_millis() -> None:
    record = TaskRecord.new("d", now=100)
    assert record.duration_millis() is None
    record.transition(TaskState.RUNNING, now=150)
    assert record.duration_millis() is None
    record.transition(TaskState.SUCCEEDED, now=400)
    assert record.duration_millis() == 250
    clock_went_back = TaskRecord(id="d", started_at=500, finished_at=400)
    assert clock_went_back.duration_millis() == 0


def test_object_meta_bumped() -> None:
    meta = ObjectMeta(id="a", name="a", resource_version=3, created_at=1, updated_at=1)
    assert meta.bumped(9) == attrs.evolve(meta, resource_version=4, updated_at=9)


def test_spec_targets_compare_by_import_path() -> None:
    assert TaskSpec(name="a", target=json.dumps) == TaskSpec(name="a", target="json:dumps")
    assert TaskSpec(name="a", target=json.dumps) != TaskSpec(name="a", target="json:loads")


def test_spec_defaults() -> None:
    spec = TaskSpec(name="a", target="json:dumps")
    assert (spec.kind, spec.restart, spec.shutdown, spec.timeout) == (
        "call",
        Restart.PERMANENT,
        5.0,
        None,
    )
    assert (spec.shell, spec.significant, spec.args, spec.kwargs) == (False, False, (), {})


def test_spec_takes_its_name_by_position_and_nothing_else() -> None:
    assert TaskSpec("a", target="json:dumps") == TaskSpec(name="a", target="json:dumps")
    with pytest.raises(TypeError, match="positional"):
        TaskSpec("a", "call")  # type: ignore[call-arg, arg-type]


def test_spec_kinds_other_than_the_built_in_ones_are_accepted_for_registered_executors() -> None:
    spec = TaskSpec("a", kind=CustomKind("quantum"), target="json:dumps")
    assert spec.kind == "quantum"
    assert type(spec.kind) is str


def test_process_fields_default_and_round_trip_through_plain_data() -> None:
    spec = TaskSpec("p", kind="subprocess", command=["x"])
    assert (spec.stdout, spec.stderr, spec.stop_signal, spec.success_exit_codes) == (
        "inherit",
        "inherit",
        signal.SIGTERM,
        (0,),
    )
    assert (spec.output_max_bytes, spec.output_backups) == (10 * 1024 * 1024, 3)
    full = TaskSpec(
        "p",
        kind="subprocess",
        command=["x"],
        stdout="out.log",
        stderr="stdout",
        output_max_bytes=1000,
        output_backups=1,
        stop_signal="SIGUSR1",
        success_exit_codes=[2, 0],
    )
    data = to_data(full)
    assert (data["stop_signal"], data["success_exit_codes"]) == ("USR1", [0, 2])
    assert from_data(TaskSpec, json.loads(json.dumps(data))) == full
    # as a hand-written file gives them: a number for the signal, a list of codes
    assert from_data(TaskSpec, {**data, "stop_signal": 10}).stop_signal is signal.SIGUSR1
    with pytest.raises(InvalidData, match=r"children\[0\]\.stop_signal: expected a signal name"):
        from_data(TaskSpec, {**data, "stop_signal": "WINCH"}, where="children[0]")
    with pytest.raises(InvalidData, match=r"stop_signal: expected a signal name such as 'TERM'"):
        from_data(TaskSpec, {**data, "stop_signal": 1.5})


GOOD: dict[str, Any] = {"name": "job", "target": "json:dumps"}
SUB: dict[str, Any] = {"name": "job", "kind": "subprocess", "command": ["true"]}


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {**GOOD, "restart": "always"},
            "restart",
            "restart: expected one of permanent, transient, temporary, got 'always'",
        ),
        ({**GOOD, "name": ""}, "name", "name: expected a non-empty name"),
        ({**GOOD, "name": "-job"}, "name", "(not starting with punctuation), got '-job'"),
        ({**GOOD, "name": "a b"}, "name", "got 'a b'"),
        ({"name": "job"}, "target", "target: a 'call' task needs a target, got None"),
        ({"name": "job", "kind": "async"}, "target", "target: a 'async' task needs a target"),
        (
            {**GOOD, "target": "json.dumps"},
            "target",
            "target: expected a callable or a 'package.module:function' string, got 'json.dumps'",
        ),
        ({**GOOD, "target": 5}, "target", "got 5"),
        ({**GOOD, "args": "abc"}, "args", "args: expected a list or tuple of arguments"),
        ({**GOOD, "kwargs": {1: 2}}, "kwargs", "kwargs: expected a mapping with string keys"),
        ({**GOOD, "command": ["ls"]}, "command", "command: a 'call' task takes no command"),
        ({**SUB, "command": "ls -l"}, "command", "a string is a shell command"),
        ({**SUB, "command": []}, "command", "command: expected a non-empty list of strings"),
        ({**SUB, "command": ["ls", 3]}, "command", "expected a non-empty list of strings"),
        ({**SUB, "command": None}, "command", "a 'subprocess' task needs a command"),
        ({**SUB, "target": "json:dumps"}, "target", "a 'subprocess' task takes no target"),
        (
            {**SUB, "command": ["ls", "-l"], "shell": True},
            "command",
            "with shell=True give exactly one command string",
        ),
        ({**GOOD, "shell": True}, "shell", "shell: only a 'subprocess' task can use a shell"),
        ({**SUB, "shell": "yes"}, "shell", "shell: expected true or false, got 'yes'"),
        ({**GOOD, "significant": 1}, "significant", "significant: expected true or false, got 1"),
        ({**GOOD, "timeout": 0}, "timeout", "timeout: expected a number of seconds > 0"),
        ({**GOOD, "timeout": -1.5}, "timeout", "got -1.5"),
        ({**GOOD, "timeout": True}, "timeout", "got True"),
        ({**GOOD, "shutdown": -1}, "shutdown", "shutdown: expected a grace in seconds >= 0"),
        ({**GOOD, "shutdown": "soft"}, "shutdown", "or 'brutal', got 'soft'"),
        ({**GOOD, "labels": {"a": 1}}, "labels", "labels: expected a mapping of strings"),
        ({**SUB, "env": {"A": 1}}, "env", "env: expected a mapping of strings to strings"),
        ({**GOOD, "cwd": 5}, "cwd", "cwd: expected a directory path string or None, got 5"),
        ({**GOOD, "kind": ""}, "kind", "kind: expected a task kind name (call, async, subprocess)"),
    ],
)
def test_spec_validation_names_the_field(kwargs: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        TaskSpec(**kwargs)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def _short_id(value: object) -> str:
    """A test id that never str()s a huge int or prints a long string."""
    if isinstance(value, (float, str)) and len(str(value)) <= 20:
        return str(value)
    return type(value).__name__


# Fault 14 of issue 8: a time past any timer's limit passed validation, then
# killed the timer thread with OverflowError.
OUT_OF_RANGE_SECONDS: list[Any] = [
    1e10,
    MAX_SECONDS + 0.5,
    MAX_SECONDS + 1,
    float("inf"),
    float("-inf"),
    float("nan"),
    10**400,  # float() of it raises OverflowError
    10**5000,  # str() of it raises ValueError
    -(10**5000),
    True,
    "5",
    [5],
]


@pytest.mark.parametrize("field", ["timeout", "shutdown"])
@pytest.mark.parametrize("value", OUT_OF_RANGE_SECONDS, ids=_short_id)
def test_spec_times_are_bounded(field: str, value: Any) -> None:
    with pytest.raises(InvalidSpec) as caught:
        TaskSpec(**{**GOOD, field: value})
    message = str(caught.value)
    assert message.startswith(f"{field}: expected a "), message
    assert "<= 100,000,000" in message
    assert len(message) < 200
    assert caught.value.field == field


def test_spec_times_up_to_the_maximum_are_accepted() -> None:
    spec = TaskSpec(**GOOD, timeout=MAX_SECONDS, shutdown=MAX_SECONDS)
    assert (spec.timeout, spec.shutdown) == (MAX_SECONDS, float(MAX_SECONDS))
    assert TaskSpec(**GOOD, timeout=1e-9, shutdown=0).shutdown == 0.0
    assert TaskSpec(**GOOD, timeout=None, shutdown="brutal").timeout is None
    three = TaskSpec(**GOOD, timeout=3, shutdown=2).timeout
    assert type(three) is float  # times are floats, as a config file's "3" read through cattrs
    assert three == 3.0
    assert MAX_SECONDS < threading.TIMEOUT_MAX


def test_a_timer_at_the_longest_accepted_time_keeps_the_timer_thread_working() -> None:
    """Every timer can wait ``MAX_SECONDS``; a shorter one set after it still fires."""
    clock = SystemClock()
    try:
        far = clock.call_later(TaskSpec(**GOOD, timeout=MAX_SECONDS).timeout or 0.0, lambda: None)
        fired = threading.Event()
        clock.call_later(0.01, fired.set)
        assert fired.wait(10.0)
        far.cancel()
    finally:
        clock.close()
    assert threading.Lock().acquire(timeout=MAX_SECONDS)  # no OverflowError at the limit


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("name", "x" * 200_000 + " ", "'xxxxxxxx"),
        ("name", 10**5000, "<int of about 5001 digits>"),
        ("restart", 10**5000, "<int of about 5001 digits>"),
        ("restart", ["permanent"] * 100_000, "['permanent', 'permanent'"),
        ("kind", {"a": 1}, "{'a': 1}"),
        ("labels", {str(i): i for i in range(50_000)}, "{'0': 0, '1': 1"),
        ("kwargs", {10**5000: 1}, "{<int of about 5001 digits>: 1}"),
        ("target", "y" * 100_000, "'yyyyyy"),
        ("cwd", [[[[[[[[[[1]]]]]]]]]], "[[[[…]]]]"),
    ],
    ids=_short_id,
)
def test_bad_values_are_echoed_cut_short(field: str, value: Any, shown: str) -> None:
    """A message shows at most 80 characters of the value, whatever its size or type."""
    with pytest.raises(InvalidSpec) as caught:
        TaskSpec(**{**GOOD, field: value})
    message = str(caught.value)
    assert message.startswith(f"{field}: ")
    assert shown in message
    echoed = message.partition(", got ")[2]
    assert 0 < len(echoed) <= 80


def test_restart_refuses_what_is_not_a_string_without_comparing_it() -> None:
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]  # repr() of it raises RecursionError
    for value in (deep, {"permanent"}, 1, None, b"permanent"):
        with pytest.raises(InvalidSpec, match=r"^restart: expected one of permanent"):
            TaskSpec(**GOOD, restart=value)


def test_spec_evolve_validates() -> None:
    spec = TaskSpec(name="a", target="json:dumps")
    assert spec.evolve(restart="transient").restart is Restart.TRANSIENT
    with pytest.raises(InvalidSpec, match="restart: expected one of"):
        spec.evolve(restart="sometimes")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TaskRun(attempt=0), "attempt: expected an integer >= 1, got 0"),
        (lambda: TaskStatus(attempt=-1), "attempt: expected an integer >= 0, got -1"),
        (lambda: TaskStatus(attempt=True), "attempt: expected an integer >= 0, got True"),
        (
            lambda: ObjectMeta(id="a", name="a", resource_version=0),
            "resource_version: expected an integer >= 1, got 0",
        ),
        (lambda: TaskRecord(id="a", attempts=-2), "attempts: expected an integer >= 0, got -2"),
    ],
)
def test_counters_are_validated(build: Any, message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        build()


@settings(max_examples=60)
@given(spec=task_specs())
def test_generated_specs_are_self_consistent(spec: TaskSpec) -> None:
    assert spec == spec.evolve()
    if spec.kind == "subprocess":
        assert spec.command
        assert spec.target is None
    else:
        assert spec.target is not None
        assert spec.command is None
        assert not spec.shell


# --------------------------------------------------------------------------- bounded error texts


@settings(max_examples=200)
@given(
    text=st.text(max_size=300) | st.integers(0, 20_000).map(lambda n: "ab" * n),
    limit=st.integers(min_value=60, max_value=5000),
)
def test_bound_text_keeps_head_and_tail_and_says_what_it_cut(text: str, limit: int) -> None:
    import re

    from taskvisor.actors._model import bound_text

    cut = bound_text(text, limit)
    assert cut is not None
    assert len(cut) <= limit
    if len(text) <= limit:
        assert cut is text
        return
    splits = [
        (cut[: m.start()], int(m.group(1).replace(",", "")), cut[m.end() :])
        for m in re.finditer(r"\n… ([\d,]+) characters cut …\n", cut)
    ]
    assert any(
        text.startswith(head)
        and text.endswith(tail)
        and count == len(text) - len(head) - len(tail)
        and head
        and tail
        for head, count, tail in splits
    ), cut


def test_bound_text_leaves_none_and_non_strings_alone() -> None:
    from taskvisor.actors._model import bound_text

    assert bound_text(None) is None
    assert bound_text(5) == 5  # type: ignore[arg-type]  # left for the type checks to name


def test_every_path_to_an_error_text_bounds_it() -> None:
    """Fault 18: a 1 MB error is cut wherever it enters a run, a status or a record."""
    from taskvisor.actors._model import ERROR_TEXT_MAX

    huge = "Traceback (most recent call last):\n" + "x" * 1_000_000 + "\nRuntimeError: crash"

    def bounded(text: str | None) -> bool:
        return (
            text is not None
            and len(text) <= ERROR_TEXT_MAX
            and text.startswith("Traceback")
            and text.endswith("RuntimeError: crash")
        )

    run = TaskRun.starting(1, now=1)
    run.finish(TaskPhase.FAILED, huge, now=2)
    assert bounded(run.error)
    assert bounded(TaskRun(attempt=1, error=huge).error)
    changed = TaskRun(attempt=1)
    changed.error = huge
    assert bounded(changed.error)

    task = Task.new("t", TaskSpec(name="t", target="m:f"), now=1)
    task.transition_starting(now=2)
    task.transition_finished(TaskPhase.FAILED, huge, now=3)
    assert bounded(task.status.error)
    assert bounded(TaskStatus(error=huge).error)

    record = TaskRecord(id="t", error=huge)
    assert bounded(record.error)
    record.error = huge
    assert bounded(record.error)


def test_runs_record_their_process_and_host() -> None:
    from taskvisor.actors import from_data

    run = TaskRun.starting(3, now=1, pid=1234, pgid=1234, process_started=5, host="h1")
    assert (run.pid, run.pgid, run.process_started, run.host) == (1234, 1234, 5, "h1")
    bare = TaskRun(attempt=1)
    assert (bare.pid, bare.pgid, bare.process_started, bare.host) == (None,) * 4
    run.pid = 99  # set when the process has started
    assert run.pid == 99
    data = to_data(run)
    assert (data["pid"], data["pgid"], data["process_started"], data["host"]) == (
        99,
        1234,
        5,
        "h1",
    )
    assert from_data(TaskRun, data) == run
    new_fields = ("pid", "pgid", "process_started", "host")
    old = {k: v for k, v in data.items() if k not in new_fields}
    written_before = from_data(TaskRun, old)  # before these fields existed
    assert [getattr(written_before, name) for name in new_fields] == [None] * 4


@pytest.mark.parametrize("value", [0, -5, True, "12", 1.5])
@pytest.mark.parametrize("field", ["pid", "pgid", "process_started"])
def test_run_process_ids_are_checked(field: str, value: Any) -> None:
    if field == "process_started" and value == 0:
        assert TaskRun(attempt=1, process_started=0).process_started == 0  # ticks since boot
        return
    expected = "an integer >= 0" if field == "process_started" else "a process id"
    with pytest.raises(InvalidData, match=rf"^{field}: expected {expected}"):
        TaskRun(attempt=1, **{field: value})


@given(attempt=st.integers(1, 10**9), stamp=st.integers(0, 2**62))
def test_a_task_actors_fresh_run_is_the_validated_one(attempt: int, stamp: int) -> None:
    """``begun_run`` skips ``TaskRun.starting``'s checks, never its result."""
    run = begun_run(attempt, stamp)
    assert run == TaskRun.starting(attempt, now=stamp)
    run.finish(TaskPhase.FAILED, "boom", 1, now=stamp + 1)
    assert begun_run(attempt, stamp) == TaskRun.starting(attempt, now=stamp)  # none shared


def test_an_updater_names_only_real_fields() -> None:
    with pytest.raises(TypeError, match=r"TaskStatus has no field\(s\) \['phaze'\]"):
        _make_updater(TaskStatus, ("phaze",))
