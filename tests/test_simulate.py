"""The public simulator: whole trees on a fake clock, escalation, backoff and dynamic children."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from taskvisor.actors import InvalidSpec, Restart, TaskPhase, TaskSpec
from taskvisor.supervision import (
    Backoff,
    ChildOutcome,
    DynamicSupervisorSpec,
    Exit,
    Fail,
    Failure,
    GiveUp,
    Ignore,
    Intensity,
    RestartChildren,
    Shutdown,
    Start,
    Strategy,
    SupervisorExhausted,
    SupervisorSpec,
    Timeout,
    simulate,
)

RUNNING, FAILED, CANCELLED = TaskPhase.RUNNING, TaskPhase.FAILED, TaskPhase.CANCELLED
EXHAUSTED, SUCCEEDED = TaskPhase.EXHAUSTED, TaskPhase.SUCCEEDED


def task(name: str, **fields: Any) -> TaskSpec:
    return TaskSpec(name=name, target="app.tasks:work", **fields)


def three_levels(root_budget: int = 0, mid_budget: int = 0) -> SupervisorSpec:
    leaf = SupervisorSpec(
        "leaf", intensity=Intensity(1, 10.0), children=[task("worker"), task("peer")]
    )
    mid = SupervisorSpec("mid", intensity=Intensity(mid_budget, 10.0), children=[task("m1"), leaf])
    return SupervisorSpec(
        "app", intensity=Intensity(root_budget, 10.0), children=[task("side"), mid, task("last")]
    )


def test_escalation_through_three_levels_ends_with_a_chain_of_three() -> None:
    script = [Fail(1.0, "mid/leaf/worker", "boom"), Fail(2.0, "mid/leaf/worker", "boom again")]
    script.append(Fail(3.0, "side"))
    sim = simulate(three_levels(), script)

    assert sim.gave_up
    assert sim.end == 2.0
    assert sim.chain == (
        Failure("app/mid/leaf", "worker", FAILED, "boom again"),
        Failure(
            "app/mid",
            "leaf",
            EXHAUSTED,
            "reached max restart intensity: more than 1 restart(s) within 10s",
        ),
        Failure(
            "app",
            "mid",
            EXHAUSTED,
            "reached max restart intensity: more than 0 restart(s) within 10s",
        ),
    )
    assert sim.reason == "reached max restart intensity: more than 0 restart(s) within 10s"
    error = sim.error
    assert isinstance(error, SupervisorExhausted)
    assert error.chain == sim.chain
    assert "supervisor 'app' gave up" in str(error)

    supervisors = [sup for _, sup, d in sim.decisions if isinstance(d, GiveUp)]
    assert supervisors == ["app/mid/leaf", "app/mid", "app"]
    final = sim.children
    assert final["mid/leaf/worker"] == ChildOutcome(EXHAUSTED, 2, False)
    assert final["mid/leaf/peer"] == ChildOutcome(CANCELLED, 1, False)
    assert final["mid/leaf"] == ChildOutcome(EXHAUSTED, 1, False)
    assert final["mid"] == ChildOutcome(EXHAUSTED, 1, False)
    assert final["mid/m1"].phase is CANCELLED
    assert final["side"] == ChildOutcome(CANCELLED, 1, False)
    assert final["last"] == ChildOutcome(CANCELLED, 1, False)
    assert sim.skipped == ((Fail(3.0, "side"), "the tree has stopped"),)
    # The root terminated its other children in reverse start order.
    root_give_up = sim.decisions[-1][2]
    assert isinstance(root_give_up, GiveUp)
    assert root_give_up.terminate == ("last", "side")


def test_a_parent_with_budget_absorbs_the_escalation_and_restarts_the_subtree_fresh() -> None:
    script = [
        Fail(1.0, "mid/leaf/worker"),
        Fail(2.0, "mid/leaf/worker"),
        Fail(3.0, "mid/leaf/worker"),
    ]
    sim = simulate(three_levels(mid_budget=1), script)
    assert not sim.gave_up
    # leaf gave up at 2.0; mid restarted it with fresh state, so the failure at 3.0 is
    # the new leaf's first restart, not its third.
    decisions = [(at, sup, type(d).__name__) for at, sup, d in sim.decisions]
    assert decisions == [
        (1.0, "app/mid/leaf", "RestartChildren"),
        (2.0, "app/mid/leaf", "GiveUp"),
        (2.0, "app/mid", "RestartChildren"),
        (3.0, "app/mid/leaf", "RestartChildren"),
    ]
    assert sim.children["mid/leaf"] == ChildOutcome(RUNNING, 2, True)
    assert sim.children["mid/leaf/worker"] == ChildOutcome(RUNNING, 4, True)
    assert sim.children["mid/leaf/peer"] == ChildOutcome(RUNNING, 2, True)
    assert sim.children["side"] == ChildOutcome(RUNNING, 1, True)
    assert sim.error is None


def test_one_for_all_restart_of_a_supervisor_child_restarts_its_whole_subtree() -> None:
    db = SupervisorSpec("db", intensity=Intensity(1, 100.0), children=[task("c1"), task("c2")])
    spec = SupervisorSpec("app", strategy="one_for_all", children=[db, task("web")])
    script = [Fail(1.0, "db/c1"), Fail(2.0, "web"), Fail(3.0, "db/c1")]
    sim = simulate(spec, script)
    assert not sim.gave_up  # db's budget of 1 was renewed by the fresh restart at 2.0
    web_restart = sim.decisions[1][2]
    assert web_restart == RestartChildren("web", ("db",), ("db", "web"), (), 0.0)
    assert sim.children["db"] == ChildOutcome(RUNNING, 2, True)
    assert sim.children["db/c1"] == ChildOutcome(RUNNING, 4, True)
    assert sim.children["db/c2"] == ChildOutcome(RUNNING, 2, True)
    # Without the fresh subtree, db would have given up at 3.0:
    sim = simulate(spec, [Fail(1.0, "db/c1"), Fail(3.0, "db/c1")])
    assert [type(d) for _, _, d in sim.decisions][:2] == [RestartChildren, GiveUp]


def test_rest_for_one_in_a_tree_restarts_in_start_order() -> None:
    spec = SupervisorSpec(
        "app", strategy="rest_for_one", children=[task("a"), task("b"), task("c")]
    )
    sim = simulate(spec, [Fail(1.0, "b")])
    assert sim.decisions == ((1.0, "app", RestartChildren("b", ("c",), ("b", "c"), (), 0.0)),)
    assert {p: o.attempts for p, o in sim.children.items()} == {"a": 1, "b": 2, "c": 2}
    starts = [line.split()[-1] for line in sim.timeline().splitlines() if "start #2" in line]
    assert starts == ["#2)", "#2)"]
    lines = sim.timeline().splitlines()
    assert lines.index("     1.000  start    b (start #2)") < lines.index(
        "     1.000  start    c (start #2)"
    )


def test_backoff_delays_the_restart_on_the_fake_clock() -> None:
    spec = SupervisorSpec(
        "app", intensity=Intensity(10, 60.0), backoff=Backoff(initial=2.0), children=[task("a")]
    )
    script = [Fail(1.0, "a"), Fail(2.0, "a"), Timeout(3.0, "a"), Fail(4.0, "a")]
    sim = simulate(spec, script)
    # Restarted at 3.0 (1 + 2); the failure at 2.0 finds it down; the timeout at 3.0
    # finds it running again (a due restart goes first) and waits 4 s: the failure at 4.0
    # finds it down again.
    assert [(at, d.delay) for at, _, d in sim.restarts] == [(1.0, 2.0), (3.0, 4.0)]
    assert sim.skipped == ((Fail(2.0, "a"), "not running"), (Fail(4.0, "a"), "not running"))
    assert sim.children["a"] == ChildOutcome(RUNNING, 3, True)
    assert sim.end == 7.0
    assert "decide   app restarts a after 4.000s" in sim.timeline()
    stopped = simulate(spec, [*script, Fail(9.0, "a")], until=5.0)
    assert stopped.children["a"] == ChildOutcome(TaskPhase.TIMEOUT, 2, False)
    assert len(stopped.script) == 5
    assert stopped.end == 4.0


def backed_off_pair() -> SupervisorSpec:
    """rest_for_one over b then a, restarts 1 s after a first failure (2 s after a second)."""
    return SupervisorSpec(
        "app",
        strategy="rest_for_one",
        intensity=Intensity(10, 60.0),
        backoff=Backoff(initial=1.0),
        children=[task("b"), task("a")],
    )


def test_a_newer_decision_replaces_a_pending_restart() -> None:
    """A child waiting for its backoff that a sibling's restart takes along starts once."""
    spec = backed_off_pair()
    sim = simulate(spec, [Fail(1.0, "a"), Fail(1.5, "b")])
    assert [d for _, _, d in sim.decisions] == [
        RestartChildren("a", (), ("a",), (), 1.0),
        # a is only waiting for its restart: "terminating" it cancels that restart.
        RestartChildren("b", ("a",), ("b", "a"), (), 1.0),
    ]
    assert sim.children["a"] == ChildOutcome(RUNNING, 2, True)  # started at 2.5, not at 2.0
    starts = [line for line in sim.timeline().splitlines() if "start    a" in line]
    assert starts == ["     0.000  start    a", "     2.500  start    a (start #2)"]


def test_a_pending_restart_dies_with_its_supervisor() -> None:
    sub = SupervisorSpec(
        "sub",
        intensity=Intensity(1, 60.0),
        backoff=Backoff(initial=5.0),
        children=[task("x"), task("y")],
    )
    spec = SupervisorSpec("app", intensity=Intensity(0, 60.0), children=[sub])
    sim = simulate(spec, [Fail(1.0, "sub/x"), Fail(2.0, "sub/y")])
    assert sim.gave_up
    assert sim.children["sub/x"] == ChildOutcome(FAILED, 1, False)  # never restarted


def test_delayed_restarts_deep_in_the_tree_and_of_gone_supervisors() -> None:
    sub = SupervisorSpec(
        "sub", intensity=Intensity(5, 60.0), backoff=Backoff(initial=1.0), children=[task("x")]
    )
    spec = SupervisorSpec("app", intensity=Intensity(5, 60.0), children=[sub, task("t")])
    # sub restarts x at 2.0, found due before the event at 3.0.
    sim = simulate(spec, [Fail(1.0, "sub/x"), Fail(3.0, "t")])
    assert sim.children["sub/x"] == ChildOutcome(RUNNING, 2, True)
    assert "     2.000  start    sub/x (start #2)" in sim.timeline().splitlines()
    # sub crashes while x waits: the old sub's restart is dropped, due before an event ...
    sim = simulate(spec, [Fail(1.0, "sub/x"), Fail(1.5, "sub"), Fail(3.0, "t")])
    assert sim.children["sub/x"] == ChildOutcome(RUNNING, 2, True)  # with the fresh sub, at 1.5
    assert sim.end == 3.0
    # ... or after the last one.
    sim = simulate(spec, [Fail(1.0, "sub/x"), Fail(1.5, "sub")])
    assert sim.children["sub/x"] == ChildOutcome(RUNNING, 2, True)
    assert sim.end == 2.0


def test_events_under_a_supervisor_waiting_for_its_restart_are_skipped() -> None:
    pool = DynamicSupervisorSpec("pool", template=task("w"))
    sub = SupervisorSpec("sub", children=[task("x")])
    spec = SupervisorSpec(
        "app", intensity=Intensity(5, 60.0), backoff=Backoff(initial=1.0), children=[sub, pool]
    )
    script = [Fail(1.0, "sub"), Fail(1.2, "sub/x"), Fail(1.4, "pool"), Start(1.6, "pool")]
    sim = simulate(spec, [*script, Fail(3.0, "sub/x")])
    assert sim.skipped == (
        (Fail(1.2, "sub/x"), "supervisor 'sub' is not running"),
        (Start(1.6, "pool"), "not running"),
    )
    assert sim.children["sub/x"] == ChildOutcome(RUNNING, 3, True)  # restarted at 2.0 and 4.0


def test_a_replaced_restart_is_dropped_before_the_next_event() -> None:
    spec = backed_off_pair()
    sim = simulate(spec, [Fail(1.0, "a"), Fail(1.5, "b"), Fail(5.0, "a")])
    starts = [line for line in sim.timeline().splitlines() if "start    a" in line]
    assert starts == [
        "     0.000  start    a",
        "     2.500  start    a (start #2)",  # not at 2.0: that restart was replaced
        "     7.000  start    a (start #3)",  # its second restart in a row waits 2 s
    ]


def test_a_supervisor_deep_in_the_tree_crashes() -> None:
    sim = simulate(three_levels(mid_budget=1), [Fail(1.0, "mid/leaf", "bug")])
    assert [(sup, d) for _, sup, d in sim.decisions] == [
        ("app/mid", RestartChildren("leaf", (), ("leaf",), (), 0.0)),
    ]
    assert sim.children["mid/leaf/worker"] == ChildOutcome(RUNNING, 2, True)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_garbage_collector_is_left_as_it_was(enabled: bool) -> None:
    """``simulate`` leaves the cyclic collector as it found it."""
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        simulate(SupervisorSpec("app", children=[task("a")]), [Fail(1.0, "a")])
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_jitter_follows_the_seed() -> None:
    spec = SupervisorSpec(
        "app",
        intensity=Intensity(10, 1.0),
        backoff=Backoff(initial=1.0, jitter=0.5),
        children=[task("a"), task("b")],
    )
    script = [Fail(float(t), "a" if t % 2 else "b") for t in range(0, 100, 10)]

    def delays(seed: int) -> list[float]:
        return [d.delay for _, _, d in simulate(spec, script, seed=seed).restarts]

    assert delays(1) == delays(1)
    assert delays(1) != delays(2)
    assert simulate(spec, script, seed=3).decisions == simulate(spec, script, seed=3).decisions


def test_transient_and_temporary_children_in_a_tree() -> None:
    spec = SupervisorSpec(
        "app",
        children=[task("t", restart="transient"), task("tmp", restart="temporary"), task("p")],
    )
    script = [Exit(1.0, "t"), Fail(2.0, "tmp"), Exit(3.0, "p"), Fail(4.0, "t"), Fail(5.0, "tmp")]
    sim = simulate(spec, script)
    assert [d for _, _, d in sim.decisions] == [
        Ignore("t", remove=False),
        Ignore("tmp", remove=True),
        RestartChildren("p", (), ("p",), (), 0.0),
    ]
    assert sim.children["t"] == ChildOutcome(SUCCEEDED, 1, False)
    assert sim.children["tmp"] == ChildOutcome(FAILED, 1, False)
    assert sim.children["p"] == ChildOutcome(RUNNING, 2, True)
    assert [reason for _, reason in sim.skipped] == ["not running", "no child 'tmp' under 'app'"]


def test_a_supervisor_that_crashes_takes_its_children_down_and_comes_back_fresh() -> None:
    sub = SupervisorSpec("sub", children=[task("x"), task("y")])
    sim = simulate(SupervisorSpec("app", children=[sub]), [Fail(1.0, "sub", "bug")])
    assert sim.decisions == ((1.0, "app", RestartChildren("sub", (), ("sub",), (), 0.0)),)
    assert sim.children["sub/x"] == ChildOutcome(RUNNING, 2, True)


def test_auto_shutdown_of_a_nested_work_unit_is_a_normal_end_for_its_parent() -> None:
    unit = SupervisorSpec(
        "unit",
        auto_shutdown="any_significant",
        restart="transient",
        children=[task("main", restart="transient", significant=True), task("helper")],
    )
    spec = SupervisorSpec("app", children=[unit, task("other")])
    sim = simulate(spec, [Exit(1.0, "unit/main"), Fail(2.0, "other")])
    assert [(sup, d) for _, sup, d in sim.decisions] == [
        ("app/unit", Shutdown("main", ("helper",))),
        ("app", Ignore("unit", remove=False)),
        ("app", RestartChildren("other", (), ("other",), (), 0.0)),
    ]
    assert sim.children["unit"] == ChildOutcome(SUCCEEDED, 1, False)
    assert sim.children["unit/helper"] == ChildOutcome(CANCELLED, 1, False)
    assert not sim.gave_up
    assert not sim.shut_down

    root = SupervisorSpec(
        "app",
        auto_shutdown="all_significant",
        children=[
            task("a", restart="transient", significant=True),
            task("b", restart="temporary", significant=True),
        ],
    )
    sim = simulate(root, [Exit(1.0, "a"), Fail(2.0, "b"), Fail(3.0, "a")])
    assert sim.shut_down
    assert sim.end == 2.0
    assert "root shut down at 2s" in str(sim)


def test_dynamic_supervisors_start_children_from_their_template() -> None:
    pool = DynamicSupervisorSpec(
        "pool", template=task("w", restart="transient"), max_children=2, intensity=Intensity(0, 5.0)
    )
    spec = SupervisorSpec("app", children=[pool, task("side")])
    script = [
        Start(1.0, "pool"),
        Start(1.0, "pool", id="special"),
        Start(1.5, "pool"),  # over max_children
        Exit(2.0, "pool/w-1"),  # a normal end: forgotten
        Start(3.0, "pool"),
        Fail(4.0, "pool/w-2"),  # max_restarts=0: the pool gives up ...
        Start(5.0, "pool"),  # ... and is back, fresh, with no children
    ]
    sim = simulate(spec, script)
    assert sim.skipped == ((Start(1.5, "pool"), "max_children (2) reached"),)
    assert [(sup, type(d).__name__) for _, sup, d in sim.decisions] == [
        ("app/pool", "Ignore"),
        ("app/pool", "GiveUp"),
        ("app", "RestartChildren"),
    ]
    assert sim.children["pool/w-2"] == ChildOutcome(EXHAUSTED, 1, False)
    assert sim.children["pool/special"] == ChildOutcome(CANCELLED, 1, False)
    assert sim.children["pool"] == ChildOutcome(RUNNING, 2, True)
    # The fresh pool numbers its children from 1 again: "pool/w-1" is a new child, on
    # its first attempt (as in a live tree, where it is a new task actor).
    assert sim.children["pool/w-1"] == ChildOutcome(RUNNING, 1, True)
    assert sim.children["side"] == ChildOutcome(RUNNING, 1, True)
    assert "add      pool: new child" in sim.timeline()


def test_a_dynamic_root_and_start_on_a_static_supervisor() -> None:
    root = DynamicSupervisorSpec("pool", template=task("w"))
    sim = simulate(root, [Start(0.0), Start(0.0), Fail(1.0, "w-2"), Start(2.0, id="w-1")])
    assert sim.skipped == ((Start(2.0, id="w-1"), "child 'w-1' is already there"),)
    assert sim.children == {
        "w-1": ChildOutcome(RUNNING, 1, True),
        "w-2": ChildOutcome(RUNNING, 2, True),
    }
    with pytest.raises(
        InvalidSpec, match=r"script\[0\]\.spec: a static supervisor's start_child needs a child"
    ):
        simulate(SupervisorSpec("app", children=[task("a")]), [Start(0.0)])


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ([Fail(1.0, "a"), Fail(2.0, "nope")], r"script\[1\]\.child: no child 'nope' under 'app'"),
        ([Fail(1.0, "sub/zz")], r"script\[0\]\.child: no child 'zz' under 'app/sub'"),
        ([Fail(1.0, "a/b")], r"script\[0\]\.child: 'a' is a task, not a supervisor"),
        (["boom"], r"script\[0\]: expected a Fail, Exit, Timeout, Start, TerminateChild, "),
    ],
)
def test_script_paths_are_checked_against_the_spec(script: list[Any], message: str) -> None:
    spec = SupervisorSpec("app", children=[task("a"), SupervisorSpec("sub", children=[task("x")])])
    with pytest.raises(InvalidSpec, match=message):
        simulate(spec, script)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Fail(-1.0, "a"), "at: expected a finite number >= 0 and <= 100,000,000"),
        (lambda: Fail(float("inf"), "a"), "at: expected a finite number"),
        (lambda: Fail(10**400, "a"), "at: expected a finite number"),
        (lambda: Exit(1.0, ""), "child: expected a child path like 'db' or 'db/conn', got ''"),
        (lambda: Timeout(1.0, "a//b"), "child: expected a child path"),
        (lambda: Start(1.0, id="a/b"), "id: expected a child id without '/'"),
        (lambda: Start(1.0, "/x"), "supervisor: expected a supervisor path"),
    ],
)
def test_script_events_are_validated(build: Any, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        build()
    assert str(info.value).startswith(message)


def test_simulate_rejects_a_non_spec() -> None:
    with pytest.raises(InvalidSpec, match="spec: expected a SupervisorSpec"):
        simulate(task("a"), [])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"script": 42}, "script: expected a list of script events, got 42"),
        ({"script": "boom"}, "script: expected a list of script events"),
        ({"script": [], "until": float("nan")}, "until: expected a finite number"),
        ({"script": [], "until": -1}, "until: expected a finite number >= 0"),
        ({"script": [], "until": "x"}, "until: expected a finite number"),
    ],
)
def test_simulate_refuses_bad_scripts_and_times_by_name(kwargs: Any, message: str) -> None:
    spec = SupervisorSpec("app", children=[task("a")])
    with pytest.raises(InvalidSpec) as info:
        simulate(spec, **kwargs)
    assert str(info.value).startswith(message)


def test_the_summary_reads_well() -> None:
    spec = SupervisorSpec(
        "app",
        strategy=Strategy.ONE_FOR_ALL,
        intensity=Intensity(1, 10.0),
        backoff=Backoff(initial=0.5),
        children=[task("a"), task("b", restart=Restart.TEMPORARY)],
    )
    sim = simulate(spec, [Fail(1.0, "a", "disk full"), Fail(2.0, "a"), Exit(3.0, "a")])
    text = str(sim)
    assert text.splitlines()[0] == (
        "simulation of 'app': 3 script events, 2 decisions, root gave up at 2s: "
        "reached max restart intensity: more than 1 restart(s) within 10s"
    )
    for line in [
        "     0.000  start    a",
        "     1.000  fail     a: disk full",
        "     1.000  decide   app restarts a after 0.500s; terminated b first; dropped temporary b",
        "     1.500  start    a (start #2)",
        "     2.000  GIVE UP  app: reached max restart intensity: more than 1 restart(s) "
        "within 10s; terminated nothing",
        "     3.000  skipped  exit a: the tree has stopped",
        "chain of failures, first cause first:",
        "  1. app: child 'a' ended failed: failed",
        "  a: exhausted, 2 start(s)",
        "  b: cancelled, 1 start(s)",
    ]:
        assert line in text.splitlines(), line
    running = simulate(spec, [])
    assert "still running (last change at 0s)" in str(running)
    assert "  a: running, 1 start(s)" in str(running).splitlines()
