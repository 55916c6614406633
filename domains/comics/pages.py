"""What every comics format shares: books of pages, panels with their texts and characters, reading
order, panel crops cut from page images, and errors that name the file and the problem.

Readers (``manga109``, ``comix``, ``ebdtheque``, ``comics_folds``) turn their format into ``Book``
objects; the datasets, the closure tasks and the knowledge base only see books. Boxes are pixel
corners ``(x1, y1, x2, y2)`` on the page, as Manga109 stores them (COCO's ``[x, y, w, h]`` is
converted).
"""

from __future__ import annotations

import json
import re
import warnings
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from domainvlm.core.errors import FileError
from domainvlm.core.images import read_image

Direction = Literal["ltr", "rtl"]
Box = tuple[float, float, float, float]

CROP_FRAGMENT = re.compile(r"^(?P<path>.+)#xywh=(?P<x>\d+),(?P<y>\d+),(?P<w>\d+),(?P<h>\d+)$")
"""``page.jpg#xywh=x,y,w,h``: a region of a page image (W3C media-fragment syntax), so a panel or a
character crop is addressable as one string by ``eval``, ``zeroshot`` and knowledge bases."""


class ComicsDataError(FileError):
    """An annotation, page image or fold file that is missing or breaks its format."""


def parse_xml(path: Path) -> ET.Element:
    """The root of an XML annotation file; malformed XML names the file, line and column."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        raise ComicsDataError(
            path, f"malformed XML at line {line}, column {column}: {exc}"
        ) from exc
    except OSError as exc:
        raise ComicsDataError(path, f"cannot read: {exc}") from exc


class SkippedPageWarning(UserWarning):
    """A bad page (or row) was skipped because ``skip_bad`` is on; the message carries the count."""


class BadInput:
    """Raise on the first bad page, or with ``skip`` on, warn once per page with a running count."""

    def __init__(self, skip: bool = False) -> None:
        self.skip = skip
        self.skipped = 0

    def report(self, error: ComicsDataError) -> None:
        if not self.skip:
            raise error
        self.skipped += 1
        warnings.warn(f"skipped ({self.skipped} so far): {error}", SkippedPageWarning, stacklevel=3)


@dataclass
class TextBox:
    box: Box
    text: str
    id: str = ""
    speaker: str | None = None
    """Character id of the speaker (Manga109Dialog links a text to a body; CoMix to a character)."""
    kind: str = "dialogue"  # dialogue | narration | onomatopoeia


@dataclass
class CharacterBox:
    box: Box
    character: str
    """Book-level character id; the same id across pages and panels means the same character."""
    id: str = ""
    part: str = "body"  # body | face


@dataclass
class Panel:
    box: Box
    texts: list[TextBox] = field(default_factory=list)
    characters: list[CharacterBox] = field(default_factory=list)
    id: str = ""

    @property
    def dialogue(self) -> str:
        """The panel's texts in reading order, one string (what the text tower sees)."""
        return " ".join(text.text for text in self.texts if text.text)


@dataclass
class Page:
    image: Path
    index: int
    width: int
    height: int
    panels: list[Panel] = field(default_factory=list)
    balloons: list[Box] = field(default_factory=list)
    """Speech-balloon outlines where the format has them (CoMix category balloon); the texts are
    the text regions inside them, so a balloon is never a second copy of its text."""


@dataclass
class Book:
    title: str
    direction: Direction
    pages: list[Page] = field(default_factory=list)
    characters: dict[str, str] = field(default_factory=dict)
    """Character id → name."""
    source: str = ""

    def panels(self) -> list[tuple[Page, Panel]]:
        """Every panel of the book in reading order (pages in order, panels in page order)."""
        return [(page, panel) for page in self.pages for panel in page.panels]


# -- geometry ------------------------------------------------------------------------------------


def check_box(box: Sequence[float], width: int, height: int, path: Path, what: str) -> Box:
    """A box inside the page (one pixel of slack for rounding), else an error naming it."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ComicsDataError(path, f"{what} has an empty box {[x1, y1, x2, y2]}")
    if x1 < -1 or y1 < -1 or x2 > width + 1 or y2 > height + 1:
        raise ComicsDataError(
            path, f"{what} box {[x1, y1, x2, y2]} lies outside the {width}x{height} page"
        )
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


def overlap_fraction(inner: Box, outer: Box) -> float:
    """Fraction of ``inner``'s area that lies inside ``outer``."""
    w = min(inner[2], outer[2]) - max(inner[0], outer[0])
    h = min(inner[3], outer[3]) - max(inner[1], outer[1])
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return max(w, 0.0) * max(h, 0.0) / area if area > 0 else 0.0


def reading_order(boxes: Sequence[Box], direction: Direction) -> list[int]:
    """Rule order: rows top to bottom, then left→right (Western) or right→left (manga).

    Two boxes share a row when their vertical centres lie within half the smaller box's height,
    so slightly uneven gutters do not split a row.
    """
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][1] + boxes[i][3]) / 2)
    rows: list[list[int]] = []
    for i in order:
        centre = (boxes[i][1] + boxes[i][3]) / 2
        if rows:
            last = rows[-1][0]
            last_centre = (boxes[last][1] + boxes[last][3]) / 2
            tolerance = min(boxes[i][3] - boxes[i][1], boxes[last][3] - boxes[last][1]) / 2
            if abs(centre - last_centre) <= tolerance:
                rows[-1].append(i)
                continue
        rows.append([i])
    sign = 1 if direction == "ltr" else -1
    return [
        i for row in rows for i in sorted(row, key=lambda j: sign * (boxes[j][0] + boxes[j][2]))
    ]


def assemble_panels(
    frames: Sequence[Box],
    texts: Iterable[TextBox],
    characters: Iterable[CharacterBox],
    direction: Direction,
    ordered: bool = False,
) -> list[Panel]:
    """Panels in reading order, each with the texts and characters that fall mostly inside it.

    ``ordered``: the frames are already in the dataset's own reading order (kept as given).
    A text or character belongs to the panel that holds most of its area; ones outside every panel
    (gutter captions) are dropped. Texts inside a panel follow the same rule order as panels.
    """
    order = list(range(len(frames))) if ordered else reading_order(frames, direction)
    panels = [Panel(box=tuple(frames[i])) for i in order]
    for item in [*texts, *characters]:
        if not panels:
            break
        best = max(range(len(panels)), key=lambda p: overlap_fraction(item.box, panels[p].box))
        if overlap_fraction(item.box, panels[best].box) < 0.5:
            continue
        target = panels[best].texts if isinstance(item, TextBox) else panels[best].characters
        target.append(item)
    for panel in panels:
        panel.texts = [
            panel.texts[i] for i in reading_order([t.box for t in panel.texts], direction)
        ]
    return panels


# -- crops ---------------------------------------------------------------------------------------


def crop_address(image: Path, box: Box, margin: float = 0.0) -> str:
    """``page.jpg#xywh=x,y,w,h`` for a box (grown by ``margin`` of its size on each side)."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    x, y = max(int(x1 - dx), 0), max(int(y1 - dy), 0)
    return f"{image}#xywh={x},{y},{max(int(x2 + dx) - x, 1)},{max(int(y2 + dy) - y, 1)}"


def split_crop(address: str | Path) -> tuple[Path, Box | None]:
    """``page.jpg#xywh=x,y,w,h`` → (page.jpg, box); a plain path → (path, None)."""
    text = str(address)
    match = CROP_FRAGMENT.match(text)
    if match is None or Path(text).exists():
        return Path(text), None
    x, y, w, h = (int(match[k]) for k in "xywh")
    return Path(match["path"]), (x, y, x + w, y + h)


@lru_cache(maxsize=64)
def _page_pixels(path: str) -> np.ndarray:
    """Decoded pages are reused: one page yields several panels and character crops."""
    image = read_image(path)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def read_crop(address: str | Path) -> np.ndarray:
    """The pixels of a page, or of a ``#xywh=`` region of it, as ``[H, W, 3]`` uint8."""
    path, box = split_crop(address)
    page = _page_pixels(str(path))
    if box is None:
        return page
    x1, y1, x2, y2 = (int(v) for v in box)
    crop = page[max(y1, 0) : min(y2, page.shape[0]), max(x1, 0) : min(x2, page.shape[1])]
    if crop.size == 0:
        raise ComicsDataError(
            path, f"crop {box} lies outside the {page.shape[1]}x{page.shape[0]} page"
        )
    return crop


# -- splits --------------------------------------------------------------------------------------


def read_splits(root: Path) -> dict[str, list[str]] | None:
    """``splits.json`` ({"train"|"val"|"test": [book titles]}) when the root has one."""
    path = root / "splits.json"
    if not path.is_file():
        return None
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ComicsDataError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise ComicsDataError(path, 'expected {"train": [titles], "val": [...], "test": [...]}')
    return splits


def book_split(title: str, splits: dict[str, list[str]] | None) -> str:
    """A book's split: from ``splits.json``, else a stable hash (80/10/10) so books never mix."""
    if splits is not None:
        for split, titles in splits.items():
            if title in titles:
                return split
        return "train"
    bucket = zlib.crc32(title.encode()) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"
