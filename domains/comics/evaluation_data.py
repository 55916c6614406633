"""What ``domainvlm eval`` needs from a comics dataset root: tagged panels and panels with text.

Retrieval pairs every panel of the held-out books (a ``page.jpg#xywh=`` crop of its page) with its
dialogue; panels without text are left out. Zero-shot tagging reads ``panel_tags.csv`` at the root
(``image,x1,y1,x2,y2,tag``: a page image relative to the root, a panel box on it, and its tag; the
sample writes each held-out panel's setting), because no public comics format carries panel tags.
"""

from __future__ import annotations

import csv
from pathlib import Path

from domainvlm.core.files import resolve_within
from domainvlm.core.registry import RetrievalData, ZeroShotData
from domainvlm.domains.comics.books import load_books
from domainvlm.domains.comics.pages import ComicsDataError, crop_address
from domainvlm.domains.comics.templates import templates

TAGS_FILE = "panel_tags.csv"


def retrieval_data(root: Path, split: str = "test") -> RetrievalData:
    paths, captions, owners = [], [], []
    for book in load_books(root, split):
        for page, panel in book.panels():
            if not panel.dialogue:
                continue
            owners.append(len(paths))
            paths.append(Path(crop_address(page.image, panel.box)))
            captions.append(panel.dialogue)
    if not paths:
        raise ComicsDataError(root, f"no panels with text in the {split!r} books")
    return RetrievalData(paths, captions, owners, ["en"] * len(captions))


def zeroshot_data(root: Path, split: str = "test", lang: str = "en") -> ZeroShotData:
    """Panels of ``panel_tags.csv`` (all of it: the sample writes held-out books only)."""
    path = Path(root) / TAGS_FILE
    if not path.is_file():
        raise ComicsDataError(
            path, "is missing: zero-shot tagging needs image,x1,y1,x2,y2,tag rows"
        )
    paths, tags = [], []
    with path.open(encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                image = resolve_within(root, row["image"])
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
                tag = row["tag"].strip()
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ComicsDataError(path, f"line {line}: bad row ({exc})") from exc
            if not image.is_file():
                raise ComicsDataError(path, f"line {line}: page image {row['image']!r} is missing")
            paths.append(Path(crop_address(image, box)))
            tags.append(tag)
    classnames = sorted(set(tags))
    return ZeroShotData(paths, [classnames.index(t) for t in tags], classnames, templates(lang))
