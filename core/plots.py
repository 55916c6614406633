"""Pictures of evaluation results: a confusion matrix and a retrieval grid, written atomically."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from domainvlm.core.files import atomic_save
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

HIT = (40, 160, 60)
MISS = (200, 40, 40)
BACKGROUND = (255, 255, 255)
WIDE_SCRIPT_FONTS = ("CJK", "Droid Sans Fallback", "WenQuanYi", "Nanum", "Unifont")
"""Name parts of fonts that cover Chinese or Korean, used when one is installed."""


def confusion_matrix_png(matrix: np.ndarray, classnames: Sequence[str], path: str | Path) -> Path:
    """A row-normalised confusion matrix heat map with counts, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = len(classnames)
    if matrix.shape != (count, count):
        raise ValueError(f"matrix shape {matrix.shape} does not match {count} class names")
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    side = min(4 + 0.4 * count, 30)
    figure = Figure(figsize=(side, side), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of true class")
    axes.set_xticks(range(count), classnames, rotation=90)
    axes.set_yticks(range(count), classnames)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if count <= 30:
        for true in range(count):
            for predicted in range(count):
                colour = "white" if normalised[true, predicted] > 0.5 else "black"
                axes.text(
                    predicted,
                    true,
                    int(matrix[true, predicted]),
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=8,
                )
    path = Path(path)
    with warnings.catch_warnings():
        # Matplotlib's bundled font has no CJK glyphs; those class names render as boxes.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        atomic_save(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    return path


def preview_rgb(
    image: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """A model input ``[C, H, W]`` as ``[H, W, 3]`` uint8 for display: normalisation undone when
    ``mean``/``std`` are given (else grey inputs come out tinted), then the first three channels
    (grey for one), stretched jointly between their 2nd and 98th percentiles."""
    array = image.detach().float().cpu().numpy()
    if array.ndim != 3:
        raise ValueError(f"expected an image tensor [C, H, W], got shape {tuple(array.shape)}")
    if mean is not None and std is not None and len(mean) == len(std) == len(array):
        array = array * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
    rgb = array[:3] if len(array) >= 3 else np.repeat(array[:1], 3, axis=0)
    low, high = np.percentile(rgb, [2, 98])
    scaled = (rgb - low) / (high - low) if high > low else np.zeros_like(rgb)
    return (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8).transpose(1, 2, 0)


@functools.cache
def _fonts() -> tuple[tuple[str, frozenset[int]], ...]:
    """(font file, code points it covers): matplotlib's DejaVu Sans (Latin, Greek, Cyrillic),
    then any installed font for Chinese or Korean."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    files = [font_manager.findfont("DejaVu Sans")]
    files += sorted(
        {
            f.fname
            for f in font_manager.fontManager.ttflist
            if any(n in f.name for n in WIDE_SCRIPT_FONTS)
        }
    )
    return tuple((file, frozenset(FT2Font(file).get_charmap())) for file in files)


def _font_for(text: str, size: int = 12) -> ImageFont.FreeTypeFont:
    """The first font that has a glyph for every character (else DejaVu Sans, with boxes)."""
    needed = {ord(character) for character in text if not character.isspace()}
    file = next((f for f, covered in _fonts() if needed <= covered), _fonts()[0][0])
    return ImageFont.truetype(file, size)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """Greedy line breaks by rendered width; text without spaces (Chinese) breaks anywhere."""
    words = text.split() if " " in text else list(text)
    joiner = " " if " " in text else ""
    lines: list[str] = []
    for word in words:
        candidate = f"{lines[-1]}{joiner}{word}" if lines else word
        if lines and font.getlength(candidate) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def retrieval_grid_png(
    queries: Sequence[str],
    rankings: Sequence[Sequence[int]],
    positives: Sequence[set[int]],
    preview: Callable[[int], np.ndarray],
    path: str | Path,
    tile: int = 96,
    text_width: int = 280,
) -> Path:
    """One row per text query: the query, then its ranked gallery images left to right, framed
    green when the image is one of the query's positives and red otherwise."""
    if not (len(queries) == len(rankings) == len(positives)):
        raise ValueError("queries, rankings and positives must have one entry per query")
    columns = max((len(row) for row in rankings), default=0)
    gap, frame = 6, 4
    cell = tile + gap
    canvas = Image.new(
        "RGB", (text_width + columns * cell, max(len(queries), 1) * cell), BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    for row, (query, ranked, wanted) in enumerate(zip(queries, rankings, positives, strict=True)):
        top = row * cell + gap // 2
        font = _font_for(query)
        lines = _wrap(query, font, text_width - 12)[: tile // 15]
        draw.multiline_text((4, top), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=2)
        for column, index in enumerate(ranked):
            left = text_width + column * cell
            colour = HIT if index in wanted else MISS
            draw.rectangle((left, top, left + tile - 1, top + tile - 1), fill=colour)
            inner = tile - 2 * frame
            thumbnail = Image.fromarray(preview(index)).resize((inner, inner), Image.NEAREST)
            canvas.paste(thumbnail, (left + frame, top + frame))
    path = Path(path)
    atomic_save(path, lambda handle: canvas.save(handle, format="PNG"))
    return path
