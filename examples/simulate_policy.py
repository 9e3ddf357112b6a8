"""Try a restart policy on a script of failures before deploying it: no threads, fake clock.

The same pure core decides for the real Supervisor actor, so what the
simulation says is what the tree would do.

Run it: python examples/simulate_policy.py
"""

from __future__ import annotations

from taskvisor.actors import TaskSpec
from taskvisor.supervision import (
    Backoff,
    Fail,
    Intensity,
    SupervisorSpec,
    Timeout,
    simulate,
)

db = SupervisorSpec(
    "db",
    strategy="one_for_all",
    intensity=Intensity(max_restarts=2, within=10.0),
    children=[
        TaskSpec(name="pool", target="json:dumps"),
        TaskSpec(name="cache", target="json:dumps"),
    ],
)
app = SupervisorSpec(
    "app",
    intensity=Intensity(max_restarts=1, within=60.0),
    backoff=Backoff(initial=0.5, maximum=4.0, multiplier=2.0),
    children=[TaskSpec(name="api", target="json:dumps"), db],
)

# A flapping cache: three failures within ten seconds exhaust db, which
# escalates; app restarts db (after a 0.5 s backoff). When the api then
# times out, that is app's second restart within 60 s: app gives up, and
# the last event is skipped because the tree has stopped.
script = [
    Fail(1.0, "db/cache", "connection refused"),
    Fail(2.0, "db/cache", "connection refused"),
    Fail(3.0, "db/cache", "connection refused"),
    Timeout(20.0, "api"),
    Timeout(30.0, "api"),
]

result = simulate(app, script)
print(result.timeline())
print()
for path, outcome in sorted(result.children.items()):
    print(
        f"{path:<10} {outcome.phase.value:<10} starts={outcome.attempts} running={outcome.running}"
    )
print()
print("gave up:", result.gave_up)
for failure in result.chain:
    print("  ", failure)
