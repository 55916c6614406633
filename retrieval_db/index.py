"""Choosing, building and tuning the FAISS index, and measuring it against exact search.

Heuristics follow autofaiss / clip-retrieval: exact search while it is cheap, HNSW while its graph
builds quickly and fits the memory budget, IVF with about 4·√n lists beyond that, and product
quantisation only when full vectors do not fit. Search parameters (``nprobe``, ``efSearch``) are
tuned on held-out queries to the smallest value reaching the target recall, because recall and
speed trade off monotonically and the cheapest sufficient setting is the useful one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

DEFAULT_MEMORY_BUDGET_BYTES = 4 * 2**30
DEFAULT_TARGET_RECALL = 0.95
RECALL_K = 10
FLAT_MAX_VECTORS = 1_000
"""Below this, exact search is as fast as anything and needs no training."""
HNSW_MAX_VECTORS = 100_000
"""HNSW builds about 3x slower than IVF here (~50 s vs ~16 s for 100k x 512 on 2 cores) and the
gap grows with n, so larger sets go to IVF."""
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
TUNING_QUERIES = 500
"""Queries used to tune; as many again, disjoint, measure the recall recorded in the manifest."""
STORED_QUERIES = "stored"
"""The query kind recorded when held-out stored vectors stood in for queries."""
_EXACT_CHUNK_ROWS = 16_384
_QUERY_BLOCK = 1_024


@dataclass(frozen=True)
class BuiltIndex:
    index: faiss.Index
    kind: str
    factory: str
    search_params: dict[str, int]
    recall: float
    recall_queries: int
    query_kind: str
    """``stored``, or the caller's label for the query vectors it gave (``text``, ``image``)."""


def faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def ivf_list_count(n: int) -> int:
    """About 4·√n lists (a power of two), but at least 39 training points per list."""
    lists = 2 ** round(math.log2(max(4 * math.sqrt(n), 1)))
    return int(max(1, min(lists, n // 39)))


def estimate_index_bytes(factory: str, n: int, dim: int) -> int:
    """Resident size of an index built by ``choose_factory``'s strings (ids included)."""
    if factory == "Flat":
        return n * (4 * dim + 8)
    if factory.startswith("HNSW"):
        return n * (4 * dim + 8 + int(2 * HNSW_NEIGHBOURS * 4 * 1.1))
    lists = int(factory[3 : factory.index(",")])
    coarse = lists * dim * 4
    if factory.endswith(",Flat"):
        return coarse + n * (4 * dim + 8)
    code_bytes = int(factory.split(",PQ")[1].split("x")[0])
    return coarse + 256 * dim * 4 + n * (code_bytes + 8)


def choose_factory(n: int, dim: int, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> str:
    """The FAISS factory string for ``n`` vectors of ``dim`` within ``memory_budget_bytes``."""
    if n < FLAT_MAX_VECTORS:
        return "Flat"
    hnsw = f"HNSW{HNSW_NEIGHBOURS}"
    if n <= HNSW_MAX_VECTORS and estimate_index_bytes(hnsw, n, dim) <= memory_budget_bytes:
        return hnsw
    lists = ivf_list_count(n)
    ivf_flat = f"IVF{lists},Flat"
    if estimate_index_bytes(ivf_flat, n, dim) <= memory_budget_bytes:
        return ivf_flat
    for code_bytes in (64, 48, 32, 24, 16, 8, 4):
        ivf_pq = f"IVF{lists},PQ{code_bytes}x8"
        if dim % code_bytes == 0 and estimate_index_bytes(ivf_pq, n, dim) <= memory_budget_bytes:
            return ivf_pq
    raise ValueError(
        f"{n} vectors of dimension {dim} do not fit a memory budget of {memory_budget_bytes} bytes "
        f"even with 4-byte product-quantised codes (about "
        f"{estimate_index_bytes(f'IVF{lists},PQ4x8', n, dim)} bytes needed); raise the budget"
    )


def make_index(factory: str, dim: int, metric: str) -> faiss.Index:
    """An empty index addressed by our ids: IVF stores ids natively, others sit in an IndexIDMap."""
    try:
        index = faiss.index_factory(dim, factory, faiss_metric(metric))
    except RuntimeError as error:
        raise ValueError(f"FAISS cannot build index factory {factory!r}: {error}") from None
    if not isinstance(index, faiss.IndexIVF):  # the factory returns the concrete class
        return faiss.IndexIDMap(index)
    if isinstance(index, faiss.IndexIVFPQ):
        # Polysemous codes only serve Hamming-filtered search, which we do not use; training
        # them costs far more than the PQ itself.
        index.do_polysemous_training = False
    return index


def index_kind(index: faiss.Index) -> str:
    """The family whose search parameters apply; ``other`` gets no parameters or selectors."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    return "other"


def search_parameters(
    kind: str, params: dict[str, int], selector: faiss.IDSelector | None = None
) -> faiss.SearchParameters | None:
    """Fresh per-call parameters: FAISS mutates them during an IndexIDMap search, so never share.

    ``None`` for the ``other`` family, whose composite indexes may expect their own types.
    """
    if kind == "ivf":
        result = faiss.SearchParametersIVF(nprobe=params.get("nprobe", 1))
    elif kind == "hnsw":
        result = faiss.SearchParametersHNSW(efSearch=params.get("efSearch", 16))
    elif kind == "flat":
        result = faiss.SearchParameters()
    else:
        return None
    if selector is not None:
        result.sel = selector
    return result


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    metric: str,
    factory: str | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    target_recall: float = DEFAULT_TARGET_RECALL,
    seed: int = 0,
    queries: np.ndarray | None = None,
    query_kind: str = STORED_QUERIES,
) -> BuiltIndex:
    """Choose (unless forced), train, fill and tune an index over ``vectors`` labelled ``ids``.

    ``queries`` are held-out vectors of the kind users will send (text embeddings against an
    image base, say), labelled ``query_kind``: recall is tuned on half of them (at most
    ``TUNING_QUERIES``) and measured on the other half. Stored vectors flatter cross-modal
    search, where queries lie further from the data than any stored vector does. Without
    ``queries``, a random sample of the vectors is held out of the index while it is tuned and
    measured, so they act as unseen queries of the stored kind (a stored vector finds itself
    and its graph neighbours too easily to stand in for a real query); they are added after.
    """
    n, dim = vectors.shape
    if np.any(np.diff(ids) <= 0):
        raise ValueError("ids must be strictly increasing (ids are assigned in order)")
    if queries is not None and (queries.ndim != 2 or queries.shape[1] != dim or len(queries) < 2):
        raise ValueError(
            f"recall queries must be an array [n >= 2, {dim}], got shape {queries.shape}"
        )
    if not query_kind:
        raise ValueError("query_kind must name the kind of the recall queries")
    factory = factory or choose_factory(n, dim, memory_budget_bytes)
    index = make_index(factory, dim, metric)
    kind = index_kind(index)
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    rng = np.random.default_rng(seed)
    if queries is None:
        held_out = np.sort(rng.choice(n, size=min(2 * TUNING_QUERIES, n // 10), replace=False))
        query_vectors = np.ascontiguousarray(vectors[held_out])
    else:
        held_out = np.empty(0, dtype=np.int64)
        picked = rng.choice(len(queries), size=min(2 * TUNING_QUERIES, len(queries)), replace=False)
        query_vectors = np.ascontiguousarray(queries[np.sort(picked)], dtype=np.float32)
    indexed = np.setdiff1d(np.arange(n), held_out)
    if not index.is_trained:
        size = min(len(indexed), _training_size(index))
        training = np.sort(rng.choice(indexed, size=size, replace=False))
        try:
            index.train(np.ascontiguousarray(vectors[training]))
        except RuntimeError as error:
            raise ValueError(
                f"cannot train index {factory!r} on {len(training)} vectors: {error}"
            ) from None
    _add_rows(index, vectors, ids, indexed)
    params, recall = tune(index, kind, vectors, ids, indexed, query_vectors, metric, target_recall)
    _add_rows(index, vectors, ids, held_out)
    measured = len(query_vectors) - len(query_vectors) // 2 if len(query_vectors) >= 2 else 0
    return BuiltIndex(index, kind, factory, params, recall, measured, query_kind)


def tune(
    index: faiss.Index,
    kind: str,
    vectors: np.ndarray,
    ids: np.ndarray,
    indexed: np.ndarray,
    queries: np.ndarray,
    metric: str,
    target_recall: float,
) -> tuple[dict[str, int], float]:
    """Smallest ``nprobe``/``efSearch`` on a ~1.4x ladder reaching the target on half the
    ``queries``, and the recall then measured on the other half (so the choice does not flatter
    it); exact search over the ``indexed`` rows is the truth.

    The result is also set on the index itself (and so saved with it), which is how composite
    indexes of the ``other`` family, searched without per-call parameters, get it.
    """
    name, candidates = _parameter_candidates(index, kind)
    if len(queries) < 2:
        params = {name: candidates[-1]} if name else {}
        set_index_parameters(index, params)
        return params, 1.0
    middle = len(queries) // 2
    halves = [queries[:middle], queries[middle:]]
    truths = [exact_search(vectors, q, RECALL_K, metric, indexed) for q in halves]

    def recall_for(half: int, params: dict[str, int]) -> float:
        set_index_parameters(index, params)
        search = search_parameters(kind, params)
        found = index.search(halves[half], RECALL_K, params=search)[1]
        return _recall_with_ties(halves[half], found, truths[half], vectors, ids, metric)

    params: dict[str, int] = {}
    if name:
        params = {name: _smallest_sufficient(name, candidates, target_recall, recall_for)}
    recall = recall_for(1, params)  # also leaves ``params`` set on the index
    if recall < target_recall:
        warnings.warn(
            f"index {kind} ({params or 'no search parameters'}) reaches recall@{RECALL_K} "
            f"{recall:.3f} < target {target_recall}; force a more exact index_factory to do better",
            stacklevel=4,
        )
    return params, recall


def exact_search(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top ``k`` over ``vectors`` (or only ``rows`` of it), in blocks to bound memory.

    Returns scores as FAISS does (inner product, or squared L2 distance) and row positions,
    padded with -1 where fewer than ``k`` rows exist.
    """
    rows = np.arange(len(vectors)) if rows is None else rows
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for q_start in range(0, len(queries), _QUERY_BLOCK):
        block = queries[q_start : q_start + _QUERY_BLOCK]
        scores_block = best_scores[q_start : q_start + _QUERY_BLOCK]
        rows_block = best_rows[q_start : q_start + _QUERY_BLOCK]
        for start in range(0, len(rows), _EXACT_CHUNK_ROWS):
            chunk_rows = rows[start : start + _EXACT_CHUNK_ROWS]
            chunk = np.asarray(vectors[chunk_rows], dtype=np.float32)
            goodness = block @ chunk.T
            if metric == "l2":
                goodness = 2 * goodness - (chunk * chunk).sum(axis=1)
            merged = np.concatenate([scores_block, goodness], axis=1)
            merged_rows = np.concatenate(
                [rows_block, np.broadcast_to(chunk_rows, goodness.shape)], axis=1
            )
            keep = np.argpartition(-merged, k - 1, axis=1)[:, :k] if merged.shape[1] > k else None
            if keep is not None:
                merged = np.take_along_axis(merged, keep, axis=1)
                merged_rows = np.take_along_axis(merged_rows, keep, axis=1)
            scores_block[:] = merged
            rows_block[:] = merged_rows
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    best_rows = np.take_along_axis(best_rows, order, axis=1)
    if metric == "l2":
        found = best_rows >= 0
        best_scores = np.where(
            found, (queries * queries).sum(axis=1)[:, None] - best_scores, np.inf
        )
    return best_scores.astype(np.float32), best_rows


def recall_at_k(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Mean over queries of |found ∩ truth| / |truth|, ignoring -1 padding (queries with an empty
    truth are skipped)."""
    fractions = []
    for found_ids, true_ids in zip(found, truth, strict=True):
        true_ids = np.asarray(true_ids)[np.asarray(true_ids) >= 0]
        if len(true_ids):
            fractions.append(len(np.intersect1d(found_ids, true_ids)) / len(true_ids))
    return float(np.mean(fractions)) if fractions else 1.0


def _recall_with_ties(
    queries: np.ndarray,
    found: np.ndarray,
    truth: tuple[np.ndarray, np.ndarray],
    vectors: np.ndarray,
    ids: np.ndarray,
    metric: str,
) -> float:
    """Recall@k counting a returned neighbour as correct when it is at least as close as the true
    k-th one, so that among duplicates (common: repeated captions) any copy counts."""
    truth_scores, truth_rows = truth
    expected = (truth_rows >= 0).sum(axis=1)
    kth = truth_scores[np.arange(len(queries)), np.maximum(expected - 1, 0)]
    valid = found >= 0
    rows = np.searchsorted(ids, np.where(valid, found, ids[0]))
    neighbours = np.asarray(vectors[rows.ravel()]).reshape(*rows.shape, -1)
    if metric == "l2":
        closeness, kth = -((neighbours - queries[:, None]) ** 2).sum(axis=2), -kth
    else:
        closeness = np.einsum("qkd,qd->qk", neighbours, queries)
    tolerance = 1e-5 * np.maximum(1.0, np.abs(kth))
    correct = (valid & (closeness >= (kth - tolerance)[:, None])).sum(axis=1)
    measured = expected > 0
    if not measured.any():
        return 1.0
    return float(np.mean(np.minimum(correct, expected)[measured] / expected[measured]))


def _training_size(index: faiss.Index) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    wanted = 64 * ivf.nlist if ivf is not None else 50_000
    return max(wanted, 256 * 39)


def _add_rows(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
    for start in range(0, len(rows), 65_536):
        chunk = rows[start : start + 65_536]
        index.add_with_ids(np.ascontiguousarray(vectors[chunk]), ids[chunk])


def set_index_parameters(index: faiss.Index, params: dict[str, int]) -> None:
    for name, value in params.items():
        faiss.ParameterSpace().set_index_parameter(index, name, value)


def _parameter_candidates(index: faiss.Index, kind: str) -> tuple[str, list[int]]:
    ivf = faiss.try_extract_index_ivf(index)  # also inside pre-transforms (kind "other")
    if ivf is not None:
        return "nprobe", _ladder(1, ivf.nlist)
    if kind == "hnsw":
        return "efSearch", _ladder(16, 4096)
    return "", []


def _ladder(low: int, high: int) -> list[int]:
    """Powers of two and the midpoints between them (ratio ~1.4) from ``low`` up to ``high``."""
    values = {high}
    value = low
    while value < high:
        values.update({value, value + value // 2})
        value *= 2
    return sorted(v for v in values if v <= high)


def _smallest_sufficient(
    name: str,
    candidates: list[int],
    target: float,
    recall_for: Callable[[int, dict[str, int]], float],
) -> int:
    """First candidate reaching the target; if none does, the smallest one achieving the best
    recall seen (recall has plateaued, as product quantisation makes it)."""
    recalls: dict[int, float] = {}
    for value in candidates:
        recalls[value] = recall_for(0, {name: value})
        if recalls[value] >= target:
            return value
    best = max(recalls.values())
    return min(value for value, recall in recalls.items() if recall >= best - 1e-9)
