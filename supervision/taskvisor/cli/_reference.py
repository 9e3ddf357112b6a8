"""Generate docs/tree-files.md, the tree-file reference, from the spec classes.

Run ``python -m taskvisor.cli._reference`` from the repository root to
rewrite ``docs/tree-files.md``; ``tests/test_tree_files.py`` fails while the
committed page differs from what ``tree_file_reference()`` returns. Every
field of every spec class is listed, with its type in a file, its default
and a line on what it does; a field added to a class appears here by
itself (described "see the class's description" until a line is written
for it in ``_ABOUT``).
"""

from __future__ import annotations

import enum
import inspect
import signal
import sys
import types
import typing
from pathlib import Path
from typing import Any

import attrs

from taskvisor.actors import KINDS, TaskSpec
from taskvisor.supervision import (
    Backoff,
    DynamicSupervisorSpec,
    Intensity,
    SupervisorSpec,
)

from . import _script

__all__ = ["PAGE", "tree_file_reference"]

#: Where the page lives, from the repository root.
PAGE = "docs/tree-files.md"
REGENERATE = "python -m taskvisor.cli._reference"

# What each field does, in one line (the class docstrings say more).
_ABOUT: dict[str, str] = {
    "name": (
        "The child's name: letters, digits and `_.:@+-` (at most 255 characters), "
        "unique among its siblings."
    ),
    "strategy": "What a child's end does to its siblings (OTP restart strategies).",
    "intensity": "The restart budget: more restarts than this and the supervisor gives up.",
    "children": "The children, in start order: tasks and supervisors.",
    "template": "The child spec each dynamically added child is copied from.",
    "max_children": "At most this many children at once (not set: no limit).",
    "backoff": "A delay before each restart, growing with consecutive restarts.",
    "child_intensity": "A restart budget per child, besides the supervisor's own.",
    "auto_shutdown": "Whether the end of significant children shuts the supervisor down.",
    "restart": "When this child is restarted after it ends.",
    "shutdown": "The grace, in seconds, a stopping child gets before it is killed.",
    "significant": "Whether this child's end can shut its supervisor down (auto_shutdown).",
    "labels": "Free-form string labels, carried into events and records.",
    "kind": f"What runs: {', '.join(sorted(KINDS))}.",
    "target": 'The function to run, as `"package.module:function"`; called as '
    "`fn(ctx, *args, **kwargs)`.",
    "args": "Positional arguments for the target, after the task context.",
    "kwargs": "Keyword arguments for the target.",
    "command": "The program and its arguments (a subprocess task).",
    "env": "Environment variables added to the host's for the subprocess.",
    "cwd": "The subprocess's working directory (not set: the host's).",
    "shell": "Run `command` (one string in the list) through the shell.",
    "timeout": "Seconds an attempt may run before it ends as a timeout (not set: no limit).",
    "stdout": (
        "Where a subprocess's standard output goes: inherit, prefix, null or a file path "
        "(a relative path is relative to the working directory, not the tree file's folder)."
    ),
    "stderr": "Where its standard error goes: as `stdout`, or `stdout` to merge them.",
    "output_max_bytes": "Rotate an output file at this size in bytes (0: never).",
    "output_backups": "How many rotated output files are kept (0 to 1000).",
    "stop_signal": "The signal a graceful stop sends to the subprocess's process group.",
    "success_exit_codes": "The exit codes that count as success.",
    "max_restarts": "How many restarts are allowed within the window.",
    "within": "The window, in seconds.",
    "initial": "The delay before the first restart, in seconds.",
    "maximum": "The longest delay, in seconds.",
    "multiplier": "Each consecutive restart waits this many times longer.",
    "jitter": "Spread each delay by up to this fraction of itself (0 to 1).",
    "reset_after": "A child that ran this long starts its count afresh (not set: never).",
    "seed": "The seed of the jitter's random numbers (not set: the tree's).",
}

_CHILD_CLASSES = (TaskSpec, SupervisorSpec, DynamicSupervisorSpec)
_NAMES: dict[Any, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    Any: "any value",
    Intensity: "table: [intensity](#intensity-and-child_intensity)",
    Backoff: "table: [backoff](#backoff)",
}


def _type(attribute: attrs.Attribute[Any]) -> str:
    if attribute.name == "target":
        return 'string `"module:function"`'
    if attribute.name == "kind":
        return " or ".join(f'`"{k}"`' for k in sorted(KINDS))
    return _render(attribute.type)


def _is_children(kind: Any) -> bool:
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    return union and set(typing.get_args(kind)) <= set(_CHILD_CLASSES)


def _render(kind: Any) -> str:
    """How a file writes a value of the (resolved) type ``kind``."""
    if kind in _NAMES:
        return _NAMES[kind]
    if isinstance(kind, type) and issubclass(kind, signal.Signals):
        return 'string (`"TERM"`, `"SIGINT"`, ...) or integer'
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return " or ".join(f'`"{m.value}"`' for m in kind)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Literal:
        return " or ".join(f'`"{a}"`' for a in args)
    if _is_children(kind):
        return "table: a task or a supervisor"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_render(a) for a in args if a is not type(None))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if _is_children(args[0]):
            return "array of tables: tasks and supervisors"
        return "array" if args[0] is Any else f"array of {_render(args[0])}s"
    if origin is dict:
        return "table" if args[1] is Any else f"table of {_render(args[1])}s"
    return f"`{kind}`"  # pragma: no cover - a type no spec field has yet


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        if isinstance(value, signal.Signals):
            return f'`"{value.name.removeprefix("SIG")}"`'
        return f'`"{value.value}"`'
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(_value(v).strip("`") for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value!r}`"


def _default(cls: type, attribute: attrs.Attribute[Any]) -> str:
    default = attribute.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        make: Any = default.factory  # type: ignore[union-attr]
        default = make()
    if default is None:
        return "not set"
    convert: Any = attribute.converter
    if convert is not None:
        try:
            default = convert(default)
        except Exception:  # pragma: no cover - a default its converter refuses
            return f"`{default!r}`"
    if cls is Intensity or cls is Backoff or not isinstance(default, (Intensity, Backoff)):
        return _value(default)
    return "`" + ", ".join(f"{k} = {v!r}" for k, v in attrs.asdict(default).items()) + "`"


def _table(cls: type, skip: tuple[str, ...] = ()) -> list[str]:
    lines = ["| field | type in a file | default | what it does |", "|---|---|---|---|"]
    for attribute in attrs.fields(cls):
        if not attribute.init or attribute.name in skip:
            continue
        about = _ABOUT.get(attribute.name, "See the description above.")
        lines.append(
            f"| `{attribute.name}` | {_type(attribute)} | {_default(cls, attribute)} | {about} |"
        )
    return lines


def _described_module(doc: str) -> list[str]:
    """A module docstring without its first line (the title), as Markdown."""
    body = inspect.cleandoc(doc).partition("\n")[2].strip()
    return [body.replace("``", "`"), ""]


def _described(cls: type) -> list[str]:
    """The class docstring, without its Raises section, as Markdown."""
    text = inspect.cleandoc(cls.__doc__ or "")
    text = text.split("\nRaises:", 1)[0].strip()
    return [text.replace("``", "`"), ""]


_INTRO = """\
# Tree files

<!-- Generated from the spec classes by `{regenerate}` (run from the
repository root); tests/test_tree_files.py fails while this page differs
from what it writes. Do not edit by hand. -->

A tree file describes one supervision tree: the root supervisor's fields at
the top level, and its `children` in start order. `taskvisor run TREE` runs
it, `taskvisor check TREE` finds every problem in it without starting
anything, and `taskvisor simulate TREE SCRIPT` plays timed failures against
it; see [the command line](cli.md). In Python, `load_tree_file(path)`
returns its spec, `check_tree_file(path)` its problems and
`write_tree_file(spec, path)` writes one.

- **Formats**, by suffix: `.toml` (read with the standard library's
  `tomllib`), `.json`, and `.yaml` / `.yml` (needs PyYAML:
  `pip install 'taskvisor[yaml]'`).
- **Which table is what**: a table with `children` is a supervisor, one with
  `template` a dynamic supervisor, any other a task. The top level is always
  a supervisor.
- **Environment variables**: in every string, `${{VAR}}` is the variable's
  value (an unset one is a problem), `${{VAR:-default}}` its value or
  `default` when it is unset or empty, and `$${{` a literal `${{`. Keys are
  not expanded, and a value stays a string: write numbers as numbers.
- **Targets** (`"module:function"`) import relative to the file's
  directory, which `taskvisor run` and `taskvisor check` put first on
  `sys.path` (as supervisord's `directory`).
- **Problems** are printed as `FILE:LINE: path: problem`, for example
  `tree.toml:12: children[2].restart: expected one of permanent, transient,
  temporary, got 'always'`; the line is known for JSON and YAML, and for
  TOML values written as `key = value` under `[table]` and `[[array]]`
  headers.
- **Writing**: only what differs from the defaults is written, and never a
  null (a None inside a task's `args` or `kwargs` is the task's own data:
  JSON and YAML write it, TOML cannot), so a file read and written again
  is unchanged.

The example the README runs, `examples/quickstart.toml`:

```toml
{quickstart}```
"""


def tree_file_reference(root: Path | None = None) -> str:
    """Return the Markdown of the tree-file reference page.

    Args:
        root: the repository root, whose examples/quickstart.toml the page
            shows (default: the current directory).
    """
    root = Path.cwd() if root is None else root
    quickstart = (root / "examples" / "quickstart.toml").read_text()
    lines = [_INTRO.format(regenerate=REGENERATE, quickstart=quickstart)]
    lines += ["## Supervisor", "", "The top level, or a table with `children`.", ""]
    lines += _described(SupervisorSpec) + _table(SupervisorSpec) + [""]
    lines += ["## Dynamic supervisor", "", "The top level, or a table with `template`.", ""]
    lines += _described(DynamicSupervisorSpec) + _table(DynamicSupervisorSpec) + [""]
    lines += ["## Task", "", "Any other table.", ""]
    lines += _described(TaskSpec) + _table(TaskSpec) + [""]
    lines += ["## intensity and child_intensity", ""]
    lines += _described(Intensity) + _table(Intensity) + [""]
    lines += ["## backoff", ""]
    lines += _described(Backoff) + _table(Backoff) + [""]
    lines += ["## Simulation scripts", ""]
    lines += _described_module(_script.__doc__ or "")
    lines += ["For example, `examples/quickstart_failures.toml`:", "", "```toml"]
    lines += [(root / "examples" / "quickstart_failures.toml").read_text().rstrip(), "```"]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    """Write the page from the repository root (the current directory)."""
    Path(PAGE).write_text(tree_file_reference(), encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a script, tested through main()
    sys.exit(main())
