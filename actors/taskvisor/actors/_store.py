"""Record stores: where each task's ``TaskRecord`` is kept.

A store keeps one record per task id. Records cross the store boundary as
copies: a record handed to ``put`` may be changed afterwards by its owner,
and a record a store returns belongs to the caller. ``transition`` is the
one read-modify-write a store offers, and it is atomic: the record is
loaded, moved with ``TaskRecord.transition``, changed and saved in one
transaction, or not touched at all.

Two stores ship with taskvisor:

- ``MemoryStore`` keeps each record as JSON text in a dict (for tests and
  for processes that need no durability);
- ``SqliteStore`` keeps them in an SQLite file (stdlib ``sqlite3``, WAL
  journal, ``synchronous=NORMAL``): a committed change survives a crash of
  the process.

Both encode a record the same way (``to_data`` then compact JSON), so a
record one store accepts, the other accepts too, and both reject the same
bad input with the same ``InvalidData`` message.
"""

from __future__ import annotations

import builtins
import copy
import enum
import json
import os
import sqlite3
import threading
import types
import typing
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeAlias, TypeVar, runtime_checkable

import attrs

from ._convert import converter, from_data, to_data
from ._errors import IllegalTransition, IncompatibleStore, InvalidData, StoreError, UnknownTask
from ._model import TaskPhase, TaskRecord, TaskRun, TaskState

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "MemoryStore", "SqliteStore", "TaskStore"]

#: ``PRAGMA application_id`` of a taskvisor SQLite store (the ASCII bytes "TVIS").
APPLICATION_ID = 0x54564953
#: The schema version this code writes and reads (``PRAGMA user_version``).
SCHEMA_VERSION = 1

A = TypeVar("A", bound=attrs.AttrsInstance)


@runtime_checkable
class TaskStore(Protocol):
    """Where task records are kept: one ``TaskRecord`` per task id.

    Records handed in and out are copies: changing a record after ``put``,
    or changing one a store returned, never changes what the store holds.
    A store is a context manager that closes itself on exit.
    """

    def put(self, record: TaskRecord) -> None:
        """Insert ``record``, or replace the record with the same id.

        Raises:
            InvalidData: when the record cannot be stored (its ``output`` is
                not JSON-able, or a field has the wrong type).
            StoreError: when the store is closed or cannot write.
        """
        ...

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the record of ``task_id``, or None when there is none.

        Raises:
            StoreError: when the store is closed or cannot read.
        """
        ...

    def list(self, *, state: TaskState | None = None) -> builtins.list[TaskRecord]:
        """Return every record (only those in ``state``, if given), oldest first.

        Records are ordered by ``created_at``, then by id.

        Raises:
            StoreError: when the store is closed or cannot read.
        """
        ...

    def delete(self, task_id: str) -> bool:
        """Delete the record of ``task_id``; return whether there was one.

        Raises:
            StoreError: when the store is closed or cannot write.
        """
        ...

    def transition(
        self, task_id: str, state: TaskState, *, now: int | None = None, **changes: Any
    ) -> TaskRecord:
        """Atomically move a record to ``state``, apply ``changes`` and save it.

        Args:
            task_id: the record to change.
            state: the state to move to (``TaskRecord.transition``).
            now: the time to stamp, in milliseconds since the epoch.
            **changes: record fields to set after the move (``output=``,
                ``error=``, ``runs=``, ``attempts=``...).

        Returns:
            A copy of the record as saved.

        Raises:
            InvalidData: when a change names no ``TaskRecord`` field (or
                ``id``), or has a value of the wrong type; nothing is saved.
            UnknownTask: when there is no record with ``task_id``.
            IllegalTransition: when the record's state may not move to
                ``state``; the stored record is left unchanged.
            StoreError: when the store is closed or cannot write.
        """
        ...

    def close(self) -> None:
        """Release the store's resources. Closing twice does nothing."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


# --------------------------------------------------------------------------- encoding

_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_decode_json = json.JSONDecoder().decode
# Compared, not looked up `in range(...)`, which scans the range for an int subclass.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})

Copier: TypeAlias = Callable[[Any], Any]


def _plain_copy(value: Any) -> Any:
    """Deep-copy JSON-like data (a tuple becomes a list, as JSON would make it)."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is dict:
        return {key: _plain_copy(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_plain_copy(item) for item in value]
    return copy.deepcopy(value)


def _copier(kind: Any) -> Copier | None:
    """Return how to copy a value of type ``kind``; None when it is immutable."""
    if kind in _IMMUTABLE or (isinstance(kind, type) and issubclass(kind, enum.Enum)):
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return None if all(_copier(arg) is None for arg in args) else _plain_copy
    if origin is dict and args and all(_copier(arg) is None for arg in args):
        return dict
    if origin is tuple:
        if all(arg is ... or _copier(arg) is None for arg in args):
            return None
        return lambda value: tuple(_plain_copy(element) for element in value)
    if origin is list and args:
        item = _copier(args[0])
        if item is None:
            return list
        return lambda value: [item(element) for element in value]
    if isinstance(kind, type) and attrs.has(kind):
        return _cloner(kind)
    return _plain_copy


def _cloner(cls: type[A]) -> Callable[[A], A]:
    """Return a function that deep-copies an instance of the attrs class ``cls``.

    The function is generated (as attrs and cattrs generate theirs) and, led
    by the field types, copies only what is mutable: several times faster
    than ``copy.deepcopy`` or a trip through ``to_data`` and back.

    Raises:
        TypeError: when a field of ``cls`` is not set by ``__init__``.
    """
    env: dict[str, Any] = {"cls": cls}
    arguments = []
    for n, field in enumerate(attrs.fields(attrs.resolve_types(cls))):
        if not field.init:
            raise TypeError(f"cannot clone {cls.__qualname__}: {field.name} is not an init field")
        copy_ = _copier(field.type)
        if copy_ is None:
            arguments.append(f"{field.alias}=obj.{field.name}")
        else:
            env[f"copy_{n}"] = copy_
            arguments.append(f"{field.alias}=copy_{n}(obj.{field.name})")
    source = f"def clone(obj):\n    return cls({', '.join(arguments)})\n"
    exec(compile(source, f"<taskvisor clone {cls.__qualname__}>", "exec"), env)
    clone: Callable[[A], A] = env["clone"]
    return clone


_FIELDS: dict[str, Any] = {f.name: f.type for f in attrs.fields(attrs.resolve_types(TaskRecord))}
_COPIERS = {name: _copier(kind) for name, kind in _FIELDS.items()}
_clone_record = _cloner(TaskRecord)


def _bad(field: str, message: str) -> InvalidData:
    exc = InvalidData(f"{field}: {message}")
    exc.field = field
    return exc


# Records cross the store boundary on every call, and cattrs converts them
# through several layers of dispatch per field. So the common case (a record
# of exactly the model's types, JSON of exactly JSON's types) is converted by
# the hand-written functions below, which raise ``_NotPlain`` on anything
# else. Their callers then take the cattrs path, which handles (or words the
# error for) everything else. The fast paths take a strict subset of the
# input: whatever they accept, they convert exactly as cattrs would
# (tests/test_store.py checks that they agree).

_STATES = {state.value: state for state in TaskState}
_PHASES = {phase.value: phase for phase in TaskPhase}
_RECORD_KEYS = frozenset(_FIELDS)
_RUN_KEYS = frozenset(field.name for field in attrs.fields(TaskRun))
_NONE = type(None)


class _NotPlain(Exception):
    """Raised by a fast path for a value it leaves to cattrs."""


def _run_data(run: TaskRun) -> dict[str, Any]:
    """Return ``to_data(run)`` (for JSON at once: values are not copied)."""
    if type(run) is not TaskRun or type(run.phase) is not TaskPhase:
        raise _NotPlain
    return {
        "attempt": run.attempt,
        "phase": run.phase.value,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "error": run.error,
        "exit_code": run.exit_code,
    }


def _record_data(record: TaskRecord) -> dict[str, Any]:
    """Return ``to_data(record)`` (for JSON at once: values are not copied).

    Values cattrs passes through as they are (``output``, the numbers and
    strings) are left for the JSON encoder to accept or refuse.
    """
    if (
        type(record) is not TaskRecord
        or type(record.state) is not TaskState
        or type(record.metadata) is not dict
        or type(record.runs) is not list
    ):
        raise _NotPlain
    return {
        "id": record.id,
        "state": record.state.value,
        "attempts": record.attempts,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "output": record.output,
        "error": record.error,
        "metadata": record.metadata,
        "runs": [_run_data(run) for run in record.runs],
    }


def _run_from_data(data: Any) -> TaskRun:
    """Return ``from_data(TaskRun, data)``, taking over ``data``'s values."""
    if type(data) is not dict or data.keys() != _RUN_KEYS:
        raise _NotPlain
    phase, finished, error, code = (
        data["phase"],
        data["finished_at"],
        data["error"],
        data["exit_code"],
    )
    if (
        type(data["attempt"]) is not int
        or type(phase) is not str
        or phase not in _PHASES
        or type(data["started_at"]) is not int
        or (finished is not None and type(finished) is not int)
        or (error is not None and type(error) is not str)
        or (code is not None and type(code) is not int)
    ):
        raise _NotPlain
    return TaskRun(
        attempt=data["attempt"],
        phase=_PHASES[phase],
        started_at=data["started_at"],
        finished_at=finished,
        error=error,
        exit_code=code,
    )


def _record_from_data(data: Any) -> TaskRecord:
    """Return ``from_data(TaskRecord, data)``, taking over ``data``'s values.

    Raises:
        InvalidData: from a validator of the model (cattrs words it better).
    """
    if type(data) is not dict or data.keys() != _RECORD_KEYS:
        raise _NotPlain
    state, started, finished = data["state"], data["started_at"], data["finished_at"]
    error, metadata, runs = data["error"], data["metadata"], data["runs"]
    if (
        type(data["id"]) is not str
        or type(state) is not str
        or state not in _STATES
        or type(data["attempts"]) is not int
        or type(data["created_at"]) is not int
        or type(data["updated_at"]) is not int
        or (started is not None and type(started) is not int)
        or (finished is not None and type(finished) is not int)
        or (error is not None and type(error) is not str)
        or type(metadata) is not dict
        or not all(type(k) is str and type(v) is str for k, v in metadata.items())
        or type(runs) is not list
    ):
        raise _NotPlain
    return TaskRecord(
        id=data["id"],
        state=_STATES[state],
        attempts=data["attempts"],
        created_at=data["created_at"],
        updated_at=data["updated_at"],
        started_at=started,
        finished_at=finished,
        output=data["output"],
        error=error,
        metadata=metadata,
        runs=[_run_from_data(run) for run in runs],
    )


def _to_record(data: Any) -> TaskRecord:
    """Build a record from plain data, taking it over: ``from_data``, fast when it can be.

    Raises:
        InvalidData: when the data is no record.
    """
    try:
        return _record_from_data(data)
    except (_NotPlain, InvalidData):
        return from_data(TaskRecord, data)


def _encode(record: TaskRecord) -> tuple[dict[str, Any], str]:
    """Return the plain data of ``record`` and its JSON text.

    The data shares the record's values: read it, do not keep it.

    Raises:
        InvalidData: when the record does not convert, or its data is not JSON.
    """
    try:
        data = _record_data(record)
        created, updated = data["created_at"], data["updated_at"]
        if (
            type(created) is int
            and type(updated) is int
            and _INT64_MIN <= created <= _INT64_MAX
            and _INT64_MIN <= updated <= _INT64_MAX
        ):
            return data, _encode_json(data)
    except (_NotPlain, AttributeError, TypeError, ValueError, RecursionError):
        pass  # the checked path below finds (and names) any problem
    return _encode_checked(record)


def _encode_checked(record: TaskRecord) -> tuple[dict[str, Any], str]:
    """``_encode`` by cattrs, naming the field at fault when there is one."""
    if not isinstance(record, TaskRecord):
        raise InvalidData(f"expected a TaskRecord, got {type(record).__name__}")
    try:
        data: dict[str, Any] = to_data(record)
    except (AttributeError, TypeError, ValueError) as exc:
        for field in attrs.fields(type(record)):
            try:
                kind = None if isinstance(field.type, str) else field.type
                converter.unstructure(getattr(record, field.name), kind)
            except (AttributeError, TypeError, ValueError) as field_exc:
                raise _bad(field.name, f"cannot be converted ({field_exc})") from None
        raise InvalidData(f"record {record.id!r} cannot be converted: {exc}") from None
    for column in ("created_at", "updated_at"):
        value = data[column]
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not _INT64_MIN <= value <= _INT64_MAX
        ):
            raise _bad(column, f"expected milliseconds within 64 bits, got {value!r}")
    try:
        return data, _encode_json(data)
    except (TypeError, ValueError, RecursionError) as exc:
        for name, value in data.items():
            try:
                _encode_json(value)
            except (TypeError, ValueError, RecursionError) as field_exc:
                raise _bad(name, f"cannot be stored as JSON ({field_exc})") from None
        raise InvalidData(f"record {record.id!r} cannot be stored as JSON ({exc})") from None


def _checked(record: TaskRecord) -> tuple[dict[str, Any], str, TaskRecord]:
    """Encode ``record``; return its data, its text and the record read back from it.

    Raises:
        InvalidData: when the record cannot be stored, or would not read back.
    """
    data, text = _encode(record)
    return data, text, _to_record(_decode_json(text))


def _decode(text: str, where: str) -> TaskRecord:
    try:
        return _to_record(_decode_json(text))
    except ValueError as exc:  # JSONDecodeError and InvalidData
        raise StoreError(f"{where}: a stored record is damaged: {exc}") from exc


def _exact(*kinds: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) not in kinds:
            raise _NotPlain
        return value

    return check


def _copy_json(value: Any) -> Any:
    """Deep-copy JSON data (a tuple becomes a list, as ``to_data`` makes it)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            out[key] = _copy_json(item)
        return out
    if kind is list or kind is tuple:
        return [_copy_json(item) for item in value]
    raise _NotPlain


def _copy_labels(value: Any) -> dict[str, str]:
    if type(value) is not dict or not all(
        type(key) is str and type(item) is str for key, item in value.items()
    ):
        raise _NotPlain
    return dict(value)


def _copy_runs(value: Any) -> list[TaskRun]:
    if type(value) is not list:
        raise _NotPlain
    return [_run_from_data(_run_data(run)) for run in value]


# How each field a transition may change is checked and copied, when its
# value is of exactly the declared type: the same as ``_structure_change_checked``.
_FAST_CHANGES: dict[str, Callable[[Any], Any]] = {
    "state": _exact(TaskState),
    "attempts": _exact(int),
    "created_at": _exact(int),
    "updated_at": _exact(int),
    "started_at": _exact(int, _NONE),
    "finished_at": _exact(int, _NONE),
    "output": _copy_json,
    "error": _exact(str, _NONE),
    "metadata": _copy_labels,
    "runs": _copy_runs,
}


def _structure_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Check the field ``changes`` of a transition; return copies the caller does not share.

    Raises:
        InvalidData: naming a change that is no ``TaskRecord`` field, is ``id``,
            or has a value of the wrong type.
    """
    out: dict[str, Any] = {}
    for name, value in changes.items():
        fast = _FAST_CHANGES.get(name)
        if fast is not None:
            try:
                out[name] = fast(value)
                continue
            except (_NotPlain, InvalidData, RecursionError):
                pass  # the checked path below accepts it, or names the problem
        out[name] = _structure_change_checked(name, value)
    return out


def _structure_change_checked(name: str, value: Any) -> Any:
    """Check and copy one change by cattrs (``to_data`` then ``from_data``)."""
    if name == "id":
        raise _bad("id", "a record's id cannot change; put a record with the new id instead")
    if name not in _FIELDS:
        known = ", ".join(n for n in _FIELDS if n not in ("id", "state"))
        raise _bad(name, f"not a TaskRecord field (expected one of {known})")
    kind = _FIELDS[name]
    structured = to_data(value) if kind is Any else from_data(kind, to_data(value), where=name)
    copy_ = _COPIERS[name]
    return structured if copy_ is None else copy_(structured)


def _apply(
    record: TaskRecord, state: TaskState, now: int | None, changes: Mapping[str, Any]
) -> None:
    before = record.state
    if not record.transition(state, now=now):
        raise IllegalTransition(
            f"task {record.id!r}: cannot move from {before.value!r} to {state.value!r}"
        )
    for name, value in changes.items():
        setattr(record, name, value)


def _unknown(task_id: str, where: str) -> UnknownTask:
    return UnknownTask(f"{where}: no task {task_id!r}")


# --------------------------------------------------------------------------- memory


class MemoryStore:
    """A thread-safe store that keeps records in memory, as JSON text.

    Nothing survives the process. Use it in tests and where durability does
    not matter; it checks and encodes records exactly like ``SqliteStore``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # id -> (state value, created_at, JSON text of the record)
        self._rows: dict[str, tuple[str, int, str]] | None = {}

    def __repr__(self) -> str:
        state = "closed" if self._rows is None else f"{len(self._rows)} records"
        return f"<MemoryStore {state}>"

    def _open_rows(self) -> dict[str, tuple[str, int, str]]:
        if self._rows is None:
            raise StoreError("memory store: the store is closed")
        return self._rows

    def put(self, record: TaskRecord) -> None:
        """Insert ``record``, or replace the record with the same id.

        Raises:
            InvalidData: when the record cannot be stored (its ``output`` is
                not JSON-able, or a field has the wrong type).
            StoreError: when the store is closed.
        """
        data, text, _ = _checked(record)
        with self._lock:
            self._open_rows()[data["id"]] = (data["state"], data["created_at"], text)

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the record of ``task_id``, or None when there is none.

        Raises:
            StoreError: when the store is closed.
        """
        with self._lock:
            row = self._open_rows().get(task_id)
        return None if row is None else _decode(row[2], "memory store")

    def list(self, *, state: TaskState | None = None) -> builtins.list[TaskRecord]:
        """Return every record (only those in ``state``, if given), oldest first.

        Raises:
            StoreError: when the store is closed.
        """
        with self._lock:
            rows = [
                (created, task_id, text)
                for task_id, (value, created, text) in self._open_rows().items()
                if state is None or value == state.value
            ]
        rows.sort(key=lambda row: (row[0], row[1]))
        return [_decode(text, "memory store") for _, _, text in rows]

    def delete(self, task_id: str) -> bool:
        """Delete the record of ``task_id``; return whether there was one.

        Raises:
            StoreError: when the store is closed.
        """
        with self._lock:
            return self._open_rows().pop(task_id, None) is not None

    def transition(
        self, task_id: str, state: TaskState, *, now: int | None = None, **changes: Any
    ) -> TaskRecord:
        """Atomically move a record to ``state``, apply ``changes`` and save it.

        Returns:
            A copy of the record as saved.

        Raises:
            InvalidData: when a change names no ``TaskRecord`` field (or
                ``id``), or has a value of the wrong type; nothing is saved.
            UnknownTask: when there is no record with ``task_id``.
            IllegalTransition: when the record's state may not move to
                ``state``; the stored record is left unchanged.
            StoreError: when the store is closed.
        """
        fields = _structure_changes(changes)
        with self._lock:
            rows = self._open_rows()
            row = rows.get(task_id)
            if row is None:
                raise _unknown(task_id, "memory store")
            record = _decode(row[2], "memory store")
            _apply(record, state, now, fields)
            data, text = _encode(record)
            rows[task_id] = (data["state"], data["created_at"], text)
        return record

    def close(self) -> None:
        """Drop every record; later calls raise ``StoreError``. Closing twice does nothing."""
        with self._lock:
            self._rows = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- sqlite

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tasks ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " state TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " data TEXT NOT NULL)",
    # A rowid table (not WITHOUT ROWID): records of a few kB stay on one page.
    # The one index: transitions never change created_at, so they never touch it.
    "CREATE INDEX IF NOT EXISTS tasks_by_created ON tasks (created_at, id)",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_PUT = (
    "INSERT INTO tasks (id, state, created_at, updated_at, data) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at, data = excluded.data"
)
_GET = "SELECT data FROM tasks WHERE id = ?"
_LIST = "SELECT data FROM tasks ORDER BY created_at, id"
_LIST_STATE = "SELECT data FROM tasks WHERE state = ? ORDER BY created_at, id"
_DELETE = "DELETE FROM tasks WHERE id = ?"
_UPDATE = "UPDATE tasks SET state = ?, updated_at = ?, data = ? WHERE id = ?"
_SWAP = _UPDATE + " AND data = ?"
_SEEN_MAX = 4096  # records a SqliteStore remembers for compare-and-swap transitions
_UPDATE_CREATED = (
    "UPDATE tasks SET state = ?, updated_at = ?, data = ?, created_at = ? WHERE id = ?"
)


class SqliteStore:
    """A thread-safe, durable store in one SQLite file.

    The file is created with mode 0600 and kept in WAL mode with
    ``synchronous=NORMAL``: every committed change survives a crash of the
    process (a power loss may lose the last few). It is marked as a taskvisor
    store (``PRAGMA application_id``) with a schema version
    (``PRAGMA user_version``), so a file of another kind is never written to.

    One connection serves every thread, one call at a time. Several
    processes may open the same file: ``transition`` saves a record only if
    the stored one is still the record it was computed from, so it stays
    atomic across them.

    Args:
        path: the database file; created if missing.
        timeout: seconds to wait for another process's write lock.

    Raises:
        IncompatibleStore: when the file is not an SQLite database, is an
            SQLite database of another application, or has a schema version
            newer than this code supports; the message names the path.
        StoreError: when the file cannot be created or opened.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self._path = os.fspath(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        # id -> (JSON text, private record) of the records this store wrote
        # last, most recent last: the base of compare-and-swap transitions.
        self._seen: dict[str, tuple[str, TaskRecord]] = {}
        self._conn = self._open(timeout)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def __repr__(self) -> str:
        state = " closed" if self._conn is None else ""
        return f"<SqliteStore {self._path!r}{state}>"

    # ----------------------------------------------------------------- opening

    def _open(self, timeout: float) -> sqlite3.Connection:
        path = self._path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the store: {exc}") from exc
        else:
            try:
                os.fchmod(fd, 0o600)  # whatever the umask was
            finally:
                os.close(fd)
        try:
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from exc
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        try:
            fresh = self._inspect(conn)
        except sqlite3.OperationalError as exc:  # locked, unreadable: not a verdict on the file
            raise StoreError(f"{self._path}: cannot read the store: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # SQLITE_NOTADB and kin
            raise IncompatibleStore(
                f"{self._path}: not a taskvisor store: not an SQLite database ({exc})"
            ) from None
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self._path}: cannot use the WAL journal (got {mode!r})")
            conn.execute("PRAGMA synchronous = NORMAL")
            if fresh:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if self._inspect(conn):  # nobody set it up meanwhile
                        for statement in _SCHEMA:
                            conn.execute(statement)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot set up the store: {exc}") from exc

    def _inspect(self, conn: sqlite3.Connection) -> bool:
        """Check the file is a usable taskvisor store; return whether it is empty."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = sorted(
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        )
        if app_id == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise IncompatibleStore(
                    f"{self._path}: the store has schema version {version}, newer than "
                    f"this taskvisor supports (schema version {SCHEMA_VERSION}); "
                    f"upgrade taskvisor to open it"
                )
            if version < SCHEMA_VERSION:
                raise IncompatibleStore(
                    f"{self._path}: the store has unknown schema version {version} "
                    f"(this taskvisor supports schema version {SCHEMA_VERSION})"
                )
            if "tasks" not in tables:
                raise IncompatibleStore(f"{self._path}: the taskvisor store has no table 'tasks'")
            return False
        if app_id != 0:
            raise IncompatibleStore(
                f"{self._path}: not a taskvisor store: an SQLite database of another "
                f"application (application_id {app_id:#x}, taskvisor's is {APPLICATION_ID:#x})"
            )
        if tables or version != 0:
            found = ", ".join(tables) if tables else "none"
            raise IncompatibleStore(
                f"{self._path}: not a taskvisor store: an SQLite database without "
                f"taskvisor's application_id (user_version {version}, tables: {found})"
            )
        return True

    # ----------------------------------------------------------------- records

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self._path}: the store is closed")
        return self._conn

    def _failed(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"{self._path}: {type(exc).__name__}: {exc}")

    def _remember(self, task_id: str, text: str, record: TaskRecord) -> None:
        """Note ``record`` (private to the store) as stored under ``text``."""
        seen = self._seen
        seen.pop(task_id, None)
        seen[task_id] = (text, record)
        if len(seen) > _SEEN_MAX:
            del seen[next(iter(seen))]  # the least recently written

    def put(self, record: TaskRecord) -> None:
        """Insert ``record``, or replace the record with the same id, and commit.

        Raises:
            InvalidData: when the record cannot be stored (its ``output`` is
                not JSON-able, or a field has the wrong type).
            StoreError: when the store is closed or cannot write.
        """
        data, text, private = _checked(record)
        params = (data["id"], data["state"], data["created_at"], data["updated_at"], text)
        with self._lock:
            conn = self._connection()
            self._seen.pop(data["id"], None)
            try:
                conn.execute(_PUT, params)
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            self._remember(data["id"], text, private)

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the record of ``task_id``, or None when there is none.

        Raises:
            StoreError: when the store is closed or cannot read.
        """
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute(_GET, (task_id,)).fetchone()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
        return None if row is None else _decode(row[0], self._path)

    def list(self, *, state: TaskState | None = None) -> builtins.list[TaskRecord]:
        """Return every record (only those in ``state``, if given), oldest first.

        Raises:
            StoreError: when the store is closed or cannot read.
        """
        with self._lock:
            conn = self._connection()
            try:
                if state is None:
                    rows = conn.execute(_LIST).fetchall()
                else:
                    rows = conn.execute(_LIST_STATE, (state.value,)).fetchall()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
        return [_decode(row[0], self._path) for row in rows]

    def delete(self, task_id: str) -> bool:
        """Delete the record of ``task_id`` and commit; return whether there was one.

        Raises:
            StoreError: when the store is closed or cannot write.
        """
        with self._lock:
            conn = self._connection()
            self._seen.pop(task_id, None)
            try:
                return conn.execute(_DELETE, (task_id,)).rowcount > 0
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc

    def transition(
        self, task_id: str, state: TaskState, *, now: int | None = None, **changes: Any
    ) -> TaskRecord:
        """Atomically move a record to ``state``, apply ``changes`` and commit.

        No other writer (thread or process) can slip in between the read and
        the write: the new record is saved only if the stored one is still
        exactly the record it was computed from. When this store wrote the
        record last, that is one compare-and-swap ``UPDATE``; otherwise (or
        when the swap finds the record changed, or the move fails) the record
        is read and written under the database's write lock.

        Returns:
            A copy of the record as saved.

        Raises:
            InvalidData: when a change names no ``TaskRecord`` field (or
                ``id``), or has a value of the wrong type; nothing is saved.
            UnknownTask: when there is no record with ``task_id``.
            IllegalTransition: when the record's state may not move to
                ``state``; the stored record is left unchanged.
            StoreError: when the store is closed or cannot write.
        """
        fields = _structure_changes(changes)
        with self._lock:
            conn = self._connection()
            record = self._swap(conn, task_id, state, now, fields)
            if record is None:
                record = self._read_modify_write(conn, task_id, state, now, fields)
            return _clone_record(record)

    def _swap(
        self,
        conn: sqlite3.Connection,
        task_id: str,
        state: TaskState,
        now: int | None,
        fields: Mapping[str, Any],
    ) -> TaskRecord | None:
        """Move the record this store last wrote, if it is still the stored one.

        Returns None, having written nothing, when there is no such record or
        the stored one differs, and also when the move fails: the record it
        was computed from may be stale, so ``_read_modify_write`` decides
        against the stored record and reports the failure.
        """
        seen = self._seen.pop(task_id, None)
        if seen is None:
            return None
        old_text, record = seen  # private: changed in place, remembered only on success
        created = record.created_at
        try:
            _apply(record, state, now, fields)
            data, text = _encode(record)
        except (IllegalTransition, InvalidData):
            return None
        if data["created_at"] != created:
            return None
        try:
            params = (data["state"], data["updated_at"], text, task_id, old_text)
            swapped = conn.execute(_SWAP, params).rowcount
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        if swapped != 1:
            return None
        self._remember(task_id, text, record)
        return record

    def _read_modify_write(
        self,
        conn: sqlite3.Connection,
        task_id: str,
        state: TaskState,
        now: int | None,
        fields: Mapping[str, Any],
    ) -> TaskRecord:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(_GET, (task_id,)).fetchone()
                if row is None:
                    raise _unknown(task_id, self._path)
                record = _decode(row[0], self._path)
                created = record.created_at
                _apply(record, state, now, fields)
                data, text = _encode(record)
                if data["created_at"] == created:
                    conn.execute(_UPDATE, (data["state"], data["updated_at"], text, task_id))
                else:
                    conn.execute(
                        _UPDATE_CREATED,
                        (data["state"], data["updated_at"], text, data["created_at"], task_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        self._remember(task_id, text, record)
        return record

    def close(self) -> None:
        """Close the connection (checkpointing the WAL). Closing twice does nothing.

        Raises:
            StoreError: when SQLite fails to close the file.
        """
        with self._lock:
            conn, self._conn = self._conn, None
            self._seen.clear()
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:  # pragma: no cover - close rarely fails
                    raise self._failed(exc) from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
