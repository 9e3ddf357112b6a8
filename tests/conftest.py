"""Shared fixtures: every test must leave no actor, thread or child process behind."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pykka
import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def _children() -> set[int]:
    """PIDs of this process's live children (zombies included)."""
    pid = os.getpid()
    found: set[int] = set()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            found.update(int(p) for p in f.read().split())
    except OSError:  # pragma: no cover - /proc is there on Linux
        pass
    return found


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes (for thread exits only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return bool(predicate())  # type: ignore[operator]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves an actor, a thread or a child process behind."""
    threads_before = set(threading.enumerate())
    children_before = _children()
    yield
    leftover_actors = pykka.ActorRegistry.get_all()
    pykka.ActorRegistry.stop_all(block=True, timeout=5)

    def extra_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]

    wait_until(lambda: not extra_threads(), timeout=5.0)
    threads = extra_threads()
    children = _children() - children_before
    assert not leftover_actors, f"actors left running: {leftover_actors}"
    assert not threads, f"threads left running: {[t.name for t in threads]}"
    assert not children, f"child processes left behind: {sorted(children)}"


@pytest.fixture
def hosts() -> Iterator[list[subprocess.Popen[str]]]:
    """Host processes a test starts (real child Pythons); killed and reaped after it."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for host in started:
        if host.poll() is None:
            host.kill()
        host.wait(10)
        assert host.stdout is not None
        host.stdout.close()
