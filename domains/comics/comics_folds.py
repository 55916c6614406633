"""COMICS (Iyyer et al. 2017): pre-cropped panel images, the OCR CSV and the cloze folds.

- ``raw_panel_images/<comic_no>/<page_no>_<panel_no>.jpg``: one image per panel; a panel id is
  ``<comic_no>_<page_no>_<panel_no>``.
- ``COMICS_ocr_file.csv``: ``comic_no,page_no,panel_no,textbox_no,dialog_or_narration,text,x1,y1,
  x2,y2`` (boxes in panel pixels).
- ``folds/<task>_<dev|test>_<easy|hard>.csv``: one instance per row with ``book_id, page_id,
  answer_panel_id`` (the answer panel is ``<book_id>_<page_id>_<answer_panel_id>``),
  ``context_panel_<i>_id`` (i = 0..2, panel ids) and ``context_text_<i>_<j>`` (j = 0..2, the
  panel's text boxes, empty when it has fewer), then per task: text cloze
  ``answer_candidate_<k>_text`` (k = 0..2); visual cloze ``answer_candidate_<k>_id`` (panel ids);
  character coherence ``answer_candidate_<k>_text_<b>`` (k, b = 0..1: two orderings of the answer
  panel's two boxes); and ``correct_answer`` (k). Chance: 1/3, 1/3 and 1/2.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from domainvlm.domains.comics.closure_data import ClosureInstance
from domainvlm.domains.comics.pages import (
    BadInput,
    Book,
    ComicsDataError,
    Page,
    Panel,
    TextBox,
)
from PIL import Image

OCR_FILE = "COMICS_ocr_file.csv"
PANEL_DIR = "raw_panel_images"
CONTEXT_PANELS = 3
TEXTS_PER_PANEL = 3


def is_comics_root(root: Path) -> bool:
    return (root / PANEL_DIR).is_dir()


def panel_image(root: Path, panel_id: str) -> Path | None:
    """The image of ``<comic>_<page>_<panel>``, or None when the dataset has no such panel."""
    parts = panel_id.strip().split("_")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    comic, page, panel = parts
    for suffix in (".jpg", ".png", ".jpeg"):
        path = root / PANEL_DIR / comic / f"{page}_{panel}{suffix}"
        if path.is_file():
            return path
    return None


def read_ocr(root: Path) -> dict[tuple[str, int, int], list[TextBox]]:
    """(comic, page, panel) → its text boxes in ``textbox_no`` order."""
    path = root / OCR_FILE
    boxes: dict[tuple[str, int, int], list[tuple[int, TextBox]]] = defaultdict(list)
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                key = (row["comic_no"], int(row["page_no"]), int(row["panel_no"]))
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
                number = int(row["textbox_no"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ComicsDataError(path, f"line {line}: bad or missing field ({exc})") from exc
            kind = (
                "narration" if row.get("dialog_or_narration", "").startswith("narr") else "dialogue"
            )
            boxes[key].append((number, TextBox(box, (row.get("text") or "").strip(), kind=kind)))
    return {
        key: [box for _, box in sorted(items, key=lambda x: x[0])] for key, items in boxes.items()
    }


def read_comics_books(root: str | Path) -> list[Book]:
    """Each comic as a ``Book`` whose pages are its panel images (one whole-image panel each)."""
    root = Path(root)
    ocr = read_ocr(root)
    books = []
    for folder in sorted(p for p in (root / PANEL_DIR).iterdir() if p.is_dir()):
        book = Book(title=folder.name, direction="ltr", source="comics")
        images = []
        for path in folder.iterdir():
            page, _, panel = path.stem.partition("_")
            if page.isdigit() and panel.isdigit():
                images.append(((int(page), int(panel)), path))
        for (page, panel), path in sorted(images):
            with Image.open(path) as image:
                width, height = image.size
            texts = ocr.get((folder.name, page, panel), [])
            panel_box = Panel(
                (0.0, 0.0, float(width), float(height)), texts, id=f"{folder.name}_{page}_{panel}"
            )
            book.pages.append(Page(path, page * 1000 + panel, width, height, [panel_box]))
        books.append(book)
    return books


def fold_path(root: Path, task: str, fold: str) -> Path:
    return root / "folds" / f"{task}_{fold}.csv"


def read_fold(
    root: str | Path, task: str, fold: str = "test_easy", skip_bad: BadInput | None = None
) -> list[ClosureInstance]:
    """Instances of one COMICS fold (``task`` text_cloze|visual_cloze|char_coherence)."""
    root = Path(root)
    path = fold_path(root, task, fold)
    if not path.is_file():
        raise ComicsDataError(
            path, f"no {task} fold {fold!r} here (folds/<task>_<dev|test>_<easy|hard>.csv)"
        )
    bad = skip_bad or BadInput()
    instances = []
    with path.open(encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                instances.append(_instance(root, path, line, task, row))
            except ComicsDataError as error:
                bad.report(error)
    return instances


def _image(root: Path, path: Path, line: int, panel_id: str) -> str:
    image = panel_image(root, panel_id)
    if image is None:
        raise ComicsDataError(
            path, f"line {line}: panel {panel_id!r} has no image under {PANEL_DIR}/"
        )
    return str(image)


def _instance(root: Path, path: Path, line: int, task: str, row: dict) -> ClosureInstance:
    try:
        context_ids = [row[f"context_panel_{i}_id"] for i in range(CONTEXT_PANELS)]
        texts = [
            " ".join(
                t
                for j in range(TEXTS_PER_PANEL)
                if (t := (row.get(f"context_text_{i}_{j}") or "").strip())
            )
            for i in range(CONTEXT_PANELS)
        ]
        answer_id = f"{row['book_id']}_{row['page_id']}_{row['answer_panel_id']}"
        answer = int(row["correct_answer"])
    except (KeyError, ValueError) as exc:
        raise ComicsDataError(path, f"line {line}: missing or bad column ({exc})") from exc
    context = [_image(root, path, line, panel) for panel in context_ids]
    common = {"task": task, "context_images": context, "context_texts": texts, "answer": answer}
    common["id"] = f"{path.stem}:{line}"
    if task == "visual_cloze":
        options = [
            _image(root, path, line, row.get(f"answer_candidate_{k}_id", "")) for k in range(3)
        ]
        instance = ClosureInstance(options=options, option_kind="image", **common)
    elif task == "text_cloze":
        options = [(row.get(f"answer_candidate_{k}_text") or "").strip() for k in range(3)]
        target = _image(root, path, line, answer_id)
        instance = ClosureInstance(
            options=options, option_kind="text", target_image=target, **common
        )
    elif task == "char_coherence":
        options = [
            " ".join((row.get(f"answer_candidate_{k}_text_{b}") or "").strip() for b in range(2))
            for k in range(2)
        ]
        target = _image(root, path, line, answer_id)
        instance = ClosureInstance(
            options=options, option_kind="text", target_image=target, **common
        )
    else:
        raise ComicsDataError(path, f"unknown COMICS task {task!r}")
    if not 0 <= answer < len(instance.options):
        raise ComicsDataError(path, f"line {line}: correct_answer {answer} names no candidate")
    return instance
