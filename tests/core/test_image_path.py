"""One image path: a domain reader that knows its header size is asked before it decodes, an
explicit reader wins over suffixes, and every file error is one core class naming the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from domainvlm.core import errors, images
from domainvlm.core.images import ImageTooLargeError, SizedReader, read_image


def test_header_size_is_checked_before_the_reader_decodes(tmp_path: Path):
    scan = tmp_path / "scan.raw"
    scan.write_bytes(b"\0" * 16)
    decoded: list[Path] = []

    def decode(path: Path) -> np.ndarray:
        decoded.append(path)
        return np.zeros((4, 4, 1), np.uint8)

    reader = SizedReader(decode, header_pixels=lambda path: 5_000)
    with pytest.raises(ImageTooLargeError, match=r"scan\.raw: 5,000 pixels, above the limit"):
        read_image(scan, max_pixels=4_999, reader=reader)
    assert decoded == []
    assert read_image(scan, max_pixels=5_000, reader=reader).shape == (4, 4, 1)
    assert decoded == [scan]


def test_an_explicit_reader_wins_over_the_suffix(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(images, "load_domains", dict)
    png = tmp_path / "scan.png"
    png.write_bytes(b"not a png at all")
    array = read_image(png, reader=lambda path: np.full((2, 3), 7, np.uint16))
    assert array.shape == (2, 3, 1) and array.dtype == np.uint16
    with pytest.raises(images.ImageReadError, match=r"scan\.png: cannot read image"):
        read_image(png)


def test_every_file_error_is_one_core_class_naming_file_and_problem():
    from domainvlm.domains.comics import pages
    from domainvlm.domains.medical import dicom, text
    from domainvlm.domains.remote_sensing import data, rasters
    from domainvlm.domains.surgical import video

    assert data.AnnotationError is text.AnnotationError is errors.AnnotationError
    assert images.ImageReadError is errors.ImageReadError
    for cls in (rasters.RasterReadError, dicom.DicomReadError, ImageTooLargeError):
        assert issubclass(cls, errors.ImageReadError)
    for cls in (errors.AnnotationError, errors.ImageReadError, pages.ComicsDataError):
        assert issubclass(cls, errors.FileError) and issubclass(cls, errors.DomainVLMError)
    assert issubclass(video.SurgicalDataError, errors.FileError)
    error = rasters.RasterReadError("a/b.tif", "not a GeoTIFF")
    assert str(error) == "a/b.tif: not a GeoTIFF" and error.path == Path("a/b.tif")
    copy = pickle.loads(pickle.dumps(error))  # DataLoader workers send errors between processes
    assert type(copy) is rasters.RasterReadError and copy.problem == "not a GeoTIFF"


def test_pillow_opens_only_listed_formats_whatever_the_file_is_named(tmp_path: Path, monkeypatch):
    """Pillow picks its decoder from the content; EPS would run Ghostscript on the upload."""
    from domainvlm.domains.medical.dicom import image_reader
    from domainvlm.domains.remote_sensing.rasters import read_raster
    from PIL import Image

    monkeypatch.setattr(images, "load_domains", dict)
    eps = tmp_path / "figure.png"
    Image.new("RGB", (4, 4)).save(eps, format="EPS")
    with Image.open(eps) as image:
        assert image.format == "EPS"  # what an unrestricted open would decode with
    for read in (read_image, read_raster, image_reader):
        with pytest.raises(errors.ImageReadError, match="cannot identify image file") as info:
            read(eps)
        assert info.value.path == eps
