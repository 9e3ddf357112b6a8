"""Decisions per second of the pure supervision core, through the public simulator.

Runs ``taskvisor.supervision.simulate`` on a 1,000-child ONE_FOR_ONE tree
with a long script of failures, and the bare ``decide`` loop for
comparison. No threads, no clock: only the policy code. ``simulate`` drives
the same supervisor state machine (``Node``) as a live tree, message by
message, so its rate is the node's rate, not a figure of its own.
Each rate is the best of ``REPEAT`` runs (like ``timeit``), each started with
no garbage left over from the one before.

    .venv/bin/python benchmarks/bench_policy.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import time

from taskvisor.actors import TaskSpec
from taskvisor.supervision import (
    Backoff,
    ChildExit,
    Fail,
    Intensity,
    Policy,
    SupervisorSpec,
    SupervisorState,
    decide,
    simulate,
)

CHILDREN = 1_000
EVENTS = 200_000
STEP = 0.01  # seconds between failures on the fake clock
REPEAT = 3


def tree(backoff: Backoff | None) -> SupervisorSpec:
    return SupervisorSpec(
        "bench",
        # The script's 100 failures/s put about 50 restarts in any 0.5 s window.
        intensity=Intensity(max_restarts=100, within=0.5),
        backoff=backoff,
        children=[TaskSpec(name=f"w{i}", target="bench.tasks:work") for i in range(CHILDREN)],
    )


def script() -> list[Fail]:
    rng = random.Random(1)
    # Round-robin over shuffled children: each child fails every 10 s of fake
    # time, long after any backoff delay, so no event is skipped.
    order = list(range(CHILDREN))
    rng.shuffle(order)
    return [Fail(i * STEP, f"w{order[i % CHILDREN]}") for i in range(EVENTS)]


def bench_simulate(label: str, backoff: Backoff | None) -> float:
    spec, events = tree(backoff), script()
    elapsed, decisions = float("inf"), 0
    for _ in range(REPEAT):
        gc.collect()
        start = time.perf_counter()
        sim = simulate(spec, events)
        elapsed = min(elapsed, time.perf_counter() - start)
        assert not sim.gave_up, sim.gave_up
        assert not sim.skipped, len(sim.skipped)
        decisions = len(sim.decisions)
        del sim  # freed here, not inside the next run's time
    rate = decisions / elapsed
    print(
        f"simulate, {label:<28} {decisions:>7} decisions in {elapsed:6.3f}s "
        f"= {rate:>9,.0f} decisions/s"
    )
    return rate


def bench_decide(label: str, backoff: Backoff | None) -> float:
    spec = tree(backoff)
    policy, children = Policy.of(spec), spec.child_infos()
    events = [ChildExit(e.child, "failed") for e in script()]
    elapsed = float("inf")
    for _ in range(REPEAT):
        state = SupervisorState.initial(children, 0.0)
        gc.collect()
        start = time.perf_counter()
        now = 0.0
        for event in events:
            now += STEP
            state, _ = decide(policy, children, state, event, now)
        elapsed = min(elapsed, time.perf_counter() - start)
    rate = len(events) / elapsed
    print(
        f"decide,   {label:<28} {len(events):>7} decisions in {elapsed:6.3f}s "
        f"= {rate:>9,.0f} decisions/s"
    )
    return rate


def main() -> None:
    global EVENTS, REPEAT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 failures, one run")
    if parser.parse_args().quick:
        EVENTS, REPEAT = 20_000, 1
    print(f"{CHILDREN:,}-child ONE_FOR_ONE tree, {EVENTS:,} failures")
    jittered = Backoff(initial=0.01, maximum=1.0, jitter=0.2, reset_after=5.0)
    rates = [
        bench_simulate("no backoff", None),
        bench_simulate("backoff + jitter + reset", jittered),
    ]
    bare = [bench_decide("no backoff", None), bench_decide("backoff + jitter + reset", jittered)]
    print(
        f"slowest simulator rate: {min(rates):,.0f} decisions/s; "
        f"a decision costs {1e6 / min(bare):.1f} us bare, {1e6 / min(rates):.1f} us in the node"
    )


if __name__ == "__main__":
    main()
