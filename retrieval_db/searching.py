"""Searching one consistent state of a knowledge base, filters and tombstones included.

Filtering never loses ``k``: a small filtered set is searched exactly; a large one goes through the
index with an ``IDSelector``, and any query the approximate index answers with fewer than
``min(k, matches)`` hits is answered again by exact search over the matching vectors.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from domainvlm.retrieval_db.index import exact_search, search_parameters
from domainvlm.retrieval_db.metadata import MetadataStore

EXACT_FILTER_MAX_ROWS = 20_000
"""Up to this many matching vectors, brute force over them beats the index and is exact."""
SELECTOR_KINDS = ("flat", "hnsw", "ivf")
"""Index families whose search honours an IDSelector."""


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    record: dict[str, Any]


@dataclass(frozen=True)
class SearchState:
    """Everything a search reads. Never mutated in place except by a writer holding the write lock
    (FAISS ``add``, metadata edits); replaced wholesale otherwise."""

    index: faiss.Index
    kind: str
    search_params: dict[str, int]
    metric: str
    vectors: np.ndarray
    """All stored rows (deleted ones too, until compaction), sorted by id like ``ids``."""
    ids: np.ndarray
    deleted: np.ndarray
    """Sorted ids still in the index and ``vectors`` but without metadata: excluded from results."""
    metadata: MetadataStore
    next_id: int

    def search(
        self,
        queries: np.ndarray,
        k: int,
        where: Mapping[str, Any] | None,
        gpu: tuple[faiss.Index, threading.Lock] | None = None,
    ) -> list[list[Hit]]:
        if where:
            allowed = self.metadata.matching_ids(where)
            available = len(allowed)
            exact = available <= EXACT_FILTER_MAX_ROWS or self.kind not in SELECTOR_KINDS
            selector = None if exact else faiss.IDSelectorBatch(allowed)

            def candidate_rows() -> np.ndarray:
                return np.searchsorted(self.ids, allowed)

        else:
            available = len(self.ids) - len(self.deleted)
            exact = len(self.deleted) > 0 and self.kind not in SELECTOR_KINDS
            selector = None
            if len(self.deleted):
                selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(self.deleted))

            def candidate_rows() -> np.ndarray:
                return np.flatnonzero(~np.isin(self.ids, self.deleted))

        expected = min(k, available)
        if expected == 0:
            return [[] for _ in queries]
        if exact:
            return self._hits(*self._exact(queries, k, candidate_rows()))
        if gpu is not None and selector is None:
            gpu_index, gpu_lock = gpu
            with gpu_lock:
                scores, labels = gpu_index.search(queries, k)
        else:
            params = search_parameters(self.kind, self.search_params, selector)
            scores, labels = self.index.search(queries, k, params=params)
        short = (labels >= 0).sum(axis=1) < expected
        if short.any():
            scores[short], labels[short] = self._exact(queries[short], k, candidate_rows())
        return self._hits(scores, labels)

    def _exact(
        self, queries: np.ndarray, k: int, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, found_rows = exact_search(self.vectors, queries, k, self.metric, rows)
        return scores, np.where(found_rows >= 0, self.ids[found_rows], -1)

    def _hits(self, scores: np.ndarray, labels: np.ndarray) -> list[list[Hit]]:
        wanted = np.unique(labels[labels >= 0])
        records = dict(zip(wanted.tolist(), self.metadata.get(wanted.tolist()), strict=True))
        return [
            [
                Hit(int(label), float(score), records[int(label)])
                for score, label in zip(row_scores, row_labels, strict=True)
                if label >= 0
            ]
            for row_scores, row_labels in zip(scores, labels, strict=True)
        ]
