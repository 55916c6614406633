"""Augmentation interface: the only module that imports albumentations.

Domains describe what they want (size, crop scale, flips, per-band mean/std) and get tensors back;
they never touch albumentations, so swapping the backend later touches one file. Everything works
on HWC numpy arrays with any number of bands and any dtype (uint8 RGB, uint16 Sentinel-2, float).
"""

from __future__ import annotations

import os
import random
import unicodedata
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import get_worker_info


class ImageTransform:
    """HWC array → normalised ``[C, size, size]`` float32 tensor.

    Train: random resized crop (``scale`` of the area, ``ratio`` aspect) and optional flips and
    90° rotations. Eval: resize the short side to ``size`` and centre-crop (no randomness).
    Normalisation per band: ``(pixel / max_pixel_value - mean) / std``.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool = False,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        vflip: bool = False,
        rot90: bool = False,
        max_pixel_value: float = 255.0,
        seed: int | None = None,
    ) -> None:
        """
        Args:
            size: output side in pixels.
            mean: per-band mean, in units of ``pixel / max_pixel_value``.
            std: per-band standard deviation, same units.
            train: random augmentation if true, deterministic resize + centre crop otherwise.
            scale: area range of the random resized crop.
            ratio: aspect-ratio range of the random resized crop.
            hflip: random horizontal flips (train only).
            vflip: random vertical flips (train only; natural for overhead imagery).
            rot90: random multiples of 90° rotation (train only).
            max_pixel_value: 255 for 8-bit, 10000 for Sentinel-2 reflectance, 1 for float data.
            seed: makes augmentation reproducible; each data-loader worker derives its own stream.
        """
        if len(mean) != len(std) or not mean:
            raise ValueError(
                f"mean and std need one value per band, got {len(mean)} and {len(std)}"
            )
        if min(std) <= 0:
            raise ValueError(f"std must be positive for every band, got {list(std)}")
        if max_pixel_value <= 0:
            raise ValueError(f"max_pixel_value must be positive, got {max_pixel_value}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.settings: dict[str, Any] = {
            "size": int(size),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "train": bool(train),
            "scale": [float(v) for v in scale],
            "ratio": [float(v) for v in ratio],
            "hflip": bool(hflip),
            "vflip": bool(vflip),
            "rot90": bool(rot90),
            "max_pixel_value": float(max_pixel_value),
            "seed": seed,
        }
        self.bands = len(mean)
        # Folding max_pixel_value into mean and std makes normalisation one multiply-add.
        self._offset = np.asarray(mean, np.float32) * np.float32(max_pixel_value)
        self._inv_scale = 1.0 / (np.asarray(std, np.float32) * np.float32(max_pixel_value))
        self._streams = _WorkerStreams(seed)
        self._pipeline = A.Compose(self._geometry(), seed=self._streams.base_seed)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain values (for checkpoints): ``ImageTransform(**config)``."""
        return dict(self.settings)

    def __call__(self, image: np.ndarray) -> Tensor:
        image = self._check(image, "image")
        self._reseed_in_worker()
        out = self._pipeline(image=image)["image"]
        return torch.from_numpy(self._normalise(out).transpose(2, 0, 1).copy())

    def _geometry(self) -> list[A.BasicTransform]:
        size = self.settings["size"]
        if not self.settings["train"]:
            return [A.SmallestMaxSize(max_size=size), A.CenterCrop(height=size, width=size)]
        steps: list[A.BasicTransform] = [
            A.RandomResizedCrop(
                size=(size, size), scale=self.settings["scale"], ratio=self.settings["ratio"]
            )
        ]
        if self.settings["hflip"]:
            steps.append(A.HorizontalFlip(p=0.5))
        if self.settings["vflip"]:
            steps.append(A.VerticalFlip(p=0.5))
        if self.settings["rot90"]:
            steps.append(A.RandomRotate90(p=1.0))
        return steps

    def _check(self, array: np.ndarray, what: str) -> np.ndarray:
        """Float32 HWC with the configured band count; HW greyscale gains a band axis."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3:
            raise ValueError(f"{what} must be HWC (or HW), got shape {array.shape}")
        if array.shape[-1] != self.bands:
            raise ValueError(
                f"{what} has {array.shape[-1]} bands (shape {array.shape}) but the transform "
                f"has mean/std for {self.bands}"
            )
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(f"{what} has non-numeric dtype {array.dtype}")
        return np.ascontiguousarray(array, dtype=np.float32)

    def _normalise(self, array: np.ndarray) -> np.ndarray:
        return ((array - self._offset) * self._inv_scale).astype(np.float32, copy=False)

    def _reseed_in_worker(self) -> None:
        seed = self._streams.new_worker_seed()
        if seed is not None:
            self._pipeline.set_random_seed(seed)


class VideoClipTransform(ImageTransform):
    """``[T, H, W, C]`` frames → ``[T, C, size, size]``, one set of random parameters per clip.

    Every frame gets the same crop, flip and rotation, so motion between frames is preserved.
    """

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> Tensor:
        frames = [self._check(frame, f"frame {index}") for index, frame in enumerate(frames)]
        if not frames:
            raise ValueError("a clip needs at least one frame")
        shapes = {frame.shape for frame in frames}
        if len(shapes) != 1:
            raise ValueError(f"all frames of a clip must share one shape, got {sorted(shapes)}")
        self._reseed_in_worker()
        out = self._pipeline(images=np.stack(frames))["images"]
        return torch.from_numpy(self._normalise(out).transpose(0, 3, 1, 2).copy())


class MultiCrop:
    """DINO-style views of one image: ``n_global`` large crops first, then ``n_local`` small ones."""

    def __init__(
        self,
        global_size: int,
        local_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        n_global: int = 2,
        n_local: int = 4,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        hflip: bool = True,
        vflip: bool = False,
        rot90: bool = False,
        max_pixel_value: float = 255.0,
        seed: int | None = None,
    ) -> None:
        if n_global < 1 or n_local < 0:
            raise ValueError(f"need n_global >= 1 and n_local >= 0, got {n_global}, {n_local}")
        shared = dict(
            mean=mean,
            std=std,
            train=True,
            hflip=hflip,
            vflip=vflip,
            rot90=rot90,
            max_pixel_value=max_pixel_value,
        )
        local_seed = None if seed is None else seed + 1
        self.global_view = ImageTransform(global_size, scale=global_scale, seed=seed, **shared)
        self.local_view = ImageTransform(local_size, scale=local_scale, seed=local_seed, **shared)
        self.n_global, self.n_local = n_global, n_local

    def __call__(self, image: np.ndarray) -> list[Tensor]:
        views = [self.global_view(image) for _ in range(self.n_global)]
        return views + [self.local_view(image) for _ in range(self.n_local)]


class TextTransform:
    """Pick one caption of an item (random in training, the first in evaluation) and tidy it.

    Captions are NFC-normalised (a byte-level tokenizer otherwise sees two spellings of "é") and
    their whitespace collapsed.
    """

    def __init__(self, train: bool = False, seed: int | None = None) -> None:
        self.train = train
        self._streams = _WorkerStreams(seed)
        self._random = random.Random(self._streams.base_seed)

    def __call__(self, captions: str | Sequence[str]) -> str:
        options = [captions] if isinstance(captions, str) else list(captions)
        options = [" ".join(unicodedata.normalize("NFC", text).split()) for text in options]
        options = [text for text in options if text]
        if not options:
            raise ValueError(f"no non-empty caption among {captions!r}")
        if not self.train:
            return options[0]
        seed = self._streams.new_worker_seed()
        if seed is not None:
            self._random.seed(seed)
        return self._random.choice(options)


class _WorkerStreams:
    """Seeds that keep augmentation reproducible and distinct across data-loader workers.

    Forked workers inherit identical generator states, which would repeat the same crops in every
    worker. Each worker reseeds once from the transform's base seed and torch's per-worker seed
    (different per worker and per epoch, and following ``seed_everything``). Without an explicit
    seed the base seed is drawn from torch's generator, so it follows ``seed_everything`` too.
    """

    def __init__(self, seed: int | None) -> None:
        self.base_seed = int(torch.randint(0, 2**31 - 1, ())) if seed is None else int(seed)
        self._seeded_for: tuple[int, int] | None = None

    def new_worker_seed(self) -> int | None:
        """A fresh seed the first time this is called in a worker (per epoch), else ``None``."""
        info = get_worker_info()
        if info is None or self._seeded_for == (os.getpid(), info.seed):
            return None
        self._seeded_for = (os.getpid(), info.seed)
        return int(np.random.SeedSequence([self.base_seed, info.seed]).generate_state(1)[0])
