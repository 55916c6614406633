"""eBDtheque reader: SVG regions read back to boxes, rank vs rule order, namespaces, bad input,
dataset-root discovery and panel crops, on pages written to ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from domainvlm.core.errors import DataRootError
from domainvlm.domains.comics.books import dataset_roots, load_books
from domainvlm.domains.comics.ebdtheque import read_ebdtheque
from domainvlm.domains.comics.pages import (
    BadInput,
    ComicsDataError,
    SkippedPageWarning,
    crop_address,
    read_crop,
)
from PIL import Image, ImageDraw

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
LEFT, RIGHT = (250, 40, 40), (40, 60, 250)
"""Fill colours of the left and right panels of every written page."""

Region = tuple[str, str, dict[str, str]]
"""(class, polygon points, metadata attributes) of one annotated region."""


def write_page(
    root: Path,
    name: str,
    regions: list[Region],
    size: tuple[int, int] = (200, 100),
    namespaced: bool = True,
    image_element: bool = True,
) -> Path:
    """``GT/<name>.svg`` as eBDtheque lays it out (one ``<svg class>`` group per region class,
    a ``<metadata>`` child per polygon) and ``Pages/<name>.jpg``, left half red, right half blue."""
    width, height = size
    groups: dict[str, list[str]] = {}
    for region, points, metadata in regions:
        attributes = "".join(f' {k}="{v}"' for k, v in metadata.items())
        groups.setdefault(region, []).append(
            f'    <polygon points="{points}">\n      <metadata{attributes}/>\n    </polygon>'
        )
    body = "\n".join(
        f'  <svg class="{region}">\n' + "\n".join(polygons) + "\n  </svg>"
        for region, polygons in groups.items()
    )
    namespace = f' xmlns="{SVG_NAMESPACE}"' if namespaced else ""
    image = (
        f'  <image xlink:href="{name}.jpg" width="{width}" height="{height}"/>\n'
        if image_element
        else ""
    )
    svg = root / "GT" / f"{name}.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    svg.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg{namespace} xmlns:xlink="http://www.w3.org/1999/xlink">\n{image}{body}\n</svg>\n',
        encoding="utf-8",
    )
    page = Image.new("RGB", size, LEFT)
    ImageDraw.Draw(page).rectangle((width // 2, 0, width, height), fill=RIGHT)
    (root / "Pages").mkdir(exist_ok=True)
    page.save(root / "Pages" / f"{name}.jpg", quality=95)
    return svg


def two_panels(ranks: tuple[str | None, str | None] = ("2", "1")) -> list[Region]:
    """Left and right halves of a 200 x 100 page (the left drawn as a pentagon), a text line and a
    balloon in each, an untranscribed line, and a character on the left."""
    left_rank, right_rank = ({"rank": r} if r else {} for r in ranks)
    return [
        ("Panel", "2,3 98,3 98,97 50,99 2,97", {"id": "p_left", **left_rank}),
        ("Panel", "102,3 198,3 198,97 102,97", {"id": "p_right", **right_rank}),
        ("Balloon", "110,5 160,5 160,30 110,30", {"id": "b1", "tailTip": "150,60"}),
        ("Balloon", "10,5 60,5 60,30 10,30", {"id": "b2", "tailTip": "", "tailDirection": "S"}),
        ("Line", "115,10 155,10 155,20 115,20", {"id": "t1", "transcription": " Hello! "}),
        ("Line", "15,10 55,10 55,20 15,20", {"id": "t2", "transcription": "Bonjour"}),
        ("Line", "15,22 40,22 40,28 15,28", {"id": "t3"}),
        ("Character", "20,40 60,40 60,95 20,95", {"id": "c1", "unknownAttribute": "x"}),
    ]


def test_ranked_book_reads_back_exact_boxes(tmp_path: Path) -> None:
    write_page(tmp_path, "AUTHOR_BOOK_002", two_panels(("1", "2")))
    write_page(tmp_path, "AUTHOR_BOOK_001", two_panels(("2", "1")))
    write_page(tmp_path, "OTHER_ALBUM_T01_010", two_panels(("1", "2")), size=(210, 120))
    books = read_ebdtheque(tmp_path)
    assert [b.title for b in books] == ["AUTHOR_BOOK", "OTHER_ALBUM_T01"]
    book = books[0]
    assert (book.source, book.direction) == ("ebdtheque", "ltr")
    assert [p.index for p in book.pages] == [1, 2]
    assert [p.image.name for p in book.pages] == ["AUTHOR_BOOK_001.jpg", "AUTHOR_BOOK_002.jpg"]
    first, second = book.pages
    assert (first.width, first.height, books[1].pages[0].width) == (200, 100, 210)
    left, right = (2.0, 3.0, 98.0, 99.0), (102.0, 3.0, 198.0, 97.0)
    assert [p.box for p in first.panels] == [right, left]  # rank 1 is the right panel
    assert [p.id for p in first.panels] == ["p_right", "p_left"]
    assert [p.box for p in second.panels] == [left, right]
    assert [(t.text, t.id) for t in first.panels[0].texts] == [("Hello!", "t1")]
    assert [(t.text, t.id) for t in first.panels[1].texts] == [("Bonjour", "t2"), ("", "t3")]
    assert first.panels[0].texts[0].box == (115.0, 10.0, 155.0, 20.0)
    assert first.balloons == [(110.0, 5.0, 160.0, 30.0), (10.0, 5.0, 60.0, 30.0)]
    (person,) = first.panels[1].characters
    assert (person.box, person.id, person.part) == ((20.0, 40.0, 60.0, 95.0), "c1", "body")
    assert person.character == "AUTHOR_BOOK_001:c1"  # no identity across pages: anonymous
    assert first.panels[1].dialogue == "Bonjour"


@pytest.mark.parametrize("ranks", [(None, None), ("1", None), ("1", "1"), ("x", "2")])
def test_rule_order_without_full_ranks_and_direction_override(
    tmp_path: Path, ranks: tuple[str | None, str | None]
) -> None:
    write_page(tmp_path, "AUTHOR_BOOK_001", two_panels(ranks))
    (book,) = read_ebdtheque(tmp_path)
    assert [p.id for p in book.pages[0].panels] == ["p_left", "p_right"]
    (book,) = load_books(tmp_path, directions={"AUTHOR_BOOK": "rtl"})
    assert book.direction == "rtl"
    assert [p.id for p in book.pages[0].panels] == ["p_right", "p_left"]


def test_namespaced_and_plain_svg_read_alike(tmp_path: Path) -> None:
    books = []
    for namespaced in (True, False):
        root = tmp_path / str(namespaced)
        svg = write_page(root, "AUTHOR_BOOK_001", two_panels(), namespaced=namespaced)
        assert (SVG_NAMESPACE in svg.read_text()) is namespaced
        books.append(read_ebdtheque(root)[0].pages[0])
    plain, spaced = books
    assert [p.box for p in plain.panels] == [p.box for p in spaced.panels]
    assert [[t.text for t in p.texts] for p in plain.panels] == [["Hello!"], ["Bonjour", ""]]
    assert [[t.text for t in p.texts] for p in spaced.panels] == [["Hello!"], ["Bonjour", ""]]
    assert plain.balloons == spaced.balloons and len(plain.balloons) == 2


def test_page_size_from_the_image_header_without_an_image_element(tmp_path: Path) -> None:
    write_page(tmp_path, "AUTHOR_BOOK_001", two_panels(), size=(230, 140), image_element=False)
    page = read_ebdtheque(tmp_path)[0].pages[0]
    assert (page.width, page.height) == (230, 140)
    # A page stored on its side with an EXIF turn is decoded upright: its size is the turned one.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (140, 230)).save(page.image, exif=exif)
    page = read_ebdtheque(tmp_path)[0].pages[0]
    assert (page.width, page.height) == (230, 140) == read_crop(page.image).shape[1::-1]


def _edit_points(old: str, new: str):
    return lambda svg: svg.write_text(svg.read_text().replace(old, new, 1))


BAD_INPUTS = {
    "malformed XML": (
        lambda svg: svg.write_text(svg.read_text().replace("</svg>\n</svg>", "</svg>")),
        r"AUTHOR_BOOK_001\.svg: malformed XML at line \d+, column \d+",
    ),
    "unparsable points": (
        _edit_points("115,10 155,10", "115,10 abc,10"),
        r"AUTHOR_BOOK_001\.svg: Line polygon id='t1' has points that are not",
    ),
    "two points": (
        _edit_points("2,3 98,3 98,97 50,99 2,97", "2,3 98,97"),
        r"AUTHOR_BOOK_001\.svg: Panel polygon id='p_left' has 2 points; a polygon needs 3",
    ),
    "outside the page": (
        _edit_points("20,40 60,40 60,95", "20,40 60,40 60,105"),
        r"AUTHOR_BOOK_001\.svg: Character polygon id='c1' box .* outside the 200x100 page",
    ),
    "no id, odd coordinates": (
        lambda svg: svg.write_text(
            svg.read_text()
            .replace('<metadata id="b1"', "<metadata", 1)
            .replace("110,5 ", "110,", 1)
        ),
        r"AUTHOR_BOOK_001\.svg: Balloon polygon 1 \(no id\) has an odd count",
    ),
    "missing page image": (
        lambda svg: (svg.parents[1] / "Pages" / f"{svg.stem}.jpg").unlink(),
        r"AUTHOR_BOOK_001\.svg: page image Pages/AUTHOR_BOOK_001\.jpg .* is missing",
    ),
    "image without ground truth": (
        lambda svg: svg.unlink(),
        r"AUTHOR_BOOK_001\.jpg: has no ground truth GT/AUTHOR_BOOK_001\.svg",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_the_file_and_skipping_counts(tmp_path: Path, case: str) -> None:
    edit, message = BAD_INPUTS[case]
    edit(write_page(tmp_path, "AUTHOR_BOOK_001", two_panels()))
    write_page(tmp_path, "AUTHOR_BOOK_002", two_panels())
    with pytest.raises(ComicsDataError, match=message):
        read_ebdtheque(tmp_path)
    bad = BadInput(skip=True)
    with pytest.warns(SkippedPageWarning, match=r"skipped \(1 so far\)"):
        books = load_books(tmp_path, skip_bad=bad)
    assert bad.skipped == 1
    assert [(b.title, [p.index for p in b.pages]) for b in books] == [("AUTHOR_BOOK", [2])]


@pytest.mark.parametrize("folder", ["", "ebdtheque"])
def test_load_books_finds_an_ebdtheque_root(tmp_path: Path, folder: str) -> None:
    root = tmp_path / folder if folder else tmp_path
    write_page(root, "AUTHOR_BOOK_001", two_panels())
    assert dataset_roots(tmp_path) == {"ebdtheque": root}
    (book,) = load_books(tmp_path)
    assert (book.title, len(book.panels())) == ("AUTHOR_BOOK", 2)
    with pytest.raises(DataRootError, match=r"GT/\*\.svg \+ Pages/ \(eBDtheque\)"):
        load_books(tmp_path, formats=("manga109", "comix"))


def test_panel_crops_from_an_ebdtheque_root(tmp_path: Path) -> None:
    from domainvlm.core.transforms import ImageTransform
    from domainvlm.domains.comics.datamodule import PanelSequenceDataset

    for page in (1, 2):
        write_page(tmp_path, f"AUTHOR_BOOK_{page:03d}", two_panels(("1", "2")))
    books = load_books(tmp_path)
    for page, panel in books[0].panels():
        crop = read_crop(crop_address(page.image, panel.box))
        x1, y1, x2, y2 = (int(v) for v in panel.box)
        assert crop.shape == (y2 - y1, x2 - x1, 3)
        colour = LEFT if panel.id == "p_left" else RIGHT
        assert np.abs(crop[10:-10, 10:-10].mean(axis=(0, 1)) - colour).max() < 8
    dataset = PanelSequenceDataset(
        books, ImageTransform(32, (0.5,) * 3, (0.5,) * 3), context=1, negatives=1, train=False
    )
    assert len(dataset) == 3  # windows end at panels 2, 3 and 4 of the book
    item = dataset[0]
    assert item["panels"].shape == (2, 3, 32, 32)
    assert item["texts"] == ["Bonjour", "Hello!"]
    assert item["characters"].shape == (2, 3, 32, 32)
