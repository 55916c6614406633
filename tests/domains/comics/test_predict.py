"""``domainvlm comics predict`` on annotated pages: the per-page JSON, the COCO result file, the
transcripts in reading order with speaker names, the picture, clusters across pages, and errors
that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_cli

W, H = 200, 100
# Two pages of one book. Page 1: panel A (left) holds Ada and two texts (the lower one read
# second), panel B (right) holds Bo and one text. Page 2: one panel with Bo.
PAGES = {
    11: {
        "panels": [(0, 0, 100, 100), (100, 0, 200, 100)],
        "characters": [("ada", "Ada", (10, 40, 40, 95)), ("bo", "Bo", (150, 40, 180, 95))],
        "texts": [
            ("and you?", (20, 30, 60, 38), 0),
            ("Hi, Bo.", (20, 5, 60, 20), 0),
            ("Hello!", (120, 5, 160, 20), 1),
        ],
    },
    12: {
        "panels": [(0, 0, 200, 100)],
        "characters": [("bo", "Bo", (20, 40, 50, 95))],
        "texts": [("Bye.", (20, 5, 60, 20), 0)],
    },
}


def write_comix(root: Path) -> Path:
    """A CoMix root: two pages (image ids 11 and 12) with boxes, names and speaker links."""
    annotations: list[dict] = []

    def add(image_id: int, category: int, box: tuple, **extra: object) -> int:
        x1, y1, x2, y2 = box
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                **extra,
            }
        )
        return len(annotations)

    images = []
    for image_id, page in PAGES.items():
        file_name = f"Book/{image_id}.png"
        (root / "images" / "Book").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), (255, 255, 255)).save(root / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": W, "height": H})
        for box in page["panels"]:
            add(image_id, 1, box)
        bodies = [
            add(image_id, 2, box, character=who, name=name) for who, name, box in page["characters"]
        ]
        for text, box, speaker in page["texts"]:
            text_id = add(image_id, 4, box, text=text)
            add(image_id, 6, box, text_id=text_id, character_id=bodies[speaker])
    (root / "annotations").mkdir(parents=True)
    coco = {"images": images, "annotations": annotations, "categories": []}
    (root / "annotations" / "book.json").write_text(json.dumps(coco))
    return root


@pytest.fixture
def predicted(tmp_path: Path, capsys) -> tuple[Path, dict]:
    root = write_comix(tmp_path / "comix")
    code, lines, _ = run_cli(capsys, "comics", "predict", "--pages", root, "--out", tmp_path / "o")
    assert code == 0
    return tmp_path / "o", json.loads(lines[-1])


def test_page_json_holds_the_annotated_boxes_links_clusters_and_order(predicted):
    out, summary = predicted
    assert summary["pages"] == 2 and summary["texts"] == 4 and summary["characters"] == 3
    page = json.loads((out / "Book" / "11.json").read_text())
    assert page["panels"] == [[0, 0, 100, 100], [100, 0, 200, 100]]
    assert page["characters"] == [[10, 40, 40, 95], [150, 40, 180, 95]]
    assert page["character_scores"] == [1.0, 1.0]
    # texts are listed panel by panel, each panel's in rule order (top first)
    assert page["text_contents"] == ["Hi, Bo.", "and you?", "Hello!"]
    assert page["text_character_associations"] == [[0, 0], [1, 0], [2, 1]]
    assert page["character_names"] == ["Ada", "Bo"]
    assert page["panel_reading_order"] == [0, 1] and page["text_reading_order"] == [0, 1, 2]
    assert page["sources"] == {
        "boxes": "annotation",
        "speakers": "annotation",
        "order": "rule",
        "text": "annotation",
        "clusters": "annotation",
        "names": "annotation",
    }


def test_clusters_are_shared_across_the_pages_of_a_book(predicted):
    out, _ = predicted
    first = json.loads((out / "Book" / "11.json").read_text())
    second = json.loads((out / "Book" / "12.json").read_text())
    assert first["character_cluster_labels"] == [0, 1]
    assert second["character_cluster_labels"] == [1]  # Bo again: his label from page 11


def test_coco_results_carry_the_annotation_ids_comix_categories_and_xywh(predicted):
    out, _ = predicted
    rows = json.loads((out / "coco_results.json").read_text())
    page_12 = sorted((r["category_id"], r["bbox"]) for r in rows if r["image_id"] == 12)
    assert page_12 == [(1, [0, 0, 200, 100]), (2, [20, 40, 30, 55]), (4, [20, 5, 40, 15])]
    assert {r["image_id"] for r in rows} == {11, 12} and {r["score"] for r in rows} == {1.0}
    images = json.loads((out / "coco_images.json").read_text())
    assert [image["id"] for image in images["images"]] == [11, 12]
    assert {c["name"]: c["id"] for c in images["categories"]}["face"] == 7


def test_transcripts_follow_reading_order_with_speaker_names(predicted, tmp_path, capsys):
    out, _ = predicted
    assert (out / "Book" / "11.txt").read_text().splitlines() == [
        "Ada: Hi, Bo.",
        "Ada: and you?",
        "Bo: Hello!",
    ]
    assert (out / "transcript.txt").read_text().splitlines() == [
        "== Book/11 ==",
        "Ada: Hi, Bo.",
        "Ada: and you?",
        "Bo: Hello!",
        "== Book/12 ==",
        "Bo: Bye.",
    ]
    root = tmp_path / "comix"
    run_cli(capsys, "comics", "predict", "--pages", root, "--out", tmp_path / "rtl", "--direction", "rtl")  # fmt: skip
    assert (tmp_path / "rtl" / "Book" / "11.txt").read_text().splitlines()[0] == "Bo: Hello!"


def test_the_picture_shows_boxes_and_speaker_links(predicted):
    out, summary = predicted
    picture = np.asarray(Image.open(out / "Book" / "11.png").convert("RGB"))
    assert picture.shape == (H, W, 3)
    assert summary["example_picture"] == str(out / "Book" / "11.png")
    assert (picture[50, 0] == 0).all()  # the left panel's black frame
    # the link from "Hello!" (centre 140, 12.5) to Bo (centre 165, 67.5) passes (148, 30)
    link = np.abs(picture.astype(int) - (230, 0, 60)).sum(axis=-1) < 30
    assert link[29:32, 146:151].any() and not link[60:90, 60:90].any()


def test_the_sample_predicts_every_held_out_annotation(sample_root: Path, tmp_path, capsys):
    code, lines, _ = run_cli(
        capsys, "comics", "predict", "--pages", sample_root, "--split", "test", "--out", tmp_path
    )
    summary = json.loads(lines[-1])
    assert code == 0 and summary["books"] == 2 and summary["texts"] == summary["associations"]
    pages = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/*.json"))]
    assert len(pages) == summary["pages"] == len(list(tmp_path.glob("*/*.png")))
    for page in pages:  # a name keeps one cluster label throughout its book
        pairs = {(page["book"], n, c) for n, c in zip(page["character_names"], page["character_cluster_labels"])}  # fmt: skip
        assert len({(b, n) for b, n, _ in pairs}) == len(pairs)


def test_errors_name_the_folder_or_file(tmp_path: Path, capsys):
    root = write_comix(tmp_path / "comix")
    out = ["--out", tmp_path / "o"]
    cases = [
        (["--pages", tmp_path / "missing"], "missing': the pages folder does not exist"),
        (["--pages", tmp_path / "comix" / "annotations"], "holds no pages"),
        (["--pages", root, "--split", "val"], "holds no pages in split 'val'"),
        (["--pages", root, "--detector", tmp_path / "none.ckpt"], "none.ckpt: --detector: no such"),
        (["--pages", root, "--bank", tmp_path], "--bank names clusters of --checkpoint"),
        (["--pages", root / "images"], "Book/11.png: this page has no annotation: give --detector"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, "comics", "predict", *argv, *out)
        assert code == 1 and message in err, (argv, err)
    (root / "images" / "Book" / "12.png").write_bytes(b"not a png")
    code, _, err = run_cli(capsys, "comics", "predict", "--pages", root, *out)
    assert code == 1 and "12.png: cannot read image" in err
