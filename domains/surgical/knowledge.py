"""Moment search: a knowledge base of clip embeddings over a video collection.

``kb build --domain surgical --data ROOT`` embeds every window of ``WINDOW`` seconds (stride
``STRIDE``) of every video in ``ROOT/videos`` as the mean of its frame embeddings; each entry holds
the video, start and end (seconds) and, when Cholec80 phase annotations exist, the phase covering
most of the window. ``kb search KB --text "clip the cystic duct"`` then returns moments.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from domainvlm.core.errors import DataRootError
from domainvlm.domains.surgical.phases import CHOLEC80_PHASES, read_phase_file
from domainvlm.domains.surgical.system import clip_path
from domainvlm.domains.surgical.templates import CHOLEC80_PROMPTS
from domainvlm.domains.surgical.transcripts import TRANSCRIPT_DIRS, read_transcript
from domainvlm.domains.surgical.video import probe
from domainvlm.domains.surgical.video import read_all as read_all_videos

WINDOW = 4.0
STRIDE = 2.0


def moment_windows(
    duration: float, window: float = WINDOW, stride: float = STRIDE
) -> list[tuple[float, float]]:
    """Windows covering ``[0, duration]``; the last one ends at the video's end."""
    if duration <= window:
        return [(0.0, duration)]
    starts = list(np.arange(0.0, duration - window, stride)) + [duration - window]
    return [(round(float(s), 3), round(float(s) + window, 3)) for s in starts]


def moment_records(root: str | Path, skip_bad_files: bool = False) -> list[dict[str, Any]]:
    """Records ``{"image": "videos/<id>.mp4#t=A,B", "video", "start", "end"[, "phase"]}``."""
    root = Path(root)
    videos = sorted((root / "videos").glob("*.mp4"))
    if not videos:
        raise DataRootError(
            f"{root}: no videos/*.mp4; expected an SVL/Cholec80 layout or "
            "`domainvlm sample-data surgical --out DIR`"
        )
    records: list[dict[str, Any]] = []
    for info in read_all_videos(videos, probe, skip_bad_files, "videos"):
        annotation = root / "phase_annotations" / f"{info.path.stem}-phase.txt"
        track = (
            read_phase_file(annotation, video_frames=info.frames, video_fps=info.fps)
            if annotation.is_file()
            else None
        )
        for start, end in moment_windows(info.duration):
            record: dict[str, Any] = {
                "image": clip_path(info.path.relative_to(root).as_posix(), start, end),
                "video": info.path.stem,
                "start": start,
                "end": end,
            }
            if track is not None:
                seconds = np.arange(start, end, 0.5)
                record["phase"] = CHOLEC80_PHASES[
                    Counter(track.at(t) for t in seconds).most_common(1)[0][0]
                ]
            records.append(record)
    return records


def moment_queries(root: str | Path | None, limit: int = 256) -> list[dict[str, Any]]:
    """Text queries of the kind moment search gets, for tuning the index and measuring its recall:
    narration sentences of the second transcript (or the published phase prompts without data)."""
    if root is None:
        return [{"text": prompt} for prompt in CHOLEC80_PROMPTS.values()]
    folder = Path(root) / TRANSCRIPT_DIRS[1]
    texts = []
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        texts += [sentence.text for sentence in read_transcript(path)]
    if not texts:
        return [{"text": prompt} for prompt in CHOLEC80_PROMPTS.values()]
    step = max(1, len(texts) // limit)
    return [{"text": text} for text in texts[::step][:limit]]
