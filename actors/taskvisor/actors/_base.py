"""The base class of taskvisor's pykka actors."""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING

import pykka

if TYPE_CHECKING:
    from pykka._actor import ActorInbox

__all__ = ["BaseActor"]


class BaseActor(pykka.ThreadingActor):
    """A ``ThreadingActor`` on a daemon thread with a C-implemented inbox.

    Daemon threads start in constant time (pykka's non-daemon threads make
    starting N actors O(N^2) on Python 3.11); taskvisor's own ordered
    shutdown joins them. ``queue.SimpleQueue`` hands a message over several
    times faster than ``queue.Queue``, which pykka uses by default.
    """

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        inbox: ActorInbox = queue.SimpleQueue()
        return inbox
