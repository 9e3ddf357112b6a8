"""Hypothesis strategies for property-testing restart policies and supervision trees.

Every strategy builds valid values only (specs that OTP would accept), so a
property can go straight to ``simulate``. Install with the ``testing`` extra
(``pip install 'taskvisor[testing]'``), which brings Hypothesis and pytest.
The strategies need Hypothesis only: ``from taskvisor.testing import *``
works without pytest. The ``supervision_tree`` pytest fixture (enabled by
``pytest_plugins = ["taskvisor.testing"]`` in a ``conftest.py``) imports
pytest when pytest first asks for it.

Example: check that a tree with your policy survives any three failures::

    from hypothesis import given
    from taskvisor.actors import TaskSpec
    from taskvisor.supervision import Intensity, SupervisorSpec
    from taskvisor.testing import failure_scripts, simulate

    SPEC = SupervisorSpec(
        "app",
        strategy="one_for_all",
        intensity=Intensity(max_restarts=3, within=10.0),
        children=[
            TaskSpec(name="db", target="app.db:run"),
            TaskSpec(name="web", target="app.web:serve"),
        ],
    )

    @given(failure_scripts(SPEC, max_events=3))
    def test_any_three_failures_leave_the_tree_running(script):
        assert not simulate(SPEC, script).gave_up

To explore trees as well as failures, draw both with ``scenarios()``::

    @given(scenarios(max_depth=2, max_events=10))
    def test_my_invariant(scenario):
        spec, script = scenario
        sim = simulate(spec, script)
        ...
"""

from __future__ import annotations

import operator
import string
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from taskvisor.actors import Restart, TaskSpec
from taskvisor.actors._errors import shown
from taskvisor.actors._model import MAX_SECONDS
from taskvisor.supervision import (
    AutoShutdown,
    Backoff,
    DynamicSupervisorSpec,
    Exit,
    Fail,
    Intensity,
    Policy,
    ScriptEvent,
    Start,
    Strategy,
    Supervisor,
    SupervisorRef,
    SupervisorSpec,
    Timeout,
    simulate,
)

__all__ = [
    "TreeStarter",
    "auto_shutdowns",
    "backoffs",
    "child_names",
    "failure_scripts",
    "intensities",
    "policies",
    "restarts",
    "scenarios",
    "simulate",
    "strategies",
    "supervisor_specs",
    "task_specs",
]

SupervisorSpecs = SupervisorSpec | DynamicSupervisorSpec


def child_names() -> st.SearchStrategy[str]:
    """Short valid child names (letters, digits, ``_``; no ``/``)."""
    first = st.sampled_from(string.ascii_lowercase)
    rest = st.text(string.ascii_lowercase + string.digits + "_", max_size=7)
    return st.builds(operator.add, first, rest)


def strategies() -> st.SearchStrategy[Strategy]:
    """Any restart strategy."""
    return st.sampled_from(Strategy)


def restarts() -> st.SearchStrategy[Restart]:
    """Any restart type."""
    return st.sampled_from(Restart)


def auto_shutdowns() -> st.SearchStrategy[AutoShutdown]:
    """Any automatic-shutdown setting."""
    return st.sampled_from(AutoShutdown)


def intensities(
    *, max_restarts: int = 10, min_within: float = 0.1, max_within: float = 60.0
) -> st.SearchStrategy[Intensity]:
    """Restart budgets with ``0 <= max_restarts <= max_restarts`` (the argument).

    Raises:
        hypothesis.errors.InvalidArgument: when an argument is out of what
            ``Intensity`` takes (``max_restarts`` an int >= 0, windows
            ``0 < min_within <= max_within <= MAX_SECONDS``).
    """
    _check_int("max_restarts", max_restarts)
    _check_seconds("min_within", min_within, low=0.0, open_low=True)
    _check_seconds("max_within", max_within, low=min_within)
    return st.builds(
        Intensity,
        max_restarts=st.integers(0, max_restarts),
        within=st.floats(min_within, max_within, allow_nan=False, allow_infinity=False),
    )


@st.composite
def _backoffs(draw: st.DrawFn, max_delay: float) -> Backoff:
    seconds = st.floats(0.0, max_delay, allow_nan=False, allow_infinity=False)
    initial = draw(seconds)
    maximum = draw(st.floats(max(initial, 0.001), max(max_delay, 0.001)))
    return Backoff(
        initial=initial,
        maximum=maximum,
        multiplier=draw(st.floats(1.0, 4.0)),
        jitter=draw(st.floats(0.0, 1.0)),
        reset_after=draw(st.none() | st.floats(0.1, 120.0)),
        seed=draw(st.none() | st.integers(0, 2**32)),
    )


def backoffs(*, max_delay: float = 30.0) -> st.SearchStrategy[Backoff]:
    """Valid backoffs with delays of at most ``max_delay`` seconds.

    Raises:
        hypothesis.errors.InvalidArgument: when ``max_delay`` is not a number
            from 0 to ``MAX_SECONDS``.
    """
    _check_seconds("max_delay", max_delay, low=0.0)
    return _backoffs(max_delay)


def _check_int(name: str, value: object, *, low: int = 0, high: int | None = None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        wanted = f">= {low}" if high is None else f"from {low} to {high}"
        raise InvalidArgument(f"{name}: expected an integer {wanted}, got {shown(value)}")


def _check_seconds(name: str, value: object, *, low: float, open_low: bool = False) -> None:
    """``value`` must be a finite number of seconds from ``low`` to ``MAX_SECONDS``."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and (value > low if open_low else value >= low)
        and value <= MAX_SECONDS  # NaN fails here, and a huge int is compared exactly
    )
    if not ok:
        bound = ">" if open_low else ">="
        raise InvalidArgument(
            f"{name}: expected seconds {bound} {low:g} and <= {MAX_SECONDS:g}, got {shown(value)}"
        )


def policies() -> st.SearchStrategy[Policy]:
    """Any valid policy (static or dynamic)."""
    return st.builds(
        Policy,
        strategy=strategies(),
        intensity=intensities(),
        backoff=st.none() | backoffs(),
        child_intensity=st.none() | intensities(),
        auto_shutdown=auto_shutdowns(),
        dynamic=st.booleans(),
    )


@st.composite
def _task_specs(
    draw: st.DrawFn, name: str | None, restart: Restart | None, significant: bool | None
) -> TaskSpec:
    kind = restart if restart is not None else draw(restarts())
    may_be_significant = kind is not Restart.PERMANENT
    if significant is None:
        significant = may_be_significant and draw(st.booleans())
    return TaskSpec(
        name=name if name is not None else draw(child_names()),
        target="tasks.module:work",
        restart=kind,
        significant=significant,
        timeout=draw(st.none() | st.floats(0.1, 60.0)),
    )


def task_specs(
    *, name: str | None = None, restart: Restart | None = None, significant: bool | None = None
) -> st.SearchStrategy[TaskSpec]:
    """``call`` task specs. ``significant=None`` draws it where it is allowed (not permanent)."""
    return _task_specs(name, restart, significant)


def _child(draw: st.DrawFn, name: str, depth: int, max_children: int, significant_ok: bool) -> Any:
    """Draw one child named ``name``: a task, or (while depth allows) a supervisor."""
    kinds = ["task"] + (["static", "dynamic"] if depth > 0 else [])
    kind = draw(st.sampled_from(kinds))
    restart = draw(restarts())
    significant = significant_ok and restart is not Restart.PERMANENT and draw(st.booleans())
    if kind == "task":
        return draw(task_specs(name=name, restart=restart, significant=significant))
    return _supervisor(
        draw,
        name,
        depth - 1,
        max_children,
        dynamic=kind == "dynamic",
        restart=restart,
        significant=significant,
    )


def _supervisor(
    draw: st.DrawFn,
    name: str,
    depth: int,
    max_children: int,
    *,
    dynamic: bool,
    restart: Restart,
    significant: bool,
) -> SupervisorSpecs:
    auto = draw(auto_shutdowns())
    common: dict[str, Any] = {
        "intensity": draw(intensities()),
        "backoff": draw(st.none() | backoffs(max_delay=5.0)),
        "child_intensity": draw(st.none() | intensities()),
        "auto_shutdown": auto,
        "restart": restart,
        "significant": significant,
    }
    significant_ok = auto is not AutoShutdown.NEVER
    if dynamic:
        template = _child(draw, draw(child_names()), depth, max_children, significant_ok)
        return DynamicSupervisorSpec(
            name,
            template=template,
            max_children=draw(st.none() | st.integers(0, max_children)),
            **common,
        )
    names = draw(st.lists(child_names(), max_size=max_children, unique=True))
    children = [_child(draw, n, depth, max_children, significant_ok) for n in names]
    return SupervisorSpec(name, strategy=draw(strategies()), children=children, **common)


@st.composite
def _supervisor_specs(
    draw: st.DrawFn, max_depth: int, max_children: int, dynamic: bool
) -> SupervisorSpecs:
    is_dynamic = dynamic and draw(st.booleans())
    restart = draw(restarts())
    name = draw(child_names())
    return _supervisor(
        draw, name, max_depth, max_children, dynamic=is_dynamic, restart=restart, significant=False
    )


def supervisor_specs(
    max_depth: int = 2, *, max_children: int = 4, dynamic: bool = True
) -> st.SearchStrategy[SupervisorSpecs]:
    """Valid supervision trees, nested at most ``max_depth`` supervisors below the root.

    Args:
        max_depth: how many levels of child supervisors there may be.
        max_children: at most this many children per supervisor.
        dynamic: whether dynamic supervisors may appear (the root included).

    Raises:
        hypothesis.errors.InvalidArgument: when ``max_depth`` is not an int
            from 0 to 5 or ``max_children`` not an int from 1 to 50.
    """
    _check_int("max_depth", max_depth, high=5)
    _check_int("max_children", max_children, low=1, high=50)
    return _supervisor_specs(max_depth, max_children, dynamic)


def _paths(spec: SupervisorSpecs, prefix: str = "") -> tuple[list[str], list[str]]:
    """Child paths, and the paths of dynamic supervisors ('' for the root), of a tree.

    Children of a dynamic supervisor get the ids ``simulate`` gives them
    (``<template name>-1``, ``-2``, ...), so scripts can address them.
    """
    children: list[str] = []
    dynamic: list[str] = []
    if isinstance(spec, DynamicSupervisorSpec):
        dynamic.append(prefix.rstrip("/"))
        template = spec.template
        for n in (1, 2, 3):
            path = f"{prefix}{template.name}-{n}"
            children.append(path)
            if not isinstance(template, TaskSpec):
                sub_children, sub_dynamic = _paths(template, path + "/")
                children += sub_children
                dynamic += sub_dynamic
        return children, dynamic
    for child in spec.children:
        path = prefix + child.name
        children.append(path)
        if not isinstance(child, TaskSpec):
            sub_children, sub_dynamic = _paths(child, path + "/")
            children += sub_children
            dynamic += sub_dynamic
    return children, dynamic


def failure_scripts(
    spec: SupervisorSpecs, *, max_events: int = 20, max_time: float = 60.0
) -> st.SearchStrategy[list[ScriptEvent]]:
    """Scripts of ``Fail``, ``Exit``, ``Timeout`` (and ``Start`` for dynamic
    supervisors) events for ``spec``, at times in ``[0, max_time]``.

    Events may name children that are not running at that time: ``simulate``
    skips those, as a real tree would never see them.

    Raises:
        hypothesis.errors.InvalidArgument: when ``max_events`` is not an int
            from 0 to 10,000 or ``max_time`` not a number of seconds from 0 to
            ``MAX_SECONDS``.
    """
    _check_int("max_events", max_events, high=10_000)
    _check_seconds("max_time", max_time, low=0.0)
    children, dynamic = _paths(spec)
    times = st.floats(0.0, max_time, allow_nan=False, allow_infinity=False)
    options: list[st.SearchStrategy[ScriptEvent]] = []
    if children:
        path = st.sampled_from(children)
        options += [
            st.builds(Fail, times, path, st.sampled_from(["boom", "crash", "oom"])),
            st.builds(Exit, times, path),
            st.builds(Timeout, times, path),
        ]
    if dynamic:
        options.append(st.builds(Start, times, st.sampled_from(dynamic)))
    if not options:
        return st.just([])
    return st.lists(st.one_of(options), max_size=max_events)


@st.composite
def _scenarios(
    draw: st.DrawFn, max_depth: int, max_events: int
) -> tuple[SupervisorSpecs, list[ScriptEvent]]:
    spec = draw(supervisor_specs(max_depth))
    return spec, draw(failure_scripts(spec, max_events=max_events))


def scenarios(
    max_depth: int = 2, *, max_events: int = 20
) -> st.SearchStrategy[tuple[SupervisorSpecs, list[ScriptEvent]]]:
    """Pairs ``(spec, script)``: a tree from ``supervisor_specs`` and a script for it.

    Raises:
        hypothesis.errors.InvalidArgument: as ``supervisor_specs`` and
            ``failure_scripts`` do.
    """
    _check_int("max_depth", max_depth, high=5)
    _check_int("max_events", max_events, high=10_000)
    return _scenarios(max_depth, max_events)


# ----------------------------------------------------------------------------- pytest fixture


class TreeStarter:
    """What the ``supervision_tree`` fixture gives a test: call it to start a tree.

    Every tree it started is stopped when the test ends, passed or failed.
    """

    def __init__(self) -> None:
        self.trees: list[SupervisorRef] = []

    def __call__(self, spec: SupervisorSpecs, **options: Any) -> SupervisorRef:
        """Start ``spec`` with ``Supervisor.start(spec, **options)`` and track it."""
        tree = Supervisor.start(spec, **options)
        self.trees.append(tree)
        return tree

    def stop_all(self, timeout: float | None = 30.0) -> None:
        """Stop every tree, newest first: each child ends, every event is delivered."""
        while self.trees:
            self.trees.pop().stop(timeout)


def _make_fixture() -> Callable[[], Iterator[TreeStarter]]:
    """Build the ``supervision_tree`` fixture; only now is pytest imported."""
    import pytest

    @pytest.fixture
    def supervision_tree() -> Iterator[TreeStarter]:
        """Start supervision trees in a test; each is stopped when the test ends.

        Use it from a test suite with ``pytest_plugins = ["taskvisor.testing"]``
        in ``conftest.py``::

            def test_my_tree(supervision_tree):
                tree = supervision_tree(SupervisorSpec("app", children=[...]))
                assert tree.child("api").ask("ping") == "pong"

        Yields:
            A `TreeStarter`: call it as ``supervision_tree(spec, **options)``
            with the options of `Supervisor.start`. Every tree it started is
            stopped (newest first, each within 30 s) when the test ends,
            passed or failed.
        """
        starter = TreeStarter()
        try:
            yield starter
        finally:
            starter.stop_all()

    return supervision_tree


def __getattr__(name: str) -> Any:
    """Give the ``supervision_tree`` fixture on first use, importing pytest then.

    The strategies need Hypothesis only, so ``from taskvisor.testing import *``
    works without pytest: the fixture is not in ``__all__``. pytest finds it
    through ``pytest_plugins = ["taskvisor.testing"]`` (it lists the module's
    names with ``dir()`` and reads this one, when pytest is surely installed).

    Raises:
        AttributeError: for any other missing name.
        ImportError: for ``supervision_tree`` when pytest is not installed.
    """
    if name == "supervision_tree":
        fixture = _make_fixture()
        globals()[name] = fixture
        return fixture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily built ``supervision_tree`` fixture included."""
    return sorted({*globals(), "supervision_tree"})
