"""The ``taskvisor`` command: run, check and simulate supervision trees from tree files.

``taskvisor run TREE`` runs a tree file until a signal stops it or it ends
by itself, ``taskvisor check TREE`` finds every problem in one without
starting anything, and ``taskvisor simulate TREE SCRIPT`` plays a script
of timed failures against it on a fake clock. ``python -m taskvisor`` is
the same command.

Exit codes:

- 0: the tree stopped in order (SIGTERM or SIGINT) or shut itself down
  normally; ``check`` found no problem; ``simulate`` ran.
- 1: the tree gave up (its chain of failures is printed on stderr), or
  could not start.
- 2: bad usage (an unknown option, a missing argument) or a tree file (or
  script, or store) that cannot be read or is not valid; nothing started.
"""

from ._main import EXIT_GAVE_UP, EXIT_OK, EXIT_USAGE, JsonFormatter, main

__all__ = ["EXIT_GAVE_UP", "EXIT_OK", "EXIT_USAGE", "JsonFormatter", "main"]
