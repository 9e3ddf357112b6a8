"""The Python targets of quickstart.toml: a flaky step and a batch job.

``taskvisor run examples/quickstart.toml`` imports this module from the
tree file's directory (``"quickstart_tasks:flaky"``).
"""

from __future__ import annotations

import logging
import time

from taskvisor.actors import TaskContext

logger = logging.getLogger("quickstart")
_attempts = 0


def flaky(ctx: TaskContext) -> str:
    """Fail on the first attempt (the tree restarts it), succeed on the second."""
    global _attempts  # noqa: PLW0603 - the example counts its attempts in the process
    _attempts += 1
    if _attempts == 1:
        raise RuntimeError("flaky: the first attempt fails on purpose")
    logger.info("flaky: attempt %d succeeded (the task's attempt %d)", _attempts, ctx.attempt)
    return "ok"


def batch(ctx: TaskContext, seconds: float = 2.0) -> int:
    """Work for ``seconds`` (a stand-in for a batch job), then finish."""
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.wait_cancelled(0.1):
        done += 1
    logger.info("batch: finished %d steps", done)
    return done
