"""Zero-shot classification and retrieval metrics, named and defined as CLIP_benchmark does.

CLIP_benchmark's definitions (docs/evaluation.md) make our numbers comparable with published
tables: ``acc1``/``acc5`` are top-k accuracy, ``mean_per_class_recall`` is balanced accuracy over the
classes present, retrieval recall@k counts a hit when any positive is in the top k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

RECALL_AT = (1, 5, 10)


def zeroshot_metrics(logits: Tensor, targets: Tensor | Sequence[int]) -> dict[str, float | int]:
    """``acc1``, ``acc5`` (only with at least 5 classes), ``mean_per_class_recall`` and counts."""
    logits = torch.as_tensor(logits, dtype=torch.float32)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if logits.ndim != 2 or targets.shape != (logits.shape[0],) or logits.shape[0] == 0:
        raise ValueError(
            f"need logits [samples, classes] and one target per sample, got logits "
            f"{tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    num_samples, num_classes = logits.shape
    if int(targets.min()) < 0 or int(targets.max()) >= num_classes:
        raise ValueError(f"targets must lie in [0, {num_classes}), got {targets.unique().tolist()}")
    metrics: dict[str, float | int] = {"acc1": _top_k_accuracy(logits, targets, 1)}
    if num_classes >= 5:
        metrics["acc5"] = _top_k_accuracy(logits, targets, 5)
    metrics["mean_per_class_recall"] = _mean_per_class_recall(logits.argmax(dim=1), targets)
    metrics["num_classes"] = num_classes
    metrics["num_samples"] = num_samples
    return metrics


def _top_k_accuracy(logits: Tensor, targets: Tensor, k: int) -> float:
    top = logits.topk(k, dim=1).indices
    return (top == targets[:, None]).any(dim=1).double().mean().item()


def _mean_per_class_recall(predictions: Tensor, targets: Tensor) -> float:
    recalls = [
        (predictions[targets == label] == label).double().mean().item()
        for label in targets.unique()
    ]
    return float(np.mean(recalls))


def retrieval_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Sequence[int],
    recall_at: Sequence[int] = RECALL_AT,
    chunk: int = 1024,
) -> dict[str, float]:
    """Text→image (``image_retrieval_recall@k``) and image→text recall, plus their mean (mR).

    Text i describes image ``text_to_image[i]``; an image may have several captions (any one in the
    top k is a hit). Images without a caption stay in the gallery for image retrieval but are not
    queries for text retrieval, where they would have no positive.
    """
    _check_owners(text_to_image, len(text_emb), len(image_emb))
    image_emb, text_emb = image_emb.float(), text_emb.float()
    depth = max(recall_at)
    images_per_text = _top_indices(text_emb, image_emb, depth, chunk)
    texts_per_image = _top_indices(image_emb, text_emb, depth, chunk)
    return ranking_metrics(images_per_text, texts_per_image, text_to_image, recall_at)


def ranking_metrics(
    images_per_text: Tensor,
    texts_per_image: Tensor,
    text_to_image: Sequence[int],
    recall_at: Sequence[int] = RECALL_AT,
) -> dict[str, float]:
    """The metrics of ``retrieval_metrics`` from rankings instead of embeddings (re-ranked ones).

    ``images_per_text`` ``[texts, >= k]`` holds image indices best first, ``texts_per_image``
    ``[images, >= k]`` text indices best first (a ranking may be shorter than k when the gallery
    is).
    """
    owners = torch.as_tensor(text_to_image, dtype=torch.long)
    _check_owners(owners, len(images_per_text), len(texts_per_image))
    queries = owners.unique()
    metrics = {
        f"image_retrieval_recall@{k}": _hit_rate(images_per_text[:, :k], owners) for k in recall_at
    }
    for k in recall_at:
        retrieved_owners = owners[texts_per_image[queries, :k]]
        metrics[f"text_retrieval_recall@{k}"] = _hit_rate(retrieved_owners, queries)
    metrics["mean_recall"] = float(np.mean(list(metrics.values())))
    return metrics


def _check_owners(text_to_image: Sequence[int] | Tensor, texts: int, images: int) -> None:
    owners = torch.as_tensor(text_to_image, dtype=torch.long)
    if owners.shape != (texts,) or texts == 0:
        raise ValueError(f"need one image index per text, got {owners.numel()} for {texts}")
    if int(owners.min()) < 0 or int(owners.max()) >= images:
        raise ValueError(f"image indices must lie in [0, {images})")


def _top_indices(queries: Tensor, gallery: Tensor, depth: int, chunk: int) -> Tensor:
    """``[queries, min(depth, gallery)]`` gallery indices by cosine, best first, chunk by chunk."""
    k = min(depth, len(gallery))
    return torch.cat(
        [
            (queries[start : start + chunk] @ gallery.T).topk(k, dim=1).indices
            for start in range(0, len(queries), chunk)
        ]
    )


def _hit_rate(retrieved: Tensor, positives: Tensor) -> float:
    return (retrieved == positives[:, None]).any(dim=1).double().mean().item()


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Multi-label mAP as CLIP_benchmark computes it: a class without positives scores AP 0."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    targets = torch.as_tensor(targets).bool()
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(
            f"need scores and multi-hot targets of one shape [samples, classes], got "
            f"{tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    ranks = torch.arange(1, scores.shape[0] + 1, dtype=torch.float32)
    precisions = []
    for column in range(scores.shape[1]):
        order = scores[:, column].argsort(descending=True, stable=True)
        truth = targets[order, column]
        precision_at_rank = truth.float().cumsum(0) / ranks
        precisions.append(precision_at_rank[truth].sum().item() / max(int(truth.sum()), 1))
    return float(np.mean(precisions))


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> np.ndarray:
    """Counts ``[true class, predicted class]``."""
    predictions = torch.as_tensor(predictions, dtype=torch.long)
    targets = torch.as_tensor(targets, dtype=torch.long)
    flat = torch.bincount(targets * num_classes + predictions, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes).numpy()


def macro_f1(predictions: Tensor, targets: Tensor) -> float:
    """Mean F1 over the classes present in the targets or the predictions (scikit-learn's
    ``f1_score(average="macro")``, the surgical phase-recognition convention)."""
    predictions = torch.as_tensor(predictions, dtype=torch.long)
    targets = torch.as_tensor(targets, dtype=torch.long)
    scores = []
    for label in torch.cat([targets, predictions]).unique():
        true_positive = ((predictions == label) & (targets == label)).sum().item()
        predicted, actual = (predictions == label).sum().item(), (targets == label).sum().item()
        scores.append(2 * true_positive / (predicted + actual))
    return float(np.mean(scores))


def grouped_metrics(predictions: Tensor, targets: Sequence[int], groups: Sequence[str]) -> dict:
    """Accuracy and macro-F1 per group (a video), then their means over groups.

    Video protocols (surgical phase recognition) weight every video equally, whatever its length;
    ``per_group`` keeps each group's numbers for a per-video table.
    """
    predictions = torch.as_tensor(predictions, dtype=torch.long)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if len(groups) != len(targets) or predictions.shape != targets.shape:
        raise ValueError(
            f"need one prediction, target and group per sample, got {tuple(predictions.shape)}, "
            f"{tuple(targets.shape)} and {len(groups)}"
        )
    per_group = {}
    for group in dict.fromkeys(groups):
        rows = torch.tensor([g == group for g in groups])
        per_group[group] = {
            "accuracy": (predictions[rows] == targets[rows]).double().mean().item(),
            "macro_f1": macro_f1(predictions[rows], targets[rows]),
            "num_samples": int(rows.sum()),
        }
    return {
        "mean_group_accuracy": float(np.mean([g["accuracy"] for g in per_group.values()])),
        "mean_group_macro_f1": float(np.mean([g["macro_f1"] for g in per_group.values()])),
        "num_groups": len(per_group),
        "per_group": per_group,
    }
