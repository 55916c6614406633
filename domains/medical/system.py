"""M3AE pretraining (MLM + MIM + ITM) and VQA fine-tuning as LightningModules (docs/medical.md).

Two ways to run the pretraining objectives (``passes``):

* ``reference`` (default, and what the paper configs use) — the authors' three forward passes per
  step, which is M3AE's objective: MLM sees the full image and masked text, MIM the masked image
  (75 %) and clean text, ITM full images (half swapped) and clean text.
* ``joint`` — a cheaper variant with a different objective: one pass, the image tower runs once
  on the visible 25 % of patches and the text tower once on the masked text; the fusion layers
  take those matched rows plus one extra row per ITM negative (the row's masked text with another
  row's visible patches). MIM reads the matched rows after fusion layer k, MLM their final text
  stream, ITM the positives among them and the extra rows. A step costs 2.5x (tiny config) to
  4.4x (256-patch model) less (benchmarks/RESULTS.md), as no tower ever sees a full image, but
  each loss sees a more corrupted partner (MLM a masked image, MIM masked text, ITM both masked):
  small findings are hidden from MLM and ITM whenever their patches are masked, and the ITM head
  never sees a clean pair in training, so its scores on clean pairs are less calibrated. The
  offline tiny configs use it; docs/paper_configs.md and benchmarks/RESULTS.md give its measured
  cost and quality against ``reference``.

An optional contrastive loss (``loss_weights: {itc: w}``; off by default, as M3AE has none) aligns
the pooled outputs of the image and text towers, as ALBEF does before fusing. Without it those
embeddings share no space, so a FAISS shortlist over them (report retrieval, the knowledge base)
is no better than chance. It needs no extra pass: in the joint pass it reads the visible patches
and the masked text, in the reference passes the whole image and the clean text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from domainvlm.core.encoder import Encoder
from domainvlm.core.images import read_image
from domainvlm.core.init_from import load_init_from
from domainvlm.core.losses import LogitScale, clip_loss, itm_loss, mae_loss, mlm_loss
from domainvlm.core.system import BaseSystem
from domainvlm.core.tokenizers import IGNORE_INDEX, build_tokenizer, whole_word_mask
from domainvlm.core.towers.heads import ClassifierHead
from domainvlm.core.towers.mae import patchify
from domainvlm.core.transforms import ImageTransform
from domainvlm.domains.medical.datamodule import CLIP_MEAN, CLIP_STD
from domainvlm.domains.medical.dicom import IMAGE_READER, image_reader
from domainvlm.domains.medical.model import (
    M3AEBackbone,
    MLMHead,
    PixelDecoder,
    itm_pairs,
    vision_architecture,
)
from domainvlm.retrieval_db import Hit, KnowledgeBase
from torch import Tensor
from torchmetrics import Metric

EVAL_SEED = 0
"""Validation masks and ITM pairs are drawn from this seed, so validation losses are comparable."""

LOSSES = ("mlm", "mim", "itm", "itc")

SHARED_HPARAMS = ("tokenizer", "text_backbone", "vision_backbone", "hidden", "fusion_layers")
"""Checked before loading `init_from`; size mismatches are caught by the strict weight load."""


def pool_image(tokens: Tensor) -> Tensor:
    """``[B, hidden]``: the mean of the image tower's projected tokens (visible ones if masked)."""
    return tokens.mean(dim=1)


def pool_text(tokens: Tensor, padding: Tensor) -> Tensor:
    """``[B, hidden]``: the mean over the real (non-pad) tokens of the text tower, projected."""
    keep = (~padding).unsqueeze(-1).float()
    return (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


class M3AESystem(BaseSystem):
    """The backbone and tokenizer shared by pretraining and fine-tuning.

    Defaults are the sizes of the offline tiny configs; ``configs/medical/m3ae_base.yaml`` has the
    paper's.
    """

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
        tokenizer: str = "multilingual",
        context_length: int = 128,
        text_width: int = 64,
        text_depth: int = 2,
        text_heads: int = 4,
        hidden: int = 64,
        fusion_layers: int = 2,
        fusion_heads: int = 4,
        mlp_ratio: float = 4.0,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            image_size: input side (pretraining and VQA may differ: positions are resampled).
            patch: ViT patch side.
            in_chans: image channels (3: grayscale is repeated by the reader).
            vision_width: ViT width.
            vision_depth: ViT blocks.
            vision_heads: ViT attention heads.
            vision_backbone: ``builtin`` (a ViT of the sizes above, random weights, fixed sin-cos
                positions) or ``openclip:<model>[:<tag or weights file>]``, an open_clip ViT
                (``openclip:ViT-B-16-quickgelu:openai``, the paper's start) whose sizes come
                from its config and whose weights, if named, load when ``fit`` starts.
            text_backbone: ``builtin``, ``roberta`` (random weights) or ``hf:<local folder>``.
            tokenizer: ``multilingual`` (offline bytes) or ``hf:<folder>`` (RoBERTa's BPE).
            context_length: text tokens (M3AE: 64 subwords).
            text_width: text tower width (ignored for ``hf:`` towers).
            text_depth: text tower blocks.
            text_heads: text tower attention heads.
            hidden: fusion width.
            fusion_layers: co-attention layers per stream (M3AE: 6).
            fusion_heads: fusion attention heads.
            mlp_ratio: MLP width over model width in every block.
        """
        super().__init__(**kwargs)
        self.tokenizer = build_tokenizer(tokenizer, context_length)
        self.backbone = M3AEBackbone(
            image_size=image_size,
            patch=patch,
            in_chans=in_chans,
            vision_width=vision_width,
            vision_depth=vision_depth,
            vision_heads=vision_heads,
            vision_backbone=vision_backbone,
            text_backbone=text_backbone,
            vocab_size=self.tokenizer.vocab_size,
            text_width=text_width,
            text_depth=text_depth,
            text_heads=text_heads,
            context_length=context_length,
            pad_id=self.tokenizer.pad_id,
            hidden=hidden,
            fusion_layers=fusion_layers,
            fusion_heads=fusion_heads,
            mlp_ratio=mlp_ratio,
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.load_start_weights()

    def load_start_weights(self) -> None:
        """The image tower's CLIP weights, if ``vision_backbone`` names them (a resumed fit then
        restores its own weights over them); rebuilding a checkpoint never reads them."""
        self.backbone.load_vision_weights()

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Ids cut after the batch's longest text: padding is masked out, so results are equal
        and short questions do not pay for the full context length."""
        ids = self.tokenizer(list(texts))
        length = int((ids != self.tokenizer.pad_id).sum(dim=1).max()) if len(ids) else 0
        return ids[:, : max(length, 1)].to(self.device)

    def fused_pooled(self, images: Tensor, ids: Tensor) -> Tensor:
        """``[B, 2·hidden]`` for whole images and clean (or masked) texts, row by row."""
        image, _, _ = self.backbone.encode_image(images)
        text, padding = self.backbone.encode_text(ids)
        image, text, _ = self.backbone.fuse(image, text, padding)
        return self.backbone.pool(image, text)

    def image_loader(self, frame: int = 0) -> Callable[[str | Path], Tensor]:
        """File → model input, with the preprocessing of training (the DataModule's defaults
        when the system never saw one); ``frame`` picks a frame of a multi-frame DICOM."""
        pre = self.preprocessing
        transform = ImageTransform(
            pre.get("image_size", self.hparams.image_size),
            pre.get("mean", CLIP_MEAN),
            pre.get("std", CLIP_STD),
            max_pixel_value=pre.get("max_pixel_value", 255.0),
        )

        def load_image(path: str | Path) -> Tensor:
            reader = IMAGE_READER if frame == 0 else replace(IMAGE_READER, read=framed)
            return transform(read_image(path, reader=reader))

        def framed(path: Path) -> np.ndarray:
            return image_reader(path, frame)

        return load_image


class M3AEPretrainSystem(M3AESystem):
    """Masked image + masked text modelling with image-text matching; loss = MLM + MIM + ITM."""

    def __init__(
        self,
        passes: Literal["reference", "joint"] = "reference",
        image_mask_ratio: float = 0.75,
        text_mask_ratio: float = 0.15,
        mim_layer: int | None = None,
        decoder_width: int = 64,
        decoder_depth: int = 1,
        decoder_heads: int = 4,
        norm_pix_loss: bool = True,
        loss_weights: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            passes: ``reference`` (three passes, the authors' objective) or ``joint`` (one pass:
                cheaper, a different objective; see the module docstring).
            image_mask_ratio: fraction of patches hidden from the image tower (0 = none: the
                reconstruction then covers every patch, for timing against masking).
            text_mask_ratio: fraction of words masked (whole-word masking).
            mim_layer: fusion layers the pixel decoder reads after (default: half of them).
            decoder_width: pixel decoder width (M3AE: 384).
            decoder_depth: pixel decoder blocks (M3AE: 4).
            decoder_heads: pixel decoder heads (M3AE: 6).
            norm_pix_loss: reconstruct per-patch normalised pixels (MAE's target).
            loss_weights: ``{"mlm", "mim", "itm", "itc"}`` weights of the total (default 1, 1,
                1 and 0). ``itc`` (not in M3AE) is a contrastive loss between the pooled image and
                text tower outputs: it aligns the embeddings that shortlist candidates for ITM
                re-ranking, which without it share no space.
        """
        super().__init__(**kwargs)
        if passes not in ("joint", "reference"):
            raise ValueError(f"passes must be 'joint' or 'reference', got {passes!r}")
        hp = self.hparams
        fusion_layers = hp.fusion_layers
        self.mim_layer = fusion_layers // 2 if mim_layer is None else mim_layer
        if not 0 <= self.mim_layer <= fusion_layers:
            raise ValueError(f"mim_layer must be in [0, {fusion_layers}], got {mim_layer}")
        self.loss_weights = {"mlm": 1.0, "mim": 1.0, "itm": 1.0, "itc": 0.0, **(loss_weights or {})}
        vision = self.backbone.vision
        self.pixel_decoder = PixelDecoder(
            vision.num_patches,
            hp.patch,
            hp.in_chans,
            hp.hidden,
            decoder_width,
            decoder_depth,
            decoder_heads,
        )
        self.mlm_head = MLMHead(hp.hidden, self.tokenizer.vocab_size)
        self.itm_head = torch.nn.Linear(2 * hp.hidden, 2)
        self.logit_scale = LogitScale() if self.loss_weights["itc"] else None

    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        images, texts = batch["image"], batch["text"]
        generator = None if stage == "train" else torch.Generator().manual_seed(EVAL_SEED)
        ids = self.tokenize(texts)
        masked_ids, mlm_labels = whole_word_mask(
            ids, self.tokenizer, self.hparams.text_mask_ratio, generator
        )
        itm_labels, partner = itm_pairs(len(texts), generator)
        itm_labels, partner = itm_labels.to(self.device), partner.to(self.device)
        run = self._joint if self.hparams.passes == "joint" else self._reference
        mlm_text, (pixels, mask), itm_logits, (image_emb, text_emb) = run(
            images, ids, masked_ids, itm_labels, partner, generator
        )
        # The vocabulary projection runs on the masked positions only: the others carry no loss.
        labelled = mlm_labels != IGNORE_INDEX
        mlm_logits = self.mlm_head(mlm_text[labelled])
        target = patchify(images, self.hparams.patch)
        if self.hparams.image_mask_ratio == 0:
            mask = torch.ones_like(mask)
        losses = {
            "mlm": mlm_loss(mlm_logits[None], mlm_labels[labelled][None]),
            "mim": mae_loss(pixels, target, mask, self.hparams.norm_pix_loss),
            "itm": itm_loss(itm_logits, itm_labels),
        }
        if self.logit_scale is not None:
            losses["itc"] = clip_loss(
                F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1), self.logit_scale()
            )
        losses["loss"] = sum(
            self.loss_weights[name] * losses[name] for name in LOSSES if name in losses
        )
        losses["mlm_acc"] = (mlm_logits.argmax(-1) == mlm_labels[labelled]).float().mean()
        losses["itm_acc"] = (itm_logits.argmax(-1) == itm_labels).float().mean()
        return losses

    def _joint(
        self,
        images: Tensor,
        ids: Tensor,
        masked_ids: Tensor,
        itm_labels: Tensor,
        partner: Tensor,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor, tuple[Tensor, Tensor]]:
        batch = images.shape[0]
        image, mask, ids_restore = self.backbone.encode_image(
            images, self.hparams.image_mask_ratio, generator
        )
        text, padding = self.backbone.encode_text(masked_ids)
        negatives = (itm_labels == 0).nonzero().squeeze(1)
        image_out, text_out, image_k = self.backbone.fuse(
            torch.cat([image, image[partner[negatives]]]),
            torch.cat([text, text[negatives]]),
            torch.cat([padding, padding[negatives]]),
            return_image_after=self.mim_layer,
        )
        pixels = self.pixel_decoder(image_k[:batch], ids_restore)
        rows = torch.arange(batch, device=images.device)
        rows[negatives] = batch + torch.arange(len(negatives), device=images.device)
        pooled = self.backbone.pool(image_out, text_out)[rows]
        unimodal = (pool_image(image), pool_text(text, padding))
        return text_out[:batch], (pixels, mask), self.itm_head(pooled), unimodal

    def _reference(
        self,
        images: Tensor,
        ids: Tensor,
        masked_ids: Tensor,
        itm_labels: Tensor,
        partner: Tensor,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor, tuple[Tensor, Tensor]]:
        backbone = self.backbone
        full_image, _, _ = backbone.encode_image(images)
        masked_text, masked_padding = backbone.encode_text(masked_ids)
        _, mlm_text, _ = backbone.fuse(full_image, masked_text, masked_padding)
        visible, mask, ids_restore = backbone.encode_image(
            images, self.hparams.image_mask_ratio, generator
        )
        # The clean text encodes the same for MIM and ITM, so it is computed once.
        text, padding = backbone.encode_text(ids)
        _, _, image_k = backbone.fuse(visible, text, padding, return_image_after=self.mim_layer)
        pixels = self.pixel_decoder(image_k, ids_restore)
        swapped, _, _ = backbone.encode_image(images[partner])
        itm_image, itm_text, _ = backbone.fuse(swapped, text, padding)
        pooled = backbone.pool(itm_image, itm_text)
        unimodal = (pool_image(full_image), pool_text(text, padding))
        return mlm_text, (pixels, mask), self.itm_head(pooled), unimodal

    @torch.no_grad()
    def itm_scores(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        """``[B, T]`` matching logits (log-odds of "matches") for every image-text pair."""
        ids = self.tokenize(texts)
        rows = [torch.zeros(0, len(texts), device=self.device)]
        for image in images.to(self.device):
            logits = self.itm_head(self.fused_pooled(image.expand(len(texts), -1, -1, -1), ids))
            rows.append((logits[:, 1] - logits[:, 0])[None])
        return torch.cat(rows)

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> Tensor:
        """Mean of the image tower's projected tokens: the shortlist embedding for retrieval
        (in one space with ``encode_text`` only when pretrained with the ``itc`` loss)."""
        tokens, _, _ = self.backbone.encode_image(images.to(self.device))
        return pool_image(tokens)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Mean over the real (non-pad) text tokens of the text tower, projected."""
        return pool_text(*self.backbone.encode_text(self.tokenize(texts)))

    def encoder(self) -> Encoder:
        """Embeddings for a FAISS shortlist; ``score_fn`` (the ITM head) for zero-shot and ranking."""
        return Encoder(
            name="medical:m3ae",
            image_fn=self.encode_image,
            text_fn=self.encode_text,
            load_image=self.image_loader(),
            modules=[self.backbone, self.itm_head],
            preprocessing=dict(self.preprocessing),
            score_fn=self.itm_scores,
        )

    def report_knowledge_base(
        self, reports: Sequence[str], records: Sequence[dict] | None = None
    ) -> KnowledgeBase:
        """Reports (or captions) in a FAISS knowledge base, keyed by this model's identity."""
        encoder = self.encoder()
        return KnowledgeBase.from_texts(
            list(reports),
            encoder.encode_texts,
            encoder=encoder.identity(),
            records=records,
            progress=False,
        )

    @torch.no_grad()
    def retrieve_reports(
        self, images: Tensor, knowledge_base: KnowledgeBase, k: int = 5, shortlist: int = 32
    ) -> list[list[Hit]]:
        """Image → report: a shortlist by pooled embeddings, re-ranked by the ITM head.

        The reference scores every image-report pair with ITM (one fusion pass per pair); the
        shortlist bounds that to ``shortlist`` passes per image. Hit scores are ITM log-odds.
        """
        encoder = self.encoder()
        shortlist = max(k, min(shortlist, len(knowledge_base)))
        candidates = knowledge_base.search(
            encoder.encode_images(images).cpu().numpy(), shortlist, encoder=encoder.identity()
        )
        ranked = []
        for image, hits in zip(images, candidates):
            scores = self.itm_scores(image[None], [hit.record["text"] for hit in hits])[0]
            order = scores.argsort(descending=True)[:k].tolist()
            ranked.append([replace(hits[i], score=float(scores[i])) for i in order])
        return ranked


class VQAAccuracy(Metric):
    """Overall, open and closed accuracy, summed over batches (and ranks) before dividing."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("correct_open", "total_open", "correct_closed", "total_closed"):
            self.add_state(name, default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(
        self, predictions: Tensor, answer_index: Tensor, answer_types: Sequence[str]
    ) -> None:
        correct = (predictions == answer_index).float()
        closed = torch.tensor([kind == "closed" for kind in answer_types], device=correct.device)
        if closed.shape != correct.shape:
            raise ValueError(f"{len(answer_types)} answer types for {correct.numel()} predictions")
        self.correct_closed += correct[closed].sum()
        self.total_closed += closed.sum()
        self.correct_open += correct[~closed].sum()
        self.total_open += (~closed).sum()

    def compute(self) -> dict[str, Tensor]:
        """Accuracies of the answer types present (an empty type has no accuracy)."""
        totals = {
            "overall": (
                self.correct_open + self.correct_closed,
                self.total_open + self.total_closed,
            ),
            "open": (self.correct_open, self.total_open),
            "closed": (self.correct_closed, self.total_closed),
        }
        return {name: correct / total for name, (correct, total) in totals.items() if total > 0}


class M3AEVQASystem(M3AESystem):
    """VQA as classification over the training answers, from a pretrained M3AE backbone."""

    def __init__(
        self, classes: list[str] | None = None, init_from: str | None = None, **kwargs: Any
    ) -> None:
        """
        Args:
            classes: the answer vocabulary (default: the DataModule's training answers).
            init_from: an ``M3AEPretrainSystem`` checkpoint whose backbone starts fine-tuning
                (``null`` = from scratch).
        """
        super().__init__(**kwargs)
        self.head = ClassifierHead(2 * self.hparams.hidden, len(classes)) if classes else None
        self.train_accuracy = VQAAccuracy()
        self.val_accuracy = VQAAccuracy()
        self.test_accuracy = VQAAccuracy()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.head is None:
            classes = self.trainer.datamodule.classes()
            self.hparams["classes"] = classes
            self.head = ClassifierHead(2 * self.hparams.hidden, len(classes)).to(self.device)

    def load_start_weights(self) -> None:
        """The ``init_from`` backbone (all of it), else the image tower's CLIP weights."""
        if self.hparams.init_from:
            self.load_backbone(self.hparams.init_from)
        else:
            super().load_start_weights()

    def load_backbone(self, path: str) -> None:
        """The backbone of an ``M3AEPretrainSystem`` checkpoint trained with the same towers."""
        load_init_from(
            path,
            self.backbone,
            "backbone.",
            {key: self.hparams[key] for key in SHARED_HPARAMS},
            compare_as=lambda key, value: (
                vision_architecture(value) if key == "vision_backbone" else value
            ),
        )

    def forward(self, images: Tensor, questions: Sequence[str]) -> Tensor:
        return self.head(self.fused_pooled(images, self.tokenize(questions)))

    @torch.no_grad()
    def answer(self, images: Tensor, questions: Sequence[str]) -> list[str]:
        """The most likely answer from the vocabulary for each (image, question) row."""
        classes = self.hparams.classes
        return [classes[i] for i in self(images.to(self.device), questions).argmax(-1).tolist()]

    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        logits = self(batch["image"], batch["question"])
        answers = batch["answer_index"]
        # M3AE's soft-target BCE, summed over answers; one answer per question here, and an
        # answer outside the vocabulary is an all-zero target.
        targets = F.one_hot(answers.clamp(min=0), logits.shape[1]).float()
        targets[answers < 0] = 0.0
        loss = F.binary_cross_entropy_with_logits(logits, targets) * logits.shape[1]
        self.accuracy(stage).update(logits.argmax(-1), answers, batch["answer_type"])
        return {"loss": loss}

    def accuracy(self, stage: str) -> VQAAccuracy:
        return getattr(self, f"{stage}_accuracy")

    def _log_accuracy(self, stage: str) -> None:
        for name, value in self.accuracy(stage).compute().items():
            self.log(f"{stage}/vqa_{name}_acc", value, prog_bar=name == "overall")
        self.accuracy(stage).reset()

    def on_train_epoch_end(self) -> None:
        self._log_accuracy("train")

    def on_validation_epoch_end(self) -> None:
        self._log_accuracy("val")

    def on_test_epoch_end(self) -> None:
        self._log_accuracy("test")
