"""The task model: specs, tasks, runs and records, as attrs classes.

A ``Task`` has three sections, as in resource-oriented APIs: ``metadata``
(identity and versioning), ``spec`` (desired state) and ``status`` (observed
state). Each attempt at running a task is a ``TaskRun``; the persisted
snapshot of a task's history is a ``TaskRecord``.

The legal moves of a task, of its record and of a run all come from one
table, ``_NEXT``: a task is started from ``PENDING`` or after any ended
attempt (a restart), finished only while ``RUNNING`` (or cancelled while
still ``PENDING``), and never started twice at once.

Timestamps are integers, milliseconds since the epoch; every method that
stamps time takes ``now`` so callers (and tests) control the clock.
"""

from __future__ import annotations

import enum
import inspect
import re
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NewType, TypeAlias, TypeVar

import attrs

from ._errors import IllegalTransition, InvalidData, InvalidSpec, shown

__all__ = [
    "KINDS",
    "MAX_SECONDS",
    "OUTPUT_BACKUPS",
    "OUTPUT_LINE_MAX",
    "OUTPUT_MAX_BYTES_DEFAULT",
    "STOP_SIGNALS",
    "CustomKind",
    "ObjectMeta",
    "Restart",
    "RestartName",
    "Shutdown",
    "SignalName",
    "Task",
    "TaskKind",
    "TaskPhase",
    "TaskRecord",
    "TaskRun",
    "TaskSpec",
    "TaskState",
    "TaskStatus",
    "now_ms",
]

#: Task kinds that ship with taskvisor. Executors for other kinds may be registered.
KINDS: frozenset[str] = frozenset({"call", "async", "subprocess"})

Shutdown: TypeAlias = float | Literal["brutal"]

#: The built-in task kinds, as a type: ``TaskSpec(kind="cal")`` is a type error.
TaskKind: TypeAlias = Literal["call", "async", "subprocess"]

#: A kind served by an executor you register yourself: ``kind=CustomKind("ray")``
#: type-checks where a bare string outside ``TaskKind`` does not. At run time
#: it is the string itself.
CustomKind = NewType("CustomKind", str)

#: The restart types as strings (``Restart`` members are accepted too).
RestartName: TypeAlias = Literal["permanent", "transient", "temporary"]

#: The signal names ``stop_signal`` accepts (with or without ``SIG``), as
#: supervisord's ``stopsignal`` does.
SignalName: TypeAlias = Literal[
    "TERM",
    "INT",
    "HUP",
    "QUIT",
    "USR1",
    "USR2",
    "KILL",
    "SIGTERM",
    "SIGINT",
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGKILL",
]

#: The signals a subprocess child may be stopped with.
STOP_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGKILL,
)

#: Default size, in bytes, at which a child's output file is rotated (10 MiB).
OUTPUT_MAX_BYTES_DEFAULT = 10 * 1024 * 1024
#: Default number of rotated output files kept (``out.log.1`` .. ``out.log.3``).
OUTPUT_BACKUPS = 3
#: The most rotated output files a task may keep (each rotation renames them all).
OUTPUT_BACKUPS_MAX = 1000
#: The longest line of child output, in bytes, logged whole by ``"prefix"``;
#: a longer line is cut there, with a marker, and the rest of it dropped.
OUTPUT_LINE_MAX = 64 * 1024

#: The output modes that are not file paths.
_OUTPUT_MODES = ("inherit", "prefix", "null")


_T = TypeVar("_T")
_COPIERS: dict[type, Callable[[Any, dict[str, Any]], Any]] = {}


def replace(inst: _T, **changes: Any) -> _T:
    """Copy an attrs instance with ``changes``, skipping validators and converters.

    For values the model itself derived from already valid ones, on hot
    paths (a transition, a copy for an event); anything from outside goes
    through the constructor.
    """
    copier = _COPIERS.get(type(inst))
    if copier is None:
        copier = _COPIERS[type(inst)] = _make_copier(type(inst))
    new: _T = copier(inst, changes)
    return new


def _make_copier(cls: type) -> Callable[[Any, dict[str, Any]], Any]:
    """Build a field-by-field copy function for one attrs class (as attrs builds __init__)."""
    names = [a.name for a in attrs.fields(cls)]
    body = "".join(
        f"    _set(new, {n!r}, changes[{n!r}] if {n!r} in changes else inst.{n})\n" for n in names
    )
    return _compile_copy(cls, "inst, changes", body)


def _make_updater(cls: type, changed: tuple[str, ...]) -> Callable[..., Any]:
    """Build ``update(inst, *values)``: a copy of ``inst`` with the fields ``changed`` set
    to ``values``, in that order, skipping validators and converters.

    ``replace`` for the few copies a restart makes (a transition's status and
    metadata, a fresh run), with no dictionary of changes to build and read.
    """
    names = [a.name for a in attrs.fields(cls)]
    unknown = set(changed) - set(names)
    if unknown:
        raise TypeError(f"{cls.__qualname__} has no field(s) {sorted(unknown)}")
    body = "".join(
        f"    _set(new, {n!r}, {'value_' + n if n in changed else 'inst.' + n})\n" for n in names
    )
    return _compile_copy(cls, ", ".join(["inst", *(f"value_{n}" for n in changed)]), body)


def _compile_copy(cls: type, params: str, body: str) -> Callable[..., Any]:
    source = f"def copy({params}):\n    new = _new(cls)\n{body}    return new\n"
    scope: dict[str, Any] = {"_new": object.__new__, "_set": object.__setattr__, "cls": cls}
    exec(compile(source, f"<taskvisor copy {cls.__qualname__}>", "exec"), scope)
    copier: Callable[..., Any] = scope["copy"]
    return copier


def now_ms() -> int:
    """Return the wall-clock time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


#: Stamps are kept as SQLite INTEGERs: 64-bit.
_STAMP_LIMIT = 2**63


def stamp_ms(now: int | None) -> int:
    """Return ``now``, or the wall-clock time when it is None.

    Raises:
        InvalidData: when ``now`` is not an integer (milliseconds since the
            epoch) that fits in 64 bits.
    """
    if type(now) is int and -_STAMP_LIMIT <= now < _STAMP_LIMIT:  # the common case first
        return now
    if now is None:
        return now_ms()
    if isinstance(now, bool) or not isinstance(now, int):
        raise InvalidData(f"now: expected milliseconds since the epoch (an int), got {shown(now)}")
    if not -_STAMP_LIMIT <= now < _STAMP_LIMIT:
        raise InvalidData(
            f"now: expected milliseconds since the epoch in a 64-bit int, got {shown(now)}"
        )
    return now


#: The longest error text a run, a status or a record keeps, in characters.
#: A longer text keeps its head and its tail around a marker saying how many
#: characters were cut (``bound_text``), so a 1 MB traceback in a crash loop
#: costs every save 4 KiB, not 1 MB.
ERROR_TEXT_MAX = 4096


def bound_text(text: str | None, limit: int = ERROR_TEXT_MAX) -> str | None:
    """Return ``text`` cut to at most ``limit`` characters (None stays None).

    A longer text keeps its first and last characters (about half the limit
    each: a traceback's head says where, its tail says what) around a marker
    ``"\n… N characters cut …\n"``. A value that is not a string is returned
    as it is, for the type checks that follow to name it.
    """
    if text is None or not isinstance(text, str) or len(text) <= limit:
        return text
    widest = f"\n… {len(text):,} characters cut …\n"
    keep = max(0, limit - len(widest))
    marker = f"\n… {len(text) - keep:,} characters cut …\n"
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head) :]


def _optional_count(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise _fail(attribute.name, "expected an integer >= 0 or None", value, InvalidData)


def _optional_id(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise _fail(
            attribute.name, "expected a process id (an integer >= 1) or None", value, InvalidData
        )


class Restart(enum.Enum):
    """When a supervisor restarts a child that ended (OTP restart types)."""

    PERMANENT = "permanent"
    """Always restarted, whether it ended normally or not."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal end: a failure or a timeout."""
    TEMPORARY = "temporary"
    """Never restarted."""


_PENDING, _RUNNING = "pending", "running"
_TERMINAL = ("succeeded", "failed", "timeout", "cancelled", "exhausted")
# The one legal-transition table shared by TaskPhase and TaskState.
_NEXT: dict[str, frozenset[str]] = {
    _PENDING: frozenset({_RUNNING, "cancelled"}),
    _RUNNING: frozenset(_TERMINAL),
    **{end: frozenset({_RUNNING}) for end in _TERMINAL},
}


class TaskPhase(enum.Enum):
    """Where a task, or one attempt of it, stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    EXHAUSTED = "exhausted"

    @property
    def is_terminal(self) -> bool:
        """Whether this phase ends an attempt."""
        return self._value_ in _TERMINAL

    @property
    def is_abnormal(self) -> bool:
        """Whether this phase is an abnormal end (restarts a TRANSIENT child)."""
        return self in (TaskPhase.FAILED, TaskPhase.TIMEOUT, TaskPhase.EXHAUSTED)

    def can_transition_to(self, other: TaskPhase) -> bool:
        """Whether the task model allows moving from this phase to ``other``."""
        return other._value_ in _NEXT[self._value_]


class TaskState(enum.Enum):
    """The lifecycle state stored in a ``TaskRecord``; mirrors ``TaskPhase``."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    EXHAUSTED = "exhausted"

    @property
    def is_terminal(self) -> bool:
        """Whether a record in this state has finished its latest attempt."""
        return self._value_ in _TERMINAL

    def can_transition_to(self, other: TaskState) -> bool:
        """Whether a record may move from this state to ``other``."""
        return other._value_ in _NEXT[self._value_]

    @classmethod
    def of(cls, phase: TaskPhase) -> TaskState:
        """Return the record state matching a task phase."""
        return _STATE_OF[phase]


_STATE_OF: dict[TaskPhase, TaskState] = {phase: TaskState(phase.value) for phase in TaskPhase}

# --------------------------------------------------------------------------- specs

#: The longest time any spec accepts, in seconds (10**8 s, about 3.2 years):
#: timeouts, shutdown graces, restart windows, backoff delays. Every timer
#: can wait this long (``threading.TIMEOUT_MAX`` is about 9.2e9 s on Linux),
#: so no accepted value can overflow a wait. Where OTP has ``infinity`` it is
#: spelled as such (a supervisor's shutdown), or None (no task timeout).
MAX_SECONDS = 100_000_000
_MAX = f"{MAX_SECONDS:,}"

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@/+-]*$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _fail(
    field: str, problem: str, value: object, error: type[InvalidData] = InvalidSpec
) -> InvalidData:
    exc = error(f"{field}: {problem}, got {shown(value)}")
    exc.field = field
    return exc


def _at_least(
    low: int, error: type[InvalidData] = InvalidData, high: int | None = None
) -> Callable[[Any, attrs.Attribute[int], Any], None]:
    wanted = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def check(_inst: Any, attribute: attrs.Attribute[int], value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            raise _fail(attribute.name, f"expected {wanted}", value, error)

    return check


def _check_name(_inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(
            attribute.name,
            "expected a non-empty name of letters, digits and _.:@/+- "
            "(not starting with punctuation)",
            value,
        )


#: The longest name a child may have (as an Erlang atom).
NAME_MAX = 255


def _check_child_name(inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    _check_name(inst, attribute, value)
    if len(value) > NAME_MAX:  # type: ignore[arg-type]
        raise _fail(attribute.name, f"expected a name of at most {NAME_MAX} characters", value)


def _to_kind(value: TaskKind | CustomKind) -> str:
    if not isinstance(value, str) or not value:
        raise _fail("kind", "expected a task kind name (call, async, subprocess)", value)
    return value


def _to_restart(value: Restart | RestartName) -> Restart:
    if isinstance(value, Restart):
        return value
    if isinstance(value, str):  # only a str names one: nothing else is even compared
        try:
            return Restart(value)
        except ValueError:
            pass
    choices = ", ".join(r.value for r in Restart)
    raise _fail("restart", f"expected one of {choices}", value)


def _to_args(value: Sequence[Any]) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _fail("args", "expected a list or tuple of arguments", value)
    return tuple(value)


def _str_map(field: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(field, "expected a mapping of strings to strings", value)
    return dict(value)


def _to_labels(value: Mapping[str, str]) -> dict[str, str]:
    return _str_map("labels", value)


def _to_optional_env(value: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if value is None else _str_map("env", value)


def _to_kwargs(value: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _fail("kwargs", "expected a mapping with string keys", value)
    return dict(value)


def _to_command(value: Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise _fail(
            "command",
            "expected a list of arguments (a string is a shell command: "
            "pass [the string] and shell=True to run it through a shell)",
            value,
        )
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(a, str) for a in value)
    ):
        raise _fail("command", "expected a non-empty list of strings", value)
    return tuple(value)


def _check_target(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or callable(value):
        return
    if not isinstance(value, str) or not _TARGET.match(value):
        raise _fail("target", "expected a callable or a 'package.module:function' string", value)


def in_seconds(value: object, *, strict: bool) -> bool:
    """Return whether ``value`` is a number of seconds in range.

    In range: an int or float ``> 0`` (``strict``) or ``>= 0``, and at most
    ``MAX_SECONDS``; never NaN, infinite or a bool. It compares without
    converting to float, so a huge int is out of range, not an OverflowError.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (value > 0 if strict else value >= 0) and value <= MAX_SECONDS  # False for NaN


def _to_timeout(value: float | None) -> float | None:
    if value is None:
        return None
    if not in_seconds(value, strict=True):
        raise _fail("timeout", f"expected a number of seconds > 0 and <= {_MAX}, or None", value)
    return float(value)


def _to_shutdown(value: float | Literal["brutal"]) -> Shutdown:
    if isinstance(value, str) and value == "brutal":
        return "brutal"
    if not in_seconds(value, strict=False):
        raise _fail(
            "shutdown", f"expected a grace in seconds >= 0 and <= {_MAX}, or 'brutal'", value
        )
    return float(value)


def _to_stop_signal(value: signal.Signals | int | SignalName) -> signal.Signals:
    names = ", ".join(sig.name.removeprefix("SIG") for sig in STOP_SIGNALS)
    found: signal.Signals | None = None
    if isinstance(value, str):
        found = signal.Signals.__members__.get("SIG" + value.upper().removeprefix("SIG"))
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            found = signal.Signals(value)
        except ValueError:
            found = None
    if found is None or found not in STOP_SIGNALS:
        raise _fail("stop_signal", f"expected a signal name ({names}) or its number", value)
    return found


def _to_exit_codes(value: Sequence[int]) -> tuple[int, ...]:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    ):
        raise _fail(
            "success_exit_codes", "expected a non-empty list of exit codes from 0 to 255", value
        )
    return tuple(sorted(set(value)))


def _check_output(_inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    field = attribute.name
    merge = ", or 'stdout' to merge it into stdout" if field == "stderr" else ""
    expected = f"expected 'inherit', 'prefix', 'null' or a file path{merge}"
    if not isinstance(value, str) or not value or "\0" in value:
        raise _fail(field, expected, value)
    if value in ("stdout", "stderr") and not (field == "stderr" and value == "stdout"):
        raise _fail(field, f"{expected} (write './{value}' for a file of that name)", value)


def is_output_file(mode: str) -> bool:
    """Whether an ``stdout``/``stderr`` value names a file (not a mode or ``"stdout"``)."""
    return mode not in _OUTPUT_MODES and mode != "stdout"


def is_async_def(target: object) -> bool:
    """Whether calling ``target`` returns a coroutine: an ``async def``, a partial of one, or
    an object whose ``__call__`` is one (what kind ``async`` runs and kind ``call`` cannot)."""
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(type(target), "__call__", None)  # noqa: B004 - an instance's async __call__
    return not inspect.isroutine(target) and inspect.iscoroutinefunction(call)


def _callable_name(target: object) -> str:
    return getattr(target, "__qualname__", None) or repr(target)


def _check_bool(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise _fail(attribute.name, "expected true or false", value)


def _same_target(a: object, b: object) -> bool:
    # A target read back from storage is its import path: compare by path
    # where there is one, so a stored spec equals the spec that was written.
    path_a, path_b = target_path(a), target_path(b)  # type: ignore[arg-type]
    return a is b or (path_a is not None and path_a == path_b)


@attrs.frozen
class TaskSpec:
    """Desired state of a task: what to run and how to restart it.

    Only ``name`` may be given by position (``TaskSpec("worker", target=f)``).
    The field names are the ones configuration files use. Times are in
    seconds: ``timeout`` is ``> 0`` and at most ``MAX_SECONDS`` (10**8 s,
    about 3.2 years), or None for no timeout (the default); ``shutdown``, the
    grace a stopping attempt gets before it is killed, is ``>= 0`` and at
    most ``MAX_SECONDS`` (default 5.0), or ``"brutal"`` to kill at once.

    ``kind`` is ``"call"`` (default; a plain function on a thread),
    ``"async"`` (an ``async def`` on the tree's event loop) or
    ``"subprocess"`` (``command``, an argv list); a kind served by an
    executor you register is spelled ``CustomKind("name")`` for the type
    checker. ``restart`` is a ``Restart`` or its value (``"transient"``).

    Fields of ``subprocess`` tasks only (each is refused for other kinds):

    - ``stdout`` / ``stderr``: ``"inherit"`` (default: the host's own
      streams), ``"prefix"`` (each line logged on the ``taskvisor.output``
      logger, stdout at INFO and stderr at WARNING, as ``[path] line``; a
      line longer than ``OUTPUT_LINE_MAX``, 64 KiB, is cut with a marker),
      ``"null"`` (discarded) or a file path (appended to, rotated by size;
      a relative path is relative to the working directory of the process
      that runs the tree, such as ``taskvisor run``: not to the tree file's
      folder, as targets are, nor to the child's ``cwd``; the file's folder
      must exist, and ``taskvisor check`` names one that does not).
      ``stderr`` may be ``"stdout"``: merged into stdout's destination (as
      supervisord's ``redirect_stderr``).
    - ``output_max_bytes``: the size in bytes at which an output file is
      rotated (default ``OUTPUT_MAX_BYTES_DEFAULT``, 10 MiB; 0 never rotates);
      ``output_backups``: how many rotated files are kept (0 to 1000, default 3:
      ``out.log.1`` is the newest; 0 keeps none, the file starts afresh).
      Both need ``stdout`` or ``stderr`` to be a file.
    - ``stop_signal``: the signal sent to the child's process group for a
      graceful stop (default SIGTERM; ``"TERM"``, ``"SIGINT"``, ``"HUP"``,
      ``"QUIT"``, ``"USR1"``, ``"USR2"``, ``"KILL"`` or a number); SIGKILL
      follows when the ``shutdown`` grace runs out. Stored as a
      ``signal.Signals``.
    - ``success_exit_codes``: the exit codes that end an attempt as
      ``SUCCEEDED`` (default ``(0,)``); any other exit is ``FAILED``. So a
      TRANSIENT child that exits with a listed code is not restarted.
      Stored sorted, without repeats.

    Raises:
        InvalidSpec: when a field or a combination of fields is invalid; the
            message names the field and the bad value (cut to 80 characters),
            and the fix when there is one: an ``async def`` target with kind
            ``"call"`` (use ``kind="async"``), a plain function with kind
            ``"async"`` (use ``kind="call"``), a subprocess-only field on
            another kind.
    """

    name: str = attrs.field(validator=_check_child_name)
    kind: str = attrs.field(default="call", converter=_to_kind, kw_only=True)
    target: Callable[..., Any] | str | None = attrs.field(
        default=None,
        validator=_check_target,
        eq=attrs.cmp_using(eq=_same_target, require_same_type=False),
        kw_only=True,
    )
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_args, kw_only=True)
    kwargs: dict[str, Any] = attrs.field(factory=dict, converter=_to_kwargs, kw_only=True)
    command: tuple[str, ...] | None = attrs.field(default=None, converter=_to_command, kw_only=True)
    env: dict[str, str] | None = attrs.field(default=None, converter=_to_optional_env, kw_only=True)
    cwd: str | None = attrs.field(default=None, kw_only=True)
    shell: bool = attrs.field(default=False, validator=_check_bool, kw_only=True)
    restart: Restart = attrs.field(default=Restart.PERMANENT, converter=_to_restart, kw_only=True)
    timeout: float | None = attrs.field(default=None, converter=_to_timeout, kw_only=True)
    shutdown: Shutdown = attrs.field(default=5.0, converter=_to_shutdown, kw_only=True)
    significant: bool = attrs.field(default=False, validator=_check_bool, kw_only=True)
    labels: dict[str, str] = attrs.field(factory=dict, converter=_to_labels, kw_only=True)
    stdout: str = attrs.field(default="inherit", validator=_check_output, kw_only=True)
    stderr: str = attrs.field(default="inherit", validator=_check_output, kw_only=True)
    output_max_bytes: int = attrs.field(
        default=OUTPUT_MAX_BYTES_DEFAULT, validator=_at_least(0, InvalidSpec), kw_only=True
    )
    output_backups: int = attrs.field(
        default=OUTPUT_BACKUPS,
        validator=_at_least(0, InvalidSpec, OUTPUT_BACKUPS_MAX),
        kw_only=True,
    )
    stop_signal: signal.Signals = attrs.field(
        default=signal.SIGTERM, converter=_to_stop_signal, kw_only=True
    )
    success_exit_codes: tuple[int, ...] = attrs.field(
        default=(0,), converter=_to_exit_codes, kw_only=True
    )

    def __attrs_post_init__(self) -> None:
        if self.kind in ("call", "async"):
            if self.target is None:
                raise _fail("target", f"a {self.kind!r} task needs a target", None)
            if self.command is not None:
                raise _fail("command", f"a {self.kind!r} task takes no command", self.command)
            self._check_callable()
        elif self.kind == "subprocess":
            if self.command is None:
                raise _fail("command", "a 'subprocess' task needs a command", None)
            if self.target is not None:
                raise _fail("target", "a 'subprocess' task takes no target", self.target)
            if self.shell and len(self.command) != 1:
                raise _fail(
                    "command", "with shell=True give exactly one command string", list(self.command)
                )
        if self.shell and self.kind != "subprocess":
            raise _fail("shell", "only a 'subprocess' task can use a shell", self.shell)
        if self.cwd is not None and not isinstance(self.cwd, str):
            raise _fail("cwd", "expected a directory path string or None", self.cwd)
        self._check_process_fields()

    def _check_callable(self) -> None:
        target = self.target
        if target is None or isinstance(target, str):
            return  # an import path is checked when it is imported, at start
        if self.kind == "call" and is_async_def(target):
            raise _fail(
                "target",
                f"{_callable_name(target)} is an async def, which kind 'call' would call "
                "without awaiting: use kind='async'",
                target,
            )
        if self.kind == "async" and not is_async_def(target):
            raise _fail(
                "target",
                f"kind 'async' runs an async def, and {_callable_name(target)} is not one: "
                "use kind='call' for a plain function",
                target,
            )

    def _check_process_fields(self) -> None:
        defaults = attrs.fields(TaskSpec)
        if self.kind != "subprocess":
            for field in (
                defaults.stdout,
                defaults.stderr,
                defaults.output_max_bytes,
                defaults.output_backups,
                defaults.stop_signal,
                defaults.success_exit_codes,
            ):
                value = getattr(self, field.name)
                if value != field.default:
                    raise _fail(
                        field.name,
                        f"only a 'subprocess' task takes {field.name} "
                        f"(this task's kind is {self.kind!r})",
                        value.name if isinstance(value, signal.Signals) else value,
                    )
            return
        if self.stdout == "stdout":  # pragma: no cover - refused by _check_output
            raise _fail("stdout", "stdout cannot be merged into itself", self.stdout)
        if not (is_output_file(self.stdout) or is_output_file(self.stderr)):
            for field in (defaults.output_max_bytes, defaults.output_backups):
                value = getattr(self, field.name)
                if value != field.default:
                    raise _fail(
                        field.name,
                        "applies to an output file: set stdout or stderr to a file path",
                        value,
                    )

    def evolve(self, **changes: Any) -> TaskSpec:
        """Return a copy with ``changes`` applied and validated."""
        return attrs.evolve(self, **changes)


def target_path(target: Callable[..., Any] | str | None) -> str | None:
    """Return the ``"module:qualname"`` path of a target, if it has one."""
    if target is None or isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


# --------------------------------------------------------------------------- task


@attrs.frozen(kw_only=True)
class ObjectMeta:
    """Identity and versioning of a task."""

    id: str = attrs.field(validator=_check_name)
    name: str
    labels: dict[str, str] = attrs.field(factory=dict, converter=_to_labels)
    resource_version: int = attrs.field(default=1, validator=_at_least(1))
    created_at: int = 0
    updated_at: int = 0

    def bumped(self, now: int) -> ObjectMeta:
        """Return the next version of this metadata, stamped ``now``."""
        bumped: ObjectMeta = _bump_meta(self, self.resource_version + 1, now)
        return bumped


@attrs.frozen(kw_only=True)
class TaskStatus:
    """Observed state of a task: its phase and its latest attempt."""

    phase: TaskPhase = TaskPhase.PENDING
    attempt: int = attrs.field(default=0, validator=_at_least(0))
    #: The latest attempt's error, cut to ``ERROR_TEXT_MAX`` characters.
    error: str | None = attrs.field(default=None, converter=bound_text)
    exit_code: int | None = None


#: The copies a transition makes (no validation: the values are the model's own).
_bump_meta = _make_updater(ObjectMeta, ("resource_version", "updated_at"))
#: A new attempt's status, and an ended attempt's.
_start_status = _make_updater(TaskStatus, ("phase", "attempt", "error", "exit_code"))
_end_status = _make_updater(TaskStatus, ("phase", "error", "exit_code"))


@attrs.define(kw_only=True)
class Task:
    """One task resource: ``metadata``, ``spec`` and ``status``.

    Each change goes through ``transition_starting`` or
    ``transition_finished`` and bumps ``metadata.resource_version``.
    """

    metadata: ObjectMeta
    spec: TaskSpec
    status: TaskStatus = attrs.Factory(TaskStatus)

    @classmethod
    def new(cls, id: str, spec: TaskSpec, *, now: int | None = None) -> Task:
        """Create a task in ``PENDING``."""
        stamp = stamp_ms(now)
        meta = ObjectMeta(
            id=id, name=spec.name, labels=spec.labels, created_at=stamp, updated_at=stamp
        )
        return cls(metadata=meta, spec=spec)

    @property
    def id(self) -> str:
        """The task id (``metadata.id``)."""
        return self.metadata.id

    def into_parts(self) -> tuple[ObjectMeta, TaskSpec, TaskStatus]:
        """Return ``(metadata, spec, status)``."""
        return self.metadata, self.spec, self.status

    def transition_starting(self, *, now: int | None = None) -> None:
        """Begin a new attempt: attempt += 1, phase ``RUNNING``, error and exit code cleared.

        Raises:
            IllegalTransition: when an attempt is already running.
        """
        if not self.status.phase.can_transition_to(TaskPhase.RUNNING):
            raise IllegalTransition(
                f"task {self.id!r}: cannot start attempt {self.status.attempt + 1} "
                f"while attempt {self.status.attempt} is {self.status.phase.value}"
            )
        stamp = stamp_ms(now)
        attempt = self.status.attempt + 1
        self.status = _start_status(self.status, TaskPhase.RUNNING, attempt, None, None)
        self.metadata = self.metadata.bumped(stamp)

    def transition_finished(
        self,
        phase: TaskPhase,
        error: str | None = None,
        exit_code: int | None = None,
        *,
        now: int | None = None,
    ) -> None:
        """Close the current attempt in the terminal ``phase``.

        ``error`` is kept cut to ``ERROR_TEXT_MAX`` characters (``bound_text``).

        Raises:
            IllegalTransition: when ``phase`` is not terminal, or the task is not
                running (a pending task may only be ``CANCELLED``).
        """
        if not phase.is_terminal:
            raise IllegalTransition(
                f"task {self.id!r}: cannot finish into {phase.value!r}, "
                f"which is not a terminal phase"
            )
        if not self.status.phase.can_transition_to(phase):
            raise IllegalTransition(
                f"task {self.id!r}: cannot move from {self.status.phase.value!r} to {phase.value!r}"
            )
        stamp = stamp_ms(now)
        self.status = _end_status(self.status, phase, bound_text(error), exit_code)
        self.metadata = self.metadata.bumped(stamp)


# --------------------------------------------------------------------------- runs


@attrs.define(kw_only=True)
class TaskRun:
    """Record of one attempt at running a task.

    ``error`` is cut to ``ERROR_TEXT_MAX`` characters however it is set.
    ``pid`` and ``pgid`` are the process id and process group of a
    ``subprocess`` attempt (None for other kinds, and until the process has
    started), ``process_started`` the process's start time as the OS counts
    it (Linux: clock ticks since boot, ``/proc/<pid>/stat`` field 22; it
    tells the process apart from a later one given the same pid), and
    ``host`` the name of the host that ran the attempt: a tree resumed from
    a store uses them to find, and kill, a process group the previous host
    left running. Records written before these fields existed read back
    with them None.
    """

    attempt: int = attrs.field(validator=_at_least(1))
    phase: TaskPhase = TaskPhase.RUNNING
    started_at: int = 0
    finished_at: int | None = None
    error: str | None = attrs.field(default=None, converter=bound_text)
    exit_code: int | None = None
    pid: int | None = attrs.field(default=None, validator=_optional_id)
    pgid: int | None = attrs.field(default=None, validator=_optional_id)
    process_started: int | None = attrs.field(default=None, validator=_optional_count)
    host: str | None = None

    @classmethod
    def starting(
        cls,
        attempt: int,
        *,
        now: int | None = None,
        pid: int | None = None,
        pgid: int | None = None,
        process_started: int | None = None,
        host: str | None = None,
    ) -> TaskRun:
        """Create the record of an attempt that has just started.

        Raises:
            InvalidData: when ``attempt`` is below 1, ``pid`` or ``pgid`` is
                not a process id, or ``process_started`` is negative.
        """
        return cls(
            attempt=attempt,
            started_at=stamp_ms(now),
            pid=pid,
            pgid=pgid,
            process_started=process_started,
            host=host,
        )

    @property
    def is_active(self) -> bool:
        """Whether the attempt is still in progress."""
        return self.phase is TaskPhase.RUNNING

    def finish(
        self,
        phase: TaskPhase,
        error: str | None = None,
        exit_code: int | None = None,
        *,
        now: int | None = None,
    ) -> None:
        """Close the run in the terminal ``phase``.

        ``error`` is kept cut to ``ERROR_TEXT_MAX`` characters (``bound_text``).

        Raises:
            IllegalTransition: when ``phase`` is not terminal or the run is closed already.
        """
        if not phase.is_terminal:
            raise IllegalTransition(f"run {self.attempt}: {phase.value!r} is not terminal")
        if not self.is_active:
            raise IllegalTransition(f"run {self.attempt}: already closed as {self.phase.value!r}")
        stamp = stamp_ms(now)
        # Checked above: set without the per-field validators of __setattr__.
        _set = object.__setattr__
        _set(self, "phase", phase)
        _set(self, "error", bound_text(error))
        _set(self, "exit_code", exit_code)
        _set(self, "finished_at", stamp)


#: What every run is when it begins: running, not ended, no process yet.
_FRESH_RUN = TaskRun(attempt=1)
_begin_run = _make_updater(TaskRun, ("attempt", "started_at"))


def begun_run(attempt: int, stamp: int) -> TaskRun:
    """``TaskRun.starting(attempt, now=stamp)`` without validation, for a task actor.

    ``attempt`` and ``stamp`` are the actor's own (a task's next attempt
    number, ``now_ms()``): a restart makes one run and should not check them.
    """
    run: TaskRun = _begin_run(_FRESH_RUN, attempt, stamp)
    return run


# --------------------------------------------------------------------------- records


@attrs.define(kw_only=True)
class TaskRecord:
    """The persisted snapshot of a task: the unit of durability.

    ``error`` is cut to ``ERROR_TEXT_MAX`` characters however it is set.
    ``runs`` are the kept runs, oldest first, each attempt once (a store
    refuses a record whose runs' attempts do not increase).
    """

    id: str
    state: TaskState = TaskState.PENDING
    attempts: int = attrs.field(default=0, validator=_at_least(0))
    created_at: int = 0
    updated_at: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    output: Any = None
    error: str | None = attrs.field(default=None, converter=bound_text)
    metadata: dict[str, str] = attrs.Factory(dict)
    runs: list[TaskRun] = attrs.Factory(list)

    @classmethod
    def new(cls, id: str, *, now: int | None = None) -> TaskRecord:
        """Create a fresh record in ``PENDING``."""
        stamp = stamp_ms(now)
        return cls(id=id, created_at=stamp, updated_at=stamp)

    def transition(self, state: TaskState, *, now: int | None = None) -> bool:
        """Move to ``state``, stamping ``updated_at``.

        Starting (``RUNNING``) counts an attempt and stamps ``started_at``;
        a terminal state stamps ``finished_at``.

        Returns:
            False, with the record untouched, when ``state.can_transition_to``
            forbids the move; True otherwise.
        """
        if not self.state.can_transition_to(state):
            return False
        stamp = stamp_ms(now)
        # Valid by construction: set without the per-field hooks of __setattr__.
        _set = object.__setattr__
        _set(self, "state", state)
        _set(self, "updated_at", stamp)
        if state is TaskState.RUNNING:
            _set(self, "attempts", self.attempts + 1)
            _set(self, "started_at", stamp)
            _set(self, "finished_at", None)
            _set(self, "error", None)
        else:
            _set(self, "finished_at", stamp)
        return True

    def duration_millis(self) -> int | None:
        """Wall-clock duration of the latest attempt, if it has started and finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0, self.finished_at - self.started_at)
