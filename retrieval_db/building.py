"""Building a knowledge base's index: the options it is built with, the queries that measure its
recall, and what the manifest records about the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from domainvlm.retrieval_db.encoding import prepare_vectors
from domainvlm.retrieval_db.index import (
    DEFAULT_MEMORY_BUDGET_BYTES,
    DEFAULT_TARGET_RECALL,
    RECALL_K,
    STORED_QUERIES,
    BuiltIndex,
    build_index,
)
from domainvlm.retrieval_db.manifest import IndexInfo, RecallInfo


@dataclass(frozen=True)
class BuildOptions:
    metric: str = "cosine"
    index_factory: str | None = None
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
    target_recall: float = DEFAULT_TARGET_RECALL
    seed: int = 0
    recall_queries: np.ndarray | None = None
    recall_query_kind: str = STORED_QUERIES


def checked_recall_queries(
    queries: Any | None, kind: str | None, metric: str, dimension: int
) -> tuple[np.ndarray | None, str]:
    """Caller-given recall queries as clean vectors with their kind, or ``(None, "stored")``."""
    if queries is None:
        if kind is not None:
            raise ValueError("recall_query_kind labels recall_queries, but none were given")
        return None, STORED_QUERIES
    if not isinstance(kind, str) or not kind or kind == STORED_QUERIES:
        raise ValueError(
            "recall_queries need recall_query_kind, a label for their kind such as 'text' or "
            f"'image' (not {STORED_QUERIES!r}, which means held-out stored vectors), got {kind!r}"
        )
    array = prepare_vectors(queries, metric, dimension, "recall queries")
    if len(array) < 2:
        raise ValueError(
            f"recall queries: need at least 2 (half tune, half measure), got {len(array)}"
        )
    return array, kind


def build(
    vectors: np.ndarray, ids: np.ndarray, options: BuildOptions
) -> tuple[BuiltIndex, IndexInfo, RecallInfo]:
    """The index over ``vectors`` labelled ``ids``, with its manifest entries."""
    built = build_index(
        vectors,
        ids,
        metric=options.metric,
        factory=options.index_factory,
        memory_budget_bytes=options.memory_budget_bytes,
        target_recall=options.target_recall,
        seed=options.seed,
        queries=options.recall_queries,
        query_kind=options.recall_query_kind,
    )
    index_info = IndexInfo(
        kind=built.kind,
        factory=built.factory,
        search_params=built.search_params,
        forced=options.index_factory is not None,
        memory_budget_bytes=options.memory_budget_bytes,
    )
    recall = RecallInfo(
        k=RECALL_K,
        value=built.recall,
        target=options.target_recall,
        queries=built.recall_queries,
        measured_at_count=len(vectors),
        query_kind=built.query_kind,
    )
    return built, index_info, recall
