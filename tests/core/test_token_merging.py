from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from domainvlm.core.towers.clip import build_clip
from domainvlm.core.towers.mae import MaskedViTEncoder
from domainvlm.core.towers.token_merging import (
    MergingTransformer,
    TokenMerging,
    TokenMergingCallback,
    TokenMergingError,
    apply_token_merging,
    bipartite_matching,
    merge_tokens,
    merging_attention,
    parse_token_merging,
    proportional_bias,
    remove_token_merging,
    tokens_after,
)


@pytest.fixture(scope="module")
def tiny_clip() -> torch.nn.Module:
    torch.manual_seed(0)
    model, _ = build_clip("dvlm-tiny")  # 64 px, patch 8: 1 + 64 tokens, 4 layers
    return model.eval()


def _images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_zero_rate_equals_unpatched_model_exactly(tiny_clip: torch.nn.Module) -> None:
    images = _images()
    plain = tiny_clip.encode_image(images)
    apply_token_merging(tiny_clip, 0)
    try:
        merged = tiny_clip.encode_image(images)
    finally:
        remove_token_merging(tiny_clip)
    assert torch.equal(plain, merged)
    assert torch.equal(tiny_clip.encode_image(images), plain)  # removal restores the forward


@torch.no_grad()
@pytest.mark.parametrize(
    ("merging", "expected"),
    [
        (TokenMerging(8), [65, 57, 49, 41]),
        (TokenMerging(0.25), [65, 49, 37, 28]),  # int(0.25 * patches) of each layer's patches
        (TokenMerging(40), [65, 33, 17, 9]),  # capped at half the patch tokens
        (TokenMerging(8, energy=True), [65, 57, 49, 41]),
    ],
)
def test_token_count_per_layer(
    tiny_clip: torch.nn.Module, merging: TokenMerging, expected: list[int]
) -> None:
    seen: list[int] = []
    hooks = [
        block.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].shape[1]))
        for block in (b.ln_1 for b in tiny_clip.visual.transformer.resblocks)
    ]
    apply_token_merging(tiny_clip, merging)
    try:
        embedding = tiny_clip.encode_image(_images())
    finally:
        remove_token_merging(tiny_clip)
        for hook in hooks:
            hook.remove()
    assert seen == expected
    assert tokens_after(merging, 65, 3) == expected[1:]
    assert embedding.shape == (3, 128)


@torch.no_grad()
def test_merged_embedding_stays_close_and_bf16_runs(tiny_clip: torch.nn.Module) -> None:
    images = _images()
    plain = tiny_clip.encode_image(images)
    apply_token_merging(tiny_clip, 8)
    try:
        merged = tiny_clip.encode_image(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = tiny_clip.encode_image(images)
    finally:
        remove_token_merging(tiny_clip)
    assert not torch.equal(plain, merged)
    assert F.cosine_similarity(plain, merged).min() > 0.99
    assert half.dtype == torch.bfloat16
    assert F.cosine_similarity(half.float(), merged).min() > 0.99


def test_size_weighted_average_by_hand() -> None:
    # class token, then patches p0..p3; sets A = (p0, p2), B = (p1, p3).
    x = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [3.0, 0.5], [1.0, 1.0]]])
    size = torch.tensor([[1.0, 2.0, 1.0, 1.0, 3.0]])
    # cos(p0, p3) = 0.707 < cos(p2, p3) = 3.5 / (9.25 ** 0.5 * 2 ** 0.5) = 0.814: p2 goes into p3
    kept, b, src, dst = bipartite_matching(x[:, 1:], r=1)
    assert (kept.tolist(), b.tolist(), src.tolist(), dst.tolist()) == (
        [[0]],
        [[1, 3]],
        [[2]],
        [[1]],
    )
    tokens, sizes = merge_tokens(x, size, kept, b, src, dst)
    # p3' = (1 * (3, 0.5) + 3 * (1, 1)) / 4 = (1.5, 0.875); order: class, kept A, B
    expected = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.5, 0.875]]])
    assert torch.allclose(tokens, expected)
    assert sizes.tolist() == [[1.0, 2.0, 1.0, 4.0]]


def test_size_weighted_average_numbers() -> None:
    x = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [1.0, 0.1], [0.0, 5.0]]])  # cls, p0, p1, p2
    size = torch.tensor([[1.0, 3.0, 1.0, 1.0]])
    kept, b, src, dst = bipartite_matching(x[:, 1:], r=1)  # A = (p0, p2), B = (p1,)
    assert src.tolist() == [[0]] and kept.tolist() == [[2]]
    tokens, sizes = merge_tokens(x, size, kept, b, src, dst)
    # p1' = (3 * (2, 0) + 1 * (1, 0.1)) / 4 = (1.75, 0.025)
    assert torch.allclose(tokens, torch.tensor([[[0.0, 0.0], [0.0, 5.0], [1.75, 0.025]]]))
    assert sizes.tolist() == [[1.0, 1.0, 4.0]]


def test_class_token_never_merged_even_when_identical_to_patches() -> None:
    x = torch.ones(2, 9, 4)  # every token identical, class token included
    x[:, 0] = 7.0
    size = torch.ones(2, 9)
    tokens, sizes = merge_tokens(x, size, *bipartite_matching(x[:, 1:], r=4))
    assert tokens.shape == (2, 5, 4)
    assert torch.equal(tokens[:, 0], x[:, 0])
    assert sizes[:, 0].tolist() == [1.0, 1.0]
    assert sizes.sum(dim=1).tolist() == [9.0, 9.0]  # every patch is counted once


def test_proportional_bias_is_log_size() -> None:
    size = torch.tensor([[1.0, 2.0, 5.0]])
    bias = proportional_bias(size)
    assert bias.shape == (1, 1, 1, 3)
    assert torch.allclose(bias.flatten(), torch.tensor([0.0, math.log(2.0), math.log(5.0)]))


@torch.no_grad()
def test_proportional_attention_equals_attention_over_duplicates() -> None:
    # A token of size 2 must weigh exactly like two copies of itself.
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(1, 3, 8)
    duplicated = torch.cat([x, x[:, 2:]], dim=1)
    reference = attn(duplicated, duplicated, duplicated, need_weights=False)[0]
    out, keys = merging_attention(attn, x, proportional_bias(torch.tensor([[1.0, 1.0, 2.0]])))
    assert keys.shape == (1, 2, 3, 4)
    assert torch.allclose(out, reference[:, :3], atol=1e-6)
    unbiased, _ = merging_attention(attn, x, None)
    assert torch.allclose(unbiased, attn(x, x, x, need_weights=False)[0], atol=1e-6)


def test_energy_keeps_isolated_tokens() -> None:
    # four near-identical tokens and two orthogonal outliers: PiToMe merges among the cluster only
    cluster = torch.tensor([1.0, 0.0, 0.0]) + 0.01 * torch.arange(4.0).unsqueeze(1)
    outliers = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    metric = torch.cat([outliers[:1], cluster[:2], outliers[1:], cluster[2:]]).unsqueeze(0)
    kept, b, src, dst = bipartite_matching(metric, r=2, margin=0.5)
    outlier_positions = {0, 3}
    assert outlier_positions <= set(kept.tolist()[0])
    assert not outlier_positions & (set(src.tolist()[0]) | set(b.tolist()[0]))


def test_training_gradients_flow(tiny_clip: torch.nn.Module) -> None:
    apply_token_merging(tiny_clip, TokenMerging(8, energy=True))
    try:
        tiny_clip.encode_image(_images()).sum().backward()
    finally:
        remove_token_merging(tiny_clip)
    grad = tiny_clip.visual.transformer.resblocks[0].attn.in_proj_weight.grad
    assert grad is not None and grad.abs().sum() > 0
    tiny_clip.zero_grad(set_to_none=True)


def test_own_masked_vit_tower_merges() -> None:
    encoder = MaskedViTEncoder.from_sizes(32, 8, width=32, depth=2, heads=2).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain, _, _ = encoder(images)
        assert apply_token_merging(encoder, 4) == 1
        merged, _, _ = encoder(images)
    remove_token_merging(encoder)
    assert plain.shape == (2, 17, 32)
    assert merged.shape == (2, 9, 32)  # 17 -> 13 -> 9


def test_refuses_text_towers_and_bad_rates(tiny_clip: torch.nn.Module) -> None:
    with pytest.raises(TokenMergingError, match="no"):
        apply_token_merging(tiny_clip.transformer, 4)  # the causal text transformer
    with pytest.raises(TokenMergingError, match="ratio"):
        parse_token_merging("0.7")
    with pytest.raises(TokenMergingError, match="neither"):
        parse_token_merging("lots")
    with pytest.raises(TokenMergingError, match="≥ 0"):
        parse_token_merging("-1")
    assert parse_token_merging("8") == 8 and parse_token_merging("0.25") == 0.25


class _TinyClipSystem(L.LightningModule):
    """dvlm-tiny trained on the mean image embedding: enough to see a fit step merge tokens."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model, _ = build_clip("dvlm-tiny")
        self.tokens_seen: list[int] = []
        self.model.visual.transformer.resblocks[-1].ln_1.register_forward_pre_hook(
            lambda _m, inputs: self.tokens_seen.append(inputs[0].shape[1])
        )

    def training_step(self, batch: list[torch.Tensor], _index: int) -> torch.Tensor:
        return self.model.encode_image(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_merges_while_training_and_unpatches_after(tmp_path) -> None:
    system = _TinyClipSystem()
    before = {k: v.clone() for k, v in system.state_dict().items()}
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(_images()), batch_size=3)
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=[TokenMergingCallback(8)],
    )  # fmt: skip
    trainer.fit(system, loader)
    assert system.tokens_seen == [41, 41]  # 65 - 3 * 8 tokens enter the last of 4 layers
    assert not isinstance(system.model.visual.transformer, MergingTransformer)
    assert system.state_dict().keys() == before.keys()
    assert not torch.equal(system.state_dict()["model.visual.conv1.weight"],
                           before["model.visual.conv1.weight"])  # fmt: skip


def test_callback_refuses_masked_autoencoders() -> None:
    module = L.LightningModule()
    module.encoder = MaskedViTEncoder.from_sizes(32, 8, width=32, depth=1, heads=2)
    with pytest.raises(TokenMergingError, match="masked image tower"):
        TokenMergingCallback(4).on_fit_start(None, module)


def test_refuses_wrapped_attention() -> None:
    """An adapter around the attention (LoRA) would be bypassed by reading its weights."""

    class Wrapped(torch.nn.Module):
        def __init__(self, inner: torch.nn.MultiheadAttention) -> None:
            super().__init__()
            self.inner = inner

    encoder = MaskedViTEncoder.from_sizes(32, 8, width=32, depth=1, heads=2)
    block = encoder.blocks[0]
    block.attn = Wrapped(block.attn)
    with pytest.raises(TokenMergingError, match="Wrapped"):
        apply_token_merging(encoder, 4)
