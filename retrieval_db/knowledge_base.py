"""``KnowledgeBase``: vectors, their metadata and the encoder that made them, kept in step.

Ids are assigned in increasing order and never reused, so the vector, id and metadata arrays stay
sorted by id and a deleted id can never come back with different meaning. Deletes are tombstones
(excluded from every search through an ``IDSelector``) until ``compact`` rebuilds the index; this
works the same for every index type, including HNSW, which cannot remove vectors.

Concurrency: searches share a readers–writer lock; ``add``/``delete`` take it exclusively for the
short moment they change state, so no search sees half an update. A separate writer mutex keeps
writers (and ``save``/``compact``, which take minutes on big bases) in single file without
blocking searches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from domainvlm.retrieval_db.building import BuildOptions, build, checked_recall_queries
from domainvlm.retrieval_db.encoding import encode_in_batches, prepare_vectors
from domainvlm.retrieval_db.errors import EncoderMismatchError
from domainvlm.retrieval_db.gpu import resolve_use_gpu, to_gpu
from domainvlm.retrieval_db.index import (
    DEFAULT_MEMORY_BUDGET_BYTES,
    DEFAULT_TARGET_RECALL,
)
from domainvlm.retrieval_db.locking import ReadWriteLock
from domainvlm.retrieval_db.manifest import (
    METRICS,
    IndexInfo,
    Manifest,
    RecallInfo,
    StoredFile,
    same_encoder,
    validate_encoder_identity,
)
from domainvlm.retrieval_db.metadata import MetadataStore
from domainvlm.retrieval_db.persistence import private_copy, read_generation, write_generation
from domainvlm.retrieval_db.searching import Hit, SearchState

Encode = Callable[[list[str]], Any]
"""``encode(batch of texts or image paths) -> array [len(batch), dim]``."""


class KnowledgeBase:
    """Build with ``from_vectors``/``from_texts``/``from_image_paths`` or open with ``load``."""

    def __init__(
        self,
        *,
        state: SearchState,
        encoder: dict[str, str],
        built: IndexInfo,
        recall: RecallInfo,
        created_at: str,
        origin: str = "in-memory knowledge base",
        use_gpu: bool | None = None,
    ) -> None:
        self._state = state
        self._encoder = encoder
        self._index_info = built
        self._recall = recall
        self._created_at = created_at
        self._origin = origin
        self._gpu_enabled = resolve_use_gpu(use_gpu)
        self._gpu_lock = threading.Lock()
        self._gpu_copy: tuple[faiss.Index, int, faiss.Index | None] | None = None
        self._index_mapped = False
        self._rw = ReadWriteLock()
        self._writer = threading.Lock()

    # ----------------------------------------------------------------------------------- build

    @classmethod
    def from_vectors(
        cls,
        vectors: Any,
        records: Sequence[Mapping[str, Any]],
        *,
        encoder: Mapping[str, str],
        metric: str = "cosine",
        index_factory: str | None = None,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        target_recall: float = DEFAULT_TARGET_RECALL,
        seed: int = 0,
        use_gpu: bool | None = None,
        recall_queries: Any | None = None,
        recall_query_kind: str | None = None,
    ) -> KnowledgeBase:
        """Vector ``i`` gets id ``i`` and metadata ``records[i]``.

        ``metric``: ``cosine`` (vectors L2-normalised, inner product), ``ip`` or ``l2``.
        ``index_factory`` forces a FAISS factory string instead of the automatic choice.
        ``recall_queries``: held-out query vectors of the kind users will send (for an image
        base searched by text, captions through the text tower), labelled ``recall_query_kind``
        (``text``, ``image``, ...) in the manifest; they tune the index and measure the recall
        it records. Without them, held-out stored vectors do, which flatters cross-modal use.
        """
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if not 0 < target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        identity = validate_encoder_identity(dict(encoder), "encoder")
        vectors = prepare_vectors(vectors, metric, None, "vectors")
        if len(records) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(records)} metadata records")
        queries = checked_recall_queries(
            recall_queries, recall_query_kind, metric, vectors.shape[1]
        )
        ids = np.arange(len(vectors), dtype=np.int64)
        metadata = MetadataStore.empty()
        metadata.insert(ids, records)
        options = BuildOptions(
            metric, index_factory, memory_budget_bytes, target_recall, seed, *queries
        )
        built, index_info, recall = build(vectors, ids, options)
        state = SearchState(
            index=built.index,
            kind=built.kind,
            search_params=built.search_params,
            metric=metric,
            vectors=vectors,
            ids=ids,
            deleted=np.empty(0, dtype=np.int64),
            metadata=metadata,
            next_id=len(vectors),
        )
        return cls(
            state=state,
            encoder=identity,
            built=index_info,
            recall=recall,
            created_at=_now(),
            use_gpu=use_gpu,
        )

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        encode: Encode,
        *,
        encoder: Mapping[str, str],
        records: Sequence[Mapping[str, Any]] | None = None,
        batch_size: int = 256,
        progress: bool = True,
        **options: Any,
    ) -> KnowledgeBase:
        """Encode ``texts`` in batches; each record defaults to ``{"text": text}``."""
        texts = list(texts)
        vectors = encode_in_batches(texts, encode, batch_size, progress, "encoding texts")
        records = records if records is not None else [{"text": text} for text in texts]
        return cls.from_vectors(vectors, records, encoder=encoder, **options)

    @classmethod
    def from_image_paths(
        cls,
        paths: Sequence[str | Path],
        encode: Encode,
        *,
        encoder: Mapping[str, str],
        records: Sequence[Mapping[str, Any]] | None = None,
        batch_size: int = 64,
        progress: bool = True,
        **options: Any,
    ) -> KnowledgeBase:
        """Encode images by path in batches; each record defaults to ``{"path": path}``."""
        names = [str(path) for path in paths]
        vectors = encode_in_batches(names, encode, batch_size, progress, "encoding images")
        records = records if records is not None else [{"path": name} for name in names]
        return cls.from_vectors(vectors, records, encoder=encoder, **options)

    # ----------------------------------------------------------------------------- properties

    @property
    def dimension(self) -> int:
        return self._state.vectors.shape[1]

    @property
    def metric(self) -> str:
        return self._state.metric

    @property
    def encoder(self) -> dict[str, str]:
        return dict(self._encoder)

    @property
    def index_info(self) -> IndexInfo:
        return self._index_info

    @property
    def recall(self) -> RecallInfo:
        """Recall@10 against exact search, measured when the index was last (re)built."""
        return self._recall

    def __len__(self) -> int:
        return self._state.metadata.count()

    def get(self, ids: Sequence[int]) -> list[dict[str, Any] | None]:
        return self._state.metadata.get(ids)

    def ids(self) -> np.ndarray:
        """The ids of the records not deleted, in increasing order."""
        return self._state.metadata.ids()

    def matching_ids(self, where: Mapping[str, Any]) -> np.ndarray:
        """Ids of the records ``where`` keeps (as in ``search``), in increasing order."""
        return self._state.metadata.matching_ids(where)

    def metadata_fields(self) -> dict[str, set[str]]:
        """Field name -> JSON types it holds across the records (what a ``where`` can name)."""
        return self._state.metadata.fields()

    # ---------------------------------------------------------------------------------- search

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        encoder: Mapping[str, str],
        where: Mapping[str, Any] | None = None,
        allow_encoder_mismatch: bool = False,
    ) -> list[list[Hit]]:
        """Top ``k`` hits per query row, best first, each with ``id``, ``score`` and ``record``.

        ``where`` keeps only records whose fields equal the given values (a list means any of
        them), e.g. ``{"level": "object", "lang": ["de", "en"]}``; the result still holds ``k``
        hits whenever that many records match. Scores are inner products (cosine for the
        default metric) or squared L2 distances.
        """
        self._check_encoder(encoder, allow_encoder_mismatch, "query")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        queries = prepare_vectors(queries, self.metric, self.dimension, "queries")
        with self._rw.reading():
            state = self._state
            gpu = self._gpu_index(state) if where is None and len(state.deleted) == 0 else None
            return state.search(queries, k, where, (gpu, self._gpu_lock) if gpu else None)

    def search_texts(
        self,
        texts: Sequence[str],
        encode: Encode,
        k: int = 10,
        *,
        encoder: Mapping[str, str],
        where: Mapping[str, Any] | None = None,
        allow_encoder_mismatch: bool = False,
    ) -> list[list[Hit]]:
        self._check_encoder(encoder, allow_encoder_mismatch, "query")
        queries = encode_in_batches(list(texts), encode, 256, False, "encoding queries")
        return self.search(
            queries, k, encoder=encoder, where=where, allow_encoder_mismatch=allow_encoder_mismatch
        )

    # ---------------------------------------------------------------------------------- update

    def add(
        self,
        vectors: Any,
        records: Sequence[Mapping[str, Any]],
        *,
        encoder: Mapping[str, str],
        allow_encoder_mismatch: bool = False,
    ) -> np.ndarray:
        """Append records; returns their new ids. The index is not retrained: ``compact`` does."""
        self._check_encoder(encoder, allow_encoder_mismatch, "added vectors'")
        vectors = prepare_vectors(vectors, self.metric, self.dimension, "vectors")
        if len(records) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(records)} metadata records")
        with self._writer:
            self._ensure_writable_index()
            with self._rw.writing():
                state = self._state
                new_ids = np.arange(state.next_id, state.next_id + len(vectors), dtype=np.int64)
                state.metadata.insert(new_ids, records)
                try:
                    state.index.add_with_ids(vectors, new_ids)
                except BaseException:
                    state.metadata.delete(new_ids)
                    raise
                self._state = replace(
                    state,
                    vectors=np.concatenate([state.vectors, vectors]),
                    ids=np.concatenate([state.ids, new_ids]),
                    next_id=state.next_id + len(vectors),
                )
        return new_ids

    def add_texts(
        self,
        texts: Sequence[str],
        encode: Encode,
        *,
        encoder: Mapping[str, str],
        records: Sequence[Mapping[str, Any]] | None = None,
        batch_size: int = 256,
        progress: bool = False,
        allow_encoder_mismatch: bool = False,
    ) -> np.ndarray:
        self._check_encoder(encoder, allow_encoder_mismatch, "added vectors'")
        texts = list(texts)
        vectors = encode_in_batches(texts, encode, batch_size, progress, "encoding texts")
        records = records if records is not None else [{"text": text} for text in texts]
        return self.add(
            vectors, records, encoder=encoder, allow_encoder_mismatch=allow_encoder_mismatch
        )

    def delete(self, ids: Sequence[int]) -> int:
        """Remove records by id (unknown ids are ignored); returns how many existed."""
        with self._writer, self._rw.writing():
            removed = self._state.metadata.delete(ids)
            self._state = replace(self._state, deleted=np.union1d(self._state.deleted, removed))
        return len(removed)

    def compact(
        self, recall_queries: Any | None = None, recall_query_kind: str | None = None
    ) -> None:
        """Drop deleted vectors and rebuild the index for the current size (re-chosen unless the
        factory was forced), re-tuned and with freshly measured recall (with ``recall_queries``
        as in ``from_vectors``, else with held-out stored vectors). Searches continue against
        the old index meanwhile."""
        queries = checked_recall_queries(
            recall_queries, recall_query_kind, self.metric, self.dimension
        )
        with self._writer:
            with self._rw.reading():
                state = self._state
                live = ~np.isin(state.ids, state.deleted)
                vectors, ids = np.ascontiguousarray(state.vectors[live]), state.ids[live]
            info = self._index_info
            options = BuildOptions(
                metric=self.metric,
                index_factory=info.factory if info.forced else None,
                memory_budget_bytes=info.memory_budget_bytes,
                target_recall=self._recall.target,
                recall_queries=queries[0],
                recall_query_kind=queries[1],
            )
            built, index_info, recall = build(vectors, ids, options)
            with self._rw.writing():
                self._state = replace(
                    state,
                    index=built.index,
                    kind=built.kind,
                    search_params=built.search_params,
                    vectors=vectors,
                    ids=ids,
                    deleted=np.empty(0, dtype=np.int64),
                )
                self._index_info = index_info
                self._recall = recall
                self._index_mapped = False

    # ------------------------------------------------------------------------------ save/load

    def save(self, directory: str | Path) -> Manifest:
        """Atomically replace the knowledge base at ``directory`` (see ``storage.py``);
        searches continue meanwhile."""
        with self._writer:
            state = self._state

            def manifest_for(files: dict[str, StoredFile]) -> Manifest:
                return Manifest(
                    dimension=self.dimension,
                    metric=self.metric,
                    count=state.metadata.count(),
                    stored_vectors=len(state.ids),
                    next_id=state.next_id,
                    encoder=self._encoder,
                    index=self._index_info,
                    recall=self._recall,
                    created_at=self._created_at,
                    saved_at=_now(),
                    files=files,
                )

            return write_generation(Path(directory), state, manifest_for)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        mmap: bool = True,
        verify: bool = True,
        use_gpu: bool | None = None,
    ) -> KnowledgeBase:
        """Open a saved knowledge base; index and vectors are memory-mapped when ``mmap``.

        ``verify`` checks every file's sha256 against the manifest (reads each file once).
        """
        loaded = read_generation(Path(directory), mmap, verify)
        knowledge_base = cls(
            state=loaded.state,
            encoder=loaded.manifest.encoder,
            built=loaded.manifest.index,
            recall=loaded.manifest.recall,
            created_at=loaded.manifest.created_at,
            origin=f"knowledge base {directory}",
            use_gpu=use_gpu,
        )
        knowledge_base._index_mapped = loaded.index_mapped
        return knowledge_base

    # -------------------------------------------------------------------------------- helpers

    def _check_encoder(self, encoder: Mapping[str, str], allow_mismatch: bool, what: str) -> None:
        identity = validate_encoder_identity(dict(encoder), "encoder")
        if same_encoder(identity, self._encoder) or allow_mismatch:
            return
        raise EncoderMismatchError(
            f"{self._origin} was built with encoder {self._encoder['name']!r} "
            f"(sha256 {self._encoder['sha256'][:12]}…), but the {what} encoder is "
            f"{identity['name']!r} (sha256 {identity['sha256'][:12]}…). Vectors from different "
            "encoders are not comparable (the name is only where an encoder came from; the hash "
            "of its weights and preprocessing identifies it): rebuild the knowledge base with "
            "this encoder, or pass allow_encoder_mismatch=True if you know the two embed into "
            "the same space."
        )

    def _gpu_index(self, state: SearchState) -> faiss.Index | None:
        """The GPU copy of the current index, (re)made when the index changed since the last one."""
        if not self._gpu_enabled:
            return None
        with self._gpu_lock:
            cached = self._gpu_copy
            if cached is None or cached[0] is not state.index or cached[1] != state.index.ntotal:
                gpu_index = to_gpu(state.index, state.kind, state.search_params)
                self._gpu_copy = cached = (state.index, state.index.ntotal, gpu_index)
            return cached[2]

    def _ensure_writable_index(self) -> None:
        """Called with the writer mutex held, so the copy cannot miss a concurrent change."""
        if not self._index_mapped:
            return
        index = private_copy(self._state.index)
        with self._rw.writing():
            self._state = replace(self._state, index=index)
            self._index_mapped = False


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
