"""Surgical videos: probe, decode only the frames a clip needs, and read a pre-extracted frame cache.

Decoding seeks (PyAV) to the keyframe before the first requested time and decodes forward until
the last one, so a 4-frame clip of a 40-minute Cholec80 video costs a few GOPs, not the video.
A frame cache is the layout most people keep Cholec80 in: frames extracted at a fixed rate,
``<cache>/<video id>/<index:06d>.png`` (or ``.jpg``), frame ``i`` at ``i / fps`` seconds, with the
rate in ``<cache>/frame_cache.json``. ``FrameSource`` hides which of the two a dataset reads.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from domainvlm.core.errors import FileError
from domainvlm.core.files import atomic_write_json
from domainvlm.core.images import read_pil

CACHE_MANIFEST = "frame_cache.json"
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")

T = TypeVar("T")


class SurgicalDataError(FileError):
    """A video, transcript or annotation file that is unreadable or breaks its format."""


class BadFileWarning(UserWarning):
    """Files were skipped because skipping bad files was asked for; the message counts them."""


def read_all(
    items: Iterable[T], read: Callable[[T], object], skip_bad_files: bool, what: str
) -> list:
    """``read`` every item; with ``skip_bad_files`` a ``SurgicalDataError`` skips the item and one
    warning counts the skipped ones (a long run should not stop for one truncated video)."""
    results, problems = [], []
    for item in items:
        try:
            results.append(read(item))
        except SurgicalDataError as exc:
            if not skip_bad_files:
                raise
            problems.append(str(exc))
    if problems:
        warnings.warn(
            f"skipped {len(problems)} bad {what}: " + "; ".join(problems), BadFileWarning, 2
        )
    return results


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    duration: float
    fps: float
    frames: int
    width: int
    height: int


def probe(path: str | Path) -> VideoInfo:
    """Duration, rate and size from the container, checking the file has a decodable video stream."""
    import av

    path = Path(path)
    if not path.is_file():
        raise SurgicalDataError(path, "video file does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SurgicalDataError(path, "has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = int(stream.frames)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = frames / fps if fps else 0.0
            if frames == 0 and fps:
                frames = round(duration * fps)
            width, height = stream.codec_context.width, stream.codec_context.height
            # decoding the first frame catches a truncated or corrupt stream early
            next(container.decode(stream))
    except SurgicalDataError:
        raise
    except (av.FFmpegError, StopIteration, OSError, ValueError) as exc:
        raise SurgicalDataError(
            path, f"not a readable video ({exc or type(exc).__name__})"
        ) from exc
    if fps <= 0 or duration <= 0:
        raise SurgicalDataError(path, f"video reports fps {fps} and duration {duration}s")
    return VideoInfo(path, duration, fps, frames, width, height)


SEEK_GAP = 2.0
"""Seconds between two wanted times beyond which seeking again beats decoding through the gap
(with a keyframe every second or so, as the sample and most encoders write)."""


def decode_at(path: str | Path, times: Sequence[float]) -> np.ndarray:
    """``[len(times), H, W, 3]`` uint8: for each time the first frame shown at or after it.

    Times closer than ``SEEK_GAP`` share one run: a seek to the keyframe before the run's first
    time, then forward decoding to its last. A clip is one run; frames spread over a whole video
    (procedure items) are one short run each instead of a decode of everything between them.
    """
    import av

    path = Path(path)
    if not len(times):
        raise ValueError("decode_at needs at least one time")
    order = np.argsort(times)
    wanted = [float(times[i]) for i in order]
    breaks = [i for i in range(1, len(wanted)) if wanted[i] - wanted[i - 1] > SEEK_GAP]
    runs = np.split(np.arange(len(wanted)), breaks)
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for run in runs:
                out += _decode_run(path, container, stream, [wanted[i] for i in run])
    except SurgicalDataError:
        raise
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise SurgicalDataError(path, f"cannot decode ({exc or type(exc).__name__})") from exc
    frames = np.empty((len(wanted), *out[0].shape), np.uint8)
    for position, index in enumerate(order):
        frames[index] = out[position]
    return frames


def _decode_run(path: Path, container: Any, stream: Any, wanted: list[float]) -> list[np.ndarray]:
    half = 0.5 / float(stream.average_rate or 25)
    if wanted[0] > 0:
        container.seek(int(wanted[0] / stream.time_base), stream=stream, backward=True)
    out, last = [], None
    for frame in container.decode(stream):
        last = frame
        while (
            len(out) < len(wanted)
            and frame.time is not None
            and frame.time + half >= wanted[len(out)]
        ):
            out.append(frame.to_ndarray(format="rgb24"))
        if len(out) == len(wanted):
            return out
    # times within the last frame's duration (rounding at the end) take the last frame
    while len(out) < len(wanted) and last is not None:
        if wanted[len(out)] > float(last.time or 0) + 4 * half:
            raise SurgicalDataError(path, f"video ends before t={wanted[len(out)]:.2f}s")
        out.append(last.to_ndarray(format="rgb24"))
    if len(out) < len(wanted):
        raise SurgicalDataError(path, f"no frame decodes at or after t={wanted[0]:.2f}s")
    return out


def decode_all(path: str | Path) -> tuple[np.ndarray, float]:
    """Every frame ``[N, H, W, 3]`` and the rate: what reading without seeking costs."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return np.stack(frames), float(stream.average_rate)


def frames_at_times(all_frames: np.ndarray, fps: float, times: Sequence[float]) -> np.ndarray:
    index = np.clip(np.ceil(np.asarray(times) * fps - 0.5).astype(int), 0, len(all_frames) - 1)
    return all_frames[index]


# -- frame cache -------------------------------------------------------------------------------


def write_frame_cache(videos: Sequence[Path], cache: str | Path, fps: float) -> Path:
    """Extract frames at ``fps`` into ``<cache>/<video stem>/<index:06d>.png``."""
    from PIL import Image

    cache = Path(cache)
    for video in videos:
        info = probe(video)
        count = int(info.duration * fps)
        frames = decode_at(video, [i / fps for i in range(count)])
        folder = cache / video.stem
        folder.mkdir(parents=True, exist_ok=True)
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{index:06d}.png")
    atomic_write_json(cache / CACHE_MANIFEST, {"fps": fps})
    return cache


def cache_fps(cache: str | Path, default: float | None = None) -> float:
    manifest = Path(cache) / CACHE_MANIFEST
    if manifest.is_file():
        try:
            return float(json.loads(manifest.read_text(encoding="utf-8"))["fps"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SurgicalDataError(manifest, f"needs {{'fps': number}} ({exc})") from exc
    if default is None:
        raise SurgicalDataError(manifest, "missing: the frame cache's rate is unknown")
    return default


def cached_frame_files(folder: str | Path) -> list[Path]:
    """Frame files of one video in frame order (numbers in the name, ``video01_000012.png`` too)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]
    if not files:
        raise SurgicalDataError(folder, "frame folder holds no .png/.jpg frames")

    def number(path: Path) -> int:
        digits = re.findall(r"\d+", path.stem)
        return int(digits[-1]) if digits else -1

    return sorted(files, key=number)


class FrameSource:
    """Frames of one video at given times, from the mp4 (seek + decode) or from a frame cache."""

    def __init__(self, video: Path, duration: float, cache: Path | None = None) -> None:
        self.video = video
        self.duration = duration
        self.cache_files: list[Path] | None = None
        if cache is not None:
            self.cache_fps = cache_fps(cache)
            self.cache_files = cached_frame_files(cache / video.stem)

    def frames(self, times: Sequence[float]) -> np.ndarray:
        if self.cache_files is None:
            return decode_at(self.video, times)
        last = len(self.cache_files) - 1
        index = [min(max(round(t * self.cache_fps), 0), last) for t in times]
        return np.stack([read_pil(self.cache_files[i])[..., :3] for i in index])
