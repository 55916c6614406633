"""Does an image file fit the model? Band count and pixel type checked against what it trained on.

A model trained on 4-band 16-bit imagery, handed a 6-band 8-bit scene, would take bands by number
(the wrong ones on another sensor) and normalise 8-bit values with 16-bit statistics, so it would
see a near-uniform dark image and still answer. A checkpoint records the band count and pixel type
of its training files (``file_bands``, ``file_dtype`` in its preprocessing) next to the bands it
reads and their mean, and every file is checked against them before it reaches the model.

Users who know their data say so with an ``InputAdjustment``: ``bands`` (the file's bands, 1-based,
in the model's channel order) and ``rescale`` (``pixel * scale + offset`` puts the file's values on
the training data's scale; the pixel-type check is then theirs to answer for).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from domainvlm.core.errors import FileError


class InputMismatchError(FileError):
    """A file whose bands or pixel type do not fit what the model was trained on."""


@dataclass(frozen=True)
class InputAdjustment:
    """A user's override: which of the file's bands feed the model, and how values are rescaled."""

    bands: tuple[int, ...] | None = None
    """1-based file bands in the model's channel order (replaces the checkpoint's band list)."""
    rescale: tuple[float, float] | None = None
    """``(scale, offset)``: values become ``pixel * scale + offset`` (float32) before normalising."""

    def __post_init__(self) -> None:
        if self.bands is not None and (
            not self.bands or any(isinstance(b, bool) or int(b) != b or b < 1 for b in self.bands)
        ):
            raise ValueError(f"bands must be 1-based band numbers, got {self.bands!r}")
        if self.rescale is not None and (len(self.rescale) != 2 or self.rescale[0] == 0):
            raise ValueError(f"rescale must be (scale != 0, offset), got {self.rescale!r}")

    def describe(self) -> str:
        parts = [f"bands {list(self.bands)}"] if self.bands else []
        if self.rescale:
            parts.append(f"values x {self.rescale[0]:g} + {self.rescale[1]:g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class ModelInput:
    """What the model was trained on, read from a checkpoint's preprocessing."""

    channels: int
    """Input channels of the model (one per selected band)."""
    bands: tuple[int, ...] | None
    """1-based bands of the training files it reads, in channel order; None = all, in order."""
    file_bands: int | None
    """Band count of the training files (None: a checkpoint from before this was recorded)."""
    file_dtype: str | None
    """Pixel type of the training files (None: not recorded)."""
    mean: tuple[float, ...] = ()
    """Per-channel training mean in raw pixel units: tells a user what scale to rescale to."""

    @classmethod
    def from_preprocessing(cls, preprocessing: dict[str, Any]) -> ModelInput:
        mean = [float(m) for m in preprocessing.get("mean", ())]
        bands = preprocessing.get("bands")
        scale = float(preprocessing.get("max_pixel_value", 1.0))
        return cls(
            channels=len(bands) if bands else len(mean),
            bands=tuple(int(b) for b in bands) if bands else None,
            file_bands=preprocessing.get("file_bands"),
            file_dtype=preprocessing.get("file_dtype"),
            mean=tuple(m * scale for m in mean),
        )

    def describe(self) -> str:
        """E.g. ``trained on 4-band uint16 files, reading bands [3, 2, 1, 4] as its 4 channels``."""
        kind = " ".join(
            part
            for part in (
                f"{self.file_bands}-band" if self.file_bands else None,
                self.file_dtype,
                "files" if self.file_bands or self.file_dtype else None,
            )
            if part
        )
        reads = (
            f"reading bands {list(self.bands)} as its {self.channels} channels"
            if self.bands
            else f"reading all {self.channels} bands in order"
        )
        trained = f"trained on {kind}, " if kind else ""
        mean = ", ".join(f"{m:.4g}" for m in self.mean)
        return f"{trained}{reads} (training mean per channel: {mean})"


def fit_to_model(
    array: np.ndarray,
    path: str | Path,
    model: ModelInput,
    adjustment: InputAdjustment | None = None,
) -> np.ndarray:
    """The file's ``[H, W, bands]`` pixels as the model's ``[H, W, channels]`` input.

    Refuses a file whose band count or pixel type differs from the training files unless the
    adjustment takes responsibility for it: ``bands`` for the count, ``rescale`` for the type.
    """
    adjustment = adjustment or InputAdjustment()
    count, dtype = array.shape[-1], array.dtype
    hint = _hint(model, count, dtype)
    if adjustment.bands is not None:
        bands = adjustment.bands
        if len(bands) != model.channels:
            raise InputMismatchError(
                path, f"{len(bands)} bands chosen but the model takes {model.channels} channels"
            )
    else:
        bands = model.bands or tuple(range(1, count + 1))
        expected = model.file_bands or (None if model.bands else model.channels)
        if expected is not None and count != expected:
            raise InputMismatchError(
                path, f"{count} band(s), but the model was {model.describe()}. {hint}"
            )
    outside = [b for b in bands if b > count]
    if outside:
        raise InputMismatchError(
            path,
            f"band(s) {outside} asked for but the file has {count}; the model was "
            f"{model.describe()}. {hint}",
        )
    selected = array[..., [b - 1 for b in bands]]
    if adjustment.rescale is not None:
        scale, offset = adjustment.rescale
        return selected.astype(np.float32) * np.float32(scale) + np.float32(offset)
    if model.file_dtype is not None and not _same_scale(dtype, np.dtype(model.file_dtype)):
        raise InputMismatchError(
            path, f"{dtype} pixels, but the model was {model.describe()}. {hint}"
        )
    return selected


def _same_scale(actual: np.dtype, expected: np.dtype) -> bool:
    """Floats are compared by kind (float32 and float64 store the same reflectances); integers
    exactly, since 8-, 12/16-bit and signed data are on different scales."""
    if actual.kind == "f" and expected.kind == "f":
        return True
    return actual == expected


def _hint(model: ModelInput, count: int, dtype: np.dtype) -> str:
    example = ",".join(str(b) for b in range(1, min(model.channels, count) + 1))
    return (
        f"If you know how this {count}-band {dtype} file maps onto the training data, pass "
        f"--bands with {model.channels} of its bands in the model's channel order (e.g. "
        f"--bands {example}) and --rescale SCALE[,OFFSET] to bring its values onto the "
        "training scale (options of zeroshot, eval, kb build and serve; InputAdjustment in "
        "Python)."
    )


def parse_bands(text: str) -> tuple[int, ...]:
    """``"4,3,2"`` -> ``(4, 3, 2)`` (the ``--bands`` option)."""
    try:
        bands = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"--bands {text!r}: expected comma-separated band numbers") from exc
    if not bands or min(bands) < 1:
        raise ValueError(f"--bands {text!r}: band numbers start at 1")
    return bands


def parse_rescale(text: str) -> tuple[float, float]:
    """``"0.0001"`` -> ``(0.0001, 0.0)``; ``"2.75e-5,-0.2"`` -> ``(2.75e-05, -0.2)``."""
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError as exc:
        raise ValueError(f"--rescale {text!r}: expected SCALE or SCALE,OFFSET") from exc
    if len(values) not in (1, 2) or values[0] == 0:
        raise ValueError(f"--rescale {text!r}: expected SCALE (not 0) or SCALE,OFFSET")
    return values[0], values[1] if len(values) == 2 else 0.0
