from __future__ import annotations

import numpy as np
import pytest
from domainvlm.retrieval_db import (
    EncoderMismatchError,
    KnowledgeBase,
    exact_search,
    recall_at_k,
    searching,
)

from tests.helpers import ENCODER, OTHER_ENCODER, clustered, records_for

# Index families: exact, graph (tombstones only), inverted lists (forced, since auto picks by size).
FACTORIES = [None, "HNSW16", "IVF8,Flat"]
# Tiny sets measure recall on a few dozen held-out queries: the below-target warning is noise.
noisy_recall = pytest.mark.filterwarnings("ignore:index .* reaches recall")


def build(vectors: np.ndarray, factory: str | None = None, **options) -> KnowledgeBase:
    return KnowledgeBase.from_vectors(
        vectors, records_for(len(vectors)), encoder=ENCODER, index_factory=factory, **options
    )


def ids_of(hits: list) -> list[int]:
    return [hit.id for hit in hits]


def exact_ids(vectors: np.ndarray, queries: np.ndarray, k: int, rows=None) -> list[list[int]]:
    return exact_search(vectors, queries, k, "cosine", rows)[1].tolist()


def test_search_returns_scores_and_records_best_first(vectors: np.ndarray) -> None:
    kb = build(vectors)
    raw = vectors[:2] * 3.0  # cosine ignores scale
    results = kb.search(raw, k=4, encoder=ENCODER)
    assert len(results) == 2
    for query, hits in zip(vectors[:2], results, strict=True):
        expected = exact_ids(vectors, query[None], 4)[0]
        assert ids_of(hits) == expected
        np.testing.assert_allclose([h.score for h in hits], vectors[expected] @ query, atol=1e-5)
        assert [h.record for h in hits] == [records_for(600)[i] for i in expected]
    assert results[0][0].id == 0 and results[0][0].score == pytest.approx(1.0, abs=1e-5)
    assert kb.index_info.kind == "flat" and kb.recall.value == 1.0
    assert len(kb) == 600 and kb.dimension == 16 and kb.metric == "cosine"


def test_l2_metric_scores_are_squared_distances() -> None:
    data = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    kb = KnowledgeBase.from_vectors(data, [{}, {}, {}], encoder=ENCODER, metric="l2")
    hits = kb.search([[0.0, 0.0]], k=3, encoder=ENCODER)[0]
    assert ids_of(hits) == [0, 2, 1]
    np.testing.assert_allclose([h.score for h in hits], [0.0, 1.0, 25.0])


def test_recall_against_exact_search_on_unseen_queries() -> None:
    data = clustered(3_000, 24, clusters=30)
    kb = build(data)
    assert kb.index_info.factory == "HNSW32"
    assert kb.recall.value >= 0.95 and kb.recall.measured_at_count == 3_000
    queries = clustered(200, 24, seed=7, clusters=30)
    found = [np.array(ids_of(hits)) for hits in kb.search(queries, 10, encoder=ENCODER)]
    assert recall_at_k(found, exact_search(data, queries, 10, "cosine")[1]) >= 0.9


@pytest.mark.parametrize("factory", FACTORIES)
def test_filters_keep_k_results(vectors: np.ndarray, factory: str | None) -> None:
    kb = build(vectors, factory)
    where = {"level": "object", "lang": "de"}  # rows ≡ 3 (mod 6): one record in six
    allowed = np.array([i for i in range(600) if i % 6 == 3])
    results = kb.search(vectors[:5], 10, encoder=ENCODER, where=where)
    for query, hits in zip(vectors[:5], results, strict=True):
        assert len(hits) == 10
        assert all(h.record["level"] == "object" and h.record["lang"] == "de" for h in hits)
        assert ids_of(hits) == exact_ids(vectors, query[None], 10, allowed)[0]


def test_filter_with_fewer_matches_than_k_returns_them_all(vectors: np.ndarray) -> None:
    kb = build(vectors)
    hits = kb.search(vectors[:1], 10, encoder=ENCODER, where={"row": [5, 17, 400]})[0]
    assert sorted(ids_of(hits)) == [5, 17, 400]
    assert kb.search(vectors[:1], 10, encoder=ENCODER, where={"row": -1}) == [[]]


def test_approximate_filtered_search_falls_back_to_exact_when_the_index_comes_up_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 40 lists probed one at a time: the records matching the filter are those farthest from the
    # query, in other lists, so the index alone finds none of them.
    data = clustered(4_000, 32, clusters=40)
    far = np.argsort(data @ data[1])[:30]
    records = [{"far": bool(i in set(far.tolist()))} for i in range(4_000)]
    kb = KnowledgeBase.from_vectors(
        data, records, encoder=ENCODER, index_factory="IVF40,Flat", target_recall=0.3
    )
    assert kb.index_info.search_params == {"nprobe": 1}
    monkeypatch.setattr(searching, "EXACT_FILTER_MAX_ROWS", 0)  # force the IDSelector path
    exact_calls = []
    real_exact_search = searching.exact_search

    def spy(*args, **kwargs):
        exact_calls.append(len(args[1]))
        return real_exact_search(*args, **kwargs)

    monkeypatch.setattr(searching, "exact_search", spy)
    hits = kb.search(data[1:2], 10, encoder=ENCODER, where={"far": True})[0]
    assert exact_calls == [1]  # the index came up short and exact search filled in
    assert len(hits) == 10
    assert ids_of(hits) == exact_ids(data, data[1:2], 10, np.sort(far))[0]


@noisy_recall
@pytest.mark.parametrize("factory", FACTORIES)
def test_add_delete_compact(vectors: np.ndarray, factory: str | None) -> None:
    kb = build(vectors[:500], factory)
    new_ids = kb.add(vectors[500:], records_for(600)[500:], encoder=ENCODER)
    np.testing.assert_array_equal(new_ids, np.arange(500, 600))
    assert len(kb) == 600
    assert kb.search(vectors[550], 1, encoder=ENCODER)[0][0].id == 550

    doomed = list(range(0, 600, 2))
    assert kb.delete(doomed + [10_000]) == 300  # unknown ids are ignored
    assert kb.delete([0]) == 0
    assert len(kb) == 300 and kb.get([0, 1]) == [None, records_for(600)[1]]
    live = np.arange(1, 600, 2)

    def check_against_exact() -> list:
        results = kb.search(vectors[:20], 10, encoder=ENCODER)
        assert all(len(hits) == 10 and all(h.id % 2 == 1 for h in hits) for hits in results)
        found = [np.array(ids_of(hits)) for hits in results]
        truth = exact_search(vectors, vectors[:20], 10, "cosine", live)[1]
        assert recall_at_k(found, truth) >= (1.0 if factory is None else 0.8)
        return results

    check_against_exact()
    kb.compact()
    assert kb.recall.measured_at_count == 300
    assert kb.index_info.factory == (factory or "Flat")
    check_against_exact()
    ids = kb.add(vectors[:1], [{"again": True}], encoder=ENCODER)
    np.testing.assert_array_equal(ids, [600])  # ids are never reused


def test_compact_rechooses_the_index_for_the_new_size() -> None:
    data = clustered(1_200, 16)
    kb = build(data)
    assert kb.index_info.factory == "HNSW32"
    kb.delete(range(400))
    kb.compact()
    assert kb.index_info.factory == "Flat" and len(kb) == 800


def test_everything_deleted_leaves_an_empty_searchable_base(vectors: np.ndarray) -> None:
    kb = build(vectors[:50])
    kb.delete(range(50))
    assert kb.search(vectors[:2], 5, encoder=ENCODER) == [[], []]
    kb.compact()
    assert len(kb) == 0 and kb.search(vectors[:1], 5, encoder=ENCODER) == [[]]


def test_encoder_mismatch_is_refused_unless_overridden(vectors: np.ndarray) -> None:
    kb = build(vectors[:50])
    with pytest.raises(EncoderMismatchError, match="allow_encoder_mismatch=True") as caught:
        kb.search(vectors[:1], 3, encoder=OTHER_ENCODER)
    assert "aaaaaaaaaaaa" in str(caught.value) and "bbbbbbbbbbbb" in str(caught.value)
    with pytest.raises(EncoderMismatchError):
        kb.add(vectors[:1], [{}], encoder=OTHER_ENCODER)
    hits = kb.search(vectors[:1], 3, encoder=OTHER_ENCODER, allow_encoder_mismatch=True)
    assert hits[0][0].id == 0
    with pytest.raises(ValueError, match="'name' and 'sha256'"):
        kb.search(vectors[:1], 3, encoder={"name": "x"})


def modality_gap_queries(n: int, dim: int, seed: int) -> np.ndarray:
    """Queries near the data's clusters but shifted off them, as text embeddings sit beside the
    image embeddings of a CLIP space (the modality gap)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((20, dim))  # ``clustered``'s centres
    shift = 3 * np.random.default_rng(99).standard_normal(dim)
    points = centres[rng.integers(0, 20, n)] + shift + 2 * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def recall_for(kb: KnowledgeBase, vectors: np.ndarray, queries: np.ndarray) -> float:
    found = [np.array(ids_of(hits)) for hits in kb.search(queries, 10, encoder=ENCODER)]
    return recall_at_k(found, exact_search(vectors, queries, 10, "cosine")[1])


def test_recall_recorded_with_queries_of_the_users_kind_is_the_recall_they_get(tmp_path) -> None:
    """Stored vectors as queries flatter cross-modal search: recorded 0.94, got 0.70 here."""
    data = clustered(4_000, 32)
    options = {"index_factory": "IVF64,Flat", "target_recall": 0.9}
    unseen = modality_gap_queries(300, 32, seed=6)  # neither tunes nor measures any build

    stored = KnowledgeBase.from_vectors(data, records_for(4_000), encoder=ENCODER, **options)
    assert (stored.recall.query_kind, stored.recall.queries) == ("stored", 200)
    assert recall_for(stored, data, unseen) < stored.recall.value - 0.15

    held_out = modality_gap_queries(400, 32, seed=5)
    kb = KnowledgeBase.from_vectors(
        data, records_for(4_000), encoder=ENCODER, recall_queries=held_out,
        recall_query_kind="text", **options,
    )  # fmt: skip
    assert (kb.recall.query_kind, kb.recall.queries) == ("text", 200)
    assert kb.index_info.search_params["nprobe"] > stored.index_info.search_params["nprobe"]
    assert kb.recall.value >= 0.9
    assert recall_for(kb, data, unseen) == pytest.approx(kb.recall.value, abs=0.05)
    kb.save(tmp_path / "kb")
    assert KnowledgeBase.load(tmp_path / "kb").recall == kb.recall

    kb.delete(range(100))
    kb.compact()  # no queries given: measured, and recorded, with stored vectors again
    assert kb.recall.query_kind == "stored"
    kb.compact(recall_queries=held_out, recall_query_kind="text")
    assert (kb.recall.query_kind, kb.recall.measured_at_count) == ("text", 3_900)


@pytest.mark.parametrize(
    ("queries", "kind", "message"),
    [
        (np.ones((4, 16)), None, "need recall_query_kind"),
        (np.ones((4, 16)), "stored", "need recall_query_kind"),
        (None, "text", "none were given"),
        (np.ones((4, 8)), "text", "dimension 8, the knowledge base has 16"),
        (np.ones((1, 16)), "text", "at least 2"),
    ],
)
def test_bad_recall_queries_are_explained(vectors: np.ndarray, queries, kind, message) -> None:
    with pytest.raises(ValueError, match=message):
        build(vectors[:50], recall_queries=queries, recall_query_kind=kind)


def test_the_same_weights_under_another_name_are_the_same_encoder(
    vectors: np.ndarray, tmp_path
) -> None:
    """The hash identifies; the name (a checkpoint's path) is provenance and stays recorded."""
    kb = build(vectors[:50])
    moved = {"name": "/elsewhere/copy.ckpt", "sha256": ENCODER["sha256"]}
    assert kb.search(vectors[:1], 3, encoder=moved)[0][0].id == 0
    kb.add(vectors[50:52], [{}, {}], encoder=moved)
    kb.save(tmp_path / "kb")
    assert KnowledgeBase.load(tmp_path / "kb").encoder == ENCODER


def test_bad_inputs_are_explained(vectors: np.ndarray) -> None:
    kb = build(vectors[:50])
    with pytest.raises(ValueError, match="dimension 8, the knowledge base has 16"):
        kb.search(np.ones((1, 8)), 3, encoder=ENCODER)
    with pytest.raises(ValueError, match="NaN"):
        kb.search(np.full((1, 16), np.nan), 3, encoder=ENCODER)
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        kb.add(np.stack([vectors[0], np.zeros(16)]), [{}, {}], encoder=ENCODER)
    with pytest.raises(ValueError, match="2 vectors but 1 metadata records"):
        kb.add(vectors[:2], [{}], encoder=ENCODER)
    with pytest.raises(ValueError, match="k must be at least 1"):
        kb.search(vectors[:1], 0, encoder=ENCODER)
    with pytest.raises(ValueError, match="metric must be one of"):
        KnowledgeBase.from_vectors(vectors, records_for(600), encoder=ENCODER, metric="dot")
    assert len(kb) == 50  # refused adds changed nothing


def _letter_encoder(calls: list[int], fail_on_batch: int | None = None):
    """Texts → letter-frequency vectors: similar words land close together."""

    def encode(batch: list[str]) -> np.ndarray:
        calls.append(len(batch))
        if fail_on_batch is not None and len(calls) == fail_on_batch:
            raise RuntimeError("encoder crashed")
        out = np.zeros((len(batch), 26), dtype=np.float32)
        for row, text in enumerate(batch):
            for letter in text.lower():
                if letter.isascii() and letter.isalpha():
                    out[row, ord(letter) - ord("a")] += 1
        return out

    return encode


TEXTS = ["harbour with boats", "dense forest", "airport runway", "river delta", "desert dunes"]


def test_build_and_query_through_an_encoder_callable_in_batches() -> None:
    calls: list[int] = []
    encode = _letter_encoder(calls)
    kb = KnowledgeBase.from_texts(TEXTS, encode, encoder=ENCODER, batch_size=2, progress=True)
    assert calls == [2, 2, 1]
    hits = kb.search_texts(["forest dense"], encode, 2, encoder=ENCODER)[0]
    assert hits[0].record == {"text": "dense forest"} and hits[0].score == pytest.approx(1.0)
    new = kb.add_texts(["runway of an airport"], encode, encoder=ENCODER)
    assert kb.get(new.tolist()) == [{"text": "runway of an airport"}]

    images = KnowledgeBase.from_image_paths(
        ["a/forest.png", "b/harbour.png"], encode, encoder=ENCODER, progress=False
    )
    assert images.get([0, 1]) == [{"path": "a/forest.png"}, {"path": "b/harbour.png"}]


def test_encoder_output_of_the_wrong_shape_names_the_batch() -> None:
    def encode(batch: list[str]) -> np.ndarray:
        return np.ones((len(batch) - 1, 4)) if len(batch) == 1 else np.ones((len(batch), 4))

    with pytest.raises(ValueError, match=r"batch 2 of 1 items; expected \[1, dim\]"):
        KnowledgeBase.from_texts(TEXTS, encode, encoder=ENCODER, batch_size=2, progress=False)


@noisy_recall
def test_forced_composite_factory_is_tuned_and_searched_correctly() -> None:
    data = clustered(2_000, 32, clusters=20)
    kb = build(data, "PCA16,IVF16,Flat")
    assert kb.index_info.kind == "other"  # no per-call parameters: tuned on the index itself
    assert 1 <= kb.index_info.search_params["nprobe"] <= 16
    kb.delete(range(0, 2_000, 2))
    for hits in kb.search(data[:5], 10, encoder=ENCODER):
        assert len(hits) == 10 and all(hit.id % 2 == 1 for hit in hits)
    filtered = kb.search(data[:1], 10, encoder=ENCODER, where={"level": "object"})[0]
    allowed = np.arange(3, 2_000, 6)  # odd (live) rows with row % 3 == 0
    assert ids_of(filtered) == exact_ids(data, data[:1], 10, allowed)[0]
