"""Every public wait takes any number as its timeout: inf, a huge int, NaN, a negative.

``threading`` refuses waits longer than ``threading.TIMEOUT_MAX`` and NaN, and
``lock.acquire`` reads -1 as "forever". The library reads a timeout one way
everywhere: NaN and a negative number look once without waiting, inf and
anything too long for ``threading`` wait without a bound, an int too large
for a float is inf. No call raises ``OverflowError`` or ``ValueError`` from
inside, hangs, or leaves a tree running.
"""

from __future__ import annotations

import asyncio
import math
import threading

import pykka
import pytest

from conftest import wait_until
from taskvisor.actors import (
    AsyncExecutor,
    CallExecutor,
    ExecutorService,
    Request,
    TaskContext,
    TaskSpec,
    WaitTimeout,
)
from taskvisor.actors._base import Latch, deadline_in, seconds_of, wait_timeout
from taskvisor.actors._context import Mailbox
from taskvisor.supervision import Supervisor, SupervisorSpec

FOREVER = [math.inf, 1e10, 10**400]  # each waits without a bound
FOREVER_IDS = ["inf", "1e10", "10**400"]
NO_WAIT = [0, -1, -0.5, math.nan, -(10**400), -math.inf]  # each looks once
NO_WAIT_IDS = ["0", "-1", "-0.5", "nan", "-10**400", "-inf"]


def serve(ctx: TaskContext) -> None:
    while True:
        request = ctx.receive()
        assert isinstance(request, Request)
        request.reply(("pong", ctx.attempt))


@pytest.mark.parametrize(
    ("given", "seconds", "waited"),
    [
        (2.5, 2.5, 2.5),
        (3, 3.0, 3.0),
        (0, 0.0, 0.0),
        (-1, 0.0, 0.0),
        (math.nan, 0.0, 0.0),
        (math.inf, math.inf, None),
        (1e10, 1e10, None),  # beyond threading.TIMEOUT_MAX
        (10**400, math.inf, None),  # too large for a float
        (-(10**400), 0.0, 0.0),  # too large for a float, and negative: looks once
        (None, None, None),
    ],
)
def test_a_timeout_reads_one_way_everywhere(
    given: float | None, seconds: float | None, waited: float | None
) -> None:
    if given is not None:
        assert seconds_of(given) == seconds
    assert wait_timeout(given) == waited


@pytest.mark.parametrize("given", ["5", b"5", object(), [1]])
def test_a_timeout_that_is_not_a_number_is_refused_by_name(given: object) -> None:
    with pytest.raises(TypeError, match=r"^timeout: expected seconds \(a number, or None\)"):
        wait_timeout(given)


def test_a_deadline_of_a_huge_int_is_no_deadline() -> None:
    assert deadline_in(10**400, 1.0) == math.inf


@pytest.mark.parametrize("forever", FOREVER, ids=FOREVER_IDS)
def test_waits_of_the_pieces_take_a_timeout_without_a_bound(forever: float) -> None:
    latch = Latch()
    threading.Timer(0.02, latch.set).start()
    assert latch.wait(forever)
    box = Mailbox()
    threading.Timer(0.02, box.put, ("late",)).start()
    assert box.get(forever) == "late"
    request = Request("ping")
    threading.Timer(0.02, request.reply, ("pong",)).start()
    assert request.wait(forever) == "pong"

    async def receive_async() -> object:
        asyncio.get_running_loop().call_later(0.02, box.put, "later")
        return await box.get_async(forever)

    assert asyncio.run(receive_async()) == "later"


@pytest.mark.parametrize("no_wait", NO_WAIT, ids=NO_WAIT_IDS)
def test_waits_of_the_pieces_look_once_with_no_time_to_wait(no_wait: float) -> None:
    assert not Latch().wait(no_wait)
    with pytest.raises(WaitTimeout):
        Mailbox().get(no_wait)
    with pytest.raises(WaitTimeout):
        Request("ping").wait(no_wait)  # -1 once meant "forever" to the lock underneath


@pytest.mark.parametrize("forever", FOREVER, ids=FOREVER_IDS)
def test_a_tree_takes_a_timeout_without_a_bound_in_every_call(forever: float) -> None:
    spec = SupervisorSpec(
        "app",
        children=[TaskSpec(name="server", target=serve), TaskSpec(name="other", target=serve)],
    )
    tree = Supervisor.start(spec, timeout=forever)
    try:
        assert [row.id for row in tree.which_children(timeout=forever)] == ["server", "other"]
        assert tree.count_children(timeout=forever)["active"] == 2
        server = tree.task("server", timeout=forever)
        assert server.ask("ping", timeout=forever) == ("pong", 1)
        assert server.snapshot(timeout=forever).task.status.attempt == 1
        tree.terminate_child("other", timeout=forever)
        tree.restart_child("other", timeout=forever)
        assert tree.task("other").ask("ping", timeout=forever) == ("pong", 2)
        tree.terminate_child("other", timeout=forever)
        tree.delete_child("other", timeout=forever)
        assert tree.count_children(timeout=forever)["specs"] == 1
    finally:
        tree.stop(forever)
    assert not tree.running
    tree.wait(timeout=forever)  # released: returns at once


@pytest.mark.parametrize("no_wait", NO_WAIT, ids=NO_WAIT_IDS)
def test_a_tree_looks_once_when_given_no_time_to_wait(no_wait: float) -> None:
    spec = SupervisorSpec("app", children=[TaskSpec(name="server", target=serve)])
    tree = Supervisor.start(spec)
    try:
        with pytest.raises(WaitTimeout, match="still running"):
            tree.wait(timeout=no_wait)
    finally:
        tree.stop(no_wait)  # no time: returns at once, what still runs is killed
    assert not tree.running
    tree.wait(timeout=no_wait)
    # Its actors were told to stop and do so by themselves, moments later.
    assert wait_until(lambda: not pykka.ActorRegistry.get_all())


@pytest.mark.parametrize("forever", FOREVER, ids=FOREVER_IDS)
def test_a_service_takes_a_timeout_without_a_bound(forever: float) -> None:
    service = ExecutorService()
    try:
        handle = service.submit(TaskSpec(name="job", target=lambda ctx: 42))
        assert handle.wait(forever).status.phase.value == "succeeded"
        assert handle.result(forever) == 42
    finally:
        service.shutdown(forever)


@pytest.mark.parametrize("forever", FOREVER, ids=FOREVER_IDS)
def test_executors_close_with_a_timeout_without_a_bound(forever: float) -> None:
    call, loop = CallExecutor(), AsyncExecutor()

    async def job(ctx: TaskContext) -> int:
        return 7

    service = ExecutorService(executors={"call": call, "async": loop})
    try:
        assert service.submit(TaskSpec(name="a", target=lambda ctx: 1)).result(10) == 1
        assert service.submit(TaskSpec(name="b", kind="async", target=job)).result(10) == 7
        call.close(forever)
        loop.close(forever)
    finally:
        service.shutdown(10)


def test_an_ask_with_a_timeout_that_is_not_a_number_delivers_nothing() -> None:
    seen: list[object] = []

    def record(ctx: TaskContext) -> None:
        while True:
            request = ctx.receive()
            assert isinstance(request, Request)
            seen.append(request.message)
            request.reply("ok")

    spec = SupervisorSpec("app", children=[TaskSpec(name="w", target=record)])
    with Supervisor.start(spec) as tree:
        ref = tree.task("w")
        with pytest.raises(TypeError, match="timeout"):
            ref.ask("charge the card", timeout="5")  # type: ignore[arg-type]
        assert ref.ask("after", timeout=10) == "ok"
    assert seen == ["after"]


def test_an_ask_to_a_stopped_task_fails_at_once_and_a_nested_stop_names_itself() -> None:
    spec = SupervisorSpec(
        "app",
        children=[
            TaskSpec(name="w", target=serve),
            SupervisorSpec("sub", children=[TaskSpec(name="x", target=serve)]),
        ],
    )
    tree = Supervisor.start(spec)
    try:
        sub = tree.supervisor("sub")
        with pytest.raises(WaitTimeout, match=r"supervisor 'app/sub' did not stop within 0\.0s"):
            sub.stop(0)  # no time to wait: it goes on stopping all the same
        ref = tree.task("w")
    finally:
        tree.stop(10)
    with pytest.raises(WaitTimeout, match="has stopped"):
        ref.ask("ping", timeout=None)  # None is no bound: it must not wait for nothing
