"""Manga109, CoMix, COMICS and ComicsPAP readers on the sample, reading order, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from domainvlm.domains.comics.books import load_books
from domainvlm.domains.comics.comics_folds import read_fold, read_ocr
from domainvlm.domains.comics.comicspap import read_comicspap
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
