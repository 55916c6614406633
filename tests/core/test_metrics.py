from __future__ import annotations

import numpy as np
import pytest
import torch
from domainvlm.core.metrics import (
    confusion_matrix,
    mean_average_precision,
    retrieval_metrics,
    zeroshot_metrics,
)

# Five samples, six classes. Target ranks: s0 1st, s1 2nd, s2 1st, s3 6th, s4 5th.
LOGITS = torch.tensor(
    [
        [9.0, 1, 2, 3, 4, 5],
        [0.0, 8, 1, 9, 2, 3],
        [0.0, 1, 9, 2, 3, 4],
        [5.0, 4, 0, 3, 2, 1],
        [6.0, 5, 4, 3, 0, 2],
    ]
)
TARGETS = [0, 1, 2, 2, 5]


def test_zeroshot_metrics_match_a_hand_computation():
    metrics = zeroshot_metrics(LOGITS, TARGETS)
    assert metrics["acc1"] == pytest.approx(2 / 5)  # s0, s2
    assert metrics["acc5"] == pytest.approx(4 / 5)  # all but s3
    # predictions 0, 3, 2, 0, 0; recall of present classes 0: 1/1, 1: 0/1, 2: 1/2, 5: 0/1
    assert metrics["mean_per_class_recall"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert metrics["num_classes"] == 6 and metrics["num_samples"] == 5


def test_acc5_only_with_five_classes_or_more():
    assert "acc5" not in zeroshot_metrics(LOGITS[:, :4], [0, 1, 2, 2, 3])
    assert zeroshot_metrics(LOGITS[:, :5], [0, 1, 2, 2, 3])["acc5"] == 1.0


def test_zeroshot_metrics_reject_bad_shapes_and_labels():
    with pytest.raises(ValueError, match="one target per sample"):
        zeroshot_metrics(LOGITS, [0, 1])
    with pytest.raises(ValueError, match="targets must lie"):
        zeroshot_metrics(LOGITS, [0, 1, 2, 2, 6])


def unit(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_retrieval_metrics_match_a_hand_computation():
    images = unit((1, 0, 0), (0, 1, 0), (0, 0, 1))
    texts = unit((0.9, 0.1, 0), (0.2, 0.8, 0.1), (0, 0.3, 0.9), (0.5, 0.4, 0.1))
    owners = [0, 0, 1, 2]
    metrics = retrieval_metrics(images, texts, owners, recall_at=(1, 2))
    # text -> image: t0 finds I0 first; t1 and t2 find theirs second; t3 finds I2 last.
    assert metrics["image_retrieval_recall@1"] == pytest.approx(1 / 4)
    assert metrics["image_retrieval_recall@2"] == pytest.approx(3 / 4)
    # image -> text: I0 ranks t0 first; I1 ranks t2 third; I2 ranks t3 second.
    assert metrics["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert metrics["text_retrieval_recall@2"] == pytest.approx(2 / 3)
    assert metrics["mean_recall"] == pytest.approx((1 / 4 + 3 / 4 + 1 / 3 + 2 / 3) / 4)


def reference_recalls(images: torch.Tensor, texts: torch.Tensor, owners: list[int], k: int):
    """A direct per-query loop, independent of the batched implementation."""
    image_hits = []
    for t, owner in enumerate(owners):
        order = sorted(range(len(images)), key=lambda i: -float(texts[t] @ images[i]))
        image_hits.append(owner in order[:k])
    text_hits = []
    for i in sorted(set(owners)):
        order = sorted(range(len(texts)), key=lambda t: -float(texts[t] @ images[i]))
        text_hits.append(any(owners[t] == i for t in order[:k]))
    return np.mean(image_hits), np.mean(text_hits)


def test_retrieval_metrics_agree_with_a_loop_over_queries_in_any_chunking():
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(13, 8, generator=generator), dim=1)
    owners = [i % 12 for i in range(30)]  # image 12 has no caption: a distractor only
    texts = torch.nn.functional.normalize(
        images[owners] + 0.9 * torch.randn(30, 8, generator=generator), dim=1
    )
    metrics = retrieval_metrics(images, texts, owners, chunk=4)
    assert set(metrics) == {
        *(f"{kind}_retrieval_recall@{k}" for kind in ("image", "text") for k in (1, 5, 10)),
        "mean_recall",
    }
    for k in (1, 5, 10):
        image_recall, text_recall = reference_recalls(images, texts, owners, k)
        assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(image_recall)
        assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(text_recall)
    assert 0 < metrics["image_retrieval_recall@1"] < 1
    six = [value for key, value in metrics.items() if key != "mean_recall"]
    assert metrics["mean_recall"] == pytest.approx(sum(six) / 6)


def test_mean_average_precision_matches_a_hand_computation():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.2, 0.4], [0.3, 0.9, 0.3], [0.1, 0.3, 0.2]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: rank 3 -> 1/3;
    # class 2 has no positive and scores 0, as in CLIP_benchmark.
    expected = ((1 + 2 / 3) / 2 + 1 / 3 + 0) / 3
    assert mean_average_precision(scores, targets) == pytest.approx(expected)
    with pytest.raises(ValueError, match="one shape"):
        mean_average_precision(scores, targets[:, :2])


def test_confusion_matrix_counts():
    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 1, 2, 2, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 1]]
