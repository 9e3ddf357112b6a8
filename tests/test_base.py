"""Actor threads: reused after an actor stops, bounded when idle, all joined on close."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from conftest import wait_until
from taskvisor.actors._base import ActorThreads, BaseActor, Latch


class Where(BaseActor):
    def on_receive(self, message: Any) -> Any:
        return threading.current_thread()


def test_a_stopped_actors_thread_runs_the_next_actor() -> None:
    threads = ActorThreads()
    first = Where.start(threads=threads)
    thread = first.ask("where")
    assert thread.name.startswith("taskvisor-actor-")
    first.stop()
    second = Where.start(threads=threads)
    assert second.ask("where") is thread
    assert threads.size == 1
    second.stop()
    threads.close()
    assert threads.size == 0
    assert not thread.is_alive()


def test_actors_alive_together_get_threads_of_their_own() -> None:
    threads = ActorThreads()
    refs = [Where.start(threads=threads) for _ in range(3)]
    assert len({ref.ask("where") for ref in refs}) == 3
    for ref in refs:
        ref.stop()
    threads.close()


def test_idle_threads_beyond_the_limit_end() -> None:
    threads = ActorThreads(max_idle=1)
    release = threading.Event()
    for _ in range(3):
        threads.run(lambda: release.wait(5) and None)
    assert threads.size == 3
    release.set()
    assert wait_until(lambda: threads.size == 1)
    threads.close()
    with pytest.raises(RuntimeError, match="closed"):
        threads.run(lambda: None)


def test_loop_ended_opens_when_the_actor_has_stopped() -> None:
    ended = Latch()
    ref = Where.start(loop_ended=ended)  # no pool: a thread of its own, as pykka does it
    assert not ended.wait(0.01)
    thread = ref.ask("where")
    ref.stop()
    assert ended.wait(5)
    thread.join(5)
    assert not thread.is_alive()


def test_latch() -> None:
    latch = Latch()
    assert not latch.wait(0.01)
    threading.Timer(0.01, latch.set).start()
    assert latch.wait(5)
    assert latch.wait(0)  # stays open
