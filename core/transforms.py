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

PHOTOMETRIC_STEPS = ("jitter", "grayscale", "blur", "solarize")

DINO_PHOTOMETRIC: dict[str, dict[str, float]] = {
    "global_1": {"jitter": 0.8, "grayscale": 0.2, "blur": 1.0, "solarize": 0.0},
    "global_2": {"jitter": 0.8, "grayscale": 0.2, "blur": 0.1, "solarize": 0.2},
    "local": {"jitter": 0.8, "grayscale": 0.2, "blur": 0.5, "solarize": 0.0},
}
"""DINO's per-view probabilities: colour jitter (brightness 0.4, contrast 0.4, saturation 0.2,
hue 0.1), grayscale, Gaussian blur (sigma 0.1-2 px), solarisation (above half the white level).
The two global views differ on purpose (one always blurred, the other sometimes solarised)."""


class ImageTransform:
    """HWC array → normalised ``[C, size, size]`` float32 tensor.

    Train: random resized crop (``scale`` of the area, ``ratio`` aspect) and optional flips and
    90° rotations, then optional photometric steps (RGB only). Eval: resize the short side to
    ``size`` and centre-crop (no randomness). Normalisation per band:
    ``(pixel / max_pixel_value - mean) / std``.
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
        photometric: dict[str, float] | None = None,
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
            photometric: training-only colour steps and their probabilities, keys among
                ``jitter``, ``grayscale``, ``blur``, ``solarize`` (``DINO_PHOTOMETRIC`` holds
                DINO's). Defined for RGB only (3 bands, pixels in ``[0, max_pixel_value]``):
                hue, saturation and grayscale mean nothing for other band sets, and jitter would
                move the per-band responses that tell materials apart in multispectral data.
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
        if photometric is not None:
            photometric = _check_photometric(photometric, len(mean), train)
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
            "photometric": photometric,
        }
        self.bands = len(mean)
        # Photometric steps work on [0, 1] pixels; otherwise folding max_pixel_value into mean and
        # std makes normalisation one multiply-add.
        pixel_unit = 1.0 if photometric else max_pixel_value
        self._offset = np.asarray(mean, np.float32) * np.float32(pixel_unit)
        self._inv_scale = 1.0 / (np.asarray(std, np.float32) * np.float32(pixel_unit))
        self._streams = _WorkerStreams(seed)
        steps = self._geometry() + _photometric_steps(photometric or {})
        self._pipeline = A.Compose(steps, seed=self._streams.base_seed)

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain values (for checkpoints): ``ImageTransform(**config)``."""
        return dict(self.settings)

    def __call__(self, image: np.ndarray) -> Tensor:
        image = self._check(image, "image")
        if self.settings["photometric"]:
            image = self._unit_range(image)
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

    def _unit_range(self, image: np.ndarray) -> np.ndarray:
        white = self.settings["max_pixel_value"]
        if image.size and (image.min() < 0 or image.max() > white):
            raise ValueError(
                f"photometric augmentation needs pixels in [0, max_pixel_value={white:g}], got "
                f"[{image.min():g}, {image.max():g}]: set max_pixel_value to the data's white "
                "level (255 for 8-bit RGB)"
            )
        return image / np.float32(white)

    def _normalise(self, array: np.ndarray) -> np.ndarray:
        return ((array - self._offset) * self._inv_scale).astype(np.float32, copy=False)

    def _reseed_in_worker(self) -> None:
        seed = self._streams.new_worker_seed()
        if seed is not None:
            self._pipeline.set_random_seed(seed)


def _check_photometric(photometric: dict[str, float], bands: int, train: bool) -> dict:
    unknown = sorted(set(photometric) - set(PHOTOMETRIC_STEPS))
    if unknown:
        raise ValueError(f"unknown photometric steps {unknown}; known: {list(PHOTOMETRIC_STEPS)}")
    if any(not 0.0 <= p <= 1.0 for p in photometric.values()):
        raise ValueError(f"photometric probabilities must be in [0, 1], got {photometric}")
    if not train:
        raise ValueError("photometric augmentation is for training transforms only")
    if bands != 3:
        raise ValueError(
            f"photometric augmentation (colour jitter, grayscale, solarisation) is defined for "
            f"RGB imagery, 3 bands; this transform has {bands}: leave it off for multispectral data"
        )
    return {name: float(p) for name, p in photometric.items()}


def _photometric_steps(probabilities: dict[str, float]) -> list[A.BasicTransform]:
    """DINO's colour steps, in its order, on float pixels in [0, 1]."""
    make = {
        "jitter": lambda p: A.ColorJitter(
            brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=p
        ),
        "grayscale": lambda p: A.ToGray(num_output_channels=3, p=p),
        "blur": lambda p: A.GaussianBlur(sigma_limit=(0.1, 2.0), p=p),
        "solarize": lambda p: A.Solarize(threshold_range=(0.5, 0.5), p=p),
    }
    return [
        make[name](probabilities[name]) for name in PHOTOMETRIC_STEPS if probabilities.get(name)
    ]


class VideoClipTransform(ImageTransform):
    """``[T, H, W, C]`` frames → ``[T, C, size, size]``, one set of random parameters per clip.

    Every frame gets the same crop, flip and rotation, so motion between frames is preserved.
    """

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> Tensor:
        frames = [self._check(frame, f"frame {index}") for index, frame in enumerate(frames)]
        if self.settings["photometric"]:
            frames = [self._unit_range(frame) for frame in frames]
        if not frames:
            raise ValueError("a clip needs at least one frame")
        shapes = {frame.shape for frame in frames}
        if len(shapes) != 1:
            raise ValueError(f"all frames of a clip must share one shape, got {sorted(shapes)}")
        self._reseed_in_worker()
        out = self._pipeline(images=np.stack(frames))["images"]
        return torch.from_numpy(self._normalise(out).transpose(0, 3, 1, 2).copy())


class MultiCrop:
    """DINO-style views of one image: ``n_global`` large crops first, then ``n_local`` small ones.

    With ``photometric`` the views also get DINO's colour steps (``DINO_PHOTOMETRIC``): global
    views alternate DINO's first and second recipe, local views get the local one. Without it the
    views differ by geometry only, which makes matching them easier. RGB only (see
    ``ImageTransform``).
    """

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
        photometric: bool = False,
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
        recipes = DINO_PHOTOMETRIC if photometric else dict.fromkeys(DINO_PHOTOMETRIC)

        def view(size: int, scale: tuple[float, float], offset: int, recipe: str) -> ImageTransform:
            view_seed = None if seed is None else seed + offset
            return ImageTransform(
                size, scale=scale, seed=view_seed, photometric=recipes[recipe], **shared
            )

        self.global_view = view(global_size, global_scale, 0, "global_1")
        self.local_view = view(local_size, local_scale, 1, "local")
        self.global_views = [self.global_view]
        if photometric and n_global > 1:
            self.global_views.append(view(global_size, global_scale, 2, "global_2"))
        self.n_global, self.n_local = n_global, n_local

    def __call__(self, image: np.ndarray) -> list[Tensor]:
        views = [self.global_views[i % len(self.global_views)](image) for i in range(self.n_global)]
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
