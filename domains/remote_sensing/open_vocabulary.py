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
and their harmonic mean, which is high only when both are. A model trained on seen classes scores
them higher than any unseen one; calibrated stacking (Chao et al., ECCV 2016) subtracts a constant
γ from every seen-class score, with γ chosen on data other than the test images: by the largest
drop of seen-class validation accuracy one accepts (``gamma_seen_only``: no unseen image used), or
for the best harmonic mean on a held-out split with images of unseen classes too
(``gamma_held_out``, the paper's protocol).
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


def calibrated(logits: Tensor, unseen: Collection[int], gamma: float) -> Tensor:
    """Calibrated stacking: every seen-class column lowered by ``gamma``."""
    seen = torch.ones(logits.shape[1], dtype=torch.bool)
    seen[list(unseen)] = False
    shifted = logits.clone()
    shifted[:, seen] -= gamma
    return shifted


def seen_margins(logits: Tensor, unseen: Collection[int]) -> Tensor:
    """Per image, best seen score minus best unseen score: the γ above which it turns unseen."""
    is_unseen = torch.zeros(logits.shape[1], dtype=torch.bool)
    is_unseen[list(unseen)] = True
    return logits[:, ~is_unseen].max(dim=1).values - logits[:, is_unseen].max(dim=1).values


def gamma_seen_only(
    logits: Tensor, labels: Tensor, unseen: Collection[int], tolerance: float = 0.05
) -> float:
    """The largest γ ≥ 0 that costs seen-class validation images (``labels`` all seen) at most
    ``tolerance`` of their accuracy. A seen image right at γ = 0 turns wrong exactly when γ
    passes its margin, so γ sits halfway between the margins of the last image given up and the
    first kept (0 below the smallest)."""
    if any(int(label) in unseen for label in labels):
        raise ValueError("gamma_seen_only takes images of seen classes only")
    right = logits.argmax(dim=1) == labels
    margins = seen_margins(logits, unseen)[right].sort().values
    allowed = int(tolerance * len(labels) + 1e-9)  # images that may turn wrong
    if allowed >= len(margins):
        return float(margins[-1]) + 1.0 if len(margins) else 0.0
    below = float(margins[allowed - 1]) if allowed else 0.0
    return (below + float(margins[allowed])) / 2


def gamma_held_out(logits: Tensor, labels: Tensor, unseen: Collection[int]) -> float:
    """The γ ≥ 0 with the best harmonic mean on a held-out split of seen and unseen images
    (the smallest such γ). Decisions change only at the images' margins, so trying 0, the
    midpoints between consecutive positive margins and one past the largest is exhaustive."""
    margins = sorted({float(m) for m in seen_margins(logits, unseen) if m > 0})
    candidates = [0.0] + [(a + b) / 2 for a, b in zip(margins, margins[1:])]
    candidates += [margins[-1] + 1.0] if margins else []
    best, best_h = 0.0, -1.0
    for gamma in candidates:
        h = generalised_accuracies(calibrated(logits, unseen, gamma), labels, unseen)["harmonic"]
        if h > best_h:
            best, best_h = gamma, h
    return best


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
    language (never itself); a record that names none gets its own name's template vector. Only
    the names some record needs are embedded."""
    concepts = load_concepts()
    names_in: dict[str, dict[str, str]] = {}
    wanted = []
    for record in records:
        lang = record["lang"]
        if lang not in names_in:
            names_in[lang] = {c.id: c.names[lang] for c in concepts if lang in c.names}
        names = names_in[lang]
        description = record["text"].split(": ", 1)[-1]
        named = [c for c in mentions(description, names) if c != record["concept"]]
        wanted.append((lang, [names[c] for c in named or [record["concept"]]]))
    weights: dict[tuple[str, str], Tensor] = {}
    for lang in names_in:
        unique = sorted({name for row_lang, row in wanted if row_lang == lang for name in row})
        vectors = name_weights(encoder, unique, templates(lang))
        weights.update({(lang, name): vector for name, vector in zip(unique, vectors)})
    rows = [torch.stack([weights[lang, name] for name in row]).mean(0) for lang, row in wanted]
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
