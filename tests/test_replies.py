"""Every asker is answered: a request whose attempt ended without replying, or
whose task ended for good, fails with ``NoReply`` as soon as that is known."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from typing import Any

import pytest

from taskvisor.actors import (
    ExecutorService,
    NoReply,
    Request,
    Restart,
    TaskCancelled,
    TaskContext,
    TaskSpec,
    WaitTimeout,
)
from taskvisor.actors._context import Mailbox, Taken
from taskvisor.supervision import Intensity, Supervisor, SupervisorSpec

#: Long enough that an ask answered only by its timeout fails the type check
#: below (a plain WaitTimeout), short enough not to hang the suite when broken.
ASK = 30.0


# ----------------------------------------------------------------- the pieces


def test_only_the_first_answer_counts() -> None:
    replied = Request("q")
    replied.reply(1)
    replied.fail(KeyError("late"))  # ignored, and raises nothing in the work
    replied.reply(2)
    assert replied.answered
    assert replied.wait(0) == 1
    failed = Request("q")
    failed.fail(KeyError("first"))
    failed.reply("late")
    with pytest.raises(KeyError, match="first"):
        failed.wait(0)


def test_racing_answers_from_many_threads_settle_once() -> None:
    for _ in range(200):
        request = Request("q")
        start = threading.Barrier(4)

        def answer(
            value: int, request: Request = request, start: threading.Barrier = start
        ) -> None:
            start.wait()
            request.reply(value)

        threads = [threading.Thread(target=answer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert request.wait(0) in range(4)


def test_an_ended_attempt_hands_back_what_it_took_unanswered_and_takes_nothing_more() -> None:
    box, taken = Mailbox(), Taken()
    first, second = Request("a"), Request("b")
    for item in (first, "plain", second, "left"):
        box.put(item)
    assert box.get(0, taken=taken) is first
    assert box.get(0, taken=taken) == "plain"
    assert box.get(0, taken=taken) is second
    second.reply("done")
    assert box.end(taken) == [first]
    with pytest.raises(TaskCancelled, match="has ended"):
        box.get(0, taken=taken)
    assert box.get(0) == "left"  # for the next attempt


def test_an_attempt_that_serves_many_requests_keeps_only_the_unanswered() -> None:
    box, taken = Mailbox(), Taken()
    kept = Request("kept")
    box.put(kept)
    box.get(0, taken=taken)
    for i in range(1000):
        box.put(Request(i))
        box.get(0, taken=taken).reply(i)
    assert len(taken.requests) <= 33
    assert box.end(taken) == [kept]


def test_a_refusing_mailbox_answers_requests_and_keeps_other_messages() -> None:
    box = Mailbox()
    waiting = Request("waiting")
    box.put(waiting)
    box.put("note")
    box.refuse("task 'a' has ended (succeeded)")
    with pytest.raises(NoReply, match=r"has ended \(succeeded\): no attempt will take 'waiting'"):
        waiting.wait(0)
    late = Request("late")
    box.put(late)
    with pytest.raises(NoReply, match="'late'"):
        late.wait(0)
    box.accept()
    kept = Request("kept")
    box.put(kept)
    assert box.get(0) == "note"
    assert box.get(0) is kept
    assert not kept.answered


def test_a_request_answers_every_waiter_and_gives_up_once_for_all() -> None:
    request = Request("q")
    got: list[object] = []
    waiters = [threading.Thread(target=lambda: got.append(request.wait(ASK))) for _ in range(3)]
    for t in waiters:
        t.start()
    request.reply("one answer")
    for t in waiters:
        t.join(ASK)
    assert got == ["one answer"] * 3
    assert request.wait(0) == "one answer"
    late = Request({"big": "x" * 10_000})
    with pytest.raises(WaitTimeout, match=r"no reply to \{'big': 'xxx+… within 0\.0s") as raised:
        late.wait(0)
    assert late.answered  # the work can see that nobody waits any more
    late.reply("too late")  # ignored
    with pytest.raises(WaitTimeout) as again:
        late.wait(0)
    assert again.value is raised.value
    assert len(str(raised.value)) < 150


def test_a_request_shows_its_message_and_fails_only_with_an_exception() -> None:
    request = Request(["a"] * 1000)
    assert repr(request).startswith("Request(['a', 'a'")
    assert len(repr(request)) < 100
    with pytest.raises(TypeError, match=r"error: expected an exception, got 'oops'"):
        request.fail("oops")  # type: ignore[arg-type]
    assert not request.answered


def test_a_receiver_left_from_an_ended_attempt_wakes_and_passes_on_what_it_was_woken_for() -> None:
    box, old, new = Mailbox(), Taken(), Taken()
    left: list[BaseException] = []

    def leftover() -> None:
        try:
            box.get(ASK, taken=old)
        except TaskCancelled as exc:
            left.append(exc)

    sleeper = threading.Thread(target=leftover)
    sleeper.start()
    assert _until(lambda: len(box._sleepers) == 1)
    box.end(old)  # the attempt ended: its leftover receiver wakes and leaves
    sleeper.join(ASK)
    assert not sleeper.is_alive()
    assert len(left) == 1
    # A put that woke an ended attempt's receiver just before the end: the wake
    # goes on to the next attempt's receiver instead of being lost.
    stale = threading.Lock()
    stale.acquire()
    box._sleepers.append(stale)
    got: list[object] = []
    receiver = threading.Thread(target=lambda: got.append(box.get(ASK, taken=new)))
    receiver.start()
    assert _until(lambda: len(box._sleepers) == 2)
    box.put("for the next attempt")  # releases the stale sleeper, oldest first
    with pytest.raises(TaskCancelled):
        box.get(0, taken=old)  # the ended attempt looks again, as its woken thread would
    receiver.join(5)  # woken now, not at its own deadline (ASK)
    assert got == ["for the next attempt"]
    receiver.join(ASK)


def test_no_reply_is_a_wait_timeout() -> None:
    # Code that handles a timed-out ask handles the early answer too.
    assert issubclass(NoReply, WaitTimeout)


# ----------------------------------------------------------------- in a tree


def takes_then(ctx: TaskContext, how: str) -> str:
    """Take one request and end without replying, in the way ``how`` names."""
    request = ctx.receive(ASK)
    assert isinstance(request, Request)
    if how == "raise":
        raise RuntimeError("broke mid-request")
    if how == "return":
        return "forgot to reply"
    if how == "exit-later":  # wait to be stopped (timeout, terminate)
        ctx.wait_cancelled(ASK)
    return "stopped"


async def atakes_then(ctx: TaskContext, how: str) -> str:
    request = await ctx.receive_async(ASK)
    assert isinstance(request, Request)
    if how == "raise":
        raise RuntimeError("broke mid-request")
    if how == "exit-later":
        await asyncio.sleep(ASK)
    return "forgot to reply"


@pytest.mark.parametrize("kind", ["call", "async"])
@pytest.mark.parametrize(
    ("how", "extra", "said"),
    [
        ("raise", {}, r"attempt 1 ended failed: RuntimeError: broke mid-request, without replying"),
        ("return", {"restart": Restart.TRANSIENT}, r"attempt 1 ended succeeded, without replying"),
        (
            "exit-later",
            {"timeout": 0.2},
            r"attempt 1 ended timeout: timed out after 0.2s, without replying",
        ),
    ],
)
def test_an_attempt_that_ends_without_replying_fails_the_ask_at_once(
    kind: str, how: str, extra: dict[str, Any], said: str
) -> None:
    target = takes_then if kind == "call" else atakes_then
    spec = SupervisorSpec(
        "app",
        intensity=Intensity(10, 60),
        children=[TaskSpec(name="w", kind=kind, target=target, args=[how], **extra)],
    )
    with Supervisor.start(spec) as tree:
        with pytest.raises(NoReply, match=said + " to 'q'") as raised:
            tree.child("w").ask("q", timeout=ASK)
        assert "app/w" in str(raised.value)


def test_a_terminated_attempt_fails_what_it_took_and_a_restart_serves_again() -> None:
    spec = SupervisorSpec(
        "app", children=[TaskSpec(name="w", target=takes_then, args=["exit-later"])]
    )
    with Supervisor.start(spec) as tree:
        asked: list[BaseException] = []

        def ask() -> None:
            try:
                tree.child("w").ask("q", timeout=ASK)
            except BaseException as exc:
                asked.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        # Terminate once the request is taken: the mailbox is empty again.
        assert _until(lambda: len(tree.child("w").mailbox) == 0 and _taken(tree) == 1)
        tree.terminate_child("w")
        asker.join(ASK + 5)
        assert len(asked) == 1
        assert isinstance(asked[0], NoReply)
        assert "ended cancelled" in str(asked[0])


def serves_with_threads(ctx: TaskContext, helpers: list[threading.Thread]) -> str:
    """Attempt 1 starts two threads that receive, then fails; later attempts serve."""

    def receive_forever() -> None:
        with contextlib.suppress(TaskCancelled):
            while True:
                request = ctx.receive(expect=Request)
                request.reply(("helper of attempt", ctx.attempt))

    if ctx.attempt == 1:
        for _ in range(2):
            helper = threading.Thread(target=receive_forever)
            helpers.append(helper)
            helper.start()
        assert _until(lambda: len(ctx.mailbox._sleepers) == 2)
        raise RuntimeError("the attempt ends; its threads are left receiving")
    request = ctx.receive(ASK, expect=Request)
    request.reply(("attempt", ctx.attempt))
    return "served"


def test_threads_left_receiving_by_an_ended_attempt_leave_and_steal_no_wake() -> None:
    helpers: list[threading.Thread] = []
    spec = SupervisorSpec(
        "app", children=[TaskSpec(name="w", target=serves_with_threads, args=[helpers])]
    )
    with Supervisor.start(spec) as tree:
        assert _until(lambda: tree.which_children()[0].attempt == 2)
        for helper in helpers:  # woken when attempt 1 ended: they leave
            helper.join(ASK)
        assert [h.is_alive() for h in helpers] == [False, False]
        assert tree.child("w").ask("after the restart", timeout=ASK) == ("attempt", 2)


def takes_and_raises_with_notes(ctx: TaskContext) -> None:
    ctx.receive(ASK)
    error = ValueError("bad input\n(while serving the request)")
    error.add_note("hint: check the config")
    raise error


def test_no_reply_says_what_was_raised_with_its_message_and_notes() -> None:
    spec = SupervisorSpec(
        "app",
        children=[
            TaskSpec(name="w", target=takes_and_raises_with_notes, restart=Restart.TEMPORARY)
        ],
    )
    with Supervisor.start(spec) as tree:
        said = (
            "attempt 1 ended failed: ValueError: bad input (while serving the request) "
            "hint: check the config, without replying to 'q'"
        )
        with pytest.raises(NoReply, match=re.escape(said)):
            tree.child("w").ask("q", timeout=ASK)


def replies_once(ctx: TaskContext) -> str:
    request = ctx.receive(ASK)
    assert isinstance(request, Request)
    request.reply(("attempt", ctx.attempt, request.message))
    return "done"


def test_requests_to_a_task_that_ended_for_good_fail_until_it_is_restarted() -> None:
    spec = SupervisorSpec(
        "app",
        children=[TaskSpec(name="t", target=replies_once, restart=Restart.TRANSIENT)],
    )
    with Supervisor.start(spec) as tree:
        ref = tree.child("t")
        assert ref.ask("first", timeout=ASK) == ("attempt", 1, "first")
        assert _until(lambda: tree.which_children()[0].status == "ended")
        with pytest.raises(NoReply, match=r"'app/t' has ended \(succeeded\)"):
            ref.ask("after the end", timeout=ASK)
        tree.restart_child("t")
        assert ref.ask("restarted", timeout=ASK) == ("attempt", 2, "restarted")


def stuck_then_receives(ctx: TaskContext, release: threading.Event, tried: list[object]) -> None:
    """Attempt 1 ignores cancellation until released, then tries to take one more
    message; the next attempt says what it found in the mailbox."""
    if ctx.attempt > 1:
        found = ctx.receive(ASK)
        request = ctx.receive(ASK, expect=Request)
        request.reply(("next attempt took", found))
        ctx.wait_cancelled(ASK)
        return
    release.wait(ASK)
    try:
        tried.append(ctx.receive(0))
    except TaskCancelled as exc:
        tried.append(exc)


def test_an_abandoned_attempt_does_not_take_the_next_attempts_messages() -> None:
    release, tried = threading.Event(), []
    spec = SupervisorSpec(
        "app",
        children=[
            TaskSpec(name="w", target=stuck_then_receives, args=[release, tried], shutdown=0.05)
        ],
    )
    with Supervisor.start(spec) as tree:
        tree.terminate_child("w")  # abandoned after its 0.05 s grace
        ref = tree.child("w")
        ref.deliver("m")
        release.set()  # the abandoned work looks in the mailbox again
        assert _until(lambda: tried)
        assert isinstance(tried[0], TaskCancelled)
        tree.restart_child("w")
        assert ref.ask("what did you find?", timeout=ASK) == ("next attempt took", "m")


def test_a_service_task_that_ends_without_replying_fails_the_ask() -> None:
    with ExecutorService() as service:
        handle = service.submit(TaskSpec(name="once", target=takes_then, args=["raise"]))
        with pytest.raises(NoReply, match="broke mid-request, without replying to 'q'"):
            handle.ask("q", timeout=ASK)
        handle.wait(ASK)
        with pytest.raises(TypeError, match=r"^timeout: expected seconds"):
            handle.ask("q", timeout="5")  # type: ignore[arg-type]
        with pytest.raises(NoReply, match=r"'once' has ended \(failed\)"):
            handle.ask("q", timeout=ASK)


# ----------------------------------------------------------------- helpers


def _taken(tree: Any) -> int:
    """How many requests the current attempt of ``app/w`` holds unanswered."""
    actor = tree.child("w")._ref._actor_weakref()
    ctx = None if actor is None else actor.ctx
    return 0 if ctx is None else len(ctx.taken.requests)


def _until(predicate: Any, timeout: float = ASK) -> bool:
    from conftest import wait_until

    return wait_until(predicate, timeout)
