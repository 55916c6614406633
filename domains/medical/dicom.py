"""DICOM (and PNG/JPEG) images as display-ready arrays, with patient identifiers kept inside.

The pixel pipeline follows the DICOM grayscale chain (PS3.3 C.11): modality LUT (rescale slope and
intercept, or a Modality LUT), then VOI LUT (a VOI LUT sequence, window centre/width from the file,
a named preset or a percentile window), then MONOCHROME1 inversion. Colour images (RGB, YBR,
palette) are converted to RGB. Only the technical tags in ``SAFE_TAGS`` ever leave this module:
patient names, IDs and dates stay in the pydicom dataset, which is dropped after reading.
"""

from __future__ import annotations

import mmap
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from domainvlm.core.errors import ImageReadError
from domainvlm.core.images import SizedReader
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder
from pydicom.pixels.utils import get_expected_length, get_nr_frames
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

SAFE_TAGS: tuple[str, ...] = (
    "Modality",
    "BodyPartExamined",
    "SOPClassUID",
    "ImageType",
    "ViewPosition",
    "ImageLaterality",
    "Laterality",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)
"""The only dataset attributes copied into ``DicomImage.meta``: technical, never identifying."""

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "soft_tissue": (40.0, 400.0),
}
"""Conventional CT windows as (centre, width) in Hounsfield units."""

AUTO_PERCENTILES = (0.5, 99.5)
DICOM_SUFFIXES = (".dcm", ".dicom")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
PIL_FORMATS = ("PNG", "JPEG")
"""The only formats Pillow may open here, whatever the content says (an EPS named .png is refused)."""

ENCAPSULATED_PIXEL_DATA = re.compile(rb"\xe0\x7f\x10\x00(?:O[BW]\x00\x00)?\xff\xff\xff\xff")
"""Tag (7FE0,0010) with undefined length, implicit or explicit VR little endian: compressed pixels."""
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
"""(FFFE,E0DD): the item that closes the fragments of compressed Pixel Data."""
CUT_INSIDE_PIXELS = (
    "truncated file: it ends inside its compressed Pixel Data (no sequence delimiter after the "
    "last fragment)"
)

Window = str | tuple[float, float] | None


class DicomReadError(ImageReadError):
    """A DICOM file that is not an image, is cut short, or holds pixels no installed decoder reads."""


@dataclass(frozen=True, repr=False)
class DicomImage:
    """Decoded pixels plus whitelisted technical metadata.

    ``pixels`` is HW (grayscale) or HWC (RGB), with a leading frame axis when all frames of a
    multi-frame file are returned. ``frames`` is the frame count of the file.
    """

    pixels: np.ndarray
    frames: int
    meta: dict[str, Any]

    def __repr__(self) -> str:
        pixels = "x".join(str(size) for size in self.pixels.shape) + f" {self.pixels.dtype}"
        return f"DicomImage(pixels={pixels}, frames={self.frames}, meta={self.meta})"


def apply_window(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Map values to [0, 1] with a DICOM VOI window (PS3.3 C.11.2.1.2 and C.11.2.1.3)."""
    values = np.asarray(values, dtype=np.float64)
    function = function.upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"a SIGMOID window needs a width > 0, got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"a LINEAR_EXACT window needs a width > 0, got {width}")
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function != "LINEAR":
        raise ValueError(f"unknown VOI LUT function {function!r}")
    if width < 1:
        raise ValueError(f"a LINEAR window needs a width >= 1, got {width}")
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def read_dicom(
    path: str | Path,
    frame: int | None = None,
    window: Window = "auto",
    output: Literal["float", "uint8"] = "float",
) -> DicomImage:
    """Read one DICOM file.

    ``window``: ``"auto"`` uses the file's VOI LUT or window, else a 0.5-99.5 percentile window;
    ``"percentile"`` forces the percentile window; a name from ``WINDOW_PRESETS``; an explicit
    ``(centre, width)``; or ``None`` for no VOI step: float output is then the modality values
    (Hounsfield units for CT) in the file's polarity, uint8 output a min-max stretch.
    Grayscale float output is in [0, 1] whenever a window is applied; colour output always is.
    ``frame`` selects one frame (0-based, decoding only that frame); ``None`` returns all frames.
    """
    if output not in ("float", "uint8"):
        raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
    _check_window(window)
    path = Path(path)
    ds = _read_dataset(path)
    transfer_syntax = _check_image(path, ds)
    frames = _frame_count(path, ds)
    if frame is not None and not 0 <= frame < frames:
        raise DicomReadError(path, f"frame {frame} requested but the file has {frames} frame(s)")
    pixels, photometric = _decode(path, ds, transfer_syntax, frame)
    meta = _safe_meta(ds, transfer_syntax)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        pixels = _grayscale(ds, pixels, photometric == "MONOCHROME1", window, output, meta)
    else:
        pixels = _colour(ds, pixels, photometric, output)
        meta["WindowSource"] = "none (colour image)"
    return DicomImage(pixels=pixels, frames=frames, meta=meta)


def image_reader(path: str | Path, frame: int = 0) -> np.ndarray:
    """HWC uint8 RGB for any supported file (frame ``frame`` of a multi-frame DICOM).

    The common currency of the image towers: grayscale is repeated to three channels.
    """
    path = Path(path)
    if _is_dicom(path):
        pixels = read_dicom(path, frame=frame, output="uint8").pixels
    elif frame:
        raise DicomReadError(path, f"frame {frame} requested, but only DICOM files have frames")
    else:
        pixels = _read_with_pil(path)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return np.ascontiguousarray(pixels)


def header_pixels(path: str | Path) -> int:
    """Pixels ``image_reader`` would decode, from the header alone: rows x columns of one frame
    for DICOM (it decodes the first frame only), width x height for PNG/JPEG (0 when unknown)."""
    path = Path(path)
    if _is_dicom(path):
        ds = _read_dataset(path, stop_before_pixels=True)
        return int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0)
    try:
        with Image.open(path, formats=PIL_FORMATS) as image:
            return image.width * image.height
    except Image.DecompressionBombError:
        raise
    except Exception:  # not an image PIL knows: image_reader reports it
        return 0


IMAGE_READER = SizedReader(image_reader, header_pixels)
"""What encoders and the plugin hand to ``core.images.read_image``: capped before decoding."""


def read_dicom_meta(path: str | Path) -> dict[str, Any]:
    """The whitelisted technical tags (``SAFE_TAGS``) of a DICOM file, without decoding pixels."""
    return _whitelisted(_read_dataset(Path(path), stop_before_pixels=True))


def decode_throughput(
    paths: Iterable[str | Path], repeats: int = 1, **read_kwargs: Any
) -> dict[str, float]:
    """Decode every file ``repeats`` times through ``read_dicom``; for ``benchmarks/medical.py``."""
    paths = list(paths)
    if not paths or repeats < 1:
        raise ValueError("decode_throughput needs at least one path and repeats >= 1")
    frames = megapixels = 0.0
    start = time.perf_counter()
    for _ in range(repeats):
        for path in paths:
            image = read_dicom(path, **read_kwargs)
            planes = image.frames if read_kwargs.get("frame") is None else 1
            frames += planes
            megapixels += planes * image.meta["Rows"] * image.meta["Columns"] / 1e6
    seconds = time.perf_counter() - start
    return {
        "files": float(len(paths) * repeats),
        "frames": frames,
        "seconds": seconds,
        "files_per_s": len(paths) * repeats / seconds,
        "frames_per_s": frames / seconds,
        "megapixels_per_s": megapixels / seconds,
    }


def _check_window(window: Window) -> None:
    if window is None or window in ("auto", "percentile") or window in WINDOW_PRESETS:
        return
    if isinstance(window, tuple) and len(window) == 2 and float(window[1]) >= 1:
        return
    choices = ", ".join(["auto", "percentile", *WINDOW_PRESETS])
    raise ValueError(
        f"window must be one of {choices}, a (centre, width >= 1) tuple or None; got {window!r}"
    )


def _read_dataset(path: Path, stop_before_pixels: bool = False) -> Dataset:
    if not path.is_file():
        raise DicomReadError(path, "no such file")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass  # no 'DICM' marker: a bare data set without file meta is still valid DICOM
    except Exception as exc:
        raise DicomReadError(path, f"corrupt or truncated DICOM header ({exc})") from exc
    problem = "not a DICOM file: no 'DICM' marker at byte 128 and no DICOM data set found"
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:
        raise DicomReadError(path, problem) from exc
    if not any(key in ds for key in ("SOPClassUID", "Modality", "Rows", "PixelData")):
        raise DicomReadError(path, problem)
    return ds


def _check_image(path: Path, ds: Dataset) -> UID:
    """Return the transfer syntax after checking the file holds a decodable image."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise DicomReadError(path, "float pixel data is not supported, only Pixel Data")
        cut_tag = _element_cut_short(ds)
        if cut_tag is not None:
            raise DicomReadError(path, f"truncated file: it ends inside element {cut_tag}")
        if _encapsulated_pixels_cut_short(path):
            raise DicomReadError(path, CUT_INSIDE_PIXELS)
        kind = ds.get("SOPClassUID")
        what = f"{kind.name} object" if isinstance(kind, UID) else "data set"
        if "Rows" in ds or "Image Storage" in what:
            raise DicomReadError(
                path, f"no Pixel Data element in a {what}: the file is probably truncated"
            )
        raise DicomReadError(path, f"no Pixel Data element: a {what}, not an image")
    required = (
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
    )
    if ds["PixelData"].is_undefined_length and _encapsulated_pixels_cut_short(path):
        raise DicomReadError(path, CUT_INSIDE_PIXELS)
    missing = [keyword for keyword in required if ds.get(keyword) in (None, "")]
    if missing:
        raise DicomReadError(path, f"missing required image attribute(s): {', '.join(missing)}")
    transfer_syntax = getattr(ds, "file_meta", FileMetaDataset()).get("TransferSyntaxUID")
    if transfer_syntax is None:
        if ds["PixelData"].is_undefined_length:
            raise DicomReadError(path, "compressed pixel data but no Transfer Syntax UID")
        implicit, little = ds.original_encoding
        transfer_syntax = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian
        )
        ds.file_meta = getattr(ds, "file_meta", FileMetaDataset())
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    return UID(transfer_syntax)


def _element_cut_short(ds: Dataset) -> str | None:
    """The tag of the last element when the file ended before its declared length was read.

    pydicom reads what is there without complaint, so a cut-off file looks like a short data set.
    """
    if not len(ds):
        return None
    last = ds.get_item(max(ds.keys()))
    value, length = getattr(last, "value", None), getattr(last, "length", 0)
    if isinstance(value, bytes) and length != 0xFFFFFFFF and len(value) < length:
        return str(last.tag)
    return None


def _encapsulated_pixels_cut_short(path: Path) -> bool:
    """A compressed (undefined-length) Pixel Data element whose fragments never end.

    pydicom gives up on such a file with a warning and returns an empty data set (which would
    read as "not an image"), or, cut near the end, returns the fragments it found and decodes
    them without a word; the raw bytes show where it was cut.
    """
    if path.stat().st_size == 0:
        return False
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        starts = [match.end() for match in ENCAPSULATED_PIXEL_DATA.finditer(data)]
        return bool(starts) and data.find(SEQUENCE_DELIMITER, starts[-1]) < 0


def _frame_count(path: Path, ds: Dataset) -> int:
    try:
        return max(1, get_nr_frames(ds, warn=False))
    except (TypeError, ValueError) as exc:
        value = ds["NumberOfFrames"].value
        raise DicomReadError(path, f"invalid Number of Frames {value!r}") from exc


def _decode(
    path: Path, ds: Dataset, transfer_syntax: UID, frame: int | None
) -> tuple[np.ndarray, str]:
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise DicomReadError(
            path, f"pydicom has no pixel decoder for transfer syntax {_describe(transfer_syntax)}"
        ) from exc
    if not decoder.is_available:
        raise DicomReadError(
            path,
            f"no decoder installed for transfer syntax {_describe(transfer_syntax)}: install "
            f"{_plugin_hint(transfer_syntax)} (pydicom: {'; '.join(decoder.missing_dependencies)})",
        )
    if not transfer_syntax.is_encapsulated:
        expected, actual = get_expected_length(ds, "bytes"), len(ds.PixelData)
        if actual < expected:
            raise DicomReadError(path, f"truncated pixel data: {actual} of {expected} bytes")
    try:
        pixels, info = decoder.as_array(ds, index=frame)
    except Exception as exc:
        reason = " ".join(str(exc).split())
        raise DicomReadError(
            path, f"cannot decode {transfer_syntax.name} pixel data: {reason}"
        ) from exc
    return pixels, str(info["photometric_interpretation"])


def _grayscale(
    ds: Dataset,
    pixels: np.ndarray,
    monochrome1: bool,
    window: Window,
    output: str,
    meta: dict[str, Any],
) -> np.ndarray:
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if window is None:
        meta["WindowSource"] = "none"
        if output == "float":
            return values.astype(np.float32)
        low, high = float(values.min()), float(values.max())
        display = (values - low) / (high - low) if high > low else np.zeros_like(values)
    else:
        display = _apply_voi(ds, values, window, meta)
    if monochrome1:
        display = 1.0 - display
    meta["Inverted"] = monochrome1
    return _finish(display, output)


def _apply_voi(
    ds: Dataset,
    values: np.ndarray,
    window: Window,
    meta: dict[str, Any],
) -> np.ndarray:
    if window == "auto" and "VOILUTSequence" in ds:
        output_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        meta["WindowSource"] = "file VOI LUT"
        lut_input = np.round(values).astype(np.int64)
        return np.asarray(apply_voi(lut_input, ds), np.float64) / (2**output_bits - 1)
    center, width, function, source = _window_parameters(ds, values, window)
    meta.update(
        WindowSource=source,
        WindowCenterUsed=center,
        WindowWidthUsed=width,
        VOILUTFunctionUsed=function,
    )
    return apply_window(values, center, width, function)


def _window_parameters(
    ds: Dataset, values: np.ndarray, window: Window
) -> tuple[float, float, str, str]:
    if isinstance(window, tuple):
        center, width = (float(v) for v in window)
        return center, width, "LINEAR", "explicit"
    if isinstance(window, str) and window in WINDOW_PRESETS:
        center, width = WINDOW_PRESETS[window]
        return center, width, "LINEAR", f"preset:{window}"
    if window == "auto" and "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction") or "LINEAR").upper()
        minimum = 1.0 if function == "LINEAR" else 0.0
        if width > minimum or (function == "LINEAR" and width == minimum):
            return center, width, function, "file"
    low, high = (float(v) for v in np.percentile(values, AUTO_PERCENTILES))
    width = max(high - low, 1e-6)
    return (low + high) / 2, width, "LINEAR_EXACT", "percentile"


def _colour(ds: Dataset, pixels: np.ndarray, photometric: str, output: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        full_scale = float(np.iinfo(pixels.dtype).max)
    else:
        full_scale = float(2 ** int(ds.BitsStored) - 1)
    return _finish(np.asarray(pixels, np.float64) / full_scale, output)


def _finish(display: np.ndarray, output: str) -> np.ndarray:
    if output == "uint8":
        return np.round(np.clip(display, 0.0, 1.0) * 255.0).astype(np.uint8)
    return display.astype(np.float32)


def _whitelisted(ds: Dataset) -> dict[str, Any]:
    return {keyword: _plain(ds.get(keyword)) for keyword in SAFE_TAGS if keyword in ds}


def _safe_meta(ds: Dataset, transfer_syntax: UID) -> dict[str, Any]:
    meta = _whitelisted(ds)
    meta["TransferSyntaxUID"] = str(transfer_syntax)
    meta["TransferSyntax"] = transfer_syntax.name
    return meta


def _plain(value: Any) -> Any:
    """JSON-friendly copies of pydicom values (DS, IS, UID, MultiValue)."""
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value) if isinstance(value, float) else int(value)
    return str(value)


def _first(value: Any) -> float:
    return float(value[0] if isinstance(value, MultiValue | list) else value)


def _describe(transfer_syntax: UID) -> str:
    return f"{transfer_syntax.name} ({transfer_syntax})"


def _plugin_hint(transfer_syntax: UID) -> str:
    if transfer_syntax in JPEG2000TransferSyntaxes:
        return "pylibjpeg and pylibjpeg-openjpeg"
    if transfer_syntax in JPEGTransferSyntaxes or transfer_syntax in JPEGLSTransferSyntaxes:
        return "pylibjpeg and pylibjpeg-libjpeg"
    return "a pydicom pixel-data plugin for it (pylibjpeg, gdcm)"


def _is_dicom(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or (suffix not in PIL_SUFFIXES and _has_dicom_marker(path))


def _has_dicom_marker(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _read_with_pil(path: Path) -> np.ndarray:
    try:
        with Image.open(path, formats=PIL_FORMATS) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L"):
                return (np.asarray(image, np.float64) / 257.0).round().astype(np.uint8)
            if image.mode in ("I", "F"):
                values = np.asarray(image, np.float64)
                low, high = values.min(), values.max()
                scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
                return np.round(scaled * 255).astype(np.uint8)
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as exc:
        raise ImageReadError(path, "no such file") from exc
    except Exception as exc:
        raise ImageReadError(path, f"not a readable image ({exc})") from exc
