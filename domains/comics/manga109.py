"""Manga109: ``books.txt``, ``images/<title>/<idx:03d>.jpg`` and ``annotations/<title>.xml``, plus the
Manga109Dialog speaker links.

An annotation file is ``<book title>`` → ``<characters><character id name/>`` and
``<pages><page index width height>`` whose children are ``<frame|text|face|body id xmin ymin xmax
ymax>``; ``face`` and ``body`` carry ``character="<id>"`` and ``<text>`` holds the transcription.
Manga109Dialog adds ``<speaker_to_text id text_id speaker_id/>``, where the speaker is a body (or
face) id of the same book; its files may sit in ``dialog/<title>.xml`` or inside the annotation.
Manga is read right to left, so frames are ordered by the rule with ``direction="rtl"`` (Manga109
has no panel order of its own).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from domainvlm.core.files import resolve_within
from domainvlm.domains.comics.pages import (
    BadInput,
    Book,
    CharacterBox,
    ComicsDataError,
    Direction,
    Page,
    TextBox,
    assemble_panels,
    check_box,
    parse_xml,
)

BOX_TAGS = ("frame", "text", "face", "body")
DIALOG_DIRS = ("dialog", "Manga109Dialog")


def is_manga109_root(root: Path) -> bool:
    return (root / "books.txt").is_file() and (root / "annotations").is_dir()


def read_titles(root: Path) -> list[str]:
    path = root / "books.txt"
    try:
        titles = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ComicsDataError(path, f"cannot read the book list: {exc}") from exc
    return [title for title in titles if title]


def read_manga109(
    root: str | Path,
    titles: list[str] | None = None,
    direction: Direction = "rtl",
    directions: dict[str, Direction] | None = None,
    skip_bad: BadInput | None = None,
) -> list[Book]:
    """Books of a Manga109 root (all of ``books.txt`` unless ``titles``), in reading order.

    ``directions`` overrides the reading direction per title; ``skip_bad`` skips bad pages (a
    missing image, a box outside the page, a speaker link to nothing) with a counted warning.
    """
    root = Path(root)
    bad = skip_bad or BadInput()
    books = []
    for title in titles if titles is not None else read_titles(root):
        book_direction = (directions or {}).get(title, direction)
        books.append(read_book(root, title, book_direction, bad))
    return books


def read_book(root: Path, title: str, direction: Direction, bad: BadInput) -> Book:
    path = resolve_within(root, Path("annotations") / f"{title}.xml")
    if not path.is_file():
        raise ComicsDataError(
            path, f"book {title!r} is listed in books.txt but has no annotation file"
        )
    book_element = parse_xml(path)
    if book_element.tag != "book":
        raise ComicsDataError(path, f"root element is <{book_element.tag}>, not <book>")
    characters = {
        c.get("id", ""): c.get("name", "") for c in book_element.iter("character") if c.get("id")
    }
    links = _speaker_links(root, title, book_element)
    pages_element = book_element.find("pages")
    if pages_element is None:
        raise ComicsDataError(path, "has no <pages> element")
    # Speaker ids are body (or face) ids anywhere in the book: index them all first.
    owners = {
        element.get("id"): element.get("character")
        for element in pages_element.iter()
        if element.tag in ("face", "body") and element.get("id")
    }
    book = Book(title=title, direction=direction, characters=characters, source="manga109")
    for page_element in pages_element.findall("page"):
        try:
            page = _read_page(root, title, path, page_element, characters, links, owners, direction)
        except ComicsDataError as error:
            bad.report(error)
            continue
        book.pages.append(page)
    book.pages.sort(key=lambda page: page.index)
    return book


def _read_page(
    root: Path,
    title: str,
    path: Path,
    element: ET.Element,
    characters: dict[str, str],
    links: dict[str, str],
    owners: dict[str, str | None],
    direction: Direction,
) -> Page:
    try:
        index = int(element.get("index", ""))
        width, height = int(element.get("width", "")), int(element.get("height", ""))
    except ValueError as exc:
        raise ComicsDataError(path, f"a <page> lacks integer index/width/height ({exc})") from exc
    image = resolve_within(root, Path("images") / title / f"{index:03d}.jpg")
    if not image.is_file():
        alternatives = sorted(image.parent.glob(f"{index:03d}.*"))
        if not alternatives:
            raise ComicsDataError(path, f"page {index}: page image {image} is missing")
        image = alternatives[0]
    frames, texts, people = [], [], []
    for child in element:
        if child.tag not in BOX_TAGS:
            continue
        ident = child.get("id", "")
        what = f"page {index} <{child.tag} id={ident!r}>"
        try:
            corners = [float(child.get(k, "")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError as exc:
            raise ComicsDataError(path, f"{what} has non-numeric coordinates") from exc
        box = check_box(corners, width, height, path, what)
        if child.tag == "frame":
            frames.append(box)
        elif child.tag == "text":
            speaker = None
            if ident in links:
                speaker = owners.get(links[ident])
                if links[ident] not in owners or speaker not in characters:
                    raise ComicsDataError(
                        path,
                        f"{what} is linked to speaker {links[ident]!r}, which is no body or face "
                        "of a known character in this book",
                    )
            texts.append(TextBox(box, (child.text or "").strip(), ident, speaker))
        else:
            character = child.get("character", "")
            if character not in characters:
                raise ComicsDataError(
                    path, f"{what} names character {character!r}, not in <characters>"
                )
            people.append(CharacterBox(box, character, ident, child.tag))
    panels = assemble_panels(frames, texts, people, direction)
    return Page(image=image, index=index, width=width, height=height, panels=panels)


def _speaker_links(root: Path, title: str, book_element: ET.Element) -> dict[str, str]:
    """text id → speaker (body/face) id, from ``dialog/<title>.xml`` or the annotation itself."""
    elements = list(book_element.iter("speaker_to_text"))
    for folder in DIALOG_DIRS:
        dialog = root / folder / f"{title}.xml"
        if dialog.is_file():
            elements += list(parse_xml(dialog).iter("speaker_to_text"))
    return {
        link.get("text_id", ""): link.get("speaker_id", "")
        for link in elements
        if link.get("text_id")
    }
