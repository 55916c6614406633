"""COCO detection metrics per class, as CoMix reports them: AP50, AP50-95, AR10, AR100.

pycocotools does the matching and the 101-point interpolation; each class is evaluated on its own
(``COCOeval`` with one category) and only on the pages whose annotation has that class, so a
Manga109 page (no balloons) neither hides nor invents balloon errors. Category ids are CoMix's
(panel 1, character 2, balloon 3, text 4, face 7), so a result file compares with theirs.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from domainvlm.domains.comics.detection import (
    COMIX_CATEGORY_IDS,
    DETECTION_CLASSES,
    corners_to_xywh,
)
from domainvlm.domains.comics.detection_data import PageTargets

METRICS = ("AP50", "AP50-95", "AR10", "AR100")
# Indexes into COCOeval.stats (area "all"; AR at maxDets 1, 10, 100).
STATS_INDEX = {"AP50": 1, "AP50-95": 0, "AR10": 7, "AR100": 8}

Prediction = tuple[Sequence[float], int, float]
"""(corner box in page pixels, index into ``DETECTION_CLASSES``, score)."""


def coco_ground_truth(pages: Sequence[PageTargets]) -> dict:
    """A COCO detection file of the pages (image ids 1..N in order); each image also lists the
    classes its annotation has (``annotated``)."""
    images, annotations = [], []
    for image_id, page in enumerate(pages, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": str(page.image),
                "width": page.width,
                "height": page.height,
                "annotated": list(page.annotated),
            }
        )
        for box, label in zip(page.boxes, page.labels):
            xywh = corners_to_xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": COMIX_CATEGORY_IDS[DETECTION_CLASSES[label]],
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": COMIX_CATEGORY_IDS[n], "name": n} for n in DETECTION_CLASSES]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_results(predictions: Sequence[Sequence[Prediction]]) -> list[dict]:
    """COCO result list ``{image_id, category_id, bbox [x, y, w, h], score}``; page i → id i+1."""
    return [
        {
            "image_id": image_id,
            "category_id": COMIX_CATEGORY_IDS[DETECTION_CLASSES[label]],
            "bbox": [round(v, 2) for v in corners_to_xywh(box)],
            "score": round(float(score), 5),
        }
        for image_id, page in enumerate(predictions, start=1)
        for box, label, score in page
    ]


def _coco(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_detections(ground_truth: dict, results: Sequence[dict]) -> dict:
    """Per class ``{AP50, AP50-95, AR10, AR100, num_gt, num_pages}`` (``None`` where a class has
    no box in the set), and their mean over the classes that have boxes."""
    from pycocotools.cocoeval import COCOeval

    truth = _coco(ground_truth)
    detections = [
        {**r, "id": i, "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0}
        for i, r in enumerate(results, start=1)
    ]
    found = _coco({**ground_truth, "annotations": detections})
    per_class = {}
    for name in DETECTION_CLASSES:
        category = COMIX_CATEGORY_IDS[name]
        images = [
            image["id"]
            for image in ground_truth["images"]
            if name in image.get("annotated", DETECTION_CLASSES)
        ]
        wanted = set(images)
        count = sum(
            1
            for a in ground_truth["annotations"]
            if a["category_id"] == category and a["image_id"] in wanted
        )
        row = {"num_gt": count, "num_pages": len(images)}
        if count == 0:
            per_class[name] = {**row, **dict.fromkeys(METRICS)}
            continue
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.params.catIds = [category]
        evaluation.params.imgIds = images
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        stats = evaluation.stats
        per_class[name] = {**row, **{m: float(stats[STATS_INDEX[m]]) for m in METRICS}}
    scored = [row for row in per_class.values() if row["num_gt"]]
    mean = {m: sum(r[m] for r in scored) / len(scored) if scored else None for m in METRICS}
    return {"classes": per_class, "mean": mean}


def format_metrics(result: dict) -> str:
    """The per-class table (percent), CoMix's columns."""
    lines = [f"{'class':<10} {'boxes':>6} " + " ".join(f"{m:>8}" for m in METRICS)]
    rows = [*result["classes"].items(), ("mean", {"num_gt": "", **result["mean"]})]
    for name, row in rows:
        cells = " ".join(
            f"{100 * row[m]:>8.1f}" if row[m] is not None else f"{'-':>8}" for m in METRICS
        )
        lines.append(f"{name:<10} {row['num_gt']!s:>6} {cells}")
    return "\n".join(lines)
