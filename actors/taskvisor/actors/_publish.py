"""Present re-exported names under their public module."""

from __future__ import annotations

import logging
from typing import Any

import attrs

__all__ = ["logging_wanted", "publish"]


def publish(module: str, names: dict[str, Any]) -> None:
    """Set ``__module__`` of each object defined in a private submodule to ``module``.

    Type hints of attrs classes are resolved first, against the private
    module they were written in, so cattrs still finds them afterwards.
    """
    for obj in names.values():
        if not getattr(obj, "__module__", "").startswith(module + "._"):
            continue
        if attrs.has(obj):
            attrs.resolve_types(obj)
        obj.__module__ = module


def logging_wanted(logger: logging.Logger, level: int) -> bool:
    """Whether a record at ``level`` would reach a handler that is not a ``NullHandler``.

    The library installs a ``NullHandler`` so that it prints nothing unless the
    application configures logging; on a hot path (each restart) this check
    skips building a record that would go nowhere: about a quarter of a
    supervisor's work per restart (``benchmarks/bench_supervision.py``).
    """
    if not logger.isEnabledFor(level):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if not isinstance(handler, logging.NullHandler) and level >= handler.level:
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False
