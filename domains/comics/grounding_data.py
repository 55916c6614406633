"""Annotated pages as training pairs for the grounding scorers (speakers and reading order).

An item is one page: every (text, character) pair of it with its speaker label (pages whose texts
carry no speaker annotation at all give none), and every ordered pair of its panels and of its
texts with the label "a is read before b" from the annotated order (``order.annotated_orders``).
Training pages are perturbed each epoch so the scorers do not lean on what a user may lack: boxes
jittered by a few percent of their size, the page pixels (balloon tails) hidden on some pages, the
panel boxes on others.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from domainvlm.core.datamodule import BaseDataModule
from domainvlm.domains.comics.books import load_books
from domainvlm.domains.comics.order import annotated_orders, order_features
from domainvlm.domains.comics.pages import BadInput, Box, Direction, read_crop
from domainvlm.domains.comics.speakers import (
    annotated_links,
    page_inputs,
    pair_features,
    tail_descriptors,
)
from torch import Tensor
from torch.utils.data import Dataset

PAIR_KEYS = ("speaker_x", "speaker_y", "order_x", "order_swapped", "order_y")


@dataclass
class PageRecord:
    texts: list[Box]
    characters: list[Box]
    panels: list[Box]
    tails: np.ndarray
    links: np.ndarray | None
    """``[T, C]`` 1 where character c says text t; None when the page has no speaker labels."""
    orders: list[list[Box]]
    """Boxes in annotated reading order: the panels, then the texts."""
    direction: Direction


def read_records(
    root: str, split: str, directions: dict | None, skip_bad: bool, pixels: bool
) -> list[PageRecord]:
    orders = annotated_orders(root)
    records = []
    for book in load_books(root, split, directions, skip_bad=BadInput(skip_bad)):
        for page in book.pages:
            texts, characters, panels = page_inputs(page)
            links = None
            if any(text.speaker is not None for panel in page.panels for text in panel.texts):
                links = np.zeros((len(texts), len(characters)), dtype=np.float32)
                for t, c in annotated_links(page):
                    links[t, c] = 1.0
            listed = orders.get(page.image.resolve(), {})
            tails = tail_descriptors(read_crop(page.image) if pixels else None, texts)
            records.append(
                PageRecord(
                    texts,
                    characters,
                    panels,
                    tails,
                    links,
                    [listed.get("panels", []), listed.get("texts", [])],
                    book.direction,
                )  # fmt: skip
            )
    return records


def jitter_boxes(boxes: list[Box], amount: float, rng: random.Random) -> list[Box]:
    """Each side moved by up to ``amount`` of its box's size (a detector's imprecision)."""
    if amount <= 0:
        return boxes
    out = []
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        dx1, dx2 = (rng.uniform(-amount, amount) * w for _ in range(2))
        dy1, dy2 = (rng.uniform(-amount, amount) * h for _ in range(2))
        out.append((x1 + dx1, y1 + dy1, max(x2 + dx2, x1 + dx1 + 1), max(y2 + dy2, y1 + dy1 + 1)))
    return out


class GroundingPages(Dataset):
    def __init__(
        self,
        records: list[PageRecord],
        train: bool,
        seed: int = 0,
        jitter: float = 0.05,
        drop_pixels: float = 0.3,
        drop_panels: float = 0.3,
    ) -> None:
        self.records = records
        self.train = train
        self.seed = seed
        self.jitter = jitter
        self.drop_pixels = drop_pixels
        self.drop_panels = drop_panels
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        rng = random.Random(hash((self.seed, self.epoch, index)))
        train = self.train
        jitter = self.jitter if train else 0.0
        texts = jitter_boxes(record.texts, jitter, rng)
        characters = jitter_boxes(record.characters, jitter, rng)
        panels = record.panels if not (train and rng.random() < self.drop_panels) else None
        tails = record.tails if not (train and rng.random() < self.drop_pixels) else None
        item: dict[str, Any] = {"pages": 1}
        width = pair_features([], []).shape[-1]
        if record.links is not None and texts and characters:
            features = pair_features(texts, characters, panels, tails)
            item["speaker_x"] = torch.from_numpy(features.reshape(-1, width))
            item["speaker_y"] = torch.from_numpy(record.links.reshape(-1))
        else:
            item["speaker_x"], item["speaker_y"] = torch.zeros(0, width), torch.zeros(0)
        xs, swapped, ys = [], [], []
        for boxes in record.orders:
            if len(boxes) < 2:
                continue
            features = torch.from_numpy(
                order_features(jitter_boxes(boxes, jitter, rng), record.direction)
            )
            n = len(boxes)
            a, b = np.nonzero(~np.eye(n, dtype=bool))
            xs.append(features[a, b])
            swapped.append(features[b, a])
            ys.append(torch.from_numpy((a < b).astype(np.float32)))  # listed order = reading order
        order_width = order_features([(0, 0, 1, 1)], "ltr").shape[-1]
        item["order_x"] = torch.cat(xs) if xs else torch.zeros(0, order_width)
        item["order_swapped"] = torch.cat(swapped) if swapped else torch.zeros(0, order_width)
        item["order_y"] = torch.cat(ys) if ys else torch.zeros(0)
        return item


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Pages' pairs concatenated (pages differ in how many pairs they have)."""
    batch = {"pages": torch.tensor([item["pages"] for item in items])}
    return batch | {key: torch.cat([item[key] for item in items]) for key in PAIR_KEYS}


class GroundingDataModule(BaseDataModule):
    domain = "comics"
    collate_fn = staticmethod(collate_pairs)
    dataset_hint = "Manga109 (+ Manga109Dialog) or CoMix with speaker links"

    def __init__(
        self,
        root: str = "data/samples/comics",
        pixels: bool = True,
        jitter: float = 0.05,
        drop_pixels: float = 0.3,
        drop_panels: float = 0.3,
        directions: dict[str, Direction] | None = None,
        skip_bad_pages: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: dataset root (the sample, Manga109 + Manga109Dialog, or CoMix with link_sbsc).
            pixels: read the page images for the balloon-tail features.
            jitter: box noise on training pages, as a fraction of each box's size.
            drop_pixels: share of training pages shown without pixels (no tail features).
            drop_panels: share of training pages shown without panel boxes.
            directions: reading direction per book title, overriding the format's default.
            skip_bad_pages: skip bad pages with a counted warning instead of stopping.
        """
        super().__init__(root=root, **kwargs)
        self.pixels = pixels
        self.jitter = jitter
        self.drop_pixels = drop_pixels
        self.drop_panels = drop_panels
        self.directions = dict(directions or {})
        self.skip_bad_pages = skip_bad_pages

    def build_dataset(self, split: str) -> Dataset:
        records = read_records(
            str(self.root), split, self.directions, self.skip_bad_pages, self.pixels
        )
        return GroundingPages(
            records, split == "train", self.seed, self.jitter, self.drop_pixels, self.drop_panels
        )
