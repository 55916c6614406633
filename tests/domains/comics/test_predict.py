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
        "balloons": [(15, 2, 65, 25)],
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
        for box in page.get("balloons", []):
            add(image_id, 3, box)
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
    assert page_12 == [
        (1, [0, 0, 200, 100]),
        (2, [20, 40, 30, 55]),
        (3, [15, 2, 50, 23]),
        (4, [20, 5, 40, 15]),
    ]
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
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text('{"cluster_threshold": 0.15, "name_threshold": "high"}')
    cases = [
        (["--pages", tmp_path / "missing"], "missing': the pages folder does not exist"),
        (["--pages", tmp_path / "comix" / "annotations"], "holds no pages"),
        (["--pages", root, "--split", "val"], "holds no pages in split 'val'"),
        (["--pages", root / "images", "--split", "val"], "this is a folder of pages"),
        (["--pages", root, "--detector", tmp_path / "none.ckpt"], "none.ckpt: --detector: no such"),
        (["--pages", root, "--bank", tmp_path], "--bank names clusters of --checkpoint"),
        (["--pages", root, "--grounding", garbage], "garbage.ckpt' holds pickled objects"),
        (["--pages", root, "--checkpoint", "no.ckpt"], "encoder 'no.ckpt' is not an existing"),
        (["--pages", root, "--thresholds", thresholds], "thresholds.json: --thresholds cut the"),
        (
            ["--pages", root, "--checkpoint", "no.ckpt", "--thresholds", thresholds],
            "thresholds.json: 'name_threshold' must be a finite number, got 'high'",
        ),
        (["--pages", root / "images"], "Book/11.png: this page has no annotation: give --detector"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, "comics", "predict", *argv, *out)
        assert code == 1 and message in err, (argv, err)
    (root / "images" / "Book" / "12.png").write_bytes(b"not a png")
    code, _, err = run_cli(capsys, "comics", "predict", "--pages", root, *out)
    assert code == 1 and "12.png: cannot read image" in err


class HandDetector:
    """Detections fixed by hand: page 11's annotated boxes, moved a little, plus a stray text."""

    def detect(self, image: np.ndarray, thresholds=None) -> list:
        from domainvlm.domains.comics.detection import Detection

        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        return [
            Detection("panel", (101, 0, 199, 99), 0.9),
            Detection("panel", (1, 1, 99, 99), 0.8),
            Detection("character", (151, 41, 181, 95), 0.7),
            Detection("character", (11, 40, 41, 94), 0.6),
            Detection("text", (121, 5, 161, 21), 0.5),  # "Hello!" (IoU > 0.5)
            Detection("text", (20, 60, 40, 70), 0.4),  # matches no annotated text
            Detection("balloon", (115, 2, 165, 25), 0.3),
        ]


def test_detected_boxes_take_annotated_words_rule_speakers_and_placeholders(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    from domainvlm.domains.comics.detection import PageDetector

    monkeypatch.setattr(PageDetector, "from_checkpoint", lambda path, device="cpu": HandDetector())
    root = write_comix(tmp_path / "comix")
    (tmp_path / "det.ckpt").write_bytes(b"weights")
    argv = ["--pages", root, "--out", tmp_path / "o", "--detector", tmp_path / "det.ckpt"]
    assert run_cli(capsys, "comics", "predict", *argv)[0] == 0
    page = json.loads((tmp_path / "o" / "Book" / "11.json").read_text())
    assert page["panels"] == [[101, 0, 199, 99], [1, 1, 99, 99]]
    assert page["panel_scores"] == [0.9, 0.8] and page["balloons"] == [[115, 2, 165, 25]]
    assert page["panel_reading_order"] == [1, 0]  # left panel first
    assert page["text_contents"] == ["Hello!", "[text 1]"]
    assert page["text_reading_order"] == [1, 0]
    # the rule baseline: each text to the nearest character
    assert page["text_character_associations"] == [[0, 0], [1, 1]]
    assert page["character_cluster_labels"] is None
    assert page["sources"]["boxes"] == "detector" and page["sources"]["speakers"] == "rule"
    assert page["transcript"] == ["character box 1: [text 1]", "character box 0: Hello!"]
    rows = json.loads((tmp_path / "o" / "coco_results.json").read_text())
    assert {"image_id": 11, "category_id": 3, "bbox": [115, 2, 50, 23], "score": 0.3} in rows


def test_a_plain_folder_of_pages_with_a_detector(tmp_path: Path, capsys, monkeypatch):
    from domainvlm.domains.comics.detection import PageDetector

    monkeypatch.setattr(PageDetector, "from_checkpoint", lambda path, device="cpu": HandDetector())
    for name in ("p10.png", "p2.png", "chapter2/p1.png"):
        (tmp_path / "pages" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (W, H), 255).save(tmp_path / "pages" / name)  # greyscale → RGB
    (tmp_path / "det.ckpt").write_bytes(b"weights")
    argv = ["--pages", tmp_path / "pages", "--out", tmp_path / "o", "--detector", tmp_path / "det.ckpt"]  # fmt: skip
    code, lines, _ = run_cli(capsys, "comics", "predict", *argv)
    assert code == 0 and json.loads(lines[-1])["books"] == 2
    headers = [t for t in (tmp_path / "o" / "transcript.txt").read_text().splitlines() if "==" in t]
    assert headers == ["== pages/p2 ==", "== pages/p10 ==", "== chapter2/p1 =="]
    page = json.loads((tmp_path / "o" / "pages" / "p2.json").read_text())
    assert page["text_contents"] == ["[text 0]", "[text 1]"]
    assert page["sources"]["text"] == "none (no OCR engine; [text N] placeholders)"


def test_untrained_detector_and_grounding_checkpoints_load_and_run(tmp_path: Path, capsys):
    """The plumbing of real checkpoints (randomly initialised: what they find is not judged)."""
    import torch
    from domainvlm.domains.comics.detection_system import PageDetectionSystem
    from domainvlm.domains.comics.grounding_system import GroundingSystem

    from tests.helpers import save_checkpoint

    torch.manual_seed(0)
    detector = save_checkpoint(PageDetectionSystem(fpn_channels=32, head_convs=1), tmp_path / "d.ckpt")  # fmt: skip
    grounding = save_checkpoint(GroundingSystem(speaker_hidden=4, order_hidden=4), tmp_path / "g.ckpt")  # fmt: skip
    root = write_comix(tmp_path / "comix")
    argv = ["--pages", root, "--out", tmp_path / "o", "--grounding", grounding]
    assert run_cli(capsys, "comics", "predict", *argv)[0] == 0
    page = json.loads((tmp_path / "o" / "Book" / "11.json").read_text())
    assert page["sources"]["speakers"] == page["sources"]["order"] == "grounding"
    assert sorted(page["panel_reading_order"]) == [0, 1]
    assert sorted(page["text_reading_order"]) == [0, 1, 2]
    assert all(0 <= t < 3 and 0 <= c < 2 for t, c in page["text_character_associations"])
    argv = ["--pages", root, "--out", tmp_path / "d", "--detector", detector]
    assert run_cli(capsys, "comics", "predict", *argv)[0] == 0
    page = json.loads((tmp_path / "d" / "Book" / "11.json").read_text())
    assert page["sources"]["boxes"] == "detector"
    code, _, err = run_cli(capsys, "comics", "predict", "--pages", root, "--out", tmp_path / "x", "--detector", grounding)  # fmt: skip
    assert code == 1 and "not a comics page detector" in err


@pytest.fixture(scope="module")
def bank(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bank folder: two character crops per name, cut from the sample's training books."""
    from domainvlm.domains.comics.books import load_books
    from domainvlm.domains.comics.characters import book_crops
    from domainvlm.domains.comics.pages import read_crop

    folder = tmp_path_factory.mktemp("bank")
    for number, (address, _, name) in enumerate(book_crops(load_books(sample_root, "train")[0])):
        (folder / name).mkdir(exist_ok=True)
        if len(list((folder / name).iterdir())) < 2:
            Image.fromarray(read_crop(address)).save(folder / name / f"{number}.png")
    return folder


@pytest.mark.parametrize(
    ("cluster", "name", "one_cluster", "all_other"),
    [("2.0", "-1.0", True, False), ("2.0", "1.01", True, True)],
)
def test_checkpoint_clusters_across_pages_and_names_from_a_bank(
    sample_root, checkpoint, bank, tmp_path, capsys, cluster, name, one_cluster, all_other
):
    argv = ["--pages", sample_root, "--split", "test", "--out", tmp_path, "--checkpoint", checkpoint]  # fmt: skip
    argv += ["--bank", bank, "--cluster-threshold", cluster, "--name-threshold", name]
    assert run_cli(capsys, "comics", "predict", *argv)[0] == 0
    pages = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/*.json"))]
    labels = [label for page in pages for label in page["character_cluster_labels"]]
    names = {n for page in pages for n in page["character_names"]}
    assert len(labels) == sum(len(page["characters"]) for page in pages)
    assert set(labels) == {
        0
    }  # a distance cut at 2 (the largest cosine distance): one cluster per book
    assert (names == {"other"}) == all_other and len(names) == 1
    assert names <= {p.name for p in bank.iterdir()} | {"other"}
    assert (
        pages[0]["sources"]["clusters"] == "checkpoint" and pages[0]["sources"]["names"] == "bank"
    )


def test_the_thresholds_eval_characters_chose_reach_predict(
    sample_root, checkpoint, bank, tmp_path, capsys
):
    path = tmp_path / "thresholds.json"
    eval_args = ["--checkpoint", checkpoint, "--data", sample_root, "--write-thresholds", path]
    assert run_cli(capsys, "eval", "characters", *eval_args)[0] == 0
    written = json.loads(path.read_text())
    argv = ["--pages", sample_root, "--split", "test", "--out", tmp_path / "o", "--checkpoint", checkpoint]  # fmt: skip
    code, lines, err = run_cli(capsys, "comics", "predict", *argv, "--bank", bank, "--thresholds", path)  # fmt: skip
    tuned = f"{path}: chosen on the val books of {sample_root}"
    assert code == 0 and json.loads(lines[-1])["character_thresholds"] == {
        "cluster": written["cluster_threshold"],
        "name": written["name_threshold"],
        "cluster_from": tuned,
        "name_from": tuned,
    }
    assert (
        f"comics predict: character clusters cut at cosine distance "
        f"{written['cluster_threshold']:g} ({tuned}), names at similarity >= "
        f"{written['name_threshold']:g} ({tuned})"
    ) in err.splitlines()
    assert "warning" not in err  # written for this very checkpoint


def test_a_thresholds_file_sets_the_cuts_flags_win_and_another_checkpoint_is_warned_about(
    sample_root, checkpoint, bank, tmp_path, capsys
):
    path = tmp_path / "thresholds.json"
    record = {"cluster_threshold": 2.0, "name_threshold": 1.01, "checkpoint": "/elsewhere.ckpt"}
    path.write_text(json.dumps(record))
    argv = ["--pages", sample_root, "--split", "test", "--checkpoint", checkpoint, "--bank", bank]
    argv += ["--thresholds", path]
    names: dict[str, set] = {}
    for out, flags in (("file", []), ("flag", ["--name-threshold", "-1.0"])):
        code, lines, err = run_cli(capsys, "comics", "predict", *argv, *flags, "--out", tmp_path / out)  # fmt: skip
        pages = [json.loads(p.read_text()) for p in sorted((tmp_path / out).glob("*/*.json"))]
        assert code == 0 and {c for p in pages for c in p["character_cluster_labels"]} == {0}
        names[out] = {n for page in pages for n in page["character_names"]}
        assert f"{path} holds thresholds chosen for /elsewhere.ckpt, not for --checkpoint" in err
    assert names["file"] == {"other"}  # 1.01: no cluster is similar enough to any bank name
    assert names["flag"] and "other" not in names["flag"]  # -1.0: each takes its nearest name
    assert json.loads(lines[-1])["character_thresholds"]["name_from"] == "--name-threshold"


def test_a_dataset_root_as_bank_gives_named_crops_outside_the_predicted_pages(sample_root: Path):
    from domainvlm.domains.comics.pages import split_crop
    from domainvlm.domains.comics.predict import bank_entries
    from domainvlm.domains.comics.predict_inputs import PredictInputError, find_pages

    entries = bank_entries(sample_root, sample_root, "test", per_name=2)
    names = [name for name, _ in entries]
    assert sorted(set(names)) == ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay"]
    assert all(names.count(name) == 2 for name in set(names))
    predicted = {source.image for source in find_pages(sample_root, split="test")}
    assert not predicted & {split_crop(address)[0] for _, address in entries}
    with pytest.raises(PredictInputError, match="no annotated character outside the predicted"):
        bank_entries(sample_root, sample_root, None)
