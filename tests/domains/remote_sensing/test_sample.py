import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from domainvlm.domains.remote_sensing.captions import CaptionDataset
from domainvlm.domains.remote_sensing.knowledge import LANGUAGES
from domainvlm.domains.remote_sensing.rasters import read_raster
from domainvlm.domains.remote_sensing.rsvqa import RSVQADataset
from domainvlm.domains.remote_sensing.sample import (
    BORDER,
    CHIP,
    CLASSES,
    REGION_ORIGINS,
    ChipTruth,
    caption,
    write_sample,
)
from domainvlm.domains.remote_sensing.scenes import SceneFolderDataset
from rasterio.windows import Window

BRIGHT = 2800
"""Blue-band digital number above which only the counted objects lie (roofs/ships ~3200-3800)."""


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("rs") / "sample", size="small", seed=0)


@pytest.fixture(scope="module")
def karpathy(sample: Path) -> list[dict]:
    return json.loads((sample / "dataset_rsmclip.json").read_text(encoding="utf-8"))["images"]


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_writes_identical_files_and_another_seed_differs(sample, tmp_path):
    again = digests(write_sample(tmp_path / "again", size="small", seed=0))
    assert again == digests(sample)
    assert {"README.txt", "dataset_rsmclip.json", "scene_classes/test.txt"} <= set(again)
    other = digests(write_sample(tmp_path / "other", size="small", seed=1))
    assert other["dataset_rsmclip.json"] != again["dataset_rsmclip.json"]


def test_readme_says_synthetic(sample):
    assert "Synthetic" in (sample / "README.txt").read_text()


def test_unknown_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown sample size 'huge'"):
        write_sample(tmp_path, size="huge")


def test_every_language_in_every_split_with_five_sentences_per_image(karpathy):
    assert len(karpathy) == 20 * len(CLASSES)
    for split in ("train", "val", "test"):
        images = [image for image in karpathy if image["split"] == split]
        assert Counter(image["scene_class"] for image in images) == Counter(
            {label: len(images) // len(CLASSES) for label in CLASSES}
        )
        assert all(len(image["sentences"]) == 5 for image in images)
        assert {s["lang"] for image in images for s in image["sentences"]} == set(LANGUAGES)
    assert Counter(image["split"] for image in karpathy) == {"train": 140, "val": 30, "test": 30}


def test_caption_loader_reads_the_sample(sample):
    test = CaptionDataset(sample, "test")
    assert len(test) == 30 and test.languages == sorted(LANGUAGES)
    item = test[0]
    assert item["image"].shape == (CHIP, CHIP, 4) and item["image"].dtype == np.uint16
    assert (item["text"], item["lang"]) in test.captions(0)


def test_english_caption_states_class_count_and_position():
    truth = ChipTruth("Forest", "building", 3, "upper left", scene=0, row=0, col=0)
    assert (
        caption(truth, "en", 0)
        == "An aerial image of forest with three buildings in the upper left."
    )
    empty = ChipTruth("SeaLake", "ship", 0, "centre", scene=0, row=0, col=0)
    assert caption(empty, "en", 1) == "A satellite photo of sea or lake showing no ships."
    assert caption(truth, "de", 0) == "Luftbild: Wald mit drei Gebäuden oben links."
    assert caption(empty, "zh", 0) == "海洋或湖泊的航拍图像，没有船只。"


def test_scenes_are_tiled_georeferenced_four_band_with_nodata_border(sample):
    scenes = sorted((sample / "scenes").glob("*.tif"))
    assert len(scenes) == 2
    with rasterio.open(scenes[0]) as src:
        assert (src.count, src.dtypes[0], src.nodata) == (4, "uint16", 0)
        assert src.crs.to_string() == "EPSG:32631"
        assert src.block_shapes[0] == (256, 256)
        assert src.descriptions[3] == "B8 nir"
    mask = read_raster(scenes[0]).valid_mask
    assert not mask[:BORDER].any() and not mask[:, -BORDER:].any()
    assert mask[BORDER:-BORDER, BORDER:-BORDER].all()


def test_chips_are_cut_from_their_scene_with_its_georeference(sample, karpathy):
    for image in karpathy[::37]:
        scene, row, col = image["filename"].removesuffix(".tif").split("_")
        window = Window(BORDER + CHIP * int(col[1:]), BORDER + CHIP * int(row[1:]), CHIP, CHIP)
        from_scene = read_raster(sample / "scenes" / f"{scene}.tif", window=window)
        chip = read_raster(sample / "images" / image["filename"])
        np.testing.assert_array_equal(chip.array, from_scene.array)
        assert chip.transform == from_scene.transform and chip.crs == "EPSG:32631"


def test_pixels_show_the_captioned_objects_at_the_captioned_position(sample, karpathy):
    for image in karpathy:
        blue = read_raster(sample / "images" / image["filename"], bands=[1]).array[:, :, 0]
        bright = np.argwhere(blue > BRIGHT)
        objects = image["objects"]
        assert len(bright) == 16 * objects["count"], image
        if objects["count"]:
            top, left = REGION_ORIGINS[objects["region"]]
            assert bright.min(axis=0).tolist() >= [top, left]
            assert bright.max(axis=0).tolist() <= [top + 17, left + 17]


def test_land_cover_has_distinct_nir_signatures(sample, karpathy):
    nir = {label: [] for label in CLASSES}
    for image in karpathy:
        chip = read_raster(sample / "images" / image["filename"], bands=[4]).array
        nir[image["scene_class"]].append(float(np.median(chip)))
    mean_nir = {label: np.mean(values) for label, values in nir.items()}
    assert mean_nir["SeaLake"] < 300
    assert min(mean_nir[c] for c in ("Forest", "Pasture", "AnnualCrop")) > 2000


def test_scene_class_folders_share_the_held_out_split(sample, karpathy):
    test = SceneFolderDataset(sample / "scene_classes", "test")
    assert test.classes[:3] == ["annual crop", "forest", "herbaceous vegetation"]
    assert len(test.classes) == 10 and len(test) == 30
    train = SceneFolderDataset(sample / "scene_classes", "train")
    assert len(train) == 140
    held_out = {
        hashlib.sha256((sample / "images" / i["filename"]).read_bytes()).hexdigest()
        for i in karpathy
        if i["split"] == "test"
    }
    for path, label in test.samples:
        assert hashlib.sha256(path.read_bytes()).hexdigest() in held_out
        assert path.parent.name == CLASSES[label]


def test_rsvqa_answers_follow_the_ground_truth(sample, karpathy):
    vqa = RSVQADataset(sample / "rsvqa", "val")
    assert vqa.types == ["comparison", "count", "presence", "rural_urban"]
    questions = json.loads((sample / "rsvqa" / "LR_split_val_questions.json").read_text())
    image_of = {q["id"]: q["img_id"] for q in questions["questions"]}
    assert len(vqa) == len(image_of) == 30 * 6
    for (img_id, question, answer, kind), question_id in zip(vqa.questions, image_of):
        truth = karpathy[img_id]
        assert truth["split"] == "val" and image_of[question_id] == img_id
        if kind == "count":
            assert answer == str(truth["objects"]["count"])
        if kind == "rural_urban":
            urban = truth["scene_class"] in ("Residential", "Industrial")
            assert answer == ("urban" if urban else "rural")
        if question == "Is there water?":
            assert answer == ("yes" if truth["scene_class"] in ("River", "SeaLake") else "no")
    image = vqa[0]["image"]
    first = karpathy[vqa.questions[0][0]]["filename"]
    np.testing.assert_array_equal(image, read_raster(sample / "images" / first).array)
