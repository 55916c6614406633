from __future__ import annotations

import itertools

import pytest
import torch
from domainvlm.core.soft_dtw import alignment_cost, procedure_dtw_loss, soft_dtw


def reference_soft_dtw(cost: torch.Tensor, gamma: float) -> float:
    """The textbook O(NM) double loop."""
    rows, cols = cost.shape
    big = float("inf")
    r = [[big] * (cols + 1) for _ in range(rows + 1)]
    r[0][0] = 0.0
    for i, j in itertools.product(range(1, rows + 1), range(1, cols + 1)):
        prev = torch.tensor([r[i - 1][j - 1], r[i - 1][j], r[i][j - 1]])
        r[i][j] = float(cost[i - 1, j - 1] - gamma * torch.logsumexp(-prev / gamma, 0))
    return r[rows][cols]


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (3, 5), (6, 2), (7, 7)])
def test_soft_dtw_matches_the_double_loop(rows: int, cols: int):
    cost = torch.rand(rows, cols, generator=torch.Generator().manual_seed(rows * 10 + cols))
    assert soft_dtw(cost, 0.1).item() == pytest.approx(reference_soft_dtw(cost, 0.1), rel=1e-5)
    batched = soft_dtw(torch.stack([cost, 2 * cost]), 0.1)
    assert batched[1].item() == pytest.approx(reference_soft_dtw(2 * cost, 0.1), rel=1e-5)


def test_small_gamma_approaches_hard_dtw():
    cost = torch.tensor([[0.0, 5.0, 5.0], [5.0, 0.0, 5.0], [5.0, 5.0, 0.0]])
    assert soft_dtw(cost, 1e-3).item() == pytest.approx(0.0, abs=1e-2)  # the diagonal path
    assert soft_dtw(cost.flip(1), 1e-3).item() == pytest.approx(10.0, abs=1e-2)


def test_true_keystep_order_scores_below_its_reverse():
    """Frames that walk through 4 steps in order: the ordered steps align at lower cost."""
    torch.manual_seed(0)
    steps = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    frames = steps.repeat_interleave(8, dim=0) + 0.1 * torch.randn(32, 16)
    true_order = soft_dtw(alignment_cost(frames, steps), 0.1)
    reverse = soft_dtw(alignment_cost(frames, steps.flip(0)), 0.1)
    assert true_order < reverse
    loss = procedure_dtw_loss(frames, steps)
    assert loss.item() == pytest.approx(0.01 * true_order.item())  # no hinge: the margin is met
    # shuffled frames against the same steps: the hinge term now adds to the loss
    flipped = procedure_dtw_loss(frames.flip(0), steps)
    assert flipped > 0.01 * soft_dtw(alignment_cost(frames.flip(0), steps), 0.1)


def test_gradient_flows_to_frames_and_steps():
    frames = torch.randn(10, 8, requires_grad=True)
    steps = torch.randn(3, 8, requires_grad=True)
    procedure_dtw_loss(frames, steps).backward()
    assert frames.grad.abs().sum() > 0 and steps.grad.abs().sum() > 0
