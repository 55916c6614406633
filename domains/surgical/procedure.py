"""Video- and phase-level items: PeskaVLP's procedure alignment (frames over a whole video and its
keysteps in order) and HecVL's phase level (frames over one keystep, its text and its narration).

Each item holds ``num_frames`` frames spread uniformly over the video (PeskaVLP: 64) and at most
``max_steps`` keystep texts (``keystep_texts/<id>.csv``, ordered by start) taken at a uniform stride
(PeskaVLP: 8). Steps are not padded: soft-DTW aligns sequences of any length, and a repeated step
would reward a wrong order. Videos without a keystep file are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from domainvlm.core.transforms import VideoClipTransform
from domainvlm.domains.surgical.transcripts import KEYSTEP_DIR, read_keysteps
from domainvlm.domains.surgical.video import FrameSource, SurgicalDataError
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Procedure:
    id: str
    path: Path
    duration: float
    steps: list[str]


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
        times = (np.arange(self.num_frames) + 0.5) * procedure.duration / self.num_frames
        steps = procedure.steps
        if len(steps) > self.max_steps:
            steps = [
                steps[i] for i in np.linspace(0, len(steps) - 1, self.max_steps).round().astype(int)
            ]
        return {
            "frames": self.transform(self.sources[index].frames(times.tolist())),
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
            inside = [
                inside[i] for i in np.linspace(0, len(inside) - 1, children).round().astype(int)
            ]
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
