"""Tree files: a supervision tree in a TOML, JSON or YAML file, read, checked and written.

A tree file holds what ``spec_from_data`` accepts. The format follows the
file's suffix: ``.toml`` (read with the standard library's ``tomllib``),
``.json``, or ``.yaml`` / ``.yml`` (needs PyYAML: ``pip install
'taskvisor[yaml]'``). Every string value may name environment variables:
``${VAR}`` is the variable's value (an unset one is a problem),
``${VAR:-default}`` the value or ``default`` when it is unset or empty,
and ``$${`` a literal ``${``. Keys are never expanded, and a value stays a
string (``timeout = "${T:-5}"`` is the string ``"5"``, which a timeout
refuses: write numbers as numbers).

Problems are reported with the file's line where it is known (JSON and
YAML always; TOML for values written as ``key = value`` under ``[table]``
and ``[[array]]`` headers, not inside inline tables), as
``FILE:LINE: children[2].target: problem``.

``check_tree_file`` finds every problem without starting anything: the
tree's shape, unknown kinds, targets that cannot be imported (relative to
the file's directory, which is put on ``sys.path``, as supervisord's
``directory``), ``async def`` targets of ``call`` tasks, and commands that
are not found.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import inspect
import json
import math
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeAlias

import attrs

from taskvisor.actors import KINDS, InvalidSpec, TargetImportError, resolve_target
from taskvisor.actors._errors import MAX_SHOWN, bounded, cut, shown
from taskvisor.actors._model import bound_text, is_async_def, is_output_file

from ._spec import MAX_DEPTH, DynamicSupervisorSpec, SupervisorSpec, spec_from_data, spec_problems

__all__ = [
    "FileFormat",
    "TreeFileError",
    "TreeFileProblem",
    "check_tree_file",
    "dump_tree",
    "load_tree_file",
    "read_tree_data",
    "toml_dumps",
    "write_tree_file",
]

#: The formats of tree files, named as their usual suffix.
FileFormat: TypeAlias = Literal["toml", "json", "yaml"]

_SUFFIXES: dict[str, FileFormat] = {
    ".toml": "toml",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
}
YAML_HINT = "install the yaml extra: pip install 'taskvisor[yaml]'"

# A path at the start of a problem's text: "(top level)" or "children[2].target".
_PATH = re.compile(r"^(\(top level\)|[^\s:]+): ")


@attrs.frozen
class TreeFileProblem:
    """One problem in a tree file.

    Attributes:
        file: the file's path, as given.
        line: the 1-based line the problem is on, or None when unknown.
        path: the field path (``"children[2].target"``; ``""`` for the file
            or its top level).
        text: the problem, starting with its path (``"children[2].target:
            cannot import module 'app'"``).
    """

    file: str
    line: int | None
    path: str
    text: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.text}"


class TreeFileError(InvalidSpec):
    """Raised when a tree file cannot be read, or what it holds is not a valid tree.

    ``str()`` lists every problem found, one per line, each as
    ``FILE:LINE: path: problem``.

    Attributes:
        found: the problems, in file order where known.
    """

    def __init__(self, found: tuple[TreeFileProblem, ...]) -> None:
        self.found = found
        texts = tuple(str(p) for p in found)
        super().__init__("\n".join(texts), texts)
        self.field = found[0].path or None if found else None


@attrs.frozen
class TreeData:
    """What a tree file holds, read and expanded.

    Attributes:
        file: the file's path, as given.
        format: its format.
        data: the data, with ``${VAR}`` references expanded.
        lines: the 1-based line of each field path that the reader located.
    """

    file: str
    format: FileFormat
    data: Any
    lines: Mapping[str, int]

    def line_of(self, path: str) -> int | None:
        """The line of ``path``, or of the nearest enclosing path that was located."""
        while True:
            line = self.lines.get(path)
            if line is not None or not path:
                return line
            cut = max(path.rfind("."), path.rfind("["))
            path = path[: max(cut, 0)]

    def problem(self, text: str, path: str | None = None) -> TreeFileProblem:
        """A problem whose text starts with its path (or names ``path``)."""
        if path is None:
            found = _PATH.match(text)
            path = found.group(1) if found else ""
            if path == "(top level)":
                path = ""
        return TreeFileProblem(self.file, self.line_of(path), path, text)


def format_of(path: str | os.PathLike[str]) -> FileFormat:
    """Return the format of a tree file by its suffix.

    Raises:
        TreeFileError: when the suffix is none of .toml, .json, .yaml, .yml,
            or the path holds a NUL byte.
        TypeError: when ``path`` is not a str or a ``Path``.
    """
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise TypeError(f"path: expected a str or a Path, got {shown(path)}")
    if "\x00" in os.fspath(path):  # no file has such a name: say so, not ValueError
        raise _file_error(shown(os.fspath(path)), "not a file name: it holds a NUL byte")
    suffix = Path(path).suffix.lower()
    found = _SUFFIXES.get(suffix)
    if found is None:
        raise _file_error(
            path,
            f"unknown tree file suffix {suffix or '(none)'!r}: "
            "expected .toml, .json, .yaml or .yml",
        )
    return found


def _file_error(path: str | os.PathLike[str], text: str, line: int | None = None) -> TreeFileError:
    return TreeFileError((TreeFileProblem(os.fspath(path), line, "", text),))


# --------------------------------------------------------------------------- reading


def read_tree_data(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> TreeData:
    """Read a tree file and expand the ``${VAR}`` references in its strings.

    Args:
        path: the file; its suffix gives the format.
        environ: the variables to expand (default: ``os.environ``).

    Raises:
        TreeFileError: when the file cannot be read, is not valid TOML, JSON
            or YAML (with the line of the syntax error), holds what its
            parser refuses (an integer of more than
            ``sys.get_int_max_str_digits()`` digits, nesting too deep, a YAML
            value its tag does not take), needs PyYAML that is not installed
            (naming ``pip install 'taskvisor[yaml]'``), or refers to
            variables that are unset (each one named by path).
    """
    tree, problems = _read(path, environ)
    if problems:
        raise TreeFileError(tuple(problems))
    return tree


def _read(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None
) -> tuple[TreeData, list[TreeFileProblem]]:
    """The tree data and the problems of its ``${VAR}`` references (left as they are)."""
    fmt = format_of(path)  # checks the path's type too
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _file_error(file, f"cannot read: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise _file_error(file, f"cannot read: {exc.strerror or exc}") from None
    if fmt == "toml":
        data, lines = _read_toml(file, text)
    elif fmt == "json":
        data, lines = _read_json(file, text)
    else:
        data, lines = _read_yaml(file, text)
    raw = TreeData(file, fmt, data, lines)
    problems: list[TreeFileProblem] = []
    expanded = _Expander(os.environ if environ is None else environ, raw, problems).value(data, "")
    return TreeData(file, fmt, expanded, lines), problems


def _read_toml(file: str, text: str) -> tuple[Any, dict[str, int]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
        line = int(found.group(1)) if found else None
        message = message[: found.start()] if found else message
        raise _file_error(file, f"invalid TOML: {message}", line) from None
    except RecursionError:
        raise _file_error(file, "invalid TOML: nested too deeply") from None
    except ValueError as exc:  # int() refused a literal: tomllib lets that through
        line = _long_integer_line(text, _TOML_SKIP)
        raise _file_error(file, f"invalid TOML: {_refused(exc)}", line) from None
    return data, _toml_lines(text)


def _read_json(file: str, text: str) -> tuple[Any, dict[str, int]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _file_error(file, f"invalid JSON: {exc.msg}", exc.lineno) from None
    except RecursionError:
        raise _file_error(file, "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # int() refused a literal: json lets that through
        line = _long_integer_line(text, _JSON_SKIP)
        raise _file_error(file, f"invalid JSON: {_refused(exc)}", line) from None
    return data, _json_lines(text)


def _read_yaml(file: str, text: str) -> tuple[Any, dict[str, int]]:
    try:
        import yaml
    except ImportError:
        raise _file_error(file, f"reading a YAML tree file needs PyYAML: {YAML_HINT}") from None
    try:
        data = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _file_error(file, bounded(f"invalid YAML: {problem}"), line) from None
    except RecursionError:
        raise _file_error(file, "invalid YAML: nested too deeply") from None
    if data is None:
        raise _file_error(file, "the file holds no tree (it is empty)")
    return data, _yaml_lines(node)


@functools.cache  # made on first use: PyYAML is optional
def _yaml_loader() -> type[Any]:
    """A ``SafeLoader`` whose every failure to build a value is a ``YAMLError`` with its line.

    PyYAML's own constructors let ``int()``, ``float()`` and ``datetime``
    errors through (``!!int abc``, ``2021-02-30``, an integer of more than
    ``sys.get_int_max_str_digits()`` digits), with no line.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ValueError, ArithmeticError, LookupError, TypeError, AttributeError) as exc:
                problem = _refused(exc, node)
                raise yaml.constructor.ConstructorError(
                    None, None, problem, node.start_mark
                ) from None

    return Loader


def _refused(exc: Exception, node: Any = None) -> str:
    """Why a parser refused a value, in a short sentence saying how to fix it when known."""
    text = str(exc)
    if isinstance(exc, ValueError) and "integer string conversion" in text:  # int()'s limit
        return (
            f"an integer of more than {sys.get_int_max_str_digits()} digits, "
            "which Python refuses to read; no field takes a number that large "
            "(the largest count is 2**63 - 1)"
        )
    if node is None:
        return cut(f"{type(exc).__name__}: {text}", MAX_SHOWN)
    tag = str(node.tag).rpartition(":")[2]
    value = shown(node.value) if isinstance(node.value, str) else "the value"
    reason = f" ({cut(text, MAX_SHOWN)})" if isinstance(exc, ValueError) and text else ""
    return f"{value} is not a valid {cut(tag, MAX_SHOWN)}{reason}"


# What a long run of digits may sit in without being an integer literal.
_JSON_SKIP = r'"(?:[^"\\\n]|\\.)*"'  # a string
_TOML_SKIP = "|".join(
    (
        r'"""(?:[^\\]|\\.)*?"""',  # a multi-line basic string
        r"'''.*?'''",  # a multi-line literal string
        r'"(?:[^"\\\n]|\\.)*"',  # a basic string
        r"'[^'\n]*'",  # a literal string
        r"#[^\n]*",  # a comment
    )
)


def _long_integer_line(text: str, skip: str) -> int | None:
    """The line of the first integer literal with more digits than ``int()`` reads, if any.

    Strings and comments (what ``skip`` matches) are passed over; a digit
    run that is part of a float, a word or a key is not an integer.
    """
    limit = sys.get_int_max_str_digits()
    if limit <= 0:
        return None
    literal = re.compile(rf"{skip}|(?<![\w.])(\d[\d_]*)(?![\w.]|\s*=)", re.DOTALL)
    for found in literal.finditer(text):
        digits = found.group(1)
        if digits is not None and len(digits) - digits.count("_") > limit:
            return text.count("\n", 0, found.start(1)) + 1
    return None


def _join(path: str, key: object) -> str:
    key = key if isinstance(key, str) else str(key)
    return f"{path}.{key}" if path else key


class _Lines:
    """Line numbers of offsets in a text."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]

    def of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)


def _json_lines(text: str) -> dict[str, int]:
    """Map each field path of a (valid) JSON text to its line; best effort, never raises."""
    lines: dict[str, int] = {}
    at = _Lines(text)
    decoder = json.JSONDecoder()
    space = re.compile(r"\s*")

    def skip(pos: int) -> int:
        found = space.match(text, pos)
        return found.end() if found else pos

    def value(pos: int, path: str, depth: int) -> int:
        pos = skip(pos)
        lines.setdefault(path, at.of(pos))
        opening = text[pos]
        if depth > 200 or opening not in "{[":
            return decoder.raw_decode(text, pos)[1]
        closing = "}" if opening == "{" else "]"
        pos = skip(pos + 1)
        index = 0
        if text[pos] == closing:
            return pos + 1
        while True:
            if opening == "{":
                key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
                where = _join(path, key)
                lines[where] = at.of(pos)
                pos = skip(pos) + 1  # the colon
            else:
                where = f"{path}[{index}]"
                index += 1
            pos = skip(value(pos, where, depth + 1))
            if text[pos] == closing:
                return pos + 1
            pos = skip(pos + 1)  # the comma

    # The text parsed: a failure here can only be a nesting too deep to walk.
    with contextlib.suppress(ValueError, IndexError, RecursionError):
        value(0, "", 0)
    return lines


def _yaml_lines(root: Any) -> dict[str, int]:
    """Map each field path of a composed YAML node tree to its line (shared nodes once)."""
    import yaml

    lines: dict[str, int] = {}
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in seen:
            continue
        seen.add(id(node))
        # Pushed last first, so a shared node is walked at its first place in the file.
        if isinstance(node, yaml.MappingNode):
            for key, item in reversed(node.value):
                where = _join(path, key.value)
                lines.setdefault(where, key.start_mark.line + 1)
                stack.append((item, where))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(
                (item, f"{path}[{i}]") for i, item in reversed(list(enumerate(node.value)))
            )
    return lines


_TOML_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.-]+|\"[^\"]*\"|'[^']*')\s*=")


def _toml_lines(text: str) -> dict[str, int]:
    """Map field paths of a (valid) TOML text to lines: headers and ``key =`` lines."""
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}  # array of tables (concrete path) -> index of its last element
    table = ""
    quote: str | None = None  # inside a multi-line string opened by this
    for number, line in enumerate(text.splitlines(), 1):
        if quote is not None:
            if line.count(quote) % 2:
                quote = None
            continue
        header = _TOML_HEADER.match(line)
        if header:
            parts = [p.strip().strip("\"'") for p in header.group(2).split(".")]
            table = ""
            for i, part in enumerate(parts):
                table = _join(table, part)
                last = i == len(parts) - 1
                if last and header.group(1) == "[[":
                    counts[table] = counts.get(table, -1) + 1
                    table = f"{table}[{counts[table]}]"
                elif table in counts:
                    table = f"{table}[{counts[table]}]"
            lines.setdefault(table, number)
            continue
        key = _TOML_KEY.match(line)
        if key:
            name = key.group(1)
            parts = [name[1:-1]] if name[0] in "\"'" else name.split(".")
            where = table
            for part in parts:
                where = _join(where, part)
            lines.setdefault(where, number)
            for mark in ('"""', "'''"):
                if line.count(mark) % 2:
                    quote = mark
    return lines


# --------------------------------------------------------------------------- ${VAR}

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


class _Expander:
    """Expands ``${VAR}`` in every string of a tree's data, each container once."""

    def __init__(
        self, environ: Mapping[str, str], raw: TreeData, problems: list[TreeFileProblem]
    ) -> None:
        self.environ = environ
        self.raw = raw
        self.problems = problems
        self.done: dict[int, Any] = {}  # id of a container -> its expanded copy

    def value(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            return self.text(value, path) if "$" in value else value
        if not isinstance(value, (list, dict)):
            return value
        key = id(value)
        if key in self.done:  # a YAML alias: shared, expanded once
            return self.done[key]
        out: Any
        if isinstance(value, list):
            out = self.done[key] = []
            try:
                out.extend(self.value(item, f"{path}[{i}]") for i, item in enumerate(value))
            except RecursionError:  # pragma: no cover - the parsers refuse such depths first
                return value  # too deep for a tree anyway: spec_from_data names it
        else:
            out = self.done[key] = {}
            try:
                for k, item in value.items():
                    out[k] = self.value(item, _join(path, k))
            except RecursionError:  # pragma: no cover - as above
                return value
        return out

    def text(self, value: str, path: str) -> str:
        def replace(found: re.Match[str]) -> str:
            whole = found.group(0)
            if whole == "$${":
                return "${"
            name = found.group(1)
            if name is None:
                self.problems.append(
                    self.raw.problem(
                        f"{path or '(top level)'}: a '${{' that is not a reference: "
                        "write ${NAME} or ${NAME:-default}, or $${ for a literal '${'",
                        path,
                    )
                )
                return whole
            default = found.group(2)
            got = self.environ.get(name)
            if default is not None:
                return got if got else default
            if got is None:
                self.problems.append(
                    self.raw.problem(
                        f"{path or '(top level)'}: environment variable {name!r} is not set "
                        f"(set it, or give a default: ${{{name}:-value}})",
                        path,
                    )
                )
                return whole
            return got

        return _REFERENCE.sub(replace, value)


# --------------------------------------------------------------------------- loading and checking


def load_tree_file(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> SupervisorSpec | DynamicSupervisorSpec:
    """Read a tree file and build its spec (checking its shape only; nothing is imported).

    Args:
        path: the file; its suffix gives the format.
        environ: the variables ``${VAR}`` expands (default: ``os.environ``).

    Raises:
        TreeFileError: when the file cannot be read or expanded, or is not a
            valid tree; every problem of its shape is listed with its line.
    """
    tree = read_tree_data(path, environ=environ)
    try:
        return spec_from_data(tree.data)
    except InvalidSpec:
        problems = spec_problems(tree.data)
        raise TreeFileError(
            _sorted(tree, [tree.problem(str(p)) for p in _texts(problems)])
        ) from None


def _texts(errors: list[InvalidSpec]) -> list[str]:
    return [text for exc in errors for text in exc.problems]


def _sorted(tree: TreeData, problems: list[TreeFileProblem]) -> tuple[TreeFileProblem, ...]:
    """Problems in file order (those without a line last), each text once."""
    unique = list({p.text: p for p in problems}.values())
    return tuple(sorted(unique, key=lambda p: math.inf if p.line is None else p.line))


def check_tree_file(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> tuple[SupervisorSpec | DynamicSupervisorSpec | None, tuple[TreeFileProblem, ...]]:
    """Find every problem in a tree file without starting anything.

    Checks the shape (every problem ``spec_from_data`` would name, one per
    child), that each kind is known, that each ``call``/``async`` target
    imports and is callable (``async def`` for ``call`` is a problem), and
    that each subprocess program is found (a path with a ``/``, relative to
    the task's ``cwd``, must be an executable file; a bare name must be on
    the task's ``PATH``). The file's directory is put first on ``sys.path``
    (and left there) so targets import relative to it; importing a target's
    module runs that module's top level, as ``taskvisor run`` would.

    Args:
        path: the file; its suffix gives the format.
        environ: the variables ``${VAR}`` expands (default: ``os.environ``).

    Returns:
        The spec (None when its shape is invalid) and the problems, in file
        order; no problems means the tree can be started.
    """
    try:
        tree, problems = _read(path, environ)
    except TreeFileError as exc:
        return None, exc.found
    shape = spec_problems(tree.data)
    problems.extend(tree.problem(text) for text in _texts(shape))
    spec = None if shape or problems else spec_from_data(tree.data)
    blamed = {p.path for p in problems}
    add_to_sys_path(Path(tree.file).resolve().parent)
    for where, task in _tasks(tree.data, ""):
        for text in _task_problems(task, where):
            found = tree.problem(text)
            if not any(_overlaps(found.path, other) for other in blamed):
                problems.append(found)
    return spec, _sorted(tree, problems)


def _overlaps(path: str, other: str) -> bool:
    """Whether one of two field paths is the other or inside it."""
    short, long = sorted((path, other), key=len)
    return long == short or long.startswith((f"{short}.", f"{short}["))


def add_to_sys_path(directory: Path) -> None:
    """Put ``directory`` first on ``sys.path`` (once), so targets import relative to it."""
    entry = str(directory)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _tasks(data: Any, path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The task mappings of a tree's data, with their paths (anything else is skipped)."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    stack: list[tuple[Any, str, int]] = [(data, path, 0)]
    while stack:
        node, where, depth = stack.pop()
        if not isinstance(node, Mapping) or depth > MAX_DEPTH:
            continue  # too deep: the shape check names it
        if depth and "children" not in node and "template" not in node:
            found.append((where, node))
            continue
        if "template" in node:
            stack.append((node["template"], _join(where, "template"), depth + 1))
        children = node.get("children")
        if isinstance(children, list):
            stack.extend(
                (child, f"{_join(where, 'children')}[{i}]", depth + 1)
                for i, child in reversed(list(enumerate(children)))
            )
    return found


def _task_problems(task: Mapping[str, Any], path: str) -> list[str]:
    kind = task.get("kind", "call")
    if not isinstance(kind, str):
        return []  # the shape check names it
    if kind not in KINDS:
        return [
            f"{_join(path, 'kind')}: unknown kind {kind!r} "
            f"(valid kinds: {', '.join(sorted(KINDS))})"
        ]
    if kind == "subprocess":
        return _command_problems(task, path) + _output_problems(task, path)
    target = task.get("target")
    if not isinstance(target, str):
        return []
    where = _join(path, "target")
    try:
        function = resolve_target(target, where)
    except TargetImportError as exc:
        return [str(exc)]
    except (Exception, SystemExit) as exc:  # a module whose top level raises or exits
        return [f"{where}: importing {target!r} raised {type(exc).__name__}: {exc}"]
    if kind == "call" and is_async_def(function):
        return [
            f"{where}: {target!r} is an async def function but the task's kind is 'call' "
            '(it would return a coroutine that never runs): set kind = "async"'
        ]
    return _call_problems(function, target, task, where)


def _call_problems(function: Any, target: str, task: Mapping[str, Any], where: str) -> list[str]:
    """Whether ``function(ctx, *args, **kwargs)`` binds: what the executors call."""
    args, kwargs = task.get("args", []), task.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, Mapping):
        return []  # the shape check names them
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell
        return []
    try:
        signature.bind(None, *args, **{str(k): v for k, v in kwargs.items()})
    except TypeError as exc:
        return [
            f"{where}: {target!r} cannot be called with the task's context, args and kwargs "
            f"({exc}); a target is called as fn(ctx, *args, **kwargs)"
        ]
    return []


def _command_problems(task: Mapping[str, Any], path: str) -> list[str]:
    command = task.get("command")
    if (
        not isinstance(command, list)
        or not command
        or not isinstance(command[0], str)
        or task.get("shell") is True
    ):
        return []  # the shape check names a bad command; a shell command is the shell's
    program = command[0]
    where = _join(path, "command")
    cwd = task.get("cwd")
    env = task.get("env")
    if os.sep in program:
        full = program if not isinstance(cwd, str) else os.path.join(cwd, program)
        if not os.path.exists(full):
            return [f"{where}: program {program!r} does not exist"]
        if not os.path.isfile(full) or not os.access(full, os.X_OK):
            return [f"{where}: program {program!r} is not an executable file"]
        return []
    search = env.get("PATH") if isinstance(env, Mapping) else None
    search = search if isinstance(search, str) else os.environ.get("PATH", os.defpath)
    if shutil.which(program, path=search) is None:
        return [f"{where}: program {program!r} not found on PATH"]
    return []


def _output_problems(task: Mapping[str, Any], path: str) -> list[str]:
    """Output files whose folder is missing or not writable (opened relative to the host's cwd)."""
    problems = []
    for stream in ("stdout", "stderr"):
        mode = task.get(stream)
        if not isinstance(mode, str) or not is_output_file(mode):
            continue
        folder = os.path.dirname(os.path.abspath(mode))
        if not os.path.isdir(folder):
            problems.append(
                f"{_join(path, stream)}: the folder {folder!r} of the output file does not exist "
                "(create it first; a relative path is relative to the working directory)"
            )
        elif not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"{_join(path, stream)}: cannot write in the folder {folder!r}")
    return problems


# --------------------------------------------------------------------------- writing


def dump_tree(spec: SupervisorSpec | DynamicSupervisorSpec, fmt: FileFormat) -> str:
    """Return ``spec`` as the text of a tree file in format ``fmt``.

    Only what differs from the defaults is written (``spec_to_data``);
    ``load_tree_file`` of the text builds an equal spec.

    Raises:
        InvalidSpec: when ``fmt`` is not a format, a target has no import
            path (a lambda), or (TOML) a task's arguments hold a None, which
            TOML cannot hold.
        TreeFileError: ``yaml`` without PyYAML installed.
    """
    from ._spec import spec_to_data

    if fmt not in ("toml", "json", "yaml"):
        raise InvalidSpec(f"fmt: expected 'toml', 'json' or 'yaml', got {shown(fmt)}")
    data = _escaped(spec_to_data(spec))
    try:
        return _dump(data, fmt)
    except InvalidSpec:
        raise
    except Exception as exc:  # a value in args/kwargs the format cannot hold (a set, bytes)
        raise InvalidSpec(
            f"args/kwargs: a value {fmt} cannot write: {type(exc).__name__}: "
            f"{bound_text(str(exc), 200)}"
        ) from None


def _dump(data: Any, fmt: FileFormat) -> str:
    if fmt == "toml":
        return toml_dumps(data)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        import yaml
    except ImportError:
        raise _file_error("(yaml)", f"writing YAML needs PyYAML: {YAML_HINT}") from None

    class Dumper(yaml.SafeDumper):
        """Double-quotes a string holding a Unicode line break, which it then escapes.

        PyYAML writes NEL (U+0085) raw in a single-quoted string when
        ``allow_unicode`` is on, and reads it back as a line break.
        """

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = '"' if _UNICODE_BREAKS.search(value) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent_str)
    text: str = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True)
    return text


_UNICODE_BREAKS = re.compile("[\x85\u2028\u2029]")


def _escaped(value: Any) -> Any:
    """``value`` with each ``${`` in its strings written ``$${``, so reading gives it back."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    return value


def write_tree_file(
    spec: SupervisorSpec | DynamicSupervisorSpec, path: str | os.PathLike[str]
) -> None:
    """Write ``spec`` to a tree file, in the format its suffix names (see ``dump_tree``).

    Raises:
        TreeFileError: for an unknown suffix, or when the file cannot be
            written (its folder is missing, no permission); nothing is written.
        InvalidSpec: as ``dump_tree``.
        TypeError: when ``path`` is not a str or a ``Path``.
    """
    fmt = format_of(path)  # checks the path's type too
    text = dump_tree(spec, fmt)
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _file_error(path, f"cannot write: {exc.strerror or exc}") from None


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


def _toml_string(text: str) -> str:
    def escape(found: re.Match[str]) -> str:
        char = found.group(0)
        return _ESCAPES.get(char) or f"\\u{ord(char):04x}"

    return '"' + _NEEDS_ESCAPE.sub(escape, text) + '"'


def _toml_key(key: object, path: str) -> str:
    if not isinstance(key, str):
        raise InvalidSpec(f"{path}: TOML keys are strings, got {key!r}")
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value: Any, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, f"{path}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{_toml_key(k, path)} = {_toml_value(v, _join(path, k))}" for k, v in value.items()
        )
        return "{ " + items + " }" if items else "{}"
    if value is None:
        raise InvalidSpec(f"{path or '(top level)'}: TOML cannot hold a null (None) value")
    raise InvalidSpec(f"{path or '(top level)'}: TOML cannot hold a {type(value).__name__}")


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def toml_dumps(data: Mapping[str, Any]) -> str:
    """Return ``data`` as TOML text: what ``tomllib.loads`` reads back as equal data.

    Mappings become tables (empty ones inline), lists of mappings arrays of
    tables, anything nested inside a list inline values; keys keep their
    order, a table's own values before its sub-tables.

    Raises:
        InvalidSpec: naming the path of a None (TOML has no null), a key
            that is not a string, or a value of another type.
    """
    out: list[str] = []
    _toml_table(out, data, [], "")
    return "\n".join(out).lstrip("\n") + "\n"


def _toml_table(out: list[str], data: Mapping[str, Any], keys: list[str], path: str) -> None:
    later: list[tuple[str, Any, str]] = []
    for key, value in data.items():
        where = _join(path, key)
        if (isinstance(value, Mapping) and value) or _is_table_array(value):
            later.append((_toml_key(key, path), value, where))
        else:
            out.append(f"{_toml_key(key, path)} = {_toml_value(value, where)}")
    for key, value, where in later:
        inner = [*keys, key]
        if isinstance(value, Mapping):
            out.extend(("", f"[{'.'.join(inner)}]"))
            _toml_table(out, value, inner, where)
            continue
        for i, item in enumerate(value):
            out.extend(("", f"[[{'.'.join(inner)}]]"))
            _toml_table(out, item, inner, f"{where}[{i}]")
