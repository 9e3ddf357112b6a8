"""Script files for ``taskvisor simulate``: timed events read from TOML, JSON or YAML.

A script is a mapping with ``events`` (a list), and optionally ``until``
(seconds: stop the fake clock there) and ``seed`` (for backoff jitter); a
JSON or YAML script may also be the bare list. Each event is a mapping
with ``at`` (seconds from the start) and ``event``, one of:

- ``fail`` (``child``, optional ``error``), ``exit`` (``child``),
  ``timeout`` (``child``): the child at that path ends so;
- ``terminate_child``, ``restart_child``, ``delete_child`` (``child``): the
  supervisor API call on the child at that path;
- ``start`` (optional ``supervisor``, ``id``, ``spec``): ``start_child`` on
  the supervisor at that path (``""``: the root); ``spec`` is a child spec
  mapping, as in a tree file.

Children are named by their path from the root (``"db/conn"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from taskvisor.actors import InvalidData, InvalidSpec
from taskvisor.supervision import (
    DeleteChild,
    DynamicSupervisorSpec,
    Exit,
    Fail,
    RestartChild,
    ScriptEvent,
    Start,
    SupervisorSpec,
    TerminateChild,
    Timeout,
)
from taskvisor.supervision._errors import prefixed
from taskvisor.supervision._files import TreeData, TreeFileError, read_tree_data
from taskvisor.supervision._spec import _child_from

__all__ = ["Script", "script_from_file"]

_CHILD_EVENTS: dict[str, type[Any]] = {
    "fail": Fail,
    "exit": Exit,
    "timeout": Timeout,
    "terminate_child": TerminateChild,
    "restart_child": RestartChild,
    "delete_child": DeleteChild,
}
_KINDS = (*_CHILD_EVENTS, "start")
_FIELDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_CHILD_EVENTS, ("at", "event", "child")),
    "fail": ("at", "event", "child", "error"),
    "start": ("at", "event", "supervisor", "id", "spec"),
}
_TOP = ("events", "until", "seed")


@attrs.frozen
class Script:
    """A script read from a file: its events, ``until`` and ``seed``, and where each event is."""

    events: tuple[ScriptEvent, ...]
    until: float | None
    seed: int
    tree: TreeData

    def located(self, exc: InvalidData) -> TreeFileError:
        """``exc`` from ``simulate`` (naming ``script[i]``) as a problem of this file."""
        texts = [
            "events" + text.removeprefix("script") if text.startswith("script[") else text
            for text in exc.problems
        ]
        return TreeFileError(tuple(self.tree.problem(text) for text in texts))


def script_from_file(
    path: str | os.PathLike[str], spec: SupervisorSpec | DynamicSupervisorSpec
) -> Script:
    """Read a script file for ``spec``.

    Raises:
        TreeFileError: when the file cannot be read, or an event is not
            valid; every problem named by its path (``events[2].at: ...``)
            and line.
    """
    tree = read_tree_data(path)
    data: Any = tree.data
    if isinstance(data, list):
        data = {"events": data}
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise TreeFileError(
            (tree.problem(f"(top level): expected a mapping with events, got {_type(data)}"),)
        )
    extra = sorted(str(k) for k in data if k not in _TOP)
    if extra:
        problems.append(
            f"(top level): unknown field(s) {extra} (expected some of events, until, seed)"
        )
    raw = data.get("events")
    events: list[ScriptEvent] = []
    if not isinstance(raw, list):
        problems.append(f"events: expected a list of events, got {_type(raw)}")
        raw = []
    for i, item in enumerate(raw):
        try:
            events.append(_event(item, f"events[{i}]"))
        except InvalidData as exc:
            problems.extend(exc.problems)
    until = data.get("until")
    if until is not None and (isinstance(until, bool) or not isinstance(until, (int, float))):
        problems.append(f"until: expected seconds (a number), got {_type(until)}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        problems.append(f"seed: expected an integer, got {_type(seed)}")
    if problems:
        raise TreeFileError(tuple(tree.problem(text) for text in problems))
    return Script(tuple(events), None if until is None else float(until), seed, tree)


def _type(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _event(item: Any, path: str) -> ScriptEvent:
    if not isinstance(item, Mapping):
        raise InvalidSpec(f"{path}: expected a mapping with at and event, got {_type(item)}")
    kind = item.get("event")
    if kind not in _KINDS:
        raise InvalidSpec(
            f"{path}.event: expected one of {', '.join(_KINDS)}, got {kind!r}"
            if "event" in item
            else f"{path}.event: required field missing (one of {', '.join(_KINDS)})"
        )
    fields = _FIELDS[kind]
    extra = sorted(str(k) for k in item if k not in fields)
    if extra:
        raise InvalidSpec(
            f"{path}: unknown field(s) {extra} for event {kind!r} "
            f"(expected some of {', '.join(fields)})"
        )
    for field in ("at", "child") if kind != "start" else ("at",):
        if field not in item:
            raise InvalidSpec(f"{path}.{field}: required field missing")
    kwargs = {k: v for k, v in item.items() if k != "event"}
    if kind == "start" and "spec" in kwargs:
        kwargs["spec"] = _child_from(kwargs["spec"], f"{path}.spec", 1)
    cls = Start if kind == "start" else _CHILD_EVENTS[kind]
    try:
        event: ScriptEvent = cls(**kwargs)
    except InvalidData as exc:
        raise prefixed(path, exc) from None
    return event
