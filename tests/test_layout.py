"""The package installs as the namespace ``taskvisor`` and shadows nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import taskvisor.actors
import taskvisor.supervision

ROOT = Path(__file__).resolve().parent.parent


def test_two_halves_share_one_namespace_root() -> None:
    import taskvisor

    assert not hasattr(taskvisor, "__file__") or taskvisor.__file__ is None
    paths = {Path(p).resolve() for p in taskvisor.__path__}
    assert ROOT / "actors" / "taskvisor" in paths
    assert ROOT / "supervision" / "taskvisor" in paths
    assert Path(taskvisor.actors.__file__).parent == ROOT / "actors/taskvisor/actors"
    assert Path(taskvisor.supervision.__file__).parent == (
        ROOT / "supervision/taskvisor/supervision"
    )


def test_no_init_at_namespace_or_repo_folders() -> None:
    for folder in ("actors", "supervision"):
        assert not (ROOT / folder / "__init__.py").exists()
        assert not (ROOT / folder / "taskvisor" / "__init__.py").exists()
    for half in ("actors/taskvisor/actors", "supervision/taskvisor/supervision"):
        assert (ROOT / half / "py.typed").exists()


def test_installed_supervision_package_is_not_shadowed(tmp_path: Path) -> None:
    """A third-party ``supervision`` package wins even when run from the repo root."""
    site = tmp_path / "site"
    (site / "supervision").mkdir(parents=True)
    (site / "supervision" / "__init__.py").write_text("MARK = 'third-party'\n")
    code = (
        "import sys; sys.path.append(sys.argv[1]); import supervision, actors;"
        "import taskvisor.supervision as ours;"
        "print(supervision.MARK, getattr(actors, '__file__', None), ours.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["third-party", "None", "taskvisor.supervision"]


def test_public_names_live_at_public_paths() -> None:
    for module in (taskvisor.actors, taskvisor.supervision):
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type):
                assert obj.__module__ == module.__name__, name
