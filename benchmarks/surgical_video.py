"""Surgical clip loading, in one run: seek-and-decode vs decoding the whole video vs a frame cache.

A synthetic video of ``--seconds`` at ``--side`` pixels and 25 fps (keyframe every second, as the
sample writes) is made in a temporary folder; ``--clips`` random SurgVLP clips (4 frames at 2 fps
from a 3-5 s window) are then read three ways: ``decode_at`` (one seek, decode up to the last
frame), a full decode of the video per clip (what a loader without seeking does), and a frame
cache extracted at 2 fps (its one-off extraction time is reported apart). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
from domainvlm.domains.surgical.datamodule import ClipSampling  # noqa: E402
from domainvlm.domains.surgical.sample import FPS, Procedure, write_video  # noqa: E402
from domainvlm.domains.surgical.transcripts import Sentence  # noqa: E402
from domainvlm.domains.surgical.video import (  # noqa: E402
    FrameSource,
    decode_all,
    frames_at_times,
    probe,
    write_frame_cache,
)


def clip_times(duration: float, count: int, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    sampling = ClipSampling()
    clips = []
    for _ in range(count):
        start = rng.uniform(0, duration - 3)
        sentence = Sentence(start, min(start + rng.uniform(1, 3), duration), "")
        clips.append(sampling.frame_times(sampling.window(sentence, duration), rng))
    return clips


def rate(read, clips: list[list[float]]) -> float:
    begin = time.perf_counter()
    for times in clips:
        read(times)
    return len(clips) / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--full-clips", type=int, default=5, help="clips read by full decoding")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        seconds = args.seconds / 7
        procedure = Procedure(np.random.default_rng(0), (seconds, seconds), args.side)
        video = Path(folder) / "videos" / "video01.mp4"
        write_video(video, [procedure.render(i) for i in range(procedure.frames)])
        info = probe(video)
        clips = clip_times(info.duration, args.clips, seed=1)
        seek = FrameSource(video, info.duration)
        begin = time.perf_counter()
        cache = write_frame_cache([video], Path(folder) / "frames", fps=2.0)
        cache_build = time.perf_counter() - begin
        cached = FrameSource(video, info.duration, cache)

        def full(times: list[float]) -> np.ndarray:
            frames, fps = decode_all(video)
            return frames_at_times(frames, fps, times)

        result = {
            "bench": "surgical_video",
            "video_seconds": round(info.duration, 1),
            "side": args.side,
            "fps": FPS,
            "clips": args.clips,
            "seek_clips_per_s": round(rate(seek.frames, clips), 1),
            "full_decode_clips_per_s": round(rate(full, clips[: args.full_clips]), 2),
            "frame_cache_clips_per_s": round(rate(cached.frames, clips), 1),
            "frame_cache_build_s": round(cache_build, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
