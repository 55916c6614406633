"""Phase and tool annotations: Cholec80, AutoLaparo task 1, and 1-fps frame folders.

Cholec80: ``videos/videoNN.mp4`` (25 fps), ``phase_annotations/videoNN-phase.txt`` (tab-separated,
header ``Frame<TAB>Phase``, one row per frame, phase names below), ``tool_annotations/
videoNN-tool.txt`` (header ``Frame`` + the 7 tools, a row every 25 frames, 0/1). Test videos are
49-80. AutoLaparo task 1: one label 1-7 per second (``Frame<TAB>Phase`` rows at 1 fps). A
frame-folder dataset (frames pre-extracted at 1 fps) lists ``path,label`` in a CSV.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from domainvlm.domains.surgical.video import SurgicalDataError

CHOLEC80_PHASES = (
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)
CHOLEC80_TOOLS = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")
CHOLEC80_FPS = 25.0
CHOLEC80_TEST_VIDEOS = tuple(f"video{n:02d}" for n in range(49, 81))
AUTOLAPARO_PHASES = (
    "Preparation",
    "Dividing Ligament and Peritoneum",
    "Dividing Uterine Vessels and Ligament",
    "Transecting the Vagina",
    "Specimen Removal",
    "Suturing",
    "Washing",
)
AUTOLAPARO_SPLITS = {"train": range(1, 11), "val": range(11, 15), "test": range(15, 22)}
FRAME_TOLERANCE_SECONDS = 1.0
"""How far an annotation's length may differ from its video's (Cholec80 ends vary by a frame or so)."""


@dataclass(frozen=True)
class PhaseTrack:
    """Per-frame phase labels of one video at ``fps``: ``labels[i]`` is the phase at ``i / fps``."""

    labels: np.ndarray
    fps: float

    def at(self, time: float) -> int:
        index = min(max(int(round(time * self.fps)), 0), len(self.labels) - 1)
        return int(self.labels[index])

    @property
    def duration(self) -> float:
        return len(self.labels) / self.fps

    def segments(self) -> list[tuple[float, float, int]]:
        """``(start, end, phase)`` runs in seconds."""
        changes = np.flatnonzero(np.diff(self.labels)) + 1
        bounds = [0, *changes.tolist(), len(self.labels)]
        return [
            (a / self.fps, b / self.fps, int(self.labels[a])) for a, b in zip(bounds, bounds[1:])
        ]


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SurgicalDataError(path, f"cannot read annotation ({exc})") from exc
    return [
        line.split() if "\t" not in line else line.split("\t")
        for line in text.splitlines()
        if line.strip()
    ]


def read_phase_file(
    path: str | Path,
    phases: tuple[str, ...] = CHOLEC80_PHASES,
    fps: float = CHOLEC80_FPS,
    video_frames: int | None = None,
    video_fps: float | None = None,
) -> PhaseTrack:
    """A ``Frame<TAB>Phase`` file; phases by name or by 1-based number (AutoLaparo).

    ``video_frames``/``video_fps`` check the annotation covers the video (within one second).
    """
    path = Path(path)
    rows = _rows(path)
    if not rows or [cell.strip().lower() for cell in rows[0][:2]] != ["frame", "phase"]:
        raise SurgicalDataError(path, "needs a 'Frame<TAB>Phase' header")
    lookup = {name.lower(): i for i, name in enumerate(phases)}
    lookup |= {name.lower().replace(" ", ""): i for i, name in enumerate(phases)}
    labels = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) < 2:
            raise SurgicalDataError(path, f"line {number}: expected Frame<TAB>Phase")
        value = row[1].strip()
        if value.isdigit() and 1 <= int(value) <= len(phases):
            labels.append(int(value) - 1)
        elif value.lower() in lookup:
            labels.append(lookup[value.lower()])
        else:
            raise SurgicalDataError(
                path, f"line {number}: unknown phase {value!r}; known: {', '.join(phases)}"
            )
    track = PhaseTrack(np.asarray(labels, np.int64), fps)
    if video_frames is not None and video_fps:
        video_seconds = video_frames / video_fps
        if abs(track.duration - video_seconds) > FRAME_TOLERANCE_SECONDS:
            raise SurgicalDataError(
                path,
                f"annotates {len(labels)} frames at {fps:g} fps ({track.duration:.1f}s) but the "
                f"video has {video_frames} frames at {video_fps:g} fps ({video_seconds:.1f}s)",
            )
    return track


def read_autolaparo_phases(
    path: str | Path, video_frames: int | None = None, video_fps: float | None = None
) -> PhaseTrack:
    """AutoLaparo task 1: labels 1-7 at 1 fps."""
    return read_phase_file(path, AUTOLAPARO_PHASES, 1.0, video_frames, video_fps)


@dataclass(frozen=True)
class ToolTrack:
    """Tool presence ``[rows, tools]`` (0/1) at ``times`` seconds."""

    times: np.ndarray
    presence: np.ndarray
    tools: tuple[str, ...]


def read_tool_file(path: str | Path, fps: float = CHOLEC80_FPS) -> ToolTrack:
    """``Frame<TAB>Grasper<TAB>...`` rows (Cholec80: every 25th frame) of 0/1 values."""
    path = Path(path)
    rows = _rows(path)
    if not rows or rows[0][0].strip().lower() != "frame" or len(rows[0]) < 2:
        raise SurgicalDataError(path, "needs a 'Frame<TAB><tool>...' header")
    tools = tuple(cell.strip() for cell in rows[0][1:])
    times, presence = [], []
    for number, row in enumerate(rows[1:], start=2):
        try:
            values = [int(cell) for cell in row[1:]]
            frame = int(row[0])
        except ValueError as exc:
            raise SurgicalDataError(path, f"line {number}: expected integers ({exc})") from exc
        if len(values) != len(tools) or any(v not in (0, 1) for v in values):
            raise SurgicalDataError(path, f"line {number}: expected {len(tools)} values of 0/1")
        times.append(frame / fps)
        presence.append(values)
    return ToolTrack(np.asarray(times), np.asarray(presence, np.int64), tools)


def read_frame_labels(
    path: str | Path, num_classes: int = len(CHOLEC80_PHASES)
) -> list[tuple[Path, int]]:
    """A frame-folder CSV ``path,label`` (paths relative to the CSV's folder, 0-based labels)."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise SurgicalDataError(path, f"cannot read ({exc})") from exc
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise SurgicalDataError(path, "needs columns path,label")
    items = []
    for number, row in enumerate(rows, start=2):
        if not row["label"].strip().isdigit() or int(row["label"]) >= num_classes:
            raise SurgicalDataError(
                path, f"line {number}: label {row['label']!r} is not 0-{num_classes - 1}"
            )
        items.append((path.parent / row["path"].strip(), int(row["label"])))
    return items
