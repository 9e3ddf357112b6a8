"""A host process for tests/test_faults.py: runs one tree on a SQLite store until killed.

Usage: ``python fault_host.py STORE_PATH``. The tree is ``host`` with one
``subprocess`` child, ``sleeper`` (``sleep 300``). Once the child runs the
host prints one JSON line, ``{"host": pid, "child": pid}``, then sleeps
until it is killed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from taskvisor.actors import SqliteStore, TaskSpec
from taskvisor.supervision import Supervisor, SupervisorSpec


def spec() -> SupervisorSpec:
    """The tree the host runs (the tests resume the same one)."""
    sleeper = TaskSpec(name="sleeper", kind="subprocess", command=["sleep", "300"], shutdown=2.0)
    return SupervisorSpec("host", children=[sleeper])


def main() -> None:
    ref = Supervisor.start(spec(), store=SqliteStore(sys.argv[1]))
    deadline = time.monotonic() + 30
    pid = None
    while pid is None and time.monotonic() < deadline:
        (row,) = ref.which_children()
        pid = row.pid
        if pid is None:
            time.sleep(0.01)
    print(json.dumps({"host": os.getpid(), "child": pid}), flush=True)
    time.sleep(300)


if __name__ == "__main__":
    main()
