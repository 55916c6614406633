from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from domainvlm.core.datamodule import collate
from domainvlm.domains.surgical.datamodule import ClipSampling, SurgicalVideoDataModule
from domainvlm.domains.surgical.transcripts import Sentence
from domainvlm.domains.surgical.video import write_frame_cache


def test_short_anchor_windows_widen_to_four_seconds_inside_the_video():
    sampling = ClipSampling()
    assert sampling.window(Sentence(10.0, 11.0, "a"), 60.0) == (8.5, 12.5)
    assert sampling.window(Sentence(0.5, 1.0, "a"), 60.0) == (0.0, 4.0)
    assert sampling.window(Sentence(59.0, 60.0, "a"), 60.0) == (56.0, 60.0)
    assert sampling.window(Sentence(3.0, 9.0, "a"), 60.0) == (3.0, 9.0)  # long ones stay


def test_clip_frames_are_two_fps_samples_of_a_three_to_five_second_clip():
    sampling = ClipSampling()
    rng = np.random.default_rng(0)
    for _ in range(50):
        times = sampling.frame_times((10.0, 16.0), rng)
        assert len(times) == 4 and times[0] >= 10.0 and times[-1] < 16.0
        steps = np.diff(times) * 2  # multiples of the 0.5 s sample spacing
        assert np.allclose(steps, steps.round()) and 2.5 <= times[-1] - times[0] <= 5.0
    assert sampling.frame_times((10.0, 14.0), None) == [10.0, 11.0, 12.5, 13.5]


def test_bag_holds_overlapping_second_transcript_sentences_cut_or_padded():
    pool = [
        Sentence(0, 2, "early"),
        Sentence(9, 11, "one"),
        Sentence(11, 12, "two"),
        Sentence(12.5, 20, "three"),
    ]
    anchor = Sentence(10, 13, "anchor")
    bag, mask = ClipSampling(bag_size=2).bag(anchor, (10, 13), pool, None)
    assert bag == ["one", "two"] and mask == [True, True]
    bag, mask = ClipSampling(bag_size=4).bag(anchor, (10, 13), pool, None)
    assert bag == ["one", "two", "three", "anchor"] and mask == [True, True, True, True]
    bag, mask = ClipSampling(bag_size=2, pad_with_anchor=False).bag(anchor, (0, 1), pool, None)
    assert bag == ["early", "anchor"] and mask == [True, False]
    bag, mask = ClipSampling(bag_size=2, pad_with_anchor=False).bag(anchor, (30, 31), pool, None)
    assert bag == ["anchor", "anchor"] and mask == [True, False]  # the anchor stays a positive


def test_dataset_items_batch_into_clips_texts_and_bags(sample_root: Path):
    module = SurgicalVideoDataModule(root=str(sample_root), image_size=32, bag_size=3, views=2)
    train = module.dataset("train")
    item = train[0]
    assert [view.shape for view in item["frames"]] == [torch.Size([4, 3, 32, 32])] * 2
    assert item["text"] and len(item["bag"]) == 3 and item["bag_mask"].dtype == torch.bool
    batch = collate([train[i] for i in range(3)])
    assert batch["frames"][0].shape == (3, 4, 3, 32, 32) and len(batch["bag"]) == 3
    train.set_epoch(1)
    assert not torch.equal(train[0]["frames"][0], item["frames"][0])  # a new draw per epoch
    val = module.dataset("val")
    assert torch.equal(val[0]["frames"], val[0]["frames"])  # evaluation is deterministic


def test_frame_cache_is_read_by_the_same_dataset(sample_root: Path, tmp_path: Path):
    videos = sorted((sample_root / "videos").glob("*.mp4"))
    cache = write_frame_cache(videos[4:5], tmp_path / "frames", fps=4.0)  # the val video
    decoded = SurgicalVideoDataModule(root=str(sample_root)).dataset("val")[2]
    cached = SurgicalVideoDataModule(root=str(sample_root), frame_cache=str(cache)).dataset("val")[
        2
    ]
    assert cached["text"] == decoded["text"] and cached["frames"].shape == decoded["frames"].shape
    # frames 1/8 s apart at most: the same scene, close in pixels
    assert (cached["frames"] - decoded["frames"]).abs().mean() < 0.3


def test_bad_video_in_a_split_is_named_or_skipped(sample_root: Path, tmp_path: Path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    (root / "videos" / "video02.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(Exception, match="video02.mp4: not a readable video"):
        SurgicalVideoDataModule(root=str(root)).dataset("train")
    with pytest.warns(UserWarning, match="skipped 1 bad videos"):
        kept = SurgicalVideoDataModule(root=str(root), skip_bad_files=True).dataset("train")
    assert {video.id for video in kept.videos} == {"video01", "video03", "video04"}
