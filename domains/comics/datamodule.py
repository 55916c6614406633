"""Panel sequences cut from page images, for the panel↔text, character and closure objectives.

An item is a window of consecutive panels of one book in reading order (the context plus the
panel after it), each panel cropped from its page through its box with the texts inside it; other
panels of the same book as negatives for the self-supervised closure objective (no cloze labels:
the true next panel against its own book's panels, optionally those that show other characters
than the true one, so only who is in a panel tells them apart); the true panel beside copies
re-lettered from the text boxes the formats annotate, so their lettering is the only difference:
one whose first and last text regions (in reading order) trade pixels (who says what: character
coherence, as ComicsPAP builds it) and two whose text regions show other panels' texts (what is
said: text closure, as ComicsPAP builds it); and character crops with their identities. Panels
are squashed to a square before resizing, so wide and tall panels keep every character in view.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from domainvlm.core.datamodule import BaseDataModule
from domainvlm.core.transforms import ImageTransform
from domainvlm.domains.comics.books import load_books
from domainvlm.domains.comics.pages import (
    BadInput,
    Book,
    Direction,
    Page,
    Panel,
    crop_address,
    read_crop,
)
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def squash(array: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size``×``size`` ignoring aspect (a panel's content stays whole)."""
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(array[:, :, :3])).resize((size, size), Image.BILINEAR)
    )


def panel_tensor(address: str | Path, transform: ImageTransform) -> Tensor:
    """A page, panel or character crop (``page.jpg#xywh=...``) as a model input."""
    return transform(squash(read_crop(address), transform.settings["size"]))


def panel_address(page: Page, panel: Panel) -> str:
    return crop_address(page.image, panel.box)


class PanelSequenceDataset(Dataset):
    """Windows of ``context + 1`` consecutive panels with negatives and character crops."""

    def __init__(
        self,
        books: list[Book],
        transform: ImageTransform,
        context: int = 3,
        negatives: int = 2,
        character_crops: int = 2,
        train: bool = True,
        seed: int = 0,
        near_negatives: float = 0.5,
        cast_negatives: float = 0.0,
    ) -> None:
        if near_negatives + cast_negatives > 1:
            raise ValueError(
                f"near_negatives {near_negatives} + cast_negatives {cast_negatives} exceed 1"
            )
        self.books = [book for book in books if len(book.panels()) > context]
        self.panels = [book.panels() for book in self.books]
        self.windows = [
            (b, t) for b, panels in enumerate(self.panels) for t in range(context, len(panels))
        ]
        self.transform = transform
        self.context = context
        self.negatives = negatives
        self.character_crops = character_crops
        self.train = train
        self.seed = seed
        self.near_negatives = near_negatives
        self.cast_negatives = cast_negatives
        self.epoch = 0
        settings = transform.settings
        self.pair_transform = ImageTransform(settings["size"], settings["mean"], settings["std"])
        """A panel and its re-lettered copies go through the same (eval) geometry, so their texts
        are all that differs."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.windows)

    def _load(self, page: Page, panel: Panel) -> Tensor:
        return panel_tensor(panel_address(page, panel), self.transform)

    def __getitem__(self, index: int) -> dict[str, Any]:
        book_index, t = self.windows[index]
        rng = random.Random(hash((self.seed, self.epoch if self.train else 0, index)))
        panels = self.panels[book_index]
        window = panels[t - self.context : t + 1]
        target = (
            self.context
            if not self.train or rng.random() < 0.6
            else rng.randrange(1, self.context + 1)
        )
        outside = [i for i in range(len(panels)) if not t - self.context <= i <= t]
        draw = rng.random() if self.train else 1.0
        cast = _cast(window[target][1])
        other_cast = [i for i in outside if _cast(panels[i][1]) != cast]
        if draw < self.cast_negatives and cast and len(other_cast) >= self.negatives:
            # cast negatives: panels showing other characters; the nearest first (the
            # neighbouring scenes, drawn alike) so the characters are what tells them apart
            outside = sorted(other_cast, key=lambda i: min(abs(i - t), abs(i - t + self.context)))
            outside = outside[: 2 * self.negatives]
        elif draw < self.cast_negatives + self.near_negatives:
            # hard negatives: the panels just before and after the window (the neighbouring
            # scenes, or the same scene at other moments)
            outside = sorted(outside, key=lambda i: min(abs(i - t), abs(i - t + self.context)))
            outside = outside[: 2 * self.negatives]
        pool = (
            outside
            if len(outside) >= self.negatives
            else [i for i in range(len(panels)) if i != t - self.context + target]
        )
        negatives = [panels[i] for i in rng.sample(pool, min(self.negatives, len(pool)))]
        while len(negatives) < self.negatives:
            negatives.append(negatives[-1] if negatives else window[0])
        target_texts = [text.text for text in window[target][1].texts if text.text]
        book = self.books[book_index]
        crops, identities = self._characters(window, rng)
        return {
            "panels": torch.stack([self._load(page, panel) for page, panel in window]),
            "texts": [panel.dialogue for _, panel in window],
            "panel_ids": [f"{book.title}/{page.index}/{panel.box}" for page, panel in window],
            "target": target,
            "negatives": torch.stack([self._load(page, panel) for page, panel in negatives]),
            "negative_texts": [panel.dialogue for _, panel in negatives],
            "reordered_text": " ".join(target_texts[::-1]),
            "has_order": len(target_texts) >= 2 and target_texts[0] != target_texts[-1],
            **self._relettered(*window[target], negatives),
            "characters": crops,
            "character_ids": identities,
        }

    def _relettered(self, page: Page, panel: Panel, donors: list[tuple[Page, Panel]]) -> dict:
        """``lettered``: the panel, its copy with its first and last texts swapped, and two copies
        lettered with the texts of the first two ``donors`` that have other texts. ``has_swap``
        and ``has_borrowed`` say which copies could be made (the others are zeros)."""
        size = self.transform.settings["size"]
        pixels = read_crop(panel_address(page, panel))
        swapped = swap_regions(pixels, panel)
        borrowed = []
        for donor_page, donor in donors:
            if len(borrowed) < 2:
                donor_pixels = read_crop(panel_address(donor_page, donor))
                copy = letter_as(pixels, panel, donor_pixels, donor)
                borrowed += [] if copy is None else [copy]
        has_borrowed = len(borrowed) == 2
        images = [pixels, swapped, *(borrowed if has_borrowed else [None, None])]
        blank = torch.zeros(3, size, size)
        lettered = [
            blank if image is None else self.pair_transform(squash(image, size)) for image in images
        ]
        return {
            "lettered": torch.stack(lettered),
            "has_swap": swapped is not None,
            "has_borrowed": has_borrowed,
        }

    def _characters(self, window: list, rng: random.Random) -> tuple[Tensor, Tensor]:
        """Body crops (faces when a panel has no body box) labelled by character id as the
        annotation gives it: Manga109's ids are unique across the dataset, and a CoMix identity
        (or a sample character) seen in two books is one character."""
        found = [
            (page, person)
            for page, panel in window
            for person in panel.characters
            if person.part == "body" or not any(p.part == "body" for p in panel.characters)
        ]
        chosen = rng.sample(found, min(self.character_crops, len(found)))
        crops = [
            panel_tensor(crop_address(page.image, person.box), self.transform)
            for page, person in chosen
        ]
        ids = [zlib.crc32(person.character.encode()) & 0x7FFFFFFF for _, person in chosen]
        size = self.transform.settings["size"]
        while len(crops) < self.character_crops:
            crops.append(torch.zeros(3, size, size))
            ids.append(-1)
        return torch.stack(crops), torch.tensor(ids, dtype=torch.long)


PixelBox = tuple[int, int, int, int]
"""Integer corners inside a panel crop (``pages.Box`` is float corners on the page)."""


def swap_regions(pixels: np.ndarray, panel: Panel) -> np.ndarray | None:
    """A copy of the panel crop ``pixels`` in which its first and last texts (reading order, with
    different words) trade places, each resized into the other's box; None when there are not two
    such texts or their boxes overlap."""
    texts = [text for text in panel.texts if text.text]
    if len(texts) < 2 or texts[0].text == texts[-1].text:
        return None
    boxes = _text_boxes(pixels, panel, [texts[0], texts[-1]])
    if boxes is None:
        return None
    (a1, b1, a2, b2), (c1, d1, c2, d2) = boxes
    if a1 < c2 and c1 < a2 and b1 < d2 and d1 < b2:
        return None
    first, last = (pixels[y1:y2, x1:x2, :3] for x1, y1, x2, y2 in boxes)
    return _pasted(pixels, boxes, [last, first])


def letter_as(
    pixels: np.ndarray, panel: Panel, donor_pixels: np.ndarray, donor: Panel
) -> np.ndarray | None:
    """A copy of the panel crop ``pixels`` whose text regions show the ``donor`` panel's texts (in
    reading order, repeated when it has fewer), each resized into the box it replaces; None when
    either panel has no text or both say the same."""
    texts = [text for text in panel.texts if text.text]
    given = [text for text in donor.texts if text.text]
    if not texts or not given or [t.text for t in texts] == [t.text for t in given]:
        return None
    boxes = _text_boxes(pixels, panel, texts)
    sources = _text_boxes(donor_pixels, donor, given)
    if boxes is None or sources is None:
        return None
    regions = [donor_pixels[y1:y2, x1:x2, :3] for x1, y1, x2, y2 in sources]
    return _pasted(pixels, boxes, [regions[i % len(regions)] for i in range(len(boxes))])


def _text_boxes(pixels: np.ndarray, panel: Panel, texts: list) -> list[PixelBox] | None:
    """The texts' boxes in the panel crop's pixels, clipped to it; None when one is under 2 px."""
    px, py = panel.box[:2]
    height, width = pixels.shape[:2]
    boxes = []
    for text in texts:
        x1, y1, x2, y2 = text.box
        x1, y1 = max(int(x1 - px), 0), max(int(y1 - py), 0)
        x2, y2 = min(int(round(x2 - px)), width), min(int(round(y2 - py)), height)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        boxes.append((x1, y1, x2, y2))
    return boxes


def _pasted(pixels: np.ndarray, boxes: list[PixelBox], regions: list[np.ndarray]) -> np.ndarray:
    """A copy of ``pixels`` with each region resized into its box (regions are read first)."""
    regions = [region.copy() for region in regions]
    out = pixels[:, :, :3].copy()
    for (x1, y1, x2, y2), region in zip(boxes, regions):
        out[y1:y2, x1:x2] = _resized(region, x2 - x1, y2 - y1)
    return out


def _resized(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    if pixels.shape[:2] == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))


def _cast(panel: Panel) -> frozenset[str]:
    """The characters a panel shows (annotated ids; empty when none are annotated)."""
    return frozenset(person.character for person in panel.characters)


class ComicsDataModule(BaseDataModule):
    domain = "comics"
    dataset_hint = "Manga109, CoMix or COMICS"

    def __init__(
        self,
        root: str = "data/samples/comics",
        image_size: int = 48,
        context: int = 3,
        negatives: int = 2,
        character_crops: int = 2,
        near_negatives: float = 0.5,
        cast_negatives: float = 0.0,
        directions: dict[str, Direction] | None = None,
        skip_bad_pages: bool = False,
        train_scale: tuple[float, float] = (0.8, 1.0),
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: dataset root (the sample, Manga109, CoMix or COMICS; see ``books.load_books``).
            image_size: side of the square panel and character crops.
            context: panels before the one to predict (COMICS uses 3).
            negatives: other panels of the same book scored against the true next panel.
            character_crops: character crops per window for the identity loss.
            near_negatives: share of training windows whose negatives are the book's panels
                nearest the window (hard negatives) rather than any of its panels.
            cast_negatives: share of training windows whose negatives are the book's panels
                nearest the window that show other characters than the true panel (from the
                character annotations), so the scorer learns character continuity.
            directions: reading direction per book title (``ltr``/``rtl``), overriding the
                format's default (Manga109 right to left, CoMix and COMICS left to right).
            skip_bad_pages: skip pages with bad annotations or missing images, with a counted
                warning, instead of stopping at the first.
            train_scale: area range of the training random crop (no flips: they would reverse the
                reading order).
        """
        super().__init__(root=root, **kwargs)
        self.image_size = image_size
        self.context = context
        self.negatives = negatives
        self.character_crops = character_crops
        self.near_negatives = near_negatives
        self.cast_negatives = cast_negatives
        self.directions = dict(directions or {})
        self.skip_bad_pages = skip_bad_pages
        self.train_scale = tuple(train_scale)

    def transform(self, train: bool) -> ImageTransform:
        return ImageTransform(
            self.image_size,
            MEAN,
            STD,
            train=train,
            scale=self.train_scale,
            hflip=False,
            seed=self.seed,
        )

    def preprocessing(self) -> dict:
        return {
            "image_size": self.image_size,
            "mean": list(MEAN),
            "std": list(STD),
            "context": self.context,
        }

    def build_dataset(self, split: str) -> Dataset:
        books = load_books(
            self.root, split, self.directions, skip_bad=BadInput(self.skip_bad_pages)
        )
        train = split == "train"
        return PanelSequenceDataset(
            books,
            self.transform(train),
            self.context,
            self.negatives,
            self.character_crops,
            train=train,
            seed=self.seed,
            near_negatives=self.near_negatives,
            cast_negatives=self.cast_negatives,
        )
