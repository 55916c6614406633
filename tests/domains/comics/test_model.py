"""The closure scorer and the character-crop loss, on made-up embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from domainvlm.domains.comics.model import IMAGE, TEXT, ClosureScorer, supervised_contrastive_loss


def test_supcon_prefers_clustered_identities() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2, -1])
    centres = F.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    clustered = torch.cat([centres[labels[:-1]], torch.randn(1, 16)])
    shuffled = torch.cat([centres[torch.tensor([0, 1, 2, 0, 1, 2])], torch.randn(1, 16)])
    assert (
        supervised_contrastive_loss(clustered, labels)
        < supervised_contrastive_loss(shuffled, labels) - 1.0
    )
    # padding rows (-1) change nothing; no positive pair gives a zero loss in the graph
    assert torch.isclose(
        supervised_contrastive_loss(clustered, labels),
        supervised_contrastive_loss(clustered[:-1], labels[:-1]),
    )
    single = torch.randn(3, 8, requires_grad=True)
    loss = supervised_contrastive_loss(single, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and single.grad is not None


@pytest.mark.parametrize("kind", [IMAGE, TEXT])
def test_scorer_logits_follow_options(kind: int) -> None:
    torch.manual_seed(0)
    scorer = ClosureScorer(embed_dim=16, width=32, layers=1, heads=2).eval()
    context = torch.randn(2, 3, 16)
    options = torch.randn(2, 4, 16)
    positions = torch.tensor([[0, 1, 2], [0, 2, 3]])
    target = torch.tensor([3, 1])
    logits = scorer(context, None, positions, options, kind, target)
    assert logits.shape == (2, 4)
    # each option is scored on its own: permuting options permutes logits
    order = torch.tensor([2, 0, 3, 1])
    permuted = scorer(context, None, positions, options[:, order], kind, target)
    assert torch.allclose(permuted, logits[:, order], atol=1e-5)
    # context texts (rows of zeros = no text) and hints change the scores
    texts = torch.randn(2, 3, 16)
    assert not torch.allclose(scorer(context, texts, positions, options, kind, target), logits)
    with pytest.raises(ValueError, match="max_positions"):
        scorer(context, None, positions + 8, options, kind, target)
