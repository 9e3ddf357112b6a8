"""The pure policy core: restart types, strategies, intensity, backoff, auto shutdown.

Times in the property tests lie on a grid of quarter seconds, so window
arithmetic is exact in binary floating point and the properties can state
OTP's inclusive window (``r >= now - within``) without rounding slack.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from taskvisor.actors import InvalidSpec, Restart, TaskPhase
from taskvisor.supervision import (
    AutoShutdown,
    Backoff,
    ChildExit,
    ChildHistory,
    ChildInfo,
    Decision,
    GiveUp,
    Ignore,
    Intensity,
    PMap,
    Policy,
    RestartChildren,
    Shutdown,
    Strategy,
    SupervisorState,
    decide,
    removed,
    started,
    stopped,
)
from taskvisor.supervision._policy import MAX_MULTIPLIER, MAX_SECONDS, _window, seconds

P, T, TEMP = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY
FAILED, SUCCEEDED, CANCELLED = TaskPhase.FAILED, TaskPhase.SUCCEEDED, TaskPhase.CANCELLED
ENDS = [p for p in TaskPhase if p.is_terminal]
ABNORMAL = {TaskPhase.FAILED, TaskPhase.TIMEOUT, TaskPhase.EXHAUSTED}


def kids(*specs: str | tuple[str, Restart] | tuple[str, Restart, bool]) -> tuple[ChildInfo, ...]:
    out = []
    for s in specs:
        if isinstance(s, str):
            out.append(ChildInfo(s, P))
        else:
            out.append(ChildInfo(*s))
    return tuple(out)


class Sup:
    """A tiny driver: feeds exits to ``decide`` and keeps the children list like an actor would."""

    def __init__(self, policy: Policy, children: Sequence[ChildInfo], now: float = 0.0) -> None:
        self.policy = policy
        self.children = tuple(children)
        self.state = SupervisorState.initial(self.children, now)

    def exit(
        self, child: str, phase: TaskPhase = FAILED, now: float = 0.0, error: str | None = None
    ) -> Decision:
        self.state, decision = decide(
            self.policy, self.children, self.state, ChildExit(child, phase, error), now
        )
        gone: set[str] = set()
        if isinstance(decision, Ignore) and decision.remove:
            gone.add(decision.child)
        if isinstance(decision, RestartChildren):
            gone.update(decision.drop)
        if gone:
            self.children = tuple(c for c in self.children if c.id not in gone)
        return decision


# --------------------------------------------------------------------------- OTP examples


def test_one_for_one_restarts_only_the_child_that_ended() -> None:
    """OTP design principles, one_for_one: if a child terminates, only it is restarted."""
    sup = Sup(Policy(Strategy.ONE_FOR_ONE), kids("a", "b", "c"))
    assert sup.exit("b") == RestartChildren("b", terminate=(), restart=("b",), drop=(), delay=0.0)


def test_one_for_all_terminates_the_others_in_reverse_and_restarts_all_in_order() -> None:
    """OTP: all other children are terminated, then all children are restarted."""
    sup = Sup(Policy(Strategy.ONE_FOR_ALL), kids("a", "b", "c", "d"))
    decision = sup.exit("b")
    assert decision == RestartChildren(
        "b", terminate=("d", "c", "a"), restart=("a", "b", "c", "d"), drop=(), delay=0.0
    )


def test_rest_for_one_restarts_the_child_and_those_started_after_it() -> None:
    """OTP: the children after the terminated one are terminated, then all of those restarted."""
    sup = Sup(Policy(Strategy.REST_FOR_ONE), kids("a", "b", "c", "d"))
    decision = sup.exit("b")
    assert decision == RestartChildren(
        "b", terminate=("d", "c"), restart=("b", "c", "d"), drop=(), delay=0.0
    )
    assert sup.exit("d") == RestartChildren("d", (), ("d",), (), 0.0)


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
def test_temporary_siblings_are_dropped_not_restarted(strategy: Strategy) -> None:
    """OTP: a temporary child is never restarted, even when a sibling's death terminates it."""
    sup = Sup(Policy(strategy), kids("a", ("t", TEMP), "c"))
    decision = sup.exit("a")
    assert isinstance(decision, RestartChildren)
    assert decision.terminate == ("c", "t")
    assert decision.restart == ("a", "c")
    assert decision.drop == ("t",)
    assert [c.id for c in sup.children] == ["a", "c"]
    assert "t" not in sup.state.history


def test_group_restart_also_starts_a_sibling_that_ended_normally() -> None:
    """OTP's start_children starts every child in the group, ended ones included."""
    sup = Sup(Policy(Strategy.ONE_FOR_ALL), kids("a", ("b", T), "c"))
    assert sup.exit("b", SUCCEEDED) == Ignore("b", remove=False)
    assert sup.state.ended == frozenset({"b"})
    decision = sup.exit("c", now=1.0)
    assert decision == RestartChildren("c", ("a",), ("a", "b", "c"), (), 0.0)
    assert sup.state.ended == frozenset()


def test_max_restarts_zero_gives_up_at_the_first_restart() -> None:
    sup = Sup(Policy(intensity=Intensity(0, 5.0)), kids("a", "b", "c"))
    decision = sup.exit("b", error="boom")
    assert isinstance(decision, GiveUp)
    assert decision.terminate == ("c", "a")
    assert "more than 0 restart(s) within 5s" in decision.reason
    assert sup.state.gave_up


def test_window_is_inclusive_like_otp_add_restart() -> None:
    """OTP keeps restarts R with R >= Now - Period: one exactly ``within`` ago still counts."""
    sup = Sup(Policy(intensity=Intensity(1, 5.0)), kids("a"))
    assert isinstance(sup.exit("a", now=10.0), RestartChildren)
    assert isinstance(sup.exit("a", now=15.0), GiveUp)

    sup = Sup(Policy(intensity=Intensity(1, 5.0)), kids("a"))
    assert isinstance(sup.exit("a", now=10.0), RestartChildren)
    assert isinstance(sup.exit("a", now=15.25), RestartChildren)
    assert sup.state.restarts == (15.25,)


def test_window_stays_inclusive_while_older_restarts_drop_out() -> None:
    sup = Sup(Policy(intensity=Intensity(2, 5.0)), kids("a", "b"))
    for now in (0.0, 1.0, 6.0):  # at 6.0 the restart at 0.0 leaves; the one at 1.0 stays
        assert isinstance(sup.exit("a", now=now), RestartChildren)
    assert sup.state.restarts == (1.0, 6.0)
    assert isinstance(sup.exit("b", now=6.0), GiveUp)


def test_one_for_all_restart_counts_once() -> None:
    sup = Sup(Policy(Strategy.ONE_FOR_ALL, Intensity(1, 10.0)), kids("a", "b", "c", "d", "e"))
    decision = sup.exit("c", now=1.0)
    assert isinstance(decision, RestartChildren)
    assert len(decision.restart) == 5
    assert sup.state.restarts == (1.0,)
    assert isinstance(sup.exit("a", now=2.0), GiveUp)


def test_per_child_limit_gives_up_while_the_supervisor_budget_lasts() -> None:
    policy = Policy(intensity=Intensity(100, 10.0), child_intensity=Intensity(1, 10.0))
    sup = Sup(policy, kids("a", "b", "c"))
    for now, child in enumerate(["a", "b", "c"]):
        assert isinstance(sup.exit(child, now=float(now)), RestartChildren)
    decision = sup.exit("b", now=5.0)
    assert isinstance(decision, GiveUp)
    assert "'b' reached its own restart limit" in decision.reason
    assert decision.terminate == ("c", "a")
    # Outside the child's own window it would have been fine:
    sup = Sup(policy, kids("a", "b"))
    assert isinstance(sup.exit("b", now=0.0), RestartChildren)
    assert isinstance(sup.exit("b", now=10.25), RestartChildren)
    assert sup.state.child_restarts == {"b": (10.25,)}


# --------------------------------------------------------------------------- restart types


def test_transient_restarted_only_after_an_abnormal_end() -> None:
    for phase in ENDS:
        sup = Sup(Policy(), kids(("a", T), "b"))
        decision = sup.exit("a", phase)
        if phase in ABNORMAL:
            assert decision == RestartChildren("a", (), ("a",), (), 0.0), phase
        else:
            assert decision == Ignore("a", remove=False), phase
            assert not sup.state.is_active("a")


def test_permanent_restarted_after_any_end_and_temporary_never() -> None:
    for phase in ENDS:
        sup = Sup(Policy(), kids("p", ("t", TEMP)))
        assert isinstance(sup.exit("p", phase), RestartChildren), phase
        assert sup.exit("t", phase) == Ignore("t", remove=True), phase
        assert [c.id for c in sup.children] == ["p"]


@st.composite
def exit_runs(draw: st.DrawFn) -> tuple[Policy, tuple[ChildInfo, ...], list[tuple[str, TaskPhase]]]:
    n = draw(st.integers(1, 6))
    children = tuple(ChildInfo(f"c{i}", draw(st.sampled_from(Restart))) for i in range(n))
    policy = Policy(
        draw(st.sampled_from(Strategy)),
        Intensity(draw(st.integers(0, 8)), draw(st.sampled_from([0.25, 1.0, 2.5, 5.0]))),
        dynamic=draw(st.booleans()),
    )
    events = draw(
        st.lists(
            st.tuples(st.sampled_from([c.id for c in children]), st.sampled_from(ENDS)),
            max_size=40,
        )
    )
    return policy, children, events


@given(exit_runs(), st.lists(st.integers(0, 4), min_size=40, max_size=40))
def test_restart_types_hold_in_any_exit_sequence(
    run: tuple[Policy, tuple[ChildInfo, ...], list[tuple[str, TaskPhase]]], steps: list[int]
) -> None:
    policy, children, events = run
    types = {c.id: c.restart for c in children}
    sup = Sup(policy, children)
    now = 0.0
    for (child, phase), step in zip(events, steps, strict=False):
        now += step * 0.25
        active = child in {c.id for c in sup.children} and sup.state.is_active(child)
        done = sup.state.done
        decision = sup.exit(child, phase, now)
        if not active or done:
            assert decision == Ignore(child)
            continue
        restart_type = types[child]
        if restart_type is TEMP or (restart_type is T and phase not in ABNORMAL):
            assert isinstance(decision, (Ignore, Shutdown))
            if isinstance(decision, Ignore):
                assert decision.remove == (restart_type is TEMP or policy.dynamic)
        else:
            assert isinstance(decision, (RestartChildren, GiveUp))
        if isinstance(decision, RestartChildren):
            assert all(types[c] is not TEMP for c in decision.restart), decision
            assert all(types[c] is TEMP for c in decision.drop), decision
            assert child in decision.restart


# --------------------------------------------------------------------------- the window


@st.composite
def window_runs(draw: st.DrawFn) -> tuple[Policy, tuple[ChildInfo, ...], list[tuple[str, float]]]:
    n = draw(st.integers(1, 5))
    children = tuple(ChildInfo(f"c{i}", P) for i in range(n))
    policy = Policy(
        draw(st.sampled_from(Strategy)),
        Intensity(draw(st.integers(0, 6)), draw(st.sampled_from([0.25, 0.5, 1.0, 3.0, 7.5]))),
    )
    events = []
    now = 0.0
    for _ in range(draw(st.integers(0, 60))):
        now += draw(st.integers(0, 6)) * 0.25
        events.append((draw(st.sampled_from([c.id for c in children])), now))
    return policy, children, events


@given(window_runs())
def test_no_closed_window_holds_more_than_max_restarts(
    run: tuple[Policy, tuple[ChildInfo, ...], list[tuple[str, float]]],
) -> None:
    policy, children, events = run
    sup = Sup(policy, children)
    times: list[float] = []
    gave_up_at = None
    for child, now in events:
        decision = sup.exit(child, FAILED, now)
        if isinstance(decision, RestartChildren):
            times.append(now)
        elif isinstance(decision, GiveUp):
            gave_up_at = now
            break
    limit, within = policy.intensity.max_restarts, policy.intensity.within
    # The fullest closed interval of length ``within`` ends at a restart.
    for t in times:
        assert sum(1 for r in times if t - within <= r <= t) <= limit
    if gave_up_at is not None:
        # ... and the supervisor gave up only because one more would have broken it.
        assert sum(1 for r in times if r >= gave_up_at - within) == limit


# --------------------------------------------------------------------------- backoff


@given(
    st.builds(
        Backoff,
        initial=st.floats(0, 10),
        maximum=st.floats(10, 100),
        multiplier=st.floats(1, 10),
        jitter=st.floats(0, 1),
    ),
    st.integers(1, 5000),
    st.floats(0, 1, exclude_max=True),
)
def test_backoff_delay_stays_within_zero_and_maximum(
    backoff: Backoff, failures: int, rand: float
) -> None:
    delay = backoff.delay(failures, rand)
    assert 0.0 <= delay <= backoff.maximum
    base = backoff.base(failures)
    jitter = backoff.jitter
    assert abs(delay - base) <= jitter * base + 1e-9


@given(st.floats(0, 10), st.floats(0.001, 100), st.floats(1, 10), st.integers(1, 3000))
def test_backoff_without_jitter_never_shrinks(
    initial: float, extra: float, multiplier: float, failures: int
) -> None:
    backoff = Backoff(initial=initial, maximum=initial + extra, multiplier=multiplier)
    assert backoff.delay(failures, 0.9) <= backoff.delay(failures + 1, 0.1)
    assert backoff.delay(1, 0.0) == min(initial, backoff.maximum)


def test_decide_backs_off_past_the_delays_it_computes_ahead() -> None:
    """A child restarted more than 64 times in a row still gets ``Backoff.delay``."""
    backoff = Backoff(initial=0.001, maximum=1e8, multiplier=1.25)
    policy = Policy(intensity=Intensity(1000, 1.0), backoff=backoff)
    children = kids("a")
    state = SupervisorState.initial(children, 0.0)
    delays = []
    for i in range(80):
        state, decision = decide(policy, children, state, ChildExit("a", FAILED), 10.0 * i)
        assert isinstance(decision, RestartChildren)
        delays.append(decision.delay)
    assert delays == [backoff.delay(n, 0.5) for n in range(1, 81)]
    assert len(set(delays)) == 80


def test_backoff_doubles_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0)
    assert [backoff.delay(n, 0.5) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="failures"):
        backoff.delay(0, 0.5)


def test_decide_backs_off_consecutive_restarts_and_resets_after_a_healthy_run() -> None:
    policy = Policy(intensity=Intensity(100, 1.0), backoff=Backoff(initial=1.0, reset_after=30.0))
    sup = Sup(policy, kids("a", "b"))
    delays = []
    now = 0.0
    for _ in range(4):
        decision = sup.exit("a", now=now)
        assert isinstance(decision, RestartChildren)
        delays.append(decision.delay)
        now += decision.delay + 1.0  # it fails one second after each restart
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert sup.state.failures == {"a": 4}
    # It now runs 30 s before failing: the count starts again.
    decision = sup.exit("a", now=now + 29.0)
    assert isinstance(decision, RestartChildren)
    assert decision.delay == 1.0
    # Another child has its own count.
    decision = sup.exit("b", now=now + 40.0)
    assert isinstance(decision, RestartChildren)
    assert decision.delay == 1.0


def jittered_delays(seed: int | None, state_seed: int = 0) -> list[float]:
    policy = Policy(
        intensity=Intensity(100, 1.0), backoff=Backoff(initial=1.0, jitter=0.5, seed=seed)
    )
    children = kids("a")
    state = SupervisorState.initial(children, 0.0, seed=state_seed)
    out = []
    for i in range(6):
        state, decision = decide(policy, children, state, ChildExit("a", FAILED), 100.0 * i)
        assert isinstance(decision, RestartChildren)
        out.append(decision.delay)
    assert state.draws == 6
    return out


def test_jitter_draws_depend_only_on_the_seed_and_the_draw_count() -> None:
    """The same state and event give the same delay, whatever was decided in between."""
    policy = Policy(intensity=Intensity(10**6, 1.0), backoff=Backoff(initial=1.0, jitter=1.0))
    children = kids("a")
    state = SupervisorState.initial(children, 0.0, seed=11)
    states, delays = [], []
    for i in range(1200):  # more draws than one block of random numbers
        states.append(state)
        state, decision = decide(policy, children, state, ChildExit("a", FAILED), 10.0 * i)
        assert isinstance(decision, RestartChildren)
        delays.append(decision.delay)
    assert state.draws == 1200
    assert all(0.0 <= d <= 2.0 * min(30.0, 2.0 ** min(n, 10)) for n, d in enumerate(delays))
    for i in (1199, 0, 700, 511, 512, 3):  # again, out of order: the same delays
        _, decision = decide(policy, children, states[i], ChildExit("a", FAILED), 10.0 * i)
        assert decision == RestartChildren("a", (), ("a",), (), delays[i])
    other = decide(policy, children, states[5]._replace(seed=12), ChildExit("a", FAILED), 50.0)
    assert other[1] != RestartChildren("a", (), ("a",), (), delays[5])


def test_caches_are_bounded_and_never_change_a_decision() -> None:
    """``decide`` keeps the index of the last children tuple and blocks of jitter draws."""
    backoff = Backoff(initial=1.0, jitter=0.5)
    policy = Policy(Strategy.ONE_FOR_ALL, Intensity(100, 1.0), backoff=backoff)
    children = kids("a", "b")
    state = SupervisorState.initial(children, 0.0, seed=3)
    expected = decide(policy, children, state, ChildExit("b", FAILED), 1.0)
    lone = Policy(intensity=Intensity(100, 1.0))
    for i in range(4200):  # more than any cache holds
        many = (ChildInfo(f"c{i}"),)
        decide(lone, many, SupervisorState.initial(many, 0.0), ChildExit(f"c{i}", FAILED), 1.0)
        if i < 300:
            jittered = Policy(backoff=Backoff(initial=1.0, jitter=0.5))
            first = SupervisorState.initial(many, 0.0, seed=i)
            decide(jittered, many, first, ChildExit(f"c{i}", FAILED), 1.0)
        assert decide(policy, children, state, ChildExit("b", FAILED), 1.0) == expected
    assert decide(policy, list(children), state, ChildExit("b", FAILED), 1.0) == expected


def test_states_and_decisions_are_named_tuples() -> None:
    state = SupervisorState.initial(kids("a"), 2.0)
    assert state == SupervisorState((), PMap({"a": ChildHistory(2.0)}), 2.0)
    assert state._replace(draws=4).draws == 4
    assert RestartChildren("a", (), ("a",))._replace(delay=1.5).delay == 1.5
    assert repr(Ignore("a")) == "Ignore(child='a', remove=False)"
    with pytest.raises(AttributeError):
        state.draws = 1  # type: ignore[misc]


def test_jitter_is_deterministic_per_seed() -> None:
    assert jittered_delays(7) == jittered_delays(7)
    assert jittered_delays(7) != jittered_delays(8)
    assert jittered_delays(None, state_seed=3) == jittered_delays(3)
    spread = jittered_delays(1)
    assert len(set(spread)) == 6
    bases = [min(30.0, 2.0**i) for i in range(6)]
    assert all(0.5 * b <= d <= 1.5 * b for d, b in zip(spread, bases, strict=True))


def test_group_restart_waits_for_the_failing_childs_backoff() -> None:
    policy = Policy(Strategy.ONE_FOR_ALL, Intensity(10, 1.0), backoff=Backoff(initial=2.0))
    sup = Sup(policy, kids("a", "b"))
    decision = sup.exit("b", now=1.0)
    assert decision == RestartChildren("b", ("a",), ("a", "b"), (), 2.0)
    assert sup.state.started_at == {"a": 3.0, "b": 3.0}


# --------------------------------------------------------------------------- auto shutdown


def test_any_significant_shuts_down_when_one_ends_by_itself() -> None:
    policy = Policy(auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)
    sup = Sup(policy, kids("a", ("s", T, True), "b", ("t", TEMP, True)))
    # A transient significant child that fails is restarted, not a shutdown.
    assert isinstance(sup.exit("s", FAILED), RestartChildren)
    decision = sup.exit("s", SUCCEEDED)
    assert decision == Shutdown("s", terminate=("t", "b", "a"))
    assert sup.state.shut_down
    assert sup.exit("a") == Ignore("a")  # nothing more after shutting down


def test_any_significant_temporary_shuts_down_even_after_a_failure() -> None:
    sup = Sup(Policy(auto_shutdown="any_significant"), kids("a", ("t", TEMP, True)))
    assert sup.exit("t", FAILED) == Shutdown("t", terminate=("a",))


def test_all_significant_waits_for_the_last_active_one() -> None:
    policy = Policy(auto_shutdown=AutoShutdown.ALL_SIGNIFICANT)
    sup = Sup(policy, kids(("s1", T, True), "a", ("s2", TEMP, True), ("s3", T, True)))
    assert sup.exit("s1", SUCCEEDED) == Ignore("s1", remove=False)
    assert sup.exit("s2", FAILED) == Ignore("s2", remove=True)
    assert sup.exit("a", FAILED) == RestartChildren("a", (), ("a",), (), 0.0)
    assert sup.exit("s3", CANCELLED) == Shutdown("s3", terminate=("a",))


def test_non_significant_children_never_trigger_a_shutdown() -> None:
    sup = Sup(Policy(auto_shutdown="any_significant"), kids(("a", TEMP), ("b", T)))
    assert sup.exit("a", SUCCEEDED) == Ignore("a", remove=True)
    assert sup.exit("b", SUCCEEDED) == Ignore("b", remove=False)
    assert not sup.state.shut_down


def test_auto_shutdown_never_ignores_significance() -> None:
    """Specs reject this combination; the core alone simply does not shut down."""
    sup = Sup(Policy(), kids(("s", T, True), "a"))
    assert sup.exit("s", SUCCEEDED) == Ignore("s")


# --------------------------------------------------------------------------- state helpers


def test_events_the_supervisor_cannot_act_on_are_ignored_without_change() -> None:
    sup = Sup(Policy(intensity=Intensity(0, 1.0)), kids(("a", T), "b"))
    state = sup.state
    assert sup.exit("nobody") == Ignore("nobody")
    assert sup.state is state
    sup.exit("a", SUCCEEDED)
    state = sup.state
    assert sup.exit("a", FAILED) == Ignore("a")  # already ended: a stale report
    assert sup.state is state
    assert isinstance(sup.exit("b"), GiveUp)
    state = sup.state
    assert sup.exit("b") == Ignore("b")
    assert sup.state is state


def test_started_stopped_removed() -> None:
    children = kids(("a", T), "b")
    policy = Policy(backoff=Backoff(initial=1.0))
    state = SupervisorState.initial(children, 0.0)
    state, _ = decide(policy, children, state, ChildExit("a", FAILED), 1.0)
    assert state.failures == {"a": 1}
    state = stopped(state, "a")
    assert not state.is_active("a")
    _, decision = decide(policy, children, state, ChildExit("a", FAILED), 2.0)
    assert decision == Ignore("a")
    state = started(state, "a", 5.0)
    assert state.is_active("a")
    assert state.started_at["a"] == 5.0
    assert state.failures == {"a": 1}  # the backoff keeps counting
    state = removed(state, "a")
    assert "a" not in state.history
    state = started(state, "new", 6.0)
    assert state.started_at["new"] == 6.0
    assert stopped(state, "other").ended == frozenset({"other"})


def test_dynamic_supervisors_forget_children_that_are_not_restarted() -> None:
    sup = Sup(Policy(dynamic=True), kids(("w1", T), ("w2", T)))
    assert sup.exit("w1", SUCCEEDED) == Ignore("w1", remove=True)
    assert "w1" not in sup.state.history


def test_decide_is_pure() -> None:
    children = kids("a", "b", "c")
    policy = Policy(Strategy.REST_FOR_ONE, backoff=Backoff(jitter=0.3))
    state = SupervisorState.initial(children, 0.0)
    snapshot = state._replace()
    first = decide(policy, children, state, ChildExit("b", FAILED), 1.0)
    second = decide(policy, list(children), state, ChildExit("b", FAILED), 1.0)
    assert first == second
    assert state == snapshot


def test_duplicate_child_ids_are_rejected() -> None:
    with pytest.raises(InvalidSpec, match=r"children\[1\]\.id: duplicate child id"):
        decide(
            Policy(), kids("a", "a"), SupervisorState.initial((), 0.0), ChildExit("a", FAILED), 0
        )


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Intensity(-1), "max_restarts: expected an integer >= 0 and <= 2**63 - 1, got -1"),
        (
            lambda: Intensity(1.5),  # type: ignore[arg-type]
            "max_restarts: expected an integer >= 0 and <= 2**63 - 1, got 1.5",
        ),
        (lambda: Intensity(1, 0), "within: expected a finite number > 0 and <= 100,000,000, got 0"),
        (
            lambda: Intensity(1, float("nan")),
            "within: expected a finite number > 0 and <= 100,000,000, got nan",
        ),
        (
            lambda: Backoff(initial=-1),
            "initial: expected a finite number >= 0 and <= 100,000,000, got -1",
        ),
        (lambda: Backoff(initial=5, maximum=1), "maximum: expected a number >= initial (5)"),
        (lambda: Backoff(multiplier=0.5), "multiplier: expected a finite number >= 1"),
        (lambda: Backoff(jitter=2), "jitter: expected a number between 0 and 1, got 2"),
        (
            lambda: Backoff(reset_after=0),
            "reset_after: expected a finite number > 0 and <= 100,000,000, got 0",
        ),
        (
            lambda: Backoff(seed="x"),  # type: ignore[arg-type]
            "seed: expected an integer between -(2**63 - 1) and 2**63 - 1, or None, got 'x'",
        ),
        (
            lambda: Policy("one_for_some"),  # type: ignore[arg-type]
            "strategy: expected one of one_for_one, one_for_all, rest_for_one, got 'one_for_some'",
        ),
        (
            lambda: Policy(auto_shutdown="sometimes"),  # type: ignore[arg-type]
            "auto_shutdown: expected one of never, any_significant, all_significant",
        ),
        (lambda: Policy(intensity=3), "intensity: expected a Intensity, got 3"),  # type: ignore[arg-type]
        (lambda: ChildInfo(""), "id: expected a non-empty string, got ''"),
        (
            lambda: ChildInfo("a", "always"),  # type: ignore[arg-type]
            "restart: expected one of permanent, transient, temporary, got 'always'",
        ),
        (lambda: ChildInfo("a", P, True), "significant: a permanent child cannot be significant"),
        (lambda: ChildInfo("a", T, 1), "significant: expected true or false, got 1"),
        (lambda: Policy(backoff=2.0), "backoff: expected a Backoff or None, got 2.0"),
        (lambda: Policy(dynamic=None), "dynamic: expected true or false, got None"),
        (lambda: ChildExit("a", "running"), "phase: expected a terminal phase"),  # type: ignore[arg-type]
        (lambda: ChildExit("a", "melted"), "phase: expected one of pending, running"),  # type: ignore[arg-type]
    ],
)
def test_invalid_values_name_the_field_and_value(build: object, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        build()  # type: ignore[operator]
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


# Fault 14 of issue 8: Backoff(initial=1e10, maximum=1e10) passed, and its
# delays later killed the timer thread with OverflowError.
OUT_OF_RANGE: list[object] = [
    1e10,
    MAX_SECONDS * 1.5,
    float("inf"),
    float("nan"),
    10**400,  # float() of it raises OverflowError
    10**5000,  # str() of it raises ValueError
    True,
    "1",
    None,
    [1.0],
]


def _short_id(value: object) -> str:
    """A test id that never str()s a huge int."""
    return str(value) if isinstance(value, (float, str)) else type(value).__name__


@pytest.mark.parametrize(
    ("field", "build"),
    [
        ("within", lambda v: Intensity(1, v)),
        ("initial", lambda v: Backoff(initial=v, maximum=MAX_SECONDS)),
        ("maximum", lambda v: Backoff(maximum=v)),
        ("reset_after", lambda v: Backoff(reset_after=v)),
    ],
)
@pytest.mark.parametrize("value", OUT_OF_RANGE, ids=_short_id)
def test_times_are_bounded_by_max_seconds(field: str, build: Any, value: object) -> None:
    if field == "reset_after" and value is None:
        return  # None is reset_after's "never"
    with pytest.raises(InvalidSpec) as info:
        build(value)
    message = str(info.value)
    assert message.startswith(f"{field}: expected a finite number"), message
    assert "<= 100,000,000" in message
    assert len(message) < 160
    assert info.value.field == field


def test_times_up_to_max_seconds_are_accepted() -> None:
    assert Intensity(1, MAX_SECONDS).within == MAX_SECONDS
    longest = Backoff(initial=MAX_SECONDS, maximum=MAX_SECONDS, reset_after=MAX_SECONDS)
    assert longest.delay(1, 0.5) == MAX_SECONDS
    assert seconds("at", 10**8) == 1e8
    assert seconds("at", 7, high=10) == 7.0
    with pytest.raises(InvalidSpec, match=r"^at: expected a finite number >= 0 and <= 10, got 11$"):
        seconds("at", 11, high=10)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Intensity(10**5000), "max_restarts: expected an integer >= 0 and <= 2**63 - 1"),
        (lambda: Intensity(2**63), "max_restarts: expected an integer >= 0 and <= 2**63 - 1"),
        (lambda: Backoff(seed=10**5000), "seed: expected an integer between -(2**63 - 1)"),
        (lambda: Backoff(multiplier=10**400), "multiplier: expected a finite number >= 1 and <="),
        (lambda: Backoff(multiplier=float("inf")), "multiplier: expected a finite number"),
        (lambda: Backoff(jitter=float("nan")), "jitter: expected a number between 0 and 1"),
        (lambda: Backoff(jitter=10**5000), "jitter: expected a number between 0 and 1"),
        (lambda: Policy(strategy=10**5000), "strategy: expected one of one_for_one"),
        (lambda: Policy(strategy=[[["x"]]]), "strategy: expected one of one_for_one"),
        (lambda: Policy(auto_shutdown={"never"}), "auto_shutdown: expected one of never"),
        (lambda: ChildInfo("a", 10**5000), "restart: expected one of permanent"),
        (lambda: ChildInfo("x" * 100_000, "sometimes"), "restart: expected one of permanent"),
        (lambda: ChildInfo(10**5000), "id: expected a non-empty string"),
    ],
)
def test_any_value_is_refused_with_a_short_message(build: Any, message: str) -> None:
    """Huge ints, unhashable or deep values: the library's error, never one from inside."""
    with pytest.raises(InvalidSpec) as info:
        build()
    text = str(info.value)
    assert text.startswith(message), text
    assert len(text) < 200


@settings(max_examples=200)
@given(
    st.builds(
        Backoff,
        initial=st.floats(0, MAX_SECONDS / 2),
        maximum=st.just(MAX_SECONDS) | st.floats(MAX_SECONDS / 2, MAX_SECONDS),
        multiplier=st.floats(1, MAX_MULTIPLIER),
        jitter=st.floats(0, 1),
    ),
    st.integers(1, 10**6),
    st.floats(0, 1, exclude_max=True),
)
def test_every_accepted_backoff_delay_fits_a_timer(
    backoff: Backoff, failures: int, rand: float
) -> None:
    delay = backoff.delay(failures, rand)
    assert 0.0 <= delay <= MAX_SECONDS < threading.TIMEOUT_MAX


def test_intensity_reads_well_and_base_needs_a_failure() -> None:
    assert str(Intensity(3, 5.0)) == "3 restarts within 5s"
    with pytest.raises(ValueError, match="failures: expected an integer >= 1, got 0"):
        Backoff().base(0)
    assert Backoff(initial=0.0).delay(10_000, 0.5) == 0.0
    assert Backoff(initial=1.0, maximum=60.0).delay(100_000, 0.5) == 60.0


def test_children_without_history_count_as_started_with_the_supervisor() -> None:
    """An actor may add a child without calling ``started``; it is treated as fresh."""
    policy = Policy(Strategy.ONE_FOR_ALL, Intensity(0, 1.0))
    state = SupervisorState.initial((), 10.0)
    children = kids("a", "b")
    _, decision = decide(policy, children, state, ChildExit("a", FAILED), 11.0)
    assert decision == GiveUp("a", decision.reason, ("b",))  # type: ignore[union-attr]
    backoff = Policy(Strategy.ONE_FOR_ALL, backoff=Backoff(initial=1.0, reset_after=5.0))
    state, decision = decide(backoff, children, state, ChildExit("b", FAILED), 20.0)
    assert decision == RestartChildren("b", ("a",), ("a", "b"), (), 1.0)
    assert state.failures == {"b": 1}  # ran 10 s (>= reset_after) since the start: count 1
    group = Policy(Strategy.ONE_FOR_ALL, Intensity(1, 1.0))
    fresh = SupervisorState.initial((), 10.0)
    state, decision = decide(group, children, fresh, ChildExit("a", FAILED), 11.0)
    assert decision == RestartChildren("a", ("b",), ("a", "b"), (), 0.0)
    assert state.started_at == {"a": 11.0, "b": 11.0}


def test_enums_accept_their_string_values() -> None:
    policy = Policy("rest_for_one", auto_shutdown="all_significant")  # type: ignore[arg-type]
    assert policy.strategy is Strategy.REST_FOR_ONE
    assert policy.auto_shutdown is AutoShutdown.ALL_SIGNIFICANT
    assert ChildInfo("a", "temporary").restart is TEMP  # type: ignore[arg-type]
    assert ChildExit("a", "timeout").phase is TaskPhase.TIMEOUT  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PMap


@given(
    st.lists(
        st.tuples(st.sampled_from(["set", "remove", "update"]), st.text(max_size=3), st.integers()),
        max_size=60,
    )
)
def test_pmap_behaves_like_a_dict_and_never_changes(ops: list[tuple[str, str, int]]) -> None:
    model: dict[str, int] = {}
    current: PMap[int] = PMap()
    history = [(current, dict(model))]
    for op, key, value in ops:
        if op == "set":
            current = current.set(key, value)
            model[key] = value
        elif op == "remove":
            current = current.remove(key)
            model.pop(key, None)
        else:  # set key and key + "x", remove key + "y" and key + "z" (absent or not)
            changes = {key: value, key + "x": value + 1}
            current = current.update(changes, [key + "y", key + "z"])
            model.update(changes)
            model.pop(key + "y", None)
            model.pop(key + "z", None)
        history.append((current, dict(model)))
    for pmap, expected in history:  # every version still holds what it held
        assert len(pmap) == len(expected)
        assert dict(pmap.items()) == expected
        assert pmap == expected
        assert all(pmap[k] == v and k in pmap for k, v in expected.items())
        assert pmap.get("not-there-at-all") is None
    assert hash(PMap(model)) == hash(current)
    assert repr(PMap({"b": 1, "a": 2})) == "PMap({'a': 2, 'b': 1})"
    assert 3 not in current
    assert current.__eq__(3) is NotImplemented
    assert current.update({}, ["not-there-at-all"]) is current


def test_pmap_with_thousands_of_keys() -> None:
    """Keys share the map's small dicts: each update still copies only its own."""
    model = {f"k{i}": i for i in range(5000)}
    pmap = PMap([*model.items(), ("k1", -1)])  # a later pair wins, as in dict()
    model["k1"] = -1
    assert pmap == model
    assert len(pmap) == 5000
    changed = pmap.update({f"k{i}": 0 for i in range(0, 6000, 3)}, [f"k{i}" for i in range(1, 99)])
    expected = dict(model)
    expected.update({f"k{i}": 0 for i in range(0, 6000, 3)})
    for i in range(1, 99):
        del expected[f"k{i}"]
    assert changed == expected
    assert len(changed) == len(expected)
    assert pmap == model  # unchanged


# --------------------------------------------------------------------------- against a model


class NaiveSupervisor:
    """A deliberately plain re-statement of OTP's rules, to check ``decide`` against."""

    def __init__(self, policy: Policy, children: Sequence[ChildInfo]) -> None:
        self.policy = policy
        self.children = list(children)
        self.active = {c.id: True for c in children}
        self.restarts: list[float] = []
        self.own: dict[str, list[float]] = {c.id: [] for c in children}
        self.done = False

    def exit(self, child: str, phase: TaskPhase, now: float) -> Decision:
        ids = [c.id for c in self.children]
        if self.done or child not in ids or not self.active[child]:
            return Ignore(child)
        info = self.children[ids.index(child)]
        abnormal = phase in ABNORMAL
        others = [c for c in reversed(ids) if c != child and self.active[c]]
        if info.restart is TEMP or (info.restart is T and not abnormal):
            self.active[child] = False
            remove = info.restart is TEMP or self.policy.dynamic
            if remove:
                self.children.pop(ids.index(child))
                del self.active[child]
            auto = self.policy.auto_shutdown
            if info.significant and auto is not AutoShutdown.NEVER:
                still = [c for c in self.children if c.significant and self.active.get(c.id)]
                if auto is AutoShutdown.ANY_SIGNIFICANT or not still:
                    self.done = True
                    return Shutdown(child, tuple(others))
            return Ignore(child, remove)
        within = self.policy.intensity.within
        self.restarts = [r for r in [*self.restarts, now] if r >= now - within]
        if len(self.restarts) > self.policy.intensity.max_restarts:
            self.done = True
            return GiveUp(child, "", tuple(others))
        limit = self.policy.child_intensity
        if limit is not None:
            self.own[child] = [r for r in [*self.own[child], now] if r >= now - limit.within]
            if len(self.own[child]) > limit.max_restarts:
                self.done = True
                return GiveUp(child, "", tuple(others))
        strategy = self.policy.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            return RestartChildren(child, (), (child,), (), 0.0)
        start = 0 if strategy is Strategy.ONE_FOR_ALL else ids.index(child)
        group = self.children[start:]
        terminate = tuple(c.id for c in reversed(group) if c.id != child and self.active[c.id])
        drop = tuple(c.id for c in group if c.id != child and c.restart is TEMP)
        restart = tuple(c.id for c in group if c.id not in drop)
        for c in restart:
            self.active[c] = True
        self.children = [c for c in self.children if c.id not in drop]
        for c in drop:
            del self.active[c]
        return RestartChildren(child, terminate, restart, drop, 0.0)


class AgainstTheModel(RuleBasedStateMachine):
    """``decide`` (through an actor-like driver) and the naive model agree on every event."""

    def __init__(self) -> None:
        super().__init__()
        self.sup: Sup | None = None
        self.model: NaiveSupervisor | None = None
        self.now = 0.0

    @initialize(
        strategy=st.sampled_from(Strategy),
        max_restarts=st.integers(0, 5),
        within=st.sampled_from([0.5, 1.0, 2.5]),
        child_limit=st.none() | st.integers(0, 3),
        auto=st.sampled_from(AutoShutdown),
        dynamic=st.booleans(),
        types=st.lists(st.tuples(st.sampled_from(Restart), st.booleans()), min_size=1, max_size=6),
    )
    def build(  # noqa: PLR0917  (Hypothesis passes the drawn values by keyword)
        self,
        strategy: Strategy,
        max_restarts: int,
        within: float,
        child_limit: int | None,
        auto: AutoShutdown,
        dynamic: bool,
        types: list[tuple[Restart, bool]],
    ) -> None:
        children = [
            ChildInfo(f"c{i}", kind, significant and kind is not P)
            for i, (kind, significant) in enumerate(types)
        ]
        policy = Policy(
            strategy,
            Intensity(max_restarts, within),
            child_intensity=None if child_limit is None else Intensity(child_limit, within),
            auto_shutdown=auto,
            dynamic=dynamic,
        )
        self.sup = Sup(policy, children)
        self.model = NaiveSupervisor(policy, children)

    @rule(child=st.integers(0, 6), phase=st.sampled_from(ENDS), step=st.integers(0, 3))
    def child_exits(self, child: int, phase: TaskPhase, step: int) -> None:
        assert self.sup is not None
        assert self.model is not None
        self.now += step * 0.25
        got = self.sup.exit(f"c{child}", phase, self.now)
        expected = self.model.exit(f"c{child}", phase, self.now)
        if isinstance(got, GiveUp):
            got = got._replace(reason="")
        assert got == expected

    @invariant()
    def same_children(self) -> None:
        if self.sup is not None and self.model is not None:
            assert self.sup.state.done == self.model.done
            if not self.model.done:  # after the end, which specs remain does not matter
                assert [c.id for c in self.sup.children] == [c.id for c in self.model.children]


AgainstTheModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
test_decide_agrees_with_a_naive_model = AgainstTheModel.TestCase


@given(
    st.lists(st.floats(0, 1000, allow_nan=False), max_size=30).map(sorted),
    st.floats(0, 2000, allow_nan=False),
    st.floats(0, 500, allow_nan=False),
)
def test_window_keeps_exactly_the_restarts_inside_it(
    restarts: list[float], now: float, within: float
) -> None:
    """``_window`` (one copy, a fast path when nothing leaves) against the plain filter."""
    now = max([now, *restarts])  # time never goes back
    threshold = now - within
    expected = (*(r for r in restarts if r >= threshold), now)
    assert _window(tuple(restarts), now, within) == expected
