"""``domainvlm eval detection``: COCO AP per class of a page detector on a comics root.

    domainvlm eval detection --checkpoint C --data ROOT [--split test] [--table]
        [--coco-results FILE] [--coco-ground-truth FILE] [--min-score 0.05]

``ROOT`` is anything ``books.load_books`` reads (the sample, Manga109, CoMix); the split is whole
books. Metrics are CoMix's (AP50, AP50-95, AR10, AR100 per class, pycocotools), each class scored
on the pages whose annotation has it. ``--coco-results`` writes the detections as a COCO result
list with CoMix category ids (image ids are the pages' order; ``--coco-ground-truth`` writes the
matching ground truth, with each image's ``file_name``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coco-results", type=Path, help="write the COCO result list here")
    parser.add_argument(
        "--coco-ground-truth", type=Path, help="write the pages' COCO ground truth here"
    )
    parser.add_argument(
        "--min-score", type=float, default=0.05, help="lowest score scored and written"
    )
    parser.add_argument("--skip-bad", action="store_true", help="skip bad pages with a warning")


def run(args: argparse.Namespace) -> dict:
    from domainvlm.core.encoder_loader import resolve_device
    from domainvlm.core.errors import DataRootError
    from domainvlm.core.files import atomic_write_json
    from domainvlm.domains.comics.books import load_books
    from domainvlm.domains.comics.detection import PageDetector, scale_boxes
    from domainvlm.domains.comics.detection_data import detection_pages
    from domainvlm.domains.comics.detection_metrics import (
        coco_ground_truth,
        coco_results,
        evaluate_detections,
    )
    from domainvlm.domains.comics.pages import BadInput, read_crop

    detector = PageDetector.from_checkpoint(args.checkpoint, resolve_device(args.device))
    books = load_books(args.data, args.split, skip_bad=BadInput(args.skip_bad))
    pages = detection_pages(books)
    if not pages:
        raise DataRootError(f"{str(args.data)!r} has no annotated pages in split {args.split!r}")
    found = []
    for start in range(0, len(pages), max(args.batch_size, 1)):
        chunk = pages[start : start + max(args.batch_size, 1)]
        images = [read_crop(page.image) for page in chunk]
        for page, image, output in zip(chunk, images, detector.raw(images)):
            # from the image file's pixels to the annotation's (they may differ)
            factors = (page.width / image.shape[1], page.height / image.shape[0])
            boxes = scale_boxes(output["boxes"], factors)
            found.append(
                [
                    (box, label, score)
                    for box, label, score in zip(
                        boxes.tolist(), output["labels"].tolist(), output["scores"].tolist()
                    )
                    if score >= args.min_score
                ]
            )
    truth, results = coco_ground_truth(pages), coco_results(found)
    if args.coco_results:
        atomic_write_json(args.coco_results, results)
    if args.coco_ground_truth:
        atomic_write_json(args.coco_ground_truth, truth)
    metrics = evaluate_detections(truth, results)
    return {"task": "detection", "split": args.split, "num_pages": len(pages), **metrics}


def format_table(result: dict) -> str:
    from domainvlm.domains.comics.detection_metrics import format_metrics

    head = f"detection, {result['num_pages']} pages ({result['split']}), COCO metrics in percent"
    return f"{head}\n{format_metrics(result)}"
