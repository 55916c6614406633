"""The page detector as a plain ``nn.Module``: torchvision FCOS on a small backbone with an FPN.

FCOS (anchor-free, one stage, GroupNorm heads) trains from scratch on a few hundred pages on a CPU.
Backbones: ``tiny`` (a five-stage GroupNorm CNN, the offline default) or a torchvision ResNet
(``resnet18``/``34``/``50``), always built with ``weights=None``: nothing is ever downloaded.
Pretrained weights come from local files only (``load_weights_file``): a backbone state dict (a
torchvision ResNet ImageNet file, say) or a whole detector's state dict (a checkpoint of this
module); keys are matched by name and shape, and what did not load is reported.

Pages are resized before they reach the model (``detection.resize_page``), so torchvision's own
resizing is switched off (``PrescaledTransform``): boxes go in and come out in model pixels.
Classes a page's annotation does not have (Manga109 draws no balloons) are left out of that
page's classification loss (``target["ignore"]``), so a mixed-format training set teaches no
false negatives.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from domainvlm.core.checkpoint import read_checkpoint
from domainvlm.core.errors import CheckpointError
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import sigmoid_focal_loss
from torchvision.ops.misc import FrozenBatchNorm2d

BACKBONES = ("tiny", "resnet18", "resnet34", "resnet50")
TINY_WIDTHS = (16, 32, 64, 96, 128)
"""Channels of the tiny backbone's stages (strides 2, 4, 8, 16, 32); FPN levels use 4 to 32."""


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    def norm(c: int) -> nn.GroupNorm:
        return nn.GroupNorm(min(8, c // 4), c)

    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(nn.Sequential):
    """Five stride-2 stages of two 3×3 convs with GroupNorm (batches of a few pages need no BN)."""

    def __init__(self, widths: tuple[int, ...] = TINY_WIDTHS) -> None:
        stages, cin = OrderedDict(), 3
        for i, width in enumerate(widths):
            stages[f"stage{i + 1}"] = _block(cin, width, 2)
            cin = width
        super().__init__(stages)


class PrescaledTransform(GeneralizedRCNNTransform):
    """Normalise and batch only: pages arrive already resized to the detector's input size."""

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target


class PartialLabelHead(FCOSHead):
    """FCOS head whose focal loss skips, per page, the classes its annotation does not have."""

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        ignore = [t.get("ignore") for t in targets]
        if not any(mask is not None and bool(mask.any()) for mask in ignore):
            return losses
        # An ignored class has no boxes on that page, so its targets were all background: take
        # exactly those terms back out of the summed focal loss (same normaliser as FCOS).
        logits = head_outputs["cls_logits"]
        removed = logits.new_zeros(())
        for i, mask in enumerate(ignore):
            if mask is not None and bool(mask.any()):
                masked = logits[i][:, mask]
                removed = removed + sigmoid_focal_loss(
                    masked, torch.zeros_like(masked), reduction="sum"
                )
        foreground = sum(int((m >= 0).sum()) for m in matched_idxs)
        losses["classification"] = losses["classification"] - removed / max(1, foreground)
        return losses


def build_backbone(name: str, fpn_channels: int, frozen_norm: bool) -> BackboneWithFPN:
    """``name``'s feature pyramid: strides 4–32 (tiny) or 8–32 (ResNet), plus FPN's max-pooled
    level at twice the coarsest stride."""
    if name == "tiny":
        body = TinyBackbone()
        layers = {f"stage{i}": str(i - 2) for i in range(2, 6)}
        channels = list(TINY_WIDTHS[1:])
    elif name in BACKBONES:
        norm = FrozenBatchNorm2d if frozen_norm else nn.BatchNorm2d
        body = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
        layers = {"layer2": "0", "layer3": "1", "layer4": "2"}
        expansion = 4 if name == "resnet50" else 1
        channels = [128 * expansion, 256 * expansion, 512 * expansion]
    else:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BackboneWithFPN(body, layers, channels, fpn_channels)


def build_detector(
    num_classes: int,
    backbone: str = "tiny",
    fpn_channels: int = 64,
    head_convs: int = 2,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.25, 0.25, 0.25),
    score_thresh: float = 0.05,
    detections_per_page: int = 300,
    nms_thresh: float = 0.4,
    frozen_norm: bool = False,
) -> FCOS:
    """FCOS with one anchor point per location; anchor size = stride, as FCOS assigns levels.
    ``fpn_channels`` must be a multiple of 32 (the FCOS head's GroupNorm has 32 groups)."""
    if fpn_channels % 32:
        raise ValueError(f"fpn_channels {fpn_channels} is not a multiple of 32")
    features = build_backbone(backbone, fpn_channels, frozen_norm)
    strides = (4, 8, 16, 32, 64) if backbone == "tiny" else (8, 16, 32, 64)
    anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    head = PartialLabelHead(fpn_channels, 1, num_classes, head_convs)
    model = FCOS(
        features,
        num_classes,
        anchor_generator=anchors,
        head=head,
        score_thresh=score_thresh,
        detections_per_img=detections_per_page,
        nms_thresh=nms_thresh,
        topk_candidates=1000,
    )
    model.transform = PrescaledTransform(1, 1, list(mean), list(std))
    return model


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a local weights file: a plain state dict, or a checkpoint's ``state_dict``."""
    state = read_checkpoint(path)
    state = state.get("state_dict", state)
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"weights file {str(path)!r} holds no tensors")
    return tensors


def load_weights_file(module: nn.Module, path: str | Path, prefixes: tuple[str, ...] = ()) -> int:
    """Copy the tensors of ``path`` whose names (after stripping one of ``prefixes``) and shapes
    match ``module``'s; returns how many loaded, and refuses a file that fits nothing."""
    own = module.state_dict()
    matched = {}
    for key, value in read_state_dict(path).items():
        name = next((key[len(p) :] for p in prefixes if key.startswith(p)), key)
        if name in own and own[name].shape == value.shape:
            matched[name] = value
    if not matched:
        raise CheckpointError(
            f"weights file {str(path)!r}: none of its tensors fits this "
            f"{type(module).__name__} (names or shapes differ)"
        )
    module.load_state_dict(matched, strict=False)
    return len(matched)
