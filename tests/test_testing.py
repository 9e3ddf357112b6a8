"""taskvisor.testing: the strategies build valid values, and a user's property reads short."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from taskvisor.actors import Restart, TaskSpec
from taskvisor.supervision import (
    AutoShutdown,
    Backoff,
    DynamicSupervisorSpec,
    Intensity,
    Policy,
    RestartChildren,
    Start,
    SupervisorSpec,
    spec_from_data,
    spec_to_data,
)
from taskvisor.testing import (
    backoffs,
    failure_scripts,
    intensities,
    policies,
    scenarios,
    simulate,
    supervisor_specs,
    task_specs,
)

Specs = SupervisorSpec | DynamicSupervisorSpec
ROOT = Path(__file__).resolve().parent.parent


def depth(spec: Any) -> int:
    """Levels of supervisors below ``spec``."""
    if isinstance(spec, TaskSpec):
        return -1
    if isinstance(spec, DynamicSupervisorSpec):
        return 1 + depth(spec.template)
    return 1 + max((depth(c) for c in spec.children), default=-1)


def nodes(spec: Specs) -> list[tuple[Any, Specs]]:
    """Every (child spec, its supervisor spec) pair in the tree."""
    children = [spec.template] if isinstance(spec, DynamicSupervisorSpec) else list(spec.children)
    out: list[tuple[Any, Specs]] = [(c, spec) for c in children]
    for c in children:
        if not isinstance(c, TaskSpec):
            out += nodes(c)
    return out


@given(supervisor_specs(max_depth=2))
def test_supervisor_specs_are_valid_and_round_trip(spec: Specs) -> None:
    assert isinstance(spec, (SupervisorSpec, DynamicSupervisorSpec))
    assert depth(spec) <= 2
    assert spec_from_data(spec_to_data(spec)) == spec
    for child, parent in nodes(spec):
        if child.significant:
            assert child.restart is not Restart.PERMANENT
            assert parent.auto_shutdown is not AutoShutdown.NEVER


@given(supervisor_specs(max_depth=0, dynamic=False))
def test_max_depth_zero_gives_flat_static_trees(spec: Specs) -> None:
    assert isinstance(spec, SupervisorSpec)
    assert all(isinstance(c, TaskSpec) for c in spec.children)


@given(intensities(), backoffs(max_delay=2.0), policies(), task_specs())
def test_value_strategies(
    intensity: Intensity, backoff: Backoff, policy: Policy, task: TaskSpec
) -> None:
    assert 0 <= intensity.max_restarts <= 10
    assert intensity.within > 0
    assert backoff.maximum <= 2.0
    assert 0 <= backoff.delay(3, 0.5) <= backoff.maximum
    assert isinstance(policy, Policy)
    assert not (task.significant and task.restart is Restart.PERMANENT)


@given(st.data())
def test_failure_scripts_fit_their_spec(data: st.DataObject) -> None:
    spec = data.draw(supervisor_specs())
    script = data.draw(failure_scripts(spec, max_events=8, max_time=30.0))
    assert len(script) <= 8
    assert all(0.0 <= event.at <= 30.0 for event in script)
    sim = simulate(spec, script)  # the paths are valid: simulate would raise otherwise
    assert len(sim.script) == len(script)
    if any(isinstance(e, Start) for e in script):
        assert isinstance(spec, DynamicSupervisorSpec) or any(
            isinstance(c, DynamicSupervisorSpec) for c, _ in nodes(spec)
        )


# --------------------------------------------------------------------------- user examples

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
def test_any_three_failures_leave_the_tree_running(script: list[Any]) -> None:
    """The module docstring's example, as written there."""
    assert not simulate(SPEC, script).gave_up


def test_the_example_property_is_not_vacuous() -> None:
    """Four failures can exhaust the same tree: Hypothesis finds such a script, and it
    is as short as it can be."""
    script = find(failure_scripts(SPEC, max_events=12), lambda s: simulate(SPEC, s).gave_up)
    assert len(script) == 4
    sim = simulate(SPEC, script)
    assert sim.chain[-1].supervisor == "app"
    assert sim.reason is not None
    # The last end may be a normal exit of a PERMANENT child: then the reason adds the hint.
    assert sim.reason.startswith("reached max restart intensity: more than 3 restart(s) within 10s")


def _child_spec(spec: Specs, supervisor_path: str, child: str) -> Any:
    node: Any = spec
    for part in supervisor_path.split("/")[1:]:
        node = node.template if isinstance(node, DynamicSupervisorSpec) else node.child(part)
    return node.template if isinstance(node, DynamicSupervisorSpec) else node.child(child)


@given(scenarios(max_depth=2, max_events=15))
def test_no_supervisor_ever_restarts_a_temporary_child(scenario: tuple[Specs, list[Any]]) -> None:
    """A property a user might write with ``scenarios()``, over trees and failures alike."""
    spec, script = scenario
    sim = simulate(spec, script)
    for _, supervisor, decision in sim.decisions:
        if isinstance(decision, RestartChildren):
            for child in decision.restart:
                assert _child_spec(spec, supervisor, child).restart is not Restart.TEMPORARY
    assert sim.gave_up == bool(sim.chain)
    if sim.gave_up:
        assert sim.chain[-1].supervisor == spec.name


_USER_SUITE = """
import threading

import pytest

from taskvisor.actors import TaskSpec
from taskvisor.supervision import SupervisorError, SupervisorSpec

pytest_plugins = ["taskvisor.testing"]
BEFORE = threading.active_count()
TREES = []


def serve(ctx):
    while True:
        request = ctx.receive()
        request.reply(("pong", ctx.attempt))


def test_a_tree_that_fails_its_test(supervision_tree):
    spec = SupervisorSpec("app", children=[TaskSpec(name="api", target=serve)])
    tree = supervision_tree(spec)
    TREES.append(tree)
    assert tree.child("api").ask("ping") == ("pong", 1)
    assert threading.active_count() > BEFORE
    raise AssertionError("this test fails with the tree running")


def test_the_tree_was_stopped_anyway():
    (tree,) = TREES
    assert not tree.running
    with pytest.raises(SupervisorError):
        tree.child("api")
    assert threading.active_count() == BEFORE, threading.enumerate()
"""


def test_the_pytest_fixture_stops_trees_even_when_the_test_fails(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_user=_USER_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*this test fails with the tree running*"])


def test_tree_starter_stops_newest_first() -> None:
    from helpers import Recorder, worker
    from taskvisor.actors import TaskFinished
    from taskvisor.testing import TreeStarter

    recorder = Recorder()
    starter = TreeStarter()
    for name in ("one", "two"):
        starter(
            SupervisorSpec(name, children=[TaskSpec(name="w", target=worker)]), hooks=[recorder]
        )
    assert [tree.running for tree in starter.trees] == [True, True]
    trees = list(starter.trees)
    starter.stop_all()
    assert starter.trees == []
    assert [tree.running for tree in trees] == [False, False]
    finished = [e.task_id for e in recorder.events if isinstance(e, TaskFinished)]
    assert finished == ["two/w", "one/w"]


# ------------------------------------------------------------------- packaging of the module

_WITHOUT_PYTEST = """
import sys


class NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("pytest", "_pytest"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, NoPytest())
from taskvisor.testing import *

assert failure_scripts and scenarios and simulate and TreeStarter
assert "pytest" not in sys.modules and "_pytest" not in sys.modules
import taskvisor.testing

try:
    taskvisor.testing.supervision_tree
except ImportError as error:
    print("fixture:", error)
"""


def test_star_import_works_without_pytest() -> None:
    """The strategies need Hypothesis only: with pytest unimportable, the star import
    works and imports no pytest; only asking for the fixture says pytest is missing."""
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PYTEST],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "fixture: No module named 'pytest' (blocked by the test)\n"


def test_the_fixture_is_found_by_name_but_not_star_imported() -> None:
    import taskvisor.testing

    assert "supervision_tree" not in taskvisor.testing.__all__
    assert "supervision_tree" in dir(taskvisor.testing)
    fixture = taskvisor.testing.supervision_tree
    assert fixture is taskvisor.testing.supervision_tree  # built once
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = taskvisor.testing.no_such_name


def test_the_testing_extra_brings_what_the_module_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = {re.split(r"[<>=\[ ]", r)[0] for r in project["optional-dependencies"]["testing"]}
    assert {"hypothesis", "pytest"} <= extra


@pytest.mark.parametrize(
    "make",
    [
        lambda: intensities(max_within=1e9),
        lambda: intensities(max_restarts=-1),
        lambda: intensities(min_within=0),
        lambda: backoffs(max_delay=1e9),
        lambda: backoffs(max_delay=float("nan")),
        lambda: backoffs(max_delay=10**400),
        lambda: intensities(max_within=10**400),
        lambda: supervisor_specs(max_children=-1),
        lambda: supervisor_specs(max_depth=10**400),
        lambda: failure_scripts(SPEC, max_events=-1),
        lambda: failure_scripts(SPEC, max_events=10**400),
        lambda: failure_scripts(SPEC, max_time=-1),
        lambda: scenarios(max_depth=-1),
    ],
)
def test_strategies_refuse_parameters_they_cannot_draw_valid_values_for(
    make: Callable[[], object],
) -> None:
    with pytest.raises(InvalidArgument, match="expected"):
        make()


@settings(max_examples=30, database=None)
@given(intensities(max_within=1e8), backoffs(max_delay=1e8))
def test_strategies_draw_valid_values_up_to_the_limits(intensity: object, backoff: object) -> None:
    assert intensity is not None
    assert backoff is not None
