"""Type checks of TaskSpec and the task context: misuses are rejected by ``mypy --strict``.

Not run: ``mypy --strict`` checks this file (``.ci/check``). Each misuse carries
``# type: ignore[<code>]``; with ``warn_unused_ignores`` mypy fails the day it
starts accepting that misuse.
"""

from __future__ import annotations

import signal
from typing import assert_type

from taskvisor.actors import CustomKind, Request, Restart, TaskContext, TaskSpec


def work(ctx: TaskContext) -> int:
    return 1


async def awork(ctx: TaskContext) -> int:
    return 1


# --- accepted -----------------------------------------------------------------

TaskSpec("worker", target=work)  # the name by position, like SupervisorSpec
TaskSpec(name="worker", target=work)
TaskSpec("worker", kind="call", target="app.jobs:run", restart="transient", shutdown=5)
TaskSpec("worker", kind="async", target=awork, restart=Restart.TEMPORARY, shutdown="brutal")
TaskSpec("worker", kind=CustomKind("ray"), target=work)  # a kind you register an executor for
TaskSpec(
    "svc",
    kind="subprocess",
    command=["python", "-m", "http.server"],
    env={"PORT": "8080"},
    shutdown=2.5,
    stdout="prefix",
    stderr="stdout",
    stop_signal="INT",
    success_exit_codes=[0, 3],
)
TaskSpec("svc", kind="subprocess", command=("sleep", "1"), stop_signal=signal.SIGHUP)
TaskSpec("svc", kind="subprocess", command=["x"], stdout="/var/log/svc.log", output_backups=5)

spec = TaskSpec("worker", target=work)
assert_type(spec.restart, Restart)
assert_type(spec.stop_signal, signal.Signals)
assert_type(spec.success_exit_codes, tuple[int, ...])
assert_type(spec.env, dict[str, str] | None)


def receiver(ctx: TaskContext) -> None:
    message = ctx.receive(1.0)
    assert_type(message, object)  # anything told: narrow it before use
    request = ctx.receive(1.0, expect=Request)  # or say what you expect: checked at run time
    assert_type(request, Request)
    request.reply("ok")
    ctx.receive(1.0).reply("ok")  # type: ignore[attr-defined]


async def areceiver(ctx: TaskContext) -> None:
    assert_type(await ctx.receive_async(), object)
    assert_type(await ctx.receive_async(expect=str), str)


# --- rejected -----------------------------------------------------------------

TaskSpec("worker", kind="cal", target=work)  # type: ignore[arg-type]
TaskSpec("worker", kind="ray", target=work)  # type: ignore[arg-type]
TaskSpec("worker", target=work, restart="always")  # type: ignore[arg-type]
TaskSpec("worker", target=work, shutdown="5s")  # type: ignore[arg-type]
TaskSpec("worker", target=work, shutdown="infinity")  # type: ignore[arg-type]
TaskSpec("svc", kind="subprocess", command=["x"], env={"PORT": 8080})  # type: ignore[dict-item]
TaskSpec("svc", kind="subprocess", command=[1, 2])  # type: ignore[list-item]
TaskSpec("svc", kind="subprocess", command=["x"], stop_signal="WINCH")  # type: ignore[arg-type]
TaskSpec("svc", kind="subprocess", command=["x"], success_exit_codes=0)  # type: ignore[arg-type]
TaskSpec("worker", work)  # type: ignore[call-arg, arg-type]
