from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from domainvlm.core.cli import main
from domainvlm.core.encoder import Encoder
from domainvlm.core.metrics import ranking_metrics
from domainvlm.core.retrieval import (
    FilterError,
    KnowledgeBaseSearch,
    embed_images,
    embed_texts,
    hit_to_dict,
    images_for_texts,
    parse_filters,
    rank,
    recall_queries,
    rerank,
    texts_for_images,
)
from domainvlm.retrieval_db import EncoderMismatchError, KnowledgeBase

from tests.helpers import colour_png, save_checkpoint
from tests.plugins.colours import ColourSystem


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


def test_a_long_any_of_filter_from_the_command_line_still_searches():
    """``kb search --filter`` repeated thousands of times once hit SQLite's expression limit."""
    encoder = ColourSystem().encoder()
    searcher = KnowledgeBaseSearch(encoder, colour_kb(encoder))
    where = parse_filters([f"text=nothing {i}" for i in range(3000)] + ["text=blue sky"])
    assert [hit.record["text"] for hit in searcher.search_text("red", k=3, where=where)] == [
        "blue sky"
    ]
    with pytest.raises(FilterError, match="at most 64 fields, got 100"):
        searcher.search_text("red", where=parse_filters([f"f{i}=1" for i in range(100)]))


def test_recall_queries_of_the_users_kind_go_into_the_manifest(pngs: list[Path]):
    encoder = ColourSystem().encoder()
    texts = ["red roof", "green forest", "blue lake", "red car", "blue sky"]
    vectors = embed_texts(encoder, texts).numpy()
    records = [{"text": text} for text in texts]
    by_image = KnowledgeBase.from_vectors(
        vectors, records, encoder=encoder.identity(), **recall_queries(encoder, images=pngs)
    )
    assert (by_image.recall.query_kind, by_image.recall.queries) == ("image", 2)
    by_text = recall_queries(encoder, texts=["a red thing", "something blue"])
    assert by_text["recall_query_kind"] == "text"
    np.testing.assert_allclose(
        by_text["recall_queries"], embed_texts(encoder, ["a red thing", "something blue"])
    )
    with pytest.raises(ValueError, match="either texts or images"):
        recall_queries(encoder)


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


class TableEncoder:
    """Images are the strings "0".."2" (looked up in a table); ``score_fn`` reads a fixed matrix."""

    IMAGES = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    TEXTS = {"t0": [0.6, 0.8], "t1": [1.0, 0.0], "t2": [0.0, 1.0]}
    ITM = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [1.0, 0.0, 5.0]])  # [image, text]

    def __init__(self) -> None:
        self.scored: list[tuple[int, str]] = []

    def score(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        image = int(images[0, 0])
        self.scored += [(image, text) for text in texts]
        return self.ITM[image, [int(text[1]) for text in texts]][None]

    def encoder(self) -> Encoder:
        return Encoder(
            name="table",
            image_fn=lambda batch: self.IMAGES[batch[:, 0].long()],
            text_fn=lambda texts: torch.tensor([self.TEXTS[text] for text in texts]),
            load_image=lambda path: torch.tensor([float(path)]),
            modules=[],
            score_fn=self.score,
        )


def test_rerank_by_hand():
    """Embeddings rank the positive of t0 3rd, t1 2nd, t2 1st (images: i0 2nd, i1 2nd, i2 1st);
    the ITM matrix puts every positive first within a shortlist of 2."""
    table = TableEncoder()
    encoder = table.encoder()
    image_emb = encoder.encode_images(torch.tensor([[0.0], [1.0], [2.0]]))
    text_emb = encoder.encode_texts(["t0", "t1", "t2"])
    images_per_text, texts_per_image = rerank(
        encoder, ["0", "1", "2"], ["t0", "t1", "t2"], image_emb, text_emb, shortlist=2, depth=3
    )
    # t0's shortlist {i1, i2} misses i0 and is re-ordered by ITM (i2: 1.0 > i1: 0.0).
    assert images_per_text.tolist() == [[2, 1, 0], [1, 0, 2], [2, 1, 0]]
    assert texts_per_image.tolist() == [[0, 1, 2], [1, 0, 2], [2, 0, 1]]
    # 7 of the 9 pairs are in some shortlist, each scored once.
    assert sorted(table.scored) == sorted(
        [(0, "t0"), (0, "t1"), (1, "t0"), (1, "t1"), (1, "t2"), (2, "t0"), (2, "t2")]
    )
    metrics = ranking_metrics(images_per_text, texts_per_image, [0, 1, 2], recall_at=(1, 2, 3))
    assert metrics["image_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert metrics["image_retrieval_recall@2"] == pytest.approx(2 / 3)
    assert metrics["image_retrieval_recall@3"] == 1.0
    assert metrics["text_retrieval_recall@1"] == 1.0
    assert metrics["mean_recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 3) / 6)


def test_eval_retrieval_rerank_needs_a_pair_scorer(tmp_path: Path, capsys):
    checkpoint = save_checkpoint(ColourSystem(), tmp_path / "colour.ckpt")
    colour_png(tmp_path / "red.png", (230, 20, 10))
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"image": "red.png", "caption": "red"}))
    code = main([
        "eval", "retrieval", "--checkpoint", str(checkpoint), "--data",
        str(tmp_path / "pairs.jsonl"), "--rerank", "5",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "--rerank needs an encoder that scores image-text pairs" in err
