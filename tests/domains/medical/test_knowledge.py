"""The report knowledge base: records from a dataset root, no identifiers, `kb build/search`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from domainvlm.core.checkpoint import load_system
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.errors import DataRootError
from domainvlm.domains.medical.dicom import SAFE_TAGS, read_dicom, read_dicom_meta
from domainvlm.domains.medical.knowledge import RECORD_TAGS, image_queries, report_records
from domainvlm.domains.medical.sample import FAKE_BIRTH_DATE, FAKE_PATIENT_NAME
from PIL import Image

from tests.helpers import run_cli

RECORD_KEYS = {"id", "text", "split", "image_file", "caption", "findings", "impression"}


def test_records_cover_every_split_once_with_whitelisted_tags(sample_root: Path):
    records = report_records(sample_root)
    cases = {
        case["id"]: case
        for case in json.loads((sample_root / "manifest.json").read_text())["cases"]
    }
    assert sorted(record["id"] for record in records) == sorted(cases)
    assert {record["split"] for record in records} == {"train", "test"}
    for record in records:
        case = cases[record["id"]]
        assert set(record) == RECORD_KEYS | set(RECORD_TAGS)
        assert (
            record["split"] == case["split"] and record["image_file"] == f"images/{case['id']}.dcm"
        )
        assert record["Modality"] == case["modality"]
        assert record["text"].startswith(record["impression"])
    dumped = json.dumps(records)
    for identifier in (FAKE_PATIENT_NAME, FAKE_BIRTH_DATE, "SYNTHETIC-SYN_", "PatientID"):
        assert identifier not in dumped
    assert set(RECORD_TAGS) <= set(SAFE_TAGS)


def test_read_dicom_meta_is_the_readers_whitelist_without_pixels(sample_root: Path):
    path = sample_root / "images" / "SYN_0004.dcm"
    meta = read_dicom_meta(path)
    decoded = read_dicom(path, frame=0).meta
    assert meta == {key: value for key, value in decoded.items() if key in SAFE_TAGS}
    assert "PatientName" not in meta and meta["Modality"] in ("CT", "DX")


def test_records_keep_findings_and_impression_only(tmp_path: Path):
    """A ROCO-layout folder of PNGs with one report whose other sections hold personal details."""
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "captions.txt").write_text("ROCO_1\tChest film.\nROCO_2\tHead CT.\n")
    (tmp_path / "images").mkdir()
    for name in ("ROCO_1", "ROCO_2"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / f"{name}.png")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "ROCO_1.txt").write_text(
        "HISTORY: Jane Roe, 54, seen on 2020-01-02.\nFINDINGS: Clear lungs.\n"
        "IMPRESSION: Normal chest.\nCOMPARISON: Jane Roe's prior film.\n"
    )
    first, second = report_records(tmp_path)
    assert first["text"] == "Normal chest. Clear lungs." and first["caption"] == "Chest film."
    assert "Jane" not in json.dumps(first) and "Modality" not in first
    assert second["text"] == "Head CT." and second["findings"] == second["impression"] == ""
    with pytest.raises(DataRootError, match="no captions.txt in any split"):
        report_records(tmp_path / "images")


def test_knowledge_queries_are_the_datasets_scans(sample_root: Path):
    queries = image_queries(sample_root)
    records = report_records(sample_root)
    assert [query["image"] for query in queries] == [record["image_file"] for record in records]
    assert all((sample_root / query["image"]).is_file() for query in queries)
    with pytest.raises(DataRootError, match="pass --data"):
        image_queries(None)


def test_kb_build_and_image_search_round_trip(
    pretrained: Path, sample_root: Path, tmp_path: Path, capsys
):
    kb = tmp_path / "kb"
    code, lines, _ = run_cli(
        capsys, "kb", "build", "--domain", "medical", "--data", sample_root,
        "--checkpoint", pretrained, "--out", kb,
    )  # fmt: skip
    summary = json.loads(lines[0])
    assert code == 0 and summary["count"] == 36 and summary["recall"] == 1.0
    assert summary["recall_queries"] == "image"  # the scans, through the image tower

    query = sample_root / "images" / "SYN_0004.dcm"
    code, lines, _ = run_cli(
        capsys, "kb", "search", kb, "--image", query, "-k", "3", "--filter", "split=train"
    )
    hits = [json.loads(line) for line in lines]
    # By hand: cosine of the query's pooled image embedding with every training report.
    encoder = load_system(pretrained).encoder()
    train = [record for record in report_records(sample_root) if record["split"] == "train"]
    image = encoder.encode_images(encoder.load_image(query)[None])
    cosine = (image @ encoder.encode_texts([record["text"] for record in train]).T)[0]
    best = cosine.topk(3)
    assert code == 0 and [hit["rank"] for hit in hits] == [1, 2, 3]
    assert [hit["record"]["id"] for hit in hits] == [train[i]["id"] for i in best.indices]
    assert [hit["score"] for hit in hits] == pytest.approx(best.values.tolist(), abs=1e-5)
    assert all(hit["record"]["split"] == "train" for hit in hits)


def test_kb_build_asks_for_the_dataset_when_the_domain_needs_one(
    pretrained: Path, tmp_path: Path, capsys
):
    code, _, err = run_cli(
        capsys, "kb", "build", "--domain", "medical", "--checkpoint", pretrained,
        "--out", tmp_path / "kb",
    )  # fmt: skip
    assert code == 1 and "pass --data ROOT" in err and not (tmp_path / "kb").exists()
    code, _, err = run_cli(
        capsys, "kb", "build", "--domain", "remote_sensing", "--data", tmp_path,
        "--checkpoint", pretrained, "--out", tmp_path / "kb",
    )  # fmt: skip
    assert code == 1 and "drop --data" in err
    (tmp_path / "items.jsonl").write_text('{"text": "x"}\n')
    code, _, err = run_cli(
        capsys, "kb", "build", "--jsonl", tmp_path / "items.jsonl", "--data", tmp_path,
        "--checkpoint", pretrained, "--out", tmp_path / "kb",
    )  # fmt: skip
    assert code == 1 and "use it with --domain" in err


def test_a_copied_checkpoint_keeps_its_identity(pretrained: Path, tmp_path: Path):
    """A knowledge base accepts any copy of the weights it was built with: nothing of the path
    (or of the data the model was trained on) enters the identity hash."""
    copy = shutil.copy(pretrained, tmp_path / "moved.ckpt")
    original, moved = load_encoder(str(pretrained)), load_encoder(str(copy))
    assert original.name == str(pretrained.resolve()) and moved.name == str(copy.resolve())
    assert original.identity()["sha256"] == moved.identity()["sha256"]
