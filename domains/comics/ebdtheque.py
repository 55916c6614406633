"""eBDtheque: ``Pages/<name>.jpg`` page images and ``GT/<name>.svg`` ground truth, one SVG per page.

What this reader relies on (everything else in a file is ignored):

- Page names are ``<author>_<book>_<page>``: the book is the name without its last ``_<page>``
  part, and a book's pages sort by that number (a name whose last part is not a number is a
  one-page book of its own, page 0). An SVG and its image share the name; the image may also be
  ``.jpeg`` or ``.png``.
- Each annotated region is a ``<polygon points="x1,y1 x2,y2 ...">`` (pixels, at least three
  points; read as its bounding box) directly inside an ``<svg class="...">`` group whose class
  names the region: ``Panel``, ``Balloon``, ``Line`` (a text line) or ``Character``; groups of other
  classes are skipped. Elements may carry the SVG namespace or none.
- A polygon's properties are the attributes of its ``<metadata>`` child, all optional: ``id``
  (kept as the box id), ``rank`` on panels (reading order from 1) and ``transcription`` on text
  lines. Balloons' ``tailTip``, ``tailDirection`` and border attributes are not kept (``Page``
  holds balloon boxes only); unknown attributes are ignored.
- The page size is the ``width``/``height`` of the SVG's ``<image>`` element, else the page
  image's header (no pixels decoded).

Panels follow ``rank`` when every panel of the page has a distinct integer one, else the reading
rule of ``pages.reading_order`` for the book's direction (left to right unless ``directions`` says
otherwise). Text lines go to the panel holding most of their area, as in every reader. eBDtheque
names no character identity or speaker: each character box is its own anonymous character
(``<page name>:<id>``, or the box's position on the page without an id), as CoMix annotations without an identity are.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

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
    parse_xml,
    reading_order,
)
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
REGIONS = ("Panel", "Balloon", "Line", "Character")
NUMBERS = re.compile(r"[\s,]+")
EXIF_ORIENTATION = 0x0112
ROTATED = (5, 6, 7, 8)
"""EXIF orientations that swap width and height: the decoder turns such a page upright."""


def is_ebdtheque_root(root: Path) -> bool:
    return (root / "GT").is_dir() and (root / "Pages").is_dir()


def read_ebdtheque(
    root: str | Path,
    direction: Direction = "ltr",
    directions: dict[str, Direction] | None = None,
    skip_bad: BadInput | None = None,
) -> list[Book]:
    """Books of an eBDtheque root (``GT/`` + ``Pages/``), pages in order, panels in reading order.

    ``skip_bad`` skips a bad page (malformed SVG, bad or outside polygon, an SVG without its image
    or an image without its SVG) with a counted warning instead of raising.
    """
    root = Path(root)
    bad = skip_bad or BadInput()
    svgs = {path.stem: path for path in sorted((root / "GT").glob("*.svg"))}
    images: dict[str, Path] = {}
    for path in sorted((root / "Pages").glob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            images.setdefault(path.stem, path)
    pages: dict[str, list[tuple[str, Page]]] = defaultdict(list)
    for name in sorted(svgs.keys() | images.keys()):
        title, index = split_name(name)
        book_direction = (directions or {}).get(title, direction)
        try:
            if name not in images:
                raise ComicsDataError(
                    svgs[name], f"page image Pages/{name}.jpg (or .jpeg, .png) is missing"
                )
            if name not in svgs:
                raise ComicsDataError(images[name], f"has no ground truth GT/{name}.svg")
            page = read_page(svgs[name], images[name], index, book_direction)
        except ComicsDataError as error:
            bad.report(error)
            continue
        pages[title].append((name, page))
    books = []
    for title in sorted(pages):
        book = Book(title, (directions or {}).get(title, direction), source="ebdtheque")
        ordered = sorted(pages[title], key=lambda item: (item[1].index, item[0]))
        book.pages = [page for _, page in ordered]
        books.append(book)
    return books


def split_name(name: str) -> tuple[str, int]:
    """``<author>_<book>_<page>`` → (``<author>_<book>``, page number)."""
    title, _, number = name.rpartition("_")
    if title and _is_number(number):
        return title, int(number)
    return name, 0


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _local(tag: object) -> str:
    """A tag or attribute name without its ``{namespace}``."""
    return str(tag).rpartition("}")[2]


def read_page(svg: Path, image: Path, index: int, direction: Direction) -> Page:
    """One page: its SVG's regions checked against the page size and gathered into panels."""
    document = parse_xml(svg)
    width, height = _page_size(svg, document, image)
    frames: list[tuple[Box, str, str | None]] = []
    texts, people, balloons = [], [], []
    for group in document.iter():
        classes = group.get("class", "").split()
        region = next((c for c in classes if c in REGIONS), None)
        if _local(group.tag) != "svg" or region is None:
            continue
        polygons = [child for child in group if _local(child.tag) == "polygon"]
        for number, polygon in enumerate(polygons, 1):
            metadata = next((c for c in polygon if _local(c.tag) == "metadata"), None)
            fields = {
                _local(k): v for k, v in (metadata.attrib if metadata is not None else {}).items()
            }
            ident = fields.get("id", "")
            what = f"{region} polygon " + (f"id={ident!r}" if ident else f"{number} (no id)")
            box = _polygon_box(svg, polygon, what, width, height)
            if region == "Panel":
                frames.append((box, ident, fields.get("rank")))
            elif region == "Balloon":
                balloons.append(box)
            elif region == "Line":
                texts.append(TextBox(box, fields.get("transcription", "").strip(), ident))
            else:
                anonymous = f"{svg.stem}:{ident or len(people) + 1}"
                people.append(CharacterBox(box, anonymous, ident))
    order = _ranked(frames) or reading_order([box for box, _, _ in frames], direction)
    panels = assemble_panels([frames[i][0] for i in order], texts, people, direction, ordered=True)
    for panel, i in zip(panels, order):
        panel.id = frames[i][1]
    return Page(image, index, width, height, panels, balloons)


def _ranked(frames: list[tuple[Box, str, str | None]]) -> list[int] | None:
    """Panel indexes by ``rank`` when every panel has a distinct integer one, else None."""
    ranks = [rank.strip() if rank else "" for _, _, rank in frames]
    if not frames or not all(_is_number(rank) for rank in ranks):
        return None
    values = [int(rank) for rank in ranks]
    if len(set(values)) != len(values):
        return None
    return sorted(range(len(frames)), key=values.__getitem__)


def _polygon_box(svg: Path, polygon: ET.Element, what: str, width: int, height: int) -> Box:
    text = polygon.get("points", "").strip()
    try:
        numbers = [float(v) for v in NUMBERS.split(text)] if text else []
    except ValueError as exc:
        raise ComicsDataError(svg, f"{what} has points that are not 'x,y x,y ...' ({exc})") from exc
    if len(numbers) % 2:
        raise ComicsDataError(svg, f"{what} has an odd count of coordinates in {text!r}")
    if len(numbers) < 6:
        raise ComicsDataError(svg, f"{what} has {len(numbers) // 2} points; a polygon needs 3")
    xs, ys = numbers[0::2], numbers[1::2]
    return check_box((min(xs), min(ys), max(xs), max(ys)), width, height, svg, what)


def _page_size(svg: Path, document: ET.Element, image: Path) -> tuple[int, int]:
    """The ``<image>`` element's width and height, else the page image's header."""
    for element in document.iter():
        if _local(element.tag) == "image" and element.get("width") and element.get("height"):
            try:
                width, height = (
                    round(float(element.get(k, "").strip().removesuffix("px")))
                    for k in ("width", "height")
                )
            except ValueError as exc:
                raise ComicsDataError(svg, f"<image> width/height are not numbers ({exc})") from exc
            if width <= 0 or height <= 0:
                raise ComicsDataError(svg, f"<image> size {width}x{height} is empty")
            return width, height
    try:
        with Image.open(image) as opened:
            width, height = opened.size
            if opened.getexif().get(EXIF_ORIENTATION) in ROTATED:
                width, height = height, width
    except Exception as exc:  # PIL raises many types for a file it cannot identify
        raise ComicsDataError(image, f"cannot read the page image's size: {exc}") from exc
    return width, height
