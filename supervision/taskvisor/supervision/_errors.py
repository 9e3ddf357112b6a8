"""Errors raised by supervisors, and the record of one failure in an escalation chain.

They join the hierarchy rooted in ``taskvisor.actors.TaskvisorError``::

    TaskvisorError(Exception)
    ├── InvalidData(TaskvisorError, ValueError)
    │   └── InvalidSpec(InvalidData)                 a bad supervisor spec or config path
    ├── ...                                          (the rest of taskvisor.actors)
    ├── SupervisorExhausted(TaskvisorError, RuntimeError)
    │                                                the root supervisor gave up; carries
    │                                                the chain of failures that led there
    └── ChildStartError(TaskvisorError, RuntimeError)
                                                     a child could not be (re)started

``Failure`` is not an error: it is the frozen record of one link in the
chain, "supervisor S saw child C end in phase P with error E".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from taskvisor.actors import InvalidData, InvalidSpec, TaskPhase, TaskvisorError
from taskvisor.actors._errors import bounded, shown

__all__ = ["ChildStartError", "Failure", "SupervisorExhausted"]


def _to_phase(value: TaskPhase | str) -> TaskPhase:
    if isinstance(value, TaskPhase):
        return value
    if isinstance(value, str):
        try:
            return TaskPhase(value)
        except ValueError:
            pass
    choices = ", ".join(p.value for p in TaskPhase)
    raise invalid("phase", f"expected one of {choices}", value)


def _check_text(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise invalid(attribute.name, "expected a string", value)


def _check_optional_text(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise invalid(attribute.name, "expected a string or None", value)


#: The most of one failure's error text that its line in a message shows.
FAILURE_TEXT_SHOWN = 500


@attrs.frozen
class Failure:
    """One link of an escalation chain: ``supervisor`` saw ``child`` end badly.

    ``str()`` of it is one line, with the error text cut to
    ``FAILURE_TEXT_SHOWN`` (500) characters (its head and tail); the
    ``error`` attribute keeps the whole text.

    Attributes:
        supervisor: the path of the supervisor, e.g. ``"app/db"``.
        child: the id of the child that ended, as its supervisor knows it.
        phase: how the child ended (``EXHAUSTED`` for a child supervisor that
            gave up itself).
        error: the error text, or the supervisor's reason for giving up.

    Raises:
        InvalidSpec: when ``supervisor`` or ``child`` is not a string, ``error``
            is neither a string nor None, or ``phase`` is not a phase.
    """

    supervisor: str = attrs.field(validator=_check_text)
    child: str = attrs.field(validator=_check_text)
    phase: TaskPhase = attrs.field(converter=_to_phase)
    error: str | None = attrs.field(default=None, validator=_check_optional_text)

    def __str__(self) -> str:
        detail = f": {bounded(self.error, FAILURE_TEXT_SHOWN)}" if self.error else ""
        where = bounded(self.supervisor, FAILURE_TEXT_SHOWN)
        return f"{where}: child {shown(self.child)} ended {self.phase.value}{detail}"


class SupervisorExhausted(TaskvisorError, RuntimeError):
    """Raised when the root supervisor of a tree gives up.

    A supervisor gives up when its restart budget (``Intensity``) is used up;
    a parent that sees a child supervisor give up applies its own strategy,
    so the failure climbs the tree until some supervisor absorbs it or the
    root gives up too. ``chain`` holds one ``Failure`` per supervisor that
    gave up, the original failure first and the one the root saw last;
    ``reason`` says why the root gave up.

    Attributes:
        chain: the failures, first cause first.
        reason: the root supervisor's reason for giving up, if known.
    """

    def __init__(self, chain: Iterable[Failure], reason: str | None = None) -> None:
        self.chain: tuple[Failure, ...] = tuple(chain)
        self.reason = reason
        super().__init__(self._message())

    @property
    def supervisor(self) -> str | None:
        """The path of the supervisor that gave up last (the root), if known."""
        return self.chain[-1].supervisor if self.chain else None

    def _message(self) -> str:
        root = self.supervisor
        head = "supervisor gave up" if root is None else f"supervisor {shown(root)} gave up"
        if self.reason:
            head += f" ({bounded(str(self.reason), FAILURE_TEXT_SHOWN)})"
        if not self.chain:
            return head
        lines = [head + "; chain of failures, first cause first:"]
        lines.extend(f"  {i}. {failure}" for i, failure in enumerate(self.chain, 1))
        return "\n".join(lines)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.chain, self.reason)


class ChildStartError(TaskvisorError, RuntimeError):
    """Raised when a supervisor cannot start (or restart) a child.

    The message shows at most ``FAILURE_TEXT_SHOWN`` (500) characters of the
    error; ``error`` keeps it whole.

    Attributes:
        child: the id of the child.
        error: why the start failed, as text.
    """

    def __init__(self, child: str, error: str) -> None:
        self.child = child
        self.error = error
        shown_error = bounded(str(error), FAILURE_TEXT_SHOWN)
        super().__init__(f"child {shown(child)} could not be started: {shown_error}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.child, self.error)


def invalid(field: str, problem: str, value: object) -> InvalidSpec:
    """Return an ``InvalidSpec`` for ``field`` reading ``"field: problem, got value"``.

    ``value`` is shown by ``shown``: cut to 80 characters, a huge int by its
    size, so no value can make the message long or its building fail.
    """
    exc = InvalidSpec(f"{field}: {problem}, got {shown(value)}")
    exc.field = field
    return exc


def prefixed(where: str, exc: InvalidData) -> InvalidSpec:
    """Return ``exc`` as an ``InvalidSpec`` with ``where`` put before each of its paths.

    ``where`` is a path like ``"children[2]"``: a problem ``"restart: ..."``
    becomes ``"children[2].restart: ..."``.
    """
    if not where:
        return exc if isinstance(exc, InvalidSpec) else _as_spec_error(exc)
    problems = tuple(_join(where, p) for p in exc.problems)
    new = InvalidSpec("; ".join(problems), problems if len(problems) > 1 else ())
    new.field = _join(where, exc.field) if exc.field else where
    return new


def _as_spec_error(exc: InvalidData) -> InvalidSpec:
    text = str(exc)
    new = InvalidSpec(text, exc.problems if len(exc.problems) > 1 else ())
    path, sep, _ = text.partition(": ")
    new.field = exc.field or (path if sep and path != "(top level)" else None)
    return new


def _join(where: str, text: str) -> str:
    if text.startswith("(top level)"):
        return where + text.removeprefix("(top level)")
    if text.startswith("["):
        return where + text
    return f"{where}.{text}"
