"""How a number was made: the code version, date, device and precision of a
run, recorded in every checkpoint (``provenance`` beside the config, recipe,
data and run settings) and carried into every JSON result, table row and
report; and the comparison ``reproduce.py`` makes before it reuses a cell."""

from __future__ import annotations

import datetime
import functools
import platform
import subprocess
from pathlib import Path
from typing import Mapping, Optional

ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """The checkout's commit (None outside a git checkout) and whether it
    has uncommitted changes, with the library versions that shape numbers."""
    import numpy
    import torch

    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
        dirty = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an unpacked archive): the versions below still say a lot
    return {"commit": commit, "dirty": dirty, "python": platform.python_version(),
            "torch": str(torch.__version__), "numpy": str(numpy.__version__)}


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


def precision_name(amp: Optional[str], device) -> str:
    """float32, or the autocast dtype --amp gives on this device."""
    from utils.engine.precision import amp_dtype

    dtype = amp_dtype(device, amp)
    return "float32" if dtype is None else f"float32 + autocast {str(dtype).replace('torch.', '')}"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def run_provenance(device, amp: Optional[str] = None) -> dict:
    """What a training run records about how it ran (its date is its start)."""
    return {"date": now(), "device": device_name(device), "precision": precision_name(amp, device),
            "code": code_version()}


# -- what a file says about itself ---------------------------------------------------------

# the recorded data settings that change the numbers (not where the files are)
DATA_KEYS = ("dataset", "img_size", "options", "protocol")


def of_checkpoint(obj) -> dict:
    """The provenance a checkpoint records (ours), or ``{"known": False}``
    for a file that records none (a published checkpoint)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("config"), Mapping):
        return {"known": False}
    run = obj.get("run") if isinstance(obj.get("run"), Mapping) else {}
    state = obj.get("train_state") if isinstance(obj.get("train_state"), Mapping) else {}
    made = obj.get("provenance") if isinstance(obj.get("provenance"), Mapping) else {}
    data = obj.get("data") if isinstance(obj.get("data"), Mapping) else {}
    recipe = obj.get("recipe") if isinstance(obj.get("recipe"), Mapping) else None
    out = {"known": True, "method": obj.get("method"), "config": dict(obj["config"]),
           "recipe": dict(recipe) if recipe is not None else None,
           "epoch": state.get("epoch"),  # the epochs behind this file's weights
           "seed": run.get("seed"), "data": {k: data.get(k) for k in DATA_KEYS if k in data},
           "amp": run.get("amp"), "processes": run.get("processes")}
    out.update({k: made.get(k) for k in ("date", "device", "precision", "code")})
    return out


def mismatches(recorded: Mapping, asked: Mapping) -> list:
    """What differs between a file's provenance and what a command asks for,
    as short phrases ("epochs 2, asked 15"); empty when they agree.  A file
    without provenance never agrees."""
    if not recorded.get("known"):
        return ["no record of how it was trained (not written by this toolkit)"]
    out = []
    for section in ("config", "recipe"):
        have, want = recorded.get(section) or {}, asked.get(section) or {}
        for key in want:
            if key in have and _differ(have[key], want[key]):
                out.append(f"{key} {have[key]}, asked {want[key]}")
            elif key not in have and section == "recipe" and not have:
                out.append("no recorded recipe")
                break
    if "seed" in asked and recorded.get("seed") != asked["seed"]:
        out.append(f"seed {recorded.get('seed')}, asked {asked['seed']}")
    have_data, want_data = recorded.get("data") or {}, asked.get("data") or {}
    for key in want_data:
        if key in have_data and _differ(have_data[key] or None, want_data[key] or None):
            out.append(f"{key} {have_data[key]}, asked {want_data[key]}")
    return out


def _differ(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) != list(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return dict(a) != dict(b)
    if isinstance(a, float) or isinstance(b, float):
        try:
            return float(a) != float(b)
        except (TypeError, ValueError):
            return True
    return a != b


def summary(recorded: Mapping) -> str:
    """One line for a report or table footnote."""
    if recorded.get("stored"):
        return f"stored {recorded['stored']}: how they were made is not recorded in the file"
    if not recorded.get("known"):
        return "provenance unknown (not written by this toolkit)"
    recipe = recorded.get("recipe") or {}
    code = recorded.get("code") or {}
    commit = (code.get("commit") or "no commit")[:10] + (" (modified)" if code.get("dirty") else "")
    run = recorded.get("epochs_run", recorded.get("epoch"))
    return (f"{run} of {recipe.get('epochs', '?')} epochs, batch "
            f"{recipe.get('batch', '?')}, lr {recipe.get('lr', '?')}, seed {recorded.get('seed')}, "
            f"{recorded.get('precision') or 'float32'}, {recorded.get('device') or 'device ?'}, "
            f"code {commit}, {recorded.get('date') or 'date ?'}")
