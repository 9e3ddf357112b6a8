"""Any input to ``spec_from_data`` is accepted or refused with a short ``InvalidSpec``.

Issue 8, fault 17: 10,000 random malformed tree configurations raised
RecursionError, ValueError, OverflowError and TypeError from inside, or an
``InvalidSpec`` whose whole message was "RecursionError", or one of 200 KB.
These tests feed random data of every shape (Hypothesis), deep nesting of
every kind, and mutations of a valid tree (a seeded random), and hold each
outcome to the contract: a spec that writes back to the same data, or an
``InvalidSpec`` of at most 1,000 characters that starts with the path of
the problem.
"""

from __future__ import annotations

import copy
import json
import pickle
import random
import re
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.strategies import names, wild_data, wild_keys, wild_scalars

from taskvisor.actors import InvalidSpec, TaskSpec
from taskvisor.actors._errors import MAX_MESSAGE
from taskvisor.supervision import (
    Backoff,
    ChildInfo,
    DynamicSupervisorSpec,
    Failure,
    Intensity,
    Policy,
    SupervisorSpec,
    spec_from_data,
    spec_to_data,
)
from taskvisor.supervision._spec import MAX_DATA_DEPTH, MAX_DEPTH, spec_problems

#: A message starts with where the problem is: "(top level)" or a field path.
_PATH = re.compile(r"^(\(top level\)|[a-z_]+(\[\d+\])*(\.[a-z_]+(\[\d+\])*)*): \S")


def check(data: Any) -> str | None:
    """Build ``data``; return None when accepted, the message when refused.

    Fails the test on any other exception, and on a refusal that breaks the
    message contract or an acceptance that does not round-trip.
    """
    try:
        spec = spec_from_data(data)
    except InvalidSpec as exc:
        refused = exc
    else:
        assert isinstance(spec, (SupervisorSpec, DynamicSupervisorSpec))
        assert spec_problems(data) == []
        written = spec_to_data(spec)
        assert spec_to_data(spec_from_data(written)) == written
        return None
    message = str(refused)
    assert len(message) <= MAX_MESSAGE, len(message)
    assert _PATH.match(message), message[:200]
    # The net in _build catches what no check foresaw: it must never be needed.
    assert "cannot build a" not in message, message[:200]
    assert "Error" not in message.partition(": ")[2][:40], message[:200]
    field = refused.field
    assert field is None or message.startswith(field), (field, message[:200])
    problems = spec_problems(data)  # what `taskvisor check` lists: never empty when refused
    assert problems
    assert all(len(str(p)) <= MAX_MESSAGE for p in problems)
    return message


# --------------------------------------------------------------------------- random data


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wild_data)
def test_random_json_like_data_is_accepted_or_refused_with_a_short_message(data: Any) -> None:
    check(data)


_name_ish = st.one_of(names().filter(lambda n: "/" not in n), wild_scalars)
_task_like = st.fixed_dictionaries(
    {"name": _name_ish, "target": st.one_of(st.just("app.tasks:work"), wild_scalars)},
    optional={
        field: st.one_of(wild_scalars, wild_data)
        for field in (
            "kind",
            "args",
            "kwargs",
            "command",
            "env",
            "cwd",
            "shell",
            "restart",
            "timeout",
            "shutdown",
            "significant",
            "labels",
        )
    },
)


def _fields(keys: list[str]) -> st.SearchStrategy[dict[Any, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(keys), wild_keys), wild_scalars, max_size=4)


def _supervisor_like(kids: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    return st.fixed_dictionaries(
        {"name": _name_ish},
        optional={
            "children": st.one_of(st.lists(kids, max_size=3), wild_scalars),
            "template": kids,
            "strategy": wild_scalars,
            "intensity": st.one_of(_fields(["max_restarts", "within"]), wild_data),
            "child_intensity": st.one_of(_fields(["max_restarts", "within"]), wild_data),
            "backoff": st.one_of(
                _fields(["initial", "maximum", "multiplier", "jitter", "reset_after", "seed"]),
                wild_data,
            ),
            "max_children": wild_scalars,
            "auto_shutdown": wild_scalars,
            "restart": wild_scalars,
            "shutdown": wild_scalars,
            "significant": wild_scalars,
            "labels": wild_data,
            True: wild_data,  # YAML reads ``on:`` as True
        },
    )


#: Data shaped like a tree config, every value possibly wrong.
spec_like = st.recursive(_task_like, _supervisor_like, max_leaves=8)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_supervisor_like(spec_like))
def test_random_spec_shaped_data_is_accepted_or_refused_with_a_short_message(
    data: dict[Any, Any],
) -> None:
    check(data)


def _nest(kind: str, depth: int) -> Any:
    """A tree with ``depth`` levels of supervisors, or a task whose args or kwargs nest so deep."""
    task: dict[str, Any] = {"name": "t", "target": "app.tasks:work"}
    if kind in ("children", "template"):
        data = task
        for i in range(depth):
            data = {"name": f"s{i}", "children": [data]}
            if kind == "template":
                data = {"name": f"s{i}", "template": data["children"][0]}
        return data
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "args" else {"k": value}
    return {"name": "app", "children": [{**task, kind: value}]}


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["children", "template", "args", "kwargs"]),
    st.one_of(st.integers(1, 2 * MAX_DATA_DEPTH), st.sampled_from([3000, 20_000])),
)
def test_nesting_of_any_kind_and_depth_is_accepted_or_refused(kind: str, depth: int) -> None:
    message = check(_nest(kind, depth))
    limit = MAX_DEPTH if kind in ("children", "template") else MAX_DATA_DEPTH
    assert (message is None) == (depth <= limit), message
    if message is not None:
        assert "nest" in message


# --------------------------------------------------------------------------- constructors

_value = st.one_of(wild_scalars, wild_data)
_task = st.just(TaskSpec(name="t", target="app.tasks:work"))
#: Each public constructor of a spec or policy value, and its required fields.
CONSTRUCTORS: dict[Any, list[str]] = {
    TaskSpec: ["name"],
    SupervisorSpec: ["name"],
    DynamicSupervisorSpec: ["name", "template"],
    Intensity: [],
    Backoff: [],
    Policy: [],
    ChildInfo: ["id"],
    Failure: ["supervisor", "child", "phase"],
}


@st.composite
def _calls(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    cls = draw(st.sampled_from(list(CONSTRUCTORS)))
    required = CONSTRUCTORS[cls]
    optional = [a.name for a in attrs.fields(cls) if a.init and a.name not in required]
    values = st.one_of(_value, _task, st.builds(Intensity), st.builds(Backoff), st.lists(_task))
    kwargs = {field: draw(values) for field in required}
    kwargs.update(draw(st.dictionaries(st.sampled_from(optional), values, max_size=4)))
    return cls, kwargs


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_calls())
def test_every_public_constructor_accepts_or_refuses_any_field_value(
    call: tuple[Any, dict[str, Any]],
) -> None:
    cls, kwargs = call
    try:
        cls(**kwargs)
    except InvalidSpec as exc:
        refused = exc
    else:
        return
    message = str(refused)
    assert len(message) <= MAX_MESSAGE
    assert _PATH.match(message), message[:200]
    assert "Error" not in message.partition(": ")[2][:40], message[:200]


# --------------------------------------------------------------------------- mutations


def valid_tree() -> dict[str, Any]:
    """A config using every kind of node and field, valid as it is."""
    return {
        "name": "app",
        "strategy": "rest_for_one",
        "intensity": {"max_restarts": 5, "within": 30},
        "child_intensity": {"max_restarts": 2, "within": 10.0},
        "backoff": {
            "initial": 0.5,
            "maximum": 10,
            "multiplier": 2,
            "jitter": 0.1,
            "reset_after": 60,
            "seed": 4,
        },
        "auto_shutdown": "any_significant",
        "labels": {"team": "core"},
        "children": [
            {"name": "db", "target": "app.db:run", "restart": "permanent", "shutdown": "brutal"},
            {
                "name": "web",
                "strategy": "one_for_all",
                "restart": "transient",
                "significant": True,
                "shutdown": 10,
                "children": [
                    {
                        "name": "server",
                        "kind": "subprocess",
                        "command": ["python", "-m", "http.server"],
                        "env": {"PORT": "8000"},
                        "cwd": "/srv",
                        "timeout": 3600,
                    },
                    {
                        "name": "cache",
                        "target": "app.cache:run",
                        "args": [1, "two", [3.0, None]],
                        "kwargs": {"size": 10, "opts": {"lru": True}},
                        "restart": "temporary",
                        "timeout": 3.0,
                        "shutdown": 0.5,
                    },
                ],
            },
            {
                "name": "pool",
                "max_children": 10,
                "shutdown": "infinity",
                "template": {"name": "worker", "target": "app.work:run", "restart": "transient"},
            },
        ],
    }


def _deep_children() -> dict[str, Any]:
    data: dict[str, Any] = {"name": "leaf", "target": "a.b:c"}
    for i in range(5000):
        data = {"name": f"s{i}", "children": [data]}
    return data


def _deep_list() -> list[Any]:
    value: list[Any] = []
    for _ in range(5000):
        value = [value]
    return value


def _self_referring() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


#: Wrong (or surprising) values a mutation puts in place of a field.
WRONG: list[Any] = [
    10**5000,
    -(10**5000),
    10**400,
    2**63,
    -1,
    -0.5,
    0,
    1e10,
    1e8,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
    False,
    None,
    "",
    "x" * 200_000,
    "always",
    "a/b",
    "brutal",
    "infinity",
    "1s",
    [],
    [1, "a"],
    {},
    {True: 1, "x": 2},
    {1: 2, None: 3},
    {"name": "n"},
    {"name": "n", "children": []},
    {"name": "n", "template": {"name": "t", "target": "a.b:c"}},
    {"max_restarts": 10**5000, "within": 10**400},
    ("a", "b"),
    b"bytes",
    object(),
    1 + 2j,
]
#: Made once, and never walked into by a mutation (so never changed by one).
MADE: list[Any] = [_deep_children(), _deep_list(), _self_referring()]
_MADE_IDS = {id(value) for value in MADE}


def _containers(data: Any) -> list[Any]:
    """The dicts and lists of ``data`` down to 12 levels (a mutation may have nested it deeply)."""
    out: list[Any] = []
    seen: set[int] = set()
    todo = [(data, 0)]
    while todo:
        item, level = todo.pop()
        if not isinstance(item, (dict, list)) or level > 12:
            continue
        if id(item) in seen or id(item) in _MADE_IDS:
            continue
        seen.add(id(item))
        out.append(item)
        todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return out


def mutate(rnd: random.Random, data: dict[str, Any]) -> None:
    """Change one random place of ``data``: replace, add or delete a field or item."""
    place = rnd.choice(_containers(data))
    value = rnd.choice(MADE) if rnd.random() < 0.05 else copy.deepcopy(rnd.choice(WRONG))
    if isinstance(place, dict):
        action = rnd.random()
        if action < 0.7 and place:
            place[rnd.choice(list(place))] = value
        elif action < 0.85 and place:
            del place[rnd.choice(list(place))]
        else:
            key = rnd.choice(["on", True, 1, None, 2.5, "name", "children", "template", ("t",)])
            place[key] = value
    elif place:
        place[rnd.randrange(len(place))] = value
    else:
        place.append(value)


def test_two_thousand_mutations_of_a_valid_tree() -> None:
    """The issue's "random malformed configurations", mirrored with a seeded random."""
    frozen = pickle.dumps(valid_tree())
    assert check(pickle.loads(frozen)) is None
    rnd = random.Random(8)
    refused = 0
    for _ in range(2000):
        data = pickle.loads(frozen)
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):
            mutate(rnd, data)
        refused += check(data) is not None
    assert refused > 1000  # most mutations break the tree: the checks above did run on them


def test_a_valid_tree_round_trips_through_json() -> None:
    data = valid_tree()
    spec = spec_from_data(data)
    assert spec_from_data(json.loads(json.dumps(spec_to_data(spec)))) == spec
