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

Both encode a record the same way, through the one private cattrs
converter (``_convert``): the record's own fields (its *head*) as one JSON
text, and each of its runs as a JSON text of its own, keyed by the task id
and the run's attempt. Saving a record writes its head and only the runs
that changed since this store last saved it (usually the latest one), so
the cost of a save does not grow with the record's history. A record one
store accepts, the other accepts too, and both reject the same bad input
with the same ``InvalidData`` message.

What a store does with a record that cannot be stored as it is:

- an ``output`` that is not JSON (a set, an object, NaN) or whose JSON is
  longer than ``OUTPUT_MAX_BYTES`` is stored as None, and the record's
  ``error`` says why (``"output not stored: ..."``); the record's state is
  saved as it is, so a finished task is not run again;
- an error text longer than ``ERROR_TEXT_MAX`` characters is cut (the
  model cuts it too, ``bound_text``);
- any other field of the wrong type raises ``InvalidData`` naming it.

Beside the records, a store keeps a little JSON state per key
(``put_state`` / ``get_state``): a supervisor keeps its restart history
there (the intensity window and backoff counters), so a tree resumed after
a crash keeps its restart budget.

Ownership: a store is owned by one live tree at a time. ``acquire(owner)``
takes it (an OS file lock for ``SqliteStore``, held by the process for as
long as it lives, so a dead owner's store is taken over without any
action); another ``acquire`` while it is owned raises ``StoreLocked``
naming the owner; ``release()`` and ``close()`` give it back.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import attrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._args import finite_of
from ._convert import converter, from_data, to_data
from ._errors import (
    IllegalTransition,
    IncompatibleStore,
    InvalidData,
    StoreError,
    StoreLocked,
    UnknownTask,
    described,
    shown,
)
from ._model import (
    ERROR_TEXT_MAX,
    TaskRecord,
    TaskRun,
    TaskState,
    bound_text,
    now_ms,
    replace,
)

__all__ = [
    "APPLICATION_ID",
    "OUTPUT_MAX_BYTES",
    "SCHEMA_VERSION",
    "MemoryStore",
    "SqliteStore",
    "StoreOwner",
    "TaskStore",
]

#: ``PRAGMA application_id`` of a taskvisor SQLite store (the ASCII bytes "TVIS").
APPLICATION_ID = 0x54564953
#: The schema version this code writes and reads (``PRAGMA user_version``).
#: Version 1 (runs kept inside the record's JSON) is upgraded on open.
SCHEMA_VERSION = 2
#: The largest ``output`` a store keeps, in bytes of its (ASCII) JSON text: 1 MiB.
#: A larger output is stored as None, and the record's error says why.
OUTPUT_MAX_BYTES = 1 << 20

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class StoreOwner:
    """Who owns a store: a tree, in a process on a host, since a time.

    ``str()`` gives ``"tree 'app' (pid 1234 on host h) since 2026-01-01T00:00:00Z"``.
    """

    tree: str
    pid: int
    host: str
    #: Milliseconds since the epoch.
    since: int

    def __str__(self) -> str:
        when = datetime.datetime.fromtimestamp(self.since / 1000, datetime.UTC)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"tree {self.tree!r} (pid {self.pid} on host {self.host}) since {stamp}"


@runtime_checkable
class TaskStore(Protocol):
    """Where task records are kept: one ``TaskRecord`` per task id.

    Records handed in and out are copies: changing a record after ``put``,
    or changing one a store returned, never changes what the store holds.
    A store is a context manager that closes itself on exit.
    """

    def acquire(self, owner: str) -> StoreOwner | None:
        """Make the tree named ``owner`` the store's one owner, or fail at once.

        A tree calls this before it reads or writes any record and keeps the
        store until ``release`` or ``close``. Ownership is advisory: reads
        and writes work without it, and it only keeps a second tree off.

        Returns:
            The previous owner when it ended without releasing the store (its
            process died: its records may hold runs it left behind), else None.

        Raises:
            StoreLocked: when the store is owned (by another live process, or
                another store object or tree in this process); the message
                names the owner.
            InvalidData: when ``owner`` is not a non-empty string.
            StoreError: when the store is closed or cannot be locked.
        """
        ...

    def release(self) -> None:
        """Give up ownership, if this store holds it. Releasing twice does nothing."""
        ...

    def put(self, record: TaskRecord) -> None:
        """Insert ``record``, or replace the record with the same id.

        An ``output`` that is not JSON, or is larger than ``OUTPUT_MAX_BYTES``,
        is stored as None with the record's ``error`` saying why: this does
        not raise.

        Raises:
            InvalidData: when a field other than ``output`` has the wrong
                type, or the runs' attempts do not increase.
            StoreError: when the store is closed or cannot write (the
                message says why, e.g. "database is locked"); nothing is written.
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

    def put_state(self, key: str, data: Any) -> None:
        """Keep ``data`` (JSON-able) under ``key``, replacing what was there; None deletes it.

        For state that is not a task's record, such as a supervisor's restart
        history (keyed by the supervisor's path).

        Raises:
            InvalidData: when ``key`` is not a string, or ``data`` is not JSON
                or its JSON is longer than ``OUTPUT_MAX_BYTES``.
            StoreError: when the store is closed or cannot write.
        """
        ...

    def get_state(self, key: str) -> Any:
        """Return the data kept under ``key`` (a fresh copy), or None.

        Raises:
            StoreError: when the store is closed or cannot read.
        """
        ...

    def close(self) -> None:
        """Release ownership and the store's resources. Closing twice does nothing."""
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
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FIELDS: dict[str, Any] = {f.name: f.type for f in attrs.fields(attrs.resolve_types(TaskRecord))}
_HEAD_FIELDS = tuple(name for name in _FIELDS if name != "runs")

# Generated by cattrs from the one converter: the record without its runs,
# which are kept (and converted) one by one. The structure functions skip
# cattrs' detailed validation (it costs on every read); when they fail,
# ``from_data`` runs to name each problem.
_unstructure_head = make_dict_unstructure_fn(TaskRecord, converter, runs=override(omit=True))
_unstructure_run = converter.get_unstructure_hook(TaskRun)
_structure_head = make_dict_structure_fn(
    TaskRecord,
    converter,
    _cattrs_forbid_extra_keys=True,
    _cattrs_detailed_validation=False,
    runs=override(omit=True),
)
_structure_run = make_dict_structure_fn(
    TaskRun, converter, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=False
)


def _structured(cls: type[T], fast: Callable[[Any, Any], T], data: Any, where: str = "") -> T:
    """``from_data(cls, data)`` by the generated ``fast`` function when the data is good.

    Raises:
        InvalidData: naming each problem (found by ``from_data``).
    """
    try:
        if isinstance(data, dict):
            return fast(data, cls)
    except Exception:  # from_data below names the problem
        pass
    return from_data(cls, data, where=where)


def _bad(field: str, message: str) -> InvalidData:
    exc = InvalidData(f"{field}: {message}")
    exc.field = field
    return exc


def _run_key(run: TaskRun) -> int | None:
    """A fingerprint of a run's fields: a run whose fingerprint is unchanged is not rewritten.

    None when a field cannot be hashed (the run is then always encoded,
    which names the bad field).
    """
    try:
        return hash(
            (
                run.attempt,
                id(run.phase),  # a member of TaskPhase (an Enum's own hash is slow Python)
                run.started_at,
                run.finished_at,
                run.error,
                run.exit_code,
                run.pid,
                run.pgid,
                run.process_started,
                run.host,
            )
        )
    except (TypeError, AttributeError):
        return None


def _index_runs(runs: Any) -> builtins.list[tuple[int, int | None]]:
    """Return ``(attempt, fingerprint)`` of each run, checking they can be kept.

    The runs must be a list of ``TaskRun`` in increasing attempt order. One
    pass, a fraction of a microsecond per run: this is all a save costs per
    kept run that did not change.

    Raises:
        InvalidData: naming the run at fault.
    """
    out: builtins.list[tuple[int, int | None]] = []
    if type(runs) is list:
        last = 0
        for run in runs:
            if type(run) is not TaskRun:
                break
            attempt = run.attempt
            if type(attempt) is not int or not last < attempt <= _INT64_MAX:
                break
            last = attempt
            out.append((attempt, _run_key(run)))
        else:
            return out
    _check_runs(runs)  # names the problem
    raise InvalidData(f"runs: cannot be kept: {bound_text(repr(runs), 200)}")  # pragma: no cover


def _not_stored(output: Any) -> str | None:
    """Why ``output`` cannot be stored as it is, or None when it can."""
    try:
        text = _encode_json(to_data(output))
    except BaseException as exc:  # whatever the value raises, it is not stored
        why = described(exc, named=False)
        return bound_text(f"output not stored: cannot be encoded as JSON ({why})", 512)
    if len(text) > OUTPUT_MAX_BYTES:
        return (
            f"output not stored: its JSON is {len(text):,} bytes, "
            f"more than the limit of {OUTPUT_MAX_BYTES:,} bytes (OUTPUT_MAX_BYTES)"
        )
    return None


def _encode_head(record: TaskRecord, *, check: bool = True) -> tuple[dict[str, Any], str]:
    """Return the plain data of ``record`` without its runs, and its JSON text.

    An output that cannot be stored is replaced by None, and the data's
    ``error`` says why; an error text is cut to ``ERROR_TEXT_MAX``. With
    ``check`` (for a record from outside) the data is also structured back,
    which names any field of the wrong type.

    Raises:
        InvalidData: naming a field that cannot be stored.
    """
    if not isinstance(record, TaskRecord):
        raise InvalidData(f"expected a TaskRecord, got {type(record).__name__}")
    try:
        data: dict[str, Any] = _unstructure_head(record)
        unconverted = None
    except BaseException:  # the output's own code may raise anything, SystemExit included
        # Name the field at fault; an output is replaced, not refused.
        unconverted = _unconvertible(record)
        data = _unstructure_head(replace(record, output=None))
    error = data["error"]
    if unconverted is not None:
        why = bound_text(f"output not stored: cannot be converted ({unconverted})", 512)
        data["error"] = bound_text(why if error is None else f"{error}\n{why}")
    if isinstance(error, str) and len(error) > ERROR_TEXT_MAX:
        data["error"] = bound_text(error)
    for column in ("created_at", "updated_at"):
        value = data[column]
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            raise _bad(column, f"expected milliseconds within 64 bits, got {value!r}")
    try:
        text = _encode_json(data)
    except BaseException:  # an output's own code (a list subclass's __iter__) may raise anything
        text = None
    if text is None or len(text) > OUTPUT_MAX_BYTES:
        why = _not_stored(data["output"])
        if why is not None:
            data["output"] = None
            data["error"] = bound_text(why if error is None else f"{error}\n{why}")
        try:
            text = _encode_json(data)
        except BaseException as exc:
            for name, value in data.items():
                try:
                    _encode_json(value)
                except BaseException as field_exc:
                    why = described(field_exc, named=False)
                    raise _bad(name, f"cannot be stored as JSON ({why})") from None
            why = described(exc, named=False)
            raise InvalidData(f"record {record.id!r} cannot be stored as JSON ({why})") from None
    if check:  # what is stored must read back: names a field of the wrong type
        _structured(TaskRecord, _structure_head, data)
    return data, text


def _unconvertible(record: TaskRecord) -> str:
    """Why the ``output`` of ``record`` does not convert.

    Raises:
        InvalidData: naming another field that does not convert (each field
            is tried, so this one is named even when the output fails too).
    """
    why = None
    for name in _HEAD_FIELDS:
        try:
            converter.unstructure(getattr(record, name), _FIELDS[name])
        except BaseException as exc:
            if name != "output":
                raise _bad(name, f"cannot be converted ({described(exc)})") from None
            why = described(exc)
    if why is None:  # pragma: no cover - the record failed as a whole only
        raise InvalidData(f"record {record.id!r} cannot be converted")
    return why


def _encode_run(index: int, run: TaskRun) -> str:
    """Return the JSON text of ``run``, the ``index``-th run of its record.

    Raises:
        InvalidData: naming the run (``runs[2].phase: ...``) when it cannot be stored.
    """
    where = f"runs[{index}]"
    if not isinstance(run, TaskRun):
        raise _bad(where, f"expected a TaskRun, got {type(run).__name__}")
    try:
        data: dict[str, Any] = _unstructure_run(run)
        error = data["error"]
        if isinstance(error, str) and len(error) > ERROR_TEXT_MAX:
            data["error"] = bound_text(error)
        text = _encode_json(data)
    except InvalidData:
        raise
    except Exception as exc:
        raise _bad(where, f"cannot be stored ({exc})") from None
    _structured(TaskRun, _structure_run, data, where)
    return text


def _check_runs(runs: Any) -> builtins.list[int]:
    """Return the attempts of ``runs``, which must be TaskRuns in increasing attempt order.

    Raises:
        InvalidData: naming the run at fault.
    """
    if not isinstance(runs, list):
        raise _bad("runs", f"expected a list of TaskRun, got {type(runs).__name__}")
    attempts: builtins.list[int] = []
    for index, run in enumerate(runs):
        if not isinstance(run, TaskRun):
            raise _bad(f"runs[{index}]", f"expected a TaskRun, got {type(run).__name__}")
        attempt = run.attempt
        if isinstance(attempt, bool) or not isinstance(attempt, int) or not attempt >= 1:
            raise _bad(f"runs[{index}].attempt", f"expected an integer >= 1, got {attempt!r}")
        if attempt > _INT64_MAX:
            raise _bad(
                f"runs[{index}].attempt", f"expected an integer within 64 bits, got {attempt}"
            )
        if attempts and attempt <= attempts[-1]:
            raise _bad(
                f"runs[{index}].attempt",
                f"runs are kept oldest first, each attempt once: got attempt {attempt} "
                f"after attempt {attempts[-1]}",
            )
        attempts.append(attempt)
    return attempts


def _decode(head: str, runs: Iterable[str], where: str) -> TaskRecord:
    """Build a record from its stored head and run texts.

    Raises:
        StoreError: when a stored text is damaged.
    """
    try:
        record = _structured(TaskRecord, _structure_head, _decode_json(head))
        record.runs = [
            _structured(TaskRun, _structure_run, _decode_json(text), f"runs[{index}]")
            for index, text in enumerate(runs)
        ]
    except ValueError as exc:  # JSONDecodeError and InvalidData
        raise StoreError(
            f"{where}: a stored record is damaged: {bound_text(str(exc), 512)}"
        ) from exc
    return record


def _copy_output(value: Any) -> Any:
    """A deep copy of an output (tuples become lists, as JSON makes them)."""
    try:
        return _decode_json(_encode_json(value))  # plain JSON data: to_data leaves it as is
    except BaseException:  # anything else (the value's own code may raise anything)
        pass
    try:
        return _decode_json(_encode_json(to_data(value)))
    except BaseException:  # not JSON: the store replaces it on the way in
        return value


def _structure_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Check the field ``changes`` of a transition; return copies the caller does not share.

    Raises:
        InvalidData: naming a change that is no ``TaskRecord`` field, is ``id``,
            or has a value of the wrong type.
    """
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "id":
            raise _bad("id", "a record's id cannot change; put a record with the new id instead")
        if name not in _FIELDS:
            known = ", ".join(n for n in _FIELDS if n not in ("id", "state"))
            raise _bad(name, f"not a TaskRecord field (expected one of {known})")
        if name == "output":
            out[name] = _copy_output(value)
        else:
            out[name] = from_data(_FIELDS[name], to_data(value), where=name)
    return out


def _apply(
    record: TaskRecord, state: TaskState, now: int | None, changes: Mapping[str, Any]
) -> None:
    before = record.state
    if not record.transition(state, now=now):
        raise IllegalTransition(
            f"task {record.id!r}: cannot move from {before.value!r} to {state.value!r}"
        )
    for name, value in changes.items():  # through the model's own checks (attempts >= 0)
        setattr(record, name, value)


def _settle(record: TaskRecord, head: Mapping[str, Any]) -> None:
    """Make ``record`` what was stored: its output replaced, its error cut."""
    if head["output"] is None:
        object.__setattr__(record, "output", None)
    object.__setattr__(record, "error", head["error"])  # cut to ERROR_TEXT_MAX


def _unknown(task_id: str, where: str) -> UnknownTask:
    return UnknownTask(f"{where}: no task {shown(task_id)}")


def _key(value: object, what: str = "task_id") -> str:
    """A record's id (or a state's key) given to a store method: a str.

    Raises:
        InvalidData: naming ``what``, when it is not a str (as ``put_state`` does).
    """
    if not isinstance(value, str):
        raise InvalidData(f"{what}: expected a string, got {type(value).__name__}")
    return value


def _state(value: object) -> None:
    """Refuse a ``state`` that is not a ``TaskState`` (InvalidData, naming it)."""
    if not isinstance(value, TaskState):
        raise InvalidData(f"state: expected a TaskState, got {type(value).__name__}")


def _state_text(key: Any, data: Any) -> str | None:
    """The JSON text to keep ``data`` under ``key``; None to delete it.

    Raises:
        InvalidData: when ``key`` is not a string, or ``data`` cannot be kept.
    """
    if not isinstance(key, str):
        raise InvalidData(f"key: expected a string, got {type(key).__name__}")
    if data is None:
        return None
    try:
        text = _encode_json(to_data(data))
    except (TypeError, ValueError, RecursionError, InvalidData) as exc:
        raise InvalidData(
            bound_text(f"state {key!r}: cannot be encoded as JSON ({exc})", 500) or ""
        ) from None
    if len(text) > OUTPUT_MAX_BYTES:
        raise InvalidData(
            f"state {bound_text(key, 100)!r}: its JSON is {len(text):,} bytes, more than "
            f"the limit of {OUTPUT_MAX_BYTES:,} bytes (OUTPUT_MAX_BYTES)"
        )
    return text


def _check_owner(owner: Any) -> str:
    if not isinstance(owner, str) or not owner:
        raise InvalidData(
            f"owner: expected the owning tree's name (a non-empty string), got {shown(owner)}"
        )
    return bound_text(owner, 200) or owner


def _new_owner(owner: str) -> StoreOwner:
    return StoreOwner(tree=owner, pid=os.getpid(), host=socket.gethostname(), since=now_ms())


# --------------------------------------------------------------------------- memory


@attrs.define(slots=True)
class _Row:
    state: str
    created_at: int
    head: str
    #: attempt -> (fingerprint, JSON text), oldest first.
    runs: dict[int, tuple[int | None, str]]


class MemoryStore:
    """A thread-safe store that keeps records in memory, as JSON text.

    Nothing survives the process. Use it in tests and where durability does
    not matter; it checks and encodes records exactly like ``SqliteStore``,
    and it is owned by one tree at a time (within the process) likewise.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] | None = {}
        self._states: dict[str, str] = {}
        self._owner: StoreOwner | None = None

    def __repr__(self) -> str:
        state = "closed" if self._rows is None else f"{len(self._rows)} records"
        return f"<MemoryStore {state}>"

    def _open_rows(self) -> dict[str, _Row]:
        if self._rows is None:
            raise StoreError("memory store: the store is closed")
        return self._rows

    @property
    def owner(self) -> StoreOwner | None:
        """The tree that owns this store, or None."""
        return self._owner

    def acquire(self, owner: str) -> StoreOwner | None:
        """Make the tree named ``owner`` the store's one owner, or fail at once.

        Returns:
            None: an owner of a memory store cannot die without the store.

        Raises:
            StoreLocked: when the store is owned already; the message names the owner.
            InvalidData: when ``owner`` is not a non-empty string.
            StoreError: when the store is closed.
        """
        name = _check_owner(owner)
        with self._lock:
            self._open_rows()
            if self._owner is not None:
                raise StoreLocked(f"memory store is owned by {self._owner}; stop that tree first")
            self._owner = _new_owner(name)
        return None

    def release(self) -> None:
        """Give up ownership, if the store is owned. Releasing twice does nothing."""
        with self._lock:
            self._owner = None

    def put(self, record: TaskRecord) -> None:
        """Insert ``record``, or replace the record with the same id.

        Only the runs that changed since the last save are encoded.

        Raises:
            InvalidData: when a field other than ``output`` has the wrong
                type, or the runs' attempts do not increase.
            StoreError: when the store is closed.
        """
        data, head = _encode_head(record)
        runs = record.runs
        index_ = _index_runs(runs)
        task_id = data["id"]
        with self._lock:
            rows = self._open_rows()
            old = rows.get(task_id)
            known = {} if old is None else old.runs
            kept: dict[int, tuple[int | None, str]] = {}
            for index, (attempt, key) in enumerate(index_):
                seen = known.get(attempt)
                if key is not None and seen is not None and seen[0] == key:
                    kept[attempt] = seen
                else:
                    kept[attempt] = (key, _encode_run(index, runs[index]))
            rows[task_id] = _Row(data["state"], data["created_at"], head, kept)

    def _record(self, task_id: str, row: _Row) -> TaskRecord:
        return _decode(
            row.head, [text for _, text in row.runs.values()], f"memory store: record {task_id!r}"
        )

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the record of ``task_id``, or None when there is none.

        Raises:
            StoreError: when the store is closed, or the record is damaged.
        """
        _key(task_id)
        with self._lock:
            row = self._open_rows().get(task_id)
        return None if row is None else self._record(task_id, row)

    def list(self, *, state: TaskState | None = None) -> builtins.list[TaskRecord]:
        """Return every record (only those in ``state``, if given), oldest first.

        Raises:
            StoreError: when the store is closed.
        """
        if state is not None:
            _state(state)
        with self._lock:
            rows = [
                (row.created_at, task_id, row)
                for task_id, row in self._open_rows().items()
                if state is None or row.state == state.value
            ]
        rows.sort(key=lambda item: (item[0], item[1]))
        return [self._record(task_id, row) for _, task_id, row in rows]

    def delete(self, task_id: str) -> bool:
        """Delete the record of ``task_id``; return whether there was one.

        Raises:
            StoreError: when the store is closed.
        """
        _key(task_id)
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
        _key(task_id)
        _state(state)
        fields = _structure_changes(changes)
        with self._lock:
            rows = self._open_rows()
            row = rows.get(task_id)
            if row is None:
                raise _unknown(task_id, "memory store")
            record = self._record(task_id, row)
            _apply(record, state, now, fields)
            data, head = _encode_head(record, check=False)  # read back, changes checked
            runs = row.runs
            if "runs" in fields:
                attempts = _check_runs(record.runs)
                runs = {
                    attempt: (_run_key(run), _encode_run(index, run))
                    for index, (attempt, run) in enumerate(zip(attempts, record.runs, strict=True))
                }
            rows[task_id] = _Row(data["state"], data["created_at"], head, runs)
        _settle(record, data)
        return record

    def put_state(self, key: str, data: Any) -> None:
        """Keep ``data`` (JSON-able) under ``key``, replacing what was there; None deletes it.

        Raises:
            InvalidData: when ``key`` is not a string, or ``data`` is not JSON
                or its JSON is longer than ``OUTPUT_MAX_BYTES``.
            StoreError: when the store is closed.
        """
        text = _state_text(key, data)
        with self._lock:
            self._open_rows()
            if text is None:
                self._states.pop(key, None)
            else:
                self._states[key] = text

    def get_state(self, key: str) -> Any:
        """Return the data kept under ``key`` (a fresh copy), or None.

        Raises:
            StoreError: when the store is closed.
        """
        _key(key, "key")
        with self._lock:
            self._open_rows()
            text = self._states.get(key)
        return None if text is None else _decode_json(text)

    def close(self) -> None:
        """Release ownership and drop every record; later calls raise ``StoreError``.

        Closing twice does nothing.
        """
        with self._lock:
            self._rows = None
            self._states = {}
            self._owner = None

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
    # A record's head. `writer` names the store object that wrote it last
    # (random, per object): a store that finds its own name there knows the
    # runs it remembers writing are the stored ones.
    "CREATE TABLE IF NOT EXISTS tasks ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " state TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " data TEXT NOT NULL,"
    " writer TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS tasks_by_created ON tasks (created_at, id)",
    # One row per kept run (a rowid table: a run with a 4 KiB error is a big row).
    "CREATE TABLE IF NOT EXISTS runs ("
    " task_id TEXT NOT NULL,"
    " attempt INTEGER NOT NULL,"
    " data TEXT NOT NULL,"
    " PRIMARY KEY (task_id, attempt))",
    # State that is not a record: a supervisor's restart history, say.
    "CREATE TABLE IF NOT EXISTS states (key TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL)",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_UPSERT = (
    "INSERT INTO tasks (id, state, created_at, updated_at, data, writer)"
    " VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at,"
    " data = excluded.data, writer = excluded.writer"
)
# The updates leave created_at (and so the index on it) alone unless it changed:
# setting an indexed column, even to its value, rewrites the index entry.
_UPDATE_MINE = "UPDATE tasks SET state = ?, updated_at = ?, data = ? WHERE id = ? AND writer = ?"
_UPDATE_MINE_CREATED = (
    "UPDATE tasks SET state = ?, updated_at = ?, data = ?, created_at = ?"
    " WHERE id = ? AND writer = ?"
)
_UPDATE = "UPDATE tasks SET state = ?, updated_at = ?, data = ?, writer = ? WHERE id = ?"
_UPDATE_CREATED = (
    "UPDATE tasks SET state = ?, updated_at = ?, data = ?, writer = ?, created_at = ? WHERE id = ?"
)
_PUT_RUN = "INSERT OR REPLACE INTO runs (task_id, attempt, data) VALUES (?, ?, ?)"
_DROP_RUN = "DELETE FROM runs WHERE task_id = ? AND attempt = ?"
_DROP_RUNS = "DELETE FROM runs WHERE task_id = ?"
_SELECT = "SELECT t.id, t.data, r.data FROM tasks AS t LEFT JOIN runs AS r ON r.task_id = t.id"
_GET = _SELECT + " WHERE t.id = ? ORDER BY r.attempt"
_LIST = _SELECT + " ORDER BY t.created_at, t.id, r.attempt"
_LIST_STATE = _SELECT + " WHERE t.state = ? ORDER BY t.created_at, t.id, r.attempt"
_DELETE = "DELETE FROM tasks WHERE id = ?"
_MEMO_MAX = 4096  # records whose stored runs a SqliteStore remembers


def _records(rows: Iterable[tuple[str, str, str | None]], where: str) -> builtins.list[TaskRecord]:
    """Group joined (id, head, run) rows, ordered by record then attempt, into records."""
    out: builtins.list[TaskRecord] = []
    current: str | None = None
    head = ""
    runs: builtins.list[str] = []
    for task_id, data, run in rows:
        if task_id != current:
            if current is not None:
                out.append(_decode(head, runs, f"{where}: record {current!r}"))
            current, head, runs = task_id, data, []
        if run is not None:
            runs.append(run)
    if current is not None:
        out.append(_decode(head, runs, f"{where}: record {current!r}"))
    return out


#: The longest ``SqliteStore(timeout)``: SQLite's busy timeout is a 32-bit count of ms.
SQLITE_TIMEOUT_MAX = 2_147_483.0


class SqliteStore:
    """A thread-safe, durable store in one SQLite file.

    The file is created with mode 0600 and kept in WAL mode with
    ``synchronous=NORMAL``: every committed change survives a crash of the
    process (a power loss may lose the last few). It is marked as a taskvisor
    store (``PRAGMA application_id``) with a schema version
    (``PRAGMA user_version``), so a file of another kind is never written to.

    One connection serves every thread, one call at a time. Several
    processes may open the same file; every write is one transaction.

    Saving a record writes its head and only the runs that changed since
    this store object last saved that record (it remembers a fingerprint of
    each run it wrote, for the last 4096 records it saved, and checks that
    it was the last writer of the record; otherwise it rewrites the runs).

    Ownership (``acquire``) is an exclusive ``flock`` on the file beside the
    database, ``<path>.lock`` (``path`` with its symbolic links resolved, so
    that every name of the file finds the same lock), which holds the
    owner's name, pid, host and since-when as JSON. The OS drops the lock
    when the owning process ends, however it ends. The lock's descriptor is
    not inherited by programs the process runs (close-on-exec); a child
    forked without exec would share it. A database file with several hard
    links cannot be owned (``StoreError``): its names would find different
    locks, and SQLite itself keeps a journal per name.

    Args:
        path: the database file; created if missing.
        timeout: seconds to wait for another connection's write lock before a
            write fails with ``StoreError`` ("database is locked").

    Raises:
        IncompatibleStore: when the file is not an SQLite database, is an
            SQLite database of another application, or has a schema version
            newer than this code supports; the message names the path.
        StoreError: when the file cannot be created or opened.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
            raise TypeError(f"SqliteStore(path): expected a str or a Path, got {shown(path)}")
        if "\0" in os.fspath(path):
            raise InvalidData(f"SqliteStore(path): a path holds no NUL byte, got {shown(path)}")
        # SQLite counts its busy timeout in milliseconds, in a 32-bit int.
        timeout = finite_of(timeout, "SqliteStore(timeout)", low=0.0, high=SQLITE_TIMEOUT_MAX)
        self._path = os.fspath(path)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._writer = os.urandom(8).hex()
        # id -> (created_at, {attempt: fingerprint of the run}) of the records this
        # store wrote last, most recent last.
        self._memo: collections.OrderedDict[str, tuple[int, dict[int, int | None]]] = (
            collections.OrderedDict()
        )
        self._owner_fd: int | None = None
        self._owner: StoreOwner | None = None
        self._conn = self._open(timeout)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def lock_path(self) -> str:
        """The file whose lock is the store's ownership: ``<path>.lock``, ``path``
        with its symbolic links resolved."""
        return os.path.realpath(self._path) + ".lock"

    @property
    def owner(self) -> StoreOwner | None:
        """The tree that owns this store through this store object, or None."""
        return self._owner

    def __repr__(self) -> str:
        state = " closed" if self._conn is None else ""
        return f"<SqliteStore {self._path!r}{state}>"

    # ----------------------------------------------------------------- opening

    def _open(self, timeout: float) -> sqlite3.Connection:
        path = self._path
        if path == ":memory:":
            raise StoreError(
                f"{shown(path)}: expected a database file path (for a store in memory, "
                "use MemoryStore)"
            )
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
                # SQLite would put its journal beside it (/dev/null-journal).
                raise StoreError(f"{shown(path)}: expected a database file, not a device")
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
            version = self._inspect(conn)
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
            if version != SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    version = self._inspect(conn)  # somebody may have done it meanwhile
                    if version == 0:
                        for statement in _SCHEMA:
                            conn.execute(statement)
                    elif version == 1:
                        self._upgrade_from_1(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot set up the store: {exc}") from exc

    def _upgrade_from_1(self, conn: sqlite3.Connection) -> None:
        """Move the runs kept inside each record's JSON (schema 1) to the runs table."""
        conn.execute("ALTER TABLE tasks ADD COLUMN writer TEXT NOT NULL DEFAULT ''")
        for statement in _SCHEMA:
            conn.execute(statement)
        for task_id, text in conn.execute("SELECT id, data FROM tasks").fetchall():
            try:
                data = _decode_json(text)
                runs = data.pop("runs")
                by_attempt = {run["attempt"]: _encode_json(run) for run in runs}
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # damaged: left as it is, reading it says so
            for attempt in sorted(by_attempt):
                conn.execute(_PUT_RUN, (task_id, attempt, by_attempt[attempt]))
            conn.execute("UPDATE tasks SET data = ? WHERE id = ?", (_encode_json(data), task_id))

    def _inspect(self, conn: sqlite3.Connection) -> int:
        """Check the file is a usable taskvisor store; return its schema version (0: empty)."""
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
            if version < 1:
                raise IncompatibleStore(
                    f"{self._path}: the store has unknown schema version {version} "
                    f"(this taskvisor supports schema version {SCHEMA_VERSION})"
                )
            if "tasks" not in tables:
                raise IncompatibleStore(f"{self._path}: the taskvisor store has no table 'tasks'")
            for table in ("runs", "states"):
                if version == SCHEMA_VERSION and table not in tables:
                    raise IncompatibleStore(
                        f"{self._path}: the taskvisor store has no table {table!r}"
                    )
            return int(version)
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
        return 0

    # ----------------------------------------------------------------- ownership

    def acquire(self, owner: str) -> StoreOwner | None:
        """Make the tree named ``owner`` the store's one owner, or fail at once.

        Takes an exclusive, non-blocking ``flock`` on ``<path>.lock`` and
        writes the owner's description into it. Never waits.

        Returns:
            The previous owner when its process ended without releasing the
            store (found in the lock file), else None.

        Raises:
            StoreLocked: when another process, or another store object (or
                another ``acquire`` on this one) in this process, owns the
                store; the message names the owner.
            InvalidData: when ``owner`` is not a non-empty string.
            StoreError: when the store is closed, the lock file cannot be
                used, or the database file has several hard links.
        """
        name = _check_owner(owner)
        with self._lock:
            self._connection()
            self._check_one_name()
            if self._owner is not None:
                raise StoreLocked(
                    f"store {self._path} is owned by {self._owner} (this store object); "
                    f"stop that tree first"
                )
            path = self.lock_path
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreError(f"{path}: cannot open the store's lock file: {exc}") from exc
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise StoreError(f"{path}: cannot lock the store: {exc}") from exc
                    holder = _read_owner(fd)
                    who = "another live process" if holder is None else str(holder)
                    raise StoreLocked(
                        f"store {self._path} is owned by {who}; stop that tree first, "
                        f"or use another store file"
                    ) from None
                previous = _read_owner(fd)
                me = _new_owner(name)
                text = _encode_json(attrs.asdict(me)).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, text, 0)
            except BaseException:
                os.close(fd)  # drops the lock too, if it was taken
                raise
            self._owner_fd, self._owner = fd, me
        return previous

    def _check_one_name(self) -> None:
        """Refuse to own a database file that has more than one hard link."""
        try:
            links = os.stat(self._path).st_nlink
        except OSError as exc:
            raise StoreError(f"{self._path}: cannot look at the database file: {exc}") from exc
        if links > 1:
            raise StoreError(
                f"store {self._path} has {links} hard links: a tree on another of its names "
                f"would not see this one's lock (and SQLite keeps a journal per name); "
                f"use a file with one name, and symbolic links to it if needed"
            )

    def release(self) -> None:
        """Give up ownership, if this store object holds it. Releasing twice does nothing."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        fd, self._owner_fd, self._owner = self._owner_fd, None, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)  # a clean release leaves no owner behind
            finally:
                os.close(fd)

    # ----------------------------------------------------------------- records

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self._path}: the store is closed")
        return self._conn

    def _failed(self, exc: sqlite3.Error, action: str) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", None)
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc):
            return StoreError(
                f"{self._path}: cannot {action}: database is locked (another connection "
                f"held it longer than the store's timeout of {self._timeout:g} s); "
                f"nothing was written"
            )
        return StoreError(f"{self._path}: cannot {action}: {type(exc).__name__}: {exc}")

    def put(self, record: TaskRecord) -> None:
        """Insert ``record``, or replace the record with the same id, and commit.

        Writes the record's head and the runs that changed since this store
        last saved it (usually only the latest), deleting runs the record no
        longer keeps.

        Raises:
            InvalidData: when a field other than ``output`` has the wrong
                type, or the runs' attempts do not increase.
            StoreError: when the store is closed or cannot write (for
                "database is locked" when another connection holds the write
                lock longer than ``timeout``); nothing is written then.
        """
        data, head = _encode_head(record)
        runs = record.runs
        index_ = _index_runs(runs)
        fingerprints = dict(index_)
        task_id = data["id"]
        with self._lock:
            conn = self._connection()
            remembered = self._memo.pop(task_id, None)
            created = data["created_at"]
            changed: builtins.list[tuple[str, int, str]] = []
            if remembered is not None:
                memo = remembered[1]
                for index, (attempt, key) in enumerate(index_):
                    if key is None or memo.get(attempt) != key:
                        changed.append((task_id, attempt, _encode_run(index, runs[index])))
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    columns = (data["state"], data["updated_at"], head)
                    mine = False
                    if remembered is not None and remembered[0] == created:
                        params: tuple[Any, ...] = (*columns, task_id, self._writer)
                        mine = conn.execute(_UPDATE_MINE, params).rowcount == 1
                    elif remembered is not None:
                        params = (*columns, created, task_id, self._writer)
                        mine = conn.execute(_UPDATE_MINE_CREATED, params).rowcount == 1
                    if mine:
                        assert remembered is not None
                        conn.executemany(_PUT_RUN, changed)
                        gone = [(task_id, a) for a in remembered[1].keys() - fingerprints.keys()]
                        if gone:
                            conn.executemany(_DROP_RUN, gone)
                    else:
                        conn.execute(
                            _UPSERT,
                            (
                                task_id,
                                data["state"],
                                created,
                                data["updated_at"],
                                head,
                                self._writer,
                            ),
                        )
                        conn.execute(_DROP_RUNS, (task_id,))
                        conn.executemany(
                            _PUT_RUN,
                            [
                                (task_id, attempt, _encode_run(index, runs[index]))
                                for index, (attempt, _) in enumerate(index_)
                            ],
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._failed(exc, "write") from exc
            self._remember(task_id, created, fingerprints)

    def _remember(self, task_id: str, created: int, runs: dict[int, int | None]) -> None:
        memo = self._memo
        memo[task_id] = (created, runs)
        if len(memo) > _MEMO_MAX:
            memo.popitem(last=False)  # the least recently written

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the record of ``task_id``, or None when there is none.

        Raises:
            StoreError: when the store is closed, cannot read, or the record is damaged.
        """
        _key(task_id)
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(_GET, (task_id,)).fetchall()
            except sqlite3.Error as exc:
                raise self._failed(exc, "read") from exc
        found = _records(rows, self._path)
        return found[0] if found else None

    def list(self, *, state: TaskState | None = None) -> builtins.list[TaskRecord]:
        """Return every record (only those in ``state``, if given), oldest first.

        Raises:
            StoreError: when the store is closed, cannot read, or a record is damaged.
        """
        if state is not None:
            _state(state)
        with self._lock:
            conn = self._connection()
            try:
                if state is None:
                    rows = conn.execute(_LIST).fetchall()
                else:
                    rows = conn.execute(_LIST_STATE, (state.value,)).fetchall()
            except sqlite3.Error as exc:
                raise self._failed(exc, "read") from exc
        return _records(rows, self._path)

    def delete(self, task_id: str) -> bool:
        """Delete the record of ``task_id`` and commit; return whether there was one.

        Raises:
            StoreError: when the store is closed or cannot write.
        """
        _key(task_id)
        with self._lock:
            conn = self._connection()
            self._memo.pop(task_id, None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(_DROP_RUNS, (task_id,))
                    found = conn.execute(_DELETE, (task_id,)).rowcount > 0
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._failed(exc, "write") from exc
            return found

    def transition(
        self, task_id: str, state: TaskState, *, now: int | None = None, **changes: Any
    ) -> TaskRecord:
        """Atomically move a record to ``state``, apply ``changes`` and commit.

        The record is read and written under the database's write lock, so
        no other writer (thread or process) can slip in between. Its runs are
        rewritten only when ``runs`` is among the changes.

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
        _key(task_id)
        _state(state)
        fields = _structure_changes(changes)
        with self._lock:
            conn = self._connection()
            self._memo.pop(task_id, None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    found = _records(conn.execute(_GET, (task_id,)).fetchall(), self._path)
                    if not found:
                        raise _unknown(task_id, self._path)
                    record = found[0]
                    created = record.created_at
                    _apply(record, state, now, fields)
                    data, head = _encode_head(record, check=False)  # read back, changes checked
                    attempts = _check_runs(record.runs)
                    columns = (data["state"], data["updated_at"], head, self._writer)
                    if data["created_at"] == created:
                        conn.execute(_UPDATE, (*columns, task_id))
                    else:
                        conn.execute(_UPDATE_CREATED, (*columns, data["created_at"], task_id))
                    if "runs" in fields:
                        conn.execute(_DROP_RUNS, (task_id,))
                        conn.executemany(
                            _PUT_RUN,
                            [
                                (task_id, attempt, _encode_run(index, run))
                                for index, (attempt, run) in enumerate(
                                    zip(attempts, record.runs, strict=True)
                                )
                            ],
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._failed(exc, "write") from exc
            self._remember(
                task_id,
                data["created_at"],
                {run.attempt: _run_key(run) for run in record.runs},
            )
        _settle(record, data)
        return record

    def put_state(self, key: str, data: Any) -> None:
        """Keep ``data`` (JSON-able) under ``key``, replacing what was there, and commit.

        None deletes what is kept under ``key``.

        Raises:
            InvalidData: when ``key`` is not a string, or ``data`` is not JSON
                or its JSON is longer than ``OUTPUT_MAX_BYTES``.
            StoreError: when the store is closed or cannot write.
        """
        text = _state_text(key, data)
        with self._lock:
            conn = self._connection()
            try:
                if text is None:
                    conn.execute("DELETE FROM states WHERE key = ?", (key,))
                else:
                    conn.execute(
                        "INSERT INTO states (key, data) VALUES (?, ?)"
                        " ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                        (key, text),
                    )
            except sqlite3.Error as exc:
                raise self._failed(exc, "write") from exc

    def get_state(self, key: str) -> Any:
        """Return the data kept under ``key`` (a fresh copy), or None.

        Raises:
            StoreError: when the store is closed, cannot read, or the data is damaged.
        """
        _key(key, "key")
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute("SELECT data FROM states WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                raise self._failed(exc, "read") from exc
        if row is None:
            return None
        try:
            return _decode_json(row[0])
        except ValueError as exc:
            raise StoreError(f"{self._path}: the state {key!r} is damaged: {exc}") from exc

    def close(self) -> None:
        """Release ownership and close the connection (checkpointing the WAL).

        Closing twice does nothing.

        Raises:
            StoreError: when SQLite fails to close the file.
        """
        with self._lock:
            self._release()
            conn, self._conn = self._conn, None
            self._memo.clear()
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:  # pragma: no cover - close rarely fails
                    raise self._failed(exc, "close") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_owner(fd: int) -> StoreOwner | None:
    """The owner described in a lock file, or None when it holds none (or garbage)."""
    try:
        text = os.pread(fd, 4096, 0)
        if not text:
            return None
        data = _decode_json(text.decode())
        return StoreOwner(
            tree=str(data["tree"]),
            pid=int(data["pid"]),
            host=str(data["host"]),
            since=int(data["since"]),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
