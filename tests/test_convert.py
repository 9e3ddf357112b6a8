"""The converter: every model class round-trips through JSON; bad data is named by path."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.strategies import (
    object_metas,
    task_records,
    task_runs,
    task_specs,
    task_statuses,
    tasks,
)

from taskvisor.actors import (
    InvalidData,
    ObjectMeta,
    Task,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskSpec,
    TaskState,
    TaskStatus,
    from_data,
    to_data,
)

JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def assert_plain(data: Any, path: str = "$") -> None:
    """Fail unless ``data`` holds only what JSON can hold."""
    assert isinstance(data, JSON_TYPES), f"{path}: {type(data).__name__}"
    if isinstance(data, dict):
        for key, value in data.items():
            assert isinstance(key, str), f"{path}: key {key!r}"
            assert_plain(value, f"{path}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            assert_plain(value, f"{path}[{i}]")
    elif isinstance(data, float):
        assert math.isfinite(data)


def round_trip(cls: type[Any], obj: Any) -> Any:
    data = to_data(obj)
    assert_plain(data)
    text = json.dumps(data, allow_nan=False)
    back = from_data(cls, json.loads(text))
    assert type(back) is cls
    assert to_data(back) == json.loads(text)  # and it converts back to the same data
    return back


MODELS = [
    (TaskSpec, task_specs()),
    (ObjectMeta, object_metas),
    (TaskStatus, task_statuses),
    (Task, tasks),
    (TaskRun, task_runs),
    (TaskRecord, task_records()),
]


@pytest.mark.parametrize(("cls", "strategy"), MODELS, ids=[cls.__name__ for cls, _ in MODELS])
def test_round_trip_through_json(cls: type[Any], strategy: st.SearchStrategy[Any]) -> None:
    @settings(max_examples=60)
    @given(strategy)
    def check(obj: Any) -> None:
        assert round_trip(cls, obj) == obj

    check()


def test_callable_target_is_stored_as_its_import_path() -> None:
    spec = TaskSpec(name="a", target=json.dumps, args=[1, [2, 3]], kwargs={"indent": 2})
    data = to_data(spec)
    assert data["target"] == "json:dumps"
    assert data["args"] == [1, [2, 3]]
    back = round_trip(TaskSpec, spec)
    assert back.target == "json:dumps"
    assert back.args == (1, [2, 3])
    assert back == spec


def _nested() -> None:  # pragma: no cover - never called
    pass


def _local_function() -> Any:
    def inner() -> None:  # pragma: no cover - never called
        pass

    return inner


@pytest.mark.parametrize(
    "target",
    [lambda: None, _local_function()],
    ids=["lambda", "local function"],
)
def test_unimportable_targets_cannot_be_stored(target: Any) -> None:
    spec = TaskSpec(name="a", target=target)  # fine to run in-process...
    with pytest.raises(InvalidData, match=r"^target: .* has no import path; use a module-level"):
        to_data(spec)  # ...but not to store or configure
    task = Task.new("t", spec, now=1)
    with pytest.raises(InvalidData, match="has no import path"):
        to_data(task)


def test_module_level_function_target_is_stored() -> None:
    spec = TaskSpec(name="a", target=_nested)
    assert to_data(spec)["target"] == f"{__name__}:_nested"


def _record_data(**changes: Any) -> dict[str, Any]:
    record = TaskRecord.new("r", now=1)
    record.transition(TaskState.RUNNING, now=2)
    record.runs = [TaskRun.starting(1, now=2), TaskRun.starting(2, now=3)]
    data: dict[str, Any] = to_data(record)
    data.update(changes)
    return data


def _task_data() -> dict[str, Any]:
    data: dict[str, Any] = to_data(Task.new("t", TaskSpec(name="t", target="json:dumps"), now=1))
    return data


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (TaskRecord, _record_data(bogus=1), "(top level): unknown field(s) ['bogus']"),
        (TaskRecord, {"state": "pending"}, "id: required field missing"),
        (TaskRecord, _record_data(attempts=True), "attempts: expected int, got True"),
        (TaskRecord, _record_data(attempts="3"), "attempts: expected int, got '3'"),
        (TaskRecord, _record_data(error=5), "error: expected str, got 5"),
        (TaskRecord, _record_data(metadata={"k": 1}), "metadata['k']: expected str, got 1"),
        (
            TaskRecord,
            _record_data(state="done"),
            "state: expected one of pending, running, succeeded, failed, timeout, cancelled, "
            "exhausted, got 'done'",
        ),
        (TaskRecord, [1, 2], "(top level): expected a mapping of TaskRecord fields, got list"),
        (TaskRun, {"attempt": 0}, "attempt: expected an integer >= 1, got 0"),
        (TaskStatus, {"phase": "ok"}, "phase: expected one of pending, running"),
        (TaskSpec, {"name": "a", "target": 5}, "target: expected a 'package.module:function'"),
        (
            TaskSpec,
            {"name": "a", "target": "json:dumps", "shutdown": "later"},
            "shutdown: expected seconds or 'brutal', got 'later'",
        ),
        (
            TaskSpec,
            {"name": "a", "target": "json:dumps", "restart": "always"},
            "restart: expected one of permanent, transient, temporary, got 'always'",
        ),
        (TaskSpec, {"name": "a"}, "target: a 'call' task needs a target, got None"),
    ],
)
def test_bad_data_is_named(cls: type[Any], data: Any, message: str) -> None:
    with pytest.raises(InvalidData) as caught:
        from_data(cls, data)
    assert str(caught.value) == message or str(caught.value).startswith(message)


def test_nested_problems_are_named_by_path() -> None:
    runs = _record_data()["runs"]
    runs[0]["attempt"] = "one"
    runs[1]["phase"] = "sleeping"
    runs[1]["extra"] = True
    with pytest.raises(InvalidData) as caught:
        from_data(TaskRecord, _record_data(runs=runs))
    problems = caught.value.problems
    assert "runs[0].attempt: expected int, got 'one'" in problems
    assert "runs[1]: unknown field(s) ['extra']" in problems
    for problem in problems:
        assert problem in str(caught.value)


def test_task_sections_are_named_by_path() -> None:
    data = _task_data()
    data["spec"]["restart"] = "always"
    with pytest.raises(InvalidData, match=r"^spec\.restart: expected one of permanent"):
        from_data(Task, data)
    data = _task_data()
    data["metadata"]["resource_version"] = 0
    with pytest.raises(InvalidData, match=r"^metadata\.resource_version: expected an integer >= 1"):
        from_data(Task, data)
    data = _task_data()
    data["status"]["colour"] = "red"
    with pytest.raises(InvalidData, match=r"^status: unknown field\(s\) \['colour'\]"):
        from_data(Task, data)


def test_where_prefixes_the_path() -> None:
    with pytest.raises(InvalidData) as caught:
        from_data(
            TaskSpec,
            {"name": "a", "target": "json:dumps", "restart": "always"},
            where="children[2]",
        )
    assert str(caught.value) == (
        "children[2].restart: expected one of permanent, transient, temporary, got 'always'"
    )
    with pytest.raises(InvalidData, match=r"^children\[2\]\.target: a 'call' task needs a target"):
        from_data(TaskSpec, {"name": "a"}, where="children[2]")
    with pytest.raises(InvalidData, match=r"^children\[2\]: expected a mapping"):
        from_data(TaskSpec, "json:dumps", where="children[2]")


@settings(max_examples=60)
@given(record=task_records(), data=st.data())
def test_a_wrong_run_field_is_named_by_index(record: TaskRecord, data: st.DataObject) -> None:
    if not record.runs:
        record.runs.append(TaskRun.starting(1, now=1))
    plain = to_data(record)
    index = data.draw(st.integers(0, len(plain["runs"]) - 1), label="index")
    field, bad = data.draw(
        st.sampled_from(
            [("attempt", "x"), ("attempt", 1.5), ("phase", "asleep"), ("started_at", None)]
        ),
        label="field",
    )
    plain["runs"][index][field] = bad
    with pytest.raises(InvalidData) as caught:
        from_data(TaskRecord, json.loads(json.dumps(plain)))
    assert f"runs[{index}].{field}: " in str(caught.value)


@settings(max_examples=60)
@given(record=task_records(), name=st.text(min_size=1, max_size=8))
def test_an_unknown_field_is_named(record: TaskRecord, name: str) -> None:
    plain = to_data(record)
    if name in plain:
        return
    plain[name] = 1
    with pytest.raises(InvalidData, match="unknown field"):
        from_data(TaskRecord, plain)


def test_enum_and_float_fields_come_back_typed() -> None:
    spec = from_data(TaskSpec, {"name": "a", "target": "json:dumps", "timeout": 3, "shutdown": 2})
    assert isinstance(spec.timeout, float)
    assert spec.shutdown == 2.0
    run = from_data(TaskRun, {"attempt": 1, "phase": "timeout"})
    assert run.phase is TaskPhase.TIMEOUT
