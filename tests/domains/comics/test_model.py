"""The closure scorer and the character-crop loss, on made-up embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from domainvlm.domains.comics.model import (
    IMAGE,
    TEXT,
    ClosureScorer,
    option_focus,
    supervised_contrastive_loss,
)


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


def test_option_focus_pools_where_options_differ() -> None:
    # two copies of a 4-patch panel that differ in patch 2 only (a re-lettered balloon)
    base = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    swapped = base.clone()
    swapped[2] += torch.tensor([2.0, -1.0, 0.5])
    focus, locality = option_focus(torch.stack([base, swapped])[None])
    # all weight on patch 2 (locality 1); each option keeps what sets it apart from the other
    half = (base[2] - swapped[2]) / 2
    assert torch.allclose(focus[0], torch.stack([half, -half]), atol=1e-6)
    assert torch.allclose(locality, torch.tensor([1.0]))
    # a third identical option shifts the weights nowhere else, and identical options give zeros
    three = option_focus(torch.stack([base, swapped, base])[None])[0][0]
    mean = (2 * base[2] + swapped[2]) / 3
    assert torch.allclose(three, torch.stack([base[2], swapped[2], base[2]]) - mean, atol=1e-6)
    assert option_focus(torch.stack([base, base])[None])[0].abs().max() == 0
    # two patches differing alike: locality 1 - log 2 / log 4 = 0.5; every patch alike: 0
    two = swapped.clone()
    two[0] += torch.tensor([2.0, -1.0, 0.5])
    assert torch.allclose(option_focus(torch.stack([base, two])[None])[1], torch.tensor([0.5]))
    everywhere = base + torch.tensor([2.0, -1.0, 0.5])
    assert torch.allclose(
        option_focus(torch.stack([base, everywhere])[None])[1], torch.tensor([0.0]), atol=1e-6
    )


def test_scorer_compares_panel_options_by_their_patches() -> None:
    torch.manual_seed(0)
    scorer = ClosureScorer(embed_dim=16, width=32, layers=1, heads=2, patch_dim=8).eval()
    context, positions, target = torch.randn(1, 3, 16), torch.tensor([[0, 1, 2]]), torch.tensor([3])
    options = torch.randn(1, 1, 16).expand(-1, 2, -1)  # pooled embeddings cannot tell them apart
    patches = torch.randn(1, 1, 4, 8).repeat(1, 2, 1, 1)
    patches[0, 1, 2] += 1.0
    plain = scorer(context, None, positions, options, IMAGE, target)
    assert torch.allclose(plain[0, 0], plain[0, 1])
    compared = scorer(context, None, positions, options, IMAGE, target, option_patches=patches)
    assert (compared[0, 0] - compared[0, 1]).abs() > 1e-3
    # swapping the options swaps their logits
    flipped = scorer(
        context, None, positions, options, IMAGE, target, option_patches=patches.flip(1)
    )
    assert torch.allclose(flipped, compared.flip(1), atol=1e-5)
