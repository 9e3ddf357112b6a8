"""Typing test: mypy --strict accepts the right uses of the supervisor specs and rejects misuse.

Not collected by pytest; ``.ci/check`` runs ``mypy --strict`` on it. Each
``# type: ignore[code]`` marks a line mypy must reject: if it stopped
rejecting it, ``warn_unused_ignores`` (on under --strict) fails the check.
"""

from __future__ import annotations

from typing import assert_type

from taskvisor.actors import Restart, TaskSpec
from taskvisor.supervision import (
    AutoShutdown,
    ChildSpec,
    DynamicSupervisorSpec,
    Strategy,
    SupervisorSpec,
    dynamic_supervisor_spec_from_data,
    spec_from_data,
    supervisor_spec_from_data,
)

task = TaskSpec(name="a", target="app.tasks:work")

# Accepted: strings and enums, a positional name, a list of any child specs.
ok = SupervisorSpec(
    "app",
    strategy="one_for_all",
    auto_shutdown="any_significant",
    restart="transient",
    shutdown="infinity",
    children=[task, SupervisorSpec("sub", strategy=Strategy.REST_FOR_ONE)],
)
SupervisorSpec("app", strategy=Strategy.ONE_FOR_ONE, auto_shutdown=AutoShutdown.NEVER)
SupervisorSpec("app", restart=Restart.TEMPORARY, shutdown=5.0)
SupervisorSpec("app", shutdown=5, children=(task,))
tasks: list[TaskSpec] = [task]
SupervisorSpec("app", children=tasks)  # a list of tasks is a sequence of child specs
DynamicSupervisorSpec("pool", template=task, restart="temporary", auto_shutdown="never")
assert_type(ok.children, tuple[ChildSpec, ...])
assert_type(ok.strategy, Strategy)

# Rejected: misspelt strings, a shutdown with units, children that are not specs.
SupervisorSpec("app", strategy="one_for_everything")  # type: ignore[arg-type]
SupervisorSpec("app", auto_shutdown="always")  # type: ignore[arg-type]
SupervisorSpec("app", restart="always")  # type: ignore[arg-type]
SupervisorSpec("app", shutdown="5s")  # type: ignore[arg-type]
SupervisorSpec("app", children=["a"])  # type: ignore[list-item]
SupervisorSpec("app", children=task)  # type: ignore[arg-type]
DynamicSupervisorSpec("pool", template=task, restart="forever")  # type: ignore[arg-type]
DynamicSupervisorSpec("pool", template=task, shutdown="never")  # type: ignore[arg-type]

# spec_from_data returns either kind; the two precise functions return one each.
data = {"name": "app", "children": [{"name": "a", "target": "app.tasks:work"}]}
either = spec_from_data(data)
print(either.children)  # type: ignore[union-attr]
static = supervisor_spec_from_data(data)
assert_type(static, SupervisorSpec)
assert_type(static.children, tuple[ChildSpec, ...])
dynamic = dynamic_supervisor_spec_from_data(
    {"name": "pool", "template": {"name": "w", "target": "a:b"}}
)
assert_type(dynamic.template, ChildSpec)
