"""The private names of pykka that taskvisor still uses, each pinned with why.

taskvisor plugs into pykka through its public API and the three
implementor hooks (``_create_actor_inbox``, ``_create_future``,
``_start_actor_loop``). The names below are the only others; if a pykka
release renames one, these tests say which feature to rework.
"""

from __future__ import annotations

import inspect

import pykka
import pykka._actor
import pykka._envelope
import pykka.messages

from taskvisor.actors._actor import TaskActor
from taskvisor.supervision._supervisor import SupervisorActor


def test_the_loop_teardown_hook_is_where_a_stopped_actor_drains_its_inbox() -> None:
    # Why: every waiter is answered. A task or supervisor actor closes its
    # inbox when its loop ends (``_actor_loop_teardown``) and answers what
    # came too late (a terminate gets the final snapshot, an API call an
    # error) instead of leaving it unread, as pykka's own teardown does for
    # plain asks only. pykka calls it at the end of ``_actor_loop``.
    source = inspect.getsource(pykka._actor.Actor._actor_loop)
    assert "self._actor_loop_teardown()" in source
    for actor in (TaskActor, SupervisorActor):
        assert actor._actor_loop_teardown is not pykka.ThreadingActor._actor_loop_teardown


def test_the_stop_message_class_tells_a_late_stop_from_a_late_ask() -> None:
    # Why: a stop that reaches a stopped actor is answered None (stopped), as
    # pykka's own teardown does; any other late ask gets ActorDeadError.
    stop = pykka.messages._ActorStop()
    assert type(stop).__module__ == "pykka.messages"
    source = inspect.getsource(pykka._actor.Actor._actor_loop_teardown)
    assert "messages._ActorStop" in source


def test_envelopes_and_the_inbox_type_are_used_for_types_only() -> None:
    # Why: the closing inbox stores pykka's envelopes (``message``,
    # ``reply_to``) and is typed as pykka's ``ActorInbox``; neither is
    # built by taskvisor at run time.
    envelope = pykka._envelope.Envelope("m", reply_to=None)
    assert (envelope.message, envelope.reply_to) == ("m", None)
    assert hasattr(pykka._actor, "ActorInbox")
