"""What ``domainvlm comics predict`` writes: per page a Magi-like JSON, a picture and a
transcript; for the whole set one COCO result file (CoMix category ids) and one transcript.

    OUT/<book>/<page>.json   panels, texts, characters, faces, balloons (x1, y1, x2, y2 page
                             pixels) with their scores, text_character_associations,
                             character_cluster_labels (shared across the book), character_names,
                             reading orders, the texts' words, the transcript and the sources
    OUT/<book>/<page>.png    the page with boxes, reading order and speaker links drawn
    OUT/<book>/<page>.txt    the transcript, ``<character>: text`` in reading order
    OUT/transcript.txt       every page's transcript, pages in order under ``== book/page ==``
    OUT/coco_results.json    ``[{image_id, category_id, bbox: [x, y, w, h], score}]``
    OUT/coco_images.json     the ``images`` and ``categories`` those ids refer to

On a CoMix root the image ids are the annotation file's own, so ``coco_results.json`` loads
against it directly (pycocotools ``loadRes``); elsewhere pages are numbered from 1 in order.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from domainvlm.core.files import atomic_open, atomic_write_json, resolve_within
from domainvlm.domains.comics.books import dataset_roots
from domainvlm.domains.comics.comix import CATEGORIES, coco_files
from domainvlm.domains.comics.predict import PagePrediction
from domainvlm.domains.comics.predict_inputs import CLASSES, read_page
from PIL import Image, ImageDraw

COCO_CATEGORY = {"panel": 1, "character": 2, "balloon": 3, "text": 4, "face": 7}
NO_SPEAKER = "[no speaker]"
COLOURS = {
    "panel": (0, 0, 0),
    "text": (30, 90, 230),
    "balloon": (0, 150, 150),
    "face": (240, 140, 0),
    "link": (230, 0, 60),
}
CHARACTER_COLOURS = (
    (220, 30, 30), (30, 160, 60), (150, 60, 190), (240, 170, 0), (0, 130, 200),
    (200, 90, 140), (110, 110, 30), (20, 20, 130),
)  # fmt: skip


def speaker_label(prediction: PagePrediction, character: int) -> str:
    """A character's name where known, else its cluster (``character 3``), else its box."""
    names, labels = prediction.character_names, prediction.cluster_labels
    if names is not None and names[character]:
        return names[character]
    if labels is not None:
        return f"character {labels[character]}"
    return f"character box {character}"


def transcript(prediction: PagePrediction) -> list[str]:
    """``<character>: text`` per text, in reading order (the first link of a text counts)."""
    speakers: dict[int, int] = {}
    for text, character in prediction.associations:
        speakers.setdefault(text, character)
    return [
        f"{speaker_label(prediction, speakers[t]) if t in speakers else NO_SPEAKER}: "
        f"{prediction.texts[t]}"
        for t in prediction.text_order
    ]


def page_record(prediction: PagePrediction) -> dict:
    """Magi's per-page keys (boxes as x1, y1, x2, y2 lists), plus scores, faces, balloons,
    names, reading orders, the words and where each part came from."""
    source = prediction.source
    record: dict = {
        "image": str(source.image),
        "book": source.book,
        "page": source.name,
        "width": prediction.width,
        "height": prediction.height,
        "direction": source.direction,
    }
    for name in CLASSES:
        record[f"{name}s"] = [[round(v, 2) for v in box] for box in prediction.boxes[name]]
        record[f"{name}_scores"] = [round(s, 4) for s in prediction.scores[name]]
    record |= {
        "text_character_associations": [list(link) for link in prediction.associations],
        "character_cluster_labels": prediction.cluster_labels,
        "character_names": prediction.character_names,
        "panel_reading_order": prediction.panel_order,
        "text_reading_order": prediction.text_order,
        "text_contents": prediction.texts,
        "transcript": transcript(prediction),
        "sources": prediction.sources,
    }
    return record


def coco_image_ids(pages: Path, predictions: list[PagePrediction]) -> list[int]:
    """Each page's COCO image id: the CoMix annotation's own where every page has a unique one,
    else 1, 2, ... in order."""
    known: dict[Path, int] = {}
    comix = dataset_roots(pages).get("comix")
    for path in coco_files(comix) if comix is not None else []:
        for image in json.loads(path.read_text(encoding="utf-8")).get("images", []):
            try:
                known[resolve_within(comix / "images", str(image["file_name"]))] = int(image["id"])
            except (KeyError, TypeError, ValueError):
                continue  # the reader already refused such pages; numbering falls back below
    ids = [known.get(p.source.image.resolve()) for p in predictions]
    if None in ids or len(set(ids)) != len(ids):
        return list(range(1, len(predictions) + 1))
    return [int(i) for i in ids if i is not None]


def coco_results(predictions: list[PagePrediction], ids: list[int]) -> list[dict]:
    rows = []
    for prediction, image_id in zip(predictions, ids):
        for name, category in COCO_CATEGORY.items():
            for (x1, y1, x2, y2), score in zip(prediction.boxes[name], prediction.scores[name]):
                rows.append(
                    {
                        "image_id": image_id,
                        "category_id": category,
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": round(score, 4),
                    }
                )
    return rows


def draw_prediction(prediction: PagePrediction) -> Image.Image:
    """The page with its boxes (characters coloured by cluster), reading order (P1.., T1..)
    and speaker links (a line from each text to its character)."""
    image = Image.fromarray(read_page(prediction.source))
    draw = ImageDraw.Draw(image)
    boxes = prediction.boxes
    for number, p in enumerate(prediction.panel_order, start=1):
        draw.rectangle(boxes["panel"][p], outline=COLOURS["panel"], width=2)
        draw.text(
            (boxes["panel"][p][0] + 3, boxes["panel"][p][1] + 2), f"P{number}", fill=(0, 0, 0)
        )
    for name in ("balloon", "face"):
        for box in boxes[name]:
            draw.rectangle(box, outline=COLOURS[name], width=1)
    for c, box in enumerate(boxes["character"]):
        label = prediction.cluster_labels[c] if prediction.cluster_labels is not None else c
        colour = CHARACTER_COLOURS[label % len(CHARACTER_COLOURS)]
        draw.rectangle(box, outline=colour, width=2)
        draw.text((box[0], box[3] + 1), speaker_label(prediction, c), fill=colour)
    for number, t in enumerate(prediction.text_order, start=1):
        draw.rectangle(boxes["text"][t], outline=COLOURS["text"], width=2)
        draw.text(
            (boxes["text"][t][0] + 2, boxes["text"][t][1] + 1), f"T{number}", fill=COLOURS["text"]
        )
    for t, c in prediction.associations:
        draw.line(
            [_centre(boxes["text"][t]), _centre(boxes["character"][c])],
            fill=COLOURS["link"],
            width=2,
        )
    return image


def _centre(box: tuple) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _safe(name: str) -> str:
    """A book or page name as one harmless path part (names come from annotation files)."""
    return re.sub(r"[^\w.-]+", "_", name).lstrip(".") or "_"


def output_stems(out: Path, predictions: list[PagePrediction]) -> list[Path]:
    """``OUT/<book>/<page>`` per page, unique even where two files share a stem."""
    stems, taken = [], set()
    for prediction in predictions:
        stem = out / _safe(prediction.source.book) / _safe(prediction.source.name)
        candidate, number = stem, 1
        while candidate in taken:
            number += 1
            candidate = stem.with_name(f"{stem.name}_{number}")
        taken.add(candidate)
        stems.append(candidate)
    return stems


def write_outputs(
    predictions: list[PagePrediction], out: Path, pages: Path, progress: bool = True
) -> dict:
    """Every output file, written atomically; returns a summary (counts and paths)."""
    from tqdm import tqdm

    whole: list[str] = []
    stems = output_stems(out, predictions)
    for prediction, stem in tqdm(
        list(zip(predictions, stems)), desc="writing", unit="page", disable=not progress
    ):
        record = page_record(prediction)
        atomic_write_json(stem.with_suffix(".json"), record)
        with atomic_open(stem.with_suffix(".txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(f"{line}\n" for line in record["transcript"]))
        buffer = io.BytesIO()
        draw_prediction(prediction).save(buffer, format="PNG")
        with atomic_open(stem.with_suffix(".png"), "wb") as handle:
            handle.write(buffer.getvalue())
        whole += [f"== {prediction.source.book}/{prediction.source.name} ==", *record["transcript"]]
    with atomic_open(out / "transcript.txt", "w", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in whole))
    ids = coco_image_ids(pages, predictions)
    atomic_write_json(out / "coco_results.json", coco_results(predictions, ids))
    images = [
        {"id": i, "file_name": str(p.source.image), "width": p.width, "height": p.height}
        for p, i in zip(predictions, ids)
    ]
    categories = [{"id": i, "name": name} for i, name in CATEGORIES.items()]
    atomic_write_json(out / "coco_images.json", {"images": images, "categories": categories})
    counts = {f"{name}s": sum(len(p.boxes[name]) for p in predictions) for name in CLASSES}
    return {
        "pages": len(predictions),
        "books": len({p.source.book for p in predictions}),
        **counts,
        "associations": sum(len(p.associations) for p in predictions),
        "out": str(out),
        "transcript": str(out / "transcript.txt"),
        "coco_results": str(out / "coco_results.json"),
        "example_picture": str(stems[0].with_suffix(".png")) if stems else None,
        "sources": predictions[0].sources if predictions else {},
    }
