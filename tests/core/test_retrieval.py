from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.retrieval import (
    FilterError,
    KnowledgeBaseSearch,
    embed_images,
    embed_texts,
    hit_to_dict,
    images_for_texts,
    parse_filters,
    rank,
    texts_for_images,
)
from retrieval_db import EncoderMismatchError, KnowledgeBase
from tests.core.test_zeroshot import ColourSystem, colour_png


@pytest.fixture
def pngs(tmp_path: Path) -> list[Path]:
    return [
        colour_png(tmp_path / "red.png", (230, 20, 10)),
        colour_png(tmp_path / "green.png", (20, 210, 40), seed=1),
        colour_png(tmp_path / "blue.png", (15, 30, 220), seed=2),
    ]


def test_embeddings_are_unit_rows_and_paths_match_tensors(pngs: list[Path]):
    encoder = ColourSystem().encoder()
    from_paths = embed_images(encoder, pngs, batch_size=2)
    tensors = torch.stack([encoder.load_image(path) for path in pngs])
    torch.testing.assert_close(from_paths, embed_images(encoder, tensors))
    torch.testing.assert_close(from_paths.norm(dim=1), torch.ones(3))
    texts = embed_texts(encoder, ["a red square", "blue", "green thing"], batch_size=2)
    assert texts.shape == (3, 3)
    with pytest.raises(ValueError, match="no texts"):
        embed_texts(encoder, [])


def test_rank_equals_exact_sorting():
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(4, 6, generator=generator), dim=1)
    gallery = torch.nn.functional.normalize(torch.randn(9, 6, generator=generator), dim=1)
    for query, matches in zip(queries, rank(queries, gallery, k=4)):
        exact = sorted(range(9), key=lambda i: -float(query @ gallery[i]))[:4]
        assert [m.index for m in matches] == exact
        assert matches[0].score == pytest.approx(float(query @ gallery[exact[0]]))
    assert len(rank(queries, gallery, k=50)[0]) == 9


def test_image_text_retrieval_both_ways(pngs: list[Path]):
    encoder = ColourSystem().encoder()
    captions = ["a blue square", "a red square", "a green square"]
    best_texts = texts_for_images(encoder, pngs, captions, k=2)
    assert [matches[0].index for matches in best_texts] == [1, 2, 0]
    best_images = images_for_texts(encoder, captions, pngs, k=1)
    assert [matches[0].index for matches in best_images] == [2, 0, 1]


def test_parse_filters_types_and_repeats():
    assert parse_filters(["level=scene", "lang=de", "lang=en", "year=2020", "ok=true"]) == {
        "level": "scene",
        "lang": ["de", "en"],
        "year": 2020,
        "ok": True,
    }
    assert parse_filters(["name=a=b"]) == {"name": "a=b"}
    with pytest.raises(FilterError, match="key=value"):
        parse_filters(["oops"])


def colour_kb(encoder) -> KnowledgeBase:
    texts = ["red roof", "green forest", "blue lake", "red car", "blue sky"]
    levels = ["object", "scene", "scene", "object", "scene"]
    vectors = embed_texts(encoder, texts).numpy()
    records = [{"text": t, "level": level} for t, level in zip(texts, levels)]
    return KnowledgeBase.from_vectors(vectors, records, encoder=encoder.identity())


def test_knowledge_base_search_by_text_image_and_filter(pngs: list[Path]):
    encoder = ColourSystem().encoder()
    searcher = KnowledgeBaseSearch(encoder, colour_kb(encoder))
    hits = searcher.search_text("something blue", k=2)
    assert {hit.record["text"] for hit in hits} == {"blue lake", "blue sky"}
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    hits = searcher.search_image(pngs[0], k=2)
    assert {hit.record["text"] for hit in hits} == {"red roof", "red car"}
    hits = searcher.search_text("red", k=3, where={"level": "scene"})
    assert all(hit.record["level"] == "scene" for hit in hits) and len(hits) == 3
    assert hit_to_dict(hits[0], 1) == {
        "rank": 1,
        "id": hits[0].id,
        "score": hits[0].score,
        "record": hits[0].record,
    }


def test_knowledge_base_refuses_another_encoder_unless_allowed():
    built_with = ColourSystem().encoder()
    knowledge_base = colour_kb(built_with)
    other = ColourSystem()
    with torch.no_grad():
        other.mix.weight.mul_(2.0)
    with pytest.raises(EncoderMismatchError, match="built with encoder"):
        KnowledgeBaseSearch(other.encoder(), knowledge_base)
    searcher = KnowledgeBaseSearch(other.encoder(), knowledge_base, allow_encoder_mismatch=True)
    assert searcher.search_text("green", k=1)[0].record["text"] == "green forest"
