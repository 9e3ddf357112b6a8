"""Tree files: TOML, JSON and YAML read to specs, ${VAR} expansion, lines in problems, writing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.strategies import task_specs

from taskvisor.actors import InvalidSpec, Restart
from taskvisor.supervision import (
    DynamicSupervisorSpec,
    SupervisorSpec,
    TreeFileError,
    check_tree_file,
    dump_tree,
    load_tree_file,
    spec_from_data,
    spec_to_data,
    write_tree_file,
)
from taskvisor.supervision._files import read_tree_data, toml_dumps
from taskvisor.testing import supervisor_specs

TOML = """\
name = "app"
strategy = "one_for_all"
auto_shutdown = "any_significant"

[intensity]
max_restarts = 5
within = 30.0

[[children]]
name = "web"
kind = "subprocess"
command = ["${WEB_BIN:-/bin/true}", "--port", "${PORT}"]
env = { PORT = "${PORT}" }

[[children]]
name = "jobs"
strategy = "rest_for_one"
auto_shutdown = "any_significant"

[[children.children]]
name = "daily"
target = "app.jobs:daily"
restart = "transient"
significant = true
kwargs = { note = "costs $${HOME} dollars" }
"""


def expected() -> SupervisorSpec:
    return spec_from_data(
        {
            "name": "app",
            "strategy": "one_for_all",
            "auto_shutdown": "any_significant",
            "intensity": {"max_restarts": 5, "within": 30.0},
            "children": [
                {
                    "name": "web",
                    "kind": "subprocess",
                    "command": ["/bin/true", "--port", "8080"],
                    "env": {"PORT": "8080"},
                },
                {
                    "name": "jobs",
                    "strategy": "rest_for_one",
                    "auto_shutdown": "any_significant",
                    "children": [
                        {
                            "name": "daily",
                            "target": "app.jobs:daily",
                            "restart": "transient",
                            "significant": True,
                            "kwargs": {"note": "costs ${HOME} dollars"},
                        }
                    ],
                },
            ],
        }
    )  # type: ignore[return-value]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


ENV = {"PORT": "8080"}


def test_a_toml_file_is_read_with_variables_expanded(tmp_path: Path) -> None:
    spec = load_tree_file(write(tmp_path, "tree.toml", TOML), environ=ENV)
    assert spec == expected()


def test_the_same_tree_in_json_and_yaml(tmp_path: Path) -> None:
    data = tomllib.loads(TOML)
    as_json = write(tmp_path, "tree.json", json.dumps(data, indent=2))
    as_yaml = write(tmp_path, "tree.yaml", yaml.safe_dump(data))
    as_yml = write(tmp_path, "tree.yml", yaml.safe_dump(data))
    for path in (as_json, as_yaml, as_yml):
        assert load_tree_file(path, environ=ENV) == expected(), path


def test_variables_come_from_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "9090")
    monkeypatch.setenv("WEB_BIN", "")  # empty: the default applies, as in the shell
    spec = load_tree_file(write(tmp_path, "tree.toml", TOML))
    web = spec.children[0]  # type: ignore[union-attr]
    assert web.command == ("/bin/true", "--port", "9090")
    monkeypatch.setenv("WEB_BIN", "/usr/bin/env")
    web = load_tree_file(write(tmp_path, "tree.toml", TOML)).children[0]  # type: ignore[union-attr]
    assert web.command[0] == "/usr/bin/env"


def test_an_unset_variable_is_named_by_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "tree.toml", TOML)
    with pytest.raises(TreeFileError) as info:
        load_tree_file(path, environ={})
    assert [str(p) for p in info.value.found] == [
        f"{path}:12: children[0].command[2]: environment variable 'PORT' is not set "
        "(set it, or give a default: ${PORT:-value})",
        f"{path}:13: children[0].env.PORT: environment variable 'PORT' is not set "
        "(set it, or give a default: ${PORT:-value})",
    ]
    assert isinstance(info.value, InvalidSpec)


def test_a_dollar_brace_that_is_no_reference_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "t.json", '{"name": "app", "labels": {"a": "${1x}"}}')
    with pytest.raises(TreeFileError, match=r"t\.json:1: labels\.a: a '\$\{' that is not"):
        load_tree_file(path, environ={})


def test_yaml_aliases_are_expanded_once_and_keep_sharing(tmp_path: Path) -> None:
    text = """\
name: app
children:
  - {name: a, target: "m:f", kwargs: &who {who: "${WHO:-x}"}}
  - {name: b, target: "m:f", kwargs: *who}
"""
    tree = read_tree_data(write(tmp_path, "t.yaml", text), environ={"WHO": "me"})
    first, second = tree.data["children"]
    assert first["kwargs"] == {"who": "me"}
    assert second["kwargs"] is first["kwargs"]  # still one mapping, expanded once
    assert tree.lines["children[1].kwargs"] == 4
    assert tree.lines["children[0].kwargs.who"] == 3


# --------------------------------------------------------------------------- lines


BROKEN_JSON = """\
{
  "name": "app",
  "children": [
    {"name": "a", "target": "m:f"},
    {
      "name": "b",
      "target": "m:f",
      "restart": "always"
    },
    {"name": "c", "target": "m:f", "shutdown": "5s"}
  ]
}
"""

BROKEN_YAML = """\
name: app
children:
  - name: a
    target: m:f
  - name: b
    target: m:f
    restart: always
  - {name: c, target: "m:f", shutdown: 5s}
"""

BROKEN_TOML = """\
name = "app"

[[children]]
name = "a"
target = "m:f"

[[children]]
name = "b"
target = "m:f"
restart = "always"

[[children]]
name = "c"
target = "m:f"
shutdown = "5s"
"""


@pytest.mark.parametrize(
    ("name", "text", "lines"),
    [
        ("tree.json", BROKEN_JSON, (8, 10)),
        ("tree.yaml", BROKEN_YAML, (7, 8)),
        ("tree.toml", BROKEN_TOML, (10, 15)),
    ],
)
def test_every_shape_problem_is_named_with_its_line(
    tmp_path: Path, name: str, text: str, lines: tuple[int, int]
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(TreeFileError) as info:
        load_tree_file(path)
    first, second = lines
    assert [str(p) for p in info.value.found] == [
        f"{path}:{first}: children[1].restart: expected one of permanent, transient, "
        "temporary, got 'always'",
        f"{path}:{second}: children[2].shutdown: expected a grace in seconds >= 0 and "
        "<= 100,000,000, or 'brutal', got '5s'",
    ]
    assert info.value.found[0].path == "children[1].restart"
    assert info.value.field == "children[1].restart"


def test_a_missing_field_is_placed_on_its_parent_line(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "name: app\nchildren:\n  - target: m:f\n")
    with pytest.raises(TreeFileError) as info:
        load_tree_file(path)
    assert str(info.value) == f"{path}:3: children[0].name: required field missing"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("t.json", '{\n  "name": "app",\n  "x": \n}\n', ":4: invalid JSON: Expecting value"),
        ("t.yaml", "name: app\nchildren:\n  - [a\n", ":4: invalid YAML: expected ',' or ']'"),
        ("t.toml", 'name = "app"\nstrategy = \n', ":2: invalid TOML: Invalid value"),
        ("t.yaml", "", ": the file holds no tree (it is empty)"),
        ("t.ini", "", ": unknown tree file suffix '.ini': expected .toml, .json, .yaml or .yml"),
    ],
)
def test_a_file_that_does_not_parse_names_its_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(TreeFileError) as info:
        load_tree_file(path)
    assert str(info.value) == f"{path}{message}" or str(info.value).startswith(f"{path}{message}")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000),
        ("deep.yaml", "[" * 100_000 + "]" * 100_000),
        ("deep.toml", "a = " + "[" * 100_000 + "]" * 100_000),
        ("tables.toml", "a = " + "{ a = " * 100_000 + "1" + " }" * 100_000),
        ("block.yaml", "".join("  " * i + "-\n" for i in range(5_000))),
    ],
)
def test_a_file_nested_too_deeply_to_parse_is_refused(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(TreeFileError, match=r"invalid (JSON|YAML|TOML): nested too deeply"):
        load_tree_file(path)
    _, problems = check_tree_file(path)
    assert [p.text for p in problems] == [f"invalid {FORMATS[path.suffix]}: nested too deeply"]


FORMATS = {".json": "JSON", ".yaml": "YAML", ".toml": "TOML"}
DIGITS = "1" * 5_001  # more than int() reads by default (4300 digits)
LONG_INTEGERS = [
    (
        "t.toml",
        f'name = "app"\n# {DIGITS}\nlabels = {{ a = "{DIGITS}" }}\nx = [\n  {DIGITS},\n]\n',
        5,
    ),
    (
        "t.json",
        f'{{\n  "name": "app",\n  "labels": {{"a": "{DIGITS}"}},\n  "x": -{DIGITS}\n}}\n',
        4,
    ),
    ("t.yaml", f'name: app\nlabels: {{a: "{DIGITS}"}}\nx:\n  - {DIGITS}\n', 4),
]


@pytest.mark.parametrize(("name", "text", "line"), LONG_INTEGERS)
def test_an_integer_too_long_for_python_is_a_problem_on_its_line(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    path = write(tmp_path, name, text)
    limit = sys.get_int_max_str_digits()
    problem = (
        f"invalid {FORMATS[path.suffix]}: an integer of more than {limit} digits, "
        "which Python refuses to read; no field takes a number that large "
        "(the largest count is 2**63 - 1)"
    )
    with pytest.raises(TreeFileError) as info:
        load_tree_file(path)
    assert str(info.value) == f"{path}:{line}: {problem}"
    spec, problems = check_tree_file(path)
    assert spec is None
    assert [(p.line, p.text) for p in problems] == [(line, problem)]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("!!int abc", "'abc' is not a valid int (invalid literal for int() with base 10: 'abc')"),
        ("!!float abc", "'abc' is not a valid float (could not convert string to float: 'abc')"),
        ("!!bool abc", "'abc' is not a valid bool"),
        ("!!timestamp abc", "'abc' is not a valid timestamp"),
        ("2021-02-30", "'2021-02-30' is not a valid timestamp (day is out of range for month)"),
    ],
)
def test_a_yaml_value_its_tag_refuses_is_a_problem_on_its_line(
    tmp_path: Path, value: str, problem: str
) -> None:
    path = write(tmp_path, "t.yaml", f"name: app\nlabels:\n  a: {value}\n")
    with pytest.raises(TreeFileError) as info:
        load_tree_file(path)
    assert str(info.value) == f"{path}:3: invalid YAML: {problem}"


def test_a_yaml_problem_quoting_a_long_text_is_bounded(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", f"name: app\nx: !<tag:{'a' * 100_000}> 1\n")
    _, problems = check_tree_file(path)  # what `taskvisor check` prints, whole
    assert [p.line for p in problems] == [2]
    assert problems[0].text.startswith("invalid YAML: could not determine a constructor")
    assert len(problems[0].text) <= 1_000


def test_the_check_command_names_a_file_python_cannot_read_without_a_traceback(
    tmp_path: Path,
) -> None:
    for name, text, line in LONG_INTEGERS:
        path = write(tmp_path, name, text)
        run = subprocess.run(
            [sys.executable, "-m", "taskvisor", "check", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr
        assert (
            f"{path}:{line}: invalid {FORMATS[path.suffix]}: an integer of more than" in run.stderr
        )


def test_toml_lines_skip_multi_line_strings_and_follow_nested_tables(tmp_path: Path) -> None:
    text = """\
name = "app"
labels = { note = "x" }

[[children]]
name = "a"
target = "m:f"
kwargs = { text = \"\"\"
restart = "always"
\"\"\" }

[[children]]
name = "sub"
"quoted key" = 1

[children.intensity]
within = -1

[[children.children]]
name = "b"
target = "m:f"
'a.b' = 2
"""
    tree = read_tree_data(write(tmp_path, "t.toml", text))
    assert "children[0].restart" not in tree.lines  # inside the multi-line string
    assert tree.lines["children[1]"] == 11
    assert tree.lines["children[1].quoted key"] == 13
    assert tree.lines["children[1].intensity.within"] == 16
    assert tree.lines["children[1].children[0].name"] == 19
    assert tree.lines["children[1].children[0].a.b"] == 21
    assert tree.line_of("children[1].children[0].kind") == 18
    assert tree.line_of("nowhere.at.all") is None


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(TreeFileError, match=r"nope\.toml: cannot read: No such file"):
        load_tree_file(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"name = '\xff'\n")
    with pytest.raises(TreeFileError, match=r"bin\.toml: cannot read: not UTF-8 text"):
        load_tree_file(tmp_path / "bin.toml")


def test_yaml_without_pyyaml_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "t.yaml", "name: app\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    with pytest.raises(TreeFileError) as info:
        load_tree_file(path)
    assert str(info.value) == (
        f"{path}: reading a YAML tree file needs PyYAML: "
        "install the yaml extra: pip install 'taskvisor[yaml]'"
    )
    with pytest.raises(TreeFileError, match=r"pip install 'taskvisor\[yaml\]'"):
        dump_tree(SupervisorSpec("app"), "yaml")


# --------------------------------------------------------------------------- check


CHECKED = """\
name = "app"

[[children]]
name = "fine"
target = "{mod}:work"

[[children]]
name = "kind"
kind = "cal"
target = "{mod}:work"

[[children]]
name = "missing"
target = "{mod}:nope"

[[children]]
name = "no_module"
target = "no_such_module_xyz:work"

[[children]]
name = "coroutine"
target = "{mod}:coro"

[[children]]
name = "arguments"
target = "{mod}:work"
args = [1, 2]

[[children]]
name = "not_found"
kind = "subprocess"
command = ["no-such-program-xyz", "-v"]

[[children]]
name = "not_executable"
kind = "subprocess"
command = ["./data.txt"]
cwd = "{dir}"

[[children]]
name = "absent"
kind = "subprocess"
command = ["/no/such/program"]

[[children]]
name = "on_their_path"
kind = "subprocess"
command = ["tool"]
env = {{ PATH = "{dir}/bin" }}

[[children]]
name = "boom"
target = "{mod}_boom:work"

[[children]]
name = "not_callable"
target = "{mod}:VALUE"

[[children]]
name = "async_fine"
kind = "async"
target = "{mod}:coro"
"""


def make_checked(tmp_path: Path, mod: str) -> Path:
    (tmp_path / f"{mod}.py").write_text(
        "VALUE = 3\ndef work(ctx, n=1):\n    return n\nasync def coro(ctx):\n    return 1\n"
    )
    (tmp_path / f"{mod}_boom.py").write_text("raise SystemExit('no thanks')\n")
    (tmp_path / "data.txt").write_text("")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "tool").chmod(0o755)
    return write(tmp_path, "tree.toml", CHECKED.format(mod=mod, dir=tmp_path))


def test_check_names_every_kind_target_and_command_problem(tmp_path: Path) -> None:
    path = make_checked(tmp_path, "checked_tasks_a")
    spec, problems = check_tree_file(path)
    assert spec is not None  # the shape is fine: only what would fail at start is wrong
    assert [(p.line, p.text) for p in problems] == [
        (9, "children[1].kind: unknown kind 'cal' (valid kinds: async, call, subprocess)"),
        (
            14,
            "children[2].target: module 'checked_tasks_a' has no attribute 'nope' "
            "(from 'checked_tasks_a:nope')",
        ),
        (
            18,
            "children[3].target: cannot import module 'no_such_module_xyz' for "
            "'no_such_module_xyz:work': ModuleNotFoundError: No module named 'no_such_module_xyz'",
        ),
        (
            22,
            "children[4].target: 'checked_tasks_a:coro' is an async def function but the task's "
            "kind is 'call' (it would return a coroutine that never runs): set kind = \"async\"",
        ),
        (
            26,
            "children[5].target: 'checked_tasks_a:work' cannot be called with the task's "
            "context, args and kwargs (too many positional arguments); a target is called as "
            "fn(ctx, *args, **kwargs)",
        ),
        (32, "children[6].command: program 'no-such-program-xyz' not found on PATH"),
        (37, "children[7].command: program './data.txt' is not an executable file"),
        (43, "children[8].command: program '/no/such/program' does not exist"),
        (
            53,
            "children[10].target: importing 'checked_tasks_a_boom:work' raised SystemExit: "
            "no thanks",
        ),
        (57, "children[11].target: 'checked_tasks_a:VALUE' is not callable, got 3"),
    ]
    assert str(tmp_path) in sys.path  # targets import relative to the file's directory


def test_check_leaves_wrongly_typed_fields_to_the_shape_check(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.json",
        json.dumps(
            {
                "name": "app",
                "children": [
                    {"name": "a", "kind": 3, "target": "m:f"},
                    {"name": "b", "target": 5},
                    {"name": "c", "target": "json:dumps", "args": "x"},
                    {"name": "d", "kind": "subprocess", "command": "ls"},
                    {"name": "e", "target": "builtins:dict"},  # no signature: cannot tell
                ],
            }
        ),
    )
    _, problems = check_tree_file(path)
    assert [p.path for p in problems] == [
        "children[0].kind",
        "children[1].target",
        "children[2].args",
        "children[3].command",
    ]


def test_check_of_a_tree_nested_too_deeply(tmp_path: Path) -> None:
    data: dict[str, Any] = {"name": "leaf", "target": "m:f"}
    for i in range(60):
        data = {"name": f"s{i}", "children": [data]}
    _, problems = check_tree_file(write(tmp_path, "t.json", json.dumps(data)))
    assert [p.text for p in problems] == [
        "children[0]" + ".children[0]" * 49 + ": nesting deeper than 50 supervisors "
        "(MAX_DEPTH); flatten the tree"
    ]


def test_check_of_a_good_tree_finds_nothing(tmp_path: Path) -> None:
    (tmp_path / "good_tasks_b.py").write_text("def work(ctx):\n    return 1\n")
    path = write(
        tmp_path,
        "tree.json",
        json.dumps(
            {
                "name": "app",
                "children": [
                    {"name": "a", "target": "good_tasks_b:work"},
                    {"name": "p", "kind": "subprocess", "command": [sys.executable, "-V"]},
                    {"name": "s", "kind": "subprocess", "command": ["exit 3"], "shell": True},
                ],
            }
        ),
    )
    spec, problems = check_tree_file(path)
    assert problems == ()
    assert isinstance(spec, SupervisorSpec)


def test_check_reports_shape_and_import_problems_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.yaml",
        "name: app\nstrategy: one_for_al\nchildren:\n"
        "  - {name: a, target: 'nomod_c:f'}\n"
        "  - {name: b, target: 'm:f', restart: always}\n"
        "  - {name: c, kind: subprocess, command: ['${UNSET_VAR_C}']}\n",
    )
    spec, problems = check_tree_file(path, environ={})
    assert spec is None
    assert [(p.line, p.path) for p in problems] == [
        (2, "strategy"),
        (4, "children[0].target"),
        (5, "children[1].restart"),
        (5, "children[1].target"),  # a node's shape problem does not hide its target's
        (6, "children[2].command[0]"),  # unset: the program it would name is not looked for
    ]
    spec, problems = check_tree_file(tmp_path / "absent.toml")
    assert spec is None
    assert [p.text for p in problems] == ["cannot read: No such file or directory"]


# --------------------------------------------------------------------------- writing


def _nulls(data: Any) -> bool:
    if data is None:
        return True
    if isinstance(data, dict):
        return any(_nulls(v) for v in data.values())
    if isinstance(data, list):
        return any(_nulls(v) for v in data)
    return False


@st.composite
def trees(draw: st.DrawFn, *, nulls: bool = True) -> SupervisorSpec | DynamicSupervisorSpec:
    """Trees from taskvisor.testing with every-field tasks from tests/strategies added."""
    spec = draw(supervisor_specs(max_depth=2, max_children=3))
    tasks = []
    for i, task in enumerate(draw(st.lists(task_specs(), max_size=3))):
        significant = task.significant and task.restart is not Restart.PERMANENT
        tasks.append(attrs.evolve(task, name=f"t{i}", significant=significant))
    if not nulls:
        tasks = [
            t
            for t in tasks
            if not _nulls(
                spec_to_data(SupervisorSpec("x", auto_shutdown="all_significant", children=[t]))
            )
        ]
    if isinstance(spec, SupervisorSpec) and tasks:
        taken = {c.name for c in spec.children}
        extra = [t for t in tasks if t.name not in taken]
        significant_ok = spec.auto_shutdown.value != "never"
        extra = [attrs.evolve(t, significant=t.significant and significant_ok) for t in extra]
        spec = spec.evolve(children=[*spec.children, *extra])
    return spec


def _read(text: str, fmt: str) -> Any:
    if fmt == "toml":
        return tomllib.loads(text)
    if fmt == "json":
        return json.loads(text)
    return yaml.safe_load(text)


_DOLLARS = st.sampled_from(["${HOME}", "$${x}", "${X:-y}", "a$b", "${", "$", "$$"])


@settings(max_examples=150)
@given(
    spec=trees(nulls=False),
    fmt=st.sampled_from(["toml", "json", "yaml"]),
    dollars=st.lists(_DOLLARS, max_size=2),
)
def test_file_to_spec_to_file_round_trips_in_every_format(
    tmp_path_factory: pytest.TempPathFactory, spec: Any, fmt: str, dollars: list[str]
) -> None:
    """Written, read back (as `taskvisor run` reads, ${VAR} and all) and written again: equal."""
    spec = spec.evolve(labels={**spec.labels, **{f"d{i}": d for i, d in enumerate(dollars)}})
    path = tmp_path_factory.mktemp("round") / f"tree.{fmt}"
    write_tree_file(spec, path)
    text = path.read_text()
    assert _read(text, fmt)["name"] == spec.name  # the format's own parser reads it
    again = load_tree_file(path, environ={"HOME": "/somewhere"})
    assert again == spec
    assert dump_tree(again, fmt) == text  # type: ignore[arg-type]


@settings(max_examples=100)
@given(spec=trees())
def test_spec_to_data_holds_no_null_of_its_own(spec: Any) -> None:
    """A None in the data can only be a task's own argument (TOML then refuses to write it)."""
    data = spec_to_data(spec)

    def walk(node: Any, in_arguments: bool) -> None:
        if node is None:
            assert in_arguments
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, in_arguments or key in ("args", "kwargs"))
        elif isinstance(node, list):
            for value in node:
                walk(value, in_arguments)

    walk(data, False)
    if _nulls(data):
        with pytest.raises(InvalidSpec, match=r"TOML cannot hold a null \(None\) value"):
            dump_tree(spec, "toml")


def test_write_tree_file_writes_what_load_tree_file_reads(tmp_path: Path) -> None:
    spec = expected()
    for name in ("t.toml", "t.json", "t.yaml"):
        write_tree_file(spec, tmp_path / name)
        assert load_tree_file(tmp_path / name, environ={}) == spec
    text = (tmp_path / "t.toml").read_text()
    assert text.startswith('name = "app"\nstrategy = "one_for_all"\n')
    assert "[[children.children]]" in text
    with pytest.raises(TreeFileError, match="unknown tree file suffix"):
        write_tree_file(spec, tmp_path / "t.txt")


def test_a_tree_file_that_cannot_be_written_is_a_tree_file_error(tmp_path: Path) -> None:
    spec = expected()
    missing = tmp_path / "no such folder" / "t.toml"
    with pytest.raises(TreeFileError, match=r"t\.toml: cannot write: No such file or directory"):
        write_tree_file(spec, missing)
    long = tmp_path / ("d" * 100_000) / "t.toml"
    with pytest.raises(TreeFileError) as raised:
        write_tree_file(spec, long)
    assert len(str(raised.value)) <= 1000
    assert not missing.parent.exists()


@pytest.mark.parametrize("name", ["a\x00b.toml", Path("dir\x00") / "t.yaml"])
def test_a_path_with_a_nul_byte_is_named_not_a_value_error(tmp_path: Path, name: Any) -> None:
    said = r"'.*\\x00.*': not a file name: it holds a NUL byte"
    with pytest.raises(TreeFileError, match=said):
        load_tree_file(name)
    with pytest.raises(TreeFileError, match=said):
        write_tree_file(expected(), name)
    spec, problems = check_tree_file(name)
    assert spec is None
    assert [p.text for p in problems] == ["not a file name: it holds a NUL byte"]


def test_the_toml_writer_escapes_and_quotes() -> None:
    data = {
        "s": 'a"b\\c\n\t\x01\x7f é',
        "weird key": 1,
        "f": [1.5, float("inf"), float("-inf"), 1e300],
        "empty": {},
        "nested": [[1, {"a": {"b": True}}], []],
        "tables": [{"x": 1}, {"y": {"z": "w"}}],
    }
    text = toml_dumps(data)
    assert tomllib.loads(text) == data
    assert '"weird key" = 1' in text
    assert math.isnan(tomllib.loads(toml_dumps({"n": float("nan")}))["n"])
    with pytest.raises(InvalidSpec, match=r"^a\[1\]: TOML cannot hold a null"):
        toml_dumps({"a": [1, None]})
    with pytest.raises(InvalidSpec, match=r"^m: TOML keys are strings, got 1"):
        toml_dumps({"m": {1: 2}})
    with pytest.raises(InvalidSpec, match=r"^x: TOML cannot hold a set"):
        toml_dumps({"x": {1}})


def test_os_pathlike_and_str_paths_both_work(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", 'name = "app"\n')
    assert load_tree_file(os.fspath(path)) == load_tree_file(path) == SupervisorSpec("app")


# --------------------------------------------------------------------------- the reference page


def test_the_committed_reference_page_is_what_the_generator_writes() -> None:
    from taskvisor.cli._reference import PAGE, REGENERATE, tree_file_reference

    root = Path(__file__).resolve().parent.parent
    committed = (root / PAGE).read_text()
    assert committed == tree_file_reference(root), (
        f"{PAGE} is out of date with the spec classes: regenerate it with "
        f"`.venv/bin/{REGENERATE}` from the repository root and commit it"
    )


def test_the_generator_writes_the_page_from_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskvisor.cli._reference import PAGE, main, tree_file_reference

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "examples").mkdir()
    (tmp_path / "docs").mkdir()
    for name in ("quickstart.toml", "quickstart_failures.toml"):
        (tmp_path / "examples" / name).write_text((root / "examples" / name).read_text())
    monkeypatch.chdir(tmp_path)
    assert main() == 0
    assert capsys.readouterr().out == f"wrote {PAGE}\n"
    assert (tmp_path / PAGE).read_text() == tree_file_reference(root)


def test_the_reference_lists_every_field_of_every_spec_class() -> None:
    from taskvisor.actors import TaskSpec
    from taskvisor.cli._reference import _ABOUT, tree_file_reference
    from taskvisor.supervision import Backoff, Intensity

    page = tree_file_reference(Path(__file__).resolve().parent.parent)
    for cls in (SupervisorSpec, DynamicSupervisorSpec, TaskSpec, Intensity, Backoff):
        for field in attrs.fields(cls):
            if field.init:
                assert f"| `{field.name}` |" in page, (cls.__name__, field.name)
                assert field.name in _ABOUT, f"describe {cls.__name__}.{field.name} in _ABOUT"


def test_yaml_keeps_unicode_line_breaks_and_other_characters(tmp_path: Path) -> None:
    """PyYAML alone writes NEL raw in a quoted string and reads it back as a line break."""
    spec = SupervisorSpec("app", labels={"\x85": "x\u2028y", "é": "ü\u2029"})
    write_tree_file(spec, tmp_path / "t.yaml")
    assert load_tree_file(tmp_path / "t.yaml") == spec
    assert "é: " in (tmp_path / "t.yaml").read_text()  # other characters stay readable
