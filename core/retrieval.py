"""Image↔text retrieval through an ``Encoder``, and knowledge-base search on top of it.

Images may be given as preprocessed tensors or as paths in any format a domain reads; they are
loaded and embedded batch by batch so a long list of files never sits in memory at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from domainvlm.core.encoder import Encoder
from domainvlm.retrieval_db import (
    EncoderMismatchError,
    FilterError,
    Hit,
    KnowledgeBase,
    same_encoder,
)
from torch import Tensor

ImageInput = Tensor | Sequence[str | Path]


@dataclass(frozen=True)
class Match:
    index: int
    score: float


def iter_image_batches(encoder: Encoder, images: ImageInput, batch_size: int) -> Iterator[Tensor]:
    """Preprocessed ``[B, C, H, W]`` batches; a single ``[C, H, W]`` tensor is one image."""
    if isinstance(images, Tensor):
        images = images[None] if images.ndim == 3 else images
        if images.ndim != 4:
            raise ValueError(f"image tensors must be [B, C, H, W], got {tuple(images.shape)}")
        yield from images.split(batch_size)
        return
    if isinstance(images, str | Path):
        images = [images]
    if len(images) == 0:
        raise ValueError("no images given")
    for start in range(0, len(images), batch_size):
        yield torch.stack([encoder.load_image(path) for path in images[start : start + batch_size]])


def embed_images(encoder: Encoder, images: ImageInput, batch_size: int = 32) -> Tensor:
    """``[N, D]`` unit vectors on CPU."""
    rows = [
        encoder.encode_images(batch).cpu()
        for batch in iter_image_batches(encoder, images, batch_size)
    ]
    return torch.cat(rows)


def embed_texts(encoder: Encoder, texts: Sequence[str], batch_size: int = 256) -> Tensor:
    """``[N, D]`` unit vectors on CPU."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise ValueError("no texts to embed")
    rows = [
        encoder.encode_texts(texts[start : start + batch_size]).cpu()
        for start in range(0, len(texts), batch_size)
    ]
    return torch.cat(rows)


def recall_queries(
    encoder: Encoder,
    texts: Sequence[str] | None = None,
    images: ImageInput | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Held-out queries of the kind users will send, as keyword arguments for
    ``KnowledgeBase.from_vectors`` or ``compact``, so the recall it records is the one they get::

        KnowledgeBase.from_vectors(vectors, records, encoder=encoder.identity(),
                                   **recall_queries(encoder, texts=held_out_captions))
    """
    if (texts is None) == (images is None):
        raise ValueError("recall queries: give either texts or images")
    if texts is not None:
        return {
            "recall_queries": embed_texts(encoder, list(texts), batch_size).numpy(),
            "recall_query_kind": "text",
        }
    return {
        "recall_queries": embed_images(encoder, images, batch_size).numpy(),
        "recall_query_kind": "image",
    }


def rank(queries: Tensor, gallery: Tensor, k: int) -> list[list[Match]]:
    """The ``k`` most similar gallery rows (cosine of unit vectors) for every query row."""
    scores = queries.float() @ gallery.float().T
    values, indices = scores.topk(min(k, gallery.shape[0]), dim=1)
    return [
        [Match(int(i), float(v)) for i, v in zip(row_indices, row_values)]
        for row_indices, row_values in zip(indices.tolist(), values.tolist())
    ]


def texts_for_images(
    encoder: Encoder, images: ImageInput, texts: Sequence[str], k: int = 5
) -> list[list[Match]]:
    """For each image, the ``k`` best texts (``Match.index`` indexes ``texts``)."""
    return rank(embed_images(encoder, images), embed_texts(encoder, texts), k)


def images_for_texts(
    encoder: Encoder, texts: Sequence[str], images: ImageInput, k: int = 5
) -> list[list[Match]]:
    """For each text, the ``k`` best images (``Match.index`` indexes ``images``)."""
    return rank(embed_texts(encoder, texts), embed_images(encoder, images), k)


@torch.no_grad()
def rerank(
    encoder: Encoder,
    images: Sequence[str | Path],
    texts: Sequence[str],
    image_emb: Tensor,
    text_emb: Tensor,
    shortlist: int,
    depth: int = 10,
    batch_size: int = 32,
) -> tuple[Tensor, Tensor]:
    """Rankings ``[texts, depth]`` of images per text and ``[images, depth]`` of texts per image.

    Each query's ``shortlist`` best by embedding are re-ordered by ``encoder.score_fn`` (an ITM
    head), the rest keep embedding order: ITM quality at ``shortlist`` pair scores per query
    rather than one per pair of the collection. The pairs both directions need are scored
    together, one image at a time, so each image is loaded once. The whole ``[texts, images]``
    similarity matrix is held: this is for evaluation sets, not for knowledge bases.
    """
    if encoder.score_fn is None:
        raise ValueError(f"encoder {encoder.name!r} has no score_fn to re-rank with")
    if shortlist < 1:
        raise ValueError(f"shortlist must be at least 1, got {shortlist}")
    similarity = text_emb.float() @ image_emb.float().T
    images_per_text = similarity.topk(min(max(shortlist, depth), len(images)), dim=1).indices
    texts_per_image = similarity.T.topk(min(max(shortlist, depth), len(texts)), dim=1).indices
    wanted: list[set[int]] = [set() for _ in images]
    for text, row in enumerate(images_per_text[:, :shortlist].tolist()):
        for image in row:
            wanted[image].add(text)
    for image, row in enumerate(texts_per_image[:, :shortlist].tolist()):
        wanted[image].update(row)
    scores: dict[tuple[int, int], float] = {}
    first = 0
    for batch in iter_image_batches(encoder, images, batch_size):
        for image, tensor in enumerate(batch, start=first):
            pairs = sorted(wanted[image])
            if pairs:
                row = encoder.score(tensor[None], [texts[text] for text in pairs])[0]
                scores |= {(image, text): float(score) for text, score in zip(pairs, row.tolist())}
        first += len(batch)
    images_per_text = _reordered(images_per_text, shortlist, lambda t, i: scores[i, t])
    texts_per_image = _reordered(texts_per_image, shortlist, lambda i, t: scores[i, t])
    return images_per_text[:, :depth], texts_per_image[:, :depth]


def _reordered(ranking: Tensor, head: int, score: Callable[[int, int], float]) -> Tensor:
    """Each row's first ``head`` entries sorted by ``score(row, entry)``, best first (stable)."""
    rows = []
    for query, row in enumerate(ranking.tolist()):
        rows.append(sorted(row[:head], key=lambda entry: -score(query, entry)) + row[head:])
    return torch.tensor(rows, dtype=torch.long).reshape(ranking.shape)


class KnowledgeBaseSearch:
    """Search one ``retrieval_db`` knowledge base with texts or images through ``encoder``.

    The encoder's identity is hashed once here (or passed in as ``identity``, already hashed),
    not per query, and checked against the one the knowledge base was built with: vectors from
    two encoders are not comparable. Only the hash is compared, so the same weights loaded from
    another path are accepted.
    """

    def __init__(
        self,
        encoder: Encoder,
        knowledge_base: KnowledgeBase,
        allow_encoder_mismatch: bool = False,
        identity: dict[str, str] | None = None,
    ) -> None:
        self.encoder = encoder
        self.knowledge_base = knowledge_base
        self.allow_encoder_mismatch = allow_encoder_mismatch
        self.identity = identity or encoder.identity()
        built_with = knowledge_base.encoder
        if not same_encoder(self.identity, built_with) and not allow_encoder_mismatch:
            raise EncoderMismatchError(
                f"the knowledge base was built with encoder {built_with['name']!r} (sha256 "
                f"{built_with['sha256'][:12]}…) but the query encoder is {self.identity['name']!r} "
                f"(sha256 {self.identity['sha256'][:12]}…); use the same encoder, or allow the "
                "mismatch explicitly if both embed into one space"
            )

    def search_text(
        self, text: str, k: int = 5, where: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        return self._search(embed_texts(self.encoder, [text]), k, where)

    def search_image(
        self, image: str | Path | Tensor, k: int = 5, where: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        return self._search(embed_images(self.encoder, image), k, where)

    def _search(self, query: Tensor, k: int, where: Mapping[str, Any] | None) -> list[Hit]:
        return self.knowledge_base.search(
            query.numpy(),
            k,
            encoder=self.identity,
            where=where or None,
            allow_encoder_mismatch=self.allow_encoder_mismatch,
        )[0]


def parse_filters(items: Sequence[str]) -> dict[str, Any]:
    """``["level=scene", "lang=de", "lang=en", "year=2020"]`` -> ``{"level": "scene",
    "lang": ["de", "en"], "year": 2020}``: a repeated key means any of its values, and a value
    that reads as a JSON number or boolean matches numeric or boolean metadata."""
    where: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        operator = next((op for op in OPERATORS if op in item and op != "="), None)
        if operator is not None and (not sep or key.endswith(tuple("<>!~"))):
            raise FilterError(
                f"filter {item!r}: operator {operator!r} is not supported; a filter is "
                f"key=value, an exact match ({FILTER_SYNTAX})"
            )
        if not sep or not key.strip():
            raise FilterError(f"filter {item!r} is not of the form key=value ({FILTER_SYNTAX})")
        value = _scalar(text)
        key = key.strip()
        if key in where:
            previous = where[key] if isinstance(where[key], list) else [where[key]]
            where[key] = [*previous, value]
        else:
            where[key] = value
    return where


OPERATORS = (">=", "<=", "!=", "=~", ">", "<", "~", "=")
FILTER_SYNTAX = (
    "repeat a key for any of several values; numbers and true/false match as such; no ranges, "
    "negations or patterns"
)
FILTERABLE = {"text", "integer", "real", "true", "false", "null"}


def check_filters(where: Mapping[str, Any], knowledge_base: KnowledgeBase) -> None:
    """Refuse a filter that can match nothing for a reason the user cannot see: a field no
    record has, or one that only holds lists or objects (a filter compares whole scalar values).
    A malformed filter gets the knowledge base's own error first."""
    knowledge_base.matching_ids(where)
    fields = knowledge_base.metadata_fields()
    scalar = sorted(key for key, kinds in fields.items() if kinds & FILTERABLE)
    for key in where:
        if key not in fields:
            raise FilterError(
                f"no record has a field {key!r}; the fields are: {', '.join(sorted(fields))}"
            )
        if not fields[key] & FILTERABLE:
            raise FilterError(
                f"field {key!r} holds {' and '.join(sorted(fields[key]))} values, which a filter "
                f"cannot match (it compares whole text, number or true/false values); fields "
                f"that can be filtered: {', '.join(scalar) or 'none'}"
            )


def _scalar(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, int | float | bool) else text


def hit_to_dict(hit: Hit, rank: int) -> dict:
    return {"rank": rank, "id": hit.id, "score": hit.score, "record": hit.record}
