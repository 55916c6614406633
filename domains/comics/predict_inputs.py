"""The pages ``domainvlm comics predict`` reads: a folder of page images, or a dataset root whose
annotations supply the boxes, links, identities and words that no model is given for."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from domainvlm.core.errors import DataRootError, FileError
from domainvlm.core.images import read_image, to_rgb_image
from domainvlm.domains.comics.books import PAGE_FORMATS, dataset_roots, load_books
from domainvlm.domains.comics.pages import Box, Direction, Page

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
CLASSES = ("panel", "character", "face", "text", "balloon")
TEXT_IOU = 0.5
"""A detected text takes the annotated transcription of the box it overlaps at least this much."""


class PredictInputError(FileError):
    """A pages folder, model file or bank that ``comics predict`` cannot use."""


@dataclass
class PageSource:
    """One page to predict: its image, the book (chapter) it belongs to, and its annotation."""

    image: Path
    book: str
    name: str
    direction: Direction
    annotation: Page | None = None
    names: dict[str, str] = field(default_factory=dict)
    """The book's annotated character id → name."""


# -- pages ---------------------------------------------------------------------------------------


def _natural(path: Path) -> list:
    """page2 before page10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural)


def find_pages(
    pages: Path, direction: Direction | None = None, split: str | None = None
) -> list[PageSource]:
    """The pages under ``pages``: a dataset root's annotated pages (one ``split`` of books, or
    all), else the images in the folder and in each of its subfolders (one book each)."""
    if not pages.is_dir():
        raise DataRootError(f"{str(pages)!r}: the pages folder does not exist or is no folder")
    if dataset_roots(pages).keys() & set(PAGE_FORMATS):
        sources = [
            PageSource(
                page.image,
                book.title,
                page.image.stem,
                direction or book.direction,
                page,
                book.characters,
            )
            for book in load_books(pages, split)
            for page in book.pages
        ]
    elif split is not None:
        raise DataRootError(
            f"{str(pages)!r}: --split {split} picks books of a Manga109 or CoMix dataset root; "
            "this is a folder of pages (leave --split out)"
        )
    else:
        folders = [pages, *sorted((p for p in pages.iterdir() if p.is_dir()), key=_natural)]
        sources = [
            PageSource(image, folder.name, image.stem, direction or "ltr")
            for folder in folders
            for image in _images(folder)
        ]
    if not sources:
        what = f" in split {split!r}" if split else ""
        raise DataRootError(
            f"{str(pages)!r} holds no pages{what}: expected page images "
            f"({', '.join(IMAGE_SUFFIXES)}) in it or in its subfolders, or a Manga109 / CoMix "
            "dataset root"
        )
    return sources


def read_page(source: PageSource) -> np.ndarray:
    """The page as ``[H, W, 3]`` uint8, read through the capped, format-checked image reader."""
    return np.asarray(to_rgb_image(read_image(source.image), source.image))


# -- boxes ---------------------------------------------------------------------------------------


def annotated_boxes(source: PageSource) -> tuple[dict[str, list[Box]], list[str], list[tuple]]:
    """Boxes per class, character identities and speaker links (text, character) of the page's
    annotation. Readers keep the texts and characters that lie inside panels."""
    page = source.annotation
    assert page is not None
    boxes: dict[str, list[Box]] = {name: [] for name in CLASSES}
    identities, speakers, text_panel, body_panel = [], [], [], []
    for number, panel in enumerate(page.panels):
        boxes["panel"].append(panel.box)
        for text in panel.texts:
            boxes["text"].append(text.box)
            speakers.append(text.speaker)
            text_panel.append(number)
        for person in panel.characters:
            if person.part == "face":
                boxes["face"].append(person.box)
                continue
            boxes["character"].append(person.box)
            identities.append(person.character)
            body_panel.append(number)
    boxes["balloon"] = list(page.balloons)
    links = []
    for t, speaker in enumerate(speakers):
        candidates = [c for c, who in enumerate(identities) if who == speaker]
        if speaker is not None and candidates:
            same_panel = [c for c in candidates if body_panel[c] == text_panel[t]]
            links.append((t, (same_panel or candidates)[0]))
    return boxes, identities, links


def _iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def text_contents(boxes: list[Box], page: Page | None) -> tuple[list[str], str]:
    """Each text box's words: the annotated transcription it overlaps, else ``[text N]``."""
    annotated = [t for panel in page.panels for t in panel.texts] if page is not None else []
    contents = []
    for number, box in enumerate(boxes):
        best = max(annotated, key=lambda t: _iou(box, t.box), default=None)
        if best is not None and best.text and _iou(box, best.box) >= TEXT_IOU:
            contents.append(best.text)
        else:
            contents.append(f"[text {number}]")
    return contents, "annotation" if annotated else "none (no OCR engine; [text N] placeholders)"
