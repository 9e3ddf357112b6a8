"""``python -m taskvisor``: the ``taskvisor`` command (see ``taskvisor.cli``)."""

import sys

from taskvisor.cli import main

if __name__ == "__main__":
    sys.exit(main())
