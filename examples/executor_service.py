"""Submit tasks of all three kinds to an ExecutorService and print the hook calls.

Run it: python examples/executor_service.py
"""

from __future__ import annotations

import asyncio
import sys

from taskvisor.actors import (
    ExecutorService,
    SubmissionError,
    TaskContext,
    TaskFailedError,
    TaskHook,
    TaskSpec,
    TaskStatus,
)


def say(*parts: object) -> None:
    """Print one whole line: hooks print from the bus's thread at the same time."""
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


class PrintHook(TaskHook):
    """The four lifecycle callbacks, printed (they run on the bus's delivery thread)."""

    def on_accepted(self, task_id: str) -> None:
        say(f"  hook  accepted  {task_id}")

    def on_rejected(self, error: SubmissionError) -> None:
        say(f"  hook  rejected  ({error.reason.value}) {error.message}")

    def on_started(self, task_id: str) -> None:
        say(f"  hook  started   {task_id}")

    def on_finished(self, task_id: str, status: TaskStatus) -> None:
        say(f"  hook  finished  {task_id}: {status.phase.value}")


def word_count(ctx: TaskContext, text: str) -> int:
    return len(text.split())


async def fetch(ctx: TaskContext, delay: float) -> str:
    await asyncio.sleep(delay)
    return f"fetched after {delay}s"


def main() -> None:
    with ExecutorService(hooks=[PrintHook()]) as service:
        call = service.submit(
            TaskSpec(name="count", target=word_count, args=["supervision trees for python"])
        )
        coro = service.submit(TaskSpec(name="fetch", kind="async", target=fetch, args=[0.05]))
        proc = service.submit(
            TaskSpec(
                name="compute",
                kind="subprocess",
                command=[sys.executable, "-c", "import sys; sys.exit(sum(range(5)) - 10)"],
            )
        )
        broken = service.submit(
            TaskSpec(name="broken", kind="subprocess", command=[sys.executable, "-c", "exit(2)"])
        )
        try:
            service.submit(TaskSpec(name="count", target=word_count, args=["again"]))
        except SubmissionError as error:
            say(f"rejected as expected: {error}")

        say("count   ->", call.result(10))
        say("fetch   ->", coro.result(10))
        status = proc.wait(10).status
        say("compute ->", status.phase.value, "exit code", status.exit_code)
        try:
            broken.result(10)
        except TaskFailedError as error:
            say("broken  ->", error)


if __name__ == "__main__":
    main()
