"""Caption sets as a researcher meets them: every error names the option that fixes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from domainvlm.domains.remote_sensing import PLUGIN
from domainvlm.domains.remote_sensing.captions import CaptionDataset
from domainvlm.domains.remote_sensing.data import AnnotationError
from domainvlm.domains.remote_sensing.system import RSMCLIP, InputChannelError

from tests.helpers import CONFIGS, run_cli


def caption_set(root: Path, splits: list[str], image_dir: str = "images", key: str = "sentences"):
    """Karpathy JSON for one image per split entry; the image files are empty (only existence
    is checked before an item is read)."""
    images = []
    for number, split in enumerate(splits):
        name = f"{number:02d}.png"
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        (root / image_dir / name).write_bytes(b"")
        images.append({"filename": name, "split": split, key: [{"raw": f"scene {number}"}]})
    (root / "dataset_rsicd.json").write_text(json.dumps({"images": images}))
    return root


def test_images_in_another_folder_name_the_image_dir_option(tmp_path: Path):
    root = caption_set(tmp_path, ["train"] * 3, image_dir="RSICD_images")
    with pytest.raises(AnnotationError) as error:
        CaptionDataset(root, "train")
    assert "none of the 3 images is in the image folder" in str(error.value)
    assert "--data.image_dir RSICD_images" in str(error.value)


def test_a_missing_file_names_the_skip_option(tmp_path: Path):
    root = caption_set(tmp_path, ["train"] * 3)
    (root / "images" / "01.png").unlink()
    with pytest.raises(AnnotationError, match="--data.skip_bad_files true"):
        CaptionDataset(root, "train")
    with pytest.warns(UserWarning, match="skipped 1 of 3 images"):
        assert len(CaptionDataset(root, "train", skip_bad_files=True)) == 2


def test_captions_instead_of_sentences_is_named(tmp_path: Path):
    root = caption_set(tmp_path, ["train"], key="captions")
    with pytest.raises(AnnotationError, match="has 'captions' where Karpathy caption JSON has"):
        CaptionDataset(root, "train")


def test_two_caption_files_name_the_annotation_flag(tmp_path: Path):
    root = caption_set(tmp_path, ["train"])
    (root / "dataset_other.json").write_text((root / "dataset_rsicd.json").read_text())
    with pytest.raises(AnnotationError, match="--data.annotation FILE"):
        CaptionDataset(root, "train")


def test_val_fraction_holds_out_part_of_train_for_a_set_without_val(tmp_path: Path):
    root = caption_set(tmp_path, ["train"] * 30 + ["restval"] * 10 + ["test"] * 5)
    with pytest.raises(AnnotationError, match="--data.val_fraction 0.1"):
        CaptionDataset(root, "val")
    train = CaptionDataset(root, "train", val_fraction=0.25)
    val = CaptionDataset(root, "val", val_fraction=0.25)
    assert not set(train.paths) & set(val.paths)
    assert len(train) + len(val) == 40 and 4 <= len(val) <= 16  # about a quarter of 40
    assert CaptionDataset(root, "val", val_fraction=0.25).paths == val.paths  # by name, stable
    assert len(CaptionDataset(root, "test", val_fraction=0.25)) == 5

    with_val = caption_set(tmp_path / "with_val", ["train", "val"])
    with pytest.raises(AnnotationError, match="drop val_fraction"):
        CaptionDataset(with_val, "train", val_fraction=0.25)


def test_a_band_count_the_model_cannot_take_is_refused_at_setup():
    system = RSMCLIP(in_chans=4, distill_weight=0.0)
    system.preprocessing = {"bands": [1, 2, 3], "file_bands": 4}
    with pytest.raises(InputChannelError, match="takes 4 input bands .* gives 3 from --data.bands"):
        system.setup("fit")
    system.preprocessing = {"bands": None, "file_bands": 13}
    with pytest.raises(InputChannelError, match=r"every band of the files \(13\)"):
        system.setup("validate")
    system.preprocessing = {"bands": [3, 2, 1, 4], "file_bands": 13}
    system.setup("fit")  # four bands of thirteen: fine


def test_fit_refuses_bands_the_model_cannot_take_naming_the_options(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    root = PLUGIN.write_sample(tmp_path / "sample", size="small")
    settings = yaml.safe_load((CONFIGS / "remote_sensing" / "tiny.yaml").read_text())
    settings["data"]["init_args"].update(root=str(root), bands=[1, 2, 3], num_workers=0)
    config = tmp_path / "three_bands.yaml"
    config.write_text(yaml.safe_dump(settings))
    code, _, err = run_cli(capsys, "fit", "--config", config, "--trainer.fast_dev_run", "1")
    assert code == 1
    assert "the model takes 4 input bands (model.in_chans) but the data gives 3" in err
    assert "--data.bands" in err and "--model.in_chans 3" in err
