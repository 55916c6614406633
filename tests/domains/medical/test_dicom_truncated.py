"""A compressed DICOM cut short inside its pixel data is reported as truncated, naming the file
(pydicom returns an empty data set for it, which used to read as "not an image")."""

from __future__ import annotations

from pathlib import Path

import pytest
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.domains.medical.dicom import DicomReadError, read_dicom, read_dicom_meta
from pydicom.data import get_testdata_file

from tests.helpers import post_zeroshot

COMPRESSED = ("MR_small_RLE.dcm", "SC_rgb_rle.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm")
"""RLE (decoded by numpy), JPEG 2000 and JPEG baseline: encapsulated pixel data of each kind."""
TRUNCATED = "truncated file: it ends inside its compressed Pixel Data"


def cut_inside_pixel_data(name: str, out_dir: Path) -> list[Path]:
    """Copies cut in the fragments' offset table, in the middle, and 4 bytes before their end."""
    data = Path(get_testdata_file(name)).read_bytes()
    start = data.rindex(b"\xe0\x7f\x10\x00")  # the top-level Pixel Data tag
    end = data.index(b"\xfe\xff\xdd\xe0", start)  # the delimiter after the last fragment
    cuts = (start + 40, (start + end) // 2, end - 4)
    paths = []
    for cut in cuts:
        path = out_dir / f"cut{cut}_{name}"
        path.write_bytes(data[:cut])
        paths.append(path)
    return paths


@pytest.mark.parametrize("name", COMPRESSED)
def test_cut_compressed_pixel_data_is_reported_truncated(name: str, tmp_path: Path):
    for path in cut_inside_pixel_data(name, tmp_path):
        with pytest.raises(DicomReadError, match=TRUNCATED) as info:
            read_dicom(path)
        assert info.value.path == path and str(info.value).startswith(f"{path}: ")
        assert read_dicom_meta(path)["Rows"] > 0  # the header before the pixels is intact


def test_a_data_set_without_pixels_is_still_not_an_image(tmp_path: Path):
    report = Path(get_testdata_file("rtplan.dcm"))
    with pytest.raises(DicomReadError, match="no Pixel Data element: a .*, not an image"):
        read_dicom(report)


def test_the_service_names_the_truncated_upload(pretrained: Path, tmp_path: Path):
    path = cut_inside_pixel_data("MR_small_RLE.dcm", tmp_path)[1]
    response = post_zeroshot(load_encoder(str(pretrained)), "study.dcm", path.read_bytes())
    assert response.status_code == 400
    assert f"study.dcm: {TRUNCATED}" in response.json()["error"]
