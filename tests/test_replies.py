"""Every asker is answered: a request whose attempt ended without replying, or
whose task ended for good, fails with ``NoReply`` as soon as that is known."""

from __future__ import annotations

import asyncio
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


# ----------------------------------------------------------------- helpers


def _taken(tree: Any) -> int:
    """How many requests the current attempt of ``app/w`` holds unanswered."""
    actor = tree.child("w")._ref._actor_weakref()
    ctx = None if actor is None else actor.ctx
    return 0 if ctx is None else len(ctx.taken.requests)


def _until(predicate: Any, timeout: float = ASK) -> bool:
    from conftest import wait_until

    return wait_until(predicate, timeout)
