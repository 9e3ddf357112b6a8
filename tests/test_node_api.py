"""The supervisor node's API edges and inputs, one example each (no threads)."""

from __future__ import annotations

from typing import Any

import pytest

from taskvisor.actors import TaskPhase, TaskSpec
from taskvisor.supervision import Backoff, DynamicSupervisorSpec, Intensity, SupervisorSpec
from taskvisor.supervision import _node as n


def task(name: str, **extra: Any) -> TaskSpec:
    return TaskSpec(name=name, target="json:dumps", **extra)


def booted(spec: SupervisorSpec | DynamicSupervisorSpec, **boot: Any) -> n.Node:
    """A node that started its children, each confirmed."""
    node = n.Node(spec, spec.name)
    commands = node.step(n.Boot(**boot), 0.0)
    while starts := [c for c in commands if isinstance(c, n.StartChild)]:
        commands = node.step(n.ChildStarted(starts[0].child, 1), 0.0)
    assert node.running
    return node


def replies(commands: list[Any]) -> list[tuple[int, str | None]]:
    return [
        (c.call, None if c.error is None else c.error.reason)  # type: ignore[attr-defined]
        for c in commands
        if isinstance(c, n.Reply)
    ]


def test_what_is_not_an_input_is_refused() -> None:
    node = n.Node(SupervisorSpec("app", children=[task("a")]), "app")
    with pytest.raises(TypeError, match="not an input of a supervisor node"):
        node.step("boot", 0.0)  # type: ignore[arg-type]


def test_an_unknown_call_and_a_bad_spec_are_answered_with_their_reason() -> None:
    node = booted(SupervisorSpec("app", children=[task("a")]))
    assert replies(node.step(n.Call(1, "reboot_child", ("a",)), 1.0)) == [(1, "unknown")]
    bad = node.step(n.Call(2, "start_child", ("not a spec", (), {}, None)), 1.0)
    assert replies(bad) == [(2, "bad_spec")]
    assert list(node.children) == ["a"]


def test_a_restarting_child_cannot_be_deleted_or_restarted() -> None:
    spec = SupervisorSpec("app", backoff=Backoff(initial=5.0), children=[task("a")])
    node = booted(spec)
    node.step(n.ChildEnded("a", 1, TaskPhase.FAILED, "boom"), 1.0)
    assert node.children["a"].status == n.RESTARTING
    assert replies(node.step(n.Call(1, "delete_child", ("a",)), 2.0)) == [(1, "restarting")]
    assert replies(node.step(n.Call(2, "restart_child", ("a",)), 2.0)) == [(2, "restarting")]
    assert node.children["a"].attempt == 1  # unchanged while it waits


def test_terminating_an_ended_temporary_child_forgets_it() -> None:
    node = booted(SupervisorSpec("app", children=[task("a"), task("t", restart="temporary")]))
    node.step(n.ChildEnded("t", 1, TaskPhase.SUCCEEDED), 1.0)  # a temporary end: forgotten
    assert list(node.children) == ["a"]
    node2 = booted(SupervisorSpec("app", children=[task("a"), task("t", restart="transient")]))
    node2.step(n.ChildEnded("t", 1, TaskPhase.SUCCEEDED), 1.0)  # ended, kept
    commands = node2.step(n.Call(1, "terminate_child", ("t",)), 2.0)
    assert replies(commands) == [(1, None)]
    assert not any(isinstance(c, n.TerminateChild) for c in commands)  # nothing ran


def test_a_stop_answers_the_call_whose_plan_it_replaces() -> None:
    node = booted(SupervisorSpec("app", children=[task("a"), task("b")]))
    commands = node.step(n.Call(1, "terminate_child", ("b",)), 1.0)
    assert [type(c) for c in commands] == [n.TerminateChild]  # the plan waits for "b"
    stopped = node.step(n.StopNode(final=True), 1.0)
    assert replies(stopped) == [(1, "stopped")]


def test_a_resumed_restart_history_carries_on_the_backoff() -> None:
    spec = SupervisorSpec(
        "app",
        intensity=Intensity(10, 60.0),
        backoff=Backoff(initial=1.0, maximum=100.0),
        children=[task("a")],
    )
    fresh = booted(spec)
    resumed = booted(spec, history=n.RestartHistory((-5.0,), {"a": 3}))
    delays = []
    for node in (fresh, resumed):
        commands = node.step(n.ChildEnded("a", 1, TaskPhase.FAILED, "boom"), 10.0)
        (timer,) = [c for c in commands if isinstance(c, n.StartTimer)]
        delays.append(timer.delay)
    assert delays == [1.0, 8.0]  # the fourth restart in a row waits 2**3 s
    assert resumed.policy_state.restarts == (-5.0, 10.0)
