"""A picture of what the queries retrieve: one row per query, the query image
(blue frame) followed by its top-k database images, each in a green frame
(same identity / a shared label) or a red one, with its Hamming distance (or
PQ score) written under it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np

FRAME = 4
TEXT_HEIGHT = 14
COLOURS = {"query": (40, 90, 220), "right": (20, 170, 60), "wrong": (220, 40, 40)}


@dataclass
class GridLayout:
    """Where each cell is: boxes[row][col] = (left, top, right, bottom) of its
    frame (col 0 is the query), and its frame colour."""
    size: tuple
    boxes: List[List[tuple]]
    colours: List[List[tuple]]


def to_uint8_image(tensor) -> np.ndarray:
    """A [3, H, W] (or [H, W, 3]) image tensor of any normalisation as uint8
    HWC, stretched to its own range (for display only)."""
    array = np.asarray(tensor, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return (scaled * 255).round().astype(np.uint8)


def ties_shown(values) -> bool:
    """Whether a row shows two items at the same distance (or score)."""
    return any(len(set(map(float, row))) < len(row) for row in values)


TIE_NOTE = "equal distances: database index order"


def draw_grid(query_images: Sequence, result_images: Sequence[Sequence], relevant, values, path,
              cell: int = 72, value_format: str = "{:g}", note: str = "") -> GridLayout:
    """Write the grid to ``path`` (PNG).  ``relevant`` and ``values`` are
    [queries, k]; images are uint8 HWC arrays (resized to ``cell``);
    ``note``: a line written under the grid (e.g. how ties are ordered)."""
    from PIL import Image, ImageDraw

    rows, k = len(query_images), len(result_images[0]) if result_images else 0
    step = cell + 2 * FRAME
    width, height = (k + 1) * step + FRAME, rows * (step + TEXT_HEIGHT) + FRAME
    height += TEXT_HEIGHT if note else 0
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    boxes, colours = [], []
    for r in range(rows):
        top = FRAME + r * (step + TEXT_HEIGHT)
        row_boxes, row_colours = [], []
        for c in range(k + 1):
            left = FRAME + c * step
            if c == 0:
                image, colour, text = query_images[r], COLOURS["query"], "query"
            else:
                image = result_images[r][c - 1]
                colour = COLOURS["right" if relevant[r][c - 1] else "wrong"]
                text = value_format.format(values[r][c - 1])
            box = (left, top, left + step - 1, top + step - 1)
            draw.rectangle(box, fill=colour)
            tile = Image.fromarray(np.asarray(image)).convert("RGB").resize((cell, cell))
            canvas.paste(tile, (left + FRAME, top + FRAME))
            draw.text((left + 2, top + step), text, fill=(0, 0, 0))
            row_boxes.append(box)
            row_colours.append(colour)
        boxes.append(row_boxes)
        colours.append(row_colours)
    if note:
        draw.text((FRAME, height - TEXT_HEIGHT), note, fill=(0, 0, 0))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return GridLayout((width, height), boxes, colours)
