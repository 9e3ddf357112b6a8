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
from collections.abc import Callable

import pykka
import pytest

from conftest import wait_until
from helpers import until_cancelled
from taskvisor.actors import (
    AsyncExecutor,
    CallExecutor,
    ExecutorService,
    InvalidSpec,
    MemoryStore,
    Request,
    TaskContext,
    TaskRecord,
    TaskSpec,
    WaitTimeout,
)
from taskvisor.actors._base import Latch, deadline_in, seconds_of, wait_timeout
from taskvisor.actors._context import Mailbox
from taskvisor.supervision import Supervisor, SupervisorError, SupervisorSpec

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
        assert handle.status(forever).status.phase.value == "succeeded"
        assert len(handle.runs(forever)) == 1
    finally:
        service.shutdown(forever)


class StuckStore(MemoryStore):
    """A store whose writes block while ``stuck`` is set: its task actor cannot answer."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck, self.entered, self.release = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )

    def put(self, record: TaskRecord) -> None:
        if self.stuck.is_set():
            self.entered.set()
            self.release.wait(30)
        super().put(record)


def test_a_handle_reads_its_task_within_its_timeout() -> None:
    store = StuckStore()
    with ExecutorService(store=store) as service:
        handle = service.submit(TaskSpec(name="job", target=until_cancelled))
        assert handle.status(timeout=10).status.phase.value == "running"
        store.stuck.set()
        handle.cancel()  # the actor saves the end, and blocks in the store
        assert store.entered.wait(10)
        with pytest.raises(WaitTimeout, match=r"'job' did not answer within 0\.2s"):
            handle.status(timeout=0.2)
        with pytest.raises(WaitTimeout, match=r"within 0\.1s"):
            handle.runs(timeout=0.1)
        with pytest.raises(TypeError, match=r"^timeout: expected seconds"):
            handle.status(timeout="1")  # type: ignore[arg-type]
        store.stuck.clear()
        store.release.set()
        assert handle.wait(10).status.phase.value == "cancelled"
        assert handle.status(timeout=0).status.phase.value == "cancelled"


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


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "bad", [_nested(10_000), "5", b"5", object()], ids=["nested", "str", "bytes", "object"]
)
def test_a_timeout_of_the_wrong_type_is_refused_by_every_kind_of_wait(bad: object) -> None:
    with pytest.raises(TypeError, match=r"^timeout: expected seconds"):
        Latch().wait(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^timeout: expected seconds"):
        Mailbox().get(bad)  # type: ignore[arg-type]
    spec = SupervisorSpec("app", children=[TaskSpec(name="server", target=serve)])
    with Supervisor.start(spec) as tree:
        for call in (
            lambda: tree.wait(bad),
            lambda: tree.which_children(timeout=bad),
            lambda: tree.task("server").ask("ping", timeout=bad),
            lambda: tree._runtime.bus.stats(bad),
        ):
            with pytest.raises(TypeError, match=r"^timeout: expected seconds"):
                call()
        assert tree.task("server").ask("ping", timeout=10) == ("pong", 1)


def test_a_child_id_of_the_wrong_kind_is_refused_and_the_tree_runs_on() -> None:
    spec = SupervisorSpec("app", children=[TaskSpec(name="server", target=serve)])
    with Supervisor.start(spec) as tree:
        for bad in (_nested(10_000), 10**5000, None, b"server", ["server"]):
            for call in (tree.terminate_child, tree.restart_child, tree.delete_child):
                with pytest.raises(TypeError, match=r"^child_id: expected a child's name"):
                    call(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"^path: expected a child's path"):
                tree.child(bad)  # type: ignore[arg-type]
        huge = "x" * 1_000_000
        for call in (tree.terminate_child, tree.restart_child, tree.delete_child, tree.child):
            with pytest.raises(SupervisorError, match="at most 255 characters") as caught:
                call(huge)
            assert len(str(caught.value)) < 300
        assert tree.running
        assert tree.task("server").ask("ping", timeout=10) == ("pong", 1)


@pytest.mark.parametrize("make", [lambda n: TaskSpec(name=n, target=serve), SupervisorSpec])
def test_a_name_is_at_most_255_characters(make: Callable[[str], object]) -> None:
    make("x" * 255)
    with pytest.raises(
        InvalidSpec, match=r"^name: expected a name of at most 255 characters"
    ) as caught:
        make("x" * 256)
    assert len(str(caught.value)) < 300


def test_receive_refuses_an_expect_that_is_not_a_type_and_keeps_the_message() -> None:
    box = Mailbox()
    ctx = TaskContext("t", 1, box, None)  # type: ignore[arg-type]
    box.put("kept")
    with pytest.raises(TypeError, match=r"^expect: expected a type"):
        ctx.receive(0, expect=5)  # type: ignore[call-overload]
    assert ctx.receive(0) == "kept"
