"""Video- and phase-level items: PeskaVLP's procedure alignment (frames over a whole video and its
keysteps in order), HecVL's phase level (frames over one keystep, its text and its narration) and
HecVL's video level (frames over a whole video, its abstract and its keysteps).

A procedure item holds ``num_frames`` frames spread uniformly over the video (PeskaVLP: 64) and at
most ``max_steps`` keystep texts (``keystep_texts/<id>.csv``, ordered by start) taken at a uniform
stride (PeskaVLP: 8). Steps are not padded: soft-DTW aligns sequences of any length, and a repeated
step would reward a wrong order. Videos without a keystep file are left out.

A video-level item holds the same uniform frames (HecVL: 64), the abstract
(``abstract_texts/<id>.csv``) as parent and exactly ``children`` keysteps (HecVL: 8) as children:
taken at a uniform stride, which repeats steps when a video has fewer (the children are averaged,
so a repeat only re-weights them). Videos without an abstract or keysteps are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from domainvlm.core.transforms import VideoClipTransform
from domainvlm.domains.surgical.transcripts import (
    ABSTRACT_DIR,
    KEYSTEP_DIR,
    read_abstract,
    read_keysteps,
)
from domainvlm.domains.surgical.video import FrameSource, SurgicalDataError
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Procedure:
    id: str
    path: Path
    duration: float
    steps: list[str]


def uniform_stride(items: list[str], count: int) -> list[str]:
    """``count`` items at a uniform stride over ``items``, first and last kept, order kept; fewer
    items than ``count`` repeat (``[a, b]`` → 4: ``a a b b``)."""
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def whole_video_times(duration: float, num_frames: int) -> list[float]:
    """``num_frames`` times at the centres of equal slices of the video."""
    return ((np.arange(num_frames) + 0.5) * duration / num_frames).tolist()


def read_procedure(root: Path, video_id: str, path: Path, duration: float) -> Procedure | None:
    keystep_file = root / KEYSTEP_DIR / f"{video_id}.csv"
    if not keystep_file.is_file():
        return None
    keysteps = sorted(read_keysteps(keystep_file, duration), key=lambda s: (s.start, s.step or 0))
    return Procedure(video_id, path, duration, [step.text for step in keysteps])


class ProcedureDataset(Dataset):
    """``{"frames" [T, C, H, W], "steps" [≤ max_steps texts in order], "video"}`` per video."""

    def __init__(
        self,
        procedures: list[Procedure],
        transform: VideoClipTransform,
        num_frames: int = 64,
        max_steps: int = 8,
        frame_cache: Path | None = None,
    ) -> None:
        if not procedures:
            raise SurgicalDataError(Path(KEYSTEP_DIR), "no training video has a keystep file")
        self.procedures = procedures
        self.transform = transform
        self.num_frames = num_frames
        self.max_steps = max_steps
        self.sources = [FrameSource(p.path, p.duration, frame_cache) for p in procedures]

    def __len__(self) -> int:
        return len(self.procedures)

    def __getitem__(self, index: int) -> dict[str, Any]:
        procedure = self.procedures[index]
        times = whole_video_times(procedure.duration, self.num_frames)
        steps = procedure.steps
        if len(steps) > self.max_steps:
            steps = uniform_stride(steps, self.max_steps)
        return {
            "frames": self.transform(self.sources[index].frames(times)),
            "steps": steps,
            "video": procedure.id,
        }


@dataclass(frozen=True)
class Keystep:
    video: Path
    start: float
    end: float
    text: str
    children: list[str]


def keysteps_with_children(
    root: Path, video_id: str, path: Path, duration: float, narration: list, children: int
) -> list[Keystep]:
    """HecVL's phase level: each keystep row with the (at most ``children``) narration sentences
    inside its span, padded with the keystep text itself."""
    keystep_file = root / KEYSTEP_DIR / f"{video_id}.csv"
    if not keystep_file.is_file():
        return []
    steps = []
    for row in read_keysteps(keystep_file, duration):
        inside = [s.text for s in narration if s.end > row.start and s.start < row.end]
        if len(inside) > children:
            inside = uniform_stride(inside, children)
        steps.append(
            Keystep(
                path,
                row.start,
                min(row.end, duration),
                row.text,
                inside + [row.text] * (children - len(inside)),
            )
        )
    return steps


class KeystepDataset(Dataset):
    """``{"frames" [T, C, H, W] over the keystep's span, "parent", "children" [K]}`` per keystep."""

    def __init__(
        self,
        steps: list[Keystep],
        transform: VideoClipTransform,
        num_frames: int = 16,
        frame_cache: Path | None = None,
    ) -> None:
        if not steps:
            raise SurgicalDataError(Path(KEYSTEP_DIR), "no training video has a keystep file")
        self.steps = steps
        self.transform = transform
        self.num_frames = num_frames
        self.frame_cache = frame_cache

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: int) -> dict[str, Any]:
        step = self.steps[index]
        times = (
            step.start
            + (np.arange(self.num_frames) + 0.5) * (step.end - step.start) / self.num_frames
        )
        source = FrameSource(step.video, step.end, self.frame_cache)
        return {
            "frames": self.transform(source.frames(times.tolist())),
            "parent": step.text,
            "children": step.children,
        }


@dataclass(frozen=True)
class VideoSummary:
    id: str
    path: Path
    duration: float
    abstract: str
    steps: list[str]


def read_video_summary(
    root: Path, video_id: str, path: Path, duration: float
) -> VideoSummary | None:
    """HecVL's video level: the abstract and the keysteps in start order, or None without both."""
    abstract_file = root / ABSTRACT_DIR / f"{video_id}.csv"
    procedure = read_procedure(root, video_id, path, duration)
    if procedure is None or not procedure.steps or not abstract_file.is_file():
        return None
    return VideoSummary(video_id, path, duration, read_abstract(abstract_file), procedure.steps)


class VideoLevelDataset(Dataset):
    """``{"frames" [T, C, H, W] over the whole video, "parent" (abstract), "children" [K]}``."""

    def __init__(
        self,
        summaries: list[VideoSummary],
        transform: VideoClipTransform,
        num_frames: int = 64,
        children: int = 8,
        frame_cache: Path | None = None,
    ) -> None:
        if not summaries:
            raise SurgicalDataError(
                Path(ABSTRACT_DIR), "no training video has both an abstract and a keystep file"
            )
        self.summaries = summaries
        self.transform = transform
        self.num_frames = num_frames
        self.children = children
        self.sources = [FrameSource(s.path, s.duration, frame_cache) for s in summaries]

    def __len__(self) -> int:
        return len(self.summaries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        summary = self.summaries[index]
        times = whole_video_times(summary.duration, self.num_frames)
        return {
            "frames": self.transform(self.sources[index].frames(times)),
            "parent": summary.abstract,
            "children": uniform_stride(summary.steps, self.children),
        }
