"""Public constructors refuse arguments of the wrong kind or range, naming them, at once.

A refused constructor leaves no thread and no file behind (the no-leak
check runs after each test), and its message is short whatever was passed.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskvisor.actors import (
    ExecutorService,
    InvalidData,
    InvalidSpec,
    ManualClock,
    MemoryStore,
    SqliteStore,
    StoreError,
    SubmissionError,
    TaskContext,
    TaskRecord,
    TaskSpec,
    TaskState,
    UnknownTask,
)
from taskvisor.supervision import (
    DynamicSupervisorSpec,
    Fail,
    Supervisor,
    SupervisorSpec,
    check_tree_file,
    dump_tree,
    load_tree_file,
    simulate,
    spec_to_data,
    write_tree_file,
)


def nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def work(ctx: TaskContext) -> None:
    ctx.wait_cancelled(30)


SPEC = SupervisorSpec("app", children=[TaskSpec(name="w", target=work)])

WRONG_KIND = [
    ({"hooks": "y" * 20_000}, "hooks): expected a list of hooks"),
    ({"hooks": None}, "hooks): expected a list of hooks"),
    ({"hooks": [1]}, "hooks): expected each hook to be a callable or a TaskHook"),
    ({"clock": -1}, "clock): expected a Clock"),
    ({"clock": "5"}, "clock): expected a Clock"),
    ({"executors": "5"}, "executors): expected a mapping"),
    ({"executors": {"call": "a"}}, "executors): expected kind names mapped to executors"),
]


@pytest.mark.parametrize(("given", "message"), WRONG_KIND)
def test_a_service_refuses_arguments_of_the_wrong_kind(given: dict[str, Any], message: str) -> None:
    before = threading.active_count()
    with pytest.raises(TypeError, match=re.escape(message)) as caught:
        ExecutorService(**given)
    assert str(caught.value).startswith("ExecutorService(")
    assert len(str(caught.value)) < 300
    assert threading.active_count() == before


@pytest.mark.parametrize(("given", "message"), [*WRONG_KIND, ({"store": 0}, "store): expected")])
def test_a_tree_refuses_arguments_of_the_wrong_kind(given: dict[str, Any], message: str) -> None:
    before = threading.active_count()
    with pytest.raises(TypeError, match=re.escape(message)) as caught:
        Supervisor.start(SPEC, **given)
    assert str(caught.value).startswith("Supervisor.start(")
    assert len(str(caught.value)) < 300
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ({"max_running": 0}, InvalidData, "max_running): expected an integer >= 1, got 0"),
        ({"max_running": -1}, InvalidData, "max_running): expected an integer >= 1"),
        ({"max_running": "5"}, TypeError, "max_running): expected an integer or None"),
        ({"max_running": math.nan}, TypeError, "max_running): expected an integer or None"),
        ({"max_tasks": 0}, InvalidData, "max_tasks): expected an integer >= 1"),
        ({"max_tasks": -(10**5000)}, InvalidData, "max_tasks): expected an integer >= 1"),
        ({"max_tasks": True}, TypeError, "max_tasks): expected an integer or None"),
        ({"keep_finished": -1}, InvalidData, "keep_finished): expected an integer >= 0"),
        ({"keep_finished": None}, TypeError, "keep_finished): expected an integer, got None"),
        ({"keep_finished": "5"}, TypeError, "keep_finished): expected an integer"),
    ],
)
def test_a_service_refuses_counts_out_of_range(
    given: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)) as caught:
        ExecutorService(**given)
    assert len(str(caught.value)) < 300


def test_a_service_with_counts_in_range_runs() -> None:
    with ExecutorService(max_running=1, max_tasks=2, keep_finished=0) as service:
        assert service.submit(TaskSpec(name="t", target=lambda ctx: 7)).result(10) == 7


@pytest.mark.parametrize(
    ("start", "error"),
    [
        (math.nan, InvalidData),
        (math.inf, InvalidData),
        (-math.inf, InvalidData),
        (10**400, InvalidData),
        ("5", TypeError),
        (None, TypeError),
        (nested(10_000), TypeError),
    ],
)
def test_a_manual_clock_starts_at_a_finite_time(start: object, error: type[Exception]) -> None:
    refused = r"^ManualClock\(start\): expected a (finite )?number"
    with pytest.raises(error, match=refused) as caught:
        ManualClock(start)  # type: ignore[arg-type]
    assert len(str(caught.value)) < 300
    assert ManualClock(-5.5).now() == -5.5


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (math.inf, InvalidData),
        (math.nan, InvalidData),
        (10**9, InvalidData),  # more milliseconds than SQLite's busy timeout can hold
        (10**400, InvalidData),
        (-1, InvalidData),
        ("5", TypeError),
        (None, TypeError),
    ],
)
def test_a_sqlite_store_refuses_a_timeout_sqlite_cannot_keep(
    timeout: object, error: type[Exception], tmp_path: Path
) -> None:
    path = tmp_path / "tasks.db"
    with pytest.raises(error, match=r"^SqliteStore\(timeout\): expected a number"):
        SqliteStore(path, timeout=timeout)  # type: ignore[arg-type]
    assert not path.exists()  # refused before anything was created
    SqliteStore(path, timeout=2_000_000).close()


@pytest.mark.parametrize(
    ("path", "error"),
    [(None, TypeError), (5, TypeError), (b"/tmp/x.db", TypeError), ("a\0b.db", InvalidData)],
)
def test_a_sqlite_store_refuses_a_path_that_is_not_one(
    path: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"^SqliteStore\(path\)"):
        SqliteStore(path)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore | SqliteStore]:
    made = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "t.db")
    yield made
    made.close()


@pytest.mark.parametrize("bad", [nested(10_000), 10**400, None, b"a", ["a"]])
def test_store_methods_refuse_an_id_or_state_of_the_wrong_kind(
    store: MemoryStore | SqliteStore, bad: object
) -> None:
    store.put(TaskRecord.new("a"))
    calls = [
        (lambda: store.get(bad), "task_id"),  # type: ignore[arg-type]
        (lambda: store.delete(bad), "task_id"),  # type: ignore[arg-type]
        (lambda: store.transition(bad, TaskState.RUNNING), "task_id"),  # type: ignore[arg-type]
        (lambda: store.transition("a", bad), "state"),  # type: ignore[arg-type]
        (lambda: store.list(state=bad if bad is not None else "x"), "state"),  # type: ignore[arg-type]
        (lambda: store.get_state(bad), "key"),  # type: ignore[arg-type]
        (lambda: store.put_state(bad, {}), "key"),  # type: ignore[arg-type]
        (lambda: store.acquire(bad), "owner"),  # type: ignore[arg-type]
    ]
    for call, name in calls:
        with pytest.raises(InvalidData, match=f"^{name}: expected ") as caught:
            call()
        assert len(str(caught.value)) < 300
    record = store.get("a")
    assert record is not None
    assert record.state is TaskState.PENDING  # nothing changed


def test_an_unknown_id_is_named_in_a_bounded_message(store: MemoryStore | SqliteStore) -> None:
    with pytest.raises(UnknownTask) as caught:
        store.transition("x" * 1_000_000, TaskState.RUNNING)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("seed", [[1], {1: 2}, "5", 1.5, None, True])
def test_simulate_refuses_a_seed_that_is_not_an_integer(seed: object) -> None:
    with pytest.raises(InvalidSpec, match=r"^seed: expected an integer"):
        simulate(SPEC, [], seed=seed)  # type: ignore[arg-type]
    assert simulate(SPEC, [], seed=10**30).children  # any integer is a seed


@pytest.mark.parametrize("fmt", ["xml", 5, None])
def test_dump_tree_refuses_a_format_it_cannot_write(fmt: object) -> None:
    spec = SupervisorSpec("app", children=[TaskSpec(name="w", target="os:getcwd")])
    with pytest.raises(InvalidSpec, match=r"^fmt: expected 'toml', 'json' or 'yaml'"):
        dump_tree(spec, fmt)  # type: ignore[arg-type]


def test_a_service_names_a_long_duplicate_id_or_kind_in_a_bounded_message() -> None:
    with ExecutorService() as service:
        huge = "x" * 1_000_000
        service.submit(TaskSpec(name="t", target=lambda ctx: ctx.wait_cancelled(30)), id=huge)
        with pytest.raises(SubmissionError, match="duplicate task id") as caught:
            service.submit(TaskSpec(name="t", target=lambda ctx: 1), id=huge)
        assert len(str(caught.value)) < 300
        with pytest.raises(KeyError) as missing:
            service.get("y" * 1_000_000)
        assert len(str(missing.value)) < 300


def test_spec_to_data_and_simulate_events_refuse_what_they_cannot_hold() -> None:
    with pytest.raises(InvalidSpec, match=r"^spec: expected a SupervisorSpec"):
        spec_to_data(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec, match=r"^error: expected a str"):
        Fail(1.0, "w", nested(10_000))  # type: ignore[arg-type]
    assert str(simulate(SPEC, [Fail(1.0, "w", "boom")]))  # a str error is shown


@pytest.mark.parametrize("path", [":memory:", "/dev/null"])
def test_a_sqlite_store_refuses_a_path_that_is_no_database_file_and_leaves_nothing(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="expected a database file"):
        SqliteStore(path)
    assert list(tmp_path.iterdir()) == []
    assert not Path("/dev/null-journal").exists()


def test_a_dynamic_start_child_refuses_arguments_of_the_wrong_kind() -> None:
    spec = DynamicSupervisorSpec("pool", template=TaskSpec(name="w", target=work))
    with Supervisor.start(spec) as tree:
        for given, name in (
            ({"args": "abc"}, "args"),
            ({"args": 5}, "args"),
            ({"kwargs": [1]}, "kwargs"),
            ({"id": 5}, "id"),
        ):
            with pytest.raises(TypeError, match=f"^{name}: expected"):
                tree.start_child(**given)  # type: ignore[arg-type]
        assert tree.count_children()["specs"] == 0
        assert tree.start_child(args=[], id="w1") == "w1"


@pytest.mark.parametrize("value", [{1}, b"x", 10**5000], ids=["set", "bytes", "10**5000"])
def test_dump_tree_names_a_task_argument_json_cannot_write(value: object) -> None:
    spec = SupervisorSpec("s", children=[TaskSpec(name="c", target="os:getcwd", args=[value])])
    with pytest.raises(InvalidSpec, match="args") as caught:
        dump_tree(spec, "json")
    assert len(str(caught.value)) < 400


def test_a_stamp_must_fit_in_64_bits() -> None:
    with pytest.raises(InvalidData, match="in a 64-bit int") as caught:
        TaskRecord.new("a", now=10**5000)
    assert len(str(caught.value)) < 200
    assert TaskRecord.new("a", now=2**63 - 1).created_at == 2**63 - 1


def test_a_service_refuses_a_store_that_is_not_one() -> None:
    for store in ("5", 5, object()):
        with pytest.raises(TypeError, match=re.escape("ExecutorService(store): expected")):
            ExecutorService(store=store)


def test_a_clock_names_a_delay_it_cannot_read_in_a_bounded_message() -> None:
    clock = ManualClock()
    for bad in (nested(10_000), "5"):
        with pytest.raises(InvalidData, match="delay must be a number of seconds") as caught:
            clock.call_later(bad, lambda: None)  # type: ignore[arg-type]
        assert len(str(caught.value)) < 300
        with pytest.raises(InvalidData, match="delay must be a number of seconds"):
            clock.advance(bad)  # type: ignore[arg-type]


def test_a_service_get_of_an_id_that_cannot_be_one_is_a_short_key_error() -> None:
    with ExecutorService() as service:
        for bad in (10**400, nested(10_000)):
            with pytest.raises(KeyError) as caught:
                service.get(bad)  # type: ignore[arg-type]
            assert len(str(caught.value)) < 300


@pytest.mark.parametrize("path", [None, 5, b"tree.toml"], ids=["None", "int", "bytes"])
def test_tree_file_functions_refuse_a_path_that_is_not_one(path: object) -> None:
    spec = SupervisorSpec("s", children=[TaskSpec(name="c", target="os:getcwd")])
    for call in (
        lambda: load_tree_file(path),  # type: ignore[arg-type]
        lambda: check_tree_file(path),  # type: ignore[arg-type]
        lambda: write_tree_file(spec, path),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match=r"^path: expected a str or a Path"):
            call()
