"""The SurgVLP dual encoder as plain modules: a per-frame image tower pooled over time + a text tower.

Both towers come from core (``build_clip``: an open_clip model, so the offline ``dvlm-tiny`` and the
paper's ResNet-50 → 768 / Bio_ClinicalBERT recipe are one code path); the clip embedding is the mean
of the frame embeddings (``FramePoolingTower``; attention pooling optional). The paper recipe is
the open_clip config ``surgvlp-rn50-bioclinicalbert`` shipped beside this module: timm ResNet-50,
global average pool, linear 2048→768; BERT with mean pooling over tokens and no projection (the
reference's pooling, the sum over BERT's last 4 layers of each layer's mean over the padded sequence,
is registered with open_clip as ``last_layers_sum_pooler``).
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from domainvlm.core.towers.clip import build_clip
from domainvlm.core.towers.video import FramePoolingTower, Pooling
from open_clip.hf_model import register_pooler
from torch import Tensor, nn

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_surgical_configs() -> None:
    names = {path.stem for path in MODEL_CONFIG_DIR.glob("*.json")}
    if not names <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


@register_pooler
class LastLayersSumPooler(nn.Module):
    """SurgVLP's sentence embedding: for each of BERT's last 4 hidden layers, the tokens from [CLS]
    to [SEP] summed and divided by the padded length, then the layers summed.

    The reference first sums word pieces into words, pads with zeros and averages over the padded
    length; the sum over all real tokens divided by that length is the same number.
    """

    layers = 4

    def forward(self, x, attention_mask: Tensor) -> Tensor:  # noqa: ANN001 (open_clip's BaseModelOutput)
        if x.hidden_states is None:
            raise ValueError("last_layers_sum_pooler needs the transformer's hidden states")
        stacked = torch.stack(x.hidden_states[-self.layers :])  # [layers, B, L, D]
        mask = attention_mask[None, :, :, None].to(stacked.dtype)
        return ((stacked * mask).sum(dim=2) / attention_mask.shape[1]).sum(dim=0)


class SurgicalDualEncoder(nn.Module):
    """``encode_frames [N, C, H, W]``, ``encode_clips [B, T, C, H, W]`` and ``encode_text tokens``."""

    def __init__(
        self,
        model_name: str = "dvlm-tiny",
        pretrained: str | None = None,
        hf_text_dir: str | None = None,
        pooling: Pooling = "mean",
    ) -> None:
        super().__init__()
        register_surgical_configs()
        self.clip, self.preprocessing = build_clip(model_name, pretrained, hf_text_dir=hf_text_dir)
        self.clip.logit_scale.requires_grad_(False)  # SurgVLP's temperature is fixed
        if isinstance(getattr(self.clip, "text", None), nn.Module) and isinstance(
            getattr(self.clip.text, "pooler", None), LastLayersSumPooler
        ):
            self.clip.text.transformer.config.output_hidden_states = True
        # open_clip's ViT and ResNet towers know their width; timm towers only through the config
        config = open_clip.get_model_config(model_name) or {}
        self.embed_dim = int(getattr(self.clip.visual, "output_dim", config.get("embed_dim", 0)))
        self.video = FramePoolingTower(self.clip.visual, pooling, self.embed_dim)

    def encode_frames(self, frames: Tensor) -> Tensor:
        return self.clip.visual(frames)

    def encode_clips(self, clips: Tensor) -> Tensor:
        return self.video(clips)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.clip.encode_text(tokens)
