from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from domainvlm.core import images
from domainvlm.core.images import (
    ImageReadError,
    ImageTooLargeError,
    pixel_limit,
    read_image,
    split_fragment,
    to_rgb_image,
)
from domainvlm.core.registry import DomainPlugin
from PIL import Image


def fake_plugin(readers: dict) -> DomainPlugin:
    return DomainPlugin(
        name="fake",
        description="test plugin",
        modalities=("image",),
        input_format="",
        channels="",
        data_licence="",
        configs_dir=Path("."),
        write_sample=lambda out_dir, **kwargs: out_dir,
        image_readers=readers,
    )


@pytest.fixture(autouse=True)
def no_installed_domains(monkeypatch):
    """Installed domains may claim .png or .tif; these tests pin down core's own decoding."""
    monkeypatch.setattr(images, "load_domains", dict)


def test_png_rgb_grey_and_16_bit_keep_their_pixels(tmp_path: Path):
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(read_image(tmp_path / "rgb.png"), rgb)

    grey = np.array([[0, 128], [200, 255]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert np.array_equal(read_image(tmp_path / "grey.png"), grey[:, :, None])

    deep = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    out = read_image(tmp_path / "deep.png")
    assert out.shape == (2, 2, 1) and np.array_equal(out[:, :, 0].astype(np.int64), deep)


def test_palette_png_becomes_rgb_and_jpeg_decodes(tmp_path: Path):
    palette = Image.new("P", (3, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([0, 1, 0, 1, 1, 0])
    palette.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 0, 255]

    Image.new("RGB", (16, 16), (10, 200, 30)).save(tmp_path / "solid.jpg", quality=95)
    jpeg = read_image(tmp_path / "solid.jpg").astype(int)
    assert jpeg.shape == (16, 16, 3) and np.abs(jpeg - [10, 200, 30]).max() <= 3


def test_corrupt_truncated_and_missing_files_name_the_file(tmp_path: Path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(ImageReadError, match="garbage.png"):
        read_image(garbage)

    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "whole.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    with pytest.raises(ImageReadError, match="truncated.png"):
        read_image(truncated)

    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def png_claiming_size(path: Path, width: int, height: int) -> None:
    """A valid-looking PNG header announcing a huge image: a decompression bomb's first bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat_data = zlib.compress(b"\0" * 16)
    idat = b"IDAT" + idat_data
    idat_chunk = struct.pack(">I", len(idat_data)) + idat + struct.pack(">I", zlib.crc32(idat))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + idat_chunk + iend)


def test_pixel_cap_stops_bombs_before_decoding(tmp_path: Path):
    bomb = tmp_path / "bomb.png"
    png_claiming_size(bomb, 9_000, 8_000)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png.*72,000,000 pixels"):
        read_image(bomb)
    png_claiming_size(bomb, 30_000, 30_000)  # beyond PIL's own limit as well
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png"):
        read_image(bomb)

    Image.new("RGB", (100, 100)).save(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png", max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageTooLargeError):
        read_image(tmp_path / "small.png", max_pixels=9_999)
    with pixel_limit(5_000), pytest.raises(ImageTooLargeError):
        read_image(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png").shape == (100, 100, 3)


def write_grey_video(path: Path, levels: list[int], fps: int = 2) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for level in levels:
            frame = np.full((32, 32, 3), level, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_video_frames_by_index_and_time(tmp_path: Path):
    levels = [20, 70, 120, 170, 220]
    clip = tmp_path / "clip.mp4"
    write_grey_video(clip, levels, fps=2)

    def level(spec: str) -> float:
        return float(read_image(spec).mean())

    assert abs(level(str(clip)) - levels[0]) < 4
    assert abs(level(f"{clip}#frame=3") - levels[3]) < 4
    assert abs(level(f"{clip}#t=1.0") - levels[2]) < 4
    assert abs(level(f"{clip}#t=2.0") - levels[4]) < 4
    with pytest.raises(ImageReadError, match="ends before frame 9"):
        read_image(f"{clip}#frame=9")
    with pytest.raises(ImageTooLargeError):
        read_image(f"{clip}#frame=1", max_pixels=100)
    Image.new("RGB", (2, 2)).save(tmp_path / "still.png")
    with pytest.raises(ImageReadError, match="address frames of videos"):
        read_image(f"{tmp_path / 'still.png'}#frame=1")


def test_fragment_parsing_keeps_real_files_named_with_hash(tmp_path: Path):
    assert split_fragment("a/clip.mp4#t=2.5") == (Path("a/clip.mp4"), 2.5, None)
    assert split_fragment("clip.mp4#frame=7") == (Path("clip.mp4"), None, 7)
    odd = tmp_path / "photo#frame=1.png"
    Image.new("RGB", (2, 2), (9, 9, 9)).save(odd)
    assert split_fragment(odd) == (odd, None, None)
    assert read_image(odd)[0, 0].tolist() == [9, 9, 9]


def test_domain_readers_win_by_suffix_geotiff_and_dicom(tmp_path: Path, monkeypatch):
    import pydicom
    import rasterio
    from pydicom.data import get_testdata_file

    def read_geotiff(path: Path) -> np.ndarray:
        with rasterio.open(path) as dataset:
            return dataset.read().transpose(1, 2, 0)

    def read_dicom(path: Path) -> np.ndarray:
        return pydicom.dcmread(path).pixel_array

    plugin = fake_plugin({".TIF": read_geotiff, ".dcm": read_dicom})
    monkeypatch.setattr(images, "load_domains", lambda: {"fake": plugin})

    bands = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5) * 50
    tif = tmp_path / "scene.tif"
    profile = {
        "driver": "GTiff",
        "width": 5,
        "height": 6,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": rasterio.transform.from_origin(500_000, 4_000_000, 10, 10),
    }
    with rasterio.open(tif, "w", **profile) as dataset:
        dataset.write(bands)
    assert np.array_equal(read_image(tif), bands.transpose(1, 2, 0))

    dicom = Path(get_testdata_file("CT_small.dcm"))
    expected = pydicom.dcmread(dicom).pixel_array
    out = read_image(dicom)
    assert out.shape == (*expected.shape, 1) and np.array_equal(out[:, :, 0], expected)


def test_failing_domain_reader_becomes_an_error_naming_the_file(tmp_path: Path, monkeypatch):
    def broken(path: Path) -> np.ndarray:
        raise RuntimeError("bad magic number")

    monkeypatch.setattr(images, "load_domains", lambda: {"fake": fake_plugin({".dcm": broken})})
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"\0" * 10)
    with pytest.raises(ImageReadError, match=r"scan\.dcm.*bad magic number"):
        read_image(bad)


def test_npy_arrays_are_read_without_pickle(tmp_path: Path):
    array = np.random.default_rng(0).random((3, 4, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    assert np.array_equal(read_image(tmp_path / "x.npy"), array)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match="objects.npy"):
        read_image(tmp_path / "objects.npy")


def test_to_rgb_image_scales_deep_data_and_repeats_grey():
    deep = np.array([[0, 1000, 2000]], dtype=np.uint16)[:, :, None]
    out = np.asarray(to_rgb_image(deep))
    assert out.shape == (1, 3, 3)
    assert out[0, :, 0].tolist() == [0, 128, 255] and (out[..., 0] == out[..., 2]).all()

    unit = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    assert np.asarray(to_rgb_image(unit))[0, 0].tolist() == [0, 128, 255]

    rgba = np.zeros((1, 1, 4), dtype=np.uint8)
    rgba[0, 0] = [1, 2, 3, 4]
    assert np.asarray(to_rgb_image(rgba))[0, 0].tolist() == [1, 2, 3]

    with pytest.raises(ImageReadError, match="13 channels"):
        to_rgb_image(np.zeros((2, 2, 13), dtype=np.uint16), "s2.tif")


HUGE_HEADER_READER = images.SizedReader(
    read=lambda path: pytest.fail("the reader decoded a file its header says is too large"),
    header_pixels=lambda path: 10**9,
)


def test_a_lazy_sized_reader_is_resolved_so_its_header_cap_holds(tmp_path: Path, monkeypatch):
    from domainvlm.core.registry import lazy

    plugin = fake_plugin({".raw": lazy(f"{__name__}:HUGE_HEADER_READER")})
    monkeypatch.setattr(images, "load_domains", lambda: {"fake": plugin})
    (tmp_path / "scene.raw").write_bytes(b"\0" * 16)
    with pytest.raises(ImageTooLargeError, match="scene.raw"):
        read_image(tmp_path / "scene.raw", max_pixels=1000)
