"""The held-out part of the sample in task formats: COMICS panels, OCR and cloze folds, ComicsPAP
records and zero-shot panel tags, all from the held-out books only.

Hard COMICS folds draw wrong candidates from the same book, easy ones from other books (as the
COMICS paper does). ComicsPAP negatives: visual and text closure, caption relevance and sequence
filling use other panels of the same book. Character coherence and text closure are built as the
ComicsPAP release builds them, from the answer panel re-lettered: character coherence offers the
answer panel and the same panel with the texts of its two balloons swapped (who says what); text
closure offers the answer panel and two copies lettered with the texts of two other panels of the
book (what is said next).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from domainvlm.core.files import atomic_open, atomic_write_json
from domainvlm.domains.comics.comicspap import write_parquet
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from domainvlm.domains.comics.sample import BookSpec, PanelSpec

CONTEXT = 3
PARQUET_FOLDER = "comicspap_parquet"
"""The same ComicsPAP records as the Hugging Face release stores them (Parquet, images embedded)."""
SWAPPED = "_swapped"
"""Suffix of a panel image whose two balloons' texts are swapped (ComicsPAP char coherence)."""
LETTERED_AS = "_lettered_as_"
"""Infix of a panel image lettered with another panel's texts: ``<panel>_lettered_as_<donor>``."""
TAGS_FILE = "panel_tags.csv"


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())


def write_task_files(out: Path, books: list[BookSpec], rng: random.Random) -> None:
    from domainvlm.domains.comics.sample import _save_jpeg

    entries: list[list[tuple[str, PanelSpec]]] = []  # per book: (panel id, panel)
    pages: dict[str, Image.Image] = {}  # panel id → its page
    ocr_rows, tag_rows = [], []
    for comic, book in enumerate(books):
        folder = "manga109/images" if book.direction == "rtl" else "comix/images"
        items = []
        for page in book.pages:
            for number, panel in enumerate(page.panels):
                panel_id = f"{comic}_{page.index}_{number}"
                crop = page.image.crop(panel.box)
                _save_jpeg(
                    crop,
                    out / "comics" / "raw_panel_images" / str(comic) / f"{page.index}_{number}.jpg",
                )
                _save_jpeg(crop, out / "comicspap" / "images" / f"{panel_id}.jpg")
                words = _words(panel)
                words[0], words[-1] = words[-1], words[0]
                _save_jpeg(
                    relettered(page.image, panel, words).crop(panel.box),
                    out / "comicspap" / "images" / f"{panel_id}{SWAPPED}.jpg",
                )
                pages[panel_id] = page.image
                for box_no, text in enumerate(panel.texts):
                    x1, y1, x2, y2 = text["box"]
                    px, py = panel.box[:2]
                    ocr_rows.append(
                        [
                            comic,
                            page.index,
                            number,
                            box_no,
                            "dialog",
                            text["text"],
                            x1 - px,
                            y1 - py,
                            x2 - px,
                            y2 - py,
                        ]
                    )
                tag_rows.append(
                    [f"{folder}/{book.title}/{page.index:03d}.jpg", *panel.box, panel.setting]
                )
                items.append((panel_id, panel))
        entries.append(items)
    _csv(
        out / "comics" / "COMICS_ocr_file.csv",
        [
            "comic_no",
            "page_no",
            "panel_no",
            "textbox_no",
            "dialog_or_narration",
            "text",
            "x1",
            "y1",
            "x2",
            "y2",
        ],
        ocr_rows,
    )
    _csv(out / TAGS_FILE, ["image", "x1", "y1", "x2", "y2", "tag"], tag_rows)
    for difficulty in ("easy", "hard"):
        _write_folds(out / "comics" / "folds", entries, difficulty, rng)
    panels = {panel_id: panel for items in entries for panel_id, panel in items}

    def lettered_as(panel_id: str, donor_id: str) -> str:
        name = f"{panel_id}{LETTERED_AS}{donor_id}"
        panel = panels[panel_id]
        image = relettered(pages[panel_id], panel, _words(panels[donor_id]))
        _save_jpeg(image.crop(panel.box), out / "comicspap" / "images" / f"{name}.jpg")
        return name

    records = _comicspap(entries, rng, lettered_as)
    atomic_write_json(out / "comicspap" / "records.json", records)
    write_parquet(records, out / "comicspap", out / PARQUET_FOLDER)


def _words(panel: PanelSpec) -> list[tuple[str, tuple[int, int, int]]]:
    """Each balloon's words with the lettering colour of its speaker, in reading order."""
    from domainvlm.domains.comics.sample import lettering

    return [(text["text"], lettering(text["speaker"]["character"])) for text in panel.texts]


def relettered(
    page: Image.Image, panel: PanelSpec, words: list[tuple[str, tuple[int, int, int]]]
) -> Image.Image:
    """The page with ``panel``'s balloons blanked and lettered again with ``words`` (in reading
    order, repeated if there are fewer than balloons), outlines and tails unchanged."""
    from domainvlm.domains.comics.sample import letter

    copy = page.copy()
    draw = ImageDraw.Draw(copy)
    for number, text in enumerate(panel.texts):
        new, colour = words[number % len(words)]
        draw.ellipse(text["box"], fill=(255, 255, 255), outline=(0, 0, 0))
        letter(draw, text["box"], new, colour)
    return copy


def _others(
    entries: list, book: int, exclude: int, hard: bool, rng: random.Random, count: int
) -> list:
    if hard:
        pool = [item for i, item in enumerate(entries[book]) if i != exclude]
    else:
        pool = [item for b, items in enumerate(entries) if b != book for item in items]
    return rng.sample(pool, count)


def _context(items: list, t: int) -> list[str]:
    row = []
    for panel_id, panel in items[t - CONTEXT : t]:
        texts = [text["text"] for text in panel.texts] + ["", "", ""]
        row += [panel_id, *texts[:3]]
    return row


def _write_folds(folder: Path, entries: list, difficulty: str, rng: random.Random) -> None:
    hard = difficulty == "hard"
    context_header = [
        h
        for i in range(CONTEXT)
        for h in (f"context_panel_{i}_id", *(f"context_text_{i}_{j}" for j in range(3)))
    ]
    base = ["book_id", "page_id", "answer_panel_id", *context_header]
    text_rows, visual_rows, order_rows = [], [], []
    for book, items in enumerate(entries):
        for t in range(CONTEXT, len(items)):
            panel_id, panel = items[t]
            comic, page, number = panel_id.split("_")
            head = [comic, page, number, *_context(items, t)]
            wrong = _others(entries, book, t, hard, rng, 2)
            answer = rng.randrange(3)
            texts = [p.dialogue for _, p in wrong]
            texts.insert(answer, panel.dialogue)
            text_rows.append([*head, *texts, answer])
            ids = [i for i, _ in wrong]
            ids.insert(answer, panel_id)
            visual_rows.append([*head, *ids, answer])
            order = [text["text"] for text in panel.texts]
            swapped = rng.random() < 0.5
            options = [order[::-1], order] if swapped else [order, order[::-1]]
            order_rows.append([*head, *options[0], *options[1], int(swapped)])
    _csv(
        folder / f"text_cloze_test_{difficulty}.csv",
        [*base, *(f"answer_candidate_{k}_text" for k in range(3)), "correct_answer"],
        text_rows,
    )
    _csv(
        folder / f"visual_cloze_test_{difficulty}.csv",
        [*base, *(f"answer_candidate_{k}_id" for k in range(3)), "correct_answer"],
        visual_rows,
    )
    if hard:  # character coherence has one difficulty in COMICS; it is written once
        header = [
            *base,
            *(f"answer_candidate_{k}_text_{b}" for k in range(2) for b in range(2)),
            "correct_answer",
        ]
        _csv(folder / "char_coherence_test_easy.csv", header, order_rows)


def _comicspap(
    entries: list, rng: random.Random, lettered_as: Callable[[str, str], str]
) -> list[dict]:
    """ComicsPAP records; ``lettered_as(panel, donor)`` writes ``panel`` lettered with ``donor``'s
    texts and returns its image id."""
    records = []

    def image(panel_id: str) -> str:
        return f"images/{panel_id}.jpg"

    def add(
        task: str, context: list[str], true: str, wrong: list[str], index: int, caption: str = ""
    ) -> None:
        options = [image(i) for i in wrong]
        answer = rng.randrange(len(options) + 1)
        options.insert(answer, image(true))
        records.append(
            {
                "sample_id": f"{task}_{len(records)}",
                "context": [image(i) for i in context],
                "options": options,
                "index": index,
                "solution_index": answer,
                "split": "test",
                "task_type": task,
                "previous_panel_caption": caption,
            }
        )

    for items in entries:
        for t in range(CONTEXT, len(items)):
            ids = [i for i, _ in items]
            panel_id, panel = items[t]
            same_book = [i for i in range(len(items)) if i != t]
            context = ids[t - CONTEXT : t]
            add(
                "visual_closure",
                context,
                panel_id,
                [ids[i] for i in rng.sample(same_book, 2)],
                CONTEXT,
            )
            donors = [i for i in same_book if items[i][1].dialogue != panel.dialogue]
            wrong = [lettered_as(panel_id, ids[i]) for i in rng.sample(donors, 2)]
            add("text_closure", context, panel_id, wrong, CONTEXT)
            add(
                "caption_relevance",
                context,
                panel_id,
                [ids[i] for i in rng.sample(same_book, 2)],
                CONTEXT,
                items[t - 1][1].dialogue,
            )
            add("char_coherence", context, panel_id, [panel_id + SWAPPED], CONTEXT)
            if t + 1 < len(items):
                gap = rng.randrange(1, CONTEXT)
                window = ids[t - CONTEXT + 1 : t + 2]
                missing = window.pop(gap)
                pool = [i for i in range(len(items)) if ids[i] != missing]
                add("sequence_filling", window, missing, [ids[i] for i in rng.sample(pool, 2)], gap)
    return records
