"""Supervisor specs: the desired shape of a supervision tree, and its config-file form.

A ``SupervisorSpec`` lists its children in start order: tasks
(``TaskSpec``) and other supervisors. A ``DynamicSupervisorSpec`` (OTP's
``simple_one_for_one``, Elixir's ``DynamicSupervisor``) starts with no
children and adds copies of one ``template`` at run time.

Specs are validated when they are built, as OTP's ``check_childspecs``
does: unique child names, no significant ``PERMANENT`` child, no
significant child under a supervisor whose ``auto_shutdown`` is ``never``.
``spec_from_data`` and ``spec_to_data`` convert between specs and the
plain dicts and lists a YAML, JSON or TOML file holds; every error names
its full path (``children[1].children[0].restart: ...``).
``supervisor_spec_from_data`` and ``dynamic_supervisor_spec_from_data``
return one kind each (so ``.children`` type-checks), ``spec_problems``
lists every problem rather than the first, and ``spec_to_data`` writes
only what differs from the defaults, never a None. In code, the enum
fields take their string values too, typed as ``Literal`` s
(``StrategyName``, ``AutoShutdownName``, ``RestartName``), so a type
checker refuses ``strategy="one_for_everything"``.

Inputs are bounded: times lie in ``[0, MAX_SECONDS]`` (10**8 s, about 3.2
years, less than any timer's limit; ``"infinity"`` where OTP has it),
counts in ``[0, 2**63 - 1]``, supervisors nest at most ``MAX_DEPTH`` (50)
levels and a task's ``args``/``kwargs`` data at most ``MAX_DATA_DEPTH``
(100). Whatever the input, building a spec either succeeds or raises
``InvalidSpec`` naming the path, with the bad value cut to 80 characters
and the whole message to 1,000: never a ``RecursionError``,
``OverflowError``, ``TypeError`` or ``ValueError`` from inside.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from taskvisor.actors import InvalidData, InvalidSpec, Restart, RestartName, TaskSpec, to_data
from taskvisor.actors._errors import shown
from taskvisor.actors._model import MAX_SECONDS, NAME_MAX, in_seconds

from ._errors import invalid, prefixed
from ._policy import (
    MAX_COUNT,
    AutoShutdown,
    Backoff,
    ChildInfo,
    Intensity,
    Strategy,
    to_enum,
)

__all__ = [
    "MAX_DATA_DEPTH",
    "MAX_DEPTH",
    "AutoShutdownName",
    "ChildSpec",
    "DynamicSupervisorSpec",
    "StrategyName",
    "SupervisorShutdown",
    "SupervisorSpec",
    "dynamic_supervisor_spec_from_data",
    "spec_from_data",
    "spec_problems",
    "spec_to_data",
    "supervisor_spec_from_data",
]

#: How a supervisor child is stopped: a grace in seconds (0 to ``MAX_SECONDS``),
#: "brutal" or "infinity" (OTP's default for a supervisor: wait for its children).
SupervisorShutdown: TypeAlias = float | Literal["brutal", "infinity"]
#: The string values of ``Strategy`` a spec takes in place of the enum.
StrategyName: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one"]
#: The string values of ``AutoShutdown`` a spec takes in place of the enum.
AutoShutdownName: TypeAlias = Literal["never", "any_significant", "all_significant"]

#: How many levels of supervisors a tree may have (the root is level 1). Deeper
#: trees are refused when built, so nothing that walks a tree can run out of stack.
MAX_DEPTH = 50
#: How deeply lists and mappings may nest in a task's ``args`` and ``kwargs``
#: when read by ``spec_from_data`` (a self-referring structure is refused too).
MAX_DATA_DEPTH = 100

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]*$")


def _check_name(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise invalid(
            attribute.name,
            "expected a non-empty name of letters, digits and _.:@+- "
            "(not starting with punctuation)",
            value,
        )
    if len(value) > NAME_MAX:
        raise invalid(attribute.name, f"expected a name of at most {NAME_MAX} characters", value)


def _to_shutdown(value: SupervisorShutdown) -> SupervisorShutdown:
    if isinstance(value, str) and value in ("brutal", "infinity"):
        return "brutal" if value == "brutal" else "infinity"
    if not in_seconds(value, strict=False):
        raise invalid(
            "shutdown",
            f"expected a grace in seconds >= 0 and <= {MAX_SECONDS:,}, 'brutal' or 'infinity'",
            value,
        )
    return float(value)


def _to_labels(value: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise invalid("labels", "expected a mapping of strings to strings", value)
    return dict(value)


def _check_bool(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise invalid(attribute.name, "expected true or false", value)


def _check_instance(kind: type) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, kind):
            raise invalid(attribute.name, f"expected an {kind.__name__}", value)

    return check


def _check_optional(kind: type) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not isinstance(value, kind):
            raise invalid(attribute.name, f"expected a {kind.__name__} or None", value)

    return check


def _check_max_children(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT
    ):
        raise invalid(attribute.name, "expected an integer >= 0 (at most 2**63 - 1) or None", value)


_CHILD_KINDS = "a TaskSpec, SupervisorSpec or DynamicSupervisorSpec"


def _to_children(value: Sequence[ChildSpec]) -> tuple[ChildSpec, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise invalid("children", f"expected a list of child specs ({_CHILD_KINDS})", value)
    for i, child in enumerate(value):
        if not isinstance(child, (TaskSpec, SupervisorSpec, DynamicSupervisorSpec)):
            raise invalid(f"children[{i}]", f"expected {_CHILD_KINDS}", child)
    return tuple(value)


def _check_template(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, (TaskSpec, SupervisorSpec, DynamicSupervisorSpec)):
        raise invalid(attribute.name, f"expected {_CHILD_KINDS}", value)


def _check_child(where: str, child: ChildSpec, auto_shutdown: AutoShutdown) -> None:
    """Reject what OTP's ``check_childspec`` rejects, naming ``where``."""
    if "/" in child.name:
        raise invalid(
            f"{where}.name", "a child name cannot contain '/' (it separates path parts)", child.name
        )
    if child.significant:
        if child.restart is Restart.PERMANENT:
            raise invalid(
                f"{where}.significant",
                "a permanent child cannot be significant (make it transient or temporary)",
                True,
            )
        if auto_shutdown is AutoShutdown.NEVER:
            raise invalid(
                f"{where}.significant",
                "a significant child needs auto_shutdown any_significant or all_significant "
                "on its supervisor (it is never)",
                True,
            )


def _depth_of(child: ChildSpec) -> int:
    return child._depth if isinstance(child, (SupervisorSpec, DynamicSupervisorSpec)) else 0


def _too_deep(where: str) -> InvalidSpec:
    exc = InvalidSpec(
        f"{where}: nesting deeper than {MAX_DEPTH} supervisors (MAX_DEPTH); flatten the tree"
    )
    exc.field = where
    return exc


def _check_own_significance(spec: SupervisorSpec | DynamicSupervisorSpec) -> None:
    if spec.significant and spec.restart is Restart.PERMANENT:
        raise invalid(
            "significant",
            "a permanent supervisor cannot be significant (make it transient or temporary)",
            True,
        )


def _to_strategy(value: Strategy | StrategyName) -> Strategy:
    return to_enum(Strategy, "strategy", value)


def _to_auto_shutdown(value: AutoShutdown | AutoShutdownName) -> AutoShutdown:
    return to_enum(AutoShutdown, "auto_shutdown", value)


def _to_restart(value: Restart | RestartName) -> Restart:
    return to_enum(Restart, "restart", value)


@attrs.frozen
class SupervisorSpec:
    """A supervisor with a fixed list of children, started in order.

    Only ``name`` may be given by position. ``strategy``,
    ``auto_shutdown`` and ``restart`` take an enum member or its string
    value (``"one_for_all"``), stored as the enum. ``children`` may be a
    list; it is stored as a tuple. ``shutdown`` is how long this supervisor, when
    stopped by its parent, may take: ``"infinity"`` (the default, as OTP's
    for a supervisor), a grace in seconds from 0 to ``MAX_SECONDS`` (10**8
    s), or ``"brutal"``.

    Raises:
        InvalidSpec: when a field is invalid, two children share a name, a
            child is significant while permanent or while ``auto_shutdown``
            is ``never``, or supervisors nest deeper than ``MAX_DEPTH`` (50)
            levels; the message names the field path and bad value, e.g.
            ``children[3].name: duplicate child name 'x'``.
    """

    name: str = attrs.field(validator=_check_name)
    strategy: Strategy = attrs.field(
        default=Strategy.ONE_FOR_ONE, converter=_to_strategy, kw_only=True
    )
    intensity: Intensity = attrs.field(
        factory=Intensity, validator=_check_instance(Intensity), kw_only=True
    )
    children: tuple[ChildSpec, ...] = attrs.field(default=(), converter=_to_children, kw_only=True)
    backoff: Backoff | None = attrs.field(
        default=None, validator=_check_optional(Backoff), kw_only=True
    )
    child_intensity: Intensity | None = attrs.field(
        default=None, validator=_check_optional(Intensity), kw_only=True
    )
    auto_shutdown: AutoShutdown = attrs.field(
        default=AutoShutdown.NEVER, converter=_to_auto_shutdown, kw_only=True
    )
    restart: Restart = attrs.field(default=Restart.PERMANENT, converter=_to_restart, kw_only=True)
    shutdown: SupervisorShutdown = attrs.field(
        default="infinity", converter=_to_shutdown, kw_only=True
    )
    significant: bool = attrs.field(default=False, validator=_check_bool, kw_only=True)
    labels: dict[str, str] = attrs.field(factory=dict, converter=_to_labels, kw_only=True)
    _infos: tuple[ChildInfo, ...] = attrs.field(init=False, eq=False, repr=False)
    _by_name: dict[str, ChildSpec] = attrs.field(init=False, eq=False, repr=False)
    _depth: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        seen: set[str] = set()
        depth = 1
        for i, child in enumerate(self.children):
            if child.name in seen:
                exc = InvalidSpec(f"children[{i}].name: duplicate child name {shown(child.name)}")
                exc.field = f"children[{i}].name"
                raise exc
            seen.add(child.name)
            _check_child(f"children[{i}]", child, self.auto_shutdown)
            below = _depth_of(child)
            if below >= MAX_DEPTH:
                raise _too_deep(f"children[{i}]")
            depth = max(depth, below + 1)
        _check_own_significance(self)
        object.__setattr__(self, "_depth", depth)
        object.__setattr__(self, "_infos", tuple(ChildInfo.of(c) for c in self.children))
        object.__setattr__(self, "_by_name", {c.name: c for c in self.children})

    def child_infos(self) -> tuple[ChildInfo, ...]:
        """The ``ChildInfo`` of each child, in start order (the same tuple every time)."""
        return self._infos

    def child(self, name: str) -> ChildSpec:
        """Return the child spec named ``name``.

        Raises:
            KeyError: when there is no such child.
        """
        return self._by_name[name]

    def evolve(self, **changes: Any) -> SupervisorSpec:
        """Return a copy with ``changes`` applied and validated."""
        return attrs.evolve(self, **changes)


@attrs.frozen
class DynamicSupervisorSpec:
    """A supervisor whose children are copies of ``template``, added at run time.

    OTP's ``simple_one_for_one``, Elixir's ``DynamicSupervisor``: the
    strategy is one-for-one, at most ``max_children`` children run at once
    (None: no limit), and a child that ends without being restarted is
    forgotten. ``auto_shutdown`` (an addition to OTP's flags here as there)
    makes a significant template shut the supervisor down. ``max_children``
    is at most 2**63 - 1; ``shutdown`` is as for ``SupervisorSpec``.

    Raises:
        InvalidSpec: when a field is invalid, the template is significant
            while permanent or while ``auto_shutdown`` is ``never``, or
            supervisors nest deeper than ``MAX_DEPTH`` (50) levels.
    """

    name: str = attrs.field(validator=_check_name)
    template: ChildSpec = attrs.field(validator=_check_template, kw_only=True)
    intensity: Intensity = attrs.field(
        factory=Intensity, validator=_check_instance(Intensity), kw_only=True
    )
    max_children: int | None = attrs.field(
        default=None, validator=_check_max_children, kw_only=True
    )
    backoff: Backoff | None = attrs.field(
        default=None, validator=_check_optional(Backoff), kw_only=True
    )
    child_intensity: Intensity | None = attrs.field(
        default=None, validator=_check_optional(Intensity), kw_only=True
    )
    auto_shutdown: AutoShutdown = attrs.field(
        default=AutoShutdown.NEVER, converter=_to_auto_shutdown, kw_only=True
    )
    restart: Restart = attrs.field(default=Restart.PERMANENT, converter=_to_restart, kw_only=True)
    shutdown: SupervisorShutdown = attrs.field(
        default="infinity", converter=_to_shutdown, kw_only=True
    )
    significant: bool = attrs.field(default=False, validator=_check_bool, kw_only=True)
    labels: dict[str, str] = attrs.field(factory=dict, converter=_to_labels, kw_only=True)
    _depth: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_child("template", self.template, self.auto_shutdown)
        _check_own_significance(self)
        below = _depth_of(self.template)
        if below >= MAX_DEPTH:
            raise _too_deep("template")
        object.__setattr__(self, "_depth", below + 1)

    @property
    def strategy(self) -> Strategy:
        """Always ``Strategy.ONE_FOR_ONE``."""
        return Strategy.ONE_FOR_ONE

    def child_info(self, child_id: str) -> ChildInfo:
        """The ``ChildInfo`` of a child made from the template under ``child_id``."""
        return ChildInfo(child_id, self.template.restart, self.template.significant)

    def evolve(self, **changes: Any) -> DynamicSupervisorSpec:
        """Return a copy with ``changes`` applied and validated."""
        return attrs.evolve(self, **changes)


#: Anything a supervisor can supervise.
ChildSpec: TypeAlias = TaskSpec | SupervisorSpec | DynamicSupervisorSpec


# --------------------------------------------------------------------------- config data

_COMMON = ("name", "intensity", "backoff", "child_intensity", "auto_shutdown", "restart")
_COMMON_TAIL = ("shutdown", "significant", "labels")
_SUPERVISOR_FIELDS = ("name", "strategy", "intensity", "children", *_COMMON[2:], *_COMMON_TAIL)
_DYNAMIC_FIELDS = ("name", "template", "intensity", "max_children", *_COMMON[2:], *_COMMON_TAIL)
_INTENSITY_FIELDS = ("max_restarts", "within")
_BACKOFF_FIELDS = ("initial", "maximum", "multiplier", "jitter", "reset_after", "seed")
_TASK_FIELDS = tuple(a.name for a in attrs.fields(TaskSpec) if a.init)
_LISTED = 10  # unknown fields named in a message; the rest are counted


def _where(path: str) -> str:
    return path or "(top level)"


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def _error(path: str, problem: str) -> InvalidSpec:
    exc = InvalidSpec(f"{_where(path)}: {problem}")
    exc.field = path or None
    return exc


def _mapping(data: Any, path: str, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _error(path, f"expected a mapping of {what} fields, got {type(data).__name__}")
    return data


def _known(data: Mapping[Any, Any], fields: tuple[str, ...], path: str) -> None:
    """Reject keys that are not ``fields``; keys of any type are named, never compared."""
    extra = sorted(shown(k, 40) for k in data if not (isinstance(k, str) and k in fields))
    if extra:
        more = f", and {len(extra) - _LISTED} more" if len(extra) > _LISTED else ""
        raise _error(
            path,
            f"unknown field(s) [{', '.join(extra[:_LISTED])}{more}] "
            f"(expected some of {', '.join(fields)})",
        )


def _required(data: Mapping[str, Any], field: str, path: str) -> None:
    if field not in data:
        raise _error(_join(path, field), "required field missing")


def _build(cls: Callable[..., Any], kwargs: dict[str, Any], path: str) -> Any:
    try:
        return cls(**kwargs)
    except InvalidData as exc:
        raise prefixed(path, exc) from None
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # pragma: no cover
        # A safety net only: every field is checked before it gets here, and
        # the fuzz tests assert that this message never appears.
        name = getattr(cls, "__name__", "spec")
        raise _error(path, f"cannot build a {name} ({type(exc).__name__})") from None


def _intensity_from(data: Any, path: str) -> Intensity:
    data = _mapping(data, path, "Intensity")
    _known(data, _INTENSITY_FIELDS, path)
    return _build(Intensity, dict(data), path)  # type: ignore[no-any-return]


def _optional_intensity_from(data: Any, path: str) -> Intensity | None:
    return None if data is None else _intensity_from(data, path)


def _backoff_from(data: Any, path: str) -> Backoff | None:
    if data is None:
        return None
    data = _mapping(data, path, "Backoff")
    _known(data, _BACKOFF_FIELDS, path)
    return _build(Backoff, dict(data), path)  # type: ignore[no-any-return]


def _common_from(data: Mapping[str, Any], path: str) -> dict[str, Any]:
    kwargs = {field: data[field] for field in ("name", *_COMMON_TAIL) if field in data}
    for field in ("auto_shutdown", "restart"):
        if field in data:
            kwargs[field] = data[field]
    if "intensity" in data:
        kwargs["intensity"] = _intensity_from(data["intensity"], _join(path, "intensity"))
    if "backoff" in data:
        kwargs["backoff"] = _backoff_from(data["backoff"], _join(path, "backoff"))
    if "child_intensity" in data:
        kwargs["child_intensity"] = _optional_intensity_from(
            data["child_intensity"], _join(path, "child_intensity")
        )
    return kwargs


def _supervisor_from(data: Mapping[str, Any], path: str, depth: int) -> SupervisorSpec:
    _known(data, _SUPERVISOR_FIELDS, path)
    _required(data, "name", path)
    kwargs = _common_from(data, path)
    if "strategy" in data:
        kwargs["strategy"] = data["strategy"]
    if "children" in data:
        raw = data["children"]
        where = _join(path, "children")
        if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, (list, tuple)):
            raise invalid(where, "expected a list of child specs", raw)
        kwargs["children"] = tuple(
            _child_from(item, f"{where}[{i}]", depth) for i, item in enumerate(raw)
        )
    return _build(SupervisorSpec, kwargs, path)  # type: ignore[no-any-return]


def _dynamic_from(data: Mapping[str, Any], path: str, depth: int) -> DynamicSupervisorSpec:
    _known(data, _DYNAMIC_FIELDS, path)
    _required(data, "name", path)
    kwargs = _common_from(data, path)
    if "max_children" in data:
        kwargs["max_children"] = data["max_children"]
    kwargs["template"] = _child_from(data["template"], _join(path, "template"), depth)
    return _build(DynamicSupervisorSpec, kwargs, path)  # type: ignore[no-any-return]


def _no_string_lists(data: Mapping[str, Any], path: str) -> None:
    """Reject a string where a task takes a list (the converter would split it into letters)."""
    problems = {
        "command": "expected a list of arguments (a string is a shell command: "
        "pass [the string] and shell=True to run it through a shell)",
        "args": "expected a list or tuple of arguments",
    }
    for field, problem in problems.items():
        value = data.get(field)
        if isinstance(value, (str, bytes)):
            raise invalid(_join(path, field), problem, value)


_END = object()


def _inner(value: Any) -> Iterator[Any] | None:
    if isinstance(value, (list, tuple)):
        return iter(value)
    if isinstance(value, Mapping):
        return iter(value.values())
    return None


def _check_nesting(value: Any, path: str) -> None:
    """Refuse lists and mappings nested deeper than ``MAX_DATA_DEPTH``, or containing themselves.

    Walks without recursion, and each shared container once (a YAML alias
    may share one many times).
    """
    inner = _inner(value)
    if inner is None:
        return
    height: dict[int, int] = {}  # id -> levels at and below a container already walked
    open_ids = {id(value)}  # containers on the current path
    stack: list[list[Any]] = [[value, inner, 0]]  # container, its iterator, deepest below
    while stack:
        frame = stack[-1]
        item = next(frame[1], _END)
        if item is _END:
            stack.pop()
            open_ids.discard(id(frame[0]))
            height[id(frame[0])] = levels = frame[2] + 1
            if stack:
                stack[-1][2] = max(stack[-1][2], levels)
            continue
        inner = _inner(item)
        if inner is None:
            continue
        key = id(item)
        if key in open_ids:
            raise _error(path, "data that contains itself cannot be a task's arguments")
        if key in height:
            if len(stack) + height[key] > MAX_DATA_DEPTH:
                raise _error(path, f"lists and mappings nested deeper than {MAX_DATA_DEPTH}")
            frame[2] = max(frame[2], height[key])
            continue
        if len(stack) >= MAX_DATA_DEPTH:
            raise _error(path, f"lists and mappings nested deeper than {MAX_DATA_DEPTH}")
        open_ids.add(key)
        stack.append([item, inner, 0])


def _task_from(data: Mapping[str, Any], path: str) -> TaskSpec:
    _known(data, _TASK_FIELDS, path)
    _required(data, "name", path)
    _no_string_lists(data, path)
    for field in ("args", "kwargs"):
        if field in data:
            _check_nesting(data[field], _join(path, field))
    return _build(TaskSpec, dict(data), path)  # type: ignore[no-any-return]


def _child_from(data: Any, path: str, depth: int) -> ChildSpec:
    """Build the child at ``path`` under ``depth`` levels of supervisors."""
    data = _mapping(data, path, "child spec")
    if "children" in data and "template" in data:
        raise _error(
            path, "a supervisor has either children (static) or a template (dynamic), not both"
        )
    if "template" in data or "children" in data:
        if depth >= MAX_DEPTH:
            raise _too_deep(_where(path))
        if "template" in data:
            return _dynamic_from(data, path, depth + 1)
        return _supervisor_from(data, path, depth + 1)
    return _task_from(data, path)


def spec_from_data(data: Mapping[str, Any]) -> SupervisorSpec | DynamicSupervisorSpec:
    """Build a supervisor spec from plain data (what a YAML, JSON or TOML file holds).

    The top level is a supervisor: dynamic when it has a ``"template"``,
    static otherwise. A child mapping is a supervisor when it has
    ``"children"`` (static) or ``"template"`` (dynamic), and a ``TaskSpec``
    otherwise. Enum fields take their string values (``"one_for_all"``),
    ``intensity`` and ``backoff`` are mappings of their fields. Any input
    is safe: it is accepted or refused with ``InvalidSpec``, whatever its
    types, sizes and nesting (see the module's bounds). Its result is
    either kind of supervisor; ``supervisor_spec_from_data`` and
    ``dynamic_supervisor_spec_from_data`` return one kind each.

    Raises:
        InvalidSpec: naming the full path of the first problem, e.g.
            ``children[2].restart: expected one of permanent, transient,
            temporary, got 'always'``; at most 1,000 characters, with the
            bad value cut to 80.
    """
    data = _mapping(data, "", "supervisor spec")
    if "template" in data:
        if "children" in data:
            _child_from(data, "", 0)
        return _dynamic_from(data, "", 1)
    return _supervisor_from(data, "", 1)


def supervisor_spec_from_data(data: Mapping[str, Any]) -> SupervisorSpec:
    """Build a static ``SupervisorSpec`` from plain data, as ``spec_from_data`` does.

    The type-precise form of ``spec_from_data`` for a tree whose top level
    has ``children`` (or nothing): its result's ``.children`` type-checks.

    Raises:
        InvalidSpec: as ``spec_from_data``, and naming ``template`` when the
            data describes a dynamic supervisor.
    """
    data = _mapping(data, "", "supervisor spec")
    if "template" in data:
        raise _error(
            "template",
            "a static supervisor has children, not a template "
            "(use dynamic_supervisor_spec_from_data or spec_from_data for a dynamic one)",
        )
    return _supervisor_from(data, "", 1)


def dynamic_supervisor_spec_from_data(data: Mapping[str, Any]) -> DynamicSupervisorSpec:
    """Build a ``DynamicSupervisorSpec`` from plain data, as ``spec_from_data`` does.

    Raises:
        InvalidSpec: as ``spec_from_data``, and naming ``template`` when the
            data has no template (it describes a static supervisor).
    """
    data = _mapping(data, "", "supervisor spec")
    if "template" not in data:
        raise _error(
            "template",
            "required field missing (a dynamic supervisor copies its template; "
            "use supervisor_spec_from_data for one with a list of children)",
        )
    return spec_from_data(data)  # type: ignore[return-value]  # it has a template


# A stand-in template, to check a dynamic supervisor's own fields apart from its template.
_STAND_IN = {"name": "stand-in", "target": "stand.in:work", "restart": "temporary"}


def spec_problems(data: Any) -> list[InvalidSpec]:
    """Return every problem ``spec_from_data`` would find in ``data``, not only the first.

    Each supervisor's own fields and each child are checked apart, every
    node included: a task's every field with a problem (each is set aside
    and the task checked again), a supervisor's first own problem; when no
    node has a problem, what only the whole tree can
    show (a duplicate child name, a significant child under ``auto_shutdown
    = "never"``, nesting too deep) is the one problem reported. An empty
    list means ``spec_from_data(data)`` succeeds.
    """
    out: list[InvalidSpec] = []
    if not isinstance(data, Mapping):
        return [
            _error("", f"expected a mapping of supervisor spec fields, got {type(data).__name__}")
        ]
    _collect(data, "", 0, out, root=True)
    if not out:
        try:
            spec_from_data(data)
        except InvalidSpec as exc:
            out.append(exc)
    return out


def _collect(
    data: Any, path: str, depth: int, out: list[InvalidSpec], *, root: bool = False
) -> None:
    """Check the node at ``path`` (a child below ``depth`` supervisors) and those under it."""
    if not isinstance(data, Mapping):
        out.append(
            _error(path, f"expected a mapping of child spec fields, got {type(data).__name__}")
        )
        return
    is_supervisor = root or "children" in data or "template" in data
    if not is_supervisor:
        _task_problems(data, path, out)
        return
    if "children" in data and "template" in data:
        out.append(
            _error(
                path, "a supervisor has either children (static) or a template (dynamic), not both"
            )
        )
        return
    if depth >= MAX_DEPTH:
        out.append(_too_deep(_where(path)))
        return
    own = {k: v for k, v in data.items() if k not in ("children", "template")}
    if "template" in data:
        if "strategy" in own:  # a dynamic supervisor has none: let the builder name it
            own.pop("strategy")
            out.append(
                _error(_join(path, "strategy"), "a dynamic supervisor is always one_for_one")
            )
        _attempt(out, lambda: _dynamic_from({**own, "template": _STAND_IN}, path, depth + 1))
        _collect(data["template"], _join(path, "template"), depth + 1, out)
        return
    _attempt(out, lambda: _supervisor_from(own, path, depth + 1))
    if "children" not in data:
        return
    raw = data["children"]
    where = _join(path, "children")
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, (list, tuple)):
        out.append(invalid(where, "expected a list of child specs", raw))
        return
    for i, item in enumerate(raw):
        _collect(item, f"{where}[{i}]", depth + 1, out)


#: Stand-ins for a task's required fields while its other fields are checked.
_TASK_STAND_INS: dict[str, Any] = {"name": "x", "target": "os:getcwd", "command": ["true"]}


def _task_problems(data: Mapping[str, Any], path: str, out: list[InvalidSpec]) -> None:
    """Every field's problem in one task: each problem's field is set aside, and it is built again.

    A required field (name, target, command) with a problem is replaced by
    a stand-in; a wrong ``kind`` ends the search (every other field depends
    on it), as does a problem that names no single field.
    """
    name = data.get("name")
    if isinstance(name, str) and "/" in name:
        out.append(
            invalid(
                _join(path, "name"),
                "a child name cannot contain '/' (it separates path parts)",
                name,
            )
        )
    current = dict(data)
    for _ in range(len(data) + 1):
        try:
            _task_from(current, path)
        except InvalidSpec as exc:
            out.append(exc)
            prefix = _join(path, "")
            text = str(exc)
            field = text[len(prefix) :].split(":", 1)[0] if text.startswith(prefix) else ""
            field = field.split(".", 1)[0].split("[", 1)[0]
            stand_in = _TASK_STAND_INS.get(field)
            if stand_in is not None and current.get(field) != stand_in:
                current[field] = stand_in
            elif field in current and field != "kind" and stand_in is None:
                del current[field]
            else:
                return
        else:
            return


def _attempt(out: list[InvalidSpec], build: Callable[[], object]) -> None:
    try:
        build()
    except InvalidSpec as exc:
        out.append(exc)


def _differs(cls: type, field: str, value: Any) -> bool:
    """Whether ``value`` of ``cls.field`` differs from the field's default (after conversion)."""
    attribute = getattr(attrs.fields(cls), field)
    default = attribute.default
    if default is attrs.NOTHING:
        return True
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    if attribute.converter is not None:
        try:
            default = attribute.converter(default)
        except Exception:  # pragma: no cover - a default its own converter refuses
            return True
    try:
        return bool(value != default) or type(value) is not type(default)
    except Exception:  # pragma: no cover - an argument whose __eq__ raises
        return True


def _intensity_data(value: Intensity) -> dict[str, Any]:
    return {
        field: getattr(value, field)
        for field in _INTENSITY_FIELDS
        if _differs(Intensity, field, getattr(value, field))
    }


def _backoff_data(value: Backoff) -> dict[str, Any]:
    return {
        field: getattr(value, field)
        for field in _BACKOFF_FIELDS
        if _differs(Backoff, field, getattr(value, field))
    }


def _child_data(spec: ChildSpec, path: str) -> dict[str, Any]:
    if isinstance(spec, (SupervisorSpec, DynamicSupervisorSpec)):
        return _spec_data(spec, path)
    try:
        data: dict[str, Any] = to_data(spec)
    except InvalidData as exc:
        raise prefixed(path, exc) from None
    except RecursionError:
        raise _error(path, "args or kwargs nested too deeply to write as data") from None
    return {
        field: value
        for field, value in data.items()
        if field == "name" or _differs(TaskSpec, field, getattr(spec, field))
    }


def _spec_data(spec: SupervisorSpec | DynamicSupervisorSpec, path: str) -> dict[str, Any]:
    cls = type(spec)
    out: dict[str, Any] = {"name": spec.name}
    if isinstance(spec, SupervisorSpec):
        if spec.strategy is not Strategy.ONE_FOR_ONE:
            out["strategy"] = spec.strategy.value
    else:
        out["template"] = _child_data(spec.template, _join(path, "template"))
    if spec.intensity != Intensity():
        out["intensity"] = _intensity_data(spec.intensity)
    if isinstance(spec, DynamicSupervisorSpec) and spec.max_children is not None:
        out["max_children"] = spec.max_children
    if spec.backoff is not None:
        out["backoff"] = _backoff_data(spec.backoff)
    if spec.child_intensity is not None:
        out["child_intensity"] = _intensity_data(spec.child_intensity)
    if spec.auto_shutdown is not AutoShutdown.NEVER:
        out["auto_shutdown"] = spec.auto_shutdown.value
    if spec.restart is not Restart.PERMANENT:
        out["restart"] = spec.restart.value
    if _differs(cls, "shutdown", spec.shutdown):
        out["shutdown"] = spec.shutdown
    if spec.significant:
        out["significant"] = True
    if spec.labels:
        out["labels"] = dict(spec.labels)
    # A nested supervisor always has its children written, even none: they mark it a supervisor.
    if isinstance(spec, SupervisorSpec) and (spec.children or path):
        out["children"] = [
            _child_data(c, f"{_join(path, 'children')}[{i}]") for i, c in enumerate(spec.children)
        ]
    return out


def spec_to_data(spec: SupervisorSpec | DynamicSupervisorSpec) -> dict[str, Any]:
    """Return ``spec`` as plain data; ``spec_from_data`` builds an equal spec from it.

    Only what differs from the defaults is written (``name`` always), and
    never a None: the data holds only mappings, lists, strings, numbers and
    booleans (and what a task's ``args`` and ``kwargs`` hold), so it can be
    written as TOML, JSON or YAML and read back to an equal spec. A
    supervisor's ``children`` come last, so a TOML file lists a table's own
    fields before its sub-tables.

    Raises:
        InvalidSpec: when a task's target has no import path (a lambda), or
            its arguments nest too deeply to write, naming its path
            (``children[1].target: ...``), and when ``spec`` is not a
            supervisor spec.
    """
    if not isinstance(spec, (SupervisorSpec, DynamicSupervisorSpec)):
        raise invalid("spec", "expected a SupervisorSpec or DynamicSupervisorSpec", spec)
    return _spec_data(spec, "")
