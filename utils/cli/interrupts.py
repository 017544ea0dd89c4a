"""Ctrl-C at any moment of a script is one line and exit status 130, also
while torch is being imported (before ``run_script`` is reached): every
script imports this module first.  Loader worker processes ignore Ctrl-C
(``utils.engine.rng.seed_worker``), so that only the main process reports it."""

import os
import sys

EXIT_INTERRUPTED = 130


def _hook(kind, value, traceback):
    if issubclass(kind, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    sys.__excepthook__(kind, value, traceback)


sys.excepthook = _hook
