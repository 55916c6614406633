"""Page detection (LoCU layer 2): panels, characters, faces, texts and balloons on a comics page.

    detector = PageDetector.from_checkpoint("runs/comics/detector/checkpoints/last.ckpt")
    for found in detector.detect(page):  # page: [H, W, 3] uint8
        print(found.label, found.box, found.score)  # box: x1, y1, x2, y2 in page pixels

Pages are resized so that their longer side is ``max_side`` (the checkpoint's setting) before the
model sees them, and boxes are mapped back to the page's own pixels. Default score thresholds
follow Magi (character 0.3, panel 0.2, text 0.25); faces and balloons take 0.3 and 0.25.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from domainvlm.core.errors import CheckpointError, DomainVLMError
from PIL import Image
from torch import Tensor, nn
from torchvision.ops import nms

DETECTION_CLASSES = ("panel", "character", "face", "text", "balloon")
"""Model label i is ``DETECTION_CLASSES[i]``."""
COMIX_CATEGORY_IDS = {"panel": 1, "character": 2, "balloon": 3, "text": 4, "face": 7}
"""CoMix's COCO category ids, used in ground truth and result files so numbers compare."""
DEFAULT_THRESHOLDS = {"panel": 0.2, "character": 0.3, "face": 0.3, "text": 0.25, "balloon": 0.25}
RELABEL_IOU = 0.7
"""Two boxes of different classes overlapping this much are one object labelled twice (in comics
a face in its body, a text in its balloon or anything in its panel overlap far less)."""

BoxT = tuple[float, float, float, float]


class DetectionError(DomainVLMError, ValueError):
    """A page, threshold or checkpoint the detector cannot use."""


@dataclass
class Detection:
    label: str
    box: BoxT
    """x1, y1, x2, y2 in the original page's pixels."""
    score: float


# -- boxes and resizing ------------------------------------------------------------------------


def xywh_to_corners(box: Sequence[float]) -> BoxT:
    """COCO ``[x, y, w, h]`` → ``(x1, y1, x2, y2)``."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def corners_to_xywh(box: Sequence[float]) -> list[float]:
    """``(x1, y1, x2, y2)`` → COCO ``[x, y, w, h]``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def resized_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) with the longer side ``max_side`` and the aspect kept (to the pixel)."""
    scale = max_side / max(width, height)
    return max(round(width * scale), 1), max(round(height * scale), 1)


def resize_page(image: np.ndarray, max_side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The page resized for the model, and the (x, y) factors page pixels were multiplied by."""
    height, width = image.shape[:2]
    new_w, new_h = resized_size(width, height, max_side)
    if (new_w, new_h) != (width, height):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    return image, (new_w / width, new_h / height)


def scale_boxes(boxes: Tensor, factors: tuple[float, float]) -> Tensor:
    """Corner boxes ``[N, 4]`` times the (x, y) factors; divide by them to go back to the page."""
    fx, fy = factors
    return boxes * boxes.new_tensor([fx, fy, fx, fy])


def page_tensor(image: np.ndarray) -> Tensor:
    """``[H, W, 3]`` uint8 → ``[3, H, W]`` float in [0, 1] (the detector normalises itself)."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A page as ``[H, W, 3]`` uint8 (greyscale repeated, alpha dropped), or a clear error."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise DetectionError(f"a page must be a uint8 numpy array, not {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise DetectionError(f"a page must be [H, W, 3] (or greyscale), got {image.shape}")
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]


def merged_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    unknown = sorted(set(thresholds or {}) - set(DETECTION_CLASSES))
    if unknown:
        raise DetectionError(
            f"thresholds for unknown classes {unknown}; classes are {', '.join(DETECTION_CLASSES)}"
        )
    return {**DEFAULT_THRESHOLDS, **(thresholds or {})}


def one_label_per_object(output: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the lower-scored of two detections of different classes on (almost) the same box;
    same-class duplicates were already removed by the detector's per-class NMS."""
    keep = nms(output["boxes"], output["scores"], RELABEL_IOU)
    return {key: value[keep] for key, value in output.items()}


# -- inference ---------------------------------------------------------------------------------


class PageDetector:
    """A trained detector at inference: pages in, ``Detection`` lists in page pixels out."""

    def __init__(self, model: nn.Module, max_side: int, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.max_side = int(max_side)
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> PageDetector:
        """The detector of a checkpoint written by ``PageDetectionSystem`` (read weights-only)."""
        from domainvlm.core.checkpoint import load_system
        from domainvlm.domains.comics.detection_system import PageDetectionSystem

        system = load_system(path)
        if not isinstance(system, PageDetectionSystem):
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds a {type(system).__name__}, not a comics page "
                "detector (train one with configs/comics/detector.yaml)"
            )
        return cls(system.model, system.max_side, device)

    @torch.no_grad()
    def raw(self, images: Sequence[np.ndarray]) -> list[dict[str, Tensor]]:
        """The model's boxes (page pixels), labels and scores for a batch of pages, one label per
        object but no score threshold (evaluation ranks them all)."""
        pages = [as_rgb(image) for image in images]
        resized = [resize_page(page, self.max_side) for page in pages]
        outputs = self.model([page_tensor(array).to(self.device) for array, _ in resized])
        pages = []
        for output, (_, factors) in zip(outputs, resized):
            output = one_label_per_object({key: value.cpu() for key, value in output.items()})
            output["boxes"] = scale_boxes(output["boxes"], (1 / factors[0], 1 / factors[1]))
            pages.append(output)
        return pages

    def detect_batch(
        self, images: Sequence[np.ndarray], thresholds: Mapping[str, float] | None = None
    ) -> list[list[Detection]]:
        """``detect`` for several pages in one forward pass."""
        limits = merged_thresholds(thresholds)
        found = []
        for output in self.raw(images):
            page = []
            for box, label, score in zip(
                output["boxes"].tolist(), output["labels"].tolist(), output["scores"].tolist()
            ):
                name = DETECTION_CLASSES[label]
                if score >= limits[name]:
                    page.append(Detection(name, tuple(box), float(score)))
            found.append(page)
        return found

    def detect(
        self, image: np.ndarray, thresholds: Mapping[str, float] | None = None
    ) -> list[Detection]:
        """Detections on one ``[H, W, 3]`` uint8 page, best first, boxes in its pixels;
        ``thresholds`` overrides the per-class minimum scores (``DEFAULT_THRESHOLDS``)."""
        return self.detect_batch([image], thresholds)[0]
