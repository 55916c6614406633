"""The service's pixel cap holds for a medical checkpoint: DICOM size is read from the header
(rows x columns of the decoded frame) before any pixel is decoded."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.images import ImageTooLargeError, read_image
from domainvlm.domains.medical.dicom import IMAGE_READER, header_pixels
from pydicom.data import get_testdata_file

from tests.helpers import post_zeroshot

CT = Path(get_testdata_file("CT_small.dcm"))
"""128 x 128, one frame: 16,384 pixels."""


def test_service_pixel_cap_covers_dicom_uploads(pretrained: Path):
    encoder = load_encoder(str(pretrained))
    refused = post_zeroshot(encoder, "ct.dcm", CT.read_bytes(), max_pixels=10_000)
    assert refused.status_code == 413
    assert "ct.dcm: 16,384 pixels, above the limit of 10,000" in refused.json()["error"]
    assert post_zeroshot(encoder, "ct.dcm", CT.read_bytes(), max_pixels=20_000).status_code == 200


def test_a_dicom_claiming_huge_frames_is_refused_before_decoding(tmp_path: Path):
    dataset = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    dataset.Rows = dataset.Columns = 60_000
    bomb = tmp_path / "bomb.dcm"
    dataset.save_as(bomb)
    assert header_pixels(bomb) == 3_600_000_000 and bomb.stat().st_size < 100_000
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="3,600,000,000 pixels"):
        read_image(bomb, reader=IMAGE_READER)
    assert time.perf_counter() - started < 2
