"""The SurgVLP dual encoder as plain modules: a per-frame image tower pooled over time + a text tower.

Both towers come from core (``build_clip``: an open_clip model, so the offline ``dvlm-tiny`` and the
paper's ResNet-50 → 768 / Bio_ClinicalBERT recipe are one code path); the clip embedding is the mean
of the frame embeddings (``FramePoolingTower``; attention pooling optional). The paper recipe is
the open_clip config ``surgvlp-rn50-bioclinicalbert`` shipped beside this module: timm ResNet-50,
global average pool, linear 2048→768; BERT with mean pooling over tokens and no projection (the
reference sums BERT's last 4 layers before the mean; open_clip pools the last layer).
"""

from __future__ import annotations

from pathlib import Path

import open_clip
from domainvlm.core.towers.clip import build_clip
from domainvlm.core.towers.video import FramePoolingTower, Pooling
from torch import Tensor, nn

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_surgical_configs() -> None:
    names = {path.stem for path in MODEL_CONFIG_DIR.glob("*.json")}
    if not names <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


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
