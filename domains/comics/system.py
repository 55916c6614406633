"""The comics system: panel↔text dual encoder, character-crop identity and closure scoring.

``L = L_clip + λ_char·L_character + λ_closure·L_closure``:

- ``L_clip``: symmetric InfoNCE (core ``clip_loss``) between panel crops and their dialogue;
- ``L_character``: supervised contrastive loss on character crops through the same image tower,
  labelled by character id, so crops of one character lie together and a
  character crop finds the panels it appears in;
- ``L_closure``: cross-entropy of the ``ClosureScorer`` picking the true masked panel of a window
  (its image, its text, or its texts in their true order) against panels of the same book. It
  needs panel order only, never cloze labels, and trains the one scorer every closure task uses.
  Plus two choices among copies of the true masked panel re-lettered from the text boxes the
  formats annotate, each the form of a ComicsPAP task: ``λ_swap`` times the cross-entropy of the
  panel against its copy whose first and last text regions trade pixels (who says what: character
  coherence), and ``λ_borrowed`` times that of the panel against two copies lettered with other
  panels' texts (what is said: text closure).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import open_clip
import torch
import torch.nn.functional as F
from domainvlm.core.encoder import Encoder
from domainvlm.core.losses import LogitScale, clip_loss
from domainvlm.core.system import BaseSystem
from domainvlm.core.tokenizers import build_tokenizer
from domainvlm.core.towers.clip import build_clip
from domainvlm.core.towers.tokens import encode_with_patch_tokens
from domainvlm.core.transforms import ImageTransform
from domainvlm.domains.comics.datamodule import MEAN, STD, panel_tensor
from domainvlm.domains.comics.model import IMAGE, TEXT, ClosureScorer, supervised_contrastive_loss
from torch import Tensor

TINY_CONFIG = Path(__file__).with_name("dvlm-comics-tiny.json")
"""``dvlm-comics-tiny``: dvlm-tiny at 48 px with 72 text tokens (panel dialogue is short), so the
offline default trains in minutes on two CPU cores."""
if "dvlm-comics-tiny" not in open_clip.list_models():
    open_clip.add_model_config(TINY_CONFIG)

ImageBatch = Tensor | Sequence[str | Path]
LETTERING = {"swap": (0, 1), "borrowed": (0, 2, 3)}
"""Columns of a batch's ``lettered`` panels each lettering choice offers (0: the true panel)."""


class ComicsCLIP(BaseSystem):
    def __init__(
        self,
        model_name: str = "dvlm-comics-tiny",
        pretrained: str | None = None,
        image_size: int | None = None,
        tokenizer: str = "multilingual",
        context_length: int = 72,
        character_weight: float = 0.5,
        character_temperature: float = 0.1,
        closure_weight: float = 1.0,
        scorer_width: int = 128,
        scorer_layers: int = 2,
        scorer_heads: int = 4,
        max_positions: int = 8,
        text_option_prob: float = 0.35,
        order_option_prob: float = 0.15,
        hint_prob: float = 0.25,
        swap_weight: float = 1.0,
        borrowed_weight: float = 1.0,
        compare_options: bool = True,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            model_name: open_clip or domainvlm model config (``dvlm-comics-tiny``, ``ViT-B-32``).
            pretrained: OpenCLIP tag, local weights file, or none (train from scratch).
            image_size: input side if not the model config's (position embeddings interpolated).
            tokenizer: ``multilingual`` (offline byte-level), ``openclip:<model>`` or ``hf:<dir>``.
            context_length: text tokens per panel dialogue.
            character_weight: λ_char (0 turns the character loss off).
            character_temperature: temperature of the character SupCon loss.
            closure_weight: λ_closure (0 turns the closure scorer's training off).
            scorer_width: width of the closure scorer's transformer.
            scorer_layers: its layers.
            scorer_heads: its attention heads.
            max_positions: longest panel sequence (context + the masked panel) it can score.
            text_option_prob: share of training steps whose options are texts (text cloze).
            order_option_prob: share whose options are one panel's texts in true vs reversed
                order (character coherence).
            hint_prob: chance that a step shows the masked panel's other modality as a hint.
            swap_weight: λ_swap, weight of the swapped-texts choice in the closure loss (0 off).
            borrowed_weight: λ_borrowed, weight of the borrowed-texts choice (0 off).
            compare_options: let the scorer compare panel options patch by patch where they
                differ (needs a ViT image tower; off: pooled embeddings only, for ablation).
        """
        super().__init__(**kwargs)
        self.model, model_preprocessing = build_clip(model_name, pretrained, image_size=image_size)
        self.preprocessing = {**model_preprocessing, **self.preprocessing}
        self.tokenizer = build_tokenizer(tokenizer, context_length)
        self.logit_scale = LogitScale(float(self.model.logit_scale.detach().exp()))
        self.model.logit_scale.requires_grad_(False)
        visual = self.model.visual
        compare = compare_options and hasattr(visual, "output_tokens")
        self.scorer = ClosureScorer(
            visual.output_dim,
            scorer_width,
            scorer_layers,
            scorer_heads,
            max_positions,
            patch_dim=visual.transformer.width if compare else None,
        )

    # -- embeddings ------------------------------------------------------------------------------
    def encode_image(self, images: Tensor) -> Tensor:
        return self.model.encode_image(images)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))

    def encode_options(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Unit embeddings of panel options ``[..., C, H, W]`` and, when the scorer compares
        options, their patch tokens ``[..., N, P]``."""
        lead, flat = images.shape[:-3], images.flatten(0, images.dim() - 4)
        if self.scorer.focus is None:
            return F.normalize(self.encode_image(flat), dim=-1).view(*lead, -1), None
        embedding, patches = encode_with_patch_tokens(self.model.visual, flat)
        return (
            F.normalize(embedding, dim=-1).view(*lead, -1),
            patches.view(*lead, *patches.shape[1:]),
        )

    def image_transform(self) -> ImageTransform:
        pre = self.preprocessing
        return ImageTransform(pre.get("image_size", 64), pre.get("mean", MEAN), pre.get("std", STD))

    def encoder(self) -> Encoder:
        transform = self.image_transform()

        def load_image(path: str | Path) -> Tensor:
            return panel_tensor(path, transform)

        return Encoder(
            name=f"comics:{self.hparams.model_name}",
            image_fn=self.encode_image,
            text_fn=self.encode_text,
            load_image=load_image,
            modules=[self.model],
            preprocessing=dict(self.preprocessing),
        )

    # -- training --------------------------------------------------------------------------------
    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        panels = batch["panels"]  # [B, K+1, C, H, W]
        size, length = panels.shape[0], panels.shape[1]
        images = F.normalize(self.encode_image(panels.flatten(0, 1)), dim=-1).view(size, length, -1)
        texts = [text for window in batch["texts"] for text in window]
        text_emb = F.normalize(self.encode_text(texts), dim=-1).view(size, length, -1)
        keep = _first_occurrences([pid for window in batch["panel_ids"] for pid in window])
        losses = {
            "clip": clip_loss(
                images.flatten(0, 1)[keep], text_emb.flatten(0, 1)[keep], self.logit_scale()
            )
        }
        loss = losses["clip"]
        if self.hparams.character_weight > 0:
            crops = batch["characters"].flatten(0, 1)
            ids = batch["character_ids"].flatten()
            valid = ids >= 0
            embedded = (
                self.encode_image(crops[valid])
                if valid.any()
                else crops.new_zeros(0, images.shape[-1])
            )
            losses["character"] = supervised_contrastive_loss(
                embedded, ids[valid], self.hparams.character_temperature
            )
            loss = loss + self.hparams.character_weight * losses["character"]
        if self.hparams.closure_weight > 0:
            logits, labels = self._closure_logits(batch, images, text_emb, stage)
            losses["closure"] = F.cross_entropy(logits, labels)
            losses["closure_accuracy"] = (logits.argmax(1) == labels).float().mean().detach()
            closure = losses["closure"]
            for name, (logits, labels) in self._lettering_logits(
                batch, images, text_emb, stage
            ).items():
                losses[f"closure_{name}"] = F.cross_entropy(logits, labels)
                losses[f"{name}_accuracy"] = (logits.argmax(1) == labels).float().mean().detach()
                closure = closure + self.hparams[f"{name}_weight"] * losses[f"closure_{name}"]
            loss = loss + self.hparams.closure_weight * closure
        losses["loss"] = loss
        losses["logit_scale"] = self.logit_scale().detach()
        return losses

    def _closure_logits(
        self, batch: dict, images: Tensor, texts: Tensor, stage: str
    ) -> tuple[Tensor, Tensor]:
        """One kind of option per step: panels, texts, or a panel's texts in two orders."""
        size, length, _ = images.shape
        target = batch["target"].to(images.device)
        draw = torch.rand(()).item() if stage == "train" else (batch["target"].sum().item() % 3) / 3
        order_rows = batch["has_order"].to(images.device)
        kind = "image"
        if draw < self.hparams.text_option_prob:
            kind = "text"
        elif (
            draw < self.hparams.text_option_prob + self.hparams.order_option_prob
            and order_rows.any()
        ):
            kind = "order"
        rows = torch.arange(size, device=images.device)
        positions = torch.arange(length, device=images.device).expand(size, -1)
        context_mask = positions != target[:, None]
        context_positions = positions[context_mask].view(size, length - 1)
        context_images = images[context_mask].view(size, length - 1, -1)
        context_texts = texts[context_mask].view(size, length - 1, -1)
        if stage == "train" and torch.rand(()).item() < 0.3:
            context_texts = torch.zeros_like(context_texts)  # tasks without texts (ComicsPAP)
        patches = None
        if kind == "image":
            panels = torch.cat([batch["panels"][rows, target][:, None], batch["negatives"]], dim=1)
            options, patches = self.encode_options(panels)
            hint = texts[rows, target]
        elif kind == "text":
            wrong_texts = [t for window in batch["negative_texts"] for t in window]
            wrong = F.normalize(self.encode_text(wrong_texts), dim=-1).view(
                size, -1, texts.shape[-1]
            )
            options = torch.cat([texts[rows, target][:, None], wrong], dim=1)
            hint = images[rows, target]
        else:
            keep = order_rows.nonzero().flatten()
            reordered = F.normalize(
                self.encode_text([batch["reordered_text"][i] for i in keep.tolist()]), dim=-1
            )
            options = torch.stack([texts[keep, target[keep]], reordered], dim=1)
            hint = images[keep, target[keep]]
            rows, target = keep, target[keep]
            context_images, context_texts, context_positions = (
                context_images[keep],
                context_texts[keep],
                context_positions[keep],
            )
        count = options.shape[1]
        generator = torch.Generator().manual_seed(
            int(batch["target"].sum()) if stage != "train" else int(torch.randint(1 << 30, ()))
        )
        order = torch.stack(
            [torch.randperm(count, generator=generator) for _ in range(len(rows))]
        ).to(images.device)
        options = options.gather(1, order[:, :, None].expand(-1, -1, options.shape[-1]))
        if patches is not None:
            patches = patches.gather(1, order[:, :, None, None].expand(-1, -1, *patches.shape[2:]))
        labels = (order == 0).float().argmax(dim=1)
        hint_mask = torch.rand(len(rows), device=images.device) < (
            1.0 if kind == "order" else self.hparams.hint_prob
        )
        logits = self.scorer(
            context_images,
            context_texts,
            context_positions,
            options,
            TEXT if kind != "image" else IMAGE,
            target,
            hint,
            hint_mask,
            patches,
        )
        return logits, labels

    def _lettering_logits(
        self, batch: dict, images: Tensor, texts: Tensor, stage: str
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Per lettering choice (``swap``, ``borrowed``): the true masked panel against its
        re-lettered copies in the window's context, as (logits, labels)."""
        weights = {name: self.hparams[f"{name}_weight"] for name in LETTERING}
        if "lettered" not in batch or not any(weights.values()):
            return {}
        valid = {
            name: batch[f"has_{name}"].to(images.device) & (weights[name] > 0) for name in LETTERING
        }
        rows = (valid["swap"] | valid["borrowed"]).nonzero().flatten()
        if not len(rows):
            return {}
        options, patches = self.encode_options(batch["lettered"].to(images.device)[rows])
        target = batch["target"].to(images.device)
        found = {}
        for name, columns in LETTERING.items():
            keep = valid[name][rows].nonzero().flatten()
            if not len(keep):
                continue
            count = len(columns)
            if stage == "train":
                order = torch.stack([torch.randperm(count) for _ in range(len(keep))])
            else:  # fixed orders, so validation is comparable across epochs
                order = torch.stack([torch.arange(count).roll(i) for i in range(len(keep))])
            order = torch.tensor(columns)[order].to(images.device)
            chosen = options[keep][torch.arange(len(keep))[:, None], order]
            chosen_patches = (
                None if patches is None else patches[keep][torch.arange(len(keep))[:, None], order]
            )
            logits = self._score_in_context(
                images, texts, rows[keep], target[rows[keep]], stage, chosen, chosen_patches
            )
            found[name] = (logits, (order == 0).float().argmax(dim=1))
        return found

    def _score_in_context(
        self,
        images: Tensor,
        texts: Tensor,
        rows: Tensor,
        target: Tensor,
        stage: str,
        options: Tensor,
        patches: Tensor | None,
    ) -> Tensor:
        """Panel options scored at each row's masked position among its window's other panels
        (their texts hidden in 30 % of training steps, as ComicsPAP gives none)."""
        length = images.shape[1]
        positions = torch.arange(length, device=images.device).expand(len(rows), -1)
        context_mask = positions != target[:, None]
        context_texts = texts[rows][context_mask].view(len(rows), length - 1, -1)
        if stage == "train" and torch.rand(()).item() < 0.3:
            context_texts = torch.zeros_like(context_texts)
        return self.scorer(
            images[rows][context_mask].view(len(rows), length - 1, -1),
            context_texts,
            positions[context_mask].view(len(rows), length - 1),
            options,
            IMAGE,
            target,
            texts[rows, target],
            torch.rand(len(rows), device=images.device) < self.hparams.hint_prob,
            patches,
        )

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def score(
        self,
        context_panels: ImageBatch,
        options: ImageBatch | Sequence[str],
        context_texts: Sequence[str] | None = None,
        mask_index: int | None = None,
        option_kind: Literal["image", "text"] | None = None,
        target_image: str | Path | Tensor | None = None,
        target_text: str | None = None,
    ) -> Tensor:
        """Logits ``[len(options)]``: how well each option fills the masked panel of the sequence.

        Args:
            context_panels: panel images (a ``[K, C, H, W]`` tensor, or files / ``#xywh=`` crops).
            options: candidate panels (tensor or paths) or candidate texts.
            context_texts: each context panel's text ("" for none).
            mask_index: position of the missing panel among ``K + 1`` (default: after the last).
            option_kind: ``image`` or ``text``; by default a tensor or ``Path`` list is images and
                a list of ``str`` is texts.
            target_image: for text options, the panel whose text is asked (COMICS shows it).
            target_text: for image options, the missing panel's text when the task gives it.
        """
        kind = option_kind or (
            "image"
            if isinstance(options, Tensor) or any(isinstance(o, Path) for o in options)
            else "text"
        )
        context = self._embed_images(context_panels)
        count = len(context)
        mask_index = count if mask_index is None else mask_index
        if not 0 <= mask_index <= count:
            raise ValueError(f"mask_index {mask_index} is outside 0..{count}")
        texts = None
        if context_texts is not None:
            if len(context_texts) != count:
                raise ValueError(f"{len(context_texts)} context texts for {count} context panels")
            texts = self._embed_texts(context_texts)
        positions = torch.tensor(
            [i if i < mask_index else i + 1 for i in range(count)], device=self.device
        )
        patches = None
        if kind == "image":
            option_emb, patches = self.encode_options(self._image_batch(options))
            hint = self._embed_texts([target_text]) if target_text else None
        else:
            option_emb = self._embed_texts(list(options))
            hint = (
                self._embed_images(
                    [target_image] if not isinstance(target_image, Tensor) else target_image[None]
                )
                if target_image is not None
                else None
            )
        logits = self.scorer(
            context[None],
            None if texts is None else texts[None],
            positions[None],
            option_emb[None],
            IMAGE if kind == "image" else TEXT,
            torch.tensor([mask_index], device=self.device),
            hint,
            option_patches=None if patches is None else patches[None],
        )
        return logits[0].cpu()

    def _image_batch(self, images: ImageBatch) -> Tensor:
        if not isinstance(images, Tensor):
            images = torch.stack([self._load(str(image)) for image in images])
        return images.to(self.device)

    def _embed_images(self, images: ImageBatch) -> Tensor:
        return F.normalize(self.encode_image(self._image_batch(images)), dim=-1)

    def _embed_texts(self, texts: Sequence[str]) -> Tensor:
        embedded = F.normalize(self.encode_text(list(texts)), dim=-1)
        empty = torch.tensor([not text for text in texts], device=embedded.device)
        return embedded.masked_fill(empty[:, None], 0.0)

    def _load(self, address: str) -> Tensor:
        if not hasattr(self, "_cached_loader"):
            transform = self.image_transform()
            self._cached_loader = lru_cache(maxsize=4096)(lambda a: panel_tensor(a, transform))
        return self._cached_loader(address)


def _first_occurrences(ids: list[str]) -> list[int]:
    """Indexes of the first row of each panel: overlapping windows repeat panels, and a repeated
    panel would be its own negative in the contrastive loss."""
    seen: set[str] = set()
    keep = []
    for index, ident in enumerate(ids):
        if ident not in seen:
            seen.add(ident)
            keep.append(index)
    return keep
