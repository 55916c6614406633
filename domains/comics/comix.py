"""CoMix's unified COCO files (DCM, eBDtheque, PopManga, Comics100 in one format).

``<root>/annotations/*.json`` are COCO detection files whose ``images[].file_name`` is
``<book>/<page file>`` under ``<root>/images/``; categories are panel 1, character 2, balloon 3,
text 4, onomatopoeia 5, link_sbsc 6 (speaker link), face 7. Boxes are COCO ``[x, y, w, h]``.
Balloons are kept apart as ``Page.balloons`` (outlines), since their texts are the text annotations
inside them. Optional fields this reader uses: ``text`` (transcription) on text annotations,
``character`` (an identity shared across pages and books) and ``name`` on character/face
annotations, and on link_sbsc
annotations ``text_id`` / ``character_id`` (annotation ids of the text and the speaking character,
as CoMix's XML ``<link_sbsc text_id character_id>``). "sbsc" reads speech balloon → speaking
character, so a link may name a balloon instead of a text: the speaker then goes to every text
lying mostly (≥ 50 % of its area) inside that balloon. Western books read left to right.
CoMix's XML files (``annotations/*.xml``, read by ``comix_xml``) may sit beside or instead of the
COCO files; a book found in both is read from each and its pages joined.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from domainvlm.core.files import resolve_within
from domainvlm.domains.comics.comix_xml import read_comix_xml, xml_files
from domainvlm.domains.comics.pages import (
    BadInput,
    Book,
    Box,
    CharacterBox,
    ComicsDataError,
    Direction,
    Page,
    TextBox,
    assemble_panels,
    check_box,
    overlap_fraction,
)

CATEGORIES = {
    1: "panel",
    2: "character",
    3: "balloon",
    4: "text",
    5: "onomatopoeia",
    6: "link_sbsc",
    7: "face",
}


def coco_files(root: Path) -> list[Path]:
    folder = root / "annotations" if (root / "annotations").is_dir() else root
    return sorted(folder.glob("*.json"))


def is_comix_root(root: Path) -> bool:
    """``images/`` with COCO files, or with XML files that are not Manga109's (no books.txt)."""
    if not (root / "images").is_dir():
        return False
    return bool(coco_files(root)) or (bool(xml_files(root)) and not (root / "books.txt").is_file())


def read_comix(
    root: str | Path,
    direction: Direction = "ltr",
    directions: dict[str, Direction] | None = None,
    skip_bad: BadInput | None = None,
) -> list[Book]:
    """Books of every COCO and XML file under ``root``, pages in order, panels in reading order."""
    root = Path(root)
    bad = skip_bad or BadInput()
    books: dict[str, Book] = {}
    found = [
        book
        for path in coco_files(root)
        for book in _read_coco(root, path, direction, directions or {}, bad)
    ] + [
        book
        for path in xml_files(root)
        for book in read_comix_xml(root, path, direction, directions or {}, bad)
    ]
    for book in found:
        if book.title in books:
            books[book.title].pages.extend(book.pages)
            books[book.title].characters.update(book.characters)
        else:
            books[book.title] = book
    for book in books.values():
        book.pages.sort(key=lambda page: (page.index, str(page.image)))
    return list(books.values())


def _load(path: Path) -> dict:
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ComicsDataError(path, f"not a readable COCO JSON file: {exc}") from exc
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ComicsDataError(path, "not COCO: expected an object with 'images' and 'annotations'")
    return coco


def _read_coco(
    root: Path, path: Path, direction: Direction, directions: dict[str, Direction], bad: BadInput
) -> list[Book]:
    coco = _load(path)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for annotation in coco.get("annotations", []):
        by_image[annotation.get("image_id")].append(annotation)
    books: dict[str, Book] = {}
    for position, image in enumerate(coco["images"]):
        file_name = str(image.get("file_name", ""))
        title = file_name.rsplit("/", 1)[0] if "/" in file_name else path.stem
        book_direction = directions.get(title, direction)
        book = books.setdefault(title, Book(title, book_direction, source="comix"))
        try:
            page = _read_page(root, path, image, position, by_image[image.get("id")], book)
        except ComicsDataError as error:
            bad.report(error)
            continue
        book.pages.append(page)
    return list(books.values())


def _read_page(
    root: Path, path: Path, image: dict, position: int, annotations: list[dict], book: Book
) -> Page:
    file_name = str(image.get("file_name", ""))
    try:
        width, height = int(image["width"]), int(image["height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ComicsDataError(path, f"image id {image.get('id')!r} lacks width/height") from exc
    try:
        page_path = resolve_within(root / "images", file_name)
    except ValueError as exc:
        raise ComicsDataError(path, f"image id {image.get('id')!r}: {exc}") from exc
    if not page_path.is_file():
        raise ComicsDataError(
            path, f"image id {image.get('id')!r}: page image {page_path} is missing"
        )
    frames, texts, people, balloons = [], [], [], []
    boxes: dict[int, TextBox | CharacterBox] = {}
    balloon_ids: dict[int, Box] = {}
    links = []
    for annotation in annotations:
        category = CATEGORIES.get(annotation.get("category_id"))
        what = f"annotation id {annotation.get('id')!r} ({category}) on {file_name}"
        if category == "link_sbsc":
            links.append((annotation, what))
            continue
        try:
            x, y, w, h = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ComicsDataError(path, f"{what} has no [x, y, w, h] bbox") from exc
        box = check_box((x, y, x + w, y + h), width, height, path, what)
        if category == "panel":
            frames.append(box)
        elif category == "balloon":
            balloons.append(box)
            balloon_ids[annotation.get("id")] = box
        elif category in ("text", "onomatopoeia"):
            kind = "onomatopoeia" if category == "onomatopoeia" else "dialogue"
            item = TextBox(
                box, str(annotation.get("text", "")).strip(), str(annotation.get("id")), kind=kind
            )
            texts.append(item)
            boxes[annotation.get("id")] = item
        elif category in ("character", "face"):
            identity = str(annotation.get("character", annotation.get("id")))
            book.characters.setdefault(identity, str(annotation.get("name", identity)))
            part = "face" if category == "face" else "body"
            item = CharacterBox(box, identity, str(annotation.get("id")), part)
            people.append(item)
            boxes[annotation.get("id")] = item
    for annotation, what in links:
        speaker = boxes.get(annotation.get("character_id"))
        linked = boxes.get(annotation.get("text_id"))
        if annotation.get("text_id") in balloon_ids:
            balloon = balloon_ids[annotation.get("text_id")]
            spoken = [t for t in texts if overlap_fraction(t.box, balloon) >= 0.5]
        else:
            spoken = [linked] if isinstance(linked, TextBox) else []
        if not spoken or not isinstance(speaker, CharacterBox):
            raise ComicsDataError(
                path,
                f"{what} links text {annotation.get('text_id')!r} to character "
                f"{annotation.get('character_id')!r}, but one of them is no text, balloon holding "
                "a text, or character annotation of this page",
            )
        for text in spoken:
            text.speaker = speaker.character
    panels = assemble_panels(frames, texts, people, book.direction)
    index = int(image.get("page_index", position))
    return Page(
        image=page_path, index=index, width=width, height=height, panels=panels, balloons=balloons
    )
