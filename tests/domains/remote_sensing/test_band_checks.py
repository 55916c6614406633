"""A checkpoint refuses rasters of another band count or pixel type (zeroshot, eval, kb build,
serve) with an error that says what it expects; --bands and --rescale map files onto it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from domainvlm.core.checkpoint import load_system
from domainvlm.core.encoder_loader import EncoderSpecError, load_encoder
from domainvlm.core.model_input import InputAdjustment, InputMismatchError
from domainvlm.domains.remote_sensing.rasters import read_raster

from tests.helpers import post_zeroshot, run_cli, write_geotiff

EXPECTS = "trained on 4-band uint16 files, reading bands [3, 2, 1, 4] as its 4 channels"


@pytest.fixture(scope="module")
def chip(rs_sample: Path) -> Path:
    """A training-like file: 4-band uint16 (B2, B3, B4, B8), from the sample's scene folders."""
    return sorted((rs_sample / "scene_classes").rglob("*.tif"))[0]


def landsat_like(chip: Path, out: Path) -> tuple[Path, int]:
    """The chip as a 6-band 8-bit file (coastal, B2, B3, B4, B8, SWIR), values divided by a
    factor that fits them into 8 bits: what another sensor's product looks like."""
    pixels = read_raster(chip).array.transpose(2, 0, 1).astype(np.float64)
    factor = int(np.ceil(pixels.max() / 255))
    scaled = np.round(pixels / factor).astype(np.uint8)
    filler = np.full_like(scaled[:1], 17)
    return write_geotiff(out, np.concatenate([filler, scaled, filler]), nodata=None), factor


def test_checkpoint_records_the_training_files_band_count_and_dtype(rs_checkpoint: Path):
    preprocessing = load_system(rs_checkpoint).preprocessing
    assert preprocessing["file_bands"] == 4 and preprocessing["file_dtype"] == "uint16"
    assert preprocessing["bands"] == [3, 2, 1, 4]


def test_zeroshot_refuses_other_band_counts_and_pixel_types(
    rs_checkpoint: Path, chip: Path, tmp_path: Path, capsys
):
    six_band, _ = landsat_like(chip, tmp_path / "landsat.tif")
    eight_bit = write_geotiff(tmp_path / "rgbn8.tif", np.full((4, 32, 32), 90, np.uint8))
    code, lines, _ = run_cli(
        capsys, "zeroshot", "--checkpoint", rs_checkpoint, "--classes", "forest,river",
        six_band, eight_bit, chip,
    )  # fmt: skip
    answers = [json.loads(line) for line in lines]
    assert code == 1
    assert answers[0]["error"].startswith(f"{six_band}: 6 band(s), but the model was {EXPECTS}")
    assert "--bands" in answers[0]["error"] and "--rescale" in answers[0]["error"]
    assert answers[1]["error"].startswith(f"{eight_bit}: uint8 pixels, but the model was {EXPECTS}")
    assert "error" not in answers[2] and answers[2]["label"] in ("forest", "river")


def test_bands_and_rescale_map_another_sensor_onto_the_training_data(
    rs_checkpoint: Path, chip: Path, tmp_path: Path, capsys
):
    six_band, factor = landsat_like(chip, tmp_path / "landsat.tif")
    adjustment = InputAdjustment(bands=(4, 3, 2, 5), rescale=(float(factor), 0.0))
    adjusted = load_encoder(str(rs_checkpoint), adjustment=adjustment).load_image(six_band)
    reference = load_encoder(str(rs_checkpoint)).load_image(chip)
    # Only the 8-bit rounding differs: at most factor/2 raw units, over the smallest band std.
    std = min(load_system(rs_checkpoint).preprocessing["std"])
    assert adjusted.shape == reference.shape == (4, 64, 64)
    assert torch.allclose(adjusted, reference, atol=factor / 2 / std + 1e-4)
    assert not torch.allclose(adjusted, reference, atol=1e-3)  # they are truly different files

    code, lines, _ = run_cli(
        capsys, "zeroshot", "--checkpoint", rs_checkpoint, "--classes", "forest,river",
        "--bands", "4,3,2,5", "--rescale", str(factor), six_band,
    )  # fmt: skip
    assert code == 0 and json.loads(lines[0])["label"] in ("forest", "river")


def test_adjustments_are_checked(rs_checkpoint: Path, chip: Path, tmp_path: Path, capsys):
    encoder = load_encoder(str(rs_checkpoint), adjustment=InputAdjustment(bands=(1, 2, 3)))
    with pytest.raises(InputMismatchError, match="3 bands chosen but the model takes 4 channels"):
        encoder.load_image(chip)
    encoder = load_encoder(str(rs_checkpoint), adjustment=InputAdjustment(bands=(1, 2, 3, 9)))
    with pytest.raises(InputMismatchError, match=r"band\(s\) \[9\] asked for but the file has 4"):
        encoder.load_image(chip)
    with pytest.raises(EncoderSpecError, match="--bands/--rescale"):
        load_encoder("openclip:dvlm-tiny", adjustment=InputAdjustment(rescale=(2.0, 0.0)))
    for option, value in (("--bands", "0,1"), ("--rescale", "0"), ("--rescale", "a,b")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(capsys, "zeroshot", "--checkpoint", rs_checkpoint, "--classes", "a,b",
                    option, value, chip)  # fmt: skip
        assert exit_info.value.code == 2 and option in capsys.readouterr().err


def test_eval_kb_build_and_serve_refuse_a_file_that_does_not_fit(
    rs_checkpoint: Path, chip: Path, tmp_path: Path, capsys
):
    six_band, factor = landsat_like(chip, tmp_path / "folders" / "forest" / "a.tif")
    landsat_like(chip, tmp_path / "folders" / "river" / "b.tif")
    code, _, err = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", rs_checkpoint,
        "--data", tmp_path / "folders", "--class-folders",
    )  # fmt: skip
    assert code == 1 and "6 band(s), but the model was" in err

    records = tmp_path / "folders" / "records.jsonl"
    records.write_text(json.dumps({"image": "forest/a.tif", "name": "a"}) + "\n")
    code, _, err = run_cli(
        capsys, "kb", "build", "--checkpoint", rs_checkpoint, "--jsonl", records,
        "--out", tmp_path / "kb",
    )  # fmt: skip
    assert code == 1 and "6 band(s), but the model was" in err and not (tmp_path / "kb").exists()

    refused = post_zeroshot(load_encoder(str(rs_checkpoint)), "scene.tif", six_band.read_bytes())
    assert refused.status_code == 400
    assert f"scene.tif: 6 band(s), but the model was {EXPECTS}" in refused.json()["error"]
    adjustment = InputAdjustment(bands=(4, 3, 2, 5), rescale=(float(factor), 0.0))
    adjusted = load_encoder(str(rs_checkpoint), adjustment=adjustment)
    accepted = post_zeroshot(adjusted, "scene.tif", six_band.read_bytes(), "forest,river")
    assert accepted.status_code == 200 and accepted.json()["label"] in ("forest", "river")
