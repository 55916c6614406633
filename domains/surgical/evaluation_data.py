"""Held-out sets for ``domainvlm eval``: zero-shot phase recognition and clip↔sentence retrieval.

Phase recognition follows the SurgVLP/HecVL/PeskaVLP protocol: every frame at 1 fps is classified
on its own with the published prompts; accuracy and macro-F1 are computed per video and averaged
over videos. Frame ``k`` is the video frame shown at ``t = k`` seconds and carries the annotation
of frame ``k·fps`` (the public SurgVLP script opens frame ``k+1`` with label ``k``: an off-by-one
this loader does not reproduce). Layouts: Cholec80 (``videos/`` + ``phase_annotations/``, test
split from ``splits/test.csv`` or Cholec80's videos 49-80), AutoLaparo task 1 (``videos/NN.mp4`` +
``labels/label_NN.txt``, videos 15-21) and frame folders (``<split>.csv`` of ``path,label``).
"""

from __future__ import annotations

from pathlib import Path

from domainvlm.core.registry import RetrievalData, ZeroShotData
from domainvlm.domains.surgical.datamodule import ClipSampling
from domainvlm.domains.surgical.phases import (
    AUTOLAPARO_PHASES,
    AUTOLAPARO_SPLITS,
    CHOLEC80_FPS,
    CHOLEC80_PHASES,
    CHOLEC80_TEST_VIDEOS,
    PhaseTrack,
    read_autolaparo_phases,
    read_frame_labels,
    read_phase_file,
)
from domainvlm.domains.surgical.system import clip_path
from domainvlm.domains.surgical.templates import AUTOLAPARO_PROMPTS, CHOLEC80_PROMPTS, ClassPrompts
from domainvlm.domains.surgical.transcripts import (
    TRANSCRIPT_DIRS,
    find_transcript,
    read_transcript,
    split_ids,
)
from domainvlm.domains.surgical.video import SurgicalDataError, probe

PROTOCOL = (
    "zero-shot phase recognition, SurgVLP protocol: each frame at 1 fps classified independently "
    "with the published prompt of each phase; frame k at t=k s with the label of annotation frame "
    "k*fps (no off-by-one); accuracy and macro-F1 (classes in truth or prediction) per video, "
    "averaged over videos"
)


def phase_videos(root: Path, split: str) -> list[str]:
    if (root / "splits" / f"{split}.csv").is_file() or split == "train":
        return split_ids(root, split)
    if split == "test":
        ids = [v for v in CHOLEC80_TEST_VIDEOS if (root / "videos" / f"{v}.mp4").is_file()]
        if ids:
            return ids
    raise SurgicalDataError(
        root / "splits" / f"{split}.csv", f"no split file and no Cholec80 {split} videos"
    )


def video_phases(root: Path, video_id: str) -> tuple[Path, PhaseTrack]:
    """A Cholec80 video and its phase track, checked against the video's frame count."""
    video = root / "videos" / f"{video_id}.mp4"
    info = probe(video)
    track = read_phase_file(
        root / "phase_annotations" / f"{video_id}-phase.txt",
        CHOLEC80_PHASES,
        CHOLEC80_FPS,
        video_frames=info.frames,
        video_fps=info.fps,
    )
    return video, track


def zeroshot_data(root: Path, split: str = "test", lang: str = "en") -> ZeroShotData:
    root = Path(root)
    if lang != "en":
        raise SurgicalDataError(root, f"surgical prompts are English only, got {lang!r}")
    if (root / f"{split}.csv").is_file():
        items = read_frame_labels(root / f"{split}.csv")
        return ZeroShotData(
            [path for path, _ in items],
            [label for _, label in items],
            list(CHOLEC80_PHASES),
            [ClassPrompts(CHOLEC80_PROMPTS)],
            groups=[path.parent.name for path, _ in items],
            protocol=PROTOCOL,
        )
    if (root / "labels").is_dir() and not (root / "phase_annotations").is_dir():
        return _autolaparo(root, split)
    paths, labels, groups = [], [], []
    for video_id in phase_videos(root, split):
        video, track = video_phases(root, video_id)
        for second in range(int(track.duration)):
            paths.append(f"{video}#t={second}")
            labels.append(track.at(second))
            groups.append(video_id)
    return ZeroShotData(
        paths,
        labels,
        list(CHOLEC80_PHASES),
        [ClassPrompts(CHOLEC80_PROMPTS)],
        groups=groups,
        protocol=PROTOCOL,
    )


def _autolaparo(root: Path, split: str) -> ZeroShotData:
    if split not in AUTOLAPARO_SPLITS:
        raise SurgicalDataError(root, f"AutoLaparo splits are {', '.join(AUTOLAPARO_SPLITS)}")
    paths, labels, groups = [], [], []
    for number in AUTOLAPARO_SPLITS[split]:
        video = root / "videos" / f"{number:02d}.mp4"
        if not video.is_file():
            continue
        info = probe(video)
        track = read_autolaparo_phases(
            root / "labels" / f"label_{number:02d}.txt", info.frames, info.fps
        )
        for second in range(int(track.duration)):
            paths.append(f"{video}#t={second}")
            labels.append(track.at(second))
            groups.append(video.stem)
    if not paths:
        raise SurgicalDataError(
            root / "videos", f"no AutoLaparo {split} videos ({list(AUTOLAPARO_SPLITS[split])})"
        )
    return ZeroShotData(
        paths,
        labels,
        list(AUTOLAPARO_PHASES),
        [ClassPrompts(AUTOLAPARO_PROMPTS)],
        groups=groups,
        protocol=PROTOCOL.replace("SurgVLP", "SurgVLP (AutoLaparo)"),
    )


def retrieval_data(root: Path, split: str = "test") -> RetrievalData:
    """One clip per anchor sentence of the split's videos (its evaluation window), captioned by it."""
    root = Path(root)
    sampling = ClipSampling()
    paths, captions = [], []
    for video_id in split_ids(root, split):
        video = root / "videos" / f"{video_id}.mp4"
        info = probe(video)
        for sentence in read_transcript(
            find_transcript(root, TRANSCRIPT_DIRS[0], video_id), info.duration
        ):
            times = sampling.frame_times(sampling.window(sentence, info.duration), None)
            paths.append(clip_path(video, times[0], times[-1]))
            captions.append(sentence.text)
    return RetrievalData(paths, captions, list(range(len(captions))), [""] * len(captions))
