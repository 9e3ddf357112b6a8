"""The pieces work sees: the mailbox, requests, the context, and the clocks."""

from __future__ import annotations

import asyncio
import threading
import time
import types

import pytest

from taskvisor.actors import (
    ManualClock,
    SystemClock,
    TaskCancelled,
    TaskvisorError,
    UnexpectedMessage,
    WaitTimeout,
    _context,
)
from taskvisor.actors._context import Mailbox, Request, TaskContext


class Sink:
    def __init__(self) -> None:
        self.progress_seen: list[object] = []

    def progress(self, value: object) -> None:
        self.progress_seen.append(value)


def test_mailbox_is_first_in_first_out_and_times_out() -> None:
    box = Mailbox()
    box.put(1)
    box.put(2)
    assert len(box) == 2
    assert [box.get(0), box.get(0)] == [1, 2]
    with pytest.raises(WaitTimeout, match=r"no message within 0\.01s"):
        box.get(0.01)
    cancel = threading.Event()
    with pytest.raises(WaitTimeout):
        box.get(0.01, cancel)


def test_a_blocked_receive_wakes_on_a_message_from_another_thread() -> None:
    box = Mailbox()
    threading.Timer(0.02, box.put, ("late",)).start()
    assert box.get(5) == "late"


@pytest.mark.parametrize("timeout", [1e10, float("inf")])
def test_a_receive_with_a_very_long_timeout_waits_for_the_message(timeout: float) -> None:
    # Longer than threading's own maximum wait: taken in steps, never an OverflowError.
    box = Mailbox()
    threading.Timer(0.02, box.put, ("late",)).start()
    assert box.get(timeout) == "late"


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan")])
def test_a_receive_with_no_time_to_wait_looks_once(timeout: float) -> None:
    box = Mailbox()
    with pytest.raises(WaitTimeout):
        box.get(timeout)
    box.put("there")
    assert box.get(timeout) == "there"


def test_many_receivers_and_senders_take_every_message_exactly_once() -> None:
    box = Mailbox()
    got: list[int] = []
    lock = threading.Lock()
    receivers, per_receiver = 6, 300

    def receive() -> None:
        for _ in range(per_receiver):
            item = box.get(10)
            with lock:
                got.append(item)

    def send(start: int) -> None:
        for i in range(start, start + per_receiver):
            box.put(i)

    threads = [threading.Thread(target=receive) for _ in range(receivers)]
    threads += [threading.Thread(target=send, args=(k * per_receiver,)) for k in range(receivers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == list(range(receivers * per_receiver))
    assert len(box) == 0


def test_a_message_put_just_as_a_receive_times_out_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The race made certain: the receiver's wait runs out at the very moment a
    # put hands it the message (the put took the receiver's wake). The receiver
    # must take that message; giving up would leave it in the box with no one
    # woken for it.
    box = Mailbox()

    class RunsOutAsAPutLands:
        def __init__(self) -> None:
            self.held = False

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if not self.held:
                self.held = True  # the receiver takes its own lock first
                return True
            box.put("landed")  # while it waits: the put takes this receiver's wake...
            return False  # ...and the wait runs out all the same

        def release(self) -> None:
            pass

    fake = types.SimpleNamespace(Lock=RunsOutAsAPutLands)
    monkeypatch.setattr(_context, "threading", fake)
    assert box.get(0.001) == "landed"
    assert len(box) == 0


def test_cancel_wakes_every_blocked_receiver_and_a_later_message_still_arrives() -> None:
    box = Mailbox()
    cancel = threading.Event()
    outcomes: list[str] = []

    def receive() -> None:
        try:
            box.get(10, cancel)
        except TaskCancelled:
            outcomes.append("cancelled")

    threads = [threading.Thread(target=receive) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.02)
    cancel.set()
    box.wake()
    for t in threads:
        t.join(5)
    assert outcomes == ["cancelled"] * 3
    # A receiver of a later attempt (its own flag) is not disturbed by an old wake.
    threading.Timer(0.02, box.put, ("next",)).start()
    box.wake()
    assert box.get(5, threading.Event()) == "next"


def test_cancel_wakes_a_blocked_receive() -> None:
    ctx = TaskContext("t", 3, Mailbox(), Sink())
    assert not ctx.cancelled
    assert not ctx.wait_cancelled(0)
    threading.Timer(0.02, ctx.request_cancel).start()
    with pytest.raises(TaskCancelled):
        ctx.receive(5)
    assert ctx.cancelled
    assert ctx.wait_cancelled(0)


def test_a_cancelled_receive_passes_through_except_exception() -> None:
    ctx = TaskContext("t", 1, Mailbox(), Sink())
    ctx.request_cancel()
    caught: list[BaseException] = []

    def user_code() -> None:
        try:
            ctx.receive(5)
        except Exception as exc:  # what user code often writes
            caught.append(exc)

    with pytest.raises(TaskCancelled):
        user_code()
    assert caught == []


def test_a_context_records_no_process_until_an_executor_sets_one() -> None:
    ctx = TaskContext("t", 1, Mailbox(), Sink())
    assert (ctx.pid, ctx.pgid, ctx.started) == (None, None, None)


def test_a_message_already_there_is_taken_even_when_cancelled() -> None:
    ctx = TaskContext("t", 1, Mailbox(), Sink())
    ctx.mailbox.put("kept")
    ctx.request_cancel()
    assert ctx.receive(0) == "kept"


def test_report_goes_to_the_sink() -> None:
    sink = Sink()
    ctx = TaskContext("t", 1, Mailbox(), sink)
    ctx.report({"done": 3})
    assert sink.progress_seen == [{"done": 3}]
    assert (ctx.task_id, ctx.attempt) == ("t", 1)


def test_receive_async_waits_without_blocking_the_loop() -> None:
    ctx = TaskContext("t", 1, Mailbox(), Sink())

    async def main() -> tuple[object, object, list[str]]:
        ticks: list[str] = []

        async def ticker() -> None:
            for _ in range(3):
                ticks.append("tick")
                await asyncio.sleep(0.005)

        loop = asyncio.get_running_loop()
        loop.call_later(0.03, lambda: threading.Thread(target=ctx.mailbox.put, args=("m",)).start())
        got, _ = await asyncio.gather(ctx.receive_async(5), ticker())
        ctx.mailbox.put("ready")
        again = await ctx.receive_async(0)
        return got, again, ticks

    got, again, ticks = asyncio.run(main())
    assert (got, again) == ("m", "ready")
    assert ticks == ["tick"] * 3


def test_receive_expecting_a_type_returns_it_or_says_what_came() -> None:
    ctx = TaskContext("t", 1, Mailbox(), Sink())
    request = Request("ping")
    ctx.mailbox.put(request)
    ctx.mailbox.put("not a request")
    ctx.mailbox.put(3)
    assert ctx.receive(0, expect=Request) is request
    with pytest.raises(UnexpectedMessage) as caught:
        ctx.receive(0, expect=Request)
    assert str(caught.value) == "expected a message of type Request, got 'not a request'"
    assert caught.value.received == "not a request"
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, TaskvisorError)
    assert ctx.receive(0) == 3  # taken: the next message is next

    async def main() -> object:
        ctx.mailbox.put(b"bytes")
        ctx.mailbox.put(b"more")
        assert await ctx.receive_async(0, expect=bytes) == b"bytes"
        return await ctx.receive_async(0, expect=str)

    with pytest.raises(UnexpectedMessage, match="expected a message of type str, got b'more'"):
        asyncio.run(main())


def test_receive_async_times_out() -> None:
    box = Mailbox()
    with pytest.raises(WaitTimeout, match=r"within 0\.01s"):
        asyncio.run(box.get_async(0.01))
    assert box._waiters == []  # a timed-out receive leaves no waiter behind
    box.put("after")
    assert box.get(0) == "after"


def test_request_reply_fail_and_timeout() -> None:
    answered = Request("q")
    threading.Timer(0.01, answered.reply, (42,)).start()
    assert answered.wait(5) == 42
    failed = Request("q")
    failed.fail(KeyError("missing"))
    with pytest.raises(KeyError, match="missing"):
        failed.wait(0)
    silent = Request("ping")
    with pytest.raises(WaitTimeout, match=r"no reply to 'ping' within 0\.01s"):
        silent.wait(0.01)


def test_manual_clock_fires_due_timers_in_deadline_order() -> None:
    clock = ManualClock(start=100.0)
    fired: list[str] = []
    clock.call_later(2.0, lambda: fired.append("b"))
    clock.call_later(1.0, lambda: fired.append("a"))
    dropped = clock.call_later(1.5, lambda: fired.append("never"))
    dropped.cancel()
    assert clock.pending() == 2
    clock.advance(1.0)
    assert fired == ["a"]
    assert clock.now() == 101.0
    clock.advance(5.0)
    assert fired == ["a", "b"]
    assert clock.pending() == 0


def test_system_clock_runs_timers_on_one_thread_that_ends_when_idle() -> None:
    clock = SystemClock()
    fired = threading.Event()
    names: list[str] = []

    def note() -> None:
        names.append(threading.current_thread().name)
        fired.set()

    cancelled = clock.call_later(0.01, lambda: names.append("cancelled"))
    cancelled.cancel()
    cancelled.cancel()  # twice is harmless
    clock.call_later(0.02, note)
    assert fired.wait(5)
    deadline = time.monotonic() + 5
    while any(t.name == names[0] for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "cancelled" not in names
    assert not any(t.name == names[0] for t in threading.enumerate())
    assert clock.now() <= time.monotonic()


def test_a_kept_timer_thread_serves_many_timers_and_ends_on_close() -> None:
    clock = SystemClock(keep_thread=True)
    seen: list[threading.Thread] = []
    for _ in range(3):
        fired = threading.Event()
        clock.call_later(0.001, lambda f=fired: (seen.append(threading.current_thread()), f.set()))
        assert fired.wait(5)
        clock.call_later(60, lambda: None).cancel()  # none pending again
    assert len(set(seen)) == 1  # one thread for all of them
    assert seen[0].is_alive()
    pending = clock.call_later(60, lambda: seen.append(threading.current_thread()))
    clock.close()
    assert not seen[0].is_alive()
    pending.cancel()  # harmless after close
    late = threading.Event()
    clock.call_later(0, late.set)  # a closed clock runs nothing
    assert not late.wait(0.05)
    assert len(seen) == 3


def test_a_kept_timer_thread_wakes_for_a_timer_due_before_the_one_it_waits_for() -> None:
    clock = SystemClock(keep_thread=True)
    fired: list[str] = []
    done = threading.Event()
    far = clock.call_later(60, lambda: fired.append("far"))
    clock.call_later(0.01, lambda: fired.append("soon"))  # the thread waits 60 s: wake it
    clock.call_later(0.03, lambda: (fired.append("later"), done.set()))  # no wake needed
    assert done.wait(5)
    far.cancel()  # none pending: the thread still sleeps towards the old deadline
    again = threading.Event()
    clock.call_later(0.01, again.set)  # due long before that deadline: wakes it
    assert again.wait(5)
    clock.close()
    assert fired == ["soon", "later"]


def test_the_cancel_flag_makes_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attempt's cancel flag is a ``Latch``: making a ``threading.Event`` (with its
    ``Condition``) for every attempt was a measurable part of a restart."""
    made: list[object] = []
    real = threading.Event

    def counted() -> threading.Event:
        made.append(None)
        return real()

    monkeypatch.setattr(threading, "Event", counted)
    ctx = TaskContext("t", 1, Mailbox(), Sink())
    assert not ctx.wait_cancelled(0)
    ctx.request_cancel()
    assert ctx.cancelled
    assert ctx.wait_cancelled(0)
    assert made == []


def test_every_waiter_on_the_cancel_flag_wakes_once_it_is_set() -> None:
    ctx = TaskContext("t", 1, Mailbox(), Sink())
    woke: list[bool] = []
    waiters = [
        threading.Thread(target=lambda: woke.append(ctx.wait_cancelled(10))) for _ in range(4)
    ]
    for waiter in waiters:
        waiter.start()
    assert not ctx.wait_cancelled(0.01)
    ctx.request_cancel()
    ctx.request_cancel()  # twice is once
    for waiter in waiters:
        waiter.join(10)
    assert woke == [True] * 4
    assert not any(waiter.is_alive() for waiter in waiters)
