import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from domainvlm.domains.remote_sensing.captions import CaptionDataset, find_caption_file
from domainvlm.domains.remote_sensing.data import (
    AnnotationError,
    BadFileWarning,
    normalise_class_name,
)
from domainvlm.domains.remote_sensing.rasters import RasterReadError
from domainvlm.domains.remote_sensing.rsvqa import RSVQADataset
from domainvlm.domains.remote_sensing.scenes import SceneChipDataset, SceneFolderDataset
from PIL import Image
from torch.utils.data import DataLoader

from tests.helpers import write_geotiff


def write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)


def write_tif(path: Path, data: np.ndarray) -> Path:
    return write_geotiff(
        path, data, origin=(500_000, 4_000_000), tiled=True, blockxsize=32, blockysize=32
    )


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


# -- caption sets --------------------------------------------------------------------------------


@pytest.fixture
def captions_root(tmp_path: Path) -> Path:
    """RSICD-like: 5 PNGs (pixel value = 10 * number), Karpathy JSON plus a Portuguese extra."""
    for number in range(5):
        write_png(tmp_path / "images" / f"img{number}.png", 10 * number)
    splits = ["train", "restval", "val", "test", "test"]
    images = [
        {
            "filename": f"img{number}.png",
            "imgid": number,
            "split": split,
            "sentences": [
                {"raw": f"english caption {number}", "tokens": ["english"]},
                {"raw": f"deutsche beschreibung {number}", "lang": "de"},
                {"tokens": ["tokens", "only", str(number)]},
            ],
        }
        for number, split in enumerate(splits)
    ]
    write_json(tmp_path / "dataset_toy.json", {"images": images})
    extra = [
        {"filename": "img0.png", "sentences": [{"raw": "legenda 0"}]},
        {"filename": "img3.png", "sentences": [{"raw": "legenda 3"}]},
    ]
    write_json(tmp_path / "dataset_toy_pt.json", {"images": extra})
    return tmp_path


def test_karpathy_splits_with_restval_in_train(captions_root):
    assert len(CaptionDataset(captions_root, "train")) == 2
    assert len(CaptionDataset(captions_root, "val")) == 1
    test = CaptionDataset(captions_root, "test")
    assert [image.filename for image in test.images] == ["img3.png", "img4.png"]


def test_languages_merge_by_filename_from_extra_files(captions_root):
    train = CaptionDataset(captions_root, "train")
    assert train.captions(0) == [
        ("english caption 0", "en"),
        ("deutsche beschreibung 0", "de"),
        ("tokens only 0", "en"),
        ("legenda 0", "pt"),
    ]
    assert train.captions(1)[-1] == ("tokens only 1", "en")
    assert CaptionDataset(captions_root, "test").languages == ["de", "en", "pt"]
    assert find_caption_file(captions_root).name == "dataset_toy.json"


def test_language_filter_keeps_only_those_captions(captions_root):
    portuguese = CaptionDataset(captions_root, "test", languages=["pt"])
    assert len(portuguese) == 1
    assert portuguese.captions(0) == [("legenda 3", "pt")]
    item = portuguese[0]
    assert (item["text"], item["lang"]) == ("legenda 3", "pt")
    with pytest.raises(AnnotationError, match="no 'val' captions in languages"):
        CaptionDataset(captions_root, "val", languages=["pt"])


def test_item_holds_image_pixels_and_one_of_its_captions(captions_root):
    train = CaptionDataset(captions_root, "train", transform=lambda a: a.astype(np.float32) / 255)
    item = train[1]
    assert set(item) == {"image", "text", "lang", "index"}
    assert item["index"] == 1
    assert item["image"].shape == (4, 4, 3) and item["image"].dtype == np.float32
    assert item["image"][0, 0, 0] == pytest.approx(10 / 255)
    assert (item["text"], item["lang"]) in train.captions(1)


def test_caption_draw_is_uniform_seeded_and_changes_with_epoch(captions_root):
    train = CaptionDataset(captions_root, "train", seed=7)
    again = CaptionDataset(captions_root, "train", seed=7)
    draws = []
    for epoch in range(400):
        train.set_epoch(epoch)
        again.set_epoch(epoch)
        assert train[0]["text"] == again[0]["text"]
        draws.append(train[0]["text"])
    counts = Counter(draws)
    assert set(counts) == {text for text, _ in train.captions(0)}
    assert min(counts.values()) > 60  # 4 captions x 400 draws: ~100 each


def test_set_epoch_reaches_persistent_workers(captions_root):
    train = CaptionDataset(captions_root, "train", seed=1)
    loader = DataLoader(
        train, batch_size=None, num_workers=1, persistent_workers=True, collate_fn=lambda x: x
    )
    seen = []
    for epoch in range(6):
        train.set_epoch(epoch)
        in_worker = [item["text"] for item in loader]
        train_texts = [train[i]["text"] for i in range(len(train))]
        assert in_worker == train_texts
        seen.append(tuple(in_worker))
    assert len(set(seen)) > 1


def test_caption_file_without_splits_names_file_and_problem(tmp_path):
    write_json(tmp_path / "dataset_x.json", {"images": [{"filename": "a.png", "sentences": []}]})
    with pytest.raises(AnnotationError, match=r"dataset_x.json: image #0 \(a.png\) has no 'split'"):
        CaptionDataset(tmp_path, "train")


def test_caption_file_errors(captions_root):
    with pytest.raises(AnnotationError, match=r"no images in split 'dev'; splits: \['restval'"):
        CaptionDataset(captions_root, "dev")
    with pytest.raises(AnnotationError, match="nothing.json: caption file does not exist"):
        CaptionDataset(captions_root, "train", annotation="nothing.json")
    with pytest.raises(AnnotationError, match="expected exactly one Karpathy caption file"):
        CaptionDataset(captions_root / "images", "train")
    write_json(captions_root / "dataset_list.json", [1, 2])
    with pytest.raises(AnnotationError, match="dataset_list.json: not Karpathy-style"):
        CaptionDataset(captions_root, "train", annotation="dataset_list.json")
    with pytest.raises(AnnotationError, match="found dataset_list.json, dataset_toy.json"):
        CaptionDataset(captions_root, "train")


def test_missing_image_is_an_error_or_a_counted_skip(captions_root):
    (captions_root / "images" / "img4.png").unlink()
    with pytest.raises(AnnotationError, match="dataset_toy.json: image .*img4.png does not exist"):
        CaptionDataset(captions_root, "test")
    with pytest.warns(BadFileWarning, match="skipped 1 of 2 images"):
        test = CaptionDataset(captions_root, "test", skip_bad_files=True)
    assert len(test) == 1


def test_corrupt_image_is_an_error_or_a_counted_skip(captions_root):
    (captions_root / "images" / "img3.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(RasterReadError, match="img3.png: corrupt"):
        CaptionDataset(captions_root, "test")[0]
    test = CaptionDataset(captions_root, "test", skip_bad_files=True)
    with pytest.warns(BadFileWarning, match=r"img3.png.*1 bad file\(s\) skipped"):
        item = test[0]
    assert item["index"] == 1 and item["image"][0, 0, 0] == 40
    assert test.bad_files == {str(captions_root / "images" / "img3.png")}


# -- scene folders -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("railwaystation", "railway station"),
        ("RailwayStation", "railway station"),
        ("railway_station", "railway station"),
        ("AnnualCrop", "annual crop"),
        ("SeaLake", "sea lake"),
        ("HerbaceousVegetation", "herbaceous vegetation"),
        ("baseball_diamond", "baseball diamond"),
        ("denseresidential", "dense residential"),
        ("Forest", "forest"),
        ("ground_track_field", "ground track field"),
        ("BareLand", "bare land"),
    ],
)
def test_class_name_normalisation(folder, name):
    assert normalise_class_name(folder) == name


@pytest.fixture
def scene_root(tmp_path: Path) -> Path:
    """EuroSAT-MS-like: 3 classes x 4 chips of 3 bands; band b of chip k in class c = 100c+10k+b."""
    for label, folder in enumerate(["AnnualCrop", "SeaLake", "railwaystation"]):
        for number in range(4):
            data = np.stack([np.full((8, 8), 100 * label + 10 * number + b) for b in (1, 2, 3)])
            write_tif(tmp_path / folder / f"{folder}_{number}.tif", data.astype(np.uint16))
    (tmp_path / "notes.txt").write_text("not an image folder")
    return tmp_path


def test_scene_folders_with_split_files(scene_root):
    (scene_root / "test.txt").write_text("SeaLake/SeaLake_2.tif\nAnnualCrop_0.tif\n\n")
    test = SceneFolderDataset(scene_root, "test", bands=[3, 1])
    assert test.classes == ["annual crop", "sea lake", "railway station"]
    assert test.folder_names == ["AnnualCrop", "SeaLake", "railwaystation"]
    assert len(test) == 2 and test.labels == [1, 0]
    item = test[0]
    assert item["label"] == 1 and item["path"].endswith("SeaLake_2.tif")
    assert item["image"][0, 0].tolist() == [123, 121]


def test_split_file_matches_other_suffix_by_stem_and_reports_missing(scene_root, tmp_path):
    listing = tmp_path / "eurosat-val.txt"
    listing.write_text("AnnualCrop_1.jpg\n")
    assert len(SceneFolderDataset(scene_root, "val", split_file=listing)) == 1
    listing.write_text("AnnualCrop_1.jpg\nRiver_9.jpg\n")
    with pytest.raises(AnnotationError, match=r"eurosat-val.txt: lists 1 image\(s\) not found"):
        SceneFolderDataset(scene_root, "val", split_file=listing)
    with pytest.warns(BadFileWarning, match="skipped 1 listed image"):
        assert len(SceneFolderDataset(scene_root, "val", listing, skip_bad_files=True)) == 1
    with pytest.raises(AnnotationError, match="nope.txt: split file does not exist"):
        SceneFolderDataset(scene_root, "val", split_file=tmp_path / "nope.txt")


def test_hash_split_is_a_deterministic_partition(scene_root):
    parts = {
        split: [
            item["path"]
            for item in SceneFolderDataset(scene_root, split, split_fractions=(0.5, 0.25, 0.25))
        ]
        for split in ("train", "val", "test")
    }
    every = [item["path"] for item in SceneFolderDataset(scene_root, "all")]
    assert sorted(sum(parts.values(), [])) == sorted(every) and len(every) == 12
    assert all(parts.values())
    again = SceneFolderDataset(scene_root, "val", split_fractions=(0.5, 0.25, 0.25))
    assert [item["path"] for item in again] == parts["val"]


def test_scene_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "Empty").mkdir()
    with pytest.raises(AnnotationError, match="no class folders containing images"):
        SceneFolderDataset(tmp_path, "all")


# -- large scenes as chips -----------------------------------------------------------------------


@pytest.fixture
def big_scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """2 bands, 80 rows x 100 cols; columns 0..39 are nodata, so 32-px chips at col 0 are empty."""
    data = np.indices((2, 80, 100)).sum(axis=0).astype(np.uint16) + 1
    data[:, :, :40] = 0
    return write_tif(tmp_path / "big.tif", data), data


def test_chips_carry_pixels_crs_transform_and_bounds(big_scene):
    path, data = big_scene
    chips = SceneChipDataset([path], size=32, overlap=0, bands=[2], drop_nodata_chips=True)
    assert [(w.col_off, w.row_off) for _, w in chips.chips] == [
        (32, 0), (64, 0), (68, 0), (32, 32), (64, 32), (68, 32), (32, 48), (64, 48), (68, 48),
    ]  # fmt: skip
    item = chips[1]
    np.testing.assert_array_equal(item["image"][:, :, 0], data[1, 0:32, 64:96])
    assert item["crs"] == "EPSG:32631"
    assert item["transform"] == (10.0, 0.0, 500_640.0, 0.0, -10.0, 4_000_000.0)
    assert item["bounds"] == (500_640.0, 3_999_680.0, 500_960.0, 4_000_000.0)
    assert item["valid_fraction"] == 1.0
    assert chips[0]["valid_fraction"] == pytest.approx(24 / 32)


def test_all_nodata_chip_raises_unless_dropped(big_scene):
    path, _ = big_scene
    chips = SceneChipDataset([path], size=32)
    assert len(chips) == 12
    with pytest.raises(
        RasterReadError, match="big.tif: chip at column 0, row 0 .* entirely nodata"
    ):
        chips[0]


def test_unreadable_scene_is_an_error_or_a_counted_skip(big_scene, tmp_path):
    path, _ = big_scene
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 16)
    with pytest.raises(RasterReadError, match="broken.tif"):
        SceneChipDataset([path, broken], size=32)
    with pytest.warns(BadFileWarning, match="1 of 2 scenes skipped"):
        chips = SceneChipDataset(
            [path, broken], size=32, drop_nodata_chips=True, skip_bad_files=True
        )
    assert len(chips) == 9


# -- RSVQA ---------------------------------------------------------------------------------------


@pytest.fixture
def rsvqa_root(tmp_path: Path) -> Path:
    for image_id in (0, 1):
        write_tif(
            tmp_path / "Images_LR" / f"{image_id}.tif", np.full((3, 4, 4), image_id + 1, np.uint16)
        )
    rows = [
        (0, "presence", "Is there a building?", "yes"),
        (0, "comp", "Are there more roads than buildings?", "no"),
        (1, "count", "How many buildings are there?", "12"),
        (1, "rural_urban", "Is it a rural or an urban area?", "rural"),
    ]
    questions = [
        {
            "id": i,
            "img_id": img,
            "type": kind,
            "question": q,
            "answers_ids": [100 + i],
            "active": True,
        }
        for i, (img, kind, q, _) in enumerate(rows)
    ]
    questions.append(
        {
            "id": 9,
            "img_id": 1,
            "type": "count",
            "question": "?",
            "answers_ids": [109],
            "active": False,
        }
    )
    answers = [
        {"id": 100 + i, "question_id": i, "answer": a, "active": True}
        for i, (*_, a) in enumerate(rows)
    ]
    images = [{"id": i, "questions_ids": [], "active": True} for i in (0, 1)]
    write_json(tmp_path / "LR_split_train_questions.json", {"questions": questions})
    write_json(tmp_path / "LR_split_train_answers.json", {"answers": answers})
    write_json(tmp_path / "LR_split_train_images.json", {"images": images})
    return tmp_path


def test_rsvqa_parses_questions_answers_types_and_vocabulary(rsvqa_root):
    vqa = RSVQADataset(rsvqa_root, "train")
    assert len(vqa) == 4
    assert vqa.types == ["comparison", "count", "presence", "rural_urban"]
    assert vqa.answer_vocabulary == ["12", "no", "rural", "yes"]
    item = vqa[2]
    assert item["question"] == "How many buildings are there?"
    assert (item["answer"], item["answer_index"], item["type"]) == ("12", 0, "count")
    assert item["image"].shape == (4, 4, 3) and item["image"][0, 0, 0] == 2
    assert vqa[1]["type"] == "comparison"
    shared = RSVQADataset(rsvqa_root, "train", answer_vocabulary=["yes", "no"])
    assert [shared[i]["answer_index"] for i in range(4)] == [0, 1, -1, -1]


def test_rsvqa_missing_files_and_dangling_answers(rsvqa_root):
    with pytest.raises(AnnotationError, match="LR_split_test_questions.json: RSVQA questions file"):
        RSVQADataset(rsvqa_root, "test")
    write_json(rsvqa_root / "LR_split_train_answers.json", {"answers": []})
    with pytest.raises(AnnotationError, match="LR_split_train_questions.json: question 0: bad"):
        RSVQADataset(rsvqa_root, "train")
