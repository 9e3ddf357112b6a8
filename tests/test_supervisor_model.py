"""The real Supervisor (threads, a fake clock) against a naive pure model, step by step.

Rules: a child fails, ends normally or times out; time passes; children are
started, terminated, restarted and deleted through the dynamic API. After
every step the children, their attempt counts and phases, and whether the
supervisor gave up must agree.

The model is written out plainly from OTP's documentation, independently
of ``taskvisor.supervision._policy``.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest
from hypothesis import assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from helpers import worker
from taskvisor.actors import ManualClock, Restart, TaskPhase, TaskSpec, WaitTimeout
from taskvisor.supervision import (
    Intensity,
    Strategy,
    Supervisor,
    SupervisorError,
    SupervisorExhausted,
    SupervisorRef,
    SupervisorSpec,
)

ABNORMAL = {TaskPhase.FAILED, TaskPhase.TIMEOUT}


@attrs.define
class Kid:
    id: str
    restart: Restart
    timeout: float
    running: bool = True
    attempts: int = 1
    phase: TaskPhase = TaskPhase.RUNNING
    started_at: float = 0.0

    def start(self, now: float) -> None:
        self.running, self.phase, self.started_at = True, TaskPhase.RUNNING, now
        self.attempts += 1

    @property
    def deadline(self) -> float:
        return self.started_at + self.timeout


@attrs.define
class Model:
    """OTP's supervisor, as plainly as it can be written."""

    strategy: Strategy
    max_restarts: int
    within: float
    kids: list[Kid]
    restarts: list[float] = attrs.Factory(list)
    gave_up: bool = False
    culprit: str | None = None

    def find(self, kid_id: str) -> Kid | None:
        return next((k for k in self.kids if k.id == kid_id), None)

    def ended(self, kid: Kid, phase: TaskPhase, now: float) -> None:
        kid.running, kid.phase = False, phase
        if kid.restart is Restart.TEMPORARY:
            self.kids.remove(kid)
            return
        if kid.restart is Restart.TRANSIENT and phase not in ABNORMAL:
            return
        self.restarts = [t for t in self.restarts if t >= now - self.within] + [now]
        if len(self.restarts) > self.max_restarts:
            self.gave_up, self.culprit = True, kid.id
            kid.phase = TaskPhase.EXHAUSTED
            for other in self.kids:
                if other.running:
                    other.running, other.phase = False, TaskPhase.CANCELLED
            return
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [kid]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group = list(self.kids)
        else:
            group = self.kids[self.kids.index(kid) :]
        for other in group:
            if other is not kid and other.running:
                other.running, other.phase = False, TaskPhase.CANCELLED
        for other in group:
            if other is not kid and other.restart is Restart.TEMPORARY:
                self.kids.remove(other)
        for other in group:
            if other in self.kids:
                other.start(now)

    def view(self) -> Any:
        if self.gave_up:
            return ("gave up", self.culprit)
        return [(k.id, k.running, k.attempts, k.phase) for k in self.kids]


RESTARTS = st.sampled_from(list(Restart))


class SupervisorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tree: SupervisorRef | None = None
        self.model: Model | None = None
        self.clock = ManualClock()
        self.names = iter(f"k{i}" for i in range(10_000))

    def spec(self, kid: Kid) -> TaskSpec:
        return TaskSpec(
            name=kid.id, target=worker, restart=kid.restart, timeout=kid.timeout, shutdown=5.0
        )

    def new_kid(self, restart: Restart) -> Kid:
        name = next(self.names)
        # Distinct timeouts keep two children from timing out at one instant.
        return Kid(name, restart, timeout=1000.0 + 37.0 * int(name[1:]))

    @initialize(
        strategy=st.sampled_from(list(Strategy)),
        max_restarts=st.integers(0, 4),
        within=st.sampled_from([1.0, 5.0, 30.0]),
        restarts=st.lists(RESTARTS, min_size=1, max_size=4),
    )
    def start(
        self, strategy: Strategy, max_restarts: int, within: float, restarts: list[Restart]
    ) -> None:
        kids = [self.new_kid(r) for r in restarts]
        self.model = Model(strategy, max_restarts, within, kids)
        spec = SupervisorSpec(
            "sup",
            strategy=strategy,
            intensity=Intensity(max_restarts, within),
            children=[self.spec(k) for k in kids],
        )
        self.tree = Supervisor.start(spec, clock=self.clock)

    # ------------------------------------------------------------------ helpers

    def parts(self) -> tuple[SupervisorRef, Model]:
        assert self.tree is not None
        assert self.model is not None
        return self.tree, self.model

    @property
    def live(self) -> bool:
        return self.model is not None and not self.model.gave_up

    def running_kid(self, data: st.DataObject) -> Kid:
        assert self.model is not None
        running = [k for k in self.model.kids if k.running]
        assume(running)
        return data.draw(st.sampled_from(running))

    def observe(self) -> Any:
        assert self.tree is not None
        if not self.tree.running:
            try:
                self.tree.wait(10)  # it has ended: it releases its threads, then returns
            except SupervisorExhausted as exc:
                return ("gave up", exc.chain[-1].child)
            return ("stopped", None)
        rows = self.tree.which_children()
        seen = []
        for row in rows:
            try:
                status = self.tree.child(row.id).snapshot().task.status
            except (SupervisorError, WaitTimeout):  # removed since which_children: look again
                return ("changing", row.id)
            seen.append((row.id, row.running, status.attempt, status.phase))
        return seen

    def settle(self) -> None:
        """Wait for the real tree to catch up with the model (threads), then compare."""
        assert self.model is not None
        expected = self.model.view()
        deadline = time.monotonic() + 10
        seen = self.observe()
        while seen != expected and time.monotonic() < deadline:
            time.sleep(0.002)
            seen = self.observe()
        assert seen == expected, f"real {seen} != model {expected}"

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        tree, model = self.parts()
        kid = self.running_kid(data)
        assert tree.child(kid.id).ask("crash") == "crashing"
        model.ended(kid, TaskPhase.FAILED, self.clock.now())
        self.settle()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def end_normally(self, data: st.DataObject) -> None:
        tree, model = self.parts()
        kid = self.running_kid(data)
        assert tree.child(kid.id).ask("exit") == "exiting"
        model.ended(kid, TaskPhase.SUCCEEDED, self.clock.now())
        self.settle()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def time_out(self, data: st.DataObject) -> None:
        assert self.model is not None
        kid = self.running_kid(data)
        others = [k.deadline for k in self.model.kids if k.running and k is not kid]
        assume(all(d > kid.deadline for d in others))
        self.clock.advance(kid.deadline - self.clock.now())
        self.model.ended(kid, TaskPhase.TIMEOUT, self.clock.now())
        self.settle()

    @precondition(lambda self: self.live)
    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 10.0]))
    def time_passes(self, dt: float) -> None:
        assert self.model is not None
        running = [k.deadline for k in self.model.kids if k.running]
        assume(all(d > self.clock.now() + dt for d in running))
        self.clock.advance(dt)

    @precondition(lambda self: self.live and len(self.model.kids) < 6)  # type: ignore[union-attr]
    @rule(restart=RESTARTS)
    def start_child(self, restart: Restart) -> None:
        tree, model = self.parts()
        kid = self.new_kid(restart)
        kid.started_at = self.clock.now()
        assert tree.start_child(self.spec(kid)) == kid.id
        model.kids.append(kid)
        self.settle()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def terminate_child(self, data: st.DataObject) -> None:
        tree, model = self.parts()
        assume(model.kids)
        kid = data.draw(st.sampled_from(model.kids))
        tree.terminate_child(kid.id)
        if kid.running:
            kid.running, kid.phase = False, TaskPhase.CANCELLED
        if kid.restart is Restart.TEMPORARY:
            model.kids.remove(kid)
        self.settle()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def restart_child(self, data: st.DataObject) -> None:
        tree, model = self.parts()
        assume(model.kids)
        kid = data.draw(st.sampled_from(model.kids))
        if kid.running:
            with pytest.raises(SupervisorError) as refused:
                tree.restart_child(kid.id)
            assert refused.value.reason == "running"
        else:
            tree.restart_child(kid.id)
            kid.start(self.clock.now())
        self.settle()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete_child(self, data: st.DataObject) -> None:
        tree, model = self.parts()
        assume(model.kids)
        kid = data.draw(st.sampled_from(model.kids))
        if kid.running:
            with pytest.raises(SupervisorError) as refused:
                tree.delete_child(kid.id)
            assert refused.value.reason == "running"
        else:
            tree.delete_child(kid.id)
            model.kids.remove(kid)
        self.settle()

    @precondition(lambda self: self.model is not None and self.model.gave_up)
    @rule()
    def gave_up(self) -> None:
        """Once the supervisor gave up, it stays given up and refuses the dynamic API."""
        assert self.tree is not None
        assert not self.tree.running
        with pytest.raises(SupervisorError) as refused:
            self.tree.start_child(TaskSpec(name="late", target=worker))
        assert refused.value.reason == "stopped"

    @invariant()
    def agrees(self) -> None:
        if self.model is not None:
            self.settle()

    def teardown(self) -> None:
        if self.tree is not None:
            self.tree.stop()


SupervisorMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None
)
TestSupervisorAgainstModel = SupervisorMachine.TestCase
