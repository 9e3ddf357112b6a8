"""Every code block in the docs and the README runs, or is checked, or is marked as not run.

The rules, for each fenced block of ``README.md`` and ``docs/**/*.md``; a
marker is an HTML comment on the line before the block (invisible on the site):

- ``python``: runs in a fresh interpreter from the repository root, exits 0
  and prints something (a block asserts what it shows). Never skipped. A
  block that only includes a file of ``examples/`` by snippet is run by
  ``tests/test_examples.py``. Marked ``<!-- docs-test: pytest -->``, it is a
  test module: it runs under pytest with the ``taskvisor.testing`` plugin
  and must pass.
- ``toml``, ``json``, ``yaml``: parse; a block that holds a tree (a
  ``children`` or ``template`` key) is read with ``load_tree_file`` (an
  empty environment: ``${VAR:-default}`` takes its default), and must be
  refused with ``TreeFileError`` when its marker ends with ``invalid``.
- Marked ``<!-- docs-test: save NAME -->``, a block is also saved as NAME for
  the page's ``run-here`` blocks (a ``python`` block marked so is saved, not
  run alone: it is the module a tree file names).
- ``sh`` marked ``<!-- docs-test: run -->`` runs with bash from the
  repository root, ``run-here`` in a fresh folder holding the page's saved
  files; either with the venv's ``bin`` first on ``PATH``. It must exit 0,
  or N when marked ``run exit=N``. A block right after it marked
  ``<!-- docs-test: output -->`` shows its output: each of its lines must
  be a line the command printed, where ``...`` stands for any text (a time,
  a pid) and a line of ``...`` alone for lines left out.
- anything else is marked ``<!-- docs-test: skip <reason> -->``, saying why
  it is not run (it needs systemd, it installs from an index).

Snippet lines (``--8<-- "path"``, or paths between two ``--8<--`` lines) are
replaced by the files they name, as the site build does.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from taskvisor.supervision import SupervisorSpec, TreeFileError, load_tree_file, spec_from_data

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCUMENTS = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
SNIPPET = re.compile(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$')
CHECKED = {"python", "toml", "json", "yaml"}


@attrs.frozen
class Block:
    """One fenced code block of a Markdown file."""

    where: str  # "docs/pages/tutorial.md:42"
    lang: str
    code: str
    marker: str | None
    includes: tuple[str, ...]  # the files its snippet lines named


def _resolve(code: str) -> tuple[str, tuple[str, ...]]:
    """Replace snippet lines by the files they name: ``--8<-- "path"``, or the block
    form (paths, one a line, between two ``--8<--`` lines) that ruff leaves alone."""
    out, includes = [], []
    in_block = False
    for line in code.splitlines(keepends=True):
        found = SNIPPET.match(line)
        if line.strip() == "--8<--":
            in_block = not in_block
            continue
        path = found["path"] if found else line.strip() if in_block else None
        if path:
            includes.append(path)
            assert (ROOT / path).is_file(), f"snippet names a missing file: {path}"
            out.append((ROOT / path).read_text())
        elif not in_block:
            out.append(line)
    return "".join(out), tuple(includes)


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening["indent"], opening["fence"], opening["lang"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = MARKER.match(before)
        code, includes = _resolve("\n".join(body) + "\n")
        found.append(
            Block(
                where=f"{path.relative_to(ROOT)}:{start + 1}",
                lang=lang,
                code=code,
                marker=marker[1] if marker else None,
                includes=includes,
            )
        )
    return found


BLOCKS = [b for path in DOCUMENTS for b in blocks_of(path)]


def _blocks(select: Any) -> list[Any]:
    chosen = [b for b in BLOCKS if select(b)]
    return [pytest.param(b, id=b.where) for b in chosen]


def _is_example(block: Block) -> bool:
    """A python block that is one file of examples/, included (run by test_examples.py)."""
    return (
        block.lang == "python"
        and len(block.includes) == 1
        and block.includes[0].startswith("examples/")
        and block.code == (ROOT / block.includes[0]).read_text()
    )


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, check=False, env=env, **kwargs
    )


# ------------------------------------------------------------------------------ the rules


def _marker(block: Block) -> str:
    return block.marker or ""


def _runs(block: Block) -> bool:
    return block.lang == "sh" and _marker(block).split(" ")[0] in ("run", "run-here")


def test_every_block_is_run_checked_or_marked() -> None:
    problems = []
    for i, b in enumerate(BLOCKS):
        marker = _marker(b)
        if marker and not re.match(r"(skip|output|save|run|run-here|pytest)\b", marker):
            problems.append(f"{b.where}: unknown marker {marker!r}")
        if marker.endswith(" invalid") and not marker.startswith("save "):
            problems.append(f"{b.where}: only a saved block is marked invalid")
        if marker.startswith("skip"):
            if b.lang == "python":
                problems.append(f"{b.where}: a python block is never skipped")
            elif not marker[len("skip") :].strip():
                problems.append(f"{b.where}: say why it is skipped: <!-- docs-test: skip why -->")
        elif marker.startswith("save ") and b.lang == "python":
            page = b.where.rsplit(":", 1)[0]
            if not any(_runs(r) and r.where.startswith(page + ":") for r in BLOCKS):
                problems.append(f"{b.where}: a saved python block needs a run-here block")
        elif marker == "output":
            if i == 0 or not _runs(BLOCKS[i - 1]):
                problems.append(f"{b.where}: an output block must follow a block that runs")
        elif b.lang not in CHECKED and not _runs(b):
            problems.append(
                f"{b.where}: a {b.lang or 'plain'} block that no test runs: run it "
                "(<!-- docs-test: run -->) or mark it (<!-- docs-test: skip why -->)"
            )
    assert not problems, "\n".join(problems)


def test_the_docs_have_blocks_of_every_checked_kind() -> None:
    """The rules above are not vacuous: each of them finds blocks to check."""
    langs = {b.lang for b in BLOCKS if not _marker(b).startswith("skip")}
    assert {"python", "toml", "sh"} <= langs
    markers = {_marker(b).split(" ")[0] for b in BLOCKS}
    assert {"pytest", "save", "run-here", "output"} <= markers
    assert any(_is_example(b) for b in BLOCKS)


def _plain_python(block: Block) -> bool:
    return block.lang == "python" and block.marker is None and not _is_example(block)


@pytest.mark.parametrize("block", _blocks(_plain_python))
def test_python_block_runs(block: Block) -> None:
    done = run([sys.executable, "-c", block.code], cwd=ROOT)
    assert done.returncode == 0, f"{block.where}:\n{done.stderr}"
    assert done.stdout, f"{block.where} printed nothing"


@pytest.mark.parametrize("block", _blocks(_is_example))
def test_included_example_is_run_by_test_examples(block: Block) -> None:
    (path,) = block.includes
    assert f'"{Path(path).name}"' in (ROOT / "tests" / "test_examples.py").read_text()


@pytest.mark.parametrize("block", _blocks(lambda b: b.lang == "python" and b.marker == "pytest"))
def test_python_test_block_passes_under_pytest(block: Block, tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["taskvisor.testing"]\n')
    (tmp_path / "test_from_docs.py").write_text(block.code)
    done = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"{block.where}:\n{done.stdout}\n{done.stderr}"
    assert re.search(r"\b\d+ passed\b", done.stdout), done.stdout
    assert " failed" not in done.stdout, done.stdout
    assert " skipped" not in done.stdout, done.stdout


@pytest.mark.parametrize("block", _blocks(lambda b: b.lang in {"toml", "json", "yaml"}))
def test_data_block_parses(block: Block, tmp_path: Path) -> None:
    if block.lang == "toml":
        data = tomllib.loads(block.code)
    elif block.lang == "json":
        data = json.loads(block.code)
    else:
        data = yaml.safe_load(block.code)
    if not (isinstance(data, dict) and ({"children", "template"} & data.keys())):
        return
    # A tree: read as `taskvisor run` reads it (${VAR:-default} expanded, shape checked).
    path = tmp_path / f"tree.{block.lang}"
    path.write_text(block.code)
    if _marker(block).endswith(" invalid"):
        with pytest.raises(TreeFileError):
            load_tree_file(path, environ={})
    else:
        load_tree_file(path, environ={})


def _saved(page: str) -> dict[str, str]:
    return {
        _marker(b).split(" ")[1]: b.code
        for b in BLOCKS
        if b.where.rsplit(":", 1)[0] == page and _marker(b).startswith("save ")
    }


@pytest.mark.parametrize("block", _blocks(_runs))
def test_shell_block_runs(block: Block, tmp_path: Path) -> None:
    marker = _marker(block)
    cwd = ROOT
    if marker.startswith("run-here"):
        for name, code in _saved(block.where.rsplit(":", 1)[0]).items():
            (tmp_path / name).write_text(code)
        cwd = tmp_path
    done = run(["bash", "-euo", "pipefail", "-c", block.code], cwd=cwd)
    expected = re.search(r"exit=(\d+)", marker)
    want = int(expected[1]) if expected else 0
    assert done.returncode == want, f"{block.where}:\n{done.stdout}\n{done.stderr}"
    after = BLOCKS.index(block) + 1
    if after < len(BLOCKS) and _marker(BLOCKS[after]) == "output":
        printed = [ln.strip() for ln in (done.stdout + done.stderr).splitlines()]
        for line in BLOCKS[after].code.splitlines():
            if line.strip() and line.strip() != "...":
                shown = ".*".join(re.escape(part) for part in line.strip().split("..."))
                assert any(re.fullmatch(shown, p) for p in printed), (
                    f"{BLOCKS[after].where}: not printed: {line}\n{done.stdout}{done.stderr}"
                )


# --------------------------------------------------------------- files that cannot run here


def _block_in(page: str, lang: str) -> Block:
    (block,) = [b for b in BLOCKS if b.where.startswith(page + ":") and b.lang == lang]
    return block


def test_the_systemd_unit_fits_the_tree_it_runs() -> None:
    """The unit file of the systemd how-to (systemd does not run here): it runs the
    tree file with `taskvisor run`, signals only the main process, and gives the
    tree more time to stop than its children's graces add up to."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(_block_in("docs/pages/how-to/systemd.md", "ini").code)
    service = unit["Service"]
    assert re.fullmatch(r"\S+/taskvisor run /etc/app/tree\.toml", service["ExecStart"])
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert service["Type"] == "exec"
    assert service["RestartPreventExitStatus"] == "2"  # an invalid file: do not loop
    spec = spec_from_data(tomllib.loads(_block_in("docs/pages/how-to/systemd.md", "toml").code))
    assert isinstance(spec, SupervisorSpec)
    graces = [c.shutdown for c in spec.children]
    assert all(isinstance(g, float) for g in graces), graces  # no "infinity" child
    assert int(service["TimeoutStopSec"]) > sum(float(g) for g in graces)
    assert "SuccessExitStatus" not in service  # exit 1 (gave up) stays a failure


def test_the_dockerfile_runs_the_tree_as_pid_1_in_exec_form() -> None:
    """The Dockerfile of the Docker how-to (Docker does not run here): an exec-form
    ENTRYPOINT, so `docker stop`'s SIGTERM reaches `taskvisor run` itself."""
    lines = _block_in("docs/pages/how-to/docker.md", "dockerfile").code.splitlines()
    (entry,) = [ln for ln in lines if ln.startswith("ENTRYPOINT")]
    argv = json.loads(entry.removeprefix("ENTRYPOINT").strip())
    assert argv[:2] == ["taskvisor", "run"]
    assert not any("tini" in ln for ln in lines)
    assert any(ln.startswith("STOPSIGNAL SIGTERM") for ln in lines)
