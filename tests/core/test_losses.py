"""Every loss against a direct hand computation (explicit loops in numpy), single process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from domainvlm.core.losses import (
    DINOLoss,
    LogitScale,
    clip_loss,
    itm_loss,
    mae_loss,
    mil_nce_loss,
    mlm_loss,
    nt_xent_loss,
)


def _log_sum_exp(values: list[float]) -> float:
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def _softmax(row: np.ndarray) -> np.ndarray:
    shifted = np.exp(row - row.max())
    return shifted / shifted.sum()


def _row_ce(queries: np.ndarray, keys: np.ndarray, scale: float) -> float:
    """Mean over i of -log softmax_j(scale · q_i·k_j)[i], with plain loops."""
    total = 0.0
    for i in range(len(queries)):
        scores = [scale * float(queries[i] @ keys[j]) for j in range(len(keys))]
        total += _log_sum_exp(scores) - scores[i]
    return total / len(queries)


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1)


def test_logit_scale_starts_at_clip_value_and_is_clamped_in_place_not_in_the_graph() -> None:
    scale = LogitScale()
    assert scale().item() == pytest.approx(1 / 0.07)
    assert LogitScale(1000.0)().item() == pytest.approx(100.0)  # a start above the cap is capped
    with torch.no_grad():
        scale.log_scale.fill_(math.log(1000.0))
    value = scale()
    value.backward()
    # forward is exp(log_scale) itself: the gradient d exp(x)/dx = 1000, never a clamp's zero
    assert value.item() == pytest.approx(1000.0, rel=1e-5)
    assert scale.log_scale.grad.item() == pytest.approx(1000.0, rel=1e-5)
    scale.clamp_()
    assert scale.log_scale.item() == pytest.approx(math.log(100.0))
    with torch.no_grad():
        scale.log_scale.fill_(-1.0)
    scale.clamp_()
    assert scale.log_scale.item() == 0.0  # open_clip's floor: a scale of 1
    with pytest.raises(ValueError, match="positive"):
        LogitScale(0.0)


def test_clip_loss_matches_hand_computation_and_open_clip() -> None:
    from open_clip.loss import ClipLoss

    images, texts = _unit(6, 5, seed=0), _unit(6, 5, seed=1)
    scale = torch.tensor(7.5, dtype=torch.float64)
    ours = clip_loss(images, texts, scale)
    hand = _row_ce(images.numpy(), texts.numpy(), 7.5) + _row_ce(texts.numpy(), images.numpy(), 7.5)
    assert ours.item() == pytest.approx(hand / 2, rel=1e-10)
    assert ours.item() == pytest.approx(ClipLoss()(images, texts, scale).item(), rel=1e-12)


def test_clip_loss_is_low_for_aligned_pairs() -> None:
    images = _unit(8, 16, seed=2)
    aligned = clip_loss(images, images, torch.tensor(100.0, dtype=torch.float64))
    shuffled = clip_loss(images, images.roll(1, dims=0), torch.tensor(100.0, dtype=torch.float64))
    assert aligned.item() < 0.01 < 1.0 < shuffled.item()


def test_clip_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="image_features and text_features"):
        clip_loss(torch.zeros(4, 3), torch.zeros(5, 3), torch.tensor(1.0))


def test_nt_xent_weights_the_two_directions() -> None:
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(5, 4, generator=generator, dtype=torch.float64) * 3
    b = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    an = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True)
    bn = b.numpy() / np.linalg.norm(b.numpy(), axis=1, keepdims=True)
    a_to_b, b_to_a = _row_ce(an, bn, 1 / 0.2), _row_ce(bn, an, 1 / 0.2)
    assert a_to_b != pytest.approx(b_to_a)
    ours = nt_xent_loss(a, b, temperature=0.2, weight=0.3)
    assert ours.item() == pytest.approx(0.3 * a_to_b + 0.7 * b_to_a, rel=1e-10)
    assert nt_xent_loss(a, b, 0.2, weight=1.0).item() == pytest.approx(a_to_b, rel=1e-10)
    with pytest.raises(ValueError, match="weight"):
        nt_xent_loss(a, b, 0.2, weight=1.5)


def test_mil_nce_matches_hand_computation_with_padded_bags() -> None:
    generator = torch.Generator().manual_seed(4)
    batch, bag, dim, temperature = 4, 3, 5, 0.1
    video = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(batch, bag, dim, generator=generator, dtype=torch.float64), -1)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    v, t, m = video.numpy(), texts.numpy(), mask.numpy()

    def score(i: int, j: int, k: int) -> float:
        return float(v[i] @ t[j, k]) / temperature

    expected = 0.0
    for i in range(batch):
        positives = [score(i, i, k) for k in range(bag) if m[i, k]]
        clip_row = [score(i, j, k) for j in range(batch) for k in range(bag) if m[j, k]]
        bag_column = [score(j, i, k) for j in range(batch) for k in range(bag) if m[i, k]]
        expected += _log_sum_exp(clip_row + bag_column) - _log_sum_exp(positives)
    ours = mil_nce_loss(video, texts, mask, temperature)
    assert ours.item() == pytest.approx(expected / batch, rel=1e-10)


def test_mil_nce_rejects_an_empty_bag_and_bad_shapes() -> None:
    video, texts = torch.randn(2, 3), torch.randn(2, 2, 3)
    with pytest.raises(ValueError, match="at least one positive"):
        mil_nce_loss(video, texts, torch.tensor([[True, False], [False, False]]), 0.1)
    with pytest.raises(ValueError, match="bag_mask"):
        mil_nce_loss(video, texts, torch.ones(2, 3, dtype=torch.bool), 0.1)


def test_dino_teacher_temperature_warms_up_linearly() -> None:
    loss = DINOLoss(4, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=3)
    temps = [loss.teacher_temperature(epoch) for epoch in range(5)]
    assert temps == pytest.approx([0.04, 0.055, 0.07, 0.07, 0.07])
    assert DINOLoss(4, teacher_temp=0.05).teacher_temperature(0) == 0.05


def test_dino_loss_matches_hand_computation_and_updates_centre() -> None:
    generator = torch.Generator().manual_seed(5)
    out_dim, batch = 6, 3
    loss_fn = DINOLoss(
        out_dim,
        student_temp=0.1,
        teacher_temp=0.07,
        warmup_teacher_temp=0.04,
        warmup_epochs=3,
        center_momentum=0.8,
    ).double()
    initial_centre = torch.randn(1, out_dim, generator=generator, dtype=torch.float64)
    loss_fn.center.copy_(initial_centre)
    students = [
        torch.randn(batch, out_dim, generator=generator, dtype=torch.float64, requires_grad=True)
        for _ in range(4)
    ]
    teachers = [
        torch.randn(batch, out_dim, generator=generator, dtype=torch.float64) for _ in range(2)
    ]
    ours = loss_fn(students, teachers, epoch=1)

    centre, teacher_temp = initial_centre.numpy()[0], 0.055
    total, pairs = 0.0, 0
    for t in range(2):
        for s in range(4):
            if s == t:
                continue
            for b in range(batch):
                p_t = _softmax((teachers[t][b].numpy() - centre) / teacher_temp)
                p_s = _softmax(students[s][b].detach().numpy() / 0.1)
                total += -float(np.sum(p_t * np.log(p_s))) / batch
            pairs += 1
    assert pairs == 6
    assert ours.item() == pytest.approx(total / pairs, rel=1e-10)

    teacher_mean = torch.cat(teachers).mean(dim=0).numpy()
    expected_centre = 0.8 * centre + 0.2 * teacher_mean
    np.testing.assert_allclose(loss_fn.center.numpy()[0], expected_centre, rtol=1e-12)

    ours.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in students)


def test_dino_loss_rejects_views_of_the_wrong_size() -> None:
    loss_fn = DINOLoss(4)
    with pytest.raises(ValueError, match="student view 1"):
        loss_fn([torch.zeros(2, 4), torch.zeros(2, 5)], [torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="two student views"):
        loss_fn([torch.zeros(2, 4)], [torch.zeros(2, 4)])


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_averages_masked_patches_only(norm_pix: bool) -> None:
    generator = torch.Generator().manual_seed(6)
    pred = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    target = torch.rand(2, 5, 4, generator=generator, dtype=torch.float64) * 255
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 1, 0, 0]])
    total, count = 0.0, 0
    for b in range(2):
        for n in range(5):
            if not mask[b, n]:
                continue
            patch = target[b, n].numpy()
            if norm_pix:
                patch = (patch - patch.mean()) / math.sqrt(patch.var(ddof=1) + 1e-6)
            total += float(np.mean((pred[b, n].numpy() - patch) ** 2))
            count += 1
    ours = mae_loss(pred, target, mask, norm_pix=norm_pix)
    assert ours.item() == pytest.approx(total / count, rel=1e-10)


def test_mae_loss_rejects_an_empty_mask() -> None:
    with pytest.raises(ValueError, match="at least one masked patch"):
        mae_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2))


def test_mlm_loss_counts_labelled_positions_only() -> None:
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 4, 6, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[-100, 3, -100, 0], [5, -100, -100, -100]])
    expected, count = 0.0, 0
    for b in range(2):
        for position in range(4):
            label = int(labels[b, position])
            if label == -100:
                continue
            row = logits[b, position].tolist()
            expected += _log_sum_exp(row) - row[label]
            count += 1
    assert mlm_loss(logits, labels).item() == pytest.approx(expected / count, rel=1e-10)
    nothing = mlm_loss(logits.requires_grad_(), torch.full((2, 4), -100))
    assert nothing.item() == 0.0
    nothing.backward()


def test_itm_loss_matches_hand_computation() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.25], [-3.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    expected = sum(
        _log_sum_exp(logits[i].tolist()) - logits[i, int(labels[i])].item() for i in range(3)
    )
    assert itm_loss(logits, labels).item() == pytest.approx(expected / 3, rel=1e-12)
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        itm_loss(torch.zeros(3, 3), labels)
