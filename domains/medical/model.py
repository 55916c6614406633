"""M3AE (Chen et al., MICCAI 2022) as plain modules: towers, co-attention fusion and the heads.

The image tower is core's ``MaskedViTEncoder``, an open_clip ViT whose blocks run on the visible
patches only: random weights at the sizes given (``builtin``), or an open_clip model's tower
(``openclip:ViT-B-16-quickgelu:openai``) whose CLIP weights load when training starts, as the
paper's do. The text tower is a small built-in transformer, a RoBERTa built from a config
(offline, random weights) or a RoBERTa read from a local ``save_pretrained`` folder. Fusion layers update both streams in
parallel from the previous layer's outputs (as in M3AE/METER): self-attention, cross-attention to
the other stream, feed-forward. Blocks are pre-norm here (the reference is BERT's post-norm):
pre-norm trains reliably from scratch at the small sizes the offline configs use.
"""

from __future__ import annotations

import torch
from domainvlm.core.towers.clip import OPENCLIP_PREFIX, split_openclip_spec
from domainvlm.core.towers.mae import MAEDecoder, MaskedViTEncoder
from torch import Tensor, nn


class BuiltinTextEncoder(nn.Module):
    """Token + learned position embeddings, pre-norm transformer blocks, final LayerNorm."""

    def __init__(
        self, vocab_size: int, width: int, depth: int, heads: int, context_length: int
    ) -> None:
        super().__init__()
        self.width = width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, context_length, width))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width,
                heads,
                4 * width,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)

    def forward(self, ids: Tensor, padding: Tensor) -> Tensor:
        """``ids [B, L]``, ``padding [B, L]`` (True = pad) → ``[B, L, width]``."""
        if ids.shape[1] > self.pos_embed.shape[1]:
            raise ValueError(
                f"text of {ids.shape[1]} tokens exceeds context_length {self.pos_embed.shape[1]}"
            )
        tokens = self.token_embedding(ids) + self.pos_embed[:, : ids.shape[1]]
        for block in self.blocks:
            tokens = block(tokens, src_key_padding_mask=padding)
        return self.norm(tokens)


class HFTextEncoder(nn.Module):
    """A transformers RoBERTa: random weights from sizes, or pretrained from a local folder."""

    def __init__(
        self,
        source: str,
        vocab_size: int,
        width: int,
        depth: int,
        heads: int,
        context_length: int,
        pad_id: int,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, RobertaConfig, RobertaModel

        if source == "roberta":
            config = RobertaConfig(
                vocab_size=vocab_size,
                hidden_size=width,
                num_hidden_layers=depth,
                num_attention_heads=heads,
                intermediate_size=4 * width,
                max_position_embeddings=context_length + pad_id + 2,
                pad_token_id=pad_id,
                type_vocab_size=1,
            )
            self.model = RobertaModel(config, add_pooling_layer=False)
        else:
            self.model = AutoModel.from_pretrained(source, add_pooling_layer=False)
        self.width = int(self.model.config.hidden_size)

    def forward(self, ids: Tensor, padding: Tensor) -> Tensor:
        return self.model(input_ids=ids, attention_mask=(~padding).long()).last_hidden_state


def build_text_encoder(
    backbone: str,
    vocab_size: int,
    width: int,
    depth: int,
    heads: int,
    context_length: int,
    pad_id: int,
) -> nn.Module:
    """``builtin``, ``roberta`` (sizes from the arguments) or ``hf:<local folder>`` (pretrained)."""
    if backbone == "builtin":
        return BuiltinTextEncoder(vocab_size, width, depth, heads, context_length)
    if backbone == "roberta" or (backbone.startswith("hf:") and len(backbone) > 3):
        source = backbone.removeprefix("hf:")
        return HFTextEncoder(source, vocab_size, width, depth, heads, context_length, pad_id)
    raise ValueError(
        f"text_backbone must be 'builtin', 'roberta' or 'hf:<folder>', got {backbone!r}"
    )


def build_image_tower(
    vision_backbone: str,
    image_size: int,
    patch: int,
    in_chans: int,
    width: int,
    depth: int,
    heads: int,
    mlp_ratio: float,
) -> MaskedViTEncoder:
    """``builtin`` (sizes from the arguments) or ``openclip:<model>[:<tag or weights file>]``.

    An open_clip tower takes its width, depth and heads from the model config and starts random
    here: its weights are read by ``M3AEBackbone.load_vision_weights`` when training starts, so
    rebuilding a trained checkpoint never needs the CLIP weights.
    """
    if vision_backbone == "builtin":
        return MaskedViTEncoder.from_sizes(
            image_size, patch, in_chans, width, depth, heads, mlp_ratio
        )
    if not vision_backbone.startswith(OPENCLIP_PREFIX):
        raise ValueError(
            "vision_backbone must be 'builtin' or 'openclip:<model>[:<tag or weights file>]', "
            f"got {vision_backbone!r}"
        )
    model_name, _ = split_openclip_spec(vision_backbone)
    tower = MaskedViTEncoder.from_openclip(model_name, None, image_size, in_chans)
    if tower.patch != patch:
        raise ValueError(
            f"vision_backbone {model_name!r} has {tower.patch}-px patches, but patch={patch}: "
            "make them equal"
        )
    return tower


def vision_architecture(vision_backbone: str) -> str:
    """The spec without its weights: two specs build the same tower when these are equal."""
    if vision_backbone.startswith(OPENCLIP_PREFIX):
        return OPENCLIP_PREFIX + split_openclip_spec(vision_backbone)[0]
    return vision_backbone


class CoAttentionBlock(nn.Module):
    """One stream of a fusion layer: self-attention, cross-attention to the other stream, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_query = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width)
        self.cross_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(
        self,
        tokens: Tensor,
        context: Tensor,
        padding: Tensor | None = None,
        context_padding: Tensor | None = None,
    ) -> Tensor:
        normed = self.norm_self(tokens)
        attended, _ = self.self_attention(
            normed, normed, normed, key_padding_mask=padding, need_weights=False
        )
        tokens = tokens + attended
        context = self.norm_context(context)
        attended, _ = self.cross_attention(
            self.norm_query(tokens),
            context,
            context,
            key_padding_mask=context_padding,
            need_weights=False,
        )
        tokens = tokens + attended
        return tokens + self.mlp(self.norm_mlp(tokens))


class FusionLayer(nn.Module):
    """Both streams step together, each reading the other's input to this layer."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.image = CoAttentionBlock(width, heads, mlp_ratio)
        self.text = CoAttentionBlock(width, heads, mlp_ratio)

    def forward(self, image: Tensor, text: Tensor, text_padding: Tensor) -> tuple[Tensor, Tensor]:
        new_image = self.image(image, text, context_padding=text_padding)
        new_text = self.text(text, image, padding=text_padding)
        return new_image, new_text


class Pooler(nn.Module):
    """The first token (image CLS / text BOS) through dense + tanh, as BERT pools."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)

    def forward(self, tokens: Tensor) -> Tensor:
        return torch.tanh(self.dense(tokens[:, 0]))


class M3AEBackbone(nn.Module):
    """Image and text towers, projections to the fusion width, fusion layers and poolers."""

    def __init__(
        self,
        image_size: int = 64,
        patch: int = 8,
        in_chans: int = 3,
        vision_width: int = 64,
        vision_depth: int = 4,
        vision_heads: int = 4,
        vision_backbone: str = "builtin",
        text_backbone: str = "builtin",
        vocab_size: int = 260,
        text_width: int = 64,
        text_depth: int = 2,
        text_heads: int = 4,
        context_length: int = 128,
        pad_id: int = 0,
        hidden: int = 64,
        fusion_layers: int = 2,
        fusion_heads: int = 4,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if fusion_layers < 1:
            raise ValueError(f"fusion_layers must be at least 1, got {fusion_layers}")
        self.pad_id = pad_id
        self.hidden = hidden
        self.vision_backbone = vision_backbone
        self.vision = build_image_tower(
            vision_backbone,
            image_size,
            patch,
            in_chans,
            vision_width,
            vision_depth,
            vision_heads,
            mlp_ratio,
        )
        self.text = build_text_encoder(
            text_backbone, vocab_size, text_width, text_depth, text_heads, context_length, pad_id
        )
        self.image_projection = nn.Linear(self.vision.width, hidden)
        self.text_projection = nn.Linear(self.text.width, hidden)
        # Tells the fusion layers which stream a token came from (M3AE's token-type embedding).
        self.modality_embedding = nn.Embedding(2, hidden)
        self.fusion = nn.ModuleList(
            FusionLayer(hidden, fusion_heads, mlp_ratio) for _ in range(fusion_layers)
        )
        self.image_norm = nn.LayerNorm(hidden)
        self.text_norm = nn.LayerNorm(hidden)
        self.image_pooler = Pooler(hidden)
        self.text_pooler = Pooler(hidden)

    def load_vision_weights(self) -> bool:
        """Start the image tower from the CLIP weights its spec names; False when it names none."""
        if not self.vision_backbone.startswith(OPENCLIP_PREFIX):
            return False
        model_name, pretrained = split_openclip_spec(self.vision_backbone)
        if pretrained is None:
            return False
        vision = self.vision
        clip = MaskedViTEncoder.from_openclip(
            model_name, pretrained, vision.image_size, vision.in_chans
        )
        vision.load_state_dict(clip.state_dict())
        return True

    def encode_image(
        self, images: Tensor, mask_ratio: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(tokens [B, 1+visible, hidden], mask [B, N] 1 = hidden, ids_restore [B, N])``."""
        tokens, mask, ids_restore = self.vision(images, mask_ratio, generator)
        tokens = self.image_projection(tokens) + self.modality_embedding.weight[1]
        return tokens, mask, ids_restore

    def encode_text(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(tokens [B, L, hidden], padding [B, L] True = pad)``."""
        padding = ids == self.pad_id
        tokens = self.text_projection(self.text(ids, padding))
        return tokens + self.modality_embedding.weight[0], padding

    def fuse(
        self,
        image: Tensor,
        text: Tensor,
        text_padding: Tensor,
        return_image_after: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Final normalised streams, plus the raw image stream after ``return_image_after`` layers.

        ``return_image_after=0`` gives the image stream before any fusion layer.
        """
        layers = len(self.fusion)
        if return_image_after is not None and not 0 <= return_image_after <= layers:
            raise ValueError(
                f"return_image_after must be in [0, {layers}], got {return_image_after}"
            )
        kept = image if return_image_after == 0 else None
        for index, layer in enumerate(self.fusion, start=1):
            image, text = layer(image, text, text_padding)
            if index == return_image_after:
                kept = image
        return self.image_norm(image), self.text_norm(text), kept

    def pool(self, image: Tensor, text: Tensor) -> Tensor:
        """``[B, 2·hidden]``: pooled text then pooled image, the input of the ITM and VQA heads."""
        return torch.cat([self.text_pooler(text), self.image_pooler(image)], dim=-1)


class PixelDecoder(nn.Module):
    """Normalise the fused image stream, then core's MAE decoder predicts every patch."""

    def __init__(
        self,
        num_patches: int,
        patch: int,
        in_chans: int,
        hidden: int,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.decoder = MAEDecoder(num_patches, patch, in_chans, hidden, width, depth, heads)

    def forward(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        return self.decoder(self.norm(tokens), ids_restore)


class MLMHead(nn.Module):
    """Dense → GELU → LayerNorm → linear to the vocabulary (BERT's LM head)."""

    def __init__(self, hidden: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.decoder = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.decoder(self.transform(tokens))


def itm_pairs(batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(labels [B], partner [B])``: ``batch_size // 2`` random rows become mismatched pairs.

    Row i keeps its own image (``partner[i] == i``, label 1) or takes the image of another row
    (``partner[i] != i``, label 0). The reference draws the stranger from the whole dataset; an
    in-batch stranger costs no extra image reading and is as random.
    """
    negatives = batch_size // 2
    order = torch.randperm(batch_size, generator=generator)
    labels = torch.ones(batch_size, dtype=torch.long)
    labels[order[:negatives]] = 0
    partner = torch.arange(batch_size)
    if negatives:
        shift = torch.randint(1, batch_size, (batch_size,), generator=generator)
        strangers = (partner + shift) % batch_size
        partner = torch.where(labels == 1, partner, strangers)
    return labels, partner
