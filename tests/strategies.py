"""Hypothesis strategies for every model class, shared by the test modules.

Every value these strategies make is valid and round-trips losslessly
through ``to_data`` and JSON: floats are finite, containers are lists and
string-keyed dicts, and targets are ``"package.module:function"`` strings.
"""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

from taskvisor.actors import (
    STOP_SIGNALS,
    ObjectMeta,
    Restart,
    Task,
    TaskPhase,
    TaskRecord,
    TaskRun,
    TaskSpec,
    TaskState,
    TaskStatus,
)

__all__ = [
    "TERMINAL_PHASES",
    "TERMINAL_STATES",
    "command_lines",
    "json_values",
    "labels",
    "millis",
    "names",
    "object_metas",
    "phases",
    "states",
    "targets",
    "task_records",
    "task_runs",
    "task_specs",
    "task_statuses",
    "tasks",
    "wild_data",
    "wild_keys",
    "wild_scalars",
]

phases = st.sampled_from(TaskPhase)
states = st.sampled_from(TaskState)
TERMINAL_PHASES = [p for p in TaskPhase if p.is_terminal]
TERMINAL_STATES = [s for s in TaskState if s.is_terminal]

#: Milliseconds since the epoch, up to the year ~10,000.
millis = st.integers(min_value=0, max_value=253_402_300_799_999)

_NAME_FIRST = string.ascii_letters + string.digits + "_"
_NAME_REST = _NAME_FIRST + ".:@/+-"


@st.composite
def names(draw: st.DrawFn) -> str:
    """Valid task names and ids: a letter, digit or ``_``, then ``_.:@/+-`` too."""
    first = draw(st.sampled_from(_NAME_FIRST))
    return first + draw(st.text(alphabet=_NAME_REST, max_size=16))


_IDENTIFIER = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)


@st.composite
def _dotted(draw: st.DrawFn) -> str:
    return ".".join(draw(st.lists(_IDENTIFIER, min_size=1, max_size=3)))


#: ``"package.module:function"`` targets: real ones and made-up (never imported here).
targets = st.one_of(
    st.sampled_from(["json:dumps", "json:loads", "os.path:join", "math:sqrt", "operator:add"]),
    st.builds(lambda module, fn: f"{module}:{fn}", _dotted(), _dotted()),
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)

#: JSON-able data: what a task may return as output or take as arguments.
json_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)

labels = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
_seconds = st.one_of(
    st.integers(min_value=1, max_value=3600),
    st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False),
)
_shutdowns = st.one_of(
    st.just("brutal"),
    st.floats(min_value=0, max_value=3600, allow_nan=False, allow_infinity=False),
)
_envs = st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
_cwds = st.none() | st.text(max_size=20)
command_lines = st.lists(st.text(max_size=10), min_size=1, max_size=4)


@st.composite
def task_specs(draw: st.DrawFn, kind: str | None = None) -> TaskSpec:
    """Valid ``TaskSpec``s of every kind (or of ``kind``), every field drawn."""
    kind = kind or draw(st.sampled_from(["call", "async", "subprocess"]))
    common: dict[str, Any] = {
        "name": draw(names()),
        "kind": kind,
        "env": draw(_envs),
        "cwd": draw(_cwds),
        "restart": draw(st.sampled_from(Restart)),
        "timeout": draw(st.none() | _seconds),
        "shutdown": draw(_shutdowns),
        "significant": draw(st.booleans()),
        "labels": draw(labels),
    }
    if kind == "subprocess":
        shell = draw(st.booleans())
        command = [draw(st.text(min_size=1, max_size=20))] if shell else draw(command_lines)
        stdout = draw(st.sampled_from(["inherit", "prefix", "null", "out.log"]))
        stderr = draw(st.sampled_from(["inherit", "prefix", "null", "stdout", "err.log"]))
        output: dict[str, Any] = {}
        if stdout.endswith(".log") or stderr.endswith(".log"):
            output["output_max_bytes"] = draw(st.integers(min_value=0, max_value=2**30))
            output["output_backups"] = draw(st.integers(min_value=0, max_value=20))
        return TaskSpec(
            command=command,
            shell=shell,
            stdout=stdout,
            stderr=stderr,
            stop_signal=draw(st.sampled_from(STOP_SIGNALS)),
            success_exit_codes=draw(
                st.lists(st.integers(min_value=0, max_value=255), min_size=1, max_size=4)
            ),
            **output,
            **common,
        )
    return TaskSpec(
        target=draw(targets),
        args=draw(st.lists(json_values, max_size=3)),
        kwargs=draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
        **common,
    )


object_metas = st.builds(
    ObjectMeta,
    id=names(),
    name=st.text(max_size=16),
    labels=labels,
    resource_version=st.integers(min_value=1, max_value=2**40),
    created_at=millis,
    updated_at=millis,
)

_errors = st.none() | st.text(max_size=30)
_exit_codes = st.none() | st.integers(min_value=-255, max_value=255)

task_statuses = st.builds(
    TaskStatus,
    phase=phases,
    attempt=st.integers(min_value=0, max_value=1000),
    error=_errors,
    exit_code=_exit_codes,
)

tasks = st.builds(Task, metadata=object_metas, spec=task_specs(), status=task_statuses)

task_runs = st.builds(
    TaskRun,
    attempt=st.integers(min_value=1, max_value=1000),
    phase=phases,
    started_at=millis,
    finished_at=st.none() | millis,
    error=_errors,
    exit_code=_exit_codes,
)


@st.composite
def task_records(draw: st.DrawFn, id: str | None = None) -> TaskRecord:
    """Valid ``TaskRecord``s with JSON-able outputs and a few runs."""
    return TaskRecord(
        id=draw(names()) if id is None else id,
        state=draw(states),
        attempts=draw(st.integers(min_value=0, max_value=1000)),
        created_at=draw(millis),
        updated_at=draw(millis),
        started_at=draw(st.none() | millis),
        finished_at=draw(st.none() | millis),
        output=draw(json_values),
        error=draw(_errors),
        metadata=draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
        runs=draw(st.lists(task_runs, max_size=3)),
    )


# --------------------------------------------------------------------------- malformed input

#: Scalars a config file (or a careless caller) can hold, valid or not: huge
#: ints (str() of one over 4,300 digits raises ValueError; float() of 10**400
#: raises OverflowError), NaN and infinities, times past any timer's limit,
#: long strings, and the strings spec fields take.
wild_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    # Made by map(): Hypothesis reprs its strategies, and repr(10**5000) raises.
    st.sampled_from([5000, -5000, 400, 63, -63, 10]).map(
        lambda n: 10 ** abs(n) * (-1 if n < 0 else 1)
    ),
    st.sampled_from([2**63, 2**63 - 1, -(2**63)]),
    st.floats(),
    st.sampled_from([1e10, 1e300, float("inf"), float("-inf"), float("nan"), 1e8, 1e-300]),
    st.text(max_size=12),
    st.just(100_000).map(lambda n: "x" * n),
    st.sampled_from(
        [
            "brutal",
            "infinity",
            "permanent",
            "transient",
            "temporary",
            "one_for_all",
            "any_significant",
            "subprocess",
            "call",
            "app.tasks:work",
            "a/b",
            "",
        ]
    ),
)

#: Mapping keys of every type YAML can produce (``on:`` reads as True) next
#: to the names of spec fields.
wild_keys: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            "name",
            "children",
            "template",
            "strategy",
            "intensity",
            "child_intensity",
            "backoff",
            "max_restarts",
            "within",
            "initial",
            "maximum",
            "multiplier",
            "jitter",
            "reset_after",
            "seed",
            "restart",
            "shutdown",
            "timeout",
            "significant",
            "auto_shutdown",
            "max_children",
            "labels",
            "kind",
            "target",
            "args",
            "kwargs",
            "command",
            "env",
            "cwd",
            "shell",
        ]
    ),
    st.text(max_size=6),
    st.integers(),
    st.booleans(),
    st.none(),
    st.just(5000).map(lambda n: 10**n),
)

#: Nested JSON-like data built from ``wild_scalars`` and ``wild_keys``.
wild_data: st.SearchStrategy[Any] = st.recursive(
    wild_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(wild_keys, children, max_size=5),
    ),
    max_leaves=20,
)
