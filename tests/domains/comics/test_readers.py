"""Manga109, CoMix, COMICS and ComicsPAP readers on the sample, reading order, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from domainvlm.domains.comics.books import load_books
from domainvlm.domains.comics.comics_folds import read_fold, read_ocr
from domainvlm.domains.comics.comicspap import read_comicspap, release_schema
from domainvlm.domains.comics.comix import read_comix
from domainvlm.domains.comics.manga109 import read_manga109
from domainvlm.domains.comics.pages import (
    BadInput,
    ComicsDataError,
    SkippedPageWarning,
    read_crop,
    reading_order,
)

# Two rows of two boxes: (x1, y1, x2, y2); the second row's boxes are slightly uneven.
GRID = [(0, 0, 10, 10), (12, 0, 22, 10), (0, 12, 10, 22), (12, 13, 22, 21)]


def test_reading_order_rule() -> None:
    assert reading_order(GRID, "ltr") == [0, 1, 2, 3]
    assert reading_order(GRID, "rtl") == [1, 0, 3, 2]
    assert reading_order(list(reversed(GRID)), "ltr") == [3, 2, 1, 0]


def test_manga109_books_are_right_to_left_with_speakers(sample_root: Path) -> None:
    books = read_manga109(sample_root / "manga109")
    assert [b.title for b in books] == (sample_root / "manga109/books.txt").read_text().split()
    book = books[0]
    assert book.direction == "rtl" and len(book.characters) == 6
    page, panel = book.panels()[0]
    assert panel.box[0] > page.width / 2  # the first manga panel is on the right
    assert len(panel.texts) == 2 and panel.texts[0].text.endswith("?")
    assert {t.speaker for t in panel.texts} == {c.character for c in panel.characters}
    # the asker stands on the reading-first (right) side
    asker = next(c for c in panel.characters if c.character == panel.texts[0].speaker)
    other = next(c for c in panel.characters if c.character != panel.texts[0].speaker)
    assert asker.box[0] > other.box[0]


def test_comix_books_are_left_to_right(sample_root: Path) -> None:
    books = read_comix(sample_root / "comix")
    assert books and all(b.direction == "ltr" for b in books)
    page, panel = books[0].panels()[0]
    assert panel.box[0] < page.width / 2
    asker = next(c for c in panel.characters if c.character == panel.texts[0].speaker)
    assert asker.box[0] < min(c.box[0] for c in panel.characters if c is not asker) + 1
    assert read_crop(f"{page.image}#xywh=0,0,20,10").shape == (10, 20, 3)


def test_splits_hold_whole_books(sample_root: Path) -> None:
    splits = {s: {b.title for b in load_books(sample_root, s)} for s in ("train", "val", "test")}
    assert all(splits.values())
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["val"])
    assert any(t.startswith("Manga") for t in splits["test"])
    assert any(t.startswith("Western") for t in splits["test"])


def test_direction_override_per_book(sample_root: Path) -> None:
    title = (sample_root / "manga109/books.txt").read_text().split()[0]
    book = read_manga109(sample_root / "manga109", [title], directions={title: "ltr"})[0]
    page, panel = book.panels()[0]
    assert book.direction == "ltr" and panel.box[0] < page.width / 2


def test_comics_folds_and_ocr(sample_root: Path) -> None:
    comics = sample_root / "comics"
    text = read_fold(comics, "text_cloze", "test_hard")
    assert text and all(len(i.options) == 3 and i.target_image for i in text)
    visual = read_fold(comics, "visual_cloze", "test_easy")
    assert all(Path(option).is_file() for i in visual for option in i.options)
    order = read_fold(comics, "char_coherence", "test_easy")
    assert all(len(i.options) == 2 for i in order)
    # the right order asks first: its question mark comes earlier
    assert all(i.options[i.answer].index("?") < i.options[1 - i.answer].index("?") for i in order)
    assert sum(len(v) for v in read_ocr(comics).values()) > 0


def test_comicspap_records(sample_root: Path) -> None:
    filling = read_comicspap(sample_root, "sequence_filling")
    assert filling and all(i.mask_index is not None and 0 < i.mask_index < 3 for i in filling)
    caption = read_comicspap(sample_root, "caption_relevance")
    assert all(i.context_texts and i.context_texts[-1] for i in caption)
    # character coherence as the release builds it: the answer panel and the same panel with its
    # two balloons' texts swapped; the pixels differ inside the balloons only
    coherence = read_comicspap(sample_root, "char_coherence")
    assert coherence and {i.chance for i in coherence} == {0.5}
    for instance in coherence[:3]:
        right, wrong = (Path(instance.options[k]) for k in (instance.answer, 1 - instance.answer))
        assert wrong.name == right.name.replace(".jpg", "_swapped.jpg")
        difference = np.abs(read_crop(right).astype(int) - read_crop(wrong).astype(int)).max(axis=2)
        rows = np.nonzero(difference.max(axis=1) > 60)[0]
        assert rows.size and rows.max() < 30  # balloons sit in the panel's top 30 pixels
    # text closure as released: the answer panel and two copies lettered with other panels' texts
    closure = read_comicspap(sample_root, "text_closure")
    assert closure and {i.chance for i in closure} == {1 / 3}
    for instance in closure[:3]:
        right = Path(instance.options[instance.answer])
        for k, option in enumerate(instance.options):
            if k == instance.answer:
                continue
            wrong = Path(option)
            assert wrong.name.startswith(right.stem + "_lettered_as_")
            difference = np.abs(read_crop(right).astype(int) - read_crop(wrong).astype(int))
            rows = np.nonzero(difference.max(axis=2).max(axis=1) > 60)[0]
            assert rows.size and rows.max() < 30


def _copy(sample_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sample_root, tmp_path / "copy"))


def _first_annotation(root: Path) -> Path:
    title = (root / "manga109/books.txt").read_text().split()[0]
    return root / "manga109/annotations" / f"{title}.xml"


def test_malformed_xml_names_file_and_line(sample_root: Path, tmp_path: Path) -> None:
    root = _copy(sample_root, tmp_path)
    path = _first_annotation(root)
    path.write_text(path.read_text().replace("</pages>", "</page>", 1))
    with pytest.raises(ComicsDataError, match=rf"{path.name}: malformed XML at line \d+"):
        read_manga109(root / "manga109")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda s: s.replace('xmax="', 'xmax="9', 1), "lies outside the 240x330 page"),
        (
            lambda s: s.replace('character="c0000001"', 'character="0fffffff"', 1),
            "not in <characters>",
        ),
    ],
)
def test_bad_boxes_and_characters(sample_root: Path, tmp_path: Path, edit, problem: str) -> None:
    root = _copy(sample_root, tmp_path)
    path = _first_annotation(root)
    path.write_text(edit(path.read_text()))
    with pytest.raises(ComicsDataError, match=problem):
        read_manga109(root / "manga109")


def test_speaker_link_to_missing_character(sample_root: Path, tmp_path: Path) -> None:
    root = _copy(sample_root, tmp_path)
    title = _first_annotation(root).stem
    dialog = root / "manga109/dialog" / f"{title}.xml"
    dialog.write_text(dialog.read_text().replace('speaker_id="', 'speaker_id="dead', 1))
    with pytest.raises(ComicsDataError, match="linked to speaker 'dead"):
        read_manga109(root / "manga109")


def test_missing_page_image_and_skipping(sample_root: Path, tmp_path: Path) -> None:
    root = _copy(sample_root, tmp_path)
    title = _first_annotation(root).stem
    (root / "manga109/images" / title / "000.jpg").unlink()
    with pytest.raises(ComicsDataError, match="page 0: page image .* is missing"):
        read_manga109(root / "manga109")
    with pytest.warns(SkippedPageWarning, match=r"skipped \(1 so far\)"):
        books = load_books(root, skip_bad=BadInput(skip=True))
    book = next(b for b in books if b.title == title)
    assert [p.index for p in book.pages] == [1]


def test_fold_row_naming_a_missing_panel(sample_root: Path, tmp_path: Path) -> None:
    root = _copy(sample_root, tmp_path)
    path = root / "comics/folds/visual_cloze_test_easy.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[3], "999_0_0", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ComicsDataError, match="line 3: panel '999_0_0' has no image"):
        read_fold(root / "comics", "visual_cloze", "test_easy")


def test_panels_gather_their_texts_and_drop_gutter_captions() -> None:
    from domainvlm.domains.comics.pages import CharacterBox, TextBox, assemble_panels

    texts = [
        TextBox((14, 1, 20, 4), "right"),  # inside the top-right panel
        TextBox((1, 1, 8, 4), "left"),  # top-left
        TextBox((9, 10, 13, 12), "gutter"),  # between the panels
    ]
    people = [CharacterBox((2, 13, 6, 20), "c1")]
    panels = assemble_panels(GRID, texts, people, "rtl")
    assert [p.dialogue for p in panels] == ["right", "left", "", ""]
    assert [len(p.characters) for p in panels] == [0, 0, 0, 1]  # bottom-left is read last


def test_crop_addresses_round_trip(tmp_path: Path) -> None:
    from domainvlm.domains.comics.pages import crop_address, split_crop

    address = crop_address(tmp_path / "p.jpg", (10.4, 20.0, 50.9, 40.0))
    assert address.endswith("p.jpg#xywh=10,20,40,20")
    assert split_crop(address) == (tmp_path / "p.jpg", (10, 20, 50, 40))
    assert split_crop(tmp_path / "plain.jpg") == (tmp_path / "plain.jpg", None)


def test_comix_speaker_link_to_nothing(sample_root: Path, tmp_path: Path) -> None:
    import json

    root = _copy(sample_root, tmp_path)
    path = root / "comix/annotations/comix_sample.json"
    coco = json.loads(path.read_text())
    link = next(a for a in coco["annotations"] if a["category_id"] == 6)
    link["character_id"] = 10**9
    path.write_text(json.dumps(coco))
    with pytest.raises(
        ComicsDataError, match=rf"comix_sample.json: annotation id {link['id']} \(link_sbsc\)"
    ):
        read_comix(root / "comix")


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = release_schema()
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _png(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _row(task: str, options: list[dict], answer: int = 1, index: int = 2) -> dict:
    context = [{"bytes": _png((10 * i, 0, 0)), "path": f"c{i}.png"} for i in range(2)]
    return {
        "sample_id": f"{task}-0",
        "context": context,
        "options": options,
        "index": index,
        "solution_index": answer,
        "split": "test",
        "task_type": task,
        "previous_panel_caption": "",
    }


def test_comicspap_parquet_round_trip(tmp_path: Path) -> None:
    from domainvlm.core.images import read_image

    red, blue = _png((255, 0, 0)), _png((0, 0, 255))
    options = [{"bytes": red, "path": "red.dcm"}, {"bytes": blue, "path": "blue.png"}]
    _parquet(
        tmp_path / "char_coherence/test-00000-of-00001.parquet",
        [_row("char_coherence", options), _row("char_coherence", options, answer=0, index=1)],
    )
    # another task's shard and another split's shard are not opened (they are not Parquet)
    (tmp_path / "visual_closure").mkdir()
    (tmp_path / "visual_closure/test-00000-of-00001.parquet").write_bytes(b"not parquet")
    (tmp_path / "char_coherence/val-00000-of-00001.parquet").write_bytes(b"not parquet")
    instances = read_comicspap(tmp_path, "char_coherence")
    assert [(i.answer, i.mask_index, len(i.options)) for i in instances] == [
        (1, None, 2),
        (0, 1, 2),
    ]
    first = instances[0]
    # decoded as PNG through core.images whatever the embedded name says (".dcm" is not DICOM)
    assert tuple(read_image(first.options[0])[0, 0]) == (255, 0, 0)
    assert tuple(read_image(first.options[1])[0, 0]) == (0, 0, 255)
    assert first.options[0] == instances[1].options[0]  # one file per distinct image


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ([{"bytes": b"", "path": "x.png"}], r"row 1: options\[0\] has empty or non-binary bytes"),
        (
            [{"bytes": b"%!PS-Adobe-3.0 EPSF", "path": "x.png"}],
            r"row 1: options\[0\] is not a decodable",
        ),
    ],
)
def test_comicspap_parquet_bad_rows_name_file_and_row(
    tmp_path: Path, options: list, problem: str
) -> None:
    good = [{"bytes": _png((0, 0, 0)), "path": "k.png"}]
    path = _parquet(
        tmp_path / "test-00000-of-00001.parquet",
        [_row("visual_closure", good, answer=0), _row("visual_closure", options, answer=0)],
    )
    with pytest.raises(ComicsDataError, match=rf"{path.name}: {problem}"):
        read_comicspap(tmp_path, "visual_closure")


def test_comicspap_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    (tmp_path / "test-00000-of-00001.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(ComicsDataError, match="not a readable Parquet file"):
        read_comicspap(tmp_path, "text_closure")


def test_sample_parquet_copy_matches_its_records(sample_root: Path) -> None:
    from domainvlm.domains.comics.sample_tasks import PARQUET_FOLDER

    for task in ("char_coherence", "sequence_filling"):
        parquet = read_comicspap(sample_root / PARQUET_FOLDER, task)
        records = read_comicspap(sample_root, task)
        assert [(i.answer, i.mask_index, len(i.options)) for i in parquet] == [
            (i.answer, i.mask_index, len(i.options)) for i in records
        ]
        assert Path(parquet[0].options[0]).read_bytes() == Path(records[0].options[0]).read_bytes()


def _coco_to_xml(coco_root: Path, out: Path) -> Path:
    """The sample's CoMix COCO pages written as CoMix XML (polygons, ids, links) beside images."""
    import json
    import xml.etree.ElementTree as ET

    coco = json.loads(next((coco_root / "annotations").glob("*.json")).read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    shutil.copytree(coco_root / "images", out / "images")
    root = ET.Element("annotations")
    books: dict[str, ET.Element] = {}
    for image in coco["images"]:
        title, page_file = image["file_name"].split("/")
        if title not in books:
            books[title] = ET.SubElement(root, "book", title=title)
            people = ET.SubElement(books[title], "characters")
            pages = {i["id"] for i in coco["images"] if i["file_name"].startswith(f"{title}/")}
            seen = {
                a["character"]: a["name"]
                for a in coco["annotations"]
                if "character" in a and a["image_id"] in pages
            }
            for ident, name in sorted(seen.items()):
                ET.SubElement(people, "character", id=ident, name=name)
            ET.SubElement(books[title], "pages")
        page = ET.SubElement(
            books[title].find("pages"),
            "page",
            id=Path(page_file).stem,
            width=str(image["width"]),
            height=str(image["height"]),
        )
        for a in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = a["bbox"]
            points = f"{x},{y} {x + w},{y} {x + w},{y + h} {x},{y + h}"
            extra = {"character_id": a["character"]} if "character" in a else {}
            if names[a["category_id"]] == "link_sbsc":
                extra = {"text_id": str(a["text_id"]), "character_id": str(a["character_id"])}
            element = ET.SubElement(
                page, names[a["category_id"]], id=str(a["id"]), points=points, **extra
            )
            element.text = a.get("text")
    ET.indent(root)
    path = out / "annotations" / "comix.xml"
    path.parent.mkdir(parents=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def test_comix_xml_reads_into_the_same_books_as_coco(sample_root: Path, tmp_path: Path) -> None:
    _coco_to_xml(sample_root / "comix", tmp_path / "xml")
    from_coco = {book.title: book for book in read_comix(sample_root / "comix")}
    from_xml = load_books(tmp_path / "xml")  # found as a CoMix root through its XML alone
    assert {book.title for book in from_xml} == set(from_coco)
    for book in from_xml:
        coco = from_coco[book.title]
        assert book.direction == "ltr" and book.characters == coco.characters
        assert [p.image.relative_to(tmp_path / "xml") for p in book.pages] == [
            p.image.relative_to(sample_root / "comix") for p in coco.pages
        ]
        assert [p.balloons for p in book.pages] == [p.balloons for p in coco.pages]
        for page, coco_page in zip(book.pages, coco.pages):
            assert page.panels == coco_page.panels  # boxes, texts, speakers, characters, order


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda s: s.replace('points="', 'points="x', 1), r"line \d+: <panel> has points"),
        (lambda s: s.replace(' text_id="', ' text_id="9', 1), r"line \d+: <link_sbsc> links"),
        (lambda s: s.replace("<text ", '<text balloon_id="77" ', 1), r"<text> names balloon"),
        (lambda s: s.replace('character_id="c', 'character_id="x', 1), "not in <characters>"),
        (lambda s: s.replace("</page>", "</pages>", 1), r"malformed XML at line \d+"),
    ],
)
def test_comix_xml_errors_name_file_and_line(
    sample_root: Path, tmp_path: Path, edit, problem: str
) -> None:
    path = _coco_to_xml(sample_root / "comix", tmp_path / "xml")
    path.write_text(edit(path.read_text()))
    with pytest.raises(ComicsDataError, match=rf"{path.name}: .*{problem}"):
        read_comix(tmp_path / "xml")


def test_comix_speaker_link_to_a_balloon(sample_root: Path, tmp_path: Path) -> None:
    """ "sbsc" is speech balloon → speaking character: a link may name the balloon around a text."""
    import json

    root = _copy(sample_root, tmp_path)
    path = root / "comix/annotations/comix_sample.json"
    coco = json.loads(path.read_text())
    by_id = {a["id"]: a for a in coco["annotations"]}
    link = next(a for a in coco["annotations"] if a["category_id"] == 6)
    text = by_id[link["text_id"]]
    tx, ty, tw, th = text["bbox"]
    balloon = next(
        a
        for a in coco["annotations"]
        if a["category_id"] == 3
        and a["image_id"] == text["image_id"]
        and a["bbox"][0] <= tx
        and a["bbox"][1] <= ty
        and tx + tw <= a["bbox"][0] + a["bbox"][2]
        and ty + th <= a["bbox"][1] + a["bbox"][3]
    )
    expected = {
        (b.title, p.index, t.id): t.speaker
        for b in read_comix(root / "comix")
        for p in b.pages
        for pn in p.panels
        for t in pn.texts
    }
    link["text_id"] = balloon["id"]
    path.write_text(json.dumps(coco))
    books = read_comix(root / "comix")
    got = {
        (b.title, p.index, t.id): t.speaker
        for b in books
        for p in b.pages
        for pn in p.panels
        for t in pn.texts
    }
    assert got == expected and got[next(k for k in got if k[2] == str(text["id"]))] is not None
