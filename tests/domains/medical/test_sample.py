from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from domainvlm.domains.medical.dicom import read_dicom
from domainvlm.domains.medical.sample import FAKE_BIRTH_DATE, FAKE_PATIENT_NAME, write_sample
from domainvlm.domains.medical.text import (
    answer_vocabulary,
    read_report,
    read_roco_captions,
    read_vqa_splits,
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("medical") / "sample", size="small", seed=0)


def cases(root: Path) -> list[dict]:
    return json.loads((root / "manifest.json").read_text())["cases"]


def test_layout_and_splits(sample: Path) -> None:
    assert "SYNTHETIC" in (sample / "README.txt").read_text()
    rows = cases(sample)
    assert len(rows) == 36
    held_out = {row["id"] for row in rows if row["split"] == "test"}
    assert len(held_out) == 7
    train_captions = read_roco_captions(sample / "train" / "captions.txt")
    test_captions = read_roco_captions(sample / "test" / "captions.txt")
    assert set(test_captions) == held_out
    assert set(train_captions) == {row["id"] for row in rows} - held_out
    splits = read_vqa_splits(sample, "vqa_rad")
    test_images = {Path(item.image).stem for item in splits["test"]}
    assert test_images == held_out
    assert all(Path(item.image).is_file() for items in splits.values() for item in items)


def test_same_seed_same_bytes(sample: Path, tmp_path: Path) -> None:
    again = write_sample(tmp_path / "again", size="small", seed=0)
    files = sorted(path.relative_to(sample) for path in sample.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(again) for path in again.rglob("*") if path.is_file())
    for relative in files:
        assert (sample / relative).read_bytes() == (again / relative).read_bytes(), relative
    other = write_sample(tmp_path / "other", size="small", seed=1)
    assert (other / "manifest.json").read_bytes() != (sample / "manifest.json").read_bytes()


def test_dicom_files_and_tags(sample: Path) -> None:
    syntaxes: Counter[str] = Counter()
    photometrics = set()
    for row in cases(sample):
        ds = pydicom.dcmread(sample / "images" / f"{row['id']}.dcm")
        syntaxes[ds.file_meta.TransferSyntaxUID.name] += 1
        assert ds.file_meta.TransferSyntaxUID == row["transfer_syntax"]
        assert ds.PatientName == FAKE_PATIENT_NAME and ds.PatientBirthDate == FAKE_BIRTH_DATE
        assert int(ds.get("NumberOfFrames") or 1) == row["frames"]
        if row["modality"] == "CT":
            assert (ds.PixelRepresentation, ds.BitsAllocated) == (1, 16)
            assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (-1024.0, 1.0)
            assert "WindowCenter" in ds and "WindowWidth" in ds
        else:
            assert (ds.PixelRepresentation, ds.BitsStored) == (0, 12)
            photometrics.add(ds.PhotometricInterpretation)
    assert set(syntaxes) == {
        "Explicit VR Little Endian",
        "Implicit VR Little Endian",
        "Deflated Explicit VR Little Endian",
        "RLE Lossless",
        "JPEG 2000 Image Compression (Lossless Only)",
    }
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    assert sum(row["frames"] == 3 for row in cases(sample)) == 1


def test_reader_hides_the_fake_phi(sample: Path) -> None:
    for row in cases(sample):
        image = read_dicom(sample / "images" / f"{row['id']}.dcm")
        text = repr(image) + json.dumps(image.meta)
        for secret in (FAKE_PATIENT_NAME, "SAMPLE", FAKE_BIRTH_DATE, f"SYNTHETIC-{row['id']}"):
            assert secret not in text
        assert image.meta["Modality"] == row["modality"]


def test_ct_values_round_trip(sample: Path) -> None:
    row = next(row for row in cases(sample) if row["modality"] == "CT" and row["frames"] == 1)
    path = sample / "images" / f"{row['id']}.dcm"
    hounsfield = read_dicom(path, window=None).pixels
    assert hounsfield.min() >= -1024 and hounsfield.max() <= 3071
    corner = hounsfield[:4, :4]
    assert abs(float(corner.mean()) + 1000.0) < 10.0, "air outside the body is about -1000 HU"
    volume = read_dicom(sample / "images" / f"{cases_with_frames(sample)}.dcm", window=None)
    assert volume.pixels.shape == (3, 64, 64)


def cases_with_frames(root: Path) -> str:
    return next(row["id"] for row in cases(root) if row["frames"] > 1)


def box_filter(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, 1, mode="edge")
    rows, cols = image.shape
    return sum(padded[dy : dy + rows, dx : dx + cols] for dy in range(3) for dx in range(3)) / 9


def test_lesion_is_on_the_labelled_side(sample: Path) -> None:
    """Patient left is image right: a nodule is the brightest, a cyst the darkest spot there."""
    checked = 0
    for row in cases(sample):
        if row["finding"] == "none":
            continue
        image = box_filter(read_dicom(sample / "images" / f"{row['id']}.dcm", frame=0).pixels)
        side = image.shape[1]
        grid = np.linspace(-1, 1, side)
        band_rows = (grid >= -0.45) & (grid <= 0.35)
        image_right = (grid >= 0.24) & (grid <= 0.58)
        image_left = (grid <= -0.24) & (grid >= -0.58)
        right, left = image[band_rows][:, image_right], image[band_rows][:, image_left]
        lesion_side, other = (right, left) if row["laterality"] == "left" else (left, right)
        if row["finding"] == "nodule":
            assert lesion_side.max() > other.max() + 0.03, row
        else:
            assert lesion_side.min() < other.min() - 0.03, row
        checked += 1
    assert checked >= 25


def test_texts_describe_the_labels(sample: Path) -> None:
    for row in cases(sample):
        captions = read_roco_captions(sample / row["split"] / "captions.txt")
        caption = captions[row["id"]].lower()
        report = read_report(sample / "reports" / f"{row['id']}.txt")
        assert row["organ"] in caption and row["organ"] in report["findings"].lower()
        if row["finding"] == "none":
            assert report["impression"] == "No acute abnormality."
        else:
            assert row["laterality"] in caption
            expected = f"{row['laterality'].capitalize()} {row['organ']} {row['finding']}."
            assert report["impression"] == expected


def test_vqa_questions_match_the_labels(sample: Path) -> None:
    labels = {row["id"]: row for row in cases(sample)}
    splits = read_vqa_splits(sample, "vqa_rad")
    items = splits["train"] + splits["test"]
    assert {item.answer_type for item in items} == {"open", "closed"}
    raw = json.loads((sample / "trainset.json").read_text())
    assert {"qid", "image_name", "image_organ", "question_type", "phrase_type"} <= set(raw[0])
    for item in items:
        row = labels[Path(item.image).stem]
        if item.question_type == "ORGAN":
            assert item.answer == row["organ"]
        elif item.question_type == "POS" and item.answer_type == "open":
            assert item.answer == row["laterality"]
        elif item.question_type == "PRES":
            finding = "nodule" if "nodule" in item.question else "cyst"
            assert item.answer == ("yes" if row["finding"] == finding else "no")
        elif item.question_type == "MODALITY" and item.answer_type == "closed":
            assert item.answer == ("yes" if row["modality"] == "CT" else "no")
    vocabulary = answer_vocabulary(items)
    assert {"yes", "no", "chest", "brain", "abdomen", "left", "right", "ct", "x-ray"} <= set(
        vocabulary
    )
    assert len({item.qid for item in items}) == len(items)


def test_rejects_unknown_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size must be one of"):
        write_sample(tmp_path, size="huge")  # type: ignore[arg-type]


@pytest.mark.slow
def test_demo_size_covers_every_label_in_both_splits(tmp_path: Path) -> None:
    root = write_sample(tmp_path / "demo", size="demo", seed=0)
    rows = cases(root)
    assert len(rows) == 600
    for split in ("train", "test"):
        combos = {
            (row["modality"], row["organ"], row["finding"], row["laterality"])
            for row in rows
            if row["split"] == split
        }
        assert len(combos) == 30
    assert read_dicom(root / "images" / "SYN_0000.dcm").pixels.shape[-1] == 128
