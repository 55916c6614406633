import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from domainvlm.domains.remote_sensing import rasters
from domainvlm.domains.remote_sensing.rasters import (
    RasterReadError,
    band_statistics,
    chip_windows,
    image_reader,
    read_raster,
)
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from tests.helpers import write_geotiff


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """4 bands, 40 x 50 px, values 1 + (band*1000 + row*50 + col), a 3-px nodata (0) border."""
    bands, rows, cols = np.indices((4, 40, 50))
    data = (1 + bands * 1000 + rows * 50 + cols).astype(np.uint16)
    data[:, :3, :] = 0
    data[:, :, :3] = 0
    path = write_geotiff(
        tmp_path / "scene.tif", data, tiled=True, blockxsize=16, blockysize=16, compress="deflate"
    )
    return path, data


def test_reads_pixels_crs_and_transform_exactly(scene):
    path, data = scene
    sample = read_raster(path)
    assert sample.array.dtype == np.uint16
    np.testing.assert_array_equal(sample.array, np.moveaxis(data, 0, -1))
    assert sample.crs == "EPSG:32631"
    assert sample.transform == (10.0, 0.0, 440_000.0, 0.0, -10.0, 5_420_000.0)
    assert sample.bounds == (440_000.0, 5_420_000.0 - 400, 440_000.0 + 500, 5_420_000.0)


def test_band_selection_keeps_requested_order(scene):
    path, data = scene
    rgb = read_raster(path, bands=[3, 2, 1]).array
    assert rgb.shape == (40, 50, 3)
    np.testing.assert_array_equal(rgb[10, 20], [data[2, 10, 20], data[1, 10, 20], data[0, 10, 20]])
    assert rgb[10, 20].tolist() == [2001 + 520, 1001 + 520, 1 + 520]


def test_window_read_has_window_pixels_transform_and_bounds(scene):
    path, data = scene
    sample = read_raster(path, bands=[4], window=Window(col_off=10, row_off=5, width=8, height=6))
    np.testing.assert_array_equal(sample.array[:, :, 0], data[3, 5:11, 10:18])
    assert sample.transform == (10.0, 0.0, 440_100.0, 0.0, -10.0, 5_419_950.0)
    assert sample.bounds == (440_100.0, 5_419_890.0, 440_180.0, 5_419_950.0)


def test_nodata_border_is_masked(scene):
    path, _ = scene
    mask = read_raster(path).valid_mask
    assert mask.shape == (40, 50)
    assert not mask[:3].any() and not mask[:, :3].any()
    assert mask[3:, 3:].all()


def test_a_pixel_is_invalid_when_any_selected_band_is_nodata(tmp_path):
    data = np.full((2, 4, 4), 7, dtype=np.uint16)
    data[1, 2, 2] = 0
    path = write_geotiff(tmp_path / "holes.tif", data)
    assert not read_raster(path).valid_mask[2, 2]
    assert read_raster(path, bands=[1]).valid_mask[2, 2]


def test_window_past_the_edge_is_padded_and_masked(scene):
    path, data = scene
    sample = read_raster(path, bands=[1], window=Window(40, 30, 16, 16))
    assert sample.array.shape == (16, 16, 1)
    np.testing.assert_array_equal(sample.array[:10, :10, 0], data[0, 30:40, 40:50])
    assert sample.valid_mask[:10, :10].all()
    assert not sample.valid_mask[10:].any() and not sample.valid_mask[:, 10:].any()
    assert (sample.array[10:] == 0).all()


def test_window_outside_the_image_is_an_error(scene):
    path, _ = scene
    with pytest.raises(RasterReadError, match="does not overlap the 50x40 image") as error:
        read_raster(path, window=Window(60, 0, 8, 8))
    assert error.value.path == path


@pytest.mark.parametrize("bands", [[5], [0, 1], [2, 9]])
def test_out_of_range_band_names_file_and_valid_range(scene, bands):
    path, _ = scene
    with pytest.raises(RasterReadError, match=r"file has 4 band\(s\).*valid range 1\.\.4") as error:
        read_raster(path, bands=bands)
    assert str(path) in str(error.value)


def test_truncated_geotiff_error_names_the_file(scene, tmp_path):
    path, _ = scene
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RasterReadError, match="corrupt or truncated") as error:
        read_raster(truncated)
    assert str(truncated) in str(error.value)


def test_garbage_and_missing_files_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00" + b"not a tiff" * 20)
    with pytest.raises(RasterReadError, match="garbage.tif: corrupt or truncated"):
        read_raster(garbage)
    with pytest.raises(RasterReadError, match="missing.tif: file does not exist"):
        read_raster(tmp_path / "missing.tif")
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.raises(RasterReadError, match="bad.png: corrupt or truncated image"):
        read_raster(bad_png)


def test_png_reads_exact_pixels_with_bands_and_window(tmp_path):
    pixels = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    sample = read_raster(tmp_path / "plain.png", bands=[3, 1], window=Window(1, 2, 3, 2))
    np.testing.assert_array_equal(sample.array, pixels[2:4, 1:4][:, :, [2, 0]])
    assert sample.crs is None and sample.transform is None
    assert sample.bounds == (1.0, 4.0, 4.0, 2.0)
    assert sample.valid_mask.all()
    edge = read_raster(tmp_path / "plain.png", window=Window(3, 4, 4, 4))
    assert edge.array.shape == (4, 4, 3)
    assert edge.valid_mask.sum() == 4


def test_palette_png_reads_as_colours_not_indices(tmp_path):
    image = Image.new("P", (3, 2))
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "palette.png")
    array = image_reader(tmp_path / "palette.png")
    assert array.shape == (2, 3, 4)
    assert array[0, 1, :3].tolist() == [200, 100, 50]


def test_grayscale_jpeg_reads_as_one_band(tmp_path):
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(tmp_path / "gray.jpg", quality=95)
    array = image_reader(tmp_path / "gray.jpg")
    assert array.shape == (8, 8, 1)
    assert abs(int(array.mean()) - 128) <= 2


def test_tiff_without_georeference_reads_quietly(tmp_path):
    path = tmp_path / "plain.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="GTiff", width=5, height=4, count=3, dtype="uint8"
        ) as dst:
            dst.write(np.full((3, 4, 5), 9, dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample = read_raster(path)
    assert sample.crs is None and sample.transform is None
    assert sample.bounds == (0.0, 4.0, 5.0, 0.0)
    assert image_reader(path).shape == (4, 5, 3)


def test_chip_windows_cover_the_scene_with_overlap_and_stay_inside():
    windows = chip_windows(150, 100, size=64, overlap=16)
    assert [(w.col_off, w.row_off) for w in windows] == [
        (0, 0), (48, 0), (86, 0), (0, 36), (48, 36), (86, 36),
    ]  # fmt: skip
    covered = np.zeros((100, 150), dtype=int)
    for w in windows:
        assert (w.width, w.height) == (64, 64)
        assert w.col_off + w.width <= 150 and w.row_off + w.height <= 100
        covered[w.row_off : w.row_off + 64, w.col_off : w.col_off + 64] += 1
    assert covered.min() >= 1
    assert covered[:, 48:64].min() >= 2


def test_chip_windows_edge_cases():
    assert chip_windows(64, 64, 64) == [Window(0, 0, 64, 64)]
    assert chip_windows(30, 20, 64) == [Window(0, 0, 64, 64)]
    assert len(chip_windows(128, 64, 64, overlap=0)) == 2
    with pytest.raises(ValueError, match="overlap"):
        chip_windows(100, 100, 64, overlap=64)
    with pytest.raises(ValueError, match="chip size"):
        chip_windows(100, 100, 0)


def _stats_scenes(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(3)
    first = rng.integers(100, 5000, size=(3, 23, 17)).astype(np.uint16)
    second = rng.integers(100, 9000, size=(3, 11, 29)).astype(np.uint16)
    first[:, :4] = 0
    second[:, :, -5:] = 0
    paths = [write_geotiff(tmp_path / "a.tif", first), write_geotiff(tmp_path / "b.tif", second)]
    valid = np.concatenate(
        [first[:, 4:].reshape(3, -1), second[:, :, :-5].reshape(3, -1)], axis=1
    ).astype(np.float64)
    return paths, valid


def test_band_statistics_match_numpy_over_valid_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(rasters, "STATISTICS_ROWS_PER_READ", 5)  # many strips: exercises merging
    paths, valid = _stats_scenes(tmp_path)
    stats = band_statistics(paths, [3, 1], tmp_path / "stats.json")
    assert stats.bands == (3, 1)
    assert stats.valid_pixels == valid.shape[1]
    np.testing.assert_allclose(stats.mean, valid[[2, 0]].mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, valid[[2, 0]].std(axis=1), rtol=1e-10)
    cached = json.loads((tmp_path / "stats.json").read_text())
    assert cached["mean"] == list(stats.mean)


def test_band_statistics_cache_is_reused_without_opening_files(tmp_path, monkeypatch):
    paths, _ = _stats_scenes(tmp_path)
    cache = tmp_path / "stats.json"
    first = band_statistics(paths, None, cache)
    opened = []
    real_open = rasterio.open
    monkeypatch.setattr(
        rasters.rasterio, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k)
    )
    assert band_statistics(paths, None, cache) == first
    assert opened == []
    assert band_statistics(paths, [1], cache).bands == (1,)  # different bands: recomputed
    assert opened


def test_band_statistics_recomputes_when_a_file_changes(tmp_path):
    paths, _ = _stats_scenes(tmp_path)
    cache = tmp_path / "stats.json"
    before = band_statistics(paths, [1], cache)
    write_geotiff(paths[0], np.full((3, 23, 17), 50_000, dtype=np.uint16))
    after = band_statistics(paths, [1], cache)
    assert after.mean[0] > before.mean[0]


def test_band_statistics_with_no_valid_pixels_is_an_error(tmp_path):
    path = write_geotiff(tmp_path / "empty.tif", np.zeros((1, 4, 4), dtype=np.uint16))
    with pytest.raises(RasterReadError, match="empty.tif: no valid pixels"):
        band_statistics([path], None, tmp_path / "stats.json")
    assert not (tmp_path / "stats.json").exists()
