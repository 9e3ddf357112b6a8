"""A small supervision tree that survives injected failures.

    app (one_for_one, at most 5 restarts in 10 s)
    ├── ticker   a subprocess; its first run exits with code 3
    ├── counter  a Python callable serving requests; we make it crash
    └── db       a nested supervisor (one_for_all)
        ├── pool   a coroutine
        └── cache  a Python callable; we make it crash, so db restarts both

Every lifecycle event is printed as the bus delivers it.
Run it: python examples/supervision_tree.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
from pathlib import Path

from taskvisor.actors import (
    AttemptFinished,
    AttemptStarted,
    Event,
    TaskAccepted,
    TaskContext,
    TaskFinished,
    TaskHook,
    TaskSpec,
    TaskStarted,
)
from taskvisor.supervision import (
    Intensity,
    RestartScheduled,
    Supervisor,
    SupervisorSpec,
    SupervisorStopped,
)

# The subprocess: fails on its first run (no marker file yet), then keeps running.
TICKER = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.touch()
    sys.exit(3)
while True:
    time.sleep(0.1)
"""


def say(*parts: object) -> None:
    """Print one whole line: hooks print from the bus's thread at the same time."""
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def counter(ctx: TaskContext) -> None:
    """Count requests; a request of "crash" raises."""
    count = 0
    while True:
        request = ctx.receive()  # raises TaskCancelled when the tree stops
        if request.message == "crash":
            request.reply("crashing")
            raise RuntimeError("injected failure")
        count += 1
        request.reply(f"attempt {ctx.attempt}, request {count}")


async def pool(ctx: TaskContext) -> None:
    """Pretend to keep a connection pool warm."""
    while True:
        await asyncio.sleep(0.05)


def describe(event: Event) -> str | None:
    """One line per event worth showing."""
    match event:
        case TaskAccepted(task_id=task):
            return f"{task}: accepted"
        case TaskStarted(task_id=task):
            return f"{task}: started"
        case AttemptStarted(task_id=task, attempt=n) if n > 1:
            return f"{task}: attempt {n} started"
        case AttemptFinished(task_id=task, run=run):
            why = (run.error or "").strip().splitlines()[-1:] or [""]
            return f"{task}: attempt {run.attempt} {run.phase.value} {why[0]}".rstrip()
        case TaskFinished(task_id=task, status=status):
            return f"{task}: finished {status.phase.value}"
        case RestartScheduled(supervisor=sup, child=child, restart=which):
            return f"{sup}: {child} ended; restarting {', '.join(which)}"
        case SupervisorStopped(supervisor=sup, reason=reason):
            return f"{sup}: stopped ({reason})"
    return None


class PrintEvents(TaskHook):
    """Print events; let the main thread wait for one."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.changed = threading.Condition()

    def on_event(self, event: Event) -> None:
        line = describe(event)
        if line is not None:
            say(f"  event  {line}")
            with self.changed:
                self.seen.append(line)
                self.changed.notify_all()

    def wait_for(self, line: str, timeout: float = 10.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: line in self.seen, timeout):
                raise SystemExit(f"never saw: {line}")


def main() -> None:
    marker = Path(tempfile.mkdtemp()) / "ticker-ran-once"
    spec = SupervisorSpec(
        "app",
        strategy="one_for_one",
        intensity=Intensity(max_restarts=5, within=10.0),
        children=[
            TaskSpec(
                name="ticker",
                kind="subprocess",
                command=[sys.executable, "-c", TICKER, str(marker)],
                shutdown=2.0,
            ),
            TaskSpec(name="counter", target=counter),
            SupervisorSpec(
                "db",
                strategy="one_for_all",
                children=[
                    TaskSpec(name="pool", kind="async", target=pool),
                    TaskSpec(name="cache", target=counter),
                ],
            ),
        ],
    )
    hook = PrintEvents()
    say("starting the tree")
    with Supervisor.start(spec, hooks=[hook]) as tree:
        hook.wait_for("app/ticker: attempt 2 started")

        say("asking counter:", tree.child("counter").ask("hello"))
        say("injecting a failure into counter")
        tree.child("counter").ask("crash")
        hook.wait_for("app/counter: attempt 2 started")
        say("asking counter:", tree.child("counter").ask("hello again"))

        say("injecting a failure into db/cache (one_for_all: pool restarts too)")
        tree.child("db/cache").ask("crash")
        hook.wait_for("app/db/cache: attempt 2 started")
        say("asking db/cache:", tree.child("db/cache").ask("hello"))

        for row in tree.which_children():
            say(f"child {row.id:<8} {row.kind:<10} attempt {row.attempt} running={row.running}")
        say("stopping the tree (children stop in reverse start order)")
    say("stopped; every event above was delivered before stop returned")


if __name__ == "__main__":
    main()
