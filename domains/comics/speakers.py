"""Speaker association (LoCU layer 2): which character on the page says each text.

A pair scorer rates every (text, character) pair of a page from geometry (offsets and distances
in units of the page's extent, distance ranks, shared panel) and, when the page pixels are given,
the balloon's tail: the direction from the text to the tip of the paper-white balloon around it
(its most outlying pixel; a balloon's tail pokes out towards the speaker). Each text is linked to
its best character when that pair's probability reaches ``threshold``, else it gets no speaker. Without a scorer the baseline links each text to the nearest character (box
centre distance), always.

Metrics (``link_metrics``): the annotated links G and the predicted links P are sets of
(text, character box) pairs, at most one per text. Precision = |P∩G| / |P|, recall = |P∩G| / |G|,
F1 = 2PR / (P+R) (each 0 when its denominator is), summed over pages (micro average). A text the
scorer leaves without a speaker adds to neither |P| nor |P∩G|, so it costs recall only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from domainvlm.domains.comics.pages import Box, CharacterBox, Page, TextBox, overlap_fraction
from scipy import ndimage
from torch import nn

FEATURES = 18
WHITE = 240
"""A pixel whose every channel exceeds this counts as balloon paper."""


# -- candidates and annotated links --------------------------------------------------------------


def page_characters(page: Page) -> list[tuple[CharacterBox, int]]:
    """The page's candidate speakers with their panel index: bodies, and faces only in panels
    without any body (Manga109 annotates both for one person; a speaker is one box)."""
    found = []
    for index, panel in enumerate(page.panels):
        has_body = any(person.part == "body" for person in panel.characters)
        for person in panel.characters:
            if person.part == "body" or not has_body:
                found.append((person, index))
    return found


def annotated_links(page: Page) -> list[tuple[int, int]]:
    """(text index, candidate index) per text whose speaker is on the page.

    Texts are the page's texts in panel order (``page_texts``); candidates ``page_characters``.
    The annotation names the speaker's identity; its box is the one of that character in the
    text's own panel, else the nearest one on the page (centre distance).
    """
    candidates = page_characters(page)
    links = []
    for t, (text, panel_index) in enumerate(page_texts(page)):
        if text.speaker is None:
            continue
        same = [c for c, (p, i) in enumerate(candidates) if p.character == text.speaker]
        if not same:
            continue
        in_panel = [c for c in same if candidates[c][1] == panel_index] or same
        links.append((t, min(in_panel, key=lambda c: _distance(text.box, candidates[c][0].box))))
    return links


def page_texts(page: Page) -> list[tuple[TextBox, int]]:
    """(TextBox, panel index) for every text of the page, panels in order."""
    return [(text, index) for index, panel in enumerate(page.panels) for text in panel.texts]


def panel_index(box: Box, panels: Sequence[Box]) -> int:
    """The panel holding most of ``box`` (-1 when none holds half of it)."""
    if not panels:
        return -1
    best = max(range(len(panels)), key=lambda p: overlap_fraction(box, panels[p]))
    return best if overlap_fraction(box, panels[best]) >= 0.5 else -1


# -- features ------------------------------------------------------------------------------------


def _centre(box: Box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _distance(a: Box, b: Box) -> float:
    return float(np.linalg.norm(_centre(a) - _centre(b)))


def tail_descriptors(image: np.ndarray | None, texts: Sequence[Box]) -> np.ndarray:
    """``[T, 3]``: unit direction (x, y) from each text box's centre to its balloon's tail tip,
    and how far the tip stands out (0 without pixels or paper).

    The balloon is the near-white paper joined to the text box (the box may be the balloon or
    the text region inside it); the tip is its pixel most outlying under the paper's own spread
    (largest Mahalanobis distance), since a balloon is round and its tail pokes out of it.
    """
    out = np.zeros((len(texts), 3), dtype=np.float32)
    if image is None:
        return out
    pixels = image if image.ndim == 3 else image[:, :, None]
    white = (pixels[:, :, :3] > WHITE).all(axis=2)
    # a balloon's outline may cut its tail off from it (drawn over the tail's base): bridge lines
    # one or two pixels thin
    white = ndimage.binary_closing(white, structure=np.ones((3, 3), dtype=bool))
    height, width = white.shape
    for t, (x1, y1, x2, y2) in enumerate(texts):
        margin = 2.0 * max(y2 - y1, x2 - x1, 4.0)
        rx1, ry1 = int(max(x1 - margin, 0)), int(max(y1 - margin, 0))
        rx2, ry2 = int(min(x2 + margin, width)), int(min(y2 + margin, height))
        window = white[ry1:ry2, rx1:rx2]
        components, _ = ndimage.label(window, structure=np.ones((3, 3), dtype=bool))
        seed = components[
            max(int(y1) - ry1 - 2, 0) : int(np.ceil(y2)) - ry1 + 2,
            max(int(x1) - rx1 - 2, 0) : int(np.ceil(x2)) - rx1 + 2,
        ]
        keep = np.unique(seed[seed > 0])
        ys, xs = np.nonzero(np.isin(components, keep))
        if len(xs) < 8:
            continue
        points = np.stack([xs + rx1, ys + ry1], axis=1).astype(np.float64)
        centred = points - points.mean(axis=0)
        spread = np.cov(centred.T) + np.eye(2)
        distance = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(spread), centred)
        tip = points[int(distance.argmax())]
        offset = tip - np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        norm = np.linalg.norm(offset)
        if norm > 0:
            out[t, :2] = offset / norm
        out[t, 2] = min(float(np.sqrt(distance.max())) / 4.0, 2.0)
    return out


def pair_features(
    texts: Sequence[Box],
    characters: Sequence[Box],
    panels: Sequence[Box] | None = None,
    tails: np.ndarray | None = None,
) -> np.ndarray:
    """``[T, C, FEATURES]`` features of every (text, character) pair, in units of the extent of
    all the boxes (so no page size is needed); ``tails`` from ``tail_descriptors``."""
    n_t, n_c = len(texts), len(characters)
    out = np.zeros((n_t, n_c, FEATURES), dtype=np.float32)
    if n_t == 0 or n_c == 0:
        return out
    every = np.array([*texts, *characters, *(panels or [])], dtype=np.float64)
    scale = max(every[:, 2].max() - every[:, 0].min(), every[:, 3].max() - every[:, 1].min(), 1.0)
    t_box, c_box = np.array(texts, dtype=np.float64), np.array(characters, dtype=np.float64)
    t_c = np.stack([(t_box[:, 0] + t_box[:, 2]) / 2, (t_box[:, 1] + t_box[:, 3]) / 2], 1)
    c_c = np.stack([(c_box[:, 0] + c_box[:, 2]) / 2, (c_box[:, 1] + c_box[:, 3]) / 2], 1)
    delta = (c_c[None] - t_c[:, None]) / scale  # [T, C, 2]
    dist = np.linalg.norm(delta, axis=2)
    gap_x = np.maximum(
        np.maximum(c_box[None, :, 0] - t_box[:, None, 2], t_box[:, None, 0] - c_box[None, :, 2]), 0
    )
    gap_y = np.maximum(
        np.maximum(c_box[None, :, 1] - t_box[:, None, 3], t_box[:, None, 1] - c_box[None, :, 3]), 0
    )
    overlap_x = np.maximum(
        np.minimum(t_box[:, None, 2], c_box[None, :, 2])
        - np.maximum(t_box[:, None, 0], c_box[None, :, 0]),
        0,
    ) / np.minimum(t_box[:, None, 2] - t_box[:, None, 0], c_box[None, :, 2] - c_box[None, :, 0])
    rank = dist.argsort(axis=1).argsort(axis=1)
    out[..., 0:2] = delta
    out[..., 2] = np.abs(delta[..., 0])
    out[..., 3] = dist
    out[..., 4] = np.hypot(gap_x, gap_y) / scale
    out[..., 5] = dist - dist.min(axis=1, keepdims=True)
    out[..., 6] = rank == 0
    out[..., 7] = rank / max(n_c - 1, 1)
    out[..., 8] = dist - dist.min(axis=0, keepdims=True)
    out[..., 9] = overlap_x
    if panels:
        t_panel = np.array([panel_index(box, panels) for box in texts])
        c_panel = np.array([panel_index(box, panels) for box in characters])
        out[..., 10] = (t_panel[:, None] == c_panel[None]) & (t_panel[:, None] >= 0)
        out[..., 11] = 1.0
    if tails is not None and tails[:, 2].any():
        direction = delta / np.maximum(dist[..., None], 1e-6)
        out[..., 12] = (direction * tails[:, None, :2]).sum(axis=2)
        out[..., 13] = tails[:, None, 2]
        out[..., 14] = 1.0
    out[..., 15] = 1.0 / n_c
    out[..., 16] = np.log(
        (c_box[None, :, 3] - c_box[None, :, 1]) / (t_box[:, None, 3] - t_box[:, None, 1])
    )
    out[..., 17] = delta[..., 1] < 0  # the character stands above the text
    return out


def pair_mlp(features: int, hidden: int) -> nn.Sequential:
    """Two hidden layers from pair features to one logit: the speaker and the order scorers."""
    return nn.Sequential(
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
    )


class SpeakerScorer(nn.Module):
    """MLP: pair features → logit that the character says the text."""

    def __init__(self, features: int = FEATURES, hidden: int = 64) -> None:
        super().__init__()
        self.net = pair_mlp(features, hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


# -- association ---------------------------------------------------------------------------------


def associate_speakers(
    texts: list[Box],
    characters: list[Box],
    image: np.ndarray | None = None,
    scorer: SpeakerScorer | None = None,
    threshold: float = 0.4,
    panels: list[Box] | None = None,
) -> list[tuple[int, int]]:
    """(text index, character index) links, at most one per text.

    ``scorer=None``: the nearest-character baseline (every text linked while any character is
    on the page; ``threshold`` unused). With a scorer, a text's best character is linked when its
    probability reaches ``threshold`` (Magi's association default is 0.4). ``image`` (``[H, W, 3]``
    page pixels) adds the balloon-tail features; ``panels`` the same-panel feature.
    """
    if not texts or not characters:
        return []
    if scorer is None:
        return [
            (t, min(range(len(characters)), key=lambda c: _distance(box, characters[c])))
            for t, box in enumerate(texts)
        ]
    probabilities = speaker_probabilities(scorer, texts, characters, image, panels)
    best = probabilities.argmax(axis=1)
    return [(t, int(c)) for t, c in enumerate(best) if probabilities[t, c] >= threshold]


@torch.no_grad()
def speaker_probabilities(
    scorer: SpeakerScorer,
    texts: Sequence[Box],
    characters: Sequence[Box],
    image: np.ndarray | None = None,
    panels: Sequence[Box] | None = None,
) -> np.ndarray:
    """``[T, C]`` probability that character c says text t."""
    features = pair_features(texts, characters, panels, tail_descriptors(image, texts))
    device = next(scorer.parameters()).device
    logits = scorer(torch.from_numpy(features).to(device))
    return torch.sigmoid(logits).cpu().numpy()


# -- metrics -------------------------------------------------------------------------------------


def link_metrics(hits: float, predicted: float, annotated: float) -> dict[str, float]:
    """Precision, recall and F1 from counts (micro average: sum the counts over pages first)."""
    precision = hits / predicted if predicted else 0.0
    recall = hits / annotated if annotated else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def count_links(
    predicted: Sequence[tuple[int, int]], annotated: Sequence[tuple[int, int]]
) -> tuple[int, int, int]:
    """(|P∩G|, |P|, |G|) for one page."""
    return len(set(predicted) & set(annotated)), len(set(predicted)), len(set(annotated))


def chance_counts(n_texts: int, n_characters: int, annotated: int) -> tuple[float, int, int]:
    """Expected counts when every text picks one of the page's characters uniformly at random."""
    if n_characters == 0:
        return 0.0, 0, annotated
    return annotated / n_characters, n_texts, annotated


def page_inputs(page: Page) -> tuple[list[Box], list[Box], list[Box]]:
    """Text boxes, candidate character boxes and panel boxes of an annotated page."""
    texts = [text.box for text, _ in page_texts(page)]
    characters = [person.box for person, _ in page_characters(page)]
    return texts, characters, [panel.box for panel in page.panels]
