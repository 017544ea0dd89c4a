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


@contextlib.contextmanager
def logging_to(path: Optional[Path] = None, enabled: bool = True):
    """Messages of the ``hashing`` logger go to stdout (and ``path``, appended)
    inside the block; with ``enabled`` False (processes other than the first)
    nothing is printed."""
    handlers = []
    if enabled:
        handlers.append(logging.StreamHandler(sys.stdout))
        if path is not None:
            handlers.append(logging.FileHandler(path, mode="a", encoding="utf-8"))
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
