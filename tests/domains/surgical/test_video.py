from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from domainvlm.domains.surgical.video import (
    FrameSource,
    SurgicalDataError,
    decode_all,
    decode_at,
    frames_at_times,
    probe,
    write_frame_cache,
)


def test_probe_reads_the_sample_video(sample_root: Path):
    info = probe(sample_root / "videos" / "video01.mp4")
    assert info.fps == 25.0 and (info.width, info.height) == (64, 64)
    assert info.duration == pytest.approx(info.frames / 25.0, abs=0.05)


def test_seek_decode_returns_the_frames_a_full_decode_shows(sample_root: Path):
    video = sample_root / "videos" / "video01.mp4"
    everything, fps = decode_all(video)
    times = [7.3, 2.0, 2.04, 0.0, probe(video).duration - 0.01]
    sought = decode_at(video, times)
    assert sought.shape == (5, 64, 64, 3)
    np.testing.assert_array_equal(sought, frames_at_times(everything, fps, times))


def test_unreadable_videos_are_named(tmp_path: Path, sample_root: Path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(SurgicalDataError, match="notes.mp4: not a readable video"):
        probe(text)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes((sample_root / "videos" / "video01.mp4").read_bytes()[:3000])
    with pytest.raises(SurgicalDataError, match="cut.mp4"):
        probe(truncated)
    with pytest.raises(SurgicalDataError, match="does not exist"):
        probe(tmp_path / "missing.mp4")


def test_file_without_a_video_stream(tmp_path: Path):
    import av

    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        container.mux(stream.encode())
    with pytest.raises(SurgicalDataError, match="audio.mp4: has no video stream"):
        probe(path)


def test_frame_cache_serves_the_frames_of_its_rate(sample_root: Path, tmp_path: Path):
    video = tmp_path / "videos" / "video01.mp4"
    video.parent.mkdir()
    shutil.copy(sample_root / "videos" / "video01.mp4", video)
    cache = write_frame_cache([video], tmp_path / "frames", fps=2.0)
    info = probe(video)
    assert len(list((cache / "video01").glob("*.png"))) == int(info.duration * 2)
    from_cache = FrameSource(video, info.duration, cache).frames([1.0, 3.5])
    from_video = FrameSource(video, info.duration).frames([1.0, 3.5])
    np.testing.assert_array_equal(from_cache, from_video)  # PNG is lossless


def test_times_past_the_end_are_an_error_naming_the_video(sample_root: Path):
    video = sample_root / "videos" / "video01.mp4"
    with pytest.raises(SurgicalDataError, match="video01.mp4: .*t=99"):
        decode_at(video, [1.0, 99.0])
