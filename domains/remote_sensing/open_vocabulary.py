"""Open-vocabulary scene classification with the knowledge base: what retrieved knowledge adds.

Every arm scores images against class vectors in the towers' joint space; they differ only in
where the class vectors and image vectors come from, so a difference is knowledge:

- ``names``: the class name in the zero-shot templates (``ZeroShotClassifier``).
- ``descriptions``: the class's knowledge-base entries (``"name: description"``, one per
  language), looked up by the class's concept and averaged, as classification by description /
  CuPL average generated descriptions; ``names+descriptions`` averages the two vectors.
- Knowledge entries are embedded either as their sentence (``sentences``) or as the mean of the
  template class vectors of the concepts their description names (``mentions``: "a highway
  crossing a river" becomes highway and river): a text tower trained on templated captions
  reads class names in templates reliably, free sentences only as well as its training run
  happened to make it (two tiny towers disagree: benchmarks/RESULTS.md).
- ``retrieval``: the image vector plus the knowledge its own pixels retrieve, as the semantic
  experts retrieve it (scene entries from the global embedding, object entries from the patch
  tokens), scored against the same class vectors as the arm without it, so retrieval off keeps
  the same zero-shot prior. A knowledge base without the evaluated classes separates knowledge
  about the classes from knowledge in general.

Generalised zero-shot (seen and unseen classes competing) reports seen accuracy, unseen accuracy
and their harmonic mean, which is high only when both are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from domainvlm.core.encoder import Encoder
from domainvlm.core.retrieval import embed_texts
from domainvlm.core.zeroshot import ZeroShotClassifier
from domainvlm.domains.remote_sensing.knowledge import load_concepts
from domainvlm.domains.remote_sensing.templates import templates
from domainvlm.retrieval_db import KnowledgeBase
from torch import Tensor

LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class ImageFeatures:
    """Unit global embeddings ``[N, D]`` and projected patch tokens ``[N, P, D]`` of the images."""

    embedding: Tensor
    patches: Tensor


def harmonic_mean(seen: float, unseen: float) -> float:
    """The generalised zero-shot summary: 0 when either side is 0."""
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def generalised_accuracies(logits: Tensor, labels: Tensor, unseen: Collection[int]) -> dict:
    """Seen accuracy over seen-class images, unseen over unseen-class images, all classes
    competing in ``logits``; ``unseen`` holds the unseen class indices."""
    is_unseen = torch.tensor([int(label) in unseen for label in labels])
    if is_unseen.all() or not is_unseen.any():
        raise ValueError("generalised zero-shot needs images of both seen and unseen classes")
    seen_acc = accuracy(logits[~is_unseen], labels[~is_unseen])
    unseen_acc = accuracy(logits[is_unseen], labels[is_unseen])
    return {"seen": seen_acc, "unseen": unseen_acc, "harmonic": harmonic_mean(seen_acc, unseen_acc)}


@dataclass(frozen=True)
class Knowledge:
    """A knowledge base and its vectors (row ``i`` is the entry with id ``i``), which cues use."""

    base: KnowledgeBase
    vectors: Tensor


EMBEDDINGS = ("sentences", "mentions")


def mentions(text: str, names: Mapping[str, str]) -> list[str]:
    """Concept ids (keys of ``names``) whose name occurs in ``text``: as a word where words are
    spaced, anywhere in Chinese and Korean; a name inside a longer found name does not count."""
    folded, found = text.casefold(), []
    for concept, name in sorted(names.items(), key=lambda item: -len(item[1])):
        name = name.casefold()
        if re.search(r"[\u3000-\u9fff\uac00-\ud7af]", name):
            hit = name in folded
        else:
            hit = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", folded) is not None
        if hit and not any(name in names[other].casefold() for other in found):
            found.append(concept)
    return found


def mention_vectors(encoder: Encoder, records: Sequence[dict]) -> Tensor:
    """Per record, the mean template class vector of the concepts its description names in its
    language (never itself); a record that names none gets its own name's template vector."""
    concepts = load_concepts()
    rows = []
    by_lang: dict[str, tuple[dict[str, str], dict[str, int], Tensor]] = {}
    for record in records:
        lang = record["lang"]
        if lang not in by_lang:
            names = {c.id: c.names[lang] for c in concepts if lang in c.names}
            unique = sorted(set(names.values()))
            index = {concept: unique.index(name) for concept, name in names.items()}
            by_lang[lang] = (names, index, name_weights(encoder, unique, templates(lang)))
        names, index, weights = by_lang[lang]
        description = record["text"].split(": ", 1)[-1]
        named = [c for c in mentions(description, names) if c != record["concept"]]
        rows.append(weights[[index[c] for c in named or [record["concept"]]]].mean(dim=0))
    return F.normalize(torch.stack(rows), dim=-1)


def embed_knowledge(
    encoder: Encoder, records: Sequence[dict], embedding: str = "sentences"
) -> Knowledge:
    """Each record embedded with ``encoder`` from its ``text`` ("name: description"), as a
    sentence or through the concepts it mentions (``EMBEDDINGS``)."""
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    if embedding == "mentions":
        vectors = mention_vectors(encoder, records)
    else:
        vectors = F.normalize(embed_texts(encoder, [r["text"] for r in records]), dim=-1)
    base = KnowledgeBase.from_vectors(
        vectors.numpy(), list(records), encoder=encoder.identity(), seed=0
    )
    return Knowledge(base, vectors)


def name_weights(encoder: Encoder, names: Sequence[str], templates: Sequence[str]) -> Tensor:
    return ZeroShotClassifier(encoder).class_weights(names, templates)


def description_weights(
    encoder: Encoder, knowledge: Knowledge, concepts: Sequence[str], fallback: Tensor
) -> Tensor:
    """Per concept, the mean of its entries' vectors (every language); a concept the base does
    not hold keeps its ``fallback`` row (the name vector), as CuPL falls back to templates."""
    query = fallback.numpy()
    rows = []
    for index, concept in enumerate(concepts):
        hits = knowledge.base.search(
            query[index : index + 1], 64, encoder=encoder.identity(), where={"concept": concept}
        )[0]
        hits = [hit for hit in hits if hit.record["concept"] == concept]
        if not hits:
            rows.append(fallback[index])
            continue
        rows.append(knowledge.vectors[[hit.id for hit in hits]].mean(dim=0))
    return F.normalize(torch.stack(rows), dim=-1)


def retrieved_cues(
    knowledge: Knowledge, features: ImageFeatures, k_scene: int = 4, k_object: int = 8
) -> Tensor:
    """Per image, the score-weighted mean of the vectors it retrieves: scene entries queried by
    the global embedding, object entries by each patch token (merged by best score)."""
    base, vectors = knowledge.base, knowledge.vectors
    identity = base.encoder
    cues = []
    scene_hits = base.search(
        features.embedding.numpy(), k_scene, encoder=identity, where={"level": "scene"}
    )
    patches = F.normalize(features.patches, dim=-1)
    for image, scene in enumerate(scene_hits):
        best = {hit.id: hit.score for hit in scene}
        object_hits = base.search(
            patches[image].numpy(), k_object, encoder=identity, where={"level": "object"}
        )
        merged: dict[int, float] = {}
        for row in object_hits:
            for hit in row:
                merged[hit.id] = max(hit.score, merged.get(hit.id, -1.0))
        best.update(sorted(merged.items(), key=lambda item: -item[1])[:k_object])
        ids = torch.tensor(list(best))
        scores = torch.tensor(list(best.values())).clamp(min=0)
        cues.append((scores[:, None] * vectors[ids]).sum(0) / scores.sum().clamp(min=1e-6))
    return torch.stack(cues)


def logits(image_vectors: Tensor, class_vectors: Tensor) -> Tensor:
    return LOGIT_SCALE * F.normalize(image_vectors, dim=-1) @ class_vectors.T


def augmented(features: ImageFeatures, cues: Tensor, weight: float = 1.0) -> Tensor:
    """The image vector with its retrieved knowledge added (unit length again)."""
    return F.normalize(features.embedding + weight * cues, dim=-1)


def image_features(
    paths: Sequence[str], load_image: Callable, encode: Callable, batch_size: int = 64
) -> ImageFeatures:
    """``encode(images) -> (embedding, projected patch tokens)`` over batches of loaded files."""
    embeddings, patches = [], []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            images = torch.stack([load_image(p) for p in paths[start : start + batch_size]])
            embedding, tokens = encode(images)
            embeddings.append(F.normalize(embedding, dim=-1).cpu())
            patches.append(tokens.cpu())
    return ImageFeatures(torch.cat(embeddings), torch.cat(patches))
