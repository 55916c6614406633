"""Reading order of panels and texts (LoCU layer 2): the rule baseline and a learned pairwise order.

The learned order scores every ordered pair of boxes with a small MLP on their geometry ("a is
read before b"), made antisymmetric (``logit(a, b) = f(a, b) − f(b, a)``), and decodes the
permutation that maximises the summed log-probability of its pairs: exactly (dynamic programming
over subsets) up to ``EXACT_LIMIT`` boxes, beyond that by sorting on each box's summed
probability of coming first and then swapping neighbours while that raises the sum. Manga pages
are mirrored left↔right first, so one scorer serves both directions. Without a scorer,
``order_boxes`` is the rule (``pages.reading_order``).

Annotated orders come from the annotation files themselves (``annotated_orders``): the order in
which a page lists its frames and its texts (Manga109 XML document order, CoMix COCO list order
or each annotation's ``order`` field when present). The offline sample lists them in reading order.

Metrics over pages with at least two boxes: exact-page accuracy (the whole permutation right) and
Kendall τ = (concordant − discordant) / (n(n−1)/2) between the predicted and the annotated order
of a page's n boxes (no ties in a permutation, so τ_a = τ_b), averaged over pages.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from domainvlm.domains.comics.books import dataset_roots
from domainvlm.domains.comics.pages import Box, ComicsDataError, Direction, reading_order
from domainvlm.domains.comics.speakers import pair_mlp
from torch import nn

FEATURES = 16
EXACT_LIMIT = 12


def order_features(boxes: Sequence[Box], direction: Direction) -> np.ndarray:
    """``[n, n, FEATURES]``: features of (a, b) for every pair, in units of the boxes' extent,
    with manga (``rtl``) mirrored so that "first" always lies to the left."""
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 0, FEATURES), dtype=np.float32)
    b = np.array(boxes, dtype=np.float64)
    if direction == "rtl":
        b[:, [0, 2]] = -b[:, [2, 0]]
    origin = b[:, :2].min(axis=0)
    scale = max(b[:, 2].max() - origin[0], b[:, 3].max() - origin[1], 1.0)
    b = (b - np.tile(origin, 2)) / scale
    centre = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
    size = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    delta = centre[None] - centre[:, None]  # b − a
    min_h = np.maximum(np.minimum(size[:, None, 1], size[None, :, 1]), 1e-6)
    min_w = np.maximum(np.minimum(size[:, None, 0], size[None, :, 0]), 1e-6)
    overlap_y = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    overlap_x = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    out = np.zeros((n, n, FEATURES), dtype=np.float32)
    out[..., 0:2] = delta
    out[..., 2] = np.clip(delta[..., 1] / min_h, -4, 4)  # the rule's row test: |·| ≤ 0.5
    out[..., 3] = np.clip(delta[..., 0] / min_w, -4, 4)
    out[..., 4] = np.clip(overlap_y / min_h, -1, 1)
    out[..., 5] = np.clip(overlap_x / min_w, -1, 1)
    out[..., 6] = (b[None, :, 1] - b[:, None, 3]) >= 0  # b starts below a's bottom
    out[..., 7] = (b[None, :, 0] - b[:, None, 2]) >= 0  # b starts right of a's right edge
    out[..., 8:10] = b[:, None, :2]
    out[..., 10:12] = b[None, :, :2]
    out[..., 12:14] = size[:, None]
    out[..., 14:16] = size[None, :]
    return out


class OrderScorer(nn.Module):
    """MLP on pair features; ``forward`` returns antisymmetric logits that a precedes b."""

    def __init__(self, features: int = FEATURES, hidden: int = 64) -> None:
        super().__init__()
        self.net = pair_mlp(features, hidden)

    def forward(self, features: torch.Tensor, swapped: torch.Tensor) -> torch.Tensor:
        """``features`` of (a, b) and ``swapped`` of (b, a), same shape ``[..., FEATURES]``."""
        return (self.net(features) - self.net(swapped)).squeeze(-1)


@torch.no_grad()
def precedence(scorer: OrderScorer, boxes: Sequence[Box], direction: Direction) -> np.ndarray:
    """``[n, n]`` probability that box a is read before box b (diagonal 0.5)."""
    features = torch.from_numpy(order_features(boxes, direction))
    device = next(scorer.parameters()).device
    features = features.to(device)
    logits = scorer(features, features.transpose(0, 1))
    return torch.sigmoid(logits).cpu().numpy().astype(np.float64)


def decode(probability: np.ndarray) -> list[int]:
    """The permutation maximising Σ_{a before b} log P(a before b)."""
    n = len(probability)
    if n <= 1:
        return list(range(n))
    log_p = np.log(np.clip(probability, 1e-9, 1.0))
    np.fill_diagonal(log_p, 0.0)
    if n > EXACT_LIMIT:
        return _sort_then_swap(probability, log_p)
    full = (1 << n) - 1
    best = np.full(1 << n, -np.inf)
    choice = np.zeros(1 << n, dtype=np.int64)
    best[0] = 0.0
    bits = np.array([1 << i for i in range(n)])
    for state in range(1 << n):  # state: the boxes already placed, in increasing order
        if best[state] == -np.inf:
            continue
        left = (bits & (full ^ state)) > 0
        gains = log_p[:, left].sum(axis=1)  # placing a now: a before every box still left
        for a in np.nonzero(left)[0]:
            value = best[state] + gains[a]
            nxt = state | (1 << a)
            if value > best[nxt]:
                best[nxt], choice[nxt] = value, a
    order, state = [], full
    while state:
        a = int(choice[state])
        order.append(a)
        state ^= 1 << a
    return order[::-1]


def _sort_then_swap(probability: np.ndarray, log_p: np.ndarray) -> list[int]:
    """Sort on each box's summed P(before), then swap neighbours while that raises the sum."""
    order = [int(i) for i in np.argsort(-probability.sum(axis=1), kind="stable")]
    improved = True
    while improved:
        improved = False
        for i in range(len(order) - 1):
            a, b = order[i], order[i + 1]
            if log_p[b, a] > log_p[a, b]:
                order[i], order[i + 1] = b, a
                improved = True
    return order


def order_boxes(
    boxes: list[Box], direction: Direction, scorer: OrderScorer | None = None
) -> list[int]:
    """Indexes of ``boxes`` in reading order: the learned order with a scorer, else the rule."""
    if scorer is None or len(boxes) <= 1:
        return reading_order(boxes, direction)
    return decode(precedence(scorer, boxes, direction))


# -- metrics -------------------------------------------------------------------------------------


def kendall_tau(predicted: Sequence[int], annotated: Sequence[int]) -> float:
    """τ between two orders of the same items (each a list of item indexes, first read first)."""
    n = len(annotated)
    if sorted(predicted) != sorted(annotated):
        raise ValueError(f"orders of different items: {list(predicted)} vs {list(annotated)}")
    if n < 2:
        raise ValueError("Kendall τ needs at least two items")
    position = {item: rank for rank, item in enumerate(predicted)}
    agree = sum(
        1 if position[annotated[i]] < position[annotated[j]] else -1
        for i in range(n)
        for j in range(i + 1, n)
    )
    return agree / (n * (n - 1) / 2)


def chance_levels(sizes: Sequence[int]) -> dict[str, float]:
    """A uniformly random permutation: exact accuracy mean of 1/n!, expected τ 0."""
    sizes = [n for n in sizes if n >= 2]
    exact = sum(1 / math.factorial(n) for n in sizes) / len(sizes) if sizes else 0.0
    return {"exact": exact, "kendall_tau": 0.0}


# -- annotated orders ----------------------------------------------------------------------------


def annotated_orders(root: str | Path) -> dict[Path, dict[str, list[Box]]]:
    """Page image (resolved) → {"panels": frames, "texts": texts} in the order the annotation
    lists them, for the Manga109 and CoMix parts of ``root``."""
    roots = dataset_roots(Path(root))
    orders: dict[Path, dict[str, list[Box]]] = {}
    if "manga109" in roots:
        base = roots["manga109"]
        for path in sorted((base / "annotations").glob("*.xml")):
            try:
                book = ET.parse(path).getroot()
            except ET.ParseError as exc:
                raise ComicsDataError(path, f"malformed XML: {exc}") from exc
            title = book.get("title", path.stem)
            for page in book.iter("page"):
                image = base / "images" / title / f"{int(page.get('index', -1)):03d}.jpg"
                orders[image.resolve()] = {
                    "panels": [_corners(e, path) for e in page if e.tag == "frame"],
                    "texts": [_corners(e, path) for e in page if e.tag == "text"],
                }
    if "comix" in roots:
        base = roots["comix"]
        folder = base / "annotations" if (base / "annotations").is_dir() else base
        for path in sorted(folder.glob("*.json")):
            try:
                coco = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ComicsDataError(path, f"not readable COCO JSON: {exc}") from exc
            images = {
                i.get("id"): base / "images" / str(i.get("file_name")) for i in coco["images"]
            }
            listed: dict = {}
            for rank, note in enumerate(coco.get("annotations", [])):
                kind = {1: "panels", 4: "texts"}.get(note.get("category_id"))
                if kind is None or note.get("image_id") not in images:
                    continue
                x, y, w, h = (float(v) for v in note["bbox"])
                entry = listed.setdefault(
                    images[note["image_id"]].resolve(), {"panels": [], "texts": []}
                )
                entry[kind].append((note.get("order", rank), (x, y, x + w, y + h)))
            for image, kinds in listed.items():
                orders[image] = {
                    k: [box for _, box in sorted(v, key=lambda r: r[0])] for k, v in kinds.items()
                }
    return orders


def _corners(element: ET.Element, path: Path) -> Box:
    try:
        return tuple(float(element.get(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError as exc:
        raise ComicsDataError(
            path, f"<{element.tag} id={element.get('id')!r}> has bad corners"
        ) from exc
