"""FAISS knowledge bases shared by every domain: vectors, metadata and the encoder that made them.

Knows nothing about models: callers pass vectors (or an ``encode(list[str]) -> array`` callable)
and the encoder's identity ``{"name": ..., "sha256": ...}``.
"""

from domainvlm.retrieval_db.errors import (
    CorruptKnowledgeBaseError,
    EncoderMismatchError,
    FilterError,
    KnowledgeBaseError,
)
from domainvlm.retrieval_db.index import (
    DEFAULT_MEMORY_BUDGET_BYTES,
    DEFAULT_TARGET_RECALL,
    STORED_QUERIES,
    choose_factory,
    exact_search,
    recall_at_k,
)
from domainvlm.retrieval_db.knowledge_base import KnowledgeBase
from domainvlm.retrieval_db.manifest import (
    FORMAT_VERSION,
    IndexInfo,
    Manifest,
    RecallInfo,
    read_manifest,
    same_encoder,
)
from domainvlm.retrieval_db.searching import Hit

__all__ = [
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "DEFAULT_TARGET_RECALL",
    "FORMAT_VERSION",
    "STORED_QUERIES",
    "CorruptKnowledgeBaseError",
    "EncoderMismatchError",
    "FilterError",
    "Hit",
    "IndexInfo",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "Manifest",
    "RecallInfo",
    "choose_factory",
    "exact_search",
    "read_manifest",
    "recall_at_k",
    "same_encoder",
]
