"""The pure policy core of supervision: what a supervisor does when a child ends.

No threads and no clock: ``now`` (monotonic seconds) is always an argument,
and every function returns a new value instead of changing one. The
Supervisor actor and the simulator both call ``decide``; so can a test.

The semantics are Erlang/OTP's ``supervisor`` module (OTP 24+):

- Restart types: ``PERMANENT`` children are restarted after any end,
  ``TRANSIENT`` ones only after an abnormal end (``FAILED``, ``TIMEOUT``,
  ``EXHAUSTED``), ``TEMPORARY`` ones never (and their spec is removed).
- Strategies: ``ONE_FOR_ONE`` restarts the child that ended;
  ``ONE_FOR_ALL`` terminates every other child in reverse start order and
  restarts all of them in start order; ``REST_FOR_ONE`` does the same for
  the children started after the one that ended. ``TEMPORARY`` siblings
  caught up in a group restart are dropped, not restarted. Like OTP's
  ``start_children``, a group restart also starts siblings that had ended
  before (a ``TRANSIENT`` child that finished normally, say).
- Intensity: each restart decision, whatever the number of children it
  restarts, adds one entry to a sliding window; restarts ``r`` with
  ``r >= now - within`` are kept, and when the window then holds more than
  ``max_restarts`` entries the supervisor gives up (so ``max_restarts=0``
  gives up at the first restart). An optional per-child window does the
  same for each child's own restarts.
- Automatic shutdown (OTP 24): with ``AutoShutdown.ANY_SIGNIFICANT`` the
  supervisor shuts down when a significant child ends by itself and is not
  restarted; with ``ALL_SIGNIFICANT`` when the last active one does.

taskvisor adds exponential ``Backoff`` (with seedable jitter and a reset
after a healthy run) on top: the decision carries the delay before the
restart. The core draws its random numbers from ``(seed, draw counter)``,
so the same inputs always give the same decisions.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, TypeVar

import attrs

from taskvisor.actors import Restart, TaskPhase
from taskvisor.actors._model import MAX_SECONDS

from ._errors import invalid

if TYPE_CHECKING:
    from ._spec import DynamicSupervisorSpec, SupervisorSpec

__all__ = [
    "AutoShutdown",
    "Backoff",
    "ChildExit",
    "ChildHistory",
    "ChildInfo",
    "Decision",
    "GiveUp",
    "Ignore",
    "Intensity",
    "Policy",
    "RestartChildren",
    "Shutdown",
    "Strategy",
    "SupervisorState",
    "decide",
    "removed",
    "started",
    "stopped",
]

E = TypeVar("E", bound=enum.Enum)
V = TypeVar("V")


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one of them is to be restarted."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that ended."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are terminated first, then all are started again."""
    REST_FOR_ONE = "rest_for_one"
    """The child that ended and every child started after it."""


class AutoShutdown(enum.Enum):
    """When a supervisor shuts itself down because significant children ended (OTP 24)."""

    NEVER = "never"
    """Never; significant children are not allowed."""
    ANY_SIGNIFICANT = "any_significant"
    """When any significant child ends by itself and is not restarted."""
    ALL_SIGNIFICANT = "all_significant"
    """When the last active significant child ends by itself and is not restarted."""


# --------------------------------------------------------------------------- validation


def to_enum(cls: type[E], field: str, value: E | str) -> E:
    """Return ``value`` as a member of ``cls``, accepting the member's string value.

    Raises:
        InvalidSpec: naming ``field`` and listing the choices, when there is no such member.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, str):  # only a string can name a member: nothing else is compared
        try:
            return cls(value)
        except ValueError:
            pass
    choices = ", ".join(str(m.value) for m in cls)
    raise invalid(field, f"expected one of {choices}", value)


#: The largest count a spec accepts (``max_restarts``, ``max_children``) and
#: the bound of a ``seed`` either side of 0: what a signed 64-bit integer holds.
MAX_COUNT = 2**63 - 1
#: The largest ``Backoff.multiplier``.
MAX_MULTIPLIER = 1000.0


def _text(number: float) -> str:
    return f"{number:,}" if number == int(number) and abs(number) >= 1000 else f"{number:g}"


def seconds(
    field: str, value: float, *, low: float = 0.0, strict: bool = False, high: float = MAX_SECONDS
) -> float:
    """Return ``value`` as a float ``> low`` (``strict``) or ``>= low``, and ``<= high``.

    ``high`` defaults to ``MAX_SECONDS`` (10**8 s, about 3.2 years), a time
    every timer can wait without overflowing; it must be finite. A huge int
    is compared without converting it, so it is out of range, not an
    ``OverflowError``.

    Raises:
        InvalidSpec: naming ``field``, when ``value`` is not an int or float
            (a bool is not a number here), is NaN or infinite, or is out of range.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value > low if strict else value >= low)  # False for NaN
        or not value <= high  # False for NaN and inf
    ):
        op = ">" if strict else ">="
        raise invalid(field, f"expected a finite number {op} {low:g} and <= {_text(high)}", value)
    return float(value)


# attrs converters must be named functions for mypy's attrs plugin.
def _to_within(value: float) -> float:
    return seconds("within", value, strict=True)


def _to_initial(value: float) -> float:
    return seconds("initial", value)


def _to_maximum(value: float) -> float:
    return seconds("maximum", value, strict=True)


def _to_multiplier(value: float) -> float:
    return seconds("multiplier", value, low=1.0, high=MAX_MULTIPLIER)


def _to_jitter(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise invalid("jitter", "expected a number between 0 and 1", value)
    return float(value)


def _to_reset_after(value: float | None) -> float | None:
    return None if value is None else seconds("reset_after", value, strict=True)


def _to_restart(value: Restart | str) -> Restart:
    return to_enum(Restart, "restart", value)


def _to_strategy(value: Strategy | str) -> Strategy:
    return to_enum(Strategy, "strategy", value)


def _to_auto_shutdown(value: AutoShutdown | str) -> AutoShutdown:
    return to_enum(AutoShutdown, "auto_shutdown", value)


def _check_int(low: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
            raise invalid(attribute.name, f"expected an integer >= {low} and <= 2**63 - 1", value)

    return check


def _check_optional_int(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not -MAX_COUNT <= value <= MAX_COUNT
    ):
        raise invalid(
            attribute.name, "expected an integer between -(2**63 - 1) and 2**63 - 1, or None", value
        )


def _check_bool(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise invalid(attribute.name, "expected true or false", value)


def _check_optional(kind: type) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not isinstance(value, kind):
            raise invalid(attribute.name, f"expected a {kind.__name__} or None", value)

    return check


def _check_instance(kind: type) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, kind):
            raise invalid(attribute.name, f"expected a {kind.__name__}", value)

    return check


def _check_id(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise invalid(attribute.name, "expected a non-empty string", value)


# --------------------------------------------------------------------------- policy values


@attrs.frozen
class Intensity:
    """A restart budget: at most ``max_restarts`` restarts within ``within`` seconds.

    OTP's ``intensity`` and ``period``; the defaults (3 within 5 s) are OTP's
    (``within`` is in seconds, a float, OTP's is whole seconds).

    Raises:
        InvalidSpec: when ``max_restarts`` is not an integer from 0 to
            ``MAX_COUNT`` (2**63 - 1), or ``within`` is not a number > 0 and
            at most ``MAX_SECONDS`` (10**8 s, about 3.2 years).
    """

    max_restarts: int = attrs.field(default=3, validator=_check_int(0))
    within: float = attrs.field(default=5.0, converter=_to_within)

    def __str__(self) -> str:
        return f"{self.max_restarts} restarts within {self.within:g}s"


@attrs.frozen
class Backoff:
    """Exponential delay before a restart, with optional jitter and reset.

    The n-th consecutive restart of a child waits
    ``min(maximum, initial * multiplier ** (n - 1))`` seconds, spread by
    ``± jitter`` of itself and clamped to ``[0, maximum]``. A child that ran
    for at least ``reset_after`` seconds before ending starts counting again
    from 1. ``seed`` fixes the jitter's random numbers (``None``: the
    supervisor state's seed, 0 unless the caller chose one).

    Times are in seconds, at most ``MAX_SECONDS`` (10**8 s, about 3.2
    years): no delay can overflow a timer.

    Raises:
        InvalidSpec: when a field is out of range (``0 <= initial <=
            maximum``, ``0 < maximum <= MAX_SECONDS``, ``1 <= multiplier <=
            1000``, ``0 <= jitter <= 1``, ``0 < reset_after <= MAX_SECONDS``
            or None, ``seed`` an integer within ±(2**63 - 1) or None) or not
            a number (NaN, infinity and bools are not numbers here).
    """

    initial: float = attrs.field(default=0.1, converter=_to_initial)
    maximum: float = attrs.field(default=30.0, converter=_to_maximum)
    multiplier: float = attrs.field(default=2.0, converter=_to_multiplier)
    jitter: float = attrs.field(default=0.0, converter=_to_jitter)
    reset_after: float | None = attrs.field(default=None, converter=_to_reset_after)
    seed: int | None = attrs.field(default=None, validator=_check_optional_int)

    def __attrs_post_init__(self) -> None:
        if self.maximum < self.initial:
            raise invalid(
                "maximum", f"expected a number >= initial ({self.initial:g})", self.maximum
            )
        if self.jitter > 1:
            raise invalid("jitter", "expected a number between 0 and 1", self.jitter)

    def base(self, failures: int) -> float:
        """The delay before the ``failures``-th consecutive restart, without jitter."""
        if failures < 1:
            raise ValueError(f"failures: expected an integer >= 1, got {failures!r}")
        if self.initial == 0.0:
            return 0.0
        try:
            raw = self.initial * self.multiplier ** (failures - 1)
        except OverflowError:
            return self.maximum
        return min(self.maximum, raw)

    def delay(self, failures: int, rand: float) -> float:
        """Return the delay in seconds before a restart.

        Args:
            failures: how many restarts in a row this is (1 for the first).
            rand: a uniform random number in ``[0, 1)``; ``0.5`` means no jitter.

        Raises:
            ValueError: when ``failures`` is below 1.
        """
        if failures < 1:
            raise ValueError(f"failures: expected an integer >= 1, got {failures!r}")
        maximum, initial = self.maximum, self.initial
        try:
            base = initial * self.multiplier ** (failures - 1) if initial else 0.0
        except OverflowError:
            base = maximum
        base = min(base, maximum)
        jitter = self.jitter
        if not jitter:
            return base
        spread = base * (1.0 + jitter * (2.0 * rand - 1.0))
        return maximum if spread > maximum else (spread if spread > 0.0 else 0.0)


def _check_significant(inst: ChildInfo, _attribute: attrs.Attribute[Any], value: Any) -> None:
    _check_bool(inst, _attribute, value)
    if value and inst.restart is Restart.PERMANENT:
        raise invalid(
            "significant",
            "a permanent child cannot be significant (use transient or temporary)",
            value,
        )


@attrs.frozen
class ChildInfo:
    """What the policy core needs to know about one child.

    Raises:
        InvalidSpec: when ``id`` is empty, ``restart`` is unknown, or a
            ``PERMANENT`` child is marked significant (OTP rejects that).
    """

    id: str = attrs.field(validator=_check_id)
    restart: Restart = attrs.field(default=Restart.PERMANENT, converter=_to_restart)
    significant: bool = attrs.field(default=False, validator=_check_significant)

    @classmethod
    def of(cls, spec: Any) -> ChildInfo:
        """Return the info of a child spec (a ``TaskSpec`` or a supervisor spec)."""
        return cls(spec.name, spec.restart, spec.significant)


@attrs.frozen
class Policy:
    """Everything that decides how a supervisor reacts when a child ends.

    ``dynamic`` marks a dynamic supervisor (OTP's ``simple_one_for_one``),
    which forgets every child that ends without being restarted.

    Raises:
        InvalidSpec: when a field has the wrong type or value.
    """

    strategy: Strategy = attrs.field(default=Strategy.ONE_FOR_ONE, converter=_to_strategy)
    intensity: Intensity = attrs.field(factory=Intensity, validator=_check_instance(Intensity))
    backoff: Backoff | None = attrs.field(default=None, validator=_check_optional(Backoff))
    child_intensity: Intensity | None = attrs.field(
        default=None, validator=_check_optional(Intensity)
    )
    auto_shutdown: AutoShutdown = attrs.field(
        default=AutoShutdown.NEVER, converter=_to_auto_shutdown
    )
    dynamic: bool = attrs.field(default=False, validator=_check_bool)

    @classmethod
    def of(cls, spec: SupervisorSpec | DynamicSupervisorSpec) -> Policy:
        """Return the policy of a supervisor spec."""
        from ._spec import SupervisorSpec

        if isinstance(spec, SupervisorSpec):
            strategy, dynamic = spec.strategy, False
        else:
            strategy, dynamic = Strategy.ONE_FOR_ONE, True
        return cls(
            strategy,
            spec.intensity,
            spec.backoff,
            spec.child_intensity,
            spec.auto_shutdown,
            dynamic,
        )


# --------------------------------------------------------------------------- persistent map

_EMPTY_LEAF: dict[str, Any] = {}  # shared and never changed, like every part of a PMap
_new_object = object.__new__
_ABSENT: Any = object()


class PMap(Mapping[str, V]):
    """An immutable mapping of strings whose updates copy a small part of it.

    Keys are spread over 32 x 32 small dicts by hash; ``set`` and
    ``remove`` copy one of them and two 32-slot lists, so a supervisor with
    thousands of children updates one child's history in about a
    microsecond, not in time proportional to the number of children. No
    part of a map is changed once the map is made: versions share them.
    """

    __slots__ = ("_len", "_root")

    # Lists rather than tuples because a list copies in one step; never changed.
    _root: list[list[dict[str, V]]]
    _len: int

    def __init__(self, items: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        root: list[list[dict[str, V]]] = [[_EMPTY_LEAF] * 32 for _ in range(32)]
        size = 0
        for key, value in pairs:
            h = hash(key)
            node = root[h & 31]
            j = (h >> 5) & 31
            leaf = node[j]
            if leaf is _EMPTY_LEAF:
                leaf = node[j] = {}
            size += key not in leaf
            leaf[key] = value
        self._root = root
        self._len = size

    @classmethod
    def _make(cls, root: list[list[dict[str, V]]], size: int) -> PMap[V]:
        new = _new_object(cls)
        new._root = root
        new._len = size
        return new

    def __getitem__(self, key: str) -> V:
        h = hash(key)
        return self._root[h & 31][(h >> 5) & 31][key]

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default``."""
        h = hash(key)
        return self._root[h & 31][(h >> 5) & 31].get(key, default)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        h = hash(key)
        return key in self._root[h & 31][(h >> 5) & 31]

    def __iter__(self) -> Iterator[str]:
        for node in self._root:
            for leaf in node:
                yield from leaf

    def __len__(self) -> int:
        return self._len

    def set(self, key: str, value: V) -> PMap[V]:
        """Return a copy with ``key`` set to ``value``."""
        h = hash(key)
        i, j = h & 31, (h >> 5) & 31
        return self._set_at(i, j, self._root[i][j], key, value)

    def _set_at(self, i: int, j: int, leaf: dict[str, V], key: str, value: V) -> PMap[V]:
        """``set(key, value)``, given where ``key`` goes: ``leaf`` is ``_root[i][j]``.

        Copies the leaf and the two lists on the way to it; shares the rest.
        """
        new_leaf = leaf.copy()
        new_leaf[key] = value
        node = self._root[i]
        new_node = node.copy()
        new_node[j] = new_leaf
        new_root = self._root.copy()
        new_root[i] = new_node
        new = _new_object(PMap)
        new._root = new_root
        new._len = self._len + (len(new_leaf) - len(leaf))
        return new

    def update(self, changes: Mapping[str, V], removed: Iterable[str] = ()) -> PMap[V]:
        """Return a copy with ``changes`` set and the keys ``removed`` deleted.

        Each part of the map that changes is copied once, however many keys
        land in it.
        """
        root = self._root
        leaves: dict[tuple[int, int], dict[str, V]] = {}
        size = self._len
        for key, value in changes.items():
            h = hash(key)
            slot = (h & 31, (h >> 5) & 31)
            leaf = leaves.get(slot)
            if leaf is None:
                leaf = leaves[slot] = root[slot[0]][slot[1]].copy()
            size += key not in leaf
            leaf[key] = value
        for key in removed:
            h = hash(key)
            slot = (h & 31, (h >> 5) & 31)
            leaf = leaves.get(slot)
            if leaf is None:
                if key not in root[slot[0]][slot[1]]:
                    continue
                leaf = leaves[slot] = root[slot[0]][slot[1]].copy()
            size -= leaf.pop(key, _ABSENT) is not _ABSENT
        if not leaves:
            return self
        new_root = root.copy()
        copied: set[int] = set()
        for (i, j), leaf in leaves.items():
            if i not in copied:
                copied.add(i)
                new_root[i] = new_root[i].copy()
            new_root[i][j] = leaf
        return PMap._make(new_root, size)

    def remove(self, key: str) -> PMap[V]:
        """Return a copy without ``key`` (the same map when it is absent)."""
        h = hash(key)
        i, j = h & 31, (h >> 5) & 31
        root = self._root
        node = root[i]
        leaf = node[j]
        if key not in leaf:
            return self
        new_leaf = leaf.copy()
        del new_leaf[key]
        new_node = node.copy()
        new_node[j] = new_leaf
        new_root = root.copy()
        new_root[i] = new_node
        return PMap._make(new_root, self._len - 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return len(self) == len(other) and dict(self.items()) == dict(other.items())

    def __hash__(self) -> int:
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        return f"PMap({dict(sorted(self.items()))!r})"


# --------------------------------------------------------------------------- state


class ChildHistory(NamedTuple):
    """What a supervisor remembers about one child."""

    started_at: float
    """When the child was last started (or is due to be restarted)."""
    failures: int = 0
    """Consecutive restarts so far, for the backoff (reset after a healthy run)."""
    restarts: tuple[float, ...] = ()
    """This child's restart times inside its own window (with ``child_intensity``)."""
    ended: bool = False
    """The child ended and will not be restarted (OTP: its pid is ``undefined``)."""


class SupervisorState(NamedTuple):
    """What a supervisor remembers between decisions; change it only through this module.

    A named tuple, like ``ChildHistory``: ``decide`` makes one per decision,
    and a tuple is quicker to make than a frozen attrs instance.

    Attributes:
        restarts: times of the restarts inside the intensity window, oldest first.
        history: one ``ChildHistory`` per child that has one.
        created_at: when the supervisor started its children.
        draws: how many random numbers the backoff jitter has drawn.
        seed: the seed for jitter when ``Backoff.seed`` is None.
        gave_up: the supervisor gave up (its restart budget ran out).
        shut_down: the supervisor shut itself down (``AutoShutdown``).
    """

    restarts: tuple[float, ...]
    history: PMap[ChildHistory]
    created_at: float
    draws: int = 0
    seed: int = 0
    gave_up: bool = False
    shut_down: bool = False

    @classmethod
    def initial(
        cls, children: Sequence[ChildInfo], now: float, *, seed: int = 0
    ) -> SupervisorState:
        """Return the state of a supervisor that started ``children`` at ``now``."""
        record = ChildHistory(now)
        return cls((), PMap((c.id, record) for c in children), now, 0, seed)

    @property
    def done(self) -> bool:
        """Whether the supervisor has stopped deciding (it gave up or shut down)."""
        return self.gave_up or self.shut_down

    @property
    def ended(self) -> frozenset[str]:
        """Children that ended and will not be restarted."""
        return frozenset(k for k, h in self.history.items() if h.ended)

    @property
    def failures(self) -> dict[str, int]:
        """Consecutive restart counts per child (only children with at least one)."""
        return {k: h.failures for k, h in self.history.items() if h.failures}

    @property
    def started_at(self) -> dict[str, float]:
        """When each child was last started."""
        return {k: h.started_at for k, h in self.history.items()}

    @property
    def child_restarts(self) -> dict[str, tuple[float, ...]]:
        """Restart times per child inside the per-child window (with ``child_intensity``)."""
        return {k: h.restarts for k, h in self.history.items() if h.restarts}

    def is_active(self, child_id: str) -> bool:
        """Whether the child is running or due to be restarted (has not ended for good)."""
        record = self.history.get(child_id)
        return record is None or not record.ended


def started(state: SupervisorState, child_id: str, now: float) -> SupervisorState:
    """Return ``state`` after the child was started explicitly (start or restart on request).

    Its consecutive-restart count and per-child window are kept.
    """
    old: ChildHistory | None = state.history.get(child_id)
    record = ChildHistory(now) if old is None else old._replace(started_at=now, ended=False)
    return state._replace(history=state.history.set(child_id, record))


def stopped(state: SupervisorState, child_id: str) -> SupervisorState:
    """Return ``state`` after the child was terminated on request (it stays defined)."""
    old: ChildHistory | None = state.history.get(child_id)
    record = ChildHistory(state.created_at, ended=True) if old is None else old._replace(ended=True)
    return state._replace(history=state.history.set(child_id, record))


def removed(state: SupervisorState, child_id: str) -> SupervisorState:
    """Return ``state`` without anything about the child (its spec was deleted)."""
    return state._replace(history=state.history.remove(child_id))


# --------------------------------------------------------------------------- events and decisions


_ENDS = frozenset(p for p in TaskPhase if p.is_terminal)
_END_VALUES = frozenset(p.value for p in _ENDS)


def _to_phase(value: TaskPhase | str) -> TaskPhase:
    # The common case first and fast (hashing an enum member runs Python code; a str does not).
    if type(value) is TaskPhase and value._value_ in _END_VALUES:
        return value
    phase = to_enum(TaskPhase, "phase", value)
    if phase not in _ENDS:
        raise invalid(
            "phase",
            "expected a terminal phase (succeeded, failed, timeout, cancelled, exhausted)",
            phase.value,
        )
    return phase


@attrs.frozen
class ChildExit:
    """The event: a child ended.

    ``SUCCEEDED`` is a normal end, ``CANCELLED`` a normal shutdown, and
    ``FAILED``, ``TIMEOUT`` and ``EXHAUSTED`` (a child supervisor that gave
    up) are abnormal ends.

    Raises:
        InvalidSpec: when ``phase`` is not a terminal phase.
    """

    child: str = attrs.field(validator=_check_id)
    phase: TaskPhase = attrs.field(converter=_to_phase)
    error: str | None = None


# The decisions are named tuples, like the state: ``decide`` makes one each
# time, and a tuple is quicker to make than a frozen attrs instance.


class Ignore(NamedTuple):
    """Do not restart the child. ``remove``: delete its spec (a temporary child)."""

    child: str
    remove: bool = False


class RestartChildren(NamedTuple):
    """Restart children after ``delay`` seconds.

    Stop ``terminate`` first (reverse start order), delete the specs of
    ``drop`` (temporary siblings), then start ``restart`` in start order.
    The core does not know which children are waiting for a delayed
    restart: for such a child in ``terminate`` (or ``GiveUp.terminate``),
    cancel the pending restart instead.
    """

    child: str
    terminate: tuple[str, ...]
    restart: tuple[str, ...]
    drop: tuple[str, ...] = ()
    delay: float = 0.0


class GiveUp(NamedTuple):
    """The restart budget is exhausted: stop ``terminate`` (reverse start order) and exit.

    The supervisor's parent sees this as its child ending ``EXHAUSTED``.
    """

    child: str
    reason: str
    terminate: tuple[str, ...]


class Shutdown(NamedTuple):
    """Automatic shutdown fired: stop ``terminate`` (reverse start order) and end normally."""

    child: str
    terminate: tuple[str, ...]


Decision: TypeAlias = Ignore | RestartChildren | GiveUp | Shutdown


# --------------------------------------------------------------------------- decide

_ABNORMAL = frozenset({TaskPhase.FAILED, TaskPhase.TIMEOUT, TaskPhase.EXHAUSTED})


def _index(children: Sequence[ChildInfo]) -> dict[str, int]:
    """Index ``children`` by id.

    Raises:
        InvalidSpec: when two children share an id.
    """
    index = {c.id: i for i, c in enumerate(children)}
    if len(index) != len(children):
        ids = [c.id for c in children]
        i = next(i for i, cid in enumerate(ids) if cid in ids[:i])
        raise invalid(f"children[{i}].id", "duplicate child id", ids[i])
    return index


# The last index made, by the identity of the children it was made from (kept
# alive here, so the identity cannot be reused): a supervisor passes the same
# tuple while its children do not change, and a decision then costs no index.
_LAST_INDEX: list[tuple[Sequence[ChildInfo], dict[str, int]]] = []


def _positions(children: Sequence[ChildInfo]) -> dict[str, int]:
    last = _LAST_INDEX[0] if _LAST_INDEX else None
    if last is not None and last[0] is children and type(children) is tuple:
        return last[1]
    index = _index(children)
    _LAST_INDEX[:] = [(children, index)]
    return index


# Jitter draws its uniform numbers from blocks of a Mersenne Twister seeded
# with (seed, block number): number ``counter`` of ``seed`` is always the same.
_BLOCK_BITS = 9
_BLOCK_MASK = (1 << _BLOCK_BITS) - 1
_BLOCKS: dict[tuple[int, int], list[float]] = {}


def _uniform(seed: int, counter: int) -> float:
    """The ``counter``-th uniform number in ``[0, 1)`` of ``seed``."""
    key = (seed, counter >> _BLOCK_BITS)
    block = _BLOCKS.get(key)
    if block is None:
        rand = random.Random(f"taskvisor-jitter:{seed}:{key[1]}").random
        block = [rand() for _ in range(_BLOCK_MASK + 1)]
        if len(_BLOCKS) >= 64:
            _BLOCKS.clear()  # one step, safe with supervisors on other threads
        _BLOCKS[key] = block
    return block[counter & _BLOCK_MASK]


def _window(restarts: tuple[float, ...], now: float, within: float) -> tuple[float, ...]:
    """Keep the restarts ``r >= now - within`` and add ``now`` (OTP's add_restart)."""
    # Concatenation copies once; (*restarts, now) builds a list first (1.7x slower at 500).
    threshold = now - within
    if not restarts or restarts[0] >= threshold:  # nothing falls out of the window
        return restarts + (now,)  # noqa: RUF005 - one copy, see above
    cut, size = 1, len(restarts)
    while cut < size and restarts[cut] < threshold:
        cut += 1
    return restarts[cut:] + (now,)  # noqa: RUF005 - one copy, see above


def _others_running(
    children: Sequence[ChildInfo], history: PMap[ChildHistory], child: str
) -> tuple[str, ...]:
    """Every other child that has not ended, in reverse start order."""
    out = []
    for c in reversed(children):
        if c.id != child:
            h = history.get(c.id)
            if h is None or not h.ended:
                out.append(c.id)
    return tuple(out)


def decide(
    policy: Policy,
    children: Sequence[ChildInfo],
    state: SupervisorState,
    event: ChildExit,
    now: float,
) -> tuple[SupervisorState, Decision]:
    """Decide what a supervisor does when one of its children ends.

    Args:
        policy: the supervisor's policy.
        children: the currently defined children, in start order. Pass the
            same tuple again while it does not change: its index is kept.
        state: the state returned by the previous decision (or ``initial``).
        event: which child ended, and how.
        now: the time of the event, in monotonic seconds.

    Returns:
        The new state and the decision. An event about a child that is not
        in ``children``, or that has already ended, and any event after the
        supervisor gave up or shut down, is ignored (state unchanged). Do
        not report the exits of children that the supervisor itself
        terminated (as part of a decision or on request).

    Raises:
        InvalidSpec: when two children share an id.
    """
    child = event.child
    pos = _positions(children).get(child)
    if pos is None or state.done:
        return state, Ignore(child)
    record: ChildHistory | None = state.history.get(child)
    if record is not None and record.ended:
        return state, Ignore(child)
    info = children[pos]
    if info.restart is Restart.TEMPORARY or (
        info.restart is Restart.TRANSIENT and event.phase not in _ABNORMAL
    ):
        return _not_restarted(policy, children, state, info, record)

    intensity = policy.intensity
    restarts = _window(state.restarts, now, intensity.within)
    if len(restarts) > intensity.max_restarts:
        reason = (
            f"reached max restart intensity: more than {intensity.max_restarts} restart(s) "
            f"within {intensity.within:g}s"
        ) + _one_shot_hint(info, event)
        return _give_up(children, state, record, restarts, reason, child=child)

    started_at, failures, own, _ = record or ChildHistory(state.created_at)
    limit = policy.child_intensity
    if limit is not None:
        own = _window(own, now, limit.within)
        if len(own) > limit.max_restarts:
            reason = (
                f"child {child!r} reached its own restart limit: more than "
                f"{limit.max_restarts} restart(s) within {limit.within:g}s"
            ) + _one_shot_hint(info, event)
            return _give_up(children, state, record, restarts, reason, child=child)

    delay, draws = 0.0, state.draws
    backoff = policy.backoff
    if backoff is not None:
        if backoff.reset_after is not None and now - started_at >= backoff.reset_after:
            failures = 0
        failures += 1
        rand = 0.5  # no jitter
        if backoff.jitter:
            rand = _uniform(state.seed if backoff.seed is None else backoff.seed, draws)
            draws += 1
        delay = backoff.delay(failures, rand)
        started_at = now + delay
    record = ChildHistory(started_at, failures, own, False)

    if policy.strategy is Strategy.ONE_FOR_ONE or len(children) == 1:
        history = state.history.set(child, record)
        decision = RestartChildren(child, (), (child,), (), delay)
    else:
        group = children if policy.strategy is Strategy.ONE_FOR_ALL else children[pos:]
        history, decision = _restart_group(
            group, state.history, record, child=child, delay=delay, start_at=now + delay
        )
    new_state = SupervisorState(
        restarts, history, state.created_at, draws, state.seed, state.gave_up, state.shut_down
    )
    return new_state, decision


def _restart_group(
    group: Sequence[ChildInfo],
    history: PMap[ChildHistory],
    record: ChildHistory,
    *,
    child: str,
    delay: float,
    start_at: float,
) -> tuple[PMap[ChildHistory], RestartChildren]:
    """Restart ``child`` with the others of ``group``; temporary ones are dropped instead.

    ``record`` is the child's updated history; ``started_at`` of every
    restarted child becomes ``start_at``, the time it is due to start.
    """
    terminate: list[str] = []
    restart_ids: list[str] = []
    drop: list[str] = []
    changes: dict[str, ChildHistory] = {}
    for c in group:
        cid = c.id
        if cid == child:
            restart_ids.append(cid)
            changes[cid] = record._replace(started_at=start_at)
            continue
        old: ChildHistory | None = history.get(cid)
        if old is None or not old.ended:
            terminate.append(cid)
        if c.restart is Restart.TEMPORARY:
            drop.append(cid)
        else:
            restart_ids.append(cid)
            changes[cid] = (
                ChildHistory(start_at)
                if old is None
                else old._replace(started_at=start_at, ended=False)
            )
    terminate.reverse()
    decision = RestartChildren(child, tuple(terminate), tuple(restart_ids), tuple(drop), delay)
    return history.update(changes, drop), decision


def _not_restarted(
    policy: Policy,
    children: Sequence[ChildInfo],
    state: SupervisorState,
    info: ChildInfo,
    record: ChildHistory | None,
) -> tuple[SupervisorState, Decision]:
    child = info.id
    remove = info.restart is Restart.TEMPORARY or policy.dynamic
    if remove:
        history = state.history.remove(child)
    else:
        base = record if record is not None else ChildHistory(state.created_at)
        history = state.history.set(child, base._replace(ended=True))
    auto = policy.auto_shutdown
    shut_down = False
    decision: Decision = Ignore(child, remove)
    if info.significant and auto is not AutoShutdown.NEVER:
        shut_down = auto is AutoShutdown.ANY_SIGNIFICANT or not any(
            c.significant and c.id != child and _running(history, c.id) for c in children
        )
        if shut_down:
            decision = Shutdown(child, _others_running(children, history, child))
    new_state = SupervisorState(
        state.restarts, history, state.created_at, state.draws, state.seed, False, shut_down
    )
    return new_state, decision


def _running(history: PMap[ChildHistory], child_id: str) -> bool:
    record = history.get(child_id)
    return record is None or not record.ended


def _one_shot_hint(info: ChildInfo, event: ChildExit) -> str:
    """The fix for a PERMANENT child whose work returns normally: it is a job, not a service."""
    if info.restart is not Restart.PERMANENT or event.phase is not TaskPhase.SUCCEEDED:
        return ""
    return (
        f"; child {info.id!r} is PERMANENT and its work returned normally: a job meant to "
        "finish should be restart='transient' (restarted only after a failure) or "
        "'temporary' (never restarted)"
    )


def _give_up(
    children: Sequence[ChildInfo],
    state: SupervisorState,
    record: ChildHistory | None,
    restarts: tuple[float, ...],
    reason: str,
    *,
    child: str,
) -> tuple[SupervisorState, Decision]:
    if record is None:
        record = ChildHistory(state.created_at)
    history = state.history.set(child, record._replace(ended=True))
    terminate = _others_running(children, history, child)
    new_state = SupervisorState(
        restarts, history, state.created_at, state.draws, state.seed, True, False
    )
    return new_state, GiveUp(child, reason, terminate)
