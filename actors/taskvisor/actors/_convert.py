"""The one private cattrs converter: model classes to plain JSON-able data and back.

``to_data`` turns any model object into dicts, lists, strings, numbers,
booleans and None; ``from_data`` builds the object back, equal to the
original. Input that does not fit raises ``InvalidData`` naming each bad
field by its path (``runs[0].phase: ...``).
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from ._errors import InvalidData
from ._model import Shutdown, target_path

__all__ = ["converter", "from_data", "to_data"]

T = TypeVar("T")

converter = cattrs.Converter(forbid_extra_keys=True)


def _unstructure_target(target: Callable[..., Any] | str | None) -> str | None:
    path = target_path(target)
    if target is not None and path is None:
        raise InvalidData(
            f"target: {target!r} has no import path; use a module-level function "
            "or a 'package.module:function' string to store or configure it"
        )
    return path


def _structure_target(value: Any, _type: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidData(f"expected a 'package.module:function' string, got {value!r}")


def _structure_shutdown(value: Any, _type: Any) -> Shutdown:
    if value == "brutal":
        return "brutal"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidData(f"expected seconds or 'brutal', got {value!r}")
    return float(value)


def _structure_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in cls)
        raise InvalidData(f"expected one of {choices}, got {value!r}") from None


def _unstructure_signal(value: signal.Signals) -> str:
    return value.name.removeprefix("SIG")


def _structure_signal(value: Any, _type: Any) -> Any:
    # A name ("TERM", "SIGTERM") or a number, handed to TaskSpec's converter,
    # which says which signals are allowed.
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return value
    raise InvalidData(f"expected a signal name such as 'TERM' or its number, got {value!r}")


def _structure_strict(kind: type) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _type: Any) -> Any:
        exact = type(value)
        if exact is not kind and not (kind is float and exact is int):
            raise InvalidData(f"expected {kind.__name__}, got {value!r}")
        return float(value) if kind is float else value

    return structure


converter.register_unstructure_hook_func(
    lambda t: t == (Callable[..., Any] | str | None), _unstructure_target
)
converter.register_structure_hook_func(
    lambda t: t == (Callable[..., Any] | str | None), _structure_target
)
converter.register_structure_hook_func(lambda t: t == Shutdown, _structure_shutdown)
converter.register_structure_hook_func(
    lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _structure_enum
)
# After the enum hook: the later registration wins for signal.Signals.
converter.register_unstructure_hook(signal.Signals, _unstructure_signal)
converter.register_structure_hook(signal.Signals, _structure_signal)
for _kind in (str, int, float, bool):
    converter.register_structure_hook(_kind, _structure_strict(_kind))
converter.register_unstructure_hook(tuple, list)


def to_data(obj: Any) -> Any:
    """Return ``obj`` as plain JSON-able data (dicts, lists, str, numbers, bool, None).

    Raises:
        InvalidData: when part of ``obj`` cannot be stored (a lambda target).
    """
    return converter.unstructure(obj)


def from_data(cls: type[T], data: Any, *, where: str = "") -> T:
    """Build a ``cls`` from plain data produced by ``to_data`` (or written by hand).

    Args:
        cls: the model class to build.
        data: plain data.
        where: a path prefix for error messages (``"children[2]"``).

    Raises:
        InvalidData: naming the path of every field that is unknown, missing or wrong.
    """
    if attrs.has(cls) and not isinstance(data, Mapping):
        raise InvalidData(
            f"{where or '(top level)'}: expected a mapping of {cls.__name__} fields, "
            f"got {type(data).__name__}"
        )
    try:
        return converter.structure(data, cls)
    except InvalidData as exc:
        raise type(exc)(_prefix(where, str(exc), exc.field)) from None
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as exc:
        problems = tuple(_describe(exc, where))
        raise InvalidData("; ".join(problems), problems) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidData(_prefix(where, f"cannot build {cls.__name__}: {exc}")) from None


def _prefix(where: str, message: str, field: str | None = None) -> str:
    if not where:
        return message
    if field is not None:
        return f"{where}.{message}"
    return f"{where}: {message}"


def _describe(exc: BaseException, where: str) -> list[str]:
    out: list[str] = []
    for line in cattrs.transform_error(exc, path="$", format_exception=_format):
        message, _, path = line.rpartition(" @ ")
        path = path.removeprefix("$").lstrip(".")
        field, sep, problem = message.partition(_FIELD)
        if sep:
            path, message = ".".join(p for p in (path, field) if p), problem
        full = ".".join(p for p in (where, path) if p).replace(".[", "[")
        out.append(f"{full or '(top level)'}: {message}")
    return out


_FIELD = "\x1f"  # marks "field<sep>problem" from a validator, joined to the path in _describe


def _format(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, InvalidData):
        text = str(exc)
        if exc.field is not None:
            return exc.field + _FIELD + text.removeprefix(exc.field + ": ")
        return text
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown field(s) {sorted(exc.extra_fields)}"
    return f"{type(exc).__name__}: {exc}"
