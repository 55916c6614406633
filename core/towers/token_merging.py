"""Token merging for open_clip ViT image towers: fewer tokens per layer, same weights.

Written from the papers, not from their code: ToMe (Bolya et al., "Token Merging: Your ViT but
Faster", ICLR 2023) and PiToMe (Tran et al., "Accelerating Transformers with Spectrum-Preserving
Token Merging", NeurIPS 2024).

In every block, between the attention and the MLP, ``r`` patch tokens are merged into others:

* ToMe's bipartite soft matching: the patch tokens are split alternately into sets A and B, each A
  token finds its most similar B token (cosine of the attention keys averaged over heads, or of the
  hidden states), and the ``r`` most similar A tokens are averaged into their B partners.
* A merged token is the size-weighted average of what it holds, ``Σ sᵢ xᵢ / Σ sᵢ``, and carries
  its size ``Σ sᵢ`` (how many patches it stands for) into later layers.
* Proportional attention: attention logits get ``+ log s`` for each key, passed as an additive
  mask to ``scaled_dot_product_attention``, so a token of size 2 weighs like two copies of itself.
* The class token (index 0) is never merged and never absorbs another token, so the pooled
  embedding still reads it.
* PiToMe's energy score (``energy=True``): ``E_i = mean_j f(cos(x_i, x_j))`` with
  ``f(c) = c`` if ``c ≥ m`` else ``exp(c − m) − 1``, margin ``m = 0.9 − 0.9·l/L`` at layer ``l`` of
  ``L``. Only the ``2r`` tokens of highest energy (those in large clusters of similar tokens) take
  part in the matching, split alternately by energy rank; isolated, informative tokens are kept.

A layer that has not merged anything yet and merges nothing runs open_clip's own block, so
``r = 0`` leaves every output bit for bit as without merging. The patch only swaps the class of
``visual.transformer``: parameter names and the state dict stay as they are, ``remove_token_merging``
undoes it. Text towers are refused (their causal mask forbids merging).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from domainvlm.core.errors import DomainVLMError
from lightning.pytorch import Callback, LightningModule, Trainer
from open_clip.transformer import ResidualAttentionBlock, Transformer, VisionTransformer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

MAX_RATIO = 0.5  # bipartite matching merges at most one token of each A/B pair


class TokenMergingError(DomainVLMError, ValueError):
    pass


def parse_token_merging(text: str) -> int | float:
    """``"8"`` → merge 8 tokens per layer; ``"0.25"`` → merge 25 % of the patch tokens per layer."""
    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise TokenMergingError(
                f"token merging {text!r} is neither a token count (8) nor a ratio (0.25)"
            ) from None
    return check_rate(value)


def check_rate(rate: int | float) -> int | float:
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise TokenMergingError(f"token merging rate must be an int or a float, got {rate!r}")
    if isinstance(rate, int) and rate < 0:
        raise TokenMergingError(f"token merging r must be ≥ 0 tokens per layer, got {rate}")
    if isinstance(rate, float) and not 0.0 <= rate <= MAX_RATIO:
        raise TokenMergingError(
            f"token merging ratio must be in [0, {MAX_RATIO}] (bipartite matching merges at most "
            f"half the tokens of a layer), got {rate}"
        )
    return rate


@dataclass(frozen=True)
class TokenMerging:
    """How many tokens to merge and how.

    ``rate``: an int is ToMe's constant ``r`` tokens per layer; a float is the share of the layer's
    current patch tokens merged (so the count shrinks geometrically). Either is capped at half
    the patch tokens. ``metric``: ``"keys"`` (ToMe's default) or ``"hidden"``.
    """

    rate: int | float
    metric: str = "keys"
    proportional_attention: bool = True
    energy: bool = False

    def __post_init__(self) -> None:
        check_rate(self.rate)
        if self.metric not in ("keys", "hidden"):
            raise TokenMergingError(f"metric must be 'keys' or 'hidden', got {self.metric!r}")

    def merge_count(self, tokens: int) -> int:
        """Tokens merged in a layer that receives ``tokens`` (class token included)."""
        patches = tokens - 1
        wanted = self.rate if isinstance(self.rate, int) else int(self.rate * patches)
        return max(0, min(wanted, patches // 2))


def proportional_bias(size: Tensor) -> Tensor:
    """Token sizes ``[B, N]`` → additive attention bias ``[B, 1, 1, N]`` = ``log size``."""
    return size.log()[:, None, None, :]


def bipartite_matching(
    metric: Tensor, r: int, margin: float | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Which patch tokens merge where (the class token is not in ``metric``).

    ``metric [B, N, C]``; ``margin`` set selects PiToMe's energy-ordered sets. Returns index
    tensors into the N patch tokens: ``kept [B, N−2r']`` untouched tokens (protected + unmerged A),
    ``b [B, Nb]`` the destinations set, ``src [B, r]`` merged A tokens, ``dst [B, r]`` the position
    in ``b`` each one merges into.
    """
    metric = F.normalize(metric.float(), dim=-1)
    batch, count, _ = metric.shape
    order = torch.arange(count, device=metric.device).expand(batch, count)
    protected = order[:, :0]
    if margin is not None:
        similarity = metric @ metric.transpose(1, 2)
        energy = torch.where(similarity >= margin, similarity, torch.expm1(similarity - margin))
        order = energy.mean(dim=-1).argsort(dim=-1, descending=True)
        order, protected = order[:, : 2 * r], order[:, 2 * r :]
    a, b = order[:, ::2], order[:, 1::2]
    scores = _take(metric, a) @ _take(metric, b).transpose(1, 2)
    best, partner = scores.max(dim=-1)
    ranked = best.argsort(dim=-1, descending=True)
    src_rank, kept_rank = ranked[:, :r], ranked[:, r:]
    src = a.gather(1, src_rank)
    dst = partner.gather(1, src_rank)
    kept = torch.cat([protected, a.gather(1, kept_rank)], dim=1).sort(dim=-1).values
    return kept, b, src, dst


def merge_tokens(
    x: Tensor, size: Tensor, kept: Tensor, b: Tensor, src: Tensor, dst: Tensor
) -> tuple[Tensor, Tensor]:
    """Size-weighted merge of ``x [B, 1+N, D]`` (class token first) with sizes ``[B, 1+N]``.

    Output: ``[class, kept..., b...]``, each ``b`` token ``Σ sᵢ xᵢ / Σ sᵢ`` over itself and the
    ``src`` tokens sent to it, its size the sum.
    """
    cls, patches = x[:, :1], x[:, 1:]
    cls_size, sizes = size[:, :1], size[:, 1:]
    weighted = patches * sizes.unsqueeze(-1).to(patches.dtype)
    dim = patches.shape[-1]
    dst_rows = dst.unsqueeze(-1).expand(-1, -1, dim)
    merged = _take(weighted, b).scatter_add(1, dst_rows, _take(weighted, src))
    merged_size = sizes.gather(1, b).scatter_add(1, dst, sizes.gather(1, src))
    merged = merged / merged_size.unsqueeze(-1).to(merged.dtype)
    tokens = torch.cat([cls, _take(patches, kept), merged], dim=1)
    return tokens, torch.cat([cls_size, sizes.gather(1, kept), merged_size], dim=1)


def _take(tokens: Tensor, index: Tensor) -> Tensor:
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def merging_attention(
    attn: nn.MultiheadAttention, x: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``attn`` (batch-first self-attention) through SDPA with an additive bias; also the keys."""
    batch, count, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(batch, count, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    if bias is not None:
        bias = bias.to(q.dtype)
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, count, width)), k


class MergingTransformer(Transformer):
    """open_clip's ``Transformer`` with token merging; swapped in by ``apply_token_merging``."""

    token_merging: TokenMerging

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        if attn_mask is not None:
            raise TokenMergingError("token merging cannot run under an attention mask")
        size: Tensor | None = None
        layers = len(self.resblocks)
        for layer, block in enumerate(self.resblocks):
            r = self.token_merging.merge_count(x.shape[1])
            if size is None and r == 0:
                x = block(x)
            elif self.grad_checkpointing and torch.is_grad_enabled():
                x, size = checkpoint(
                    self._block, block, x, size, r, layer, layers, use_reentrant=False
                )
            else:
                x, size = self._block(block, x, size, r, layer, layers)
        return x

    def _block(
        self,
        block: ResidualAttentionBlock,
        x: Tensor,
        size: Tensor | None,
        r: int,
        layer: int,
        layers: int,
    ) -> tuple[Tensor, Tensor | None]:
        settings = self.token_merging
        proportional = size is not None and settings.proportional_attention
        bias = proportional_bias(size) if proportional else None
        attended, keys = merging_attention(block.attn, block.ln_1(x), bias)
        x = x + block.ls_1(attended)
        if r > 0:
            metric = keys.mean(dim=1) if settings.metric == "keys" else x
            margin = 0.9 - 0.9 * layer / layers if settings.energy else None
            match = bipartite_matching(metric[:, 1:], r, margin)
            if size is None:
                size = x.new_ones(x.shape[:2], dtype=torch.float32)
            x, size = merge_tokens(x, size, *match)
        return x + block.ls_2(block.mlp(block.ln_2(x))), size


def vision_transformers(model: nn.Module) -> list[VisionTransformer]:
    """Every open_clip ViT image tower inside ``model`` (CLIP, video frame encoder, MAE encoder)."""
    return [module for module in model.modules() if isinstance(module, VisionTransformer)]


def apply_token_merging(model: nn.Module, merging: TokenMerging | int | float) -> int:
    """Patch every open_clip ViT image tower in ``model``; returns how many were patched.

    ``merging`` as a number is ``TokenMerging(rate)``. Refuses towers that pool anything but the
    class token (their pooled output would need size-weighting) and models with no ViT tower.
    """
    if not isinstance(merging, TokenMerging):
        merging = TokenMerging(merging)
    towers = vision_transformers(model)
    if not towers:
        raise TokenMergingError(
            f"token merging needs an open_clip ViT image tower; {type(model).__name__} has none "
            "(ResNet towers and text towers cannot merge tokens)"
        )
    for tower in towers:
        _check_tower(tower)
        tower.transformer.__class__ = MergingTransformer
        tower.transformer.token_merging = merging
    return len(towers)


def remove_token_merging(model: nn.Module) -> None:
    """Undo ``apply_token_merging``: the towers run open_clip's own forward again."""
    for tower in vision_transformers(model):
        if isinstance(tower.transformer, MergingTransformer):
            tower.transformer.__class__ = Transformer
            del tower.transformer.token_merging


def _check_tower(tower: VisionTransformer) -> None:
    transformer = tower.transformer
    if type(transformer) not in (Transformer, MergingTransformer):
        raise TokenMergingError(f"unsupported ViT transformer {type(transformer).__name__}")
    if tower.attn_pool is not None or getattr(tower, "pool_type", "tok") != "tok":
        raise TokenMergingError(
            "token merging needs a ViT that pools its class token; this tower pools with "
            f"{'an attention pooler' if tower.attn_pool is not None else tower.pool_type!r}"
        )
    for block in transformer.resblocks:
        if type(block) is not ResidualAttentionBlock:
            raise TokenMergingError(
                f"token merging supports open_clip's ResidualAttentionBlock, got "
                f"{type(block).__name__}"
            )
        if type(block.attn) is not nn.MultiheadAttention:
            raise TokenMergingError(
                f"token merging reads the attention weights of nn.MultiheadAttention, got "
                f"{type(block.attn).__name__} (an adapter?): merge it into the weights first"
            )
        if not block.attn.batch_first or not block.attn._qkv_same_embed_dim:
            raise TokenMergingError("token merging needs batch-first self-attention, one in_proj")


def tokens_after(merging: TokenMerging, tokens: int, layers: int) -> list[int]:
    """Token count entering each layer after the first, and leaving the last: ``layers`` values."""
    counts = []
    for _ in range(layers):
        tokens -= merging.merge_count(tokens)
        counts.append(tokens)
    return counts


class TokenMergingCallback(Callback):
    """Token merging while a system trains (and validates); off again when ``fit`` ends.

    In a config: ``trainer.callbacks: [{class_path:
    domainvlm.core.towers.token_merging.TokenMergingCallback, init_args: {rate: 8}}]``. Every
    open_clip ViT image tower of the system is patched (an EMA teacher's too); checkpoints hold
    the same weights as without merging. Masked autoencoders (M3AE) are refused: their decoder
    needs every patch token back in place.
    """

    def __init__(
        self,
        rate: int | float,
        metric: str = "keys",
        proportional_attention: bool = True,
        energy: bool = False,
    ) -> None:
        self.merging = TokenMerging(rate, metric, proportional_attention, energy)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from domainvlm.core.towers.mae import MaskedViTEncoder

        if any(isinstance(module, MaskedViTEncoder) for module in pl_module.modules()):
            raise TokenMergingError(
                f"{type(pl_module).__name__} trains a masked image tower whose decoder needs every "
                "patch token: token merging cannot be used while it trains"
            )
        apply_token_merging(pl_module, self.merging)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        remove_token_merging(pl_module)
