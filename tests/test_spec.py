"""Supervisor specs: validation at construction, and the config-data round trip."""

from __future__ import annotations

import json
import pickle
import tomllib
from typing import Any

import pytest

from taskvisor.actors import InvalidSpec, Restart, TaskPhase, TaskSpec
from taskvisor.actors._model import MAX_SECONDS
from taskvisor.supervision import (
    AutoShutdown,
    Backoff,
    ChildInfo,
    ChildStartError,
    DynamicSupervisorSpec,
    Failure,
    Intensity,
    Policy,
    Strategy,
    Supervisor,
    SupervisorExhausted,
    SupervisorSpec,
    dynamic_supervisor_spec_from_data,
    spec_from_data,
    spec_to_data,
    supervisor_spec_from_data,
)
from taskvisor.supervision._spec import MAX_DATA_DEPTH, MAX_DEPTH, spec_problems


def task(name: str, **fields: Any) -> TaskSpec:
    return TaskSpec(name=name, target="app.tasks:work", **fields)


def tree() -> SupervisorSpec:
    return SupervisorSpec(
        "app",
        strategy="rest_for_one",
        intensity=Intensity(5, 30.0),
        backoff=Backoff(initial=0.5, maximum=10.0, jitter=0.1, reset_after=60.0, seed=4),
        child_intensity=Intensity(2, 10.0),
        auto_shutdown="any_significant",
        labels={"team": "core"},
        children=[
            task("db", restart="permanent", shutdown="brutal"),
            SupervisorSpec(
                "web",
                strategy=Strategy.ONE_FOR_ALL,
                restart="transient",
                significant=True,
                shutdown=10,
                children=[
                    TaskSpec(
                        name="server", kind="subprocess", command=["python", "-m", "http.server"]
                    ),
                    task("cache", restart=Restart.TEMPORARY, timeout=3.0),
                ],
            ),
            DynamicSupervisorSpec(
                "pool",
                template=task("worker", restart="transient"),
                max_children=10,
                restart="permanent",
                shutdown="brutal",
            ),
        ],
    )


# --------------------------------------------------------------------------- building


def test_defaults_and_conversions() -> None:
    spec = SupervisorSpec("app", children=[task("a")])
    assert spec.strategy is Strategy.ONE_FOR_ONE
    assert spec.intensity == Intensity(3, 5.0)
    assert spec.auto_shutdown is AutoShutdown.NEVER
    assert spec.restart is Restart.PERMANENT
    assert spec.shutdown == "infinity"
    assert isinstance(spec.children, tuple)
    assert spec.child_infos() == (ChildInfo("a", Restart.PERMANENT, False),)
    assert spec.child("a") == task("a")
    with pytest.raises(KeyError):
        spec.child("b")
    assert SupervisorSpec("app", shutdown=3).shutdown == 3.0
    assert spec.evolve(strategy="one_for_all").strategy is Strategy.ONE_FOR_ALL


def test_policy_of_specs() -> None:
    spec = tree()
    assert Policy.of(spec) == Policy(
        Strategy.REST_FOR_ONE,
        Intensity(5, 30.0),
        spec.backoff,
        Intensity(2, 10.0),
        AutoShutdown.ANY_SIGNIFICANT,
        dynamic=False,
    )
    pool = spec.child("pool")
    assert isinstance(pool, DynamicSupervisorSpec)
    assert pool.strategy is Strategy.ONE_FOR_ONE
    assert Policy.of(pool) == Policy(intensity=Intensity(), dynamic=True)
    assert pool.child_info("worker-1") == ChildInfo("worker-1", Restart.TRANSIENT)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: SupervisorSpec("app", children=[task("a"), task("b"), task("c"), task("a")]),
            "children[3].name: duplicate child name 'a'",
        ),
        (
            lambda: SupervisorSpec(
                "app", auto_shutdown="any_significant", children=[task("a", significant=True)]
            ),
            "children[0].significant: a permanent child cannot be significant",
        ),
        (
            lambda: SupervisorSpec(
                "app", children=[task("a"), task("b", restart="transient", significant=True)]
            ),
            "children[1].significant: a significant child needs auto_shutdown any_significant "
            "or all_significant on its supervisor (it is never), got True",
        ),
        (
            lambda: SupervisorSpec("app", children=[task("a/b")]),
            "children[0].name: a child name cannot contain '/'",
        ),
        (
            lambda: SupervisorSpec("app", significant=True),
            "significant: a permanent supervisor cannot be significant",
        ),
        (
            lambda: SupervisorSpec("app", children=[task("a"), {"name": "b"}]),
            "children[1]: expected a TaskSpec, SupervisorSpec or DynamicSupervisorSpec",
        ),
        (lambda: SupervisorSpec("app", children="ab"), "children: expected a list of child specs"),
        (
            lambda: SupervisorSpec("app", strategy="simple_one_for_one"),
            "strategy: expected one of one_for_one, one_for_all, rest_for_one, "
            "got 'simple_one_for_one'",
        ),
        (lambda: SupervisorSpec(""), "name: expected a non-empty name"),
        (lambda: SupervisorSpec("app", intensity=(3, 5)), "intensity: expected an Intensity"),
        (lambda: SupervisorSpec("app", backoff=1.0), "backoff: expected a Backoff or None"),
        (
            lambda: SupervisorSpec("app", shutdown=-1),
            "shutdown: expected a grace in seconds >= 0 and <= 100,000,000, 'brutal' or "
            "'infinity', got -1",
        ),
        (lambda: SupervisorSpec("app", labels={"a": 1}), "labels: expected a mapping of strings"),
        (lambda: SupervisorSpec("app", significant="yes"), "significant: expected true or false"),
        (
            lambda: DynamicSupervisorSpec(
                "pool", template=task("w", significant=True, restart="temporary")
            ),
            "template.significant: a significant child needs auto_shutdown",
        ),
        (lambda: DynamicSupervisorSpec("pool", template="w"), "template: expected a TaskSpec"),
        (
            lambda: DynamicSupervisorSpec("pool", template=task("w"), max_children=-1),
            "max_children: expected an integer >= 0 (at most 2**63 - 1) or None, got -1",
        ),
    ],
)
def test_invalid_specs_are_rejected_naming_the_path(build: Any, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        build()
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, ValueError)


def test_significant_children_are_accepted_with_auto_shutdown() -> None:
    spec = SupervisorSpec(
        "unit",
        auto_shutdown="all_significant",
        children=[task("a", restart="transient", significant=True), task("b")],
    )
    assert spec.child_infos()[0].significant
    pool = DynamicSupervisorSpec(
        "pool",
        template=task("w", restart="temporary", significant=True),
        auto_shutdown="all_significant",
    )
    assert Policy.of(pool).auto_shutdown is AutoShutdown.ALL_SIGNIFICANT


# --------------------------------------------------------------------------- config data


def test_round_trip_through_plain_data_and_json() -> None:
    spec = tree()
    data = spec_to_data(spec)
    assert spec_from_data(data) == spec
    assert spec_from_data(json.loads(json.dumps(data))) == spec
    assert data["children"][1]["strategy"] == "one_for_all"
    assert data["children"][2]["template"]["name"] == "worker"
    assert data["backoff"]["seed"] == 4
    pool = spec.child("pool")
    assert isinstance(pool, DynamicSupervisorSpec)
    assert spec_from_data(spec_to_data(pool)) == pool


def test_a_toml_config_file_builds_a_tree() -> None:
    text = """
    name = "app"
    strategy = "one_for_all"
    intensity = { max_restarts = 2, within = 10 }

    [[children]]
    name = "db"
    target = "app.db:run"
    restart = "transient"

    [[children]]
    name = "jobs"
    max_children = 4
    template = { name = "job", kind = "subprocess", command = ["job", "--once"] }
    """
    spec = spec_from_data(tomllib.loads(text))
    assert isinstance(spec, SupervisorSpec)
    assert spec.strategy is Strategy.ONE_FOR_ALL
    assert spec.intensity == Intensity(2, 10.0)
    assert spec.child("db") == TaskSpec(name="db", target="app.db:run", restart="transient")
    jobs = spec.child("jobs")
    assert isinstance(jobs, DynamicSupervisorSpec)
    assert jobs.template == TaskSpec(name="job", kind="subprocess", command=["job", "--once"])
    assert spec_from_data(spec_to_data(spec)) == spec


def test_a_dynamic_supervisor_at_the_top() -> None:
    spec = spec_from_data({"name": "pool", "template": {"name": "w", "target": "a.b:c"}})
    assert spec == DynamicSupervisorSpec("pool", template=TaskSpec(name="w", target="a.b:c"))


GOOD_TASK = {"name": "t", "target": "app.tasks:work"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "name": "app",
                "children": [
                    GOOD_TASK,
                    {**GOOD_TASK, "name": "u"},
                    {**GOOD_TASK, "name": "v", "restart": "always"},
                ],
            },
            "children[2].restart: expected one of permanent, transient, temporary, got 'always'",
        ),
        (
            {
                "name": "app",
                "children": [
                    GOOD_TASK,
                    {
                        "name": "sub",
                        "children": [{"name": "x", "kind": "subprocess", "command": "ls -l"}],
                    },
                ],
            },
            "children[1].children[0].command: expected a list of arguments",
        ),
        (
            {"name": "app", "children": [{**GOOD_TASK, "args": "abc"}]},
            "children[0].args: expected a list or tuple of arguments, got 'abc'",
        ),
        (
            {
                "name": "app",
                "children": [GOOD_TASK, {"name": "sub", "children": [], "strategy": "all"}],
            },
            "children[1].strategy: expected one of one_for_one, one_for_all, rest_for_one, "
            "got 'all'",
        ),
        (
            {"name": "app", "children": [{"name": "sub", "children": [GOOD_TASK, GOOD_TASK]}]},
            "children[0].children[1].name: duplicate child name 't'",
        ),
        (
            {"name": "app", "children": [{"name": "p", "template": {**GOOD_TASK, "restart": "x"}}]},
            "children[0].template.restart: expected one of permanent, transient, temporary",
        ),
        (
            {
                "name": "app",
                "children": [{"name": "sub", "children": [], "intensity": {"max_restarts": -2}}],
            },
            "children[0].intensity.max_restarts: expected an integer >= 0 and <= 2**63 - 1, got -2",
        ),
        (
            {"name": "app", "intensity": {"max_restarts": 1, "period": 5}},
            "intensity: unknown field(s) ['period']",
        ),
        (
            {"name": "app", "intensity": 5},
            "intensity: expected a mapping of Intensity fields, got int",
        ),
        (
            {"name": "app", "backoff": {"jitter": 3}},
            "backoff.jitter: expected a number between 0 and 1",
        ),
        (
            {"name": "app", "child_intensity": {"within": 0}},
            "child_intensity.within: expected a finite",
        ),
        ({"name": "app", "colour": "red"}, "(top level): unknown field(s) ['colour']"),
        ({"strategy": "one_for_one"}, "name: required field missing"),
        ({"name": "app", "children": {"a": 1}}, "children: expected a list of child specs"),
        (
            {"name": "app", "children": [GOOD_TASK, 3]},
            "children[1]: expected a mapping of child spec fields, got int",
        ),
        (
            {"name": "app", "children": [{**GOOD_TASK, "colour": "red"}]},
            "children[0]: unknown field(s) ['colour']",
        ),
        (
            {"name": "app", "children": [{"name": "x", "children": [], "template": GOOD_TASK}]},
            "children[0]: a supervisor has either children (static) or a template (dynamic)",
        ),
        (
            {
                "name": "app",
                "children": [
                    {
                        "name": "sub",
                        "children": [{**GOOD_TASK, "significant": True, "restart": "temporary"}],
                    }
                ],
            },
            "children[0].children[0].significant: a significant child needs auto_shutdown",
        ),
        (
            {
                "name": "app",
                "children": [{"name": "p", "template": GOOD_TASK, "max_children": "9"}],
            },
            "children[0].max_children: expected an integer >= 0 (at most 2**63 - 1) or None, "
            "got '9'",
        ),
        ([], "(top level): expected a mapping of supervisor spec fields, got list"),
        (
            {"name": "app", "children": [], "template": GOOD_TASK},
            "(top level): a supervisor has either children (static) or a template (dynamic)",
        ),
        (
            {
                "name": "app",
                "children": [{"name": "p", "template": {**GOOD_TASK, "timeout": "1s"}}],
            },
            "children[0].template.timeout: ",
        ),
    ],
)
def test_bad_config_data_names_the_full_path(data: Any, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        spec_from_data(data)
    assert str(info.value).startswith(message), str(info.value)


def test_error_field_is_the_path() -> None:
    data = {"name": "app", "children": [GOOD_TASK, {"name": "sub", "children": [], "restart": "x"}]}
    with pytest.raises(InvalidSpec) as info:
        spec_from_data(data)
    assert info.value.field == "children[1].restart"


def test_a_lambda_target_cannot_be_written_to_data() -> None:
    spec = SupervisorSpec(
        "app",
        children=[
            task("a"),
            SupervisorSpec("sub", children=[TaskSpec(name="l", target=lambda: 1)]),
        ],
    )
    with pytest.raises(
        InvalidSpec, match=r"^children\[1\]\.children\[0\]\.target: .* no import path"
    ):
        spec_to_data(spec)


# --------------------------------------------------------------------------- bounded inputs

# Issue 8, fault 14: times past any timer's limit passed validation; fault 17:
# malformed configurations raised errors from inside, or endless messages.

OUT_OF_RANGE: list[Any] = [
    1e10,
    MAX_SECONDS + 1,
    float("inf"),
    float("nan"),
    -1,
    10**400,
    10**5000,
    True,
    "forever",
    None,
]


def _short_id(value: object) -> str:
    """A test id that never str()s a huge int or prints a long string."""
    if isinstance(value, (float, str)) and len(str(value)) <= 20:
        return str(value)
    return type(value).__name__


@pytest.mark.parametrize("value", OUT_OF_RANGE, ids=_short_id)
@pytest.mark.parametrize(
    "build",
    [
        lambda v: SupervisorSpec("app", shutdown=v),
        lambda v: DynamicSupervisorSpec("pool", template=task("w"), shutdown=v),
    ],
    ids=["static", "dynamic"],
)
def test_a_supervisor_shutdown_is_a_bounded_grace_brutal_or_infinity(
    build: Any, value: Any
) -> None:
    with pytest.raises(InvalidSpec) as info:
        build(value)
    message = str(info.value)
    assert message.startswith(
        "shutdown: expected a grace in seconds >= 0 and <= 100,000,000, 'brutal' or 'infinity', "
        "got "
    ), message
    assert len(message) < 200


def test_supervisor_shutdowns_in_range_are_kept() -> None:
    assert SupervisorSpec("a", shutdown="infinity").shutdown == "infinity"
    assert SupervisorSpec("a", shutdown="brutal").shutdown == "brutal"
    assert SupervisorSpec("a", shutdown=MAX_SECONDS).shutdown == float(MAX_SECONDS)
    assert SupervisorSpec("a", shutdown=0).shutdown == 0.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"name": "app", "intensity": {"within": 1e10}},
            "intensity.within: expected a finite number > 0 and <= 100,000,000, got 10000000000.0",
        ),
        (
            {"name": "app", "intensity": {"max_restarts": 1, "within": 10**400}},
            "intensity.within: expected a finite number > 0 and <= 100,000,000, "
            "got <int of about 401 digits>",
        ),
        (
            {"name": "app", "child_intensity": {"within": float("inf")}},
            "child_intensity.within: expected a finite number > 0 and <= 100,000,000, got inf",
        ),
        (
            {"name": "app", "backoff": {"initial": 1e10, "maximum": 1e10}},
            "backoff.initial: expected a finite number >= 0 and <= 100,000,000",
        ),
        (
            {"name": "app", "backoff": {"maximum": 10**5000}},
            "backoff.maximum: expected a finite number > 0 and <= 100,000,000, "
            "got <int of about 5001 digits>",
        ),
        (
            {"name": "app", "backoff": {"reset_after": float("nan")}},
            "backoff.reset_after: expected a finite number > 0 and <= 100,000,000, got nan",
        ),
        (
            {
                "name": "app",
                "children": [{"name": "s", "children": [{**GOOD_TASK, "timeout": 1e10}]}],
            },
            "children[0].children[0].timeout: expected a number of seconds > 0 and <= 100,000,000",
        ),
        (
            {"name": "p", "template": {**GOOD_TASK, "shutdown": float("inf")}},
            "template.shutdown: expected a grace in seconds >= 0 and <= 100,000,000, or 'brutal'",
        ),
        (
            {"name": "app", "children": [{"name": "s", "children": [], "shutdown": 1e10}]},
            "children[0].shutdown: expected a grace in seconds >= 0 and <= 100,000,000",
        ),
    ],
)
def test_config_times_past_max_seconds_are_refused_by_path(data: Any, message: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        spec_from_data(data)
    assert str(info.value).startswith(message), str(info.value)


def _deep(kind: str, levels: int) -> dict[str, Any]:
    data: dict[str, Any] = dict(GOOD_TASK)
    for i in range(levels):
        data = {
            "name": f"s{i}",
            **({"children": [data]} if kind == "children" else {"template": data}),
        }
    return data


HUGE = 10**5000  # str() of it raises ValueError


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # deep nesting: a bound of its own, not Python's recursion limit
        (_deep("children", 5000), "children[0]." * 49 + "children[0]: nesting deeper than 50 "),
        (
            _deep("template", 5000),
            "template." * 49 + "template: nesting deeper than 50 supervisors",
        ),
        # huge ints, wherever they go
        ({"name": HUGE}, "name: expected a non-empty name of letters"),
        ({"name": "app", "intensity": {"max_restarts": HUGE}}, "intensity.max_restarts: expected"),
        ({"name": "app", "children": [{**GOOD_TASK, "restart": HUGE}]}, "children[0].restart: "),
        ({"name": "app", "children": [{**GOOD_TASK, "timeout": HUGE}]}, "children[0].timeout: "),
        ({"name": "app", "labels": {"a": HUGE}}, "labels: expected a mapping of strings"),
        ({"name": "app", "labels": {HUGE: "a"}}, "labels: expected a mapping of strings"),
        ({"name": "p", "template": GOOD_TASK, "max_children": HUGE}, "max_children: expected"),
        ({"name": "app", "backoff": {"seed": HUGE}}, "backoff.seed: expected an integer"),
        ({"name": "app", "strategy": HUGE}, "strategy: expected one of one_for_one"),
        # keys of mixed types (YAML reads ``on:`` as True): named, never sorted together
        ({"name": "app", True: 1, "x": 2}, "(top level): unknown field(s) ['x', True] "),
        ({"name": "app", "children": [{**GOOD_TASK, True: 1, 2: 3}]}, "children[0]: unknown field"),
        (
            {"name": "app", "intensity": {None: 1, "within": 1}},
            "intensity: unknown field(s) [None]",
        ),
        (
            {"name": "app", "backoff": {("t",): 1, 2.5: 1}},
            "backoff: unknown field(s) [('t',), 2.5]",
        ),
        ({"name": "p", "template": {**GOOD_TASK, HUGE: 1}}, "template: unknown field(s) [<int of"),
        ({HUGE: 1}, "(top level): unknown field(s) [<int of about 5001 digits>]"),
        # wrong container types at every level
        ("app", "(top level): expected a mapping of supervisor spec fields, got str"),
        (None, "(top level): expected a mapping of supervisor spec fields, got NoneType"),
        ({"name": "app", "children": None}, "children: expected a list of child specs, got None"),
        ({"name": "app", "children": 5}, "children: expected a list of child specs, got 5"),
        ({"name": "app", "children": [[GOOD_TASK]]}, "children[0]: expected a mapping of child"),
        ({"name": "app", "children": ["t"]}, "children[0]: expected a mapping of child spec"),
        ({"name": "app", "intensity": [3, 5]}, "intensity: expected a mapping of Intensity"),
        ({"name": "app", "child_intensity": "3/5"}, "child_intensity: expected a mapping of"),
        ({"name": "app", "backoff": 1.5}, "backoff: expected a mapping of Backoff fields"),
        ({"name": "app", "labels": ["a"]}, "labels: expected a mapping of strings to strings"),
        ({"name": "p", "template": [GOOD_TASK]}, "template: expected a mapping of child spec"),
        ({"name": "p", "template": None}, "template: expected a mapping of child spec"),
        ({"name": "app", "children": [{**GOOD_TASK, "args": {"a": 1}}]}, "children[0].args: "),
        ({"name": "app", "children": [{**GOOD_TASK, "kwargs": [1]}]}, "children[0].kwargs: "),
        ({"name": "app", "children": [{**GOOD_TASK, "labels": ["x"]}]}, "children[0].labels: "),
        (
            {"name": "app", "children": [{"name": "x", "kind": "subprocess", "command": {}}]},
            "children[0].command: expected a non-empty list of strings, got {}",
        ),
        (
            {
                "name": "app",
                "children": [{"name": "x", "kind": "subprocess", "command": ["a"], "env": []}],
            },
            "children[0].env: expected a mapping of strings to strings, got []",
        ),
        # values echoed cut short
        ({"name": "x" * 200_000 + " "}, "name: expected a non-empty name of letters"),
        (
            {"name": "app", "children": [{**GOOD_TASK, "kind": "k" * 200_000, "target": 5}]},
            "children[0]",
        ),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else type(v).__name__,
)
def test_any_config_is_refused_with_a_short_message_naming_the_path(
    data: Any, message: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        spec_from_data(data)
    text = str(info.value)
    assert text.startswith(message), text[:300]
    assert len(text) <= 1000
    assert "Error" not in text  # no RecursionError, ValueError ... from inside


def test_many_unknown_fields_are_named_ten_at_a_time() -> None:
    with pytest.raises(InvalidSpec) as info:
        spec_from_data({"name": "app", **{f"k{i:04}": i for i in range(5000)}})
    text = str(info.value)
    assert text.startswith("(top level): unknown field(s) ['k0000', 'k0001', ")
    assert "'k0009', and 4990 more] (expected some of name, strategy, " in text


def test_supervisors_nest_at_most_max_depth_levels() -> None:
    spec: SupervisorSpec | DynamicSupervisorSpec = SupervisorSpec("s0", children=[task("t")])
    for i in range(1, MAX_DEPTH):
        spec = (
            SupervisorSpec(f"s{i}", children=[spec])
            if i % 2
            else DynamicSupervisorSpec(f"s{i}", template=spec)
        )
    data = spec_to_data(spec)  # MAX_DEPTH levels: written and read back
    assert spec_from_data(data) == spec
    assert spec_from_data(json.loads(json.dumps(data))) == spec
    with pytest.raises(InvalidSpec, match=r"^children\[0\]: nesting deeper than 50 supervisors"):
        SupervisorSpec("top", children=[task("a"), spec][1:])
    with pytest.raises(InvalidSpec, match=r"^template: nesting deeper than 50 supervisors"):
        DynamicSupervisorSpec("top", template=spec)
    deepest = r"^children\[0\]\.children\[0\](\.template\.children\[0\]){24}: nesting deeper"
    with pytest.raises(InvalidSpec, match=deepest):
        spec_from_data({"name": "top", "children": [data]})


def test_a_live_tree_of_max_depth_levels_starts_and_stops() -> None:
    """The bound is one the runtime keeps: a real tree MAX_DEPTH supervisors deep runs."""
    leaf = TaskSpec(name="t", target="json:dumps", args=[1], restart="temporary")
    spec: SupervisorSpec = SupervisorSpec("s0", children=[leaf])
    for i in range(1, MAX_DEPTH):
        spec = SupervisorSpec(f"s{i}", children=[spec])
    ref = Supervisor.start(spec)
    try:
        assert ref.running
    finally:
        ref.stop()
    assert not ref.running


def test_task_arguments_nest_at_most_max_data_depth_levels() -> None:
    def nested(levels: int) -> list[Any]:
        value: list[Any] = []
        for _ in range(levels - 1):
            value = [value]
        return value

    ok = spec_from_data(
        {"name": "app", "children": [{**GOOD_TASK, "args": nested(MAX_DATA_DEPTH)}]}
    )
    assert spec_from_data(spec_to_data(ok)) == ok
    with pytest.raises(
        InvalidSpec, match=r"^children\[0\]\.args: lists and mappings nested deeper"
    ):
        spec_from_data(
            {"name": "app", "children": [{**GOOD_TASK, "args": nested(MAX_DATA_DEPTH + 1)}]}
        )
    with pytest.raises(
        InvalidSpec, match=r"^children\[0\]\.kwargs: lists and mappings nested deeper"
    ):
        spec_from_data({"name": "app", "children": [{**GOOD_TASK, "kwargs": {"a": nested(5000)}}]})


def test_task_arguments_that_contain_themselves_are_refused() -> None:
    """A YAML alias can make data that contains itself (``&a [*a]``)."""
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(InvalidSpec, match=r"^children\[0\]\.args: data that contains itself"):
        spec_from_data({"name": "app", "children": [{**GOOD_TASK, "args": [loop]}]})
    # Shared (not circular) data is fine, however often it is shared: each part is walked once.
    shared: list[Any] = [1]
    for _ in range(60):
        shared = [shared, shared]
    spec = spec_from_data({"name": "app", "children": [{**GOOD_TASK, "args": shared}]})
    assert spec.child("t").args[0] is shared[0]  # type: ignore[union-attr]
    for _ in range(MAX_DATA_DEPTH):
        shared = [shared, shared]
    with pytest.raises(InvalidSpec, match="nested deeper than 100"):
        spec_from_data({"name": "app", "children": [{**GOOD_TASK, "args": shared}]})
    # A part walked once near the top is too deep where it is met again lower down.
    part: list[Any] = [1]
    for _ in range(MAX_DATA_DEPTH - 2):
        part = [part]
    spec_from_data({"name": "app", "children": [{**GOOD_TASK, "args": [part]}]})
    with pytest.raises(InvalidSpec, match=r"^children\[0\]\.args: lists and mappings nested"):
        spec_from_data({"name": "app", "children": [{**GOOD_TASK, "args": [part, [[part]]]}]})


def test_spec_to_data_refuses_arguments_too_deep_to_write() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    spec = SupervisorSpec("app", children=[task("a"), task("b", args=[deep])])
    with pytest.raises(InvalidSpec, match=r"^children\[1\]: args or kwargs nested too deeply"):
        spec_to_data(spec)


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_value_whose_repr_raises_is_named_by_its_type() -> None:
    with pytest.raises(
        InvalidSpec, match=r"^name: expected a non-empty name .*, got <_BadRepr object>$"
    ):
        SupervisorSpec(_BadRepr())  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec, match=r"^phase: expected one of pending, .*, got 5$"):
        Failure("app", "x", 5)  # type: ignore[arg-type]


def test_every_message_is_at_most_a_thousand_characters() -> None:
    error = InvalidSpec("a.b: " + "x" * 5000 + " the end")
    text = str(error)
    assert len(text) == 1000
    assert text.startswith("a.b: xxx")
    assert text.endswith("x the end")
    assert " … " in text
    assert all(len(p) <= 1000 for p in InvalidSpec("m", ("p" * 3000, "q")).problems)


# --------------------------------------------------------------------------- errors


def test_supervisor_exhausted_lists_the_chain_and_pickles() -> None:
    chain = (
        Failure("app/db", "conn", "failed", "boom"),
        Failure("app", "db", TaskPhase.EXHAUSTED, "too many restarts"),
    )
    error = SupervisorExhausted(chain, "too many restarts")
    text = str(error)
    assert text.startswith("supervisor 'app' gave up (too many restarts)")
    assert "1. app/db: child 'conn' ended failed: boom" in text
    assert "2. app: child 'db' ended exhausted: too many restarts" in text
    assert isinstance(error, RuntimeError)
    assert error.supervisor == "app"
    copy = pickle.loads(pickle.dumps(error))
    assert copy.chain == chain
    assert str(copy) == text
    assert str(SupervisorExhausted(())) == "supervisor gave up"
    with pytest.raises(InvalidSpec, match="phase: expected one of"):
        Failure("app", "x", "broken")


def test_failure_texts_in_messages_are_bounded() -> None:
    """A 1 MB error text in a crash loop does not make a 1 MB message; the record keeps it."""
    huge = "boom " * 200_000
    failure = Failure("app/db", "conn", "failed", huge)
    assert failure.error == huge
    line = str(failure)
    assert line.startswith("app/db: child 'conn' ended failed: boom boom")
    assert len(line) < 600
    error = SupervisorExhausted([failure] * 3, huge)
    assert len(str(error)) < 3000
    assert str(error).startswith("supervisor 'app/db' gave up (boom boom")
    start = ChildStartError("x" * 100_000, huge)
    assert (start.child, start.error) == ("x" * 100_000, huge)
    assert len(str(start)) < 700
    with pytest.raises(InvalidSpec, match=r"^child: expected a string, got <int of about 5001"):
        Failure("app", 10**5000, "failed")  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec, match=r"^error: expected a string or None, got 3"):
        Failure("app", "x", "failed", 3)  # type: ignore[arg-type]


def test_child_start_error() -> None:
    error = ChildStartError("db", "connection refused")
    assert str(error) == "child 'db' could not be started: connection refused"
    assert isinstance(error, RuntimeError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.child, copy.error) == ("db", "connection refused")


# ------------------------------------------------------------------ issue 9: data and types


def _nulls(data: Any) -> list[Any]:
    if data is None:
        return [data]
    if isinstance(data, dict):
        return [n for v in data.values() for n in _nulls(v)]
    if isinstance(data, list):
        return [n for v in data for n in _nulls(v)]
    return []


def test_spec_to_data_writes_only_what_differs_from_the_defaults() -> None:
    spec = SupervisorSpec("app", children=[task("a"), SupervisorSpec("sub")])
    assert spec_to_data(spec) == {
        "name": "app",
        "children": [
            {"name": "a", "target": "app.tasks:work"},
            {"name": "sub", "children": []},  # a nested supervisor keeps its (empty) children
        ],
    }
    assert spec_to_data(SupervisorSpec("app")) == {"name": "app"}
    dynamic = DynamicSupervisorSpec("pool", template=task("w"), intensity=Intensity(within=9))
    assert spec_to_data(dynamic) == {
        "name": "pool",
        "template": {"name": "w", "target": "app.tasks:work"},
        "intensity": {"within": 9.0},
    }
    assert spec_to_data(SupervisorSpec("app", backoff=Backoff())) == {"name": "app", "backoff": {}}


def test_spec_to_data_never_writes_a_null_and_round_trips() -> None:
    data = spec_to_data(tree())
    assert _nulls(data) == []
    assert spec_from_data(data) == tree()
    assert data["children"][1]["shutdown"] == 10.0
    assert "strategy" not in data["children"][2]  # a dynamic supervisor has none
    assert data["children"][2]["max_children"] == 10


def test_the_string_forms_of_enums_are_accepted_and_stored_as_enums() -> None:
    spec = SupervisorSpec(
        "app", strategy="rest_for_one", auto_shutdown="all_significant", restart="temporary"
    )
    assert spec.strategy is Strategy.REST_FOR_ONE
    assert spec.auto_shutdown is AutoShutdown.ALL_SIGNIFICANT
    assert spec.restart is Restart.TEMPORARY
    with pytest.raises(InvalidSpec, match=r"^strategy: expected one of .*'one_for_everything'"):
        SupervisorSpec("app", strategy="one_for_everything")  # type: ignore[arg-type]


def test_the_precise_from_data_functions_return_one_kind_each() -> None:
    static = supervisor_spec_from_data(
        {"name": "app", "children": [{"name": "a", "target": "m:f"}]}
    )
    assert isinstance(static, SupervisorSpec)
    assert [c.name for c in static.children] == ["a"]
    dynamic = dynamic_supervisor_spec_from_data(
        {"name": "p", "template": {"name": "w", "target": "m:f"}}
    )
    assert isinstance(dynamic, DynamicSupervisorSpec)
    with pytest.raises(InvalidSpec, match=r"^template: a static supervisor has children") as info:
        supervisor_spec_from_data({"name": "p", "template": {"name": "w", "target": "m:f"}})
    assert info.value.field == "template"
    with pytest.raises(InvalidSpec, match=r"^template: required field missing"):
        dynamic_supervisor_spec_from_data({"name": "app"})
    with pytest.raises(InvalidSpec, match=r"^children\[0\]\.restart: "):
        supervisor_spec_from_data({"name": "a", "children": [{"name": "b", "restart": "x"}]})


def test_spec_problems_names_one_problem_per_node_across_the_tree() -> None:
    data = {
        "name": "app",
        "strategy": "one_for_al",
        "children": [
            {"name": "a", "target": "m:f", "restart": "always"},
            {"name": "ok", "target": "m:f"},
            {"name": "b", "kind": "subprocess", "command": "ls -l"},
            {"name": "sub", "children": [{"target": "m:f"}], "intensity": {"within": -1}},
            {"name": "pool", "strategy": "one_for_all", "template": {"name": "w"}},
            "not a mapping",
        ],
    }
    texts = [str(p) for p in spec_problems(data)]
    assert [t.partition(":")[0] for t in texts] == [
        "strategy",
        "children[0].restart",
        "children[2].command",
        "children[3].intensity.within",
        "children[3].children[0].name",
        "children[4].strategy",
        "children[4].template.target",
        "children[5]",
    ]
    assert spec_problems({"name": "app", "children": [{"name": "a", "target": "m:f"}]}) == []
    assert [str(p) for p in spec_problems(["x"])] == [
        "(top level): expected a mapping of supervisor spec fields, got list"
    ]


def test_spec_problems_reports_a_whole_tree_problem_when_every_node_is_fine() -> None:
    twice = {"name": "a", "target": "m:f"}
    (problem,) = spec_problems({"name": "app", "children": [twice, twice]})
    assert str(problem) == "children[1].name: duplicate child name 'a'"
    (problem,) = spec_problems({"name": "app", "children": "x"})
    assert str(problem).startswith("children: expected a list of child specs")
    (problem,) = spec_problems(
        {"name": "app", "children": [{"name": "s", "children": [], "template": {}}]}
    )
    assert "either children (static) or a template (dynamic)" in str(problem)


def test_a_field_without_a_default_always_differs() -> None:
    from taskvisor.supervision._spec import _differs

    assert _differs(TaskSpec, "name", "x")
    assert not _differs(TaskSpec, "kind", "call")
    assert _differs(TaskSpec, "shutdown", 5)  # an int is not the float default


def test_spec_problems_stops_at_max_depth() -> None:
    data: dict[str, Any] = {"name": "leaf", "target": "m:f"}
    for i in range(MAX_DEPTH + 1):
        data = {"name": f"s{i}", "children": [data]}
    (problem,) = spec_problems(data)
    assert str(problem).endswith("nesting deeper than 50 supervisors (MAX_DEPTH); flatten the tree")


def test_spec_problems_names_every_field_of_one_task_in_one_pass() -> None:
    data = {
        "name": "app",
        "children": [
            {
                "kind": "subprocess",
                "command": ["true"],
                "stop_signal": "WINCH",
                "success_exit_codes": [300],
                "stderr": "stderr",
                "output_backups": 2,
            },
            {"name": "a/b", "target": 7, "restart": "always"},
            {"name": "k", "kind": "cal", "restart": "always"},
        ],
    }
    found = [str(p).split(":", 1)[0] for p in spec_problems(data)]
    assert sorted(found) == sorted(
        [
            "children[0].name",  # missing: a stand-in name lets the others be checked
            "children[0].stop_signal",
            "children[0].success_exit_codes",
            "children[0].stderr",
            "children[0].output_backups",
            "children[1].name",
            "children[1].target",
            "children[1].restart",
            "children[2].restart",  # a kind the shape allows (check knows the kinds)
        ]
    )
    assert len(found) == len(set(found))  # each once
