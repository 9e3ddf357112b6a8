"""The ``taskvisor`` command's parser, subcommands and logging set-up."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from taskvisor.actors import InvalidSpec, SqliteStore, StoreLocked, TaskvisorError
from taskvisor.supervision import (
    DynamicSupervisorSpec,
    Supervisor,
    SupervisorExhausted,
    SupervisorSpec,
    simulate,
)
from taskvisor.supervision._files import (
    TreeFileError,
    TreeFileProblem,
    add_to_sys_path,
    check_tree_file,
    load_tree_file,
)

from ._script import script_from_file

__all__ = ["EXIT_GAVE_UP", "EXIT_OK", "EXIT_USAGE", "JsonFormatter", "main"]

#: The tree stopped in order or shut itself down; ``check`` found nothing; ``simulate`` ran.
EXIT_OK = 0
#: The tree gave up (the chain is printed on stderr) or could not start.
EXIT_GAVE_UP = 1
#: Bad usage, or a tree file, script or store that cannot be used; nothing started.
EXIT_USAGE = 2

_EPILOG = """\
exit codes:
  0  the tree stopped in order (SIGTERM/SIGINT) or shut itself down; check: no problem
  1  the tree gave up (its chain of failures is printed) or could not start
  2  bad usage, or a tree file, script or store that cannot be used (nothing started)
"""

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Attributes some taskvisor records carry (child output: ``task_id``, ``stream``).
_EXTRAS = ("task_id", "stream")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
logger = logging.getLogger("taskvisor.cli")


class JsonFormatter(logging.Formatter):
    """Format a log record as one JSON object on one line.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``message``, and ``exc_info`` / ``stack_info`` (text) when the record
    has them.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON."""
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _EXTRAS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


@contextmanager
def _logging_to(stream: TextIO, level: str, fmt: str) -> Iterator[None]:
    """Send every log record at ``level`` and above to ``stream``; undo it afterwards."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    previous = root.level
    pykka_logger = logging.getLogger("pykka")
    pykka_previous = pykka_logger.level
    root.addHandler(handler)
    root.setLevel(level)
    pykka_logger.setLevel(max(logging.INFO, logging.getLevelName(level)))  # its DEBUG is noise
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        pykka_logger.setLevel(pykka_previous)
        handler.flush()


def _version() -> str:
    try:
        return importlib.metadata.version("taskvisor")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "(not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskvisor",
        description="Run, check and simulate supervision trees described in tree files "
        "(TOML, JSON, or YAML with the yaml extra).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run a tree file until a signal stops it or it ends",
        description="Check the tree file (as `taskvisor check`), start the tree and run it "
        "until SIGTERM or SIGINT stops it in order (a second signal stops it at once, "
        "killing every child) or it ends by itself. Targets import relative to the "
        "file's directory. Logs go to stderr.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("tree", metavar="TREE", help="the tree file (.toml, .json, .yaml, .yml)")
    run.add_argument(
        "--store",
        metavar="PATH",
        help="an SQLite file for the tasks' records: a restarted run resumes from it",
    )
    run.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=_LEVELS,
        default="INFO",
        help="the lowest level logged: DEBUG, INFO (default), WARNING, ERROR or CRITICAL",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines 'time level logger: message' (default), or one JSON object per line",
    )
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check",
        help="find every problem in a tree file without starting it",
        description="Check a tree file without starting anything: its shape, every kind, "
        "every target (imported relative to the file's directory, which runs its module's "
        "top level) and every subprocess program. Prints each problem as "
        "FILE:LINE: path: problem.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("tree", metavar="TREE", help="the tree file (.toml, .json, .yaml, .yml)")
    check.set_defaults(handler=_check)

    sim = commands.add_parser(
        "simulate",
        help="play a script of timed failures against a tree file, on a fake clock",
        description="Simulate the tree against a script file (TOML, JSON or YAML) of timed "
        "events and print the timeline and the outcome. Nothing runs: no target is "
        "imported. A script holds `events`, each with `at` (seconds) and `event`: fail "
        "(child, error), exit (child), timeout (child), start (supervisor, id, spec), "
        "terminate_child, restart_child or delete_child (child); optional `until` "
        "(seconds) and `seed`.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument("tree", metavar="TREE", help="the tree file (.toml, .json, .yaml, .yml)")
    sim.add_argument("script", metavar="SCRIPT", help="the script file (.toml, .json, .yaml)")
    sim.set_defaults(handler=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taskvisor`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: ``EXIT_OK`` (0), ``EXIT_GAVE_UP`` (1) or ``EXIT_USAGE`` (2).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (TaskvisorError, OSError) as exc:  # a user's mistake: one line, no traceback
        _error(str(exc))
        return EXIT_USAGE


def _error(text: str) -> None:
    print(f"taskvisor: error: {text}", file=sys.stderr)


def _report(problems: Sequence[TreeFileProblem], file: str) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)
    count = len(problems)
    print(f"{file}: {count} problem{'s' if count != 1 else ''}; nothing started", file=sys.stderr)


def _count(spec: SupervisorSpec | DynamicSupervisorSpec) -> tuple[int, int]:
    """Tasks and supervisors below ``spec`` (a dynamic supervisor's template counts once)."""
    tasks = supervisors = 0
    stack: list[Any] = [spec]
    while stack:
        node = stack.pop()
        below = [node.template] if isinstance(node, DynamicSupervisorSpec) else list(node.children)
        for child in below:
            if isinstance(child, (SupervisorSpec, DynamicSupervisorSpec)):
                supervisors += 1
                stack.append(child)
            else:
                tasks += 1
    return tasks, supervisors


def _check(args: argparse.Namespace) -> int:
    spec, problems = check_tree_file(args.tree)
    if problems or spec is None:
        _report(problems, args.tree)
        return EXIT_USAGE
    tasks, supervisors = _count(spec)
    print(f"{args.tree}: OK: tree {spec.name!r}, {tasks} task(s), {supervisors} supervisor(s)")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    with _logging_to(sys.stderr, args.log_level, args.log_format):
        spec, problems = check_tree_file(args.tree)
        if problems or spec is None:
            _report(problems, args.tree)
            return EXIT_USAGE
        add_to_sys_path(Path(args.tree).resolve().parent)
        store = None
        if args.store is not None:
            store = SqliteStore(args.store)  # a StoreError is reported by main (exit 2)
        try:
            return _run_tree(spec, store)
        finally:
            if store is not None:
                store.close()


def _run_tree(spec: SupervisorSpec | DynamicSupervisorSpec, store: SqliteStore | None) -> int:
    pending: list[int] = []  # a signal that came while the tree was starting
    with _signals_noted(pending):
        try:
            tree = Supervisor.start(spec, store=store)
        except StoreLocked as exc:  # nothing started: the store is another tree's
            _error(str(exc))
            return EXIT_USAGE
        except TaskvisorError as exc:
            _error(f"the tree {spec.name!r} could not start: {exc}")
            return EXIT_GAVE_UP
    try:
        if pending:
            name = signal.Signals(pending[0]).name
            logger.info(
                "%s: %s received while starting: stopping the tree in order", spec.name, name
            )
            tree.stop(None)
            tree.wait(0)
            return EXIT_OK
        logger.info("%s: running (SIGTERM or SIGINT stops the tree in order)", spec.name)
        signum = tree.run_forever()
    except SupervisorExhausted as exc:
        logger.error("%s", exc)  # one record: one JSON object with --log-format json
        return EXIT_GAVE_UP
    except KeyboardInterrupt:  # pragma: no cover - SIGINT between the two handlers (a race)
        tree.stop(None)
        return EXIT_OK
    finally:
        tree.stop()  # returns at once when the tree has ended; makes sure it has
    how = "shut itself down" if signum is None else "was stopped by a signal"
    logger.info("%s: the tree %s; exiting with 0", spec.name, how)
    return EXIT_OK


@contextmanager
def _signals_noted(pending: list[int]) -> Iterator[None]:
    """Note SIGTERM and SIGINT in ``pending`` (on the main thread) instead of acting on them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.signal(signum, lambda n, _f: pending.append(n)) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _simulate(args: argparse.Namespace) -> int:
    try:
        spec = load_tree_file(args.tree)
    except TreeFileError as exc:
        _report(exc.found, args.tree)
        return EXIT_USAGE
    try:
        script = script_from_file(args.script, spec)
    except TreeFileError as exc:
        _report(exc.found, args.script)
        return EXIT_USAGE
    try:
        sim = simulate(spec, script.events, seed=script.seed, until=script.until)
    except InvalidSpec as exc:
        _report(script.located(exc).found, args.script)
        return EXIT_USAGE
    print(sim)
    until = script.until
    late = [e for e in script.events if until is not None and e.at > until]
    if late:
        print(f"not played: {len(late)} script event(s) after until={until:g}s")
    if sim.gave_up:
        root = sim.chain[-1].supervisor if sim.chain else spec.name
        outcome = f"gave up: supervisor {root!r} at {sim.end:g}s ({sim.reason})"
    elif sim.shut_down:
        outcome = f"shut down: the root {spec.name!r} shut itself down at {sim.end:g}s"
    else:
        at = sim.end if until is None else max(sim.end, until)
        outcome = f"running: the tree still runs at {at:g}s"
    print(f"outcome: {outcome}")
    return EXIT_OK
