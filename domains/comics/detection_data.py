"""Pages and their detection targets, from any comics root that ``books.load_books`` reads.

Targets per page (pixel corners): panels (Manga109 ``frame``, CoMix panel), characters (Manga109
``body``, CoMix character), faces, texts (the text regions; narration included, onomatopoeia not)
and balloons (CoMix balloon outlines, ``Page.balloons``). Texts and characters outside every panel
(gutter captions) are dropped by the readers, so they are no targets either.

A format need not annotate every class: Manga109 has no balloons, some CoMix sources no faces. A
class never annotated anywhere in a book is ``ignored`` on its pages: left out of the loss there
(``detection_model.PartialLabelHead``) and out of that class's evaluation. Splits are whole books
(``splits.json`` or the stable title hash), as for every comics task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from domainvlm.core.datamodule import BaseDataModule
from domainvlm.core.errors import DataRootError
from domainvlm.domains.comics.books import load_books
from domainvlm.domains.comics.detection import (
    DETECTION_CLASSES,
    page_tensor,
    resize_page,
    scale_boxes,
)
from domainvlm.domains.comics.pages import BadInput, Book, Box, Direction, Page, read_crop
from torch import Tensor
from torch.utils.data import Dataset

CLASS_INDEX = {name: i for i, name in enumerate(DETECTION_CLASSES)}


@dataclass
class PageTargets:
    image: Path
    width: int
    height: int
    boxes: list[Box]
    """Pixel corners on the page as annotated (``width`` × ``height``)."""
    labels: list[int]
    """Indexes into ``DETECTION_CLASSES``."""
    annotated: tuple[str, ...] = DETECTION_CLASSES
    """Classes the page's annotation has; the others are unknown on it, not absent."""


def page_boxes(page: Page) -> list[tuple[str, Box]]:
    """Every detection target of a page as (class, box)."""
    found = []
    for panel in page.panels:
        found.append(("panel", panel.box))
        found += [("text", t.box) for t in panel.texts if t.kind != "onomatopoeia"]
        found += [("face" if c.part == "face" else "character", c.box) for c in panel.characters]
    return found + [("balloon", box) for box in page.balloons]


def book_targets(book: Book) -> list[PageTargets]:
    """The book's pages as targets; a class no page of the book has is marked not annotated."""
    boxes = [page_boxes(page) for page in book.pages]
    present = {name for page in boxes for name, _ in page}
    annotated = tuple(name for name in DETECTION_CLASSES if name in present)
    return [
        PageTargets(
            page.image,
            page.width,
            page.height,
            [box for _, box in found],
            [CLASS_INDEX[name] for name, _ in found],
            annotated,
        )
        for page, found in zip(book.pages, boxes)
    ]


def detection_pages(books: Sequence[Book]) -> list[PageTargets]:
    return [target for book in books for target in book_targets(book)]


def page_pixels(page: PageTargets, max_side: int) -> tuple[Tensor, Tensor]:
    """The page resized for the model and its boxes in the resized page's pixels."""
    image = read_crop(page.image)
    resized, _ = resize_page(image, max_side)
    # Boxes are in the annotation's pixels, which need not be the image file's.
    factors = (resized.shape[1] / page.width, resized.shape[0] / page.height)
    boxes = torch.tensor(page.boxes, dtype=torch.float32).reshape(-1, 4)
    return page_tensor(resized), scale_boxes(boxes, factors)


class PageDetectionDataset(Dataset):
    """Resized pages with FCOS targets (``boxes``, ``labels``, ``ignore``); random horizontal
    flips in training (a detector, unlike reading order, does not care which way a page reads),
    drawn from torch's generator, which DataLoader seeds per worker and which runs on from epoch
    to epoch in persistent workers."""

    def __init__(
        self,
        pages: list[PageTargets],
        max_side: int,
        train: bool = False,
        hflip: bool = True,
    ) -> None:
        self.pages = pages
        self.max_side = max_side
        self.train = train
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.pages)

    def __getitem__(self, index: int) -> dict[str, Any]:
        page = self.pages[index]
        image, boxes = page_pixels(page, self.max_side)
        if self.train and self.hflip and float(torch.rand(())) < 0.5:
            image = image.flip(-1)
            width = image.shape[-1]
            boxes = torch.stack(
                [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1
            )
        ignore = torch.tensor([name not in page.annotated for name in DETECTION_CLASSES])
        labels = torch.tensor(page.labels, dtype=torch.long)
        return {"index": index, "image": image, "boxes": boxes, "labels": labels, "ignore": ignore}


def collate_pages(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pages differ in size: images and targets stay lists (the detector pads its own batch)."""
    return {
        "index": torch.tensor([item["index"] for item in items]),
        "images": [item["image"] for item in items],
        "targets": [{key: item[key] for key in ("boxes", "labels", "ignore")} for item in items],
    }


class DetectionDataModule(BaseDataModule):
    domain = "comics"
    collate_fn = staticmethod(collate_pages)
    dataset_hint = "Manga109 or CoMix (page images with boxes)"

    def __init__(
        self,
        root: str = "data/samples/comics",
        max_side: int = 320,
        hflip: bool = True,
        directions: dict[str, Direction] | None = None,
        skip_bad_pages: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: dataset root (the sample, Manga109 or CoMix; see ``books.load_books``).
            max_side: pages are resized so their longer side has this many pixels.
            hflip: random horizontal flips in training.
            directions: reading direction per book title (kept for the readers' panel order).
            skip_bad_pages: skip pages with bad annotations or missing images, with a counted
                warning, instead of stopping at the first.
        """
        super().__init__(root=root, **kwargs)
        self.max_side = max_side
        self.hflip = hflip
        self.directions = dict(directions or {})
        self.skip_bad_pages = skip_bad_pages

    def preprocessing(self) -> dict:
        return {"max_side": self.max_side, "classes": list(DETECTION_CLASSES)}

    def build_dataset(self, split: str) -> Dataset:
        books = load_books(
            self.root, split, self.directions, skip_bad=BadInput(self.skip_bad_pages)
        )
        pages = detection_pages(books)
        if not pages:
            raise DataRootError(f"{str(self.root)!r} has no annotated pages in split {split!r}")
        train = split == "train"
        return PageDetectionDataset(pages, self.max_side, train, self.hflip)
