"""Actor threads: reused after an actor stops, bounded when idle, all joined on close."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import pykka
import pytest

from conftest import wait_until
from helpers import RAISED
from taskvisor.actors._base import ActorCrash, ActorThreads, BaseActor, Latch, join_until


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


def test_an_actor_started_after_its_threads_closed_is_not_left_registered() -> None:
    threads = ActorThreads()
    threads.close()
    with pytest.raises(RuntimeError, match="the actor threads are closed"):
        Where.start(threads=threads)
    assert pykka.ActorRegistry.get_by_class(Where) == []


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


# --- no silent death (issue 8, kind C) ---------------------------------------------------


@pytest.mark.parametrize("kind", RAISED, ids=lambda k: k.__name__)
def test_a_pool_thread_survives_a_job_raising_anything(
    kind: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    threads = ActorThreads()
    ran_on: list[threading.Thread] = []
    done = threading.Event()

    def bad() -> None:
        ran_on.append(threading.current_thread())
        raise kind("from a job")

    def good() -> None:
        ran_on.append(threading.current_thread())
        done.set()

    with caplog.at_level(logging.ERROR, logger="taskvisor"):
        threads.run(bad)
        assert wait_until(lambda: threads.size == 1 and len(ran_on) == 1)
        assert wait_until(lambda: threads._idle)  # back in the pool
        threads.run(good)
        assert done.wait(5)
    assert ran_on[0] is ran_on[1]  # the same thread served the next job
    assert "an actor loop failed" in caplog.text
    assert f"{kind.__name__}: from a job" in caplog.text
    threads.close()


class Explodes(BaseActor):
    """Raises the exception it is sent; answers anything else."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, type) and issubclass(message, BaseException):
            raise message("in a handler")
        return "fine"


@pytest.mark.parametrize("kind", RAISED[1:], ids=lambda k: k.__name__)
def test_a_bare_base_exception_in_a_handler_fails_that_actor_only(
    kind: type[BaseException],
) -> None:
    """pykka alone stops every actor in the process on a bare BaseException."""
    victim, bystander = Explodes.start(), Explodes.start()
    with pytest.raises(ActorCrash, match=kind.__name__) as caught:
        victim.ask(kind, timeout=5)
    assert isinstance(caught.value.__cause__, kind)
    assert victim.ask("hello", timeout=5) == "fine"  # an asked failure goes to the asker
    ended = Latch()
    told = Explodes.start(loop_ended=ended)
    told.tell(kind)  # a told failure fails that actor (pykka's on_failure path)
    assert ended.wait(5)
    assert not told.is_alive()
    assert bystander.ask("hello", timeout=5) == "fine"
    assert victim.is_alive()
    victim.stop()
    bystander.stop()


def test_an_actor_whose_on_start_raises_a_bare_base_exception_ends_cleanly() -> None:
    class BadStart(BaseActor):
        def on_start(self) -> None:
            raise KeyboardInterrupt

    bystander = Explodes.start()
    threads = ActorThreads()
    ended = Latch()
    ref = BadStart.start(threads=threads, loop_ended=ended)
    assert ended.wait(5)
    assert not ref.is_alive()
    assert bystander.ask("hello", timeout=5) == "fine"
    bystander.stop()
    threads.close()


def test_pykka_private_names_we_rely_on() -> None:
    """BaseActor overrides pykka's ``_actor_loop`` (besides the three implementor hooks).

    Why: ``_start_actor_loop`` hands ``_actor_loop`` to a pooled thread, and the
    override is the one place that learns when the loop ended, to open
    ``loop_ended`` (a task's stop waits on it instead of joining a thread it
    does not own). If pykka renames it, this test says so before anything hangs.
    """
    assert callable(pykka.ThreadingActor._actor_loop)
    assert callable(pykka.ThreadingActor._start_actor_loop)
    assert callable(pykka.ThreadingActor._create_actor_inbox)


def test_waits_take_any_timeout_without_overflow() -> None:
    latch = Latch()
    latch.set()
    for timeout in (0, 1e10, math.inf, threading.TIMEOUT_MAX * 2, None):
        assert latch.wait(timeout)
    assert not Latch().wait(math.nan)
    assert not Latch().wait(-1)
    thread = threading.Thread(target=lambda: None)
    thread.start()
    assert join_until(thread, math.inf)
    threads = ActorThreads()
    threads.run(lambda: None)
    threads.close(timeout=math.inf)
    assert threads.size == 0


def test_close_is_one_deadline_and_leaves_busy_threads_to_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    threads = ActorThreads()
    release = threading.Event()
    for _ in range(3):
        threads.run(lambda: release.wait(30) and None)
    try:
        with caplog.at_level(logging.ERROR, logger="taskvisor"):
            threads.close(timeout=0.05)
        assert not release.is_set()  # returned while all three were still busy
    finally:
        release.set()
    assert "still busy at the close deadline" in caplog.text
    assert wait_until(lambda: threads.size == 0)


def test_a_latch_opens_once_for_every_waiter_and_setting_it_again_changes_nothing() -> None:
    latch = Latch()
    assert not latch.is_set()
    assert not latch.wait(0.01)
    woke: list[bool] = []
    waiters = [threading.Thread(target=lambda: woke.append(latch.wait(10))) for _ in range(4)]
    for waiter in waiters:
        waiter.start()
    setters = [threading.Thread(target=latch.set) for _ in range(4)]  # at once, from 4 threads
    for setter in setters:
        setter.start()
    for thread in (*setters, *waiters):
        thread.join(10)
    assert woke == [True] * 4
    assert latch.is_set()
    latch.set()
    assert latch.wait(0)
