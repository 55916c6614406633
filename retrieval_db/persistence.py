"""Reading and writing the files of one knowledge-base generation (layout: ``storage.py``).

Everything read is checked against the manifest, and every failure names the file at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from domainvlm.retrieval_db.errors import CorruptKnowledgeBaseError
from domainvlm.retrieval_db.index import index_kind
from domainvlm.retrieval_db.manifest import MANIFEST_NAME, Manifest, StoredFile, read_manifest
from domainvlm.retrieval_db.metadata import MetadataStore
from domainvlm.retrieval_db.searching import SearchState
from domainvlm.retrieval_db.storage import checked_paths, commit_generation, directory_lock


@dataclass(frozen=True)
class LoadedBase:
    manifest: Manifest
    state: SearchState
    index_mapped: bool
    """The index is memory-mapped, hence read-only: see ``private_copy``."""


def write_generation(
    directory: Path, state: SearchState, manifest_for: Callable[[dict[str, StoredFile]], Manifest]
) -> Manifest:
    def write_files(paths: dict[str, Path]) -> None:
        faiss.write_index(state.index, str(paths["index"]))
        state.metadata.save(paths["metadata"])
        _write_array(paths["vectors"], state.vectors)
        _write_array(paths["ids"], state.ids)

    return commit_generation(directory, write_files, manifest_for)


def read_generation(directory: Path, mmap: bool, verify: bool) -> LoadedBase:
    if not directory.is_dir():
        raise CorruptKnowledgeBaseError(f"{directory}: no such knowledge-base directory")
    with directory_lock(directory, exclusive=False):
        manifest = read_manifest(directory)
        paths = checked_paths(directory, manifest, verify)
        metadata = MetadataStore.load(paths["metadata"])
        vectors = _read_array(paths["vectors"], mmap, np.float32, 2)
        ids = _read_array(paths["ids"], False, np.int64, 1)
        index = _read_index(paths["index"], mmap)
    live = metadata.ids()
    deleted = np.setdiff1d(ids, live)
    _check_consistent(directory, manifest, paths, index, vectors, ids, live, deleted)
    state = SearchState(
        index=index,
        kind=manifest.index.kind,
        search_params=manifest.index.search_params,
        metric=manifest.metric,
        vectors=vectors,
        ids=ids,
        deleted=deleted,
        metadata=metadata,
        next_id=manifest.next_id,
    )
    return LoadedBase(manifest, state, index_mapped=mmap)


def private_copy(index: faiss.Index) -> faiss.Index:
    """An in-memory, writable copy of a memory-mapped index (mutating a mapped one aborts the
    process). Copied from the mapping itself, which outlives a later save into the directory."""
    return faiss.deserialize_index(faiss.serialize_index(index))


def _write_array(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _read_array(path: Path, mmap: bool, dtype: type, ndim: int) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise CorruptKnowledgeBaseError(f"{path}: not a readable .npy array: {error}") from error
    if array.dtype != dtype or array.ndim != ndim:
        raise CorruptKnowledgeBaseError(
            f"{path}: expected a {ndim}-D {np.dtype(dtype).name} array, "
            f"found {array.ndim}-D {array.dtype}"
        )
    return array


def _read_index(path: Path, mmap: bool) -> faiss.Index:
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except RuntimeError as error:
        raise CorruptKnowledgeBaseError(
            f"{path}: FAISS cannot read the index file: {str(error).strip()[:300]}"
        ) from error


def _check_consistent(
    directory: Path,
    manifest: Manifest,
    paths: dict[str, Path],
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    live: np.ndarray,
    deleted: np.ndarray,
) -> None:
    """Files that each read fine can still disagree (mixed generations, hand edits)."""
    problems = {
        "index": index.ntotal != manifest.stored_vectors
        or index.d != manifest.dimension
        or index_kind(index) != manifest.index.kind,
        "vectors": vectors.shape != (manifest.stored_vectors, manifest.dimension),
        "ids": len(ids) != manifest.stored_vectors
        or bool(len(ids) and (np.any(np.diff(ids) <= 0) or ids[-1] >= manifest.next_id)),
        "metadata": len(live) != manifest.count or len(ids) - len(deleted) != len(live),
    }
    for role, wrong in problems.items():
        if wrong:
            raise CorruptKnowledgeBaseError(
                f"{paths[role]}: the {role} file does not match {directory / MANIFEST_NAME} "
                f"({manifest.stored_vectors} stored vectors of dimension {manifest.dimension}, "
                f"{manifest.count} live records)"
            )
