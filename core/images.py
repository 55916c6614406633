"""Read any image a domain can read (PNG/JPEG, GeoTIFF, DICOM, a video frame) as an HWC array.

This is the one path every encoder loads images through, so one cap covers them all. Installed
domains register readers by file suffix (``DomainPlugin.image_readers``), or an encoder passes its
domain's reader explicitly; PIL reads the rest. A video frame is addressed as
``clip.mp4#t=SECONDS`` or ``clip.mp4#frame=N``.

The pixel cap is checked from headers before anything is decoded: PIL's header for every file
PIL can open, a domain reader's own ``header_pixels`` (a ``SizedReader``: GeoTIFF width x height x
bands, DICOM rows x columns of the decoded frames) and the video stream's frame size. So a
decompression bomb fails with a clear error instead of exhausting memory. A plain-callable reader
(a third-party domain's) cannot be asked first: its array is checked when it returns.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from domainvlm.core.errors import ImageReadError, ImageTooLargeError
from domainvlm.core.registry import load_domains, resolve_hook
from PIL import Image, ImageOps

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageReadError",
    "ImageTooLargeError",
    "SizedReader",
    "pixel_limit",
    "read_image",
    "to_rgb_image",
]

DEFAULT_MAX_PIXELS = 64_000_000
"""About an 8000 x 8000 image: above any single scene or radiograph, below a memory problem."""

PIL_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "PPM")
"""What Pillow may open, whatever a file is named: Pillow picks its decoder from the content, and
some (EPS) run an external interpreter."""
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
FRAGMENT = re.compile(r"^(?P<path>.+)#(?:t=(?P<t>\d+(?:\.\d+)?)|frame=(?P<frame>\d+))$")

_max_pixels = contextvars.ContextVar("max_pixels", default=DEFAULT_MAX_PIXELS)

Reader = Callable[[Path], Any]


@dataclass(frozen=True)
class SizedReader:
    """A domain reader that can say from the file's header how many pixels it would decode.

    Register it in ``DomainPlugin.image_readers`` (it is called like a plain reader) so the pixel
    cap holds before decoding. Multi-plane data counts every plane: a 13-band raster of
    1000 x 1000 is 13 million pixels.
    """

    read: Callable[[Path], np.ndarray]
    header_pixels: Callable[[Path], int]

    def __call__(self, path: Path) -> np.ndarray:
        return self.read(path)


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Cap pixels for every ``read_image`` in this context, including those an encoder makes."""
    token = _max_pixels.set(max_pixels)
    try:
        yield
    finally:
        _max_pixels.reset(token)


def read_image(
    path: str | Path, max_pixels: int | None = None, reader: Reader | None = None
) -> np.ndarray:
    """The image at ``path`` as an ``[H, W, C]`` array in its own dtype (uint8, uint16, float...).

    ``reader``: decode with this reader whatever the suffix (an encoder passing its domain's
    reader); by default the installed domain reader registered for the suffix, else PIL or PyAV.
    """
    limit = _max_pixels.get() if max_pixels is None else max_pixels
    file, frame_time, frame_index = split_fragment(path)
    if not file.is_file():
        raise ImageReadError(path, "does not exist or is not a file")
    if reader is None:
        readers = domain_readers()
        suffix = _matching_suffix(file, readers)
        reader = readers[suffix] if suffix is not None else None
    reader = resolve_hook(reader)  # a lazy reader is imported now, so a SizedReader is seen
    is_video = file.suffix.lower() in VIDEO_SUFFIXES
    try:
        _check_pixels(_header_pixels(file), path, limit)
        if (frame_time is not None or frame_index is not None) and not is_video:
            raise ImageReadError(
                path,
                f"#t= and #frame= address frames of videos ({', '.join(VIDEO_SUFFIXES)}), "
                f"not of {file.suffix or 'suffix-less'} files",
            )
        if reader is not None and frame_time is None and frame_index is None:
            if isinstance(reader, SizedReader):
                _check_pixels(reader.header_pixels(file), path, limit)
            array = np.asarray(reader(file))
        elif is_video:
            array = read_video_frame(file, frame_time, frame_index, limit)
        elif file.suffix.lower() == ".npy":
            array = np.load(file, allow_pickle=False)
        else:
            array = read_pil(file)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(path, f"too large to decode: {exc}") from exc
    except Exception as exc:  # decoders and domain readers raise many types; report them alike
        raise ImageReadError(path, f"cannot read image: {exc or type(exc).__name__}") from exc
    return _checked_hwc(array, path, limit)


def split_fragment(path: str | Path) -> tuple[Path, float | None, int | None]:
    """``clip.mp4#t=2.5`` -> (clip.mp4, 2.5, None); an existing file named with ``#`` is kept whole."""
    text = str(path)
    match = FRAGMENT.match(text)
    if match is None or Path(text).exists():
        return Path(text), None, None
    time = float(match["t"]) if match["t"] is not None else None
    index = int(match["frame"]) if match["frame"] is not None else None
    return Path(match["path"]), time, index


def domain_readers() -> dict[str, Reader]:
    readers: dict[str, Reader] = {}
    for plugin in load_domains().values():
        for suffix, reader in plugin.image_readers.items():
            readers[suffix.lower()] = reader
    return readers


def _matching_suffix(file: Path, readers: Mapping[str, Reader]) -> str | None:
    """Longest registered suffix the file name ends with (``.nii.gz`` before ``.gz``)."""
    name = file.name.lower()
    matches = [suffix for suffix in readers if name.endswith(suffix)]
    return max(matches, key=len) if matches else None


def read_pil(file: Path) -> np.ndarray:
    with Image.open(file, formats=PIL_FORMATS) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        array = np.asarray(image)
    return array


def read_video_frame(
    file: Path, time: float | None, index: int | None, max_pixels: int
) -> np.ndarray:
    """One decoded frame: at ``time`` seconds, the ``index``-th frame, or the first frame."""
    import av

    with av.open(str(file)) as container:
        if not container.streams.video:
            raise ImageReadError(file, "video has no video stream")
        stream = container.streams.video[0]
        _check_pixels(stream.codec_context.width * stream.codec_context.height, file, max_pixels)
        if time is not None and time > 0:
            container.seek(int(time / stream.time_base), stream=stream, backward=True)
        for position, frame in enumerate(container.decode(stream)):
            if index is not None and position < index:
                continue
            if (
                time is not None
                and frame.time is not None
                and frame.time + _half_frame(stream) < time
            ):
                continue
            return frame.to_ndarray(format="rgb24")
    where = f"frame {index}" if index is not None else f"t={time}s"
    raise ImageReadError(file, f"video ends before {where}")


def _header_pixels(file: Path) -> int:
    """Pixel count from the header when PIL knows the format (0 when it does not).

    Domain readers (GDAL, pydicom) allocate before we see the array; this cheap look at the header
    stops a bomb in PNG/JPEG/TIFF form whichever reader would decode it.
    """
    try:
        with Image.open(file, formats=PIL_FORMATS) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise
    except Exception:  # not a PIL format: the reader's own result is checked afterwards
        return 0
    return width * height


def _half_frame(stream: Any) -> float:
    rate = stream.average_rate
    return 0.5 / float(rate) if rate else 0.0


def _check_pixels(count: int, path: str | Path, max_pixels: int) -> None:
    if count > max_pixels:
        raise ImageTooLargeError(path, f"{count:,} pixels, above the limit of {max_pixels:,}")


def _checked_hwc(array: np.ndarray, path: str | Path, max_pixels: int) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or 0 in array.shape:
        raise ImageReadError(
            path, f"decoded to shape {tuple(array.shape)}, not height x width x channels"
        )
    _check_pixels(array.shape[0] * array.shape[1], path, max_pixels)
    return array


def to_rgb_image(array: np.ndarray, path: str | Path = "<array>") -> Image.Image:
    """An 8-bit RGB PIL image for RGB models: grey is repeated, alpha dropped, deep data stretched.

    Stretching is min-max per image: 12/16-bit radiographs and reflectance rasters have no fixed
    white point, so their own range is the only scale that keeps contrast.
    """
    channels = array.shape[2]
    if channels in (1, 2):
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif channels == 4:
        array = array[:, :, :3]
    elif channels != 3:
        raise ImageReadError(
            path,
            f"{channels} channels; an RGB model needs 1, 3 or 4. Use a checkpoint trained on "
            "these bands, or a domain reader that selects RGB bands.",
        )
    return Image.fromarray(_to_uint8(array), mode="RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((values - low) / (high - low) * 255.0).astype(np.uint8)
