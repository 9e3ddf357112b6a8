"""Record stores: one behaviour suite for both stores, then what only SQLite does."""

from __future__ import annotations

import functools
import json
import os
import re
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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule
from tests.strategies import TERMINAL_STATES, json_values, names, states, task_records, task_runs

from helpers import IteratesBadly, RaisesWhenRead
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
    TaskSpec,
    TaskState,
    TaskStore,
    UnknownTask,
    to_data,
)
from taskvisor.actors._errors import StoreLocked
from taskvisor.actors._model import ERROR_TEXT_MAX
from taskvisor.actors._store import APPLICATION_ID, OUTPUT_MAX_BYTES, SCHEMA_VERSION, StoreOwner

RUNNING, SUCCEEDED, FAILED = TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED


def plain(record: TaskRecord | None) -> Any:
    return None if record is None else json.loads(json.dumps(to_data(record)))


def _unchecked(obj: Any, **changes: Any) -> Any:
    """``obj`` with ``changes`` set past its validators."""
    for name, value in changes.items():
        object.__setattr__(obj, name, value)
    return obj


def _ordered(record: TaskRecord) -> TaskRecord:
    """``record`` with its runs as a store keeps them: each attempt once, oldest first."""
    by_attempt = {run.attempt: run for run in record.runs}
    record.runs = [by_attempt[attempt] for attempt in sorted(by_attempt)]
    return record


def records() -> st.SearchStrategy[TaskRecord]:
    return task_records().map(_ordered)


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
@given(record=records())
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
        ({"runs": [TaskRun(attempt=2), TaskRun(attempt=1)]}, r"^runs\[1\].attempt: runs are"),
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
        (TaskRecord(id="a", error=3), r"^error: expected str, got 3"),  # type: ignore[arg-type]
        (TaskRecord(id=7), r"^id: expected str, got 7"),  # type: ignore[arg-type]
        (TaskRecord(id="a", created_at=2**70), r"^created_at: expected milliseconds"),
        (TaskRecord(id="a", metadata=[1, 2]), r"^metadata: cannot be converted"),  # type: ignore[arg-type]
        (TaskRecord(id="a", runs=[3]), r"^runs\[0\]: expected a TaskRun, got int"),  # type: ignore[list-item]
        (
            _unchecked(TaskRecord(id="a"), metadata={"k": {1}}),
            r"^metadata: cannot be stored as JSON",
        ),
        (
            _unchecked(TaskRecord(id="a", output={1}), metadata={"k": float("nan")}),
            r"^metadata: cannot be stored as JSON",
        ),
        (TaskRecord(id="a", runs=(TaskRun(attempt=1),)), r"^runs: expected a list"),  # type: ignore[arg-type]
        (
            TaskRecord(id="a", runs=[TaskRun(attempt=1), TaskRun(attempt=1)]),
            r"^runs\[1\].attempt: runs are kept oldest first, each attempt once: "
            r"got attempt 1 after attempt 1",
        ),
        (
            TaskRecord(id="a", runs=[_unchecked(TaskRun(attempt=1), phase="odd")]),
            r"^runs\[0\]",
        ),
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

    @rule(target=ids, record=records())
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
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (data,) = conn.execute("SELECT data FROM tasks WHERE id = 'a'").fetchone()
    expected = to_data(TaskRecord.new("a", now=1))
    del expected["runs"]  # kept in a table of their own
    assert json.loads(data) == expected


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


# --------------------------------------------------------------------------- what cannot be stored


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ({1, 2}, r"cannot be encoded as JSON \(Object of type set is not JSON serializable\)"),
        ({"rows": [object()]}, r"cannot be encoded as JSON \(Object of type object"),
        (float("nan"), r"cannot be encoded as JSON \(Out of range float values"),
        ({"k": {1}}, r"cannot be encoded as JSON"),
        ("x" * OUTPUT_MAX_BYTES, r"its JSON is 1,048,578 bytes, more than the limit of 1,048,576"),
    ],
)
def test_an_output_that_cannot_be_stored_is_replaced_by_why(
    store: TaskStore, output: Any, why: str
) -> None:
    """Fault 9: the record still reaches its terminal state, so the work is not run again."""
    record = TaskRecord.new("job", now=1)
    record.transition(RUNNING, now=2)
    record.transition(SUCCEEDED, now=3)
    record.output = output
    store.put(record)  # does not raise
    stored = store.get("job")
    assert stored is not None
    assert (stored.state, stored.finished_at, stored.output) == (SUCCEEDED, 3, None)
    assert stored.error is not None
    assert stored.error.startswith("output not stored: ")
    assert len(stored.error) <= ERROR_TEXT_MAX
    assert re.search(why, stored.error), stored.error
    assert record.output is output  # the caller's record is not changed


def test_an_output_that_cannot_be_stored_keeps_the_records_error(store: TaskStore) -> None:
    record = TaskRecord(id="job", state=FAILED, error="boom", output={1})
    store.put(record)
    stored = store.get("job")
    assert stored is not None
    assert stored.error is not None
    assert stored.error.startswith("boom\noutput not stored: cannot be encoded as JSON")


def test_a_transition_to_an_output_that_cannot_be_stored(store: TaskStore) -> None:
    store.put(TaskRecord.new("job", now=1))
    store.transition("job", RUNNING, now=2)
    done = store.transition("job", SUCCEEDED, now=3, output={1, 2})
    assert (done.state, done.output) == (SUCCEEDED, None)
    assert done.error is not None
    assert "output not stored" in done.error
    assert plain(store.get("job")) == plain(done)


def test_an_output_just_under_the_limit_is_stored(store: TaskStore) -> None:
    output = "x" * (OUTPUT_MAX_BYTES - 2)  # its JSON is exactly the limit
    store.put(TaskRecord(id="job", output=output))
    stored = store.get("job")
    assert stored is not None
    assert (stored.output, stored.error) == (output, None)


def test_stored_error_texts_are_bounded(store: TaskStore) -> None:
    """Fault 18: a 1 MB error is kept as its head and tail, however it got in."""
    huge = "Traceback (most recent call last):\n" + "x" * 1_000_000 + "\nValueError: the end"
    run = TaskRun.starting(1, now=1)
    run.finish(TaskPhase.FAILED, huge, now=2)
    sneaky = _unchecked(TaskRun(attempt=2, phase=TaskPhase.FAILED), error=huge)  # past the model
    record = _unchecked(TaskRecord(id="job", state=FAILED, runs=[run, sneaky]), error=huge)
    store.put(record)
    stored = store.get("job")
    assert stored is not None
    for text in (stored.error, stored.runs[0].error, stored.runs[1].error):
        assert text is not None
        assert len(text) <= ERROR_TEXT_MAX
        assert text.startswith("Traceback (most recent call last):\n")
        assert text.endswith("\nValueError: the end")
        assert "characters cut" in text


# --------------------------------------------------------------------------- runs


def _history(attempts: range, *, error: str = "boom") -> list[TaskRun]:
    runs = []
    for attempt in attempts:
        run = TaskRun.starting(attempt, now=attempt)
        run.finish(TaskPhase.FAILED, f"{error} {attempt}", now=attempt + 1)
        runs.append(run)
    return runs


def test_kept_runs_are_stored_as_the_record_keeps_them(store: TaskStore) -> None:
    """The newest 50 runs are kept (RUNS_KEPT): the store holds exactly the record's runs."""
    record = TaskRecord.new("job", now=1)
    for attempt in range(1, 61):
        record.transition(RUNNING, now=attempt)
        record.runs.append(TaskRun.starting(attempt, now=attempt))
        record.runs = record.runs[-50:]
        store.put(record)
        record.runs[-1].finish(TaskPhase.FAILED, f"boom {attempt}", now=attempt)
        record.transition(FAILED, now=attempt)
        store.put(record)
        assert plain(store.get("job")) == plain(record)
    stored = store.get("job")
    assert stored is not None
    assert [run.attempt for run in stored.runs] == list(range(11, 61))
    record.runs = record.runs[:3]  # any other change of the runs is stored too
    record.runs[1].error = "changed"
    store.put(record)
    assert plain(store.get("job")) == plain(record)


def test_a_save_writes_only_the_runs_that_changed(tmp_path: Path) -> None:
    """Fault 18: saving a record with 50 kept runs does not rewrite them all."""
    path = tmp_path / "tasks.db"
    with SqliteStore(path) as store:
        record = TaskRecord(id="job", state=FAILED, runs=_history(range(1, 51)))
        store.put(record)  # first save by this store: everything
        assert store._conn is not None

        def changes(record: TaskRecord) -> int:
            assert store._conn is not None
            before = store._conn.total_changes
            store.put(record)
            return store._conn.total_changes - before

        record.runs.append(TaskRun.starting(51, now=60))
        del record.runs[0]
        assert changes(record) <= 3  # the head, the new run, the pruned one
        assert changes(record) == 1  # nothing but the head changed
        record.runs[-1].finish(TaskPhase.FAILED, "boom", now=61)
        assert changes(record) == 2
        assert plain(store.get("job")) == plain(record)

        # A record this store did not write last is rewritten whole.
        with SqliteStore(path) as other:
            other.put(TaskRecord(id="job", state=FAILED, runs=_history(range(1, 3), error="x")))
        assert changes(record) >= 50
        assert plain(store.get("job")) == plain(record)
        with SqliteStore(path) as other:
            assert plain(other.get("job")) == plain(record)


def test_runs_carry_their_process_and_host(store: TaskStore) -> None:
    run = TaskRun.starting(1, now=1, pid=4242, pgid=4242, process_started=987, host="worker-1")
    store.put(TaskRecord(id="job", state=RUNNING, runs=[run, TaskRun(attempt=2)]))
    stored = store.get("job")
    assert stored is not None
    first, second = stored.runs
    assert (first.pid, first.pgid, first.process_started, first.host) == (
        4242,
        4242,
        987,
        "worker-1",
    )
    assert (second.pid, second.pgid, second.process_started, second.host) == (None,) * 4
    second.pid, second.process_started = 77, 1000  # set once the process has started
    store.put(stored)  # a changed run is written again
    again = store.get("job")
    assert again is not None
    assert (again.runs[1].pid, again.runs[1].process_started) == (77, 1000)


def test_a_schema_1_store_is_upgraded_and_its_old_runs_load(tmp_path: Path) -> None:
    """A file written before runs had their own table (and pid, pgid, host) still opens."""
    path = tmp_path / "old.db"
    old_run = {
        "attempt": 1,
        "phase": "failed",
        "started_at": 1,
        "finished_at": 2,
        "error": "lost",
        "exit_code": None,
    }
    head = to_data(TaskRecord(id="job", state=FAILED, attempts=1, created_at=1))
    del head["runs"]
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE tasks (id TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL,"
            " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, data TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO tasks VALUES ('bad', 'failed', 2, 0, '{\"runs\": 5}')")
        for task_id, runs in (("job", [old_run]), ("none", [])):
            data = {**head, "id": task_id, "runs": runs}
            conn.execute(
                "INSERT INTO tasks VALUES (?, 'failed', 1, 0, ?)", (task_id, json.dumps(data))
            )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    with SqliteStore(path) as store:
        stored = store.get("job")
        assert stored is not None
        assert stored.runs == [
            TaskRun(attempt=1, phase=TaskPhase.FAILED, started_at=1, finished_at=2, error="lost")
        ]
        assert stored.runs[0].pid is None
        assert store.get("none") is not None
        with pytest.raises(StoreError, match="a stored record is damaged"):
            store.get("bad")  # damaged before: left as it was, and reading it says so
        store.delete("bad")
        assert [r.id for r in store.list()] == ["job", "none"]
        store.transition("job", RUNNING, now=5)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# --------------------------------------------------------------------------- ownership


def test_memory_store_is_owned_by_one_tree(tmp_path: Path) -> None:
    with MemoryStore() as store:
        assert store.acquire("app") is None
        assert store.owner is not None
        assert store.owner.tree == "app"
        with pytest.raises(StoreLocked) as caught:
            store.acquire("other")
        message = str(caught.value)
        assert "memory store is owned by tree 'app'" in message
        assert f"(pid {os.getpid()} on host " in message
        assert isinstance(caught.value, StoreError)
        store.release()
        store.release()
        assert store.acquire("other") is None
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.acquire("again")


@pytest.mark.parametrize("owner", ["", None, 3])
def test_an_owner_must_be_named(store: TaskStore, owner: Any) -> None:
    with pytest.raises(InvalidData, match="owner: expected the owning tree's name"):
        store.acquire(owner)


def test_sqlite_store_is_owned_by_one_store_object(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SqliteStore(path) as one, SqliteStore(path) as two:
        assert one.acquire("app") is None
        for store in (two, one):  # another object, or the same one twice
            with pytest.raises(StoreLocked) as caught:
                store.acquire("second")
            message = str(caught.value)
            assert message.startswith(f"store {path} is owned by tree 'app' (pid {os.getpid()} ")
            assert " since 20" in message
        lock = Path(one.lock_path)
        assert lock == Path(f"{os.path.realpath(path)}.lock")
        assert _mode(lock) == 0o600
        assert json.loads(lock.read_text())["tree"] == "app"
        one.release()
        assert lock.read_text() == ""  # a clean release leaves no owner behind
        assert two.acquire("second") is None
        two.put(TaskRecord.new("a", now=1))  # writing is not affected
        assert one.get("a") is not None
    with SqliteStore(path) as three:  # close released it
        assert three.acquire("third") is None
        assert three.owner is not None
        assert three.owner.tree == "third"
    assert _open_fds_to(path) == []


_OWNER = textwrap.dedent(
    """
    import sys
    from taskvisor.actors._store import SqliteStore

    store = SqliteStore(sys.argv[1])
    store.acquire("app")
    print("owned", flush=True)
    sys.stdin.readline()
    store.close()
    print("released", flush=True)
    sys.stdin.readline()
    """
)


def _owner_process(path: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "owned\n"
    return child


def test_every_name_of_a_store_finds_the_same_owner(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "link.db"
    link.symlink_to(path)
    roundabout = tmp_path / "sub" / ".." / "tasks.db"
    with SqliteStore(path) as one, SqliteStore(link) as two, SqliteStore(roundabout) as three:
        assert one.acquire("app") is None
        for other in (two, three):
            assert other.lock_path == one.lock_path
            with pytest.raises(StoreLocked, match=r"is owned by tree 'app' \(pid"):
                other.acquire("second")
    hard = tmp_path / "hard.db"
    os.link(path, hard)
    for name in (hard, path):  # a file with two names is owned under neither
        with SqliteStore(name) as store, pytest.raises(StoreError, match="has 2 hard links"):
            store.acquire("app")
    hard.unlink()
    with SqliteStore(link) as store:
        assert store.acquire("app") is None


def test_a_store_owned_by_another_process_is_refused_until_it_releases(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    child = _owner_process(path)
    try:
        assert child.stdin is not None
        assert child.stdout is not None
        with SqliteStore(path) as store:
            with pytest.raises(StoreLocked) as caught:
                store.acquire("second")
            message = str(caught.value)
            assert f"store {path} is owned by tree 'app' (pid {child.pid} on host " in message
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline() == "released\n"
            assert store.acquire("second") is None  # released cleanly: no dead owner
    finally:
        child.kill()
        child.communicate(timeout=30)


def test_a_killed_owners_store_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    child = _owner_process(path)
    try:
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with SqliteStore(path) as store:
        previous = store.acquire("second")
        assert isinstance(previous, StoreOwner)
        assert (previous.tree, previous.pid) == ("app", child.pid)
        assert str(previous).startswith(f"tree 'app' (pid {child.pid} on host ")
        assert store.owner is not None
        assert store.owner.tree == "second"


# --------------------------------------------------------------------------- failures are visible


_WRITE_LOCK = textwrap.dedent(
    """
    import sqlite3, sys

    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("COMMIT")
    conn.close()
    print("unlocked", flush=True)
    sys.stdin.readline()
    """
)


def test_a_write_blocked_past_the_timeout_raises_and_writes_nothing(tmp_path: Path) -> None:
    """Fault 16, store side: a locked database is a StoreError, never a dropped write."""
    path = tmp_path / "tasks.db"
    with SqliteStore(path, timeout=0.2) as store:
        store.put(TaskRecord.new("a", now=1))
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITE_LOCK, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdin is not None
            assert child.stdout is not None
            assert child.stdout.readline() == "locked\n"
            done = TaskRecord(id="a", state=SUCCEEDED, created_at=1, output=42)
            for write in (
                lambda: store.put(done),
                lambda: store.transition("a", RUNNING),
                lambda: store.delete("a"),
            ):
                with pytest.raises(StoreError) as caught:
                    write()
                message = str(caught.value)
                assert message.startswith(f"{path}: cannot write: database is locked")
                assert "0.2 s" in message
            assert plain(store.get("a")) == plain(TaskRecord.new("a", now=1))  # reads go on
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline() == "unlocked\n"
            store.put(done)  # the same store works again
            assert plain(store.get("a")) == plain(done)
        finally:
            child.kill()
            child.communicate(timeout=30)


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (_unchecked(TaskRun(attempt=1), exit_code=[1]), r"^runs\[0\]\.exit_code: expected int"),
        (_unchecked(TaskRun(attempt=1), attempt=True), r"^runs\[0\]\.attempt: expected an int"),
        (_unchecked(TaskRun(attempt=1), attempt=2**63), r"^runs\[0\]\.attempt: .* 64 bits"),
    ],
)
def test_runs_that_cannot_be_kept_are_named(store: TaskStore, run: TaskRun, message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        store.put(TaskRecord(id="a", runs=[run]))
    assert store.get("a") is None


def test_a_store_remembers_the_runs_of_its_latest_records_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import taskvisor.actors._store as store_module

    monkeypatch.setattr(store_module, "_MEMO_MAX", 2)
    with SqliteStore(tmp_path / "tasks.db") as store:
        for task_id in ("a", "b", "c"):
            store.put(TaskRecord(id=task_id, runs=_history(range(1, 4))))
        assert list(store._memo) == ["b", "c"]
        record = TaskRecord(id="a", runs=_history(range(2, 5)))
        store.put(record)  # forgotten: rewritten whole, still right
        assert plain(store.get("a")) == plain(record)
        assert repr(store) == f"<SqliteStore {str(tmp_path / 'tasks.db')!r}>"
    assert repr(store).endswith(" closed>")
    with MemoryStore() as memory:
        memory.put(TaskRecord(id="a"))
        assert repr(memory) == "<MemoryStore 1 records>"
    assert repr(memory) == "<MemoryStore closed>"


def test_a_lock_file_without_an_owner_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    Path(f"{path}.lock").write_text("not json")
    with SqliteStore(path) as store:
        assert store.acquire("app") is None
        assert json.loads(Path(store.lock_path).read_text())["pid"] == os.getpid()


# --------------------------------------------------------------------------- states


def test_states_are_kept_beside_the_records(store: TaskStore) -> None:
    """Where a supervisor keeps its restart history (kind E): JSON per key, copies in and out."""
    history = {"restarts": [1000, 1500], "backoff": {"worker": 3}}
    assert store.get_state("app/pool") is None
    store.put_state("app/pool", history)
    history["restarts"].append(99)  # the caller's copy
    got = store.get_state("app/pool")
    assert got == {"restarts": [1000, 1500], "backoff": {"worker": 3}}
    got["restarts"].clear()  # and the one it got
    assert store.get_state("app/pool")["restarts"] == [1000, 1500]
    store.put_state("app/pool", {"restarts": []})
    assert store.get_state("app/pool") == {"restarts": []}
    store.put_state("app/pool", None)  # deletes
    assert store.get_state("app/pool") is None
    store.put_state("app/pool", None)  # nothing to delete: fine
    assert store.list() == []  # not a record


@pytest.mark.parametrize(
    ("key", "data", "message"),
    [
        (3, {}, r"^key: expected a string, got int"),
        ("k", {1, 2}, r"^state 'k': cannot be encoded as JSON"),
        ("k", float("nan"), r"^state 'k': cannot be encoded as JSON"),
        ("k", "x" * OUTPUT_MAX_BYTES, r"^state 'k': its JSON is 1,048,578 bytes, more than"),
    ],
)
def test_states_that_cannot_be_kept(store: TaskStore, key: Any, data: Any, message: str) -> None:
    store.put_state("k", [1])
    with pytest.raises(InvalidData, match=message):
        store.put_state(key, data)
    assert store.get_state("k") == [1]  # nothing changed


def test_states_survive_reopening_and_closing_fails_them(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SqliteStore(path) as store:
        store.put_state("app", {"restarts": [1, 2]})
    with SqliteStore(path) as store:
        assert store.get_state("app") == {"restarts": [1, 2]}
    for closed in (store, MemoryStore()):
        closed.close()
        with pytest.raises(StoreError, match="closed"):
            closed.put_state("app", {})
        with pytest.raises(StoreError, match="closed"):
            closed.get_state("app")


class _Refuses:
    """A value whose conversion fails from inside (cattrs reads its attributes)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} here")


class _Unshowable(BaseException):
    def __str__(self) -> str:
        raise ValueError("no message either")


@pytest.mark.parametrize(
    "output",
    [
        pytest.param(lambda: None, id="a function"),
        pytest.param({"spec": TaskSpec(name="t", target=lambda: None)}, id="a lambda target"),
        pytest.param(_Refuses(), id="raises inside"),
        pytest.param(RaisesWhenRead(SystemExit(9)), id="raises SystemExit"),
        pytest.param(RaisesWhenRead(KeyboardInterrupt()), id="raises KeyboardInterrupt"),
        pytest.param(RaisesWhenRead(_Unshowable()), id="raises a BaseException with no message"),
        pytest.param(IteratesBadly(SystemExit(5)), id="a list whose __iter__ raises SystemExit"),
        pytest.param(IteratesBadly(RuntimeError("r")), id="a list whose __iter__ raises"),
        pytest.param({"k": IteratesBadly(SystemExit(6))}, id="nested in a dict"),
        pytest.param(
            functools.reduce(lambda inner, _: [inner], range(100_000), []), id="deep nesting"
        ),
    ],
)
def test_outputs_that_do_not_even_convert_are_replaced(store: TaskStore, output: Any) -> None:
    """Fault 9, any value a task may return: put and transition never raise for an output."""
    store.put(TaskRecord(id="a", state=SUCCEEDED, output=output))
    stored = store.get("a")
    assert stored is not None
    assert (stored.state, stored.output) == (SUCCEEDED, None)
    assert stored.error is not None
    assert stored.error.startswith("output not stored: ")
    store.transition("a", RUNNING)
    done = store.transition("a", SUCCEEDED, output=output)
    assert (done.output, plain(store.get("a"))) == (None, plain(done))
    assert done.error is not None
    assert done.error.startswith("output not stored: ")


def test_a_bad_field_is_named_even_when_the_output_fails_too(store: TaskStore) -> None:
    record = TaskRecord(id="a", output=_Refuses())
    object.__setattr__(record, "metadata", [1])
    with pytest.raises(InvalidData, match=r"^metadata: cannot be converted"):
        store.put(record)


def test_a_put_that_moves_created_at_reorders_the_list(store: TaskStore) -> None:
    store.put(TaskRecord(id="a", created_at=1, runs=[TaskRun(attempt=1)]))
    store.put(TaskRecord(id="b", created_at=2))
    store.put(TaskRecord(id="a", created_at=3, runs=[TaskRun(attempt=1)]))  # same store again
    assert [r.id for r in store.list()] == ["b", "a"]
    store.put(TaskRecord(id="a", created_at=3, state=RUNNING, runs=[TaskRun(attempt=1)]))
    assert [(r.id, r.state) for r in store.list()] == [("b", TaskState.PENDING), ("a", RUNNING)]
