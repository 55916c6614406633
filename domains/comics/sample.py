"""Write a synthetic comics collection in the public formats, for tests, demos and offline training.

Synthetic, and the README.txt it writes says so. What a model can learn from it:

- recurring characters with fixed visible identities: each has a body colour and a hat shape that
  never change, and a name the dialogue uses;
- every panel shows a setting (forest, beach, city, snow), a time of day (sky colour, sun or moon)
  and an object, and its dialogue mentions them: the first balloon in reading order asks
  ("Morning, Bo! See the apple?"), the second answers ("Yes Ada, the apple is in the forest."); each balloon's tail points at its speaker;
- a story rule across consecutive panels: a scene of four panels keeps its two characters and its
  setting while the time of day advances morning → day → evening → night.

Western books (left to right) are written as CoMix COCO (with balloon outlines and, inside each,
its text region as the text box), manga (right to left: the first balloon and panel are on the
right) as Manga109 XML (text regions, no balloon class, as Manga109) with Manga109Dialog speaker
links; the held-out books (``splits.json``) also become COMICS panel crops, OCR CSV and cloze
folds, and ComicsPAP records.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from domainvlm.core.files import atomic_open, atomic_write_json
from PIL import Image, ImageDraw

CHARACTERS = (
    ("Ada", (220, 40, 40), "cone"),
    ("Bo", (40, 90, 220), "box"),
    ("Cy", (40, 170, 60), "ball"),
    ("Dee", (240, 200, 30), "cone"),
    ("Eli", (150, 60, 190), "box"),
    ("Fay", (250, 130, 20), "ball"),
)
CHARACTER_IDS = tuple(f"{0xC0000000 + i:08x}" for i in range(len(CHARACTERS)))
"""One id per character in every book and format (Manga109 style: 8 hex digits)."""
SETTINGS = {
    "forest": (60, 120, 50),
    "beach": (230, 210, 140),
    "city": (120, 120, 130),
    "snow": (245, 245, 250),
}
TIMES = {
    "morning": ((250, 190, 200), "Morning"),
    "day": ((140, 200, 250), "Sunny day"),
    "evening": ((250, 150, 70), "Evening"),
    "night": ((20, 25, 70), "Dark night"),
}
OBJECTS = {
    "apple": (200, 20, 30),
    "key": (230, 190, 0),
    "book": (120, 70, 30),
    "ball": (20, 160, 200),
    "cake": (250, 160, 200),
    "lamp": (250, 250, 120),
}
SIZES = {
    # (train books, val books, test books, pages per book)
    "small": (4, 2, 2, 2),
    "demo": (28, 2, 6, 4),
}
PAGE_W, PAGE_H, GUTTER = 240, 330, 8
LAYOUTS = ((2, 2, 2), (2, 1, 2), (1, 2, 2), (2, 2, 1))
SCENE_LENGTH = len(TIMES)
LETTER_WIDTH = 2.0
"""Pixels per character of the dashes that stand for a balloon's words."""


@dataclass
class PanelSpec:
    box: tuple[int, int, int, int]
    setting: str
    time: str
    item: str
    cast: tuple[int, int]
    """(asker, answerer) character indexes; the asker stands on the reading-first side."""
    texts: list[dict] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)

    @property
    def dialogue(self) -> str:
        return " ".join(text["text"] for text in self.texts)


@dataclass
class PageSpec:
    index: int
    panels: list[PanelSpec]
    image: Image.Image | None = None


@dataclass
class BookSpec:
    title: str
    direction: str
    pages: list[PageSpec]

    def panels(self) -> list[PanelSpec]:
        return [panel for page in self.pages for panel in page.panels]


def _frames(layout: tuple[int, ...], direction: str) -> list[tuple[int, int, int, int]]:
    """Panel boxes of a page in reading order (rows top to bottom, columns by direction)."""
    rows = len(layout)
    height = (PAGE_H - GUTTER * (rows + 1)) // rows
    boxes = []
    for row, columns in enumerate(layout):
        width = (PAGE_W - GUTTER * (columns + 1)) // columns
        y1 = GUTTER + row * (height + GUTTER)
        cells = [
            (GUTTER + c * (width + GUTTER), y1, GUTTER + c * (width + GUTTER) + width, y1 + height)
            for c in range(columns)
        ]
        boxes += cells if direction == "ltr" else cells[::-1]
    return boxes


def make_book(title: str, direction: str, pages: int, rng: random.Random) -> BookSpec:
    """Scenes of four panels: same cast and setting, time of day advancing."""
    book = BookSpec(title, direction, [])
    panel_number = 0
    cast = setting = None
    for index in range(pages):
        frames = _frames(rng.choice(LAYOUTS), direction)
        specs = []
        for box in frames:
            if panel_number % SCENE_LENGTH == 0:
                cast = tuple(rng.sample(range(len(CHARACTERS)), 2))
                setting = rng.choice(list(SETTINGS))
            time = list(TIMES)[panel_number % SCENE_LENGTH]
            asker, answerer = cast if rng.random() < 0.5 else cast[::-1]
            specs.append(
                PanelSpec(box, setting, time, rng.choice(list(OBJECTS)), (asker, answerer))
            )
            panel_number += 1
        book.pages.append(PageSpec(index, specs))
    for page in book.pages:
        page.image = draw_page(page, direction, rng)
    return book


def draw_page(page: PageSpec, direction: str, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (PAGE_W, PAGE_H), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for panel in page.panels:
        _draw_panel(draw, panel, direction, rng)
    return image


def _draw_panel(
    draw: ImageDraw.ImageDraw, panel: PanelSpec, direction: str, rng: random.Random
) -> None:
    x1, y1, x2, y2 = panel.box
    w, h = x2 - x1, y2 - y1
    horizon = y1 + int(h * 0.62)
    sky = TIMES[panel.time][0]
    draw.rectangle((x1, y1, x2, horizon), fill=sky)
    draw.rectangle((x1, horizon, x2, y2), fill=SETTINGS[panel.setting])
    _draw_setting(draw, panel.setting, (x1, horizon, x2, y2), rng)
    orb = (250, 250, 235) if panel.time == "night" else (255, 220, 40)
    ox = x1 + int(w * (0.12 if direction == "rtl" else 0.8))
    draw.ellipse((ox, y1 + h * 0.32, ox + 12, y1 + h * 0.32 + 12), fill=orb)
    cx = x1 + w // 2 + rng.randint(-6, 6)
    draw.ellipse((cx - 6, y2 - 20, cx + 6, y2 - 8), fill=OBJECTS[panel.item], outline=(0, 0, 0))
    asker, answerer = panel.cast
    first_x, second_x = (0.22, 0.78) if direction == "ltr" else (0.78, 0.22)
    for who, fx in ((asker, first_x), (answerer, second_x)):
        panel.figures.append(_draw_character(draw, who, x1 + int(w * fx), y2 - 6, h))
    names = [CHARACTERS[asker][0], CHARACTERS[answerer][0]]
    lines = (
        f"{TIMES[panel.time][1]}, {names[1]}! See the {panel.item}?",
        f"Yes {names[0]}, the {panel.item} is in the {panel.setting}.",
    )
    for figure, text, fx in zip(panel.figures, lines, (first_x, second_x)):
        panel.texts.append(_draw_balloon(draw, panel.box, fx, figure, text))
    draw.rectangle(panel.box, outline=(0, 0, 0), width=2)


def _draw_setting(
    draw: ImageDraw.ImageDraw, setting: str, ground: tuple, rng: random.Random
) -> None:
    x1, top, x2, y2 = ground
    if setting == "forest":
        for x in range(x1 + 6, x2 - 6, 18):
            draw.polygon([(x, top), (x + 8, top - 22), (x + 16, top)], fill=(20, 80, 30))
    elif setting == "beach":
        draw.rectangle((x1, top, x2, top + 8), fill=(30, 110, 200))
    elif setting == "city":
        for x in range(x1 + 4, x2 - 12, 22):
            draw.rectangle((x, top - rng.randint(14, 30), x + 14, top), fill=(80, 80, 95))
    else:
        for _ in range(10):
            sx, sy = rng.randint(x1 + 2, x2 - 4), rng.randint(top - 30, y2 - 4)
            draw.ellipse((sx, sy, sx + 3, sy + 3), fill=(255, 255, 255))


def _draw_character(draw: ImageDraw.ImageDraw, who: int, cx: int, floor: int, h: int) -> dict:
    _, colour, hat = CHARACTERS[who]
    body_h = int(h * 0.3)
    top = floor - body_h
    draw.rectangle((cx - 9, top, cx + 9, floor), fill=colour, outline=(0, 0, 0))
    head = (cx - 8, top - 16, cx + 8, top)
    draw.ellipse(head, fill=(250, 220, 190), outline=(0, 0, 0))
    if hat == "cone":
        draw.polygon(
            [(cx - 9, top - 14), (cx, top - 28), (cx + 9, top - 14)], fill=colour, outline=(0, 0, 0)
        )
    elif hat == "box":
        draw.rectangle((cx - 7, top - 26, cx + 7, top - 14), fill=colour, outline=(0, 0, 0))
    else:
        draw.ellipse((cx - 6, top - 27, cx + 6, top - 15), fill=colour, outline=(0, 0, 0))
    return {"character": who, "face": head, "body": (cx - 10, top - 28, cx + 10, floor)}


def _draw_balloon(
    draw: ImageDraw.ImageDraw, box: tuple, fx: float, figure: dict, text: str
) -> dict:
    x1, y1, x2, _ = box
    w = x2 - x1
    bw = max(int(w * 0.4), 30)
    cx = int(x1 + w * fx)
    bx1 = min(max(cx - bw // 2, x1 + 4), x2 - 4 - bw)
    balloon = (bx1, y1 + 5, bx1 + bw, y1 + 27)
    head = figure["face"]
    tip = ((head[0] + head[2]) // 2, head[1] - 14)
    base = (balloon[0] + balloon[2]) // 2
    draw.polygon(
        [(base - 4, balloon[3] - 2), (base + 4, balloon[3] - 2), tip],
        fill=(255, 255, 255),
        outline=(0, 0, 0),
    )
    draw.ellipse(balloon, fill=(255, 255, 255), outline=(0, 0, 0))
    letter(draw, balloon, text, lettering(figure["character"]))
    # The text region: the lettering's extent (three rows at most) plus a pixel, since Manga109
    # and CoMix text boxes hold the words, not the balloon around them.
    region = (balloon[0] + 6, balloon[1] + 5, balloon[2] - 6, balloon[1] + 17)
    return {"box": balloon, "region": region, "text": text, "speaker": figure}


def lettering(who: int) -> tuple[int, int, int]:
    """The colour a character's words are lettered in: its body colour, darkened to show on white
    (some comics letter a character's words in its own colour; here every character's are)."""
    return tuple(int(0.8 * c) for c in CHARACTERS[who][1])


def letter(draw: ImageDraw.ImageDraw, balloon: tuple, text: str, colour: tuple) -> None:
    """The words of ``text`` as dashes as long as the words, in up to three rows inside the text
    region, in the speaker's lettering colour: too small to read at model resolution, but whose
    words a balloon holds shows, so a balloon given another character's words looks wrong."""
    left, right = balloon[0] + 7, balloon[2] - 7
    x, row = left, 0
    for word in text.split():
        length = max(2, round(LETTER_WIDTH * len(word)))
        if x + length > right and x > left:
            x, row = left, row + 1
        if row == 3:
            break
        y = balloon[1] + 6 + 4 * row
        draw.rectangle((x, y, min(x + length, right), y + 1), fill=colour)
        x += length + 2


# -- writers -------------------------------------------------------------------------------------


def _save_jpeg(image: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _hex(counter: list[int]) -> str:
    counter[0] += 1
    return f"{counter[0]:08x}"


def write_manga109(root: Path, books: list[BookSpec]) -> None:
    counter = [0]
    for book in books:
        element = ET.Element("book", title=book.title)
        characters = ET.SubElement(element, "characters")
        char_ids = dict(enumerate(CHARACTER_IDS))
        for i, (name, _, _) in enumerate(CHARACTERS):
            ET.SubElement(characters, "character", id=char_ids[i], name=name)
        pages = ET.SubElement(element, "pages")
        dialog = ET.Element("book", title=book.title)
        for page in book.pages:
            _save_jpeg(page.image, root / "images" / book.title / f"{page.index:03d}.jpg")
            page_element = ET.SubElement(
                pages, "page", index=str(page.index), width=str(PAGE_W), height=str(PAGE_H)
            )
            for panel in page.panels:
                _box(page_element, "frame", _hex(counter), panel.box)
                bodies = {}
                for figure in panel.figures:
                    _box(
                        page_element,
                        "face",
                        _hex(counter),
                        figure["face"],
                        character=char_ids[figure["character"]],
                    )
                    bodies[figure["character"]] = _hex(counter)
                    _box(
                        page_element,
                        "body",
                        bodies[figure["character"]],
                        figure["body"],
                        character=char_ids[figure["character"]],
                    )
                for text in panel.texts:
                    text_id = _hex(counter)
                    _box(page_element, "text", text_id, text["region"]).text = text["text"]
                    ET.SubElement(
                        dialog,
                        "speaker_to_text",
                        id=_hex(counter),
                        text_id=text_id,
                        speaker_id=bodies[text["speaker"]["character"]],
                    )
        _write_xml(root / "annotations" / f"{book.title}.xml", element)
        _write_xml(root / "dialog" / f"{book.title}.xml", dialog)
    with atomic_open(root / "books.txt", "w", encoding="utf-8") as handle:
        handle.write("".join(f"{book.title}\n" for book in books))


def _box(parent: ET.Element, tag: str, ident: str, box: tuple, **extra: str) -> ET.Element:
    corners = dict(zip(("xmin", "ymin", "xmax", "ymax"), (str(int(v)) for v in box)))
    return ET.SubElement(parent, tag, id=ident, **corners, **extra)


def _write_xml(path: Path, element: ET.Element) -> None:
    ET.indent(element)
    with atomic_open(path, "wb") as handle:
        ET.ElementTree(element).write(handle, encoding="utf-8", xml_declaration=True)


def write_comix(root: Path, books: list[BookSpec]) -> None:
    categories = ["panel", "character", "balloon", "text", "onomatopoeia", "link_sbsc", "face"]
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)],
    }

    def add(image_id: int, category: int, box: tuple, **extra: object) -> int:
        x1, y1, x2, y2 = (int(v) for v in box)
        ident = len(coco["annotations"]) + 1
        coco["annotations"].append(
            {
                "id": ident,
                "image_id": image_id,
                "category_id": category,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
                **extra,
            }
        )
        return ident

    for book in books:
        for page in book.pages:
            file_name = f"{book.title}/{page.index:03d}.jpg"
            _save_jpeg(page.image, root / "images" / file_name)
            image_id = len(coco["images"]) + 1
            coco["images"].append(
                {"id": image_id, "file_name": file_name, "width": PAGE_W, "height": PAGE_H}
            )
            for panel in page.panels:
                add(image_id, 1, panel.box)
                bodies = {}
                for figure in panel.figures:
                    who = {
                        "character": CHARACTER_IDS[figure["character"]],
                        "name": CHARACTERS[figure["character"]][0],
                    }
                    bodies[figure["character"]] = add(image_id, 2, figure["body"], **who)
                    add(image_id, 7, figure["face"], **who)
                for text in panel.texts:
                    add(image_id, 3, text["box"])
                    text_id = add(image_id, 4, text["region"], text=text["text"])
                    add(
                        image_id,
                        6,
                        text["region"],
                        text_id=text_id,
                        character_id=bodies[text["speaker"]["character"]],
                    )
    atomic_write_json(root / "annotations" / "comix_sample.json", coco)


def write_sample(out_dir: str | Path, size: str = "small", seed: int = 0) -> Path:
    """Write the sample to ``out_dir`` (``size`` small for tests, demo for ``make demo``)."""
    if size not in SIZES:
        raise ValueError(f"unknown sample size {size!r}; choose from {', '.join(SIZES)}")
    from domainvlm.domains.comics.sample_tasks import write_task_files

    out = Path(out_dir)
    rng = random.Random(seed)
    n_train, n_val, n_test, pages = SIZES[size]
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    books: list[BookSpec] = []
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        for number in range(count):
            direction = "ltr" if number % 2 == 0 else "rtl"
            title = f"{'Western' if direction == 'ltr' else 'Manga'}{split.title()}{number:02d}"
            books.append(make_book(title, direction, pages, rng))
            splits[split].append(title)
    write_manga109(out / "manga109", [b for b in books if b.direction == "rtl"])
    write_comix(out / "comix", [b for b in books if b.direction == "ltr"])
    test_books = [b for b in books if b.title in splits["test"]]
    write_task_files(out, test_books, rng)
    atomic_write_json(out / "splits.json", splits)
    with atomic_open(out / "README.txt", "w", encoding="utf-8") as handle:
        handle.write(
            "Synthetic comics written by `domainvlm sample-data comics` (not real comics).\n"
            "manga109/: right-to-left books (Manga109 XML + dialog/ speaker links); comix/: "
            "left-to-right books (CoMix COCO); comics/: held-out panels, OCR CSV and cloze folds "
            "(COMICS); comicspap/: held-out ComicsPAP records; panel_tags.csv: the setting of each "
            "held-out panel (zero-shot tagging); splits.json: books per split.\n"
        )
    return out
