"""What an evaluation gives, as every script prints, stores and reports it
(no torch here: the stored-codes path stays light)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class Evaluation:
    """The evaluation of one model (or one group of models, DCHN's views).

    ``rows``: (task, metrics) pairs, the task None for a single ranking
    (DCHN: "Image→Text", ...); ``metrics``: the JSON result; ``text``: what
    the published script prints instead of the standard table, if anything."""
    title: str
    metrics: dict
    rows: list = field(default_factory=list)
    text: str = ""
    grid: Any = None  # utils.report.outputs.GridInputs, where the data has images
    tables: list = field(default_factory=list)  # extra (title, header, rows) for the report
    queries: Any = None  # methods.base.Encoded
    database: Any = None
    save: Optional[Callable] = None  # save(path): writes --save-codes
    label: str = ""  # legend in plots and reports (method and bits)
