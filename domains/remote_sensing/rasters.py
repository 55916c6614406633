"""Raster reading for remote sensing: GeoTIFF/COG through rasterio, plain PNG/JPEG through PIL.

One function reads every image a remote-sensing dataset holds, so band selection, nodata masking and
georeference behave the same for a 13-band Sentinel-2 scene, a EuroSAT chip and an RSICD JPEG.
Band indices are 1-based as in GDAL (Sentinel-2 ``B4,B3,B2`` in a B1..B12 stack is ``(4, 3, 2)``).

Every file is treated as untrusted. GDAL opens whatever its drivers recognise, and some formats
reach beyond the file: a VRT (even one named ``x.tif``) can read any file on the machine as pixels
or fetch a URL through ``/vsicurl/``. So ``.tif``/``.tiff`` files must start with a TIFF signature
and are opened with the GTiff driver only (it reads GeoTIFF and COG, and nothing else), inside a
GDAL environment (``SAFE_GDAL_ENV``) that lists no sibling files (no ``.aux.xml``, ``.ovr``,
``.msk`` or world-file look-ups) and lets ``/vsicurl/`` open nothing. PNG/JPEG go through PIL.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from domainvlm.core.errors import ImageReadError
from domainvlm.core.files import atomic_write_json
from domainvlm.core.images import SizedReader
from PIL import Image, UnidentifiedImageError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
PIL_FORMATS = ("PNG", "JPEG")
"""The only formats Pillow may open here, whatever the content says (an EPS named .png is refused)."""
RASTERIO_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = RASTERIO_SUFFIXES + PIL_SUFFIXES
STATISTICS_ROWS_PER_READ = 512
"""Rows read at once while computing statistics: bounds memory on 10980-px Sentinel-2 tiles."""

PIL_MODE_DTYPES = {"1": "bool", "I": "int32", "F": "float32"}
"""Pixel types of PIL modes other than the 8-bit ones (``I;16`` modes are uint16)."""
GDAL_DRIVER = "GTiff"
"""The only GDAL driver a file is opened with: GeoTIFF and COG (a COG is a tiled GeoTIFF)."""
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
"""Classic and BigTIFF, little- and big-endian."""
SAFE_GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_PAM_ENABLED": "NO",
    "CPL_VSIL_CURL_ALLOWED_FILENAME": "/domainvlm/network-access-is-off",
}
"""No sibling-file look-ups, no .aux.xml metadata, and /vsicurl/ may open only a name no URL has."""

Bounds = tuple[float, float, float, float]


class RasterReadError(ImageReadError):
    """A raster that cannot be read as asked: corrupt, truncated, missing, not a GeoTIFF/PNG/JPEG,
    or a bad band/window."""


@dataclass
class RasterSample:
    """Pixels plus everything needed to put them back on the map.

    ``bounds`` is ``(left, bottom, right, top)`` in CRS units; without georeference it is in pixel
    units of the source image (y grows downward, so ``bottom > top``).
    """

    array: np.ndarray
    """HWC, the file's native dtype."""
    valid_mask: np.ndarray
    """HW bool: False where any selected band is nodata/masked, or outside the image."""
    crs: str | None
    transform: tuple[float, ...] | None
    """The window's affine ``(a, b, c, d, e, f)``, as ``rasterio.Affine(*transform)`` takes it."""
    bounds: Bounds

    @property
    def valid_fraction(self) -> float:
        return float(self.valid_mask.mean()) if self.valid_mask.size else 0.0


def read_raster(
    path: str | Path, bands: Sequence[int] | None = None, window: Window | None = None
) -> RasterSample:
    """Read ``bands`` (1-based, in the order given; all when None) inside ``window``.

    A window reaching past the image edge is filled with nodata (or 0) and masked invalid, so every
    chip of a fixed-size grid has the same shape.
    """
    path = Path(path)
    if not path.is_file():
        raise RasterReadError(path, "file does not exist")
    if path.suffix.lower() in PIL_SUFFIXES:
        return _read_with_pil(path, bands, window)
    return _read_with_rasterio(path, bands, window)


def image_reader(path: str | Path) -> np.ndarray:
    """All bands as an HWC array in the file's dtype."""
    return read_raster(path).array


def header_pixels(path: str | Path) -> int:
    """Width x height x bands, from the header: the values decoding the whole file allocates."""
    width, height, bands = raster_shape(path)
    return width * height * bands


RASTER_READER = SizedReader(image_reader, header_pixels)
"""``core.images.read_image`` checks ``header_pixels`` against its cap before decoding."""


@contextmanager
def open_geotiff(path: Path) -> Iterator[DatasetReader]:
    """``rasterio.open`` for a local GeoTIFF only: TIFF signature, GTiff driver, ``SAFE_GDAL_ENV``."""
    resolved = path.resolve()
    if str(resolved).startswith("/vsi"):
        raise RasterReadError(path, "GDAL virtual file-system paths (/vsi...) are not opened")
    try:
        with resolved.open("rb") as handle:
            signature = handle.read(4)
    except OSError as error:
        raise RasterReadError(path, f"cannot open file: {error.strerror}") from error
    if signature not in TIFF_SIGNATURES:
        raise RasterReadError(
            path,
            f"not a GeoTIFF (the file starts with {signature!r}, not a TIFF signature); only "
            "GeoTIFF/COG, PNG and JPEG are read, never VRT or other GDAL formats",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(**SAFE_GDAL_ENV), rasterio.open(resolved, driver=GDAL_DRIVER) as src:
            yield src


def _check_bands(path: Path, bands: Sequence[int] | None, count: int) -> list[int]:
    if bands is None:
        return list(range(1, count + 1))
    bands = list(bands)
    if not bands:
        raise RasterReadError(path, "empty band selection; pass None for all bands")
    bad = [
        b
        for b in bands
        if not isinstance(b, Integral) or isinstance(b, bool) or not 1 <= b <= count
    ]
    if bad:
        raise RasterReadError(
            path,
            f"band(s) {bad} requested but the file has {count} band(s); "
            f"band indices are 1-based, valid range 1..{count}",
        )
    return [int(b) for b in bands]


def _check_window(path: Path, window: Window | None, width: int, height: int) -> Window:
    if window is None:
        return Window(0, 0, width, height)
    window = Window(
        *(int(v) for v in (window.col_off, window.row_off, window.width, window.height))
    )
    inside = (
        window.width > 0
        and window.height > 0
        and window.col_off < width
        and window.row_off < height
        and window.col_off + window.width > 0
        and window.row_off + window.height > 0
    )
    if not inside:
        raise RasterReadError(path, f"window {window} does not overlap the {width}x{height} image")
    return window


def _is_boundless(window: Window, width: int, height: int) -> bool:
    return (
        window.col_off < 0
        or window.row_off < 0
        or window.col_off + window.width > width
        or window.row_off + window.height > height
    )


def _read_with_rasterio(
    path: Path, bands: Sequence[int] | None, window: Window | None
) -> RasterSample:
    try:
        with open_geotiff(path) as src:
            indexes = _check_bands(path, bands, src.count)
            window = _check_window(path, window, src.width, src.height)
            boundless = _is_boundless(window, src.width, src.height)
            fill = src.nodata if src.nodata is not None and not math.isnan(src.nodata) else 0
            data = src.read(indexes, window=window, boundless=boundless, fill_value=fill)
            masks = src.read_masks(indexes, window=window, boundless=boundless)
            georeferenced = src.crs is not None or not src.transform.is_identity
            crs = src.crs.to_string() if src.crs is not None else None
            affine, bounds = _window_geometry(src.transform, window)
    except RasterReadError:
        raise
    except (RasterioError, OSError) as error:
        raise RasterReadError(
            path, f"corrupt or truncated raster: {_gdal_detail(error)}"
        ) from error
    return RasterSample(
        array=np.moveaxis(data, 0, -1),
        valid_mask=(masks > 0).all(axis=0),
        crs=crs,
        transform=tuple(affine)[:6] if georeferenced else None,
        bounds=tuple(float(v) for v in bounds),
    )


def _window_geometry(transform: Affine, window: Window) -> tuple[Affine, tuple[float, ...]]:
    """The window's affine and (left, bottom, right, top), with ``@`` (``*`` is deprecated)."""
    affine = transform @ Affine.translation(window.col_off, window.row_off)
    left, top = affine @ (0, 0)
    right, bottom = affine @ (window.width, window.height)
    return affine, (left, bottom, right, top)


def _gdal_detail(error: Exception) -> str:
    """rasterio often says only "Read failed"; GDAL's own message is on the chained exception."""
    cause = error.__cause__ or error.__context__
    return (
        f"{error} ({cause})" if cause is not None and str(cause) not in str(error) else str(error)
    )


def _read_with_pil(path: Path, bands: Sequence[int] | None, window: Window | None) -> RasterSample:
    try:
        with Image.open(path, formats=PIL_FORMATS) as image:
            image.load()
            array = np.asarray(image.convert("RGBA") if image.mode in ("P", "PA") else image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise RasterReadError(path, f"corrupt or truncated image: {error}") from error
    if array.ndim == 2:
        array = array[:, :, None]
    height, width, count = array.shape
    indexes = _check_bands(path, bands, count)
    window = _check_window(path, window, width, height)
    array = array[:, :, [i - 1 for i in indexes]]
    valid = np.ones((height, width), dtype=bool)
    if _is_boundless(window, width, height):
        pad = (
            (max(0, -window.row_off), max(0, window.row_off + window.height - height)),
            (max(0, -window.col_off), max(0, window.col_off + window.width - width)),
        )
        array = np.pad(array, (*pad, (0, 0)))
        valid = np.pad(valid, pad)
    row = max(0, window.row_off)
    col = max(0, window.col_off)
    rows = slice(row, row + window.height)
    cols = slice(col, col + window.width)
    left, top = float(window.col_off), float(window.row_off)
    return RasterSample(
        array=np.ascontiguousarray(array[rows, cols]),
        valid_mask=valid[rows, cols],
        crs=None,
        transform=None,
        bounds=(left, top + window.height, left + window.width, top),
    )


def chip_windows(width: int, height: int, size: int, overlap: int = 0) -> list[Window]:
    """Fixed-size windows over a ``width`` x ``height`` scene, row-major, stride ``size - overlap``.

    The last row/column is shifted back to end exactly at the edge, so edge pixels are covered
    without padding; only a scene smaller than ``size`` yields a window reaching past its edge.
    """
    if size <= 0:
        raise ValueError(f"chip size must be positive, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size={size}), got {overlap}")
    if width <= 0 or height <= 0:
        raise ValueError(f"scene size must be positive, got {width}x{height}")
    cols = _offsets(width, size, size - overlap)
    rows = _offsets(height, size, size - overlap)
    return [Window(col, row, size, size) for row in rows for col in cols]


def _offsets(extent: int, size: int, stride: int) -> list[int]:
    if extent <= size:
        return [0]
    offsets = list(range(0, extent - size, stride))
    offsets.append(extent - size)
    return offsets


@dataclass(frozen=True)
class BandStatistics:
    """Per-band mean and standard deviation over valid pixels, in the order of ``bands``."""

    bands: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    valid_pixels: int


def band_statistics(
    paths: Sequence[str | Path], bands: Sequence[int] | None, cache_file: str | Path
) -> BandStatistics:
    """Per-band mean/std over the valid pixels of ``paths``, computed once and cached as JSON.

    The cache records each file's name, size and modification time; it is reused only when they and
    the band list still match, so replacing a file triggers a recomputation instead of stale
    normalisation.
    """
    paths = sorted(Path(p) for p in paths)
    if not paths:
        raise ValueError("band_statistics needs at least one raster file")
    cache_file = Path(cache_file)
    fingerprint = [_fingerprint(p) for p in paths]
    requested = None if bands is None else [int(b) for b in bands]
    cached = _load_cached_statistics(cache_file, requested, fingerprint)
    if cached is not None:
        return cached
    stats = _compute_statistics(paths, bands)
    atomic_write_json(
        cache_file,
        {
            "requested_bands": requested,
            "bands": list(stats.bands),
            "mean": list(stats.mean),
            "std": list(stats.std),
            "valid_pixels": stats.valid_pixels,
            "files": fingerprint,
        },
    )
    return stats


def _fingerprint(path: Path) -> dict:
    try:
        info = path.stat()
    except OSError as error:
        raise RasterReadError(path, f"cannot stat file: {error.strerror}") from error
    return {"path": str(path.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _load_cached_statistics(
    cache_file: Path, requested: list[int] | None, fingerprint: list[dict]
) -> BandStatistics | None:
    if not cache_file.is_file():
        return None
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
        if cached["requested_bands"] != requested or cached["files"] != fingerprint:
            return None
        return BandStatistics(
            bands=tuple(int(b) for b in cached["bands"]),
            mean=tuple(float(v) for v in cached["mean"]),
            std=tuple(float(v) for v in cached["std"]),
            valid_pixels=int(cached["valid_pixels"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # an unreadable cache is recomputed and overwritten, never trusted


def _compute_statistics(paths: Sequence[Path], bands: Sequence[int] | None) -> BandStatistics:
    """Chan et al.'s pairwise merge of (count, mean, M2): stable where E[x^2] - E[x]^2 is not."""
    count = mean = m2 = None
    resolved: list[int] | None = None
    for path in paths:
        width, height, band_count = raster_shape(path)
        file_bands = _check_bands(path, bands, band_count)
        if resolved is None:
            resolved = file_bands
        elif len(file_bands) != len(resolved):
            raise RasterReadError(
                path, f"has {band_count} bands where {paths[0].name} has {len(resolved)}"
            )
        for row in range(0, height, STATISTICS_ROWS_PER_READ):
            strip = Window(0, row, width, min(STATISTICS_ROWS_PER_READ, height - row))
            sample = read_raster(path, file_bands, strip)
            values = sample.array[sample.valid_mask].astype(np.float64)
            if not len(values):
                continue
            n_b = np.full(values.shape[1], len(values), dtype=np.float64)
            mean_b = values.mean(axis=0)
            m2_b = ((values - mean_b) ** 2).sum(axis=0)
            if count is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            total = count + n_b
            delta = mean_b - mean
            mean = mean + delta * n_b / total
            m2 = m2 + m2_b + delta**2 * count * n_b / total
            count = total
    if count is None:
        raise RasterReadError(paths[0], f"no valid pixels in any of the {len(paths)} file(s)")
    return BandStatistics(
        bands=tuple(resolved),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in np.sqrt(m2 / count)),
        valid_pixels=int(count[0]),
    )


@dataclass(frozen=True)
class RasterInfo:
    width: int
    height: int
    bands: int
    dtype: str
    """numpy name of the pixel type (``uint8``, ``uint16``, ``float32``...)."""


def raster_info(path: str | Path) -> RasterInfo:
    """Size, band count and pixel type of any supported image, reading only its header."""
    path = Path(path)
    if not path.is_file():
        raise RasterReadError(path, "file does not exist")
    if path.suffix.lower() in PIL_SUFFIXES:
        try:
            with Image.open(path, formats=PIL_FORMATS) as image:
                dtype = PIL_MODE_DTYPES.get(image.mode.split(";")[0], "uint8")
                if image.mode.startswith("I;16"):
                    dtype = "uint16"
                return RasterInfo(image.width, image.height, len(image.getbands()), dtype)
        except (UnidentifiedImageError, OSError) as error:
            raise RasterReadError(path, f"corrupt image: {error}") from error
    try:
        with open_geotiff(path) as src:
            dtypes = set(src.dtypes)
            dtype = src.dtypes[0] if len(dtypes) == 1 else np.result_type(*dtypes).name
            return RasterInfo(src.width, src.height, src.count, dtype)
    except (RasterioError, OSError) as error:
        raise RasterReadError(
            path, f"corrupt or truncated raster: {_gdal_detail(error)}"
        ) from error


def raster_shape(path: str | Path) -> tuple[int, int, int]:
    """``(width, height, band_count)`` of any supported image, reading only its header."""
    info = raster_info(path)
    return info.width, info.height, info.bands
