"""SurgVLP clip-level pretraining: video clips against two ASR transcripts.

Per view of a clip (the clean clip, then any augmented views): InfoNCE between the clip and its
anchor sentence, optionally NT-Xent (α weights clip→text) and MIL-NCE between the clip and its bag
of second-transcript sentences; with two or more augmented views, SimCLR (NT-Xent) between the first
two. With ``procedure_weight`` (PeskaVLP) and procedure batches from the DataModule, soft-DTW aligns
the frames of whole videos with their keysteps in order, the reversed order as hard negative
(``domainvlm.core.soft_dtw``). HecVL's phase level (keystep spans against keystep texts and their
narration) and video level (whole videos against abstracts and their keysteps) use one
hierarchical loss, each level on its own epoch schedule. Every term has a weight in the config; a
weight of 0 skips its computation. Temperature is fixed (paper: 0.1). Losses come from core.

Inference: a path ``video.mp4#t=S`` is one frame (zero-shot phase recognition classifies frames one
by one); ``video.mp4#t=A,B`` (W3C media-fragment range) is a clip of ``num_frames`` frames spread
over ``[A, B]`` embedded as the mean of its frames (moment search, clip↔sentence retrieval).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from domainvlm.core.encoder import Encoder
from domainvlm.core.images import read_image
from domainvlm.core.losses import clip_loss, mil_nce_loss, nt_xent_loss
from domainvlm.core.soft_dtw import procedure_dtw_loss
from domainvlm.core.system import BaseSystem
from domainvlm.core.tokenizers import build_tokenizer
from domainvlm.core.transforms import ImageTransform, VideoClipTransform
from domainvlm.domains.surgical.model import SurgicalDualEncoder
from domainvlm.domains.surgical.video import decode_at
from torch import Tensor

RANGE = re.compile(r"^(?P<path>.+)#t=(?P<start>\d+(?:\.\d+)?),(?P<end>\d+(?:\.\d+)?)$")


def clip_path(video: str | Path, start: float, end: float) -> str:
    """The path that addresses a clip for ``Encoder.load_image``: ``video.mp4#t=START,END``."""
    return f"{video}#t={start:.3f},{end:.3f}"


class SurgVLP(BaseSystem):
    def __init__(
        self,
        model_name: str = "dvlm-tiny",
        pretrained: str | None = None,
        hf_text_dir: str | None = None,
        tokenizer: str = "multilingual",
        context_length: int = 96,
        pooling: str = "mean",
        temperature: float = 0.1,
        infonce_weight: float = 1.0,
        nt_xent_weight: float = 0.0,
        nt_xent_alpha: float = 0.75,
        mil_nce_weight: float = 1.0,
        mil_nce_temperature: float = 1.0,
        simclr_weight: float = 0.0,
        procedure_weight: float = 0.0,
        procedure_every: int = 1,
        dtw_gamma: float = 0.1,
        dtw_scale: float = 0.01,
        dtw_ratio: float = 0.5,
        dtw_margin: float = 0.0,
        phase_weight: float = 0.0,
        phase_every: int = 3,
        video_weight: float = 0.0,
        video_every: int = 5,
        level_context_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            model_name: open_clip config (``dvlm-tiny``; ``surgvlp-rn50-bioclinicalbert``).
            pretrained: a local open_clip state-dict file, or none (train from scratch).
            hf_text_dir: local Hugging Face folder of the BERT text tower (offline use).
            tokenizer: ``multilingual`` (offline byte-level), ``hf:<dir>``, ``openclip:<model>``.
            context_length: text tokens (SurgVLP: 77).
            pooling: ``mean`` over frames (SurgVLP) or ``attention``.
            temperature: τ of InfoNCE, NT-Xent and SimCLR (SurgVLP: 0.1, fixed).
            infonce_weight: clip ↔ anchor sentence InfoNCE.
            nt_xent_weight: clip ↔ anchor NT-Xent (SurgVLP: on).
            nt_xent_alpha: weight of the clip→text direction of NT-Xent (SurgVLP: 0.75).
            mil_nce_weight: clip ↔ bag MIL-NCE.
            mil_nce_temperature: MIL-NCE divides scores by this (the reference: raw products, 1).
            simclr_weight: NT-Xent between the first two augmented views (needs ``data.views >= 3``
                or 2 augmented views).
            procedure_weight: PeskaVLP's soft-DTW alignment of a whole video's frames with its
                ordered keysteps, reversed order as hard negative (needs ``data.procedure_frames``).
            procedure_every: compute it every this many epochs (HecVL/PeskaVLP schedules).
            dtw_gamma: soft-DTW smoothing γ (PeskaVLP: 0.1).
            dtw_scale: s, the scale of the alignment cost (PeskaVLP: 0.01).
            dtw_ratio: r, the weight of the reversed-order hinge (PeskaVLP: 0.5).
            dtw_margin: β, the hinge margin (PeskaVLP: 0).
            phase_weight: HecVL's phase level (needs ``data.phase_frames``): clips over keystep
                spans against the keystep text and the mean of its narration sentences.
            phase_every: compute it every this many epochs (HecVL: 3).
            video_weight: HecVL's video level (needs ``data.video_frames``): frames over whole
                videos against the abstract and the mean of its keysteps.
            video_every: compute it every this many epochs (HecVL: 5).
            level_context_length: text tokens of the phase and video levels' parents and children
                (HecVL: 200); none = ``context_length``.
        """
        super().__init__(**kwargs)
        self.model = SurgicalDualEncoder(model_name, pretrained, hf_text_dir, pooling)  # type: ignore[arg-type]
        self.tokenizer = build_tokenizer(tokenizer, context_length)
        self.level_tokenizer = (
            build_tokenizer(tokenizer, level_context_length)
            if level_context_length and level_context_length != context_length
            else self.tokenizer
        )
        self.weights = {
            "infonce": infonce_weight,
            "nt_xent": nt_xent_weight,
            "mil_nce": mil_nce_weight,
            "simclr": simclr_weight,
            "procedure": procedure_weight,
            "phase": phase_weight,
            "video": video_weight,
        }

    def encode_text(self, texts: list[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))

    def encode_images(self, images: Tensor) -> Tensor:
        """Frames ``[N, C, H, W]`` or clips ``[B, T, C, H, W]`` (mean of frames)."""
        return (
            self.model.encode_clips(images)
            if images.ndim == 5
            else self.model.encode_frames(images)
        )

    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        hp = self.hparams
        procedure = batch.get("procedure") if "clips" in batch else None
        levels = {name: batch.get(name) for name in ("phase", "video")} if "clips" in batch else {}
        batch = batch.get("clips", batch)
        views = batch["frames"] if isinstance(batch["frames"], list) else [batch["frames"]]
        text = F.normalize(self.encode_text(batch["text"]), dim=-1)
        bag = None
        if self.weights["mil_nce"] > 0:
            size = len(batch["bag"][0])
            flat = [sentence for sentences in batch["bag"] for sentence in sentences]
            bag = F.normalize(self.encode_text(flat), dim=-1).reshape(len(batch["bag"]), size, -1)
        terms: dict[str, list[Tensor]] = {name: [] for name in ("infonce", "nt_xent", "mil_nce")}
        embedded = []
        for view in views:
            video = F.normalize(self.model.encode_clips(view), dim=-1)
            embedded.append(video)
            if self.weights["infonce"] > 0:
                terms["infonce"].append(clip_loss(video, text, torch.tensor(1.0 / hp.temperature)))
            if self.weights["nt_xent"] > 0:
                terms["nt_xent"].append(nt_xent_loss(video, text, hp.temperature, hp.nt_xent_alpha))
            if bag is not None:
                terms["mil_nce"].append(
                    mil_nce_loss(video, bag, batch["bag_mask"], hp.mil_nce_temperature)
                )
        losses = {name: torch.stack(values).mean() for name, values in terms.items() if values}
        if self.weights["simclr"] > 0 and len(embedded) >= 3:
            losses["simclr"] = nt_xent_loss(embedded[1], embedded[2], hp.temperature)
        if (
            procedure is not None
            and self.weights["procedure"] > 0
            and self.every(hp.procedure_every)
        ):
            losses["procedure"] = self.procedure_loss(procedure)
        for name, every in (("phase", hp.phase_every), ("video", hp.video_every)):
            level = levels.get(name)
            if level is not None and self.weights[name] > 0 and self.every(every):
                losses[name] = self.hierarchical_loss(level)
        losses["loss"] = sum(self.weights[name] * value for name, value in losses.items())
        return losses

    def every(self, epochs: int) -> bool:
        """True on the epochs a term with this period runs (always outside a Trainer)."""
        return self._trainer is None or self.current_epoch % epochs == 0

    def encode_level_text(self, texts: list[str]) -> Tensor:
        return self.model.encode_text(self.level_tokenizer(list(texts)).to(self.device))

    def hierarchical_loss(self, batch: dict) -> Tensor:
        """HecVL, at the phase level (parent = keystep, children = its narration) and the video
        level (parent = abstract, children = keysteps): [InfoNCE(v, parent) + NT-Xent(v, parent) +
        InfoNCE(v, children) + InfoNCE(parent, children)] / 4, children = the normalised mean of
        their normalised embeddings."""
        hp = self.hparams
        scale = torch.tensor(1.0 / hp.temperature)
        video = F.normalize(self.model.encode_clips(batch["frames"]), dim=-1)
        parent = F.normalize(self.encode_level_text(batch["parent"]), dim=-1)
        count = len(batch["children"][0])
        flat = [text for texts in batch["children"] for text in texts]
        children = F.normalize(self.encode_level_text(flat), dim=-1)
        children = children.reshape(len(parent), count, -1)
        children = F.normalize(children.mean(dim=1), dim=-1)
        terms = (
            clip_loss(video, parent, scale),
            nt_xent_loss(video, parent, hp.temperature, hp.nt_xent_alpha),
            clip_loss(video, children, scale),
            clip_loss(parent, children, scale),
        )
        return sum(terms) / 4

    def procedure_loss(self, batch: dict) -> Tensor:
        """Mean over videos of soft-DTW(frames, ordered keysteps) with the reversed-order hinge."""
        hp = self.hparams
        frames = self.model.encode_frames(batch["frames"].flatten(0, 1))
        frames = frames.reshape(*batch["frames"].shape[:2], -1)
        values = []
        for video, steps in zip(frames, batch["steps"]):
            text = self.encode_text(steps)
            values.append(
                procedure_dtw_loss(
                    video, text, hp.dtw_gamma, hp.dtw_scale, hp.dtw_ratio, hp.dtw_margin
                )
            )
        return torch.stack(values).mean()

    def encoder(self) -> Encoder:
        pre = self.preprocessing
        size = pre.get("image_size", self.model.preprocessing["image_size"])
        mean = pre.get("mean", self.model.preprocessing["mean"])
        std = pre.get("std", self.model.preprocessing["std"])
        frame_transform = ImageTransform(size, mean, std)
        clip_transform = VideoClipTransform(size, mean, std)
        num_frames = int(pre.get("num_frames", 4))

        def load_image(path: str | Path) -> Tensor:
            match = RANGE.match(str(path))
            if match is None:
                return frame_transform(read_image(path)[..., :3])
            start, end = float(match["start"]), float(match["end"])
            times = np.linspace(start, end, num_frames)
            return clip_transform(decode_at(match["path"], times))

        return Encoder(
            name=f"surgical:{self.hparams.model_name}",
            image_fn=self.encode_images,
            text_fn=self.encode_text,
            load_image=load_image,
            modules=[self.model],
            preprocessing=dict(pre),
        )
