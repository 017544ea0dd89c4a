"""``MetricOptions``: which numbers an evaluation reports, as the metric flags
of the scripts ask for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

DEFAULT_TOPK = (1, 5, 10)


@dataclass(frozen=True)
class MetricOptions:
    radius: Optional[int] = 2  # None: no radius entries (score ranking)
    topk: tuple = DEFAULT_TOPK
    curve: Optional[tuple] = None  # None: the official positions below N, then N
    map_at: tuple = ()
    skip_no_relevant: bool = False
    backend: str = "auto"

    @classmethod
    def of(cls, *layers) -> "MetricOptions":
        """Options from dicts of set values, later ones winning (e.g. a
        method's defaults, then what the user set)."""
        values = {}
        for layer in layers:
            values.update({k: v for k, v in layer.items() if v is not None})
        for name in ("topk", "curve", "map_at"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def ranking_kwargs(self) -> dict:
        return dict(topk=self.topk, curve_positions=self.curve, map_at=self.map_at,
                    skip_no_relevant=self.skip_no_relevant)
