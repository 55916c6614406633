"""CoMix's XML form: the same pages as its COCO files, with polygons and links by id.

``<root>/annotations/*.xml`` hold ``<annotations>`` → ``<book title>`` → ``<characters><character
id name/>`` and ``<pages><page id width height>``, whose children are annotations with an ``id``
and a polygon ``points="x0,y0 x1,y1 …"``: ``<panel>``, ``<balloon>``, ``<text balloon_id>`` (its
content is the transcription), ``<character character_id>`` (a body; ``character_id`` names an
entry of ``<characters>``), ``<face character_id>``, ``<onomatopoeia>``, and ``<link_sbsc text_id
character_id>`` (the speaker link: a text annotation to a character annotation of the page). A
polygon becomes its bounding box. The page image is ``<root>/images/<title>/<page id>.<ext>`` (the
id as written, or zero-padded to three digits). Books read left to right unless ``directions``
says otherwise; they become the same ``Book`` objects as the COCO reader's.

Errors name the file and the line of the element at fault (XML has no other addresses).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from xml.parsers import expat

from domainvlm.core.files import resolve_within
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
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class _Document:
    """A parsed file and the line each element starts on, for errors (expat drives an
    ElementTree builder, which alone keeps no lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[int, int] = {}
        builder = ET.TreeBuilder()
        parser = expat.ParserCreate()

        def start(tag: str, attrs: dict[str, str]) -> None:
            self.lines[id(builder.start(tag, attrs))] = parser.CurrentLineNumber

        parser.StartElementHandler = start
        parser.EndElementHandler = builder.end
        parser.CharacterDataHandler = builder.data
        try:
            parser.Parse(path.read_bytes(), True)
            self.root = builder.close()
        except expat.ExpatError as exc:
            raise ComicsDataError(
                path, f"malformed XML at line {exc.lineno}, column {exc.offset}: {exc}"
            ) from exc
        except OSError as exc:
            raise ComicsDataError(path, f"cannot read: {exc}") from exc

    def error(self, element: ET.Element, problem: str) -> ComicsDataError:
        return ComicsDataError(
            self.path, f"line {self.lines.get(id(element), '?')}: <{element.tag}> {problem}"
        )


def xml_files(root: Path) -> list[Path]:
    folder = root / "annotations" if (root / "annotations").is_dir() else root
    return sorted(folder.glob("*.xml"))


def read_comix_xml(
    root: Path, path: Path, direction: Direction, directions: dict[str, Direction], bad: BadInput
) -> list[Book]:
    """The books of one CoMix XML file (bad pages go to ``bad``)."""
    document = _Document(path)
    if document.root.tag != "annotations":
        raise document.error(document.root, "is the root element; CoMix XML starts <annotations>")
    books = []
    for element in document.root.findall("book"):
        title = element.get("title")
        if not title:
            raise document.error(element, "has no title")
        book = Book(title, directions.get(title, direction), source="comix")
        book.characters = {
            c.get("id", ""): c.get("name") or c.get("id", "")
            for c in element.findall("characters/character")
            if c.get("id")
        }
        for page_element in element.findall("pages/page"):
            try:
                book.pages.append(_page(root, document, page_element, book))
            except ComicsDataError as error:
                bad.report(error)
        book.pages.sort(key=lambda page: page.index)
        books.append(book)
    return books


def _polygon(document: _Document, element: ET.Element, width: int, height: int) -> Box:
    try:
        points = [
            tuple(float(v) for v in pair.split(",")) for pair in element.get("points", "").split()
        ]
        xs, ys = [x for x, _ in points], [y for _, y in points]
    except ValueError as exc:
        raise document.error(element, f"has points that are not 'x,y x,y ...' ({exc})") from exc
    if len(points) < 2:
        raise document.error(element, "needs at least two points")
    try:
        return check_box((min(xs), min(ys), max(xs), max(ys)), width, height, document.path, "")
    except ComicsDataError as exc:
        raise document.error(element, exc.problem.lstrip()) from exc


def _page_image(root: Path, title: str, ident: str) -> Path | None:
    folder = resolve_within(root / "images", title)
    names = [ident] + ([f"{int(ident):03d}"] if ident.isdigit() else [])
    for name in names:
        for suffix in IMAGE_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    return None


def _page(root: Path, document: _Document, element: ET.Element, book: Book) -> Page:
    ident = element.get("id", "")
    try:
        width, height = int(element.get("width", "")), int(element.get("height", ""))
        index = int(ident)
    except ValueError as exc:
        raise document.error(element, f"lacks an integer id, width or height ({exc})") from exc
    try:
        image = _page_image(root, book.title, ident)
    except ValueError as exc:
        raise document.error(element, str(exc)) from exc
    if image is None:
        raise document.error(
            element, f"page image images/{book.title}/{ident}.jpg (or .png) is missing"
        )
    frames, texts, people, balloons = [], [], [], []
    annotations: dict[str, TextBox | CharacterBox] = {}
    balloon_ids, links = set(), []
    for child in element:
        if child.tag == "link_sbsc":
            links.append(child)
            continue
        if child.tag not in ("panel", "balloon", "text", "onomatopoeia", "character", "face"):
            continue
        box = _polygon(document, child, width, height)
        name = child.get("id", "")
        if child.tag == "panel":
            frames.append(box)
        elif child.tag == "balloon":
            balloons.append(box)
            balloon_ids.add(name)
        elif child.tag in ("text", "onomatopoeia"):
            kind = "onomatopoeia" if child.tag == "onomatopoeia" else "dialogue"
            item = TextBox(box, (child.text or "").strip(), name, kind=kind)
            texts.append(item)
            annotations[name] = item
        else:
            identity = child.get("character_id") or name
            if child.get("character_id") and identity not in book.characters:
                raise document.error(child, f"names character {identity!r}, not in <characters>")
            book.characters.setdefault(identity, identity)
            part = "face" if child.tag == "face" else "body"
            item = CharacterBox(box, identity, name, part)
            people.append(item)
            annotations[name] = item
    for child in element.findall("text"):
        if child.get("balloon_id") and child.get("balloon_id") not in balloon_ids:
            raise document.error(
                child, f"names balloon {child.get('balloon_id')!r}, which is not on this page"
            )
    for link in links:
        text = annotations.get(link.get("text_id", ""))
        speaker = annotations.get(link.get("character_id", ""))
        if not isinstance(text, TextBox) or not isinstance(speaker, CharacterBox):
            raise document.error(
                link,
                f"links text {link.get('text_id')!r} to character {link.get('character_id')!r}, "
                "but one of them is no text or character annotation of this page",
            )
        text.speaker = speaker.character
    panels = assemble_panels(frames, texts, people, book.direction)
    return Page(
        image=image, index=index, width=width, height=height, panels=panels, balloons=balloons
    )
