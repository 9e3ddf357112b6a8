"""Checks of the arguments of public constructors: what is refused, and how it is named.

Each check raises ``TypeError`` for a value of the wrong kind and
``InvalidData`` for one out of range, naming the argument and showing the
value cut short, before anything starts; each returns the value to keep.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from ._errors import InvalidData, shown


def hooks_of(value: object, where: str) -> list[Any]:
    """The subscribers given as ``hooks``: an iterable (not a string) of callables or hooks.

    Raises:
        TypeError: when it is not such an iterable, or holds something else.
    """
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(
            f"{where}: expected a list of hooks (TaskHooks or callables), got {shown(value)}"
        )
    hooks = list(value)
    for hook in hooks:
        if not callable(hook) and not callable(getattr(hook, "on_event", None)):
            raise TypeError(
                f"{where}: expected each hook to be a callable or a TaskHook, got {shown(hook)}"
            )
    return hooks


def clock_of(value: object, where: str) -> Any:
    """A ``clock`` given by the user: None, or an object with ``now()`` and ``call_later()``.

    Raises:
        TypeError: when it is neither.
    """
    if value is None or (
        callable(getattr(value, "now", None)) and callable(getattr(value, "call_later", None))
    ):
        return value
    raise TypeError(
        f"{where}: expected a Clock (with now() and call_later(), such as ManualClock), "
        f"got {shown(value)}"
    )


def count_of(value: object, where: str, *, low: int, none: bool = True) -> int | None:
    """A count given by the user: an int of at least ``low`` (or None when ``none``).

    Raises:
        TypeError: when it is not an int (``bool`` is not one here).
        InvalidData: when it is below ``low``.
    """
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        what = "an integer" + (" or None" if none else "")
        raise TypeError(f"{where}: expected {what}, got {shown(value)}")
    if value < low:
        raise InvalidData(f"{where}: expected an integer >= {low}, got {shown(value)}")
    return value


def finite_of(value: object, where: str, *, low: float, high: float) -> float:
    """A finite number of seconds given by the user, from ``low`` to ``high``.

    Raises:
        TypeError: when it is not a real number.
        InvalidData: when it is NaN, infinite or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: expected a number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = -math.inf if value < 0 else math.inf
    if not low <= number <= high:  # NaN too
        wanted = (
            "a finite number"
            if high == sys.float_info.max
            else f"a number from {_figure(low)} to {_figure(high)}"
        )
        raise InvalidData(f"{where}: expected {wanted}, got {shown(value)}")
    return number


def executors_of(value: object, where: str) -> dict[str, Any] | None:
    """The ``executors`` given by the user: None, or a mapping of kind names to executors.

    Raises:
        TypeError: when it is not a mapping of str to objects with ``start()``.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{where}: expected a mapping of kind names to executors, got {shown(value)}"
        )
    for kind, executor in value.items():
        if not isinstance(kind, str) or not callable(getattr(executor, "start", None)):
            raise TypeError(
                f"{where}: expected kind names mapped to executors (with start()), "
                f"got {shown(kind)}: {shown(executor)}"
            )
    return dict(value)


def store_of(value: object, where: str) -> Any:
    """A ``store`` given by the user: None, or an object with ``get()`` and ``put()``.

    Raises:
        TypeError: when it is neither.
    """
    if value is None or all(callable(getattr(value, name, None)) for name in ("get", "put")):
        return value
    raise TypeError(f"{where}: expected a TaskStore (such as SqliteStore), got {shown(value)}")


def _figure(number: float) -> str:
    """A bound as a reader writes it: ``2,147,483``, not ``2.14748e+06``."""
    if number.is_integer() and abs(number) < 1e18:
        return f"{int(number):,}"
    return f"{number:g}"
