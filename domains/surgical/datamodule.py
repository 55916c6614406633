"""SurgVLP clip sampling over SVL-layout videos, decoded by seeking or read from a frame cache.

One item per sentence of the first transcript (the anchor). Its ``[start, end]`` window is widened
to at least ``min_window`` seconds; a clip of ``clip_seconds`` (random in training, the middle
length otherwise) is placed inside it and sampled at ``sample_fps``; ``num_frames`` frames are
taken uniformly from those samples. Sentences of the second transcript that overlap the window form
the positive bag, cut (randomly in training) or padded to ``bag_size``; padding repeats the anchor
as the reference does (``bag_mask`` is True for every slot then), or is masked out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from domainvlm.core.datamodule import BaseDataModule, collate
from domainvlm.core.transforms import VideoClipTransform
from domainvlm.domains.surgical.procedure import (
    KeystepDataset,
    ProcedureDataset,
    VideoLevelDataset,
    keysteps_with_children,
    read_procedure,
    read_video_summary,
)
from domainvlm.domains.surgical.transcripts import (
    TRANSCRIPT_DIRS,
    Sentence,
    find_transcript,
    read_transcript,
    split_ids,
)
from domainvlm.domains.surgical.video import FrameSource, SurgicalDataError, probe, read_all
from torch.utils.data import DataLoader, Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""SurgVLP normalises frames with ImageNet statistics (its ResNet-50 starts from ImageNet)."""


@dataclass(frozen=True)
class NarratedVideo:
    id: str
    path: Path
    duration: float
    anchors: list[Sentence]
    bag_source: list[Sentence]


@dataclass(frozen=True)
class ClipSampling:
    """Every knob of the reference sampling (defaults = SurgVLP)."""

    min_window: float = 4.0
    clip_seconds: tuple[float, float] = (3.0, 5.0)
    sample_fps: float = 2.0
    num_frames: int = 4
    bag_size: int = 2
    pad_with_anchor: bool = True

    def window(self, sentence: Sentence, duration: float) -> tuple[float, float]:
        start, end = sentence.start, min(sentence.end, duration)
        missing = self.min_window - (end - start)
        if missing > 0:
            start, end = start - missing / 2, end + missing / 2
            if start < 0:
                start, end = 0.0, end - start
            if end > duration:
                start, end = max(0.0, start - (end - duration)), duration
        return start, end

    def frame_times(
        self, window: tuple[float, float], rng: np.random.Generator | None
    ) -> list[float]:
        """``num_frames`` times: a clip inside the window, sampled at ``sample_fps``, then uniform."""
        start, end = window
        low, high = self.clip_seconds
        length = rng.uniform(low, high) if rng is not None else (low + high) / 2
        length = min(length, end - start)
        offset = (
            rng.uniform(0, end - start - length) if rng is not None else (end - start - length) / 2
        )
        samples = np.arange(start + offset, start + offset + length, 1.0 / self.sample_fps)
        if len(samples) == 0:
            samples = np.array([start + offset])
        pick = np.linspace(0, len(samples) - 1, self.num_frames).round().astype(int)
        return [float(t) for t in samples[pick]]

    def bag(
        self,
        anchor: Sentence,
        window: tuple[float, float],
        pool: list[Sentence],
        rng: np.random.Generator | None,
    ) -> tuple[list[str], list[bool]]:
        overlapping = [s.text for s in pool if s.end > window[0] and s.start < window[1]]
        if len(overlapping) > self.bag_size:
            if rng is not None:
                chosen = sorted(rng.choice(len(overlapping), self.bag_size, replace=False))
                overlapping = [overlapping[i] for i in chosen]
            else:
                overlapping = overlapping[: self.bag_size]
        mask = [True] * len(overlapping)
        while len(overlapping) < self.bag_size:
            overlapping.append(anchor.text)
            # an empty bag keeps the anchor as its one positive even without anchor padding
            mask.append(self.pad_with_anchor or not any(mask))
        return overlapping, mask


def read_narrated_video(
    root: Path, video_id: str, transcripts: tuple[str, str] = TRANSCRIPT_DIRS
) -> NarratedVideo:
    path = root / "videos" / f"{video_id}.mp4"
    info = probe(path)
    anchors = read_transcript(find_transcript(root, transcripts[0], video_id), info.duration)
    bag_source = read_transcript(find_transcript(root, transcripts[1], video_id), info.duration)
    return NarratedVideo(video_id, path, info.duration, anchors, bag_source)


class NarratedClipDataset(Dataset):
    """``{"frames" [T, C, H, W], "text", "bag" [K], "bag_mask" [K], "video", "start", "end"}``."""

    def __init__(
        self,
        videos: list[NarratedVideo],
        sampling: ClipSampling,
        transform: VideoClipTransform,
        train: bool,
        seed: int = 0,
        frame_cache: Path | None = None,
        views: int = 1,
    ) -> None:
        self.videos = videos
        self.sampling = sampling
        self.transform = transform
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.views = views
        self.items = [(v, a) for v, video in enumerate(videos) for a in range(len(video.anchors))]
        self.sources = [FrameSource(video.path, video.duration, frame_cache) for video in videos]
        if not self.items:
            where = videos[0].path.parent if videos else Path("videos")
            raise SurgicalDataError(where, "no video of the split has an anchor sentence")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video_index, anchor_index = self.items[index]
        video = self.videos[video_index]
        anchor = video.anchors[anchor_index]
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.train else None
        window = self.sampling.window(anchor, video.duration)
        times = self.sampling.frame_times(window, rng)
        frames = self.sources[video_index].frames(times)
        bag, mask = self.sampling.bag(anchor, window, video.bag_source, rng)
        clips = [self.transform(frames) for _ in range(self.views)]
        return {
            "frames": clips[0] if self.views == 1 else clips,
            "text": anchor.text,
            "bag": bag,
            "bag_mask": torch.tensor(mask),
            "video": video.id,
            "start": times[0],
            "end": times[-1],
        }


class SurgicalVideoDataModule(BaseDataModule):
    domain = "surgical"
    dataset_hint = (
        "an SVL-layout video-lecture dataset (videos/ + two narration transcripts + splits/)"
    )

    def __init__(
        self,
        root: str = "data/samples/surgical",
        image_size: int = 64,
        min_window: float = 4.0,
        clip_seconds: tuple[float, float] = (3.0, 5.0),
        sample_fps: float = 2.0,
        num_frames: int = 4,
        bag_size: int = 2,
        pad_with_anchor: bool = True,
        transcripts: tuple[str, str] = TRANSCRIPT_DIRS,
        frame_cache: str | None = None,
        views: int = 1,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        hflip: bool = False,
        skip_bad_files: bool = False,
        procedure_frames: int = 0,
        procedure_steps: int = 8,
        procedure_batch_size: int = 4,
        phase_frames: int = 0,
        phase_children: int = 3,
        phase_batch_size: int = 16,
        video_frames: int = 0,
        video_children: int = 8,
        video_batch_size: int = 4,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: SVL-layout dataset root (``domainvlm sample-data surgical --out DIR``).
            image_size: frame side after crop (SurgVLP: 224 at evaluation, 336 px crops in training).
            min_window: anchor windows shorter than this many seconds are widened.
            clip_seconds: clip length range in seconds (random in training).
            sample_fps: rate the clip is sampled at before taking ``num_frames``.
            num_frames: frames per clip.
            bag_size: K, sentences of the second transcript per clip (cut or padded).
            pad_with_anchor: pad short bags with the anchor (reference) or mask the padding.
            transcripts: folders of the anchor and the bag transcripts.
            frame_cache: folder of pre-extracted frames read instead of decoding the mp4s.
            views: augmented views per clip in training (1 = the clip alone).
            crop_scale: area range of the random resized crop in training.
            hflip: random horizontal flips in training.
            skip_bad_files: skip unreadable videos/transcripts with a counted warning.
            procedure_frames: frames per whole video for PeskaVLP's keystep alignment (0 = off;
                on, training batches are ``{"clips": ..., "procedure": ...}``).
            procedure_steps: keysteps per video at most (uniform stride).
            procedure_batch_size: videos per procedure batch.
            phase_frames: frames per keystep span for HecVL's phase level (0 = off; on, training
                batches gain a ``"phase"`` entry).
            phase_children: narration sentences per keystep (HecVL: 3; padded with the keystep).
            phase_batch_size: keysteps per phase batch.
            video_frames: frames per whole video for HecVL's video level (0 = off; on, training
                batches gain a ``"video"`` entry: the abstract against these frames, HecVL: 64).
            video_children: keysteps per video as the abstract's children (HecVL: 8, uniform
                stride, repeated when a video has fewer).
            video_batch_size: videos per video-level batch.
        """
        super().__init__(root=root, **kwargs)
        self.image_size = image_size
        self.sampling = ClipSampling(
            min_window, tuple(clip_seconds), sample_fps, num_frames, bag_size, pad_with_anchor
        )
        self.transcripts = tuple(transcripts)
        self.frame_cache = Path(frame_cache) if frame_cache else None
        self.views = views
        self.crop_scale = tuple(crop_scale)
        self.hflip = hflip
        self.skip_bad_files = skip_bad_files
        self.procedure_frames = procedure_frames
        self.procedure_steps = procedure_steps
        self.procedure_batch_size = procedure_batch_size
        self.phase_frames = phase_frames
        self.phase_children = phase_children
        self.phase_batch_size = phase_batch_size
        self.video_frames = video_frames
        self.video_children = video_children
        self.video_batch_size = video_batch_size

    def preprocessing(self) -> dict:
        return {
            "image_size": self.image_size,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "num_frames": self.sampling.num_frames,
        }

    def build_dataset(self, split: str) -> Dataset:
        ids = split_ids(self.root, split)
        videos = read_all(
            ids,
            lambda i: read_narrated_video(self.root, i, self.transcripts),
            self.skip_bad_files,
            "videos",
        )
        train = split == "train"
        transform = VideoClipTransform(
            self.image_size,
            IMAGENET_MEAN,
            IMAGENET_STD,
            train=train,
            scale=self.crop_scale,
            hflip=self.hflip,
            seed=self.seed if train else None,
        )
        return NarratedClipDataset(
            videos,
            self.sampling,
            transform,
            train,
            self.seed,
            self.frame_cache,
            self.views if train else 1,
        )

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        clips = self.loader("train", shuffle=True)
        if self.procedure_frames <= 0 and self.phase_frames <= 0 and self.video_frames <= 0:
            return clips
        train = self.dataset("train")
        transform = VideoClipTransform(
            self.image_size, IMAGENET_MEAN, IMAGENET_STD, train=True, scale=self.crop_scale,
            hflip=self.hflip, seed=self.seed,
        )  # fmt: skip
        loaders = {"clips": clips}
        if self.procedure_frames > 0:
            procedures = [
                p
                for video in train.videos
                if (p := read_procedure(self.root, video.id, video.path, video.duration))
                is not None
            ]
            dataset = ProcedureDataset(
                procedures, transform, self.procedure_frames, self.procedure_steps, self.frame_cache
            )
            loaders["procedure"] = self._extra_loader(dataset, self.procedure_batch_size)
        if self.phase_frames > 0:
            steps = [
                step
                for video in train.videos
                for step in keysteps_with_children(
                    self.root,
                    video.id,
                    video.path,
                    video.duration,
                    video.anchors,
                    self.phase_children,
                )  # fmt: skip
            ]
            dataset = KeystepDataset(steps, transform, self.phase_frames, self.frame_cache)
            loaders["phase"] = self._extra_loader(dataset, self.phase_batch_size)
        if self.video_frames > 0:
            summaries = [
                s
                for video in train.videos
                if (s := read_video_summary(self.root, video.id, video.path, video.duration))
                is not None
            ]
            dataset = VideoLevelDataset(
                summaries, transform, self.video_frames, self.video_children, self.frame_cache
            )
            loaders["video"] = self._extra_loader(dataset, self.video_batch_size)
        # Lightning cycles the shorter loaders, so every clip batch comes with the others
        return loaders

    def _extra_loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(self.seed),
        )
