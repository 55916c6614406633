"""``manifest.json``: what a saved knowledge base holds and which encoder made its vectors.

The manifest is written last and by a single atomic rename, so it is also the commit record of a
save: it names the exact data files of one complete generation (see ``storage.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from domainvlm.retrieval_db.errors import CorruptKnowledgeBaseError
from domainvlm.retrieval_db.index import STORED_QUERIES

FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)
"""Version 2 added ``recall.query_kind``; a version-1 manifest measured with stored vectors."""
MANIFEST_NAME = "manifest.json"
METRICS = ("cosine", "ip", "l2")
FILE_ROLES = ("index", "metadata", "vectors", "ids")


@dataclass(frozen=True)
class StoredFile:
    """One data file of a saved generation; size and hash catch truncation and bit rot at load."""

    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class IndexInfo:
    kind: str
    """``flat``, ``hnsw``, ``ivf`` or ``other`` (a forced factory string of another family)."""
    factory: str
    search_params: dict[str, int]
    forced: bool
    """True when the user forced ``factory``; compaction then keeps it instead of re-choosing."""
    memory_budget_bytes: int


@dataclass(frozen=True)
class RecallInfo:
    """Recall@k of the index against exact search, measured when the index was (re)built."""

    k: int
    value: float
    target: float
    queries: int
    measured_at_count: int
    query_kind: str = STORED_QUERIES
    """Which queries measured ``value``: ``stored`` (held-out stored vectors) or the label the
    builder gave its held-out queries (``text`` for captions through the text tower, say)."""


@dataclass(frozen=True)
class Manifest:
    dimension: int
    metric: str
    count: int
    """Live records (searchable, with metadata)."""
    stored_vectors: int
    """Rows in the vector and index files: live records plus deleted ones not yet compacted."""
    next_id: int
    encoder: dict[str, str]
    index: IndexInfo
    recall: RecallInfo
    created_at: str
    saved_at: str
    files: dict[str, StoredFile] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def same_encoder(a: dict[str, str], b: dict[str, str]) -> bool:
    """Identity is the hash of weights and preprocessing; ``name`` is provenance (a checkpoint's
    path, say), so a copied or moved encoder is still the same one."""
    return a["sha256"] == b["sha256"]


def validate_encoder_identity(identity: Any, where: str) -> dict[str, str]:
    """An encoder identity is ``{"name": str, "sha256": str}`` (see ``domainvlm.core.encoder.Encoder``):
    ``sha256`` identifies, ``name`` records where it came from."""
    if (
        not isinstance(identity, dict)
        or not isinstance(identity.get("name"), str)
        or not isinstance(identity.get("sha256"), str)
        or not identity["name"]
        or not identity["sha256"]
    ):
        raise ValueError(
            f"{where}: an encoder identity must be a dict with non-empty string fields 'name' and "
            f"'sha256' (what domainvlm.core.encoder.Encoder.identity() returns), got {identity!r}"
        )
    return {"name": identity["name"], "sha256": identity["sha256"]}


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise CorruptKnowledgeBaseError(
            f"{path}: manifest is missing; {directory} is not a saved knowledge base"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptKnowledgeBaseError(
            f"{path}: manifest is not readable JSON: {error}"
        ) from error
    if not isinstance(raw, dict):
        raise CorruptKnowledgeBaseError(f"{path}: manifest must be a JSON object")
    version = raw.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise CorruptKnowledgeBaseError(
            f"{path}: unknown knowledge-base format_version {version!r}; this version of "
            f"retrieval_db reads {list(SUPPORTED_FORMAT_VERSIONS)}. Rebuild the knowledge base or "
            "upgrade domainvlm."
        )
    try:
        return _parse(raw)
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptKnowledgeBaseError(f"{path}: invalid manifest: {error}") from error


def _parse(raw: dict[str, Any]) -> Manifest:
    files = {role: StoredFile(**raw["files"][role]) for role in FILE_ROLES}
    manifest = Manifest(
        dimension=_positive_int(raw["dimension"], "dimension"),
        metric=raw["metric"],
        count=_positive_int(raw["count"], "count", allow_zero=True),
        stored_vectors=_positive_int(raw["stored_vectors"], "stored_vectors", allow_zero=True),
        next_id=_positive_int(raw["next_id"], "next_id", allow_zero=True),
        encoder=validate_encoder_identity(raw["encoder"], "encoder"),
        index=IndexInfo(**raw["index"]),
        recall=RecallInfo(**raw["recall"]),
        created_at=str(raw["created_at"]),
        saved_at=str(raw["saved_at"]),
        files=files,
        format_version=raw["format_version"],
    )
    if manifest.metric not in METRICS:
        raise ValueError(f"metric {manifest.metric!r} is not one of {METRICS}")
    if manifest.count > manifest.stored_vectors:
        raise ValueError(f"count {manifest.count} exceeds stored_vectors {manifest.stored_vectors}")
    for role, entry in files.items():
        if not isinstance(entry.name, str) or "/" in entry.name or entry.name.startswith("."):
            raise ValueError(f"files.{role}.name must be a plain file name, got {entry.name!r}")
    return manifest


def _positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer")
    return value
