"""The files a run reads and writes, and the one guard every script puts in
front of them.

``RunFiles`` names what a training run writes (the best file, the resume
file beside it, per-evaluation snapshots, the log); a method decides the
names (``methods.base.Method.run_files``), the loop writes them.

``claim_outputs`` is checked before any long work, by every script, for
every file it will write:

* each output can be written (its folder exists, it is not a folder);
* no output is also an input of the same call (``--json`` naming the
  ``--load`` checkpoint), and no two outputs are the same file;
* a *protected* output (a checkpoint) that exists is refused unless the run
  continues it (``--resume``) or ``--overwrite`` is given;
* each protected output is locked for the life of the process (an
  ``O_EXCL`` lock file beside it holding our PID), so two runs started
  together on the same new name cannot both write it: the second stops.
  A lock whose process is gone is taken over.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

from utils.atomic import leftovers
from utils.engine.logs import log
from utils.errors import UsageError


@dataclass(frozen=True)
class RunNames:
    """Where a user asked a run's files to go (the output flags)."""
    save: Optional[str] = None  # the best file's name (--save)
    checkpoint_dir: str = "checkpoint"
    log_dir: str = "log"
    tag: str = ""  # appended to run names that have room for it (triplet --log_postfix)


@dataclass(frozen=True)
class RunFiles:
    """The files one training run writes."""
    last: Path  # the resume file, written after every epoch
    best: Optional[Path] = None  # the lowest-loss / highest-mAP file (None: the method keeps none)
    snapshot_pattern: Optional[str] = None  # official snapshot per evaluation, "{epoch}" 0-based
    log: Optional[Path] = None
    folder: Optional[Path] = None  # a run folder of the method's own (triplet), checked as a whole
    flag: str = "--save"  # the flag that names these files, for messages
    dir_flag: str = "--checkpoint-dir"  # the flag that names their folder

    @property
    def evaluated(self) -> Path:
        """The file a user evaluates: the best one, or the last where none is kept."""
        return self.best if self.best is not None and self.best.is_file() else self.last

    def outputs(self) -> list:
        return [p for p in (self.best, self.last) if p is not None]


def last_path_for(best_path) -> Path:
    """checkpoint/m.tar -> checkpoint/m_last.tar: the resume file of a run."""
    best_path = Path(best_path)
    return best_path.with_name(f"{best_path.stem}_last{best_path.suffix}")


def check_writable_file(path, flag: str) -> Path:
    """Fail early (before any long work) when ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {flag} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {flag} {path}: permission denied")
    if path.is_dir():
        raise UsageError(f"cannot write {flag} {path}: it is a folder")
    return path


def ensure_dir(path, flag: str) -> Path:
    """Create a folder the run will write to, or fail before any training."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {flag} {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {flag} {path}: permission denied")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.abspath(a) == os.path.abspath(b)


@dataclass
class Output:
    path: Path
    flag: str
    protected: bool = False  # a checkpoint: never replaced by a fresh run without --overwrite


@dataclass
class Claim:
    """What ``claim_outputs`` checked and locked."""
    outputs: list = field(default_factory=list)
    locks: list = field(default_factory=list)

    def release(self) -> None:
        for lock in self.locks:
            _release(lock)
        self.locks = []


_HELD: set = set()


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(path: Path, flag: str) -> Optional[Path]:
    """Take ``path``'s lock for this process (None when this process holds it already)."""
    lock = _lock_path(path)
    if str(lock) in _HELD:
        return None
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid():
                return None
            if _alive(pid):
                raise UsageError(f"{flag} {path}: another run (process {pid}) is writing it; "
                                 f"wait for it to finish, or use another name")
            try:  # its process is gone: a stale lock
                lock.unlink()
            except OSError:
                pass
            continue
        except OSError as exc:
            raise UsageError(f"cannot write {flag} {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        _HELD.add(str(lock))
        return lock
    raise UsageError(f"{flag} {path}: cannot take its lock {lock}")


def _release(lock: Path) -> None:
    _HELD.discard(str(lock))
    try:
        if lock.read_text().strip() == str(os.getpid()):
            lock.unlink()
    except OSError:
        pass


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD):
        _release(Path(lock))


def _remove_leftovers(path: Path) -> None:
    """Temporary files of an interrupted write of ``path``: with its lock held,
    no run of ours is writing them, so they are removed (and said so)."""
    found = leftovers(path)
    for tmp in found:
        try:
            tmp.unlink()
        except OSError:
            pass
    if found:
        log.warning(f"removed {len(found)} temporary file(s) an interrupted run left beside "
                    f"{path} ({found[0].name}{', ...' if len(found) > 1 else ''})")


def claim_outputs(outputs: Sequence[Output], inputs: Iterable[Tuple[object, str]] = (),
                  continuing: bool = False, overwrite: bool = False, lock: bool = True) -> Claim:
    """Check every output of a call before any long work, and lock the protected ones.

    ``inputs`` are (path, flag) of the files the call reads; ``continuing``:
    the run resumes its own files, so the protected ones may exist; ``lock``
    False: check only (the other processes of a torchrun world, whose first
    process writes the files)."""
    claim = Claim(list(outputs))
    seen: list = []
    inputs = [(Path(p), flag) for p, flag in inputs if p is not None]
    for out in claim.outputs:
        out.path = Path(out.path)
        check_writable_file(out.path, out.flag)
        for path, flag in inputs:
            if _same_file(out.path, path):
                raise UsageError(f"{out.flag} {out.path} is also the {flag} file this call reads; "
                                 f"write to another file")
        for other in seen:
            if _same_file(out.path, other.path):
                raise UsageError(f"{out.flag} and {other.flag} both name {out.path}; "
                                 f"give each output its own file")
        seen.append(out)
    try:
        for out in claim.outputs:
            if not out.protected:
                continue
            taken = _acquire(out.path, out.flag) if lock else None
            if taken is not None:
                claim.locks.append(taken)
                _remove_leftovers(out.path)
            if out.path.exists() and not continuing and not overwrite:
                raise UsageError(f"{out.flag} {out.path} exists; pass --resume auto to continue "
                                 f"that run or --overwrite to start afresh and replace it")
    except BaseException:
        claim.release()
        raise
    return claim
