"""Present re-exported names under their public module."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["publish"]


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
