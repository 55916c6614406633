"""The page-detection system: trains ``detection_model``'s FCOS on pages and reports COCO AP.

The loss is FCOS's (focal classification + GIoU regression + centre-ness), with the classes a
page's format does not annotate left out. Validation runs the detector as at inference and logs
COCO AP50 per class and its mean (``val/AP50``, what the checkpoint callback keeps the best of);
``domainvlm test`` logs the same under ``test/``.
Pretrained weights come from local files only, and only when the system is built for training:
the checkpoint then carries them in its state dict and does not name the files again.
"""

from __future__ import annotations

from typing import Any

import torch
from domainvlm.core.system import CHECKPOINT_KEY, BaseSystem
from domainvlm.domains.comics.datamodule import MEAN, STD
from domainvlm.domains.comics.detection import DETECTION_CLASSES, one_label_per_object
from domainvlm.domains.comics.detection_data import PageTargets
from domainvlm.domains.comics.detection_metrics import (
    coco_ground_truth,
    coco_results,
    evaluate_detections,
)
from domainvlm.domains.comics.detection_model import build_detector, load_weights_file
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""torchvision's ResNet weights expect these; the tiny backbone uses the comics ones."""


class PageDetectionSystem(BaseSystem):
    def __init__(
        self,
        backbone: str = "tiny",
        fpn_channels: int = 64,
        head_convs: int = 2,
        backbone_weights: str | None = None,
        detector_weights: str | None = None,
        score_thresh: float = 0.05,
        detections_per_page: int = 300,
        nms_thresh: float = 0.4,
        freeze_norm: bool | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            backbone: ``tiny`` (from scratch) or ``resnet18``/``resnet34``/``resnet50``.
            fpn_channels: width of the feature pyramid and of the FCOS head.
            head_convs: 3×3 convs per head branch (FCOS uses 4).
            backbone_weights: local state dict of the backbone (a torchvision ResNet file works).
            detector_weights: local state dict or checkpoint of a whole detector of this shape;
                tensors whose name or shape differ (another class count) are left as built.
            score_thresh: lowest score the detector returns (evaluation wants low ones).
            detections_per_page: most boxes per page (COCO AR100 needs at least 100).
            nms_thresh: IoU above which the lower-scored of two boxes of one class is dropped
                (FCOS uses 0.6; panels, texts and faces of a page rarely overlap, so 0.4).
            freeze_norm: ResNet batch norms frozen (default: when a weights file is given, as
                torchvision fine-tunes detectors).
        """
        super().__init__(**kwargs)
        imagenet = backbone != "tiny"
        if freeze_norm is None:
            freeze_norm = imagenet and (backbone_weights or detector_weights) is not None
        self.freeze_norm = freeze_norm
        self.model = build_detector(
            len(DETECTION_CLASSES),
            backbone,
            fpn_channels,
            head_convs,
            IMAGENET_MEAN if imagenet else MEAN,
            IMAGENET_STD if imagenet else STD,
            score_thresh,
            detections_per_page,
            nms_thresh,
            frozen_norm=freeze_norm,
        )
        if detector_weights is not None:
            load_weights_file(self.model, detector_weights, ("model.",))
        if backbone_weights is not None:
            body = self.model.backbone.body
            load_weights_file(body, backbone_weights, ("model.backbone.body.", "backbone.body."))
        self._evaluated: list[tuple[PageTargets, list]] = []

    @property
    def max_side(self) -> int:
        """Longer page side the detector was trained at (from the DataModule)."""
        return int(self.preprocessing.get("max_side", 320))

    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        losses = self.model(batch["images"], batch["targets"])
        return {**losses, "loss": sum(losses.values())}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _collect(self, batch: dict) -> None:
        """Detections as at inference, kept with their targets for COCO AP at the epoch's end."""
        outputs = self.model(batch["images"])
        for image, target, output in zip(batch["images"], batch["targets"], outputs):
            output = one_label_per_object(output)
            classes = tuple(n for n, i in zip(DETECTION_CLASSES, target["ignore"]) if not i)
            page = PageTargets(
                "",
                image.shape[-1],
                image.shape[-2],
                target["boxes"].tolist(),
                target["labels"].tolist(),
                classes,
            )
            found = list(
                zip(output["boxes"].tolist(), output["labels"].tolist(), output["scores"].tolist())
            )
            self._evaluated.append((page, found))

    def _log_metrics(self, stage: str) -> None:
        pages, found = zip(*self._evaluated) if self._evaluated else ((), ())
        self._evaluated = []
        if not pages:
            return
        result = evaluate_detections(coco_ground_truth(pages), coco_results(found))
        for name, row in result["classes"].items():
            if row["AP50"] is not None:
                self.log(f"{stage}/AP50_{name}", row["AP50"])
        self.log(f"{stage}/AP50", result["mean"]["AP50"] or 0.0, prog_bar=True)
        self.log(f"{stage}/AP50-95", result["mean"]["AP50-95"] or 0.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # The loaded weights are in the state dict: rebuilding must not need the files.
        init_args = checkpoint[CHECKPOINT_KEY]["init_args"]
        init_args["backbone_weights"] = init_args["detector_weights"] = None
        init_args["freeze_norm"] = self.freeze_norm

    @torch.no_grad()
    def predict_step(self, batch: dict, batch_idx: int) -> list[dict[str, Tensor]]:
        return self.model(batch["images"])
