"""Character re-identification across a chapter or book, and naming from a character bank.

Crops are embedded with a trained comics CLIP's image tower (``embed_crops``: the same input a
character search of the knowledge base uses; its character loss puts crops of one character
together). ``cluster_characters``: agglomerative clustering of the unit embeddings with average
linkage on cosine distance (1 − cos), cut where the merge distance exceeds ``threshold``, so two
groups join while their crops are on average closer than it. ``name_clusters``: each cluster's mean
embedding against each bank name's prototype (the mean of that name's example crops); the nearest
name when its cosine similarity reaches ``threshold``, else ``"other"`` (Magi v2 names a chapter's
characters from such a bank).

A bank is a folder of ``<name>/*.png|jpg`` example crops, or a JSON list of
``{"name": ..., "image": path or page.jpg#xywh=...}`` (paths relative to the JSON file).

Adjusted mutual information (Vinh, Epps & Bailey 2010, arithmetic mean normalisation as
scikit-learn's default): AMI = (MI − E[MI]) / (½(H(U) + H(V)) − E[MI]), where E[MI] is the
expected mutual information of two random labelings with the same cluster sizes
(hypergeometric model); 1 for identical partitions, about 0 for random ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from domainvlm.core.files import resolve_within
from domainvlm.domains.comics.pages import Book, ComicsDataError, crop_address, read_crop
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.special import gammaln

OTHER = "other"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def cluster_characters(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Int labels (0, 1, ... in order of first appearance) from average-linkage clustering on
    cosine distance, cut at ``threshold``."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    tree = linkage(_unit(embeddings), method="average", metric="cosine")
    raw = fcluster(tree, t=threshold, criterion="distance")
    first: dict[int, int] = {}
    return np.array([first.setdefault(int(r), len(first)) for r in raw], dtype=np.int64)


def name_clusters(
    embeddings: np.ndarray,
    labels: np.ndarray,
    bank_embeddings: np.ndarray,
    bank_names: Sequence[str],
    threshold: float,
) -> list[str]:
    """A name for every crop (row of ``embeddings``): its cluster's nearest bank prototype, or
    ``"other"`` when no prototype reaches cosine similarity ``threshold``."""
    labels = np.asarray(labels)
    if len(bank_names) == 0:
        return [OTHER] * len(labels)
    names = sorted(set(bank_names))
    bank = _unit(bank_embeddings)
    prototypes = _unit(
        np.stack([bank[[n == name for n in bank_names]].mean(axis=0) for name in names])
    )
    unit = _unit(embeddings)
    chosen: dict[int, str] = {}
    for label in np.unique(labels):
        centre = _unit(unit[labels == label].mean(axis=0))
        similarity = prototypes @ centre
        best = int(similarity.argmax())
        chosen[int(label)] = names[best] if similarity[best] >= threshold else OTHER
    return [chosen[int(label)] for label in labels]


# -- adjusted mutual information -----------------------------------------------------------------


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def expected_mutual_information(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """E[MI] of two random labelings with row sums ``a`` and column sums ``b`` (natural log)."""
    total = 0.0
    for ai in a:
        for bj in b:
            low, high = max(1, ai + bj - n), min(ai, bj)
            for nij in range(low, high + 1):
                log_p = (
                    gammaln(ai + 1) + gammaln(bj + 1) + gammaln(n - ai + 1) + gammaln(n - bj + 1)
                    - gammaln(n + 1) - gammaln(nij + 1) - gammaln(ai - nij + 1)
                    - gammaln(bj - nij + 1) - gammaln(n - ai - bj + nij + 1)
                )  # fmt: skip
                total += nij / n * np.log(n * nij / (ai * bj)) * np.exp(log_p)
    return float(total)


def adjusted_mutual_information(labels_true: Sequence, labels_pred: Sequence) -> float:
    """AMI with arithmetic-mean normalisation; 1.0 where it is 0/0 and the labelings agree (both
    one cluster, or both all singletons)."""
    if len(labels_true) != len(labels_pred):
        raise ValueError(f"{len(labels_true)} true labels for {len(labels_pred)} predicted")
    _, true_ids = np.unique(np.asarray(labels_true), return_inverse=True)
    _, pred_ids = np.unique(np.asarray(labels_pred), return_inverse=True)
    n = len(true_ids)
    table = np.zeros((true_ids.max(initial=-1) + 1, pred_ids.max(initial=-1) + 1))
    np.add.at(table, (true_ids, pred_ids), 1)
    if n == 0 or table.shape[0] == table.shape[1] == 1:
        return 1.0
    a, b = table.sum(axis=1).astype(int), table.sum(axis=0).astype(int)
    nz = table > 0
    mi = float((table[nz] / n * np.log(n * table[nz] / np.outer(a, b)[nz])).sum())
    emi = expected_mutual_information(a, b, n)
    mean_h = (_entropy(a) + _entropy(b)) / 2
    denominator = mean_h - emi
    if abs(denominator) < 1e-12:
        return 1.0 if abs(mi - emi) < 1e-12 else 0.0
    return (mi - emi) / denominator


# -- crops, banks, embeddings --------------------------------------------------------------------


def book_crops(book: Book) -> list[tuple[str, str, str]]:
    """(crop address, character id, name) for the book's character crops across all its pages:
    bodies, and faces only in panels without a body (one crop per person)."""
    crops = []
    for page, panel in book.panels():
        has_body = any(person.part == "body" for person in panel.characters)
        for person in panel.characters:
            if person.part == "body" or not has_body:
                name = book.characters.get(person.character) or person.character
                crops.append((crop_address(page.image, person.box), person.character, name))
    return crops


def load_bank(path: str | Path) -> list[tuple[str, str]]:
    """(name, image or crop address) pairs of a character bank folder or JSON list."""
    path = Path(path)
    if path.is_dir():
        entries = [
            (folder.name, str(image))
            for folder in sorted(p for p in path.iterdir() if p.is_dir())
            for image in sorted(folder.iterdir())
            if image.suffix.lower() in IMAGE_SUFFIXES
        ]
    elif path.is_file():
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ComicsDataError(path, f"not a readable JSON character bank: {exc}") from exc
        if not isinstance(rows, list) or not all(
            isinstance(r, dict) and {"name", "image"} <= r.keys() for r in rows
        ):
            raise ComicsDataError(path, 'expected a list of {"name": ..., "image": ...} objects')
        entries = []
        for row in rows:
            image, _, fragment = str(row["image"]).partition("#")
            address = str(resolve_within(path.parent, image)) + (f"#{fragment}" if fragment else "")
            entries.append((str(row["name"]), address))
    else:
        raise ComicsDataError(path, "character bank not found (a folder <name>/*.png or a JSON)")
    if not entries:
        raise ComicsDataError(path, "character bank holds no example crops")
    return entries


def embed_crops(system, addresses: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit image embeddings ``[N, D]`` of crops, through a comics CLIP system's encoder."""
    from domainvlm.core.retrieval import embed_images

    if not addresses:
        return np.zeros((0, 0), dtype=np.float32)
    return embed_images(system.encoder(), list(addresses), batch_size).numpy()


def thumbnail_embeddings(addresses: Sequence[str], size: int = 8) -> np.ndarray:
    """Unit vectors of ``size``×``size`` colour thumbnails, centred on the set's mean: the
    no-learning baseline a crop embedding has to beat."""
    from domainvlm.domains.comics.datamodule import squash

    if not addresses:
        return np.zeros((0, size * size * 3))
    pixels = np.stack([squash(read_crop(a), size).reshape(-1) / 255.0 for a in addresses])
    return _unit(pixels - pixels.mean(axis=0))
