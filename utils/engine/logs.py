"""What a run prints goes through ``logging``: to stdout, and (for training)
also to the official log file ``log/<len>bits_<dataset>_<MMDDHHMM>.txt``.
Progress bars go to stderr and stay out of the file.  Under torchrun only
the first process prints."""

from __future__ import annotations

import contextlib
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

LOGGER_NAME = "hashing"
log = logging.getLogger(LOGGER_NAME)


def log_path(log_dir, bits, dataset: str) -> Path:
    """The official log name: <len>bits_<dataset>_<MMDDHHMM>.txt."""
    return Path(log_dir) / f"{bits}bits_{dataset}_{datetime.now().strftime('%m%d%H%M')}.txt"


class LogFile(logging.FileHandler):
    """The log file; a write that fails (a full disk) stops it with one line
    on stderr instead of logging's traceback, and the run goes on."""

    def handleError(self, record):
        exc = sys.exc_info()[1]
        log.removeHandler(self)
        sys.stderr.write(f"cannot write the log file {self.baseFilename}: "
                         f"{getattr(exc, 'strerror', None) or exc}; logging to stdout only\n")


@contextlib.contextmanager
def logging_to(path: Optional[Path] = None, enabled: bool = True):
    """Messages of the ``hashing`` logger go to stdout (and ``path``, appended)
    inside the block; with ``enabled`` False (processes other than the first)
    nothing is printed."""
    handlers = []
    if enabled:
        handlers.append(logging.StreamHandler(sys.stdout))
        if path is not None:
            try:
                handlers.append(LogFile(path, mode="a", encoding="utf-8"))
            except OSError as exc:
                from utils.errors import UsageError

                raise UsageError(f"cannot write the log file {path}: "
                                 f"{exc.strerror or exc}") from None
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
    old_level, old_propagate = log.level, log.propagate
    log.setLevel(logging.INFO if enabled else logging.CRITICAL + 1)
    log.propagate = False
    try:
        yield log
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
        log.setLevel(old_level)
        log.propagate = old_propagate
