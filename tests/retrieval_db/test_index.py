from __future__ import annotations

import faiss
import numpy as np
import pytest
from domainvlm.retrieval_db.index import (
    build_index,
    choose_factory,
    estimate_index_bytes,
    exact_search,
    ivf_list_count,
    make_index,
    recall_at_k,
    search_parameters,
)

from tests.helpers import clustered

GIB = 2**30


def test_choice_follows_size_and_memory_budget() -> None:
    assert choose_factory(999, 512) == "Flat"
    assert choose_factory(50_000, 512) == "HNSW32"
    assert choose_factory(1_000_000, 512) == "IVF4096,Flat"
    # HNSW's graph does not fit 100 MB for 50k x 512 floats (~110 MB): IVF-Flat instead.
    assert choose_factory(50_000, 512, memory_budget_bytes=105 * 2**20) == "IVF1024,Flat"
    # 1M x 512 floats need 2 GB; in 300 MB only product-quantised codes fit (64 B + 8 B id).
    factory = choose_factory(1_000_000, 512, memory_budget_bytes=300 * 2**20)
    assert factory == "IVF4096,PQ64x8"
    assert estimate_index_bytes(factory, 1_000_000, 512) <= 300 * 2**20
    assert choose_factory(1_000_000, 512, memory_budget_bytes=30 * 2**20) == "IVF4096,PQ8x8"
    with pytest.raises(ValueError, match="raise the budget"):
        choose_factory(1_000_000, 512, memory_budget_bytes=2**20)


def test_ivf_list_count_is_about_four_root_n_with_enough_training_points() -> None:
    assert ivf_list_count(1_000_000) == 4096
    assert ivf_list_count(100_000) == 1024
    assert ivf_list_count(2_000) == 51  # 4·√2000 ≈ 179 → 128, capped at 2000 // 39


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF32,Flat", "IVF32,PQ8x8"])
def test_memory_estimate_matches_the_serialised_index(factory: str) -> None:
    n, dim = 4_000, 64
    data = clustered(n, dim)
    index = make_index(factory, dim, "cosine")
    if not index.is_trained:
        index.train(data)
    index.add_with_ids(data, np.arange(n))
    actual = len(faiss.serialize_index(index))
    assert abs(estimate_index_bytes(factory, n, dim) - actual) / actual < 0.1


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_search_matches_a_full_sort(metric: str) -> None:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((50_000, 8)).astype(np.float32)
    queries = rng.standard_normal((7, 8)).astype(np.float32)
    rows = np.sort(rng.choice(len(data), 20_000, replace=False))  # spans two chunks
    scores, found = exact_search(data, queries, 5, metric, rows)
    for query, query_scores, query_rows in zip(queries, scores, found, strict=True):
        if metric == "ip":
            full = data[rows] @ query
            order = np.argsort(-full)[:5]
        else:
            full = ((data[rows] - query) ** 2).sum(axis=1)
            order = np.argsort(full)[:5]
        np.testing.assert_array_equal(query_rows, rows[order])
        np.testing.assert_allclose(query_scores, full[order], rtol=1e-4, atol=1e-4)


def test_exact_search_pads_when_fewer_rows_than_k() -> None:
    data = np.eye(3, dtype=np.float32)
    scores, rows = exact_search(data, data[:1], 5, "ip", np.array([0, 2]))
    np.testing.assert_array_equal(rows, [[0, 2, -1, -1, -1]])
    np.testing.assert_allclose(scores[0, :2], [1.0, 0.0])


def test_recall_at_k_by_hand() -> None:
    found = [np.array([1, 2, 3]), np.array([4, 5, -1]), np.array([7])]
    truth = [np.array([1, 2, 9]), np.array([4, 6]), np.array([-1])]
    assert recall_at_k(found, truth) == pytest.approx((2 / 3 + 1 / 2) / 2)


def _independent_recall(built, data: np.ndarray, queries: np.ndarray) -> float:
    params = search_parameters(built.kind, built.search_params)
    found = built.index.search(queries, 10, params=params)[1]
    truth = exact_search(data, queries, 10, "cosine")[1]
    return recall_at_k(list(found), list(truth))


@pytest.mark.parametrize("factory", [None, "IVF64,Flat"])
def test_tuned_index_reaches_target_recall_on_unseen_queries(factory: str | None) -> None:
    data = clustered(4_000, 32, clusters=40)
    built = build_index(data, np.arange(len(data)), metric="cosine", factory=factory)
    assert built.kind == ("hnsw" if factory is None else "ivf")
    assert built.index.ntotal == len(data)
    assert built.recall >= 0.95
    assert built.recall_queries == 200
    name = "efSearch" if factory is None else "nprobe"
    # The smallest sufficient setting, not the exhaustive one.
    assert built.search_params[name] < (4096 if factory is None else 64)
    fresh = clustered(300, 32, seed=99, clusters=40)
    assert _independent_recall(built, data, fresh) >= 0.9


def test_tuning_picks_the_cheapest_nprobe_that_reaches_the_target() -> None:
    data = clustered(4_000, 32, clusters=40)
    ids = np.arange(len(data))
    strict = build_index(data, ids, metric="cosine", factory="IVF64,Flat", target_recall=0.99)
    loose = build_index(data, ids, metric="cosine", factory="IVF64,Flat", target_recall=0.5)
    assert loose.search_params["nprobe"] < strict.search_params["nprobe"]
    assert loose.recall >= 0.5
    assert strict.recall >= 0.97


def test_flat_index_is_exact() -> None:
    data = clustered(500, 16)
    built = build_index(data, np.arange(500) * 10, metric="cosine")
    assert (built.kind, built.factory, built.search_params, built.recall) == ("flat", "Flat", {}, 1)
    _, labels = built.index.search(data[:3], 1)
    np.testing.assert_array_equal(labels[:, 0], [0, 10, 20])


def test_unreachable_target_warns_and_keeps_the_plateau() -> None:
    data = clustered(3_000, 32)
    with pytest.warns(UserWarning, match="< target 0.999"):
        built = build_index(
            data, np.arange(3_000), metric="cosine", factory="IVF4,PQ4x4", target_recall=0.999
        )
    assert built.recall < 0.999
    assert 1 <= built.search_params["nprobe"] <= 4


def test_bad_forced_factory_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot build index factory 'NoSuchIndex'"):
        build_index(clustered(50, 8), np.arange(50), metric="cosine", factory="NoSuchIndex")
    with pytest.raises(ValueError, match="cannot train index 'IVF256,Flat' on 45 vectors"):
        build_index(clustered(50, 8), np.arange(50), metric="cosine", factory="IVF256,Flat")
