"""RS-M-CLIP: multilingual CLIP fine-tuning for remote sensing with DINO self-distillation.

``L = L_clip + λ·L_sd``: the symmetric InfoNCE between images and captions (any of the ten
languages per step) plus DINO self-distillation, where the student image tower sees global and
local crops and an EMA teacher sees the global crops only (DESIGN.md §5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from core.ema import EMATeacher
from core.encoder import Encoder
from core.losses import DINOLoss, LogitScale, clip_loss
from core.system import BaseSystem
from core.tokenizers import build_tokenizer
from core.towers.clip import build_clip
from core.towers.heads import DINOHead
from core.towers.vit_sizes import encode_any_size
from core.transforms import ImageTransform
from domains.remote_sensing.io import read_raster


class DistillationTower(nn.Module):
    """Image tower + DINO head: the part of the student the EMA teacher mirrors."""

    def __init__(self, visual: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.visual = visual
        self.head = head

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        embedding = encode_any_size(self.visual, images)
        return embedding, self.head(embedding)


class RSMCLIP(BaseSystem):
    def __init__(
        self,
        model_name: str = "dvlm-tiny",
        pretrained: str | None = None,
        hf_text_dir: str | None = None,
        tokenizer: str = "multilingual",
        context_length: int = 96,
        in_chans: int = 3,
        distill_weight: float = 1.0,
        dino_out_dim: int = 1024,
        dino_hidden: int = 512,
        dino_bottleneck: int = 128,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 1,
        center_momentum: float = 0.9,
        ema_momentum: float = 0.996,
        ema_final_momentum: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            model_name: open_clip or domainvlm model config (``dvlm-tiny``, ``xlm-roberta-base-ViT-B-32``).
            pretrained: OpenCLIP tag, local weights file, or none (train from scratch).
            hf_text_dir: local Hugging Face folder for an HF text tower (offline use).
            tokenizer: ``multilingual`` (offline byte-level), ``openclip:<model>`` or ``hf:<dir>``.
            context_length: text tokens per caption.
            in_chans: image bands (3 = RGB; 4 = RGB + NIR; 13 = all Sentinel-2 bands).
            distill_weight: λ, the weight of self-distillation (0 turns it off).
            dino_out_dim: DINO prototypes.
            dino_hidden: DINO head hidden width.
            dino_bottleneck: DINO head bottleneck width.
            student_temp: τ_s.
            teacher_temp: τ_t after warmup.
            warmup_teacher_temp: τ_t at the start.
            warmup_teacher_temp_epochs: epochs of linear τ_t warmup.
            center_momentum: momentum of the teacher centre.
            ema_momentum: EMA momentum of the teacher at the start (cosine ramp to the final value).
            ema_final_momentum: EMA momentum at the end of training.
        """
        super().__init__(**kwargs)
        self.model, model_preprocessing = build_clip(
            model_name, pretrained, in_chans=in_chans, hf_text_dir=hf_text_dir
        )
        self.preprocessing = {**model_preprocessing, **self.preprocessing}
        self.tokenizer = build_tokenizer(tokenizer, context_length)
        # Our clamped scale replaces open_clip's so the 100 cap holds; it starts from its value.
        self.logit_scale = LogitScale(float(self.model.logit_scale.detach().exp()))
        self.model.logit_scale.requires_grad_(False)
        self.distill_weight = distill_weight
        if distill_weight > 0:
            head = DINOHead(
                self.model.visual.output_dim, dino_out_dim, dino_hidden, dino_bottleneck
            )
            self.student = DistillationTower(self.model.visual, head)
            self.teacher = EMATeacher(self.student, ema_momentum, ema_final_momentum)
            self.dino_loss = DINOLoss(
                dino_out_dim,
                student_temp,
                teacher_temp,
                warmup_teacher_temp,
                warmup_teacher_temp_epochs,
                center_momentum,
            )

    def encode_image(self, images: Tensor) -> Tensor:
        return self.model.encode_image(images)

    def encode_text(self, texts: list[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))

    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        views = batch["image"] if isinstance(batch["image"], list) else [batch["image"]]
        text = F.normalize(self.encode_text(batch["text"]), dim=-1)
        distill = self.distill_weight > 0 and stage == "train" and len(views) > 1
        if distill:
            student = [self.student(view) for view in views]
            image = F.normalize(student[0][0], dim=-1)
        else:
            image = F.normalize(self.encode_image(views[0]), dim=-1)
        losses = {"clip": clip_loss(image, text, self.logit_scale())}
        if distill:
            n_global = self.preprocessing.get("n_global_crops", 2)
            teacher = [self.teacher(view)[1] for view in views[:n_global]]
            losses["self_distillation"] = self.dino_loss(
                [out[1] for out in student], teacher, self.current_epoch
            )
            losses["loss"] = losses["clip"] + self.distill_weight * losses["self_distillation"]
        else:
            losses["loss"] = losses["clip"]
        losses["logit_scale"] = self.logit_scale().detach()
        return losses

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.distill_weight > 0:
            total = int(self.trainer.estimated_stepping_batches)
            self.teacher.update(self.student, self.global_step, total)

    def encoder(self) -> Encoder:
        pre = self.preprocessing
        transform = ImageTransform(
            pre["image_size"],
            pre["mean"],
            pre["std"],
            max_pixel_value=pre.get("max_pixel_value", 255.0),
        )
        bands = pre.get("bands")

        def load_image(path: str | Path) -> Tensor:
            return transform(read_raster(path, bands).array)

        return Encoder(
            name=f"remote_sensing:{self.hparams.model_name}",
            image_fn=self.encode_image,
            text_fn=self.encode_text,
            load_image=load_image,
            modules=[self.model],
            preprocessing=dict(pre),
        )
