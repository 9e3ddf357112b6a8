"""Record stores: one behaviour suite for both stores, then what only SQLite does."""

from __future__ import annotations

import copy
import enum
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule
from tests.strategies import TERMINAL_STATES, json_values, names, states, task_records, task_runs

from taskvisor.actors import (
    IllegalTransition,
    IncompatibleStore,
    InvalidData,
    MemoryStore,
    SqliteStore,
    StoreError,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskState,
    TaskStore,
    UnknownTask,
    from_data,
    to_data,
)
from taskvisor.actors._store import (
    _FAST_CHANGES,
    _RECORD_KEYS,
    _RUN_KEYS,
    APPLICATION_ID,
    SCHEMA_VERSION,
    _encode,
    _encode_checked,
    _encode_json,
    _NotPlain,
    _record_data,
    _record_from_data,
    _structure_change_checked,
    _to_record,
)

RUNNING, SUCCEEDED, FAILED = TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED


def plain(record: TaskRecord | None) -> Any:
    return None if record is None else json.loads(json.dumps(to_data(record)))


def make_store(kind: str, path: Path) -> TaskStore:
    return MemoryStore() if kind == "memory" else SqliteStore(path)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    with make_store(request.param, tmp_path / "tasks.db") as opened:
        yield opened


def test_stores_are_task_stores(store: TaskStore) -> None:
    assert isinstance(store, TaskStore)


# --------------------------------------------------------------------------- basics


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=task_records())
def test_put_then_get_returns_an_equal_record(store: TaskStore, record: TaskRecord) -> None:
    store.put(record)
    got = store.get(record.id)
    assert got == record
    assert got is not record


def test_get_missing_is_none_and_put_replaces(store: TaskStore) -> None:
    assert store.get("nope") is None
    store.put(TaskRecord.new("a", now=1))
    replacement = TaskRecord(id="a", state=FAILED, attempts=3, created_at=1, output=[1])
    store.put(replacement)
    assert store.get("a") == replacement
    assert len(store.list()) == 1


def test_list_orders_by_created_at_then_id_and_filters_by_state(store: TaskStore) -> None:
    for task_id, created, state in [
        ("c", 2, RUNNING),
        ("b", 2, SUCCEEDED),
        ("z", 1, RUNNING),
        ("a", 3, TaskState.PENDING),
        ("a2", 2, RUNNING),
    ]:
        store.put(TaskRecord(id=task_id, state=state, created_at=created))
    assert [r.id for r in store.list()] == ["z", "a2", "b", "c", "a"]
    assert [r.id for r in store.list(state=RUNNING)] == ["z", "a2", "c"]
    assert [r.id for r in store.list(state=TaskState.EXHAUSTED)] == []


def test_delete(store: TaskStore) -> None:
    store.put(TaskRecord.new("a", now=1))
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.get("a") is None
    with pytest.raises(UnknownTask):
        store.transition("a", RUNNING)


# --------------------------------------------------------------------------- copies


def test_records_in_and_out_are_copies(store: TaskStore) -> None:
    record = TaskRecord.new("a", now=1)
    record.output = {"items": [1, 2]}
    record.metadata = {"k": "v"}
    record.runs = [TaskRun.starting(1, now=1)]
    store.put(record)
    stored = plain(record)

    record.output["items"].append(3)  # the caller keeps changing its own record
    record.metadata["k"] = "changed"
    record.runs[0].finish(TaskPhase.FAILED)
    assert plain(store.get("a")) == stored

    got = store.get("a")
    assert got is not None
    got.output["items"].clear()  # and the one it got back
    got.runs.clear()
    got.state = FAILED
    assert plain(store.get("a")) == stored


def test_transition_results_and_changes_are_copies(store: TaskStore) -> None:
    store.put(TaskRecord.new("a", now=1))
    row = {"n": 1}
    output = {"rows": (row,)}  # inside a tuple too, which JSON makes a list
    runs = [TaskRun.starting(1, now=2)]
    moved = store.transition("a", RUNNING, now=2, output=output, runs=runs)
    expected = plain(moved)

    row["n"] = 99  # what was passed in...
    output["extra"] = True
    runs[0].error = "mutated"
    moved.output["rows"].append("x")  # ...and what came back
    moved.runs[0].attempt = 7
    moved.metadata["sneaky"] = "yes"
    assert plain(store.get("a")) == expected

    # The store's next transition starts from what it saved, not from those.
    again = store.transition("a", SUCCEEDED, now=3)
    assert again.output == {"rows": [{"n": 1}]}
    assert again.runs == [TaskRun.starting(1, now=2)]
    assert again.metadata == {}
    assert plain(store.get("a")) == plain(again)


@settings(max_examples=60)
@given(record=task_records())
def test_record_clones_share_nothing_mutable(record: TaskRecord) -> None:
    from taskvisor.actors._store import _clone_record

    clone = _clone_record(record)
    assert clone == record
    assert clone is not record
    before = plain(record)
    clone.metadata["new"] = "x"
    clone.runs.append(TaskRun(attempt=99))
    for run in clone.runs:
        run.error = "changed"
    if isinstance(clone.output, (dict, list)):
        clone.output.clear()
    assert plain(record) == before


# --------------------------------------------------------------------------- fast paths
#
# The store converts plain records by hand and leaves anything else to
# cattrs. Whatever the hand-written paths accept, they must convert exactly
# as cattrs does: these tests compare the two, field by field, on a fixed
# list of odd values and on drawn ones.

RECORD_FIELDS = [f.name for f in attrs.fields(TaskRecord)]
RUN_FIELDS = [f.name for f in attrs.fields(TaskRun)]
#: Where a value can be: a record's field, or a field of its first run.
PLACES = RECORD_FIELDS + [f"runs[0].{name}" for name in RUN_FIELDS]


class Colour(enum.IntEnum):
    RED = 1


class Shade(enum.Enum):
    DARK = "dark"


class NamedRecord(TaskRecord):
    pass


def _unchecked(obj: Any, **changes: Any) -> Any:
    """``obj`` with ``changes`` set past its validators."""
    for name, value in changes.items():
        object.__setattr__(obj, name, value)
    return obj


def odd_constants() -> list[Any]:
    """Values of every type a field may hold, right or wrong (fresh ones each call)."""
    return [
        None,
        "x",
        "",
        0,
        -1,
        1.5,
        True,
        float("nan"),
        2**63 - 1,
        2**63,
        -(2**63) - 1,
        *[s.value for s in TaskState],
        *TaskState,
        *TaskPhase,
        Colour.RED,
        Shade.DARK,
        b"x",
        {1, 2},
        (),
        ("a", ["b"]),
        [],
        [("a", "b")],
        ["ab"],
        [Colour.RED],
        {},
        {"k": "v"},
        {"k": 1},
        {1: "v"},
        {Colour.RED: "v"},
        {"k": Shade.DARK},
        {"k": ({"n": 1},)},
        [{}],
        [{"attempt": 0}],
        [to_data(TaskRun(attempt=1))],
        [TaskRun(attempt=2, error="e")],
        (TaskRun(attempt=2),),
        [_unchecked(TaskRun(attempt=1), attempt=0)],
        [_unchecked(TaskRun(attempt=1), phase="failed")],
        [_unchecked(TaskRun(attempt=1), error=5)],
        TaskRun(attempt=1),
        NamedRecord(id="n"),
    ]


odd_values = st.one_of(
    st.builds(odd_constants).flatmap(st.sampled_from),
    json_values,
    st.tuples(json_values, json_values),
    st.dictionaries(st.integers(0, 3) | st.sampled_from(Colour), json_values, max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    st.lists(task_runs, max_size=2),
    st.lists(task_runs, max_size=2).map(tuple),
    st.lists(task_runs, max_size=2).map(lambda runs: [to_data(r) for r in runs]),
)


def _outcome(call: Any, *args: Any) -> tuple[str, Any]:
    """``("ok", repr of the result)`` or the error raised: repr tells 1 from True."""
    try:
        return "ok", repr(call(*args))
    except Exception as exc:  # compared by type and message
        return type(exc).__name__, str(exc)


def _fast_outcome(call: Any, *args: Any) -> tuple[str, Any] | None:
    """The outcome of a fast path, or None when it leaves the value to cattrs.

    It declines with ``_NotPlain``, or with an error (from a model validator)
    that the cattrs path words better.
    """
    try:
        return "ok", repr(call(*args))
    except (_NotPlain, InvalidData):
        return None


def _with_a_run(record: TaskRecord) -> TaskRecord:
    if not record.runs:
        record.runs.append(TaskRun(attempt=1))
    return record


def _spoil(target: Any, place: str, value: Any) -> None:
    """Set ``place`` of a record (or of its plain data) to ``value``, past any validator."""
    if place.startswith("runs[0]."):
        target = target["runs"][0] if isinstance(target, dict) else target.runs[0]
        place = place.removeprefix("runs[0].")
    if isinstance(target, dict):
        target[place] = value
    else:
        _unchecked(target, **{place: value})


def check_encoding(record: TaskRecord, place: str, value: Any, subclass: bool) -> None:
    if subclass:
        record = NamedRecord(**{name: getattr(record, name) for name in RECORD_FIELDS})
    _spoil(record, place, value)

    def stored(encode: Any) -> Any:  # what a store keeps: the text and its columns
        data, text = encode(record)
        return text, [data[key] for key in ("id", "state", "created_at", "updated_at")]

    assert _outcome(stored, _encode) == _outcome(stored, _encode_checked)


def check_decoding(record: TaskRecord, place: str, change: str, value: Any) -> None:
    data: dict[str, Any] = json.loads(json.dumps(to_data(record)))
    if change == "set":
        _spoil(data, place, value)
    elif change == "drop":
        parent = data["runs"][0] if place.startswith("runs[0].") else data
        del parent[place.removeprefix("runs[0].")]
    elif change == "add":
        _spoil(data, place + "_extra", value)

    expected = _outcome(lambda d: from_data(TaskRecord, d), copy.deepcopy(data))
    assert _outcome(_to_record, copy.deepcopy(data)) == expected
    fast = _fast_outcome(_record_from_data, copy.deepcopy(data))
    if fast is not None:
        assert fast == expected
    else:
        assert change != "none"  # it takes whatever a store writes


def check_change(name: str, value: Any) -> None:
    before = repr(value)
    fast = _fast_outcome(_FAST_CHANGES[name], value)
    if fast is not None:
        assert fast == _outcome(_structure_change_checked, name, value)
        if isinstance(value, (dict, list, tuple)):
            assert _FAST_CHANGES[name](value) is not value  # a copy
    assert repr(value) == before  # the caller's value is not touched


@pytest.mark.parametrize("place", PLACES)
def test_fast_paths_agree_with_cattrs_on_odd_values(place: str) -> None:
    record = TaskRecord(id="a", runs=[TaskRun(attempt=1)], output={"k": [1]})
    for value in odd_constants():
        for subclass in (False, True):
            check_encoding(copy.deepcopy(record), place, value, subclass)
        for change in ("set", "add"):
            check_decoding(record, place, change, value)
        if place in RECORD_FIELDS[1:]:
            check_change(place, value)
    check_decoding(record, place, "drop", None)


@pytest.mark.parametrize("place", PLACES)
@settings(max_examples=30)
@given(record=task_records().map(_with_a_run), value=odd_values, subclass=st.booleans())
def test_fast_encoding_agrees_with_cattrs(
    place: str, record: TaskRecord, value: Any, subclass: bool
) -> None:
    check_encoding(record, place, value, subclass)


@pytest.mark.parametrize("place", PLACES)
@settings(max_examples=30)
@given(
    record=task_records().map(_with_a_run),
    change=st.sampled_from(["none", "set", "drop", "add"]),
    value=odd_values,
)
def test_fast_decoding_agrees_with_cattrs(
    place: str, record: TaskRecord, change: str, value: Any
) -> None:
    check_decoding(record, place, change, value)


@pytest.mark.parametrize("name", RECORD_FIELDS[1:])
@settings(max_examples=30)
@given(
    value=st.one_of(
        task_records().flatmap(lambda r: st.sampled_from([getattr(r, n) for n in RECORD_FIELDS])),
        odd_values,
    )
)
def test_fast_changes_agree_with_cattrs(name: str, value: Any) -> None:
    check_change(name, value)


@settings(max_examples=100)
@given(record=task_records())
def test_plain_records_take_the_fast_paths(record: TaskRecord) -> None:
    data = _record_data(record)
    assert data == to_data(record)
    text = _encode_json(data)
    assert text == _encode_json(to_data(record))
    assert _record_from_data(json.loads(text)) == record


def test_plain_changes_take_the_fast_path() -> None:
    plain_changes = {
        "state": RUNNING,
        "attempts": 2,
        "created_at": 1,
        "updated_at": 1,
        "started_at": None,
        "finished_at": 3,
        "output": {"rows": ({"n": 1.5}, [None, True, "x"])},
        "error": "boom",
        "metadata": {"k": "v"},
        "runs": [TaskRun(attempt=1, error="e")],
    }
    assert set(plain_changes) == set(_FAST_CHANGES) == set(RECORD_FIELDS) - {"id"}
    for name, value in plain_changes.items():
        assert _fast_outcome(_FAST_CHANGES[name], value) is not None, name


def test_fast_paths_know_every_field() -> None:
    assert set(RECORD_FIELDS) == _RECORD_KEYS
    assert set(RUN_FIELDS) == _RUN_KEYS


# --------------------------------------------------------------------------- transition


def test_transition_moves_stamps_and_applies_changes(store: TaskStore) -> None:
    store.put(TaskRecord.new("a", now=1))
    started = store.transition("a", RUNNING, now=10, runs=[TaskRun.starting(1, now=10)])
    assert (started.state, started.attempts, started.started_at) == (RUNNING, 1, 10)
    done = store.transition("a", SUCCEEDED, now=25, output={"answer": 42}, error=None)
    assert (done.state, done.finished_at, done.updated_at) == (SUCCEEDED, 25, 25)
    assert done.output == {"answer": 42}
    assert done.duration_millis() == 15
    assert store.get("a") == done
    again = store.transition("a", RUNNING, now=30, attempts=10)
    assert again.attempts == 10
    assert again.output == {"answer": 42}
    assert store.get("a") == again


def test_transition_can_change_created_at_and_the_order(store: TaskStore) -> None:
    store.put(TaskRecord.new("a", now=1))
    store.put(TaskRecord.new("b", now=2))
    store.transition("a", RUNNING, now=5, created_at=3)
    assert [r.id for r in store.list()] == ["b", "a"]
    store.transition("a", SUCCEEDED, now=6)
    store.transition("b", RUNNING, now=7, created_at=4)
    assert [(r.id, r.created_at) for r in store.list(state=RUNNING)] == [("b", 4)]
    assert [r.id for r in store.list()] == ["a", "b"]


def test_transition_of_unknown_task(store: TaskStore) -> None:
    with pytest.raises(UnknownTask, match="no task 'ghost'") as caught:
        store.transition("ghost", RUNNING)
    assert isinstance(caught.value, KeyError)


@pytest.mark.parametrize("target", [TaskState.PENDING, SUCCEEDED, FAILED])
def test_illegal_transition_leaves_the_record_unchanged(
    store: TaskStore, target: TaskState
) -> None:
    store.put(TaskRecord.new("a", now=1))
    store.transition("a", RUNNING, now=2)
    store.transition("a", FAILED, now=3, error="boom")
    before = plain(store.get("a"))
    with pytest.raises(IllegalTransition, match=f"from 'failed' to '{target.value}'"):
        store.transition("a", target, now=4, output="never")
    assert plain(store.get("a")) == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, r"^colour: not a TaskRecord field \(expected one of attempts, "),
        ({"id": "b"}, r"^id: a record's id cannot change"),
        ({"attempts": "3"}, r"^attempts: expected int, got '3'"),
        ({"attempts": -1}, r"attempts: expected an integer >= 0, got -1"),
        ({"error": 5}, r"^error: expected str, got 5"),
        ({"runs": [{"attempt": 0}]}, r"runs\[0\]"),
        ({"runs": [TaskRun(attempt=1), "x"]}, r"runs"),
        ({"metadata": {"k": 1}}, r"^metadata\['k'\]: expected str, got 1"),
        ({"output": {1, 2}}, r"^output: cannot be stored as JSON"),
        ({"output": float("nan")}, r"^output: cannot be stored as JSON"),
        ({"output": object()}, r"^output: cannot be stored as JSON"),
    ],
)
def test_bad_changes_are_named_and_change_nothing(
    store: TaskStore, changes: dict[str, Any], message: str
) -> None:
    store.put(TaskRecord.new("a", now=1))
    store.transition("a", RUNNING, now=2)
    before = plain(store.get("a"))
    with pytest.raises(InvalidData, match=message):
        store.transition("a", SUCCEEDED, now=3, **changes)
    assert plain(store.get("a")) == before
    assert store.transition("a", SUCCEEDED, now=4).state is SUCCEEDED  # still usable


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (TaskRecord(id="a", output={"s": {1}}), r"^output: cannot be stored as JSON"),
        (TaskRecord(id="a", output=float("inf")), r"^output: cannot be stored as JSON"),
        (TaskRecord(id="a", error=3), r"^error: expected str, got 3"),  # type: ignore[arg-type]
        (TaskRecord(id=7), r"^id: expected str, got 7"),  # type: ignore[arg-type]
        (TaskRecord(id="a", created_at=2**70), r"^created_at: expected milliseconds"),
        (TaskRecord(id="a", metadata=[1, 2]), r"^metadata: cannot be converted"),  # type: ignore[arg-type]
        (TaskRecord(id="a", runs=[3]), r"^runs: cannot be converted"),  # type: ignore[list-item]
        ("not a record", r"expected a TaskRecord, got str"),
    ],
)
def test_records_that_cannot_be_stored(store: TaskStore, record: Any, message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        store.put(record)
    assert store.list() == []


def test_close_is_idempotent_and_later_calls_fail(store: TaskStore) -> None:
    store.put(TaskRecord.new("a", now=1))
    store.close()
    store.close()
    for call in (
        lambda: store.get("a"),
        lambda: store.put(TaskRecord.new("b")),
        store.list,
        lambda: store.delete("a"),
        lambda: store.transition("a", RUNNING),
    ):
        with pytest.raises(StoreError, match="closed"):
            call()


# --------------------------------------------------------------------------- threads


def _race(workers: int, work: Any) -> None:
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


def test_concurrent_transitions_lose_no_update(store: TaskStore) -> None:
    """Threads race to start and finish one record: every accepted start is counted."""
    store.put(TaskRecord.new("shared", now=1))
    starts = [0] * 4

    def work(n: int) -> None:
        for i in range(60):
            try:
                store.transition("shared", RUNNING, runs=[TaskRun.starting(1)])
                starts[n] += 1
            except IllegalTransition:
                pass
            with suppress(IllegalTransition):
                store.transition("shared", TERMINAL_STATES[i % 5], output={"by": n, "i": i})

    _race(4, work)
    final = store.get("shared")
    assert final is not None
    assert final.attempts == sum(starts) > 0


def test_concurrent_writers_on_their_own_records(store: TaskStore) -> None:
    def work(n: int) -> None:
        for i in range(15):
            task_id = f"w{n}-{i}"
            store.put(TaskRecord.new(task_id, now=n * 100 + i))
            store.transition(task_id, RUNNING)
            store.transition(task_id, SUCCEEDED, output=[n, i])
            assert store.get(task_id) is not None

    _race(4, work)
    records = store.list()
    assert len(records) == 60
    assert all(r.state is SUCCEEDED and r.attempts == 1 for r in records)
    assert [r.id for r in records] == [f"w{n}-{i}" for n in range(4) for i in range(15)]
    assert {tuple(r.output) for r in records} == {(n, i) for n in range(4) for i in range(15)}


# --------------------------------------------------------------------------- model


class StoreMachine(RuleBasedStateMachine):
    """Both stores against a dict of records and the transition table."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="taskvisor-store-")
        self.stores: list[TaskStore] = [MemoryStore(), SqliteStore(Path(self.tmp) / "t.db")]
        self.model: dict[str, Any] = {}
        self.clock = 0

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        shutil.rmtree(self.tmp)

    @rule(target=ids, record=task_records())
    def put(self, record: TaskRecord) -> str:
        for store in self.stores:
            store.put(record)
        self.model[record.id] = plain(record)
        return record.id

    @rule(task_id=ids)
    def delete(self, task_id: str) -> None:
        expected = task_id in self.model
        for store in self.stores:
            assert store.delete(task_id) is expected
        self.model.pop(task_id, None)

    @precondition(lambda self: self.model)
    @rule(task_id=ids, state=states, output=st.none() | json_values)
    def transition(self, task_id: str, state: TaskState, output: Any) -> None:
        self.clock += 1
        current = self.model.get(task_id)
        results = []
        for store in self.stores:
            if current is None:
                with pytest.raises(UnknownTask):
                    store.transition(task_id, state, now=self.clock, output=output)
            elif not TaskState(current["state"]).can_transition_to(state):
                with pytest.raises(IllegalTransition):
                    store.transition(task_id, state, now=self.clock, output=output)
            else:
                moved = store.transition(task_id, state, now=self.clock, output=output)
                assert moved.state is state
                assert moved.updated_at == self.clock
                assert moved.output == output
                assert moved.attempts == current["attempts"] + (state is RUNNING)
                results.append(plain(moved))
        if results:
            assert results[0] == results[1]
            self.model[task_id] = results[0]

    @rule(task_id=st.one_of(ids, names()))
    def get(self, task_id: str) -> None:
        for store in self.stores:
            assert plain(store.get(task_id)) == self.model.get(task_id)

    @invariant()
    def lists_agree(self) -> None:
        expected = sorted(self.model.values(), key=lambda r: (r["created_at"], r["id"]))
        for store in self.stores:
            assert [plain(r) for r in store.list()] == expected


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=25, stateful_step_count=20)


# --------------------------------------------------------------------------- sqlite only


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _open_fds_to(path: Path) -> list[str]:
    real = str(path.resolve())
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd)
            continue
        if target.startswith(real):
            found.append(target)
    return found


def test_sqlite_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    old = os.umask(0)  # even with a permissive umask
    try:
        with SqliteStore(path) as store:
            store.put(TaskRecord.new("a", now=1))
            store.transition("a", RUNNING)
            wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
            assert wal.exists()
            assert shm.exists()
            assert _mode(path) == 0o600
            assert _mode(wal) == 0o600
            assert _mode(shm) == 0o600
    finally:
        os.umask(old)


def test_sqlite_store_is_marked_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SqliteStore(path) as store:
        store.put(TaskRecord.new("a", now=1))
        assert store.path == str(path)
        # durable against a process crash, without an fsync per commit: NORMAL (1)
        assert store._conn is not None
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (data,) = conn.execute("SELECT data FROM tasks WHERE id = 'a'").fetchone()
    assert json.loads(data) == to_data(TaskRecord.new("a", now=1))


def test_sqlite_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SqliteStore(path) as store:
        store.put(TaskRecord.new("a", now=1))
        saved = store.transition("a", RUNNING, now=2, output={"x": [1, 2.5, None]})
    with SqliteStore(path) as store:
        assert store.get("a") == saved
        assert store.transition("a", SUCCEEDED, now=3).attempts == 1


def test_sqlite_close_leaves_no_open_file(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    store = SqliteStore(path)
    store.put(TaskRecord.new("a", now=1))
    store.transition("a", RUNNING)
    assert _open_fds_to(path)  # the check can see the connection...
    store.close()
    assert _open_fds_to(path) == []  # ...and it is gone
    assert not Path(f"{path}-wal").exists()  # the last connection checkpointed and cleaned up


def test_two_stores_on_one_file_stay_atomic(tmp_path: Path) -> None:
    """Each store remembers the records it wrote; a write by the other must be noticed."""
    path = tmp_path / "tasks.db"
    with SqliteStore(path) as one, SqliteStore(path) as two:
        one.put(TaskRecord.new("a", now=1))
        one.transition("a", RUNNING, now=2)
        two.transition("a", SUCCEEDED, now=3, output="two")
        restarted = one.transition("a", RUNNING, now=4)  # illegal from what `one` wrote
        assert restarted.attempts == 2
        assert restarted.output == "two"
        two.transition("a", FAILED, now=5)  # illegal from what `two` wrote
        with pytest.raises(IllegalTransition, match="from 'failed' to 'timeout'"):
            one.transition("a", TaskState.TIMEOUT, now=6)  # legal from what `one` wrote
        assert plain(one.get("a")) == plain(two.get("a"))
        assert two.get("a").state is FAILED  # type: ignore[union-attr]
        two.delete("a")
        with pytest.raises(UnknownTask):
            one.transition("a", SUCCEEDED)

        one.put(TaskRecord.new("b", now=1))
        starts = [0, 0]

        def work(n: int) -> None:
            store = (one, two)[n % 2]
            for i in range(40):
                try:
                    store.transition("b", RUNNING)
                    starts[n % 2] += 1
                except IllegalTransition:
                    pass
                with suppress(IllegalTransition):
                    store.transition("b", TERMINAL_STATES[i % 5])

        _race(4, work)
        final = two.get("b")
        assert final is not None
        assert final.attempts == sum(starts) > 0


def test_garbage_file_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are my notes, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(IncompatibleStore) as caught:
        SqliteStore(path)
    message = str(caught.value)
    assert str(path) in message
    assert "not an SQLite database" in message
    assert path.read_bytes() == content
    assert _open_fds_to(path) == []


def test_foreign_sqlite_database_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
        conn.commit()
    with pytest.raises(IncompatibleStore) as caught:
        SqliteStore(path)
    message = str(caught.value)
    assert str(path) in message
    assert "not a taskvisor store" in message
    assert "users" in message
    with closing(sqlite3.connect(path)) as conn:  # untouched: same journal, same rows
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT name FROM users").fetchall() == [("ada",)]
    assert _open_fds_to(path) == []


def test_other_application_id_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA application_id = 1234")
        conn.commit()
    with pytest.raises(IncompatibleStore, match=r"another application \(application_id 0x4d2"):
        SqliteStore(path)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SqliteStore(path) as store:
        store.put(TaskRecord.new("a", now=1))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    with pytest.raises(IncompatibleStore) as caught:
        SqliteStore(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"supports (schema version {SCHEMA_VERSION})" in message
    assert _open_fds_to(path) == []


def test_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    path.touch()
    with SqliteStore(path) as store:
        store.put(TaskRecord.new("a", now=1))
        assert store.get("a") is not None


def test_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot create the store"):
        SqliteStore(tmp_path / "no" / "such" / "dir.db")


def test_damaged_record_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SqliteStore(path) as store:
        store.put(TaskRecord.new("a", now=1))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE tasks SET data = '{\"id\": 1}'")
        conn.commit()
    with SqliteStore(path) as store:
        with pytest.raises(StoreError, match="a stored record is damaged"):
            store.get("a")
        with pytest.raises(StoreError, match="a stored record is damaged"):
            store.transition("a", RUNNING)


_CHILD = textwrap.dedent(
    """
    import sys, time
    from taskvisor.actors import SqliteStore, TaskRecord, TaskState

    store = SqliteStore(sys.argv[1])
    store.put(TaskRecord.new("job", now=1))
    store.transition("job", TaskState.RUNNING, now=2)
    store.transition("job", TaskState.SUCCEEDED, now=3, output={"answer": 42})
    print("committed", flush=True)
    time.sleep(60)
    """
)


def test_committed_transition_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        _, err = child.communicate(timeout=30)  # reaps it: no zombie left
    assert line == "committed\n", err
    assert child.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").exists()  # killed before any clean close: the WAL holds it
    with SqliteStore(path) as store:
        record = store.get("job")
    assert record is not None
    assert record.state is SUCCEEDED
    assert record.output == {"answer": 42}
    assert (record.attempts, record.started_at, record.finished_at) == (1, 2, 3)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=task_runs, output=json_values)
def test_sqlite_and_memory_store_agree(tmp_path: Path, run: TaskRun, output: Any) -> None:
    with MemoryStore() as memory, SqliteStore(tmp_path / "agree.db") as sqlite:
        for store in (memory, sqlite):
            store.put(TaskRecord.new("a", now=1))
            store.transition("a", RUNNING, now=2, runs=[run], output=output)
        assert plain(memory.get("a")) == plain(sqlite.get("a"))
        assert memory.get("a") == sqlite.get("a")
