"""Clocks: timers that survive what their callbacks raise, and delays of any size (issue 8)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

import pytest

from helpers import RAISED
from taskvisor.actors import InvalidData, ManualClock, SystemClock


def raiser(kind: type[BaseException]) -> Callable[[], None]:
    def callback() -> None:
        raise kind("from a timer")

    return callback


@pytest.mark.parametrize("keep_thread", [False, True])
def test_timer_callbacks_raising_anything_do_not_stop_later_timers(
    keep_thread: bool, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[type[BaseException]] = []
    clock = SystemClock(
        keep_thread=keep_thread, on_error=lambda _cb, exc: reported.append(type(exc))
    )
    fired: list[int] = []
    done = threading.Event()
    with caplog.at_level(logging.ERROR, logger="taskvisor.clock"):
        for n, kind in enumerate(RAISED):
            clock.call_later(0.001 * n, raiser(kind))
            clock.call_later(0.001 * n + 0.0005, lambda n=n: fired.append(n))
        clock.call_later(0.02, done.set)
        assert done.wait(10)
    clock.close()
    assert fired == list(range(len(RAISED)))
    assert reported == RAISED
    for kind in RAISED:
        assert f"raised {kind.__name__}" in caplog.text
    assert caplog.text.count("Traceback") == len(RAISED)


@pytest.mark.parametrize("delay", [1e10, 1e300, math.inf, threading.TIMEOUT_MAX * 2, 10**400])
def test_fault14_a_huge_delay_does_not_kill_the_timer_thread(delay: float) -> None:
    """Issue 8, fault 14 (timer half): call_later(1e10) raised OverflowError on the timer thread,
    and every other timer stopped firing."""
    clock = SystemClock(keep_thread=True)
    far = clock.call_later(delay, lambda: pytest.fail("a far timer fired"))
    first, second = threading.Event(), threading.Event()
    clock.call_later(0.001, first.set)
    assert first.wait(10)
    clock.call_later(0.001, second.set)  # the thread is still there after waiting a step
    assert second.wait(10)
    far.cancel()
    clock.close()


def test_a_huge_delay_on_an_ending_thread_clock_is_cancellable() -> None:
    clock = SystemClock()
    far = clock.call_later(math.inf, lambda: None)
    fired = threading.Event()
    clock.call_later(0, fired.set)
    assert fired.wait(10)
    far.cancel()  # the last live timer: the thread ends now
    clock.close()


@pytest.mark.parametrize("clock_type", [SystemClock, ManualClock])
@pytest.mark.parametrize("bad", [math.nan, "soon", "1", None, True])
def test_a_delay_that_is_not_a_number_is_the_librarys_error(
    clock_type: type[SystemClock] | type[ManualClock], bad: object
) -> None:
    clock = clock_type()
    with pytest.raises(InvalidData, match="call_later: delay must be a number of seconds"):
        clock.call_later(bad, lambda: None)  # type: ignore[arg-type]
    if isinstance(clock, SystemClock):
        clock.close()


def test_a_negative_delay_counts_as_zero() -> None:
    clock = ManualClock(5.0)
    fired: list[str] = []
    timer = clock.call_later(-3, lambda: fired.append("now"))
    assert timer.deadline == 5.0
    clock.advance(0)
    assert fired == ["now"]
    real = SystemClock()
    done = threading.Event()
    real.call_later(-1e300, done.set)
    assert done.wait(10)
    real.close()


def test_manual_clock_runs_every_due_callback_whatever_one_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reported: list[BaseException] = []
    clock = ManualClock(on_error=lambda _cb, exc: reported.append(exc))
    fired: list[int] = []
    for n, kind in enumerate(RAISED):
        clock.call_later(n, raiser(kind))
        clock.call_later(n + 0.5, lambda n=n: fired.append(n))
    clock.call_later(1e10, lambda: fired.append(-1))
    clock.call_later(math.inf, lambda: fired.append(-2))
    with caplog.at_level(logging.ERROR, logger="taskvisor.clock"):
        clock.advance(100)
    assert fired == list(range(len(RAISED)))
    assert [type(e) for e in reported] == RAISED
    assert clock.pending() == 2
    clock.advance(1e10)
    assert fired[-1] == -1
    assert clock.pending() == 1  # inf never fires


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1"])
def test_manual_clock_refuses_to_move_to_nowhere(bad: float) -> None:
    clock = ManualClock(1.0)
    with pytest.raises(InvalidData, match="advance"):
        clock.advance(bad)
    assert clock.now() == 1.0


def test_manual_clock_never_moves_back() -> None:
    clock = ManualClock(1.0)
    fired: list[float] = []
    clock.call_later(0, lambda: fired.append(clock.now()))
    clock.advance(-5)  # counts as 0: runs what is due, time stays
    assert clock.now() == 1.0
    assert fired == [1.0]


def test_close_is_bounded_by_a_callback_that_blocks(caplog: pytest.LogCaptureFixture) -> None:
    clock = SystemClock()
    entered, release = threading.Event(), threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(30)

    clock.call_later(0, stuck)
    assert entered.wait(10)
    try:
        with caplog.at_level(logging.ERROR, logger="taskvisor.clock"):
            clock.close(timeout=0.05)
        assert not release.is_set()  # close returned while the callback still ran
    finally:
        release.set()
    assert "still in a callback at the close deadline" in caplog.text
    clock.close()  # joins the thread, now free


def test_close_from_a_callback_does_not_wait_for_itself() -> None:
    clock = SystemClock()
    done = threading.Event()

    def closer() -> None:
        clock.close(timeout=10)
        done.set()

    clock.call_later(0, closer)
    assert done.wait(10)
    clock.close()
