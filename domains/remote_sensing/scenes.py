"""Scene classification from class folders (EuroSAT, RESISC45, AID, UCM) and large scenes cut into
chips by windowed reads."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domainvlm.domains.remote_sensing.data import (
    AnnotationError,
    BadFileWarning,
    SkippingDataset,
    Transform,
    apply_transform,
    normalise_class_name,
)
from domainvlm.domains.remote_sensing.rasters import (
    IMAGE_SUFFIXES,
    RasterReadError,
    RasterSample,
    chip_windows,
    raster_shape,
    read_raster,
)
from rasterio.windows import Window


def _hash_split(relative: str, fractions: Sequence[float]) -> str:
    """A split that depends on the file's path only: stable when files are added or removed."""
    position = int.from_bytes(hashlib.sha1(relative.encode()).digest()[:8], "big") / 2**64
    train, val = fractions[0], fractions[0] + fractions[1]
    return "train" if position < train else "val" if position < val else "test"


class SceneFolderDataset(SkippingDataset):
    """Scene classification sets stored as ``root/<ClassName>/<image>`` (EuroSAT, RESISC45, AID, UCM).

    The held-out split comes from ``split_file`` or ``root/<split>.txt`` when present (one image per
    line, as a path relative to ``root`` or a bare file name, like torchgeo's EuroSAT lists);
    otherwise from a hash of each relative path. ``split="all"`` takes every image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        split_file: str | Path | None = None,
        bands: Sequence[int] | None = None,
        transform: Transform | None = None,
        skip_bad_files: bool = False,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.bands = bands
        self.transform = transform
        self.skip_bad_files = skip_bad_files
        if not self.root.is_dir():
            raise AnnotationError(self.root, "scene folder root does not exist")
        folders = sorted(
            d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        files = {
            folder.name: sorted(
                f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            for folder in folders
        }
        self.folder_names = [name for name in files if files[name]]
        if not self.folder_names:
            raise AnnotationError(self.root, "no class folders containing images")
        self.classes = [normalise_class_name(name) for name in self.folder_names]
        everything = [
            (path, label) for label, name in enumerate(self.folder_names) for path in files[name]
        ]
        listing = Path(split_file) if split_file else self.root / f"{split}.txt"
        if split == "all":
            self.samples = everything
        elif split_file or listing.is_file():
            self.samples = self._from_split_file(listing, everything)
        else:
            if len(split_fractions) != 3 or abs(sum(split_fractions) - 1) > 1e-6:
                raise ValueError(
                    f"split_fractions must be 3 numbers summing to 1: {split_fractions}"
                )
            self.samples = [
                (path, label)
                for path, label in everything
                if _hash_split(path.relative_to(self.root).as_posix(), split_fractions) == split
            ]
        if not self.samples:
            raise AnnotationError(self.root, f"no images in split {split!r}")

    def _from_split_file(
        self, listing: Path, everything: list[tuple[Path, int]]
    ) -> list[tuple[Path, int]]:
        if not listing.is_file():
            raise AnnotationError(listing, "split file does not exist")
        by_relative = {p.relative_to(self.root).as_posix(): (p, lbl) for p, lbl in everything}
        by_name = {p.name: (p, lbl) for p, lbl in everything}
        by_stem = {p.stem: (p, lbl) for p, lbl in everything}
        lines = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()]
        samples, missing = [], []
        for line in filter(None, lines):
            item = by_relative.get(line) or by_name.get(line) or by_stem.get(Path(line).stem)
            if item is None:
                missing.append(line)
            else:
                samples.append(item)
        if missing and not self.skip_bad_files:
            raise AnnotationError(
                listing, f"lists {len(missing)} image(s) not found under {self.root}: {missing[:3]}"
            )
        if missing:
            warnings.warn(
                f"{listing}: skipped {len(missing)} listed image(s) not found under {self.root}",
                BadFileWarning,
                stacklevel=3,
            )
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def _read_item(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        sample = read_raster(path, self.bands)
        return {
            "image": apply_transform(self.transform, sample.array),
            "label": label,
            "path": str(path),
        }


class SceneChipDataset(SkippingDataset):
    """Fixed-size chips of large scenes, read window by window (no scene is ever fully loaded).

    Each item keeps its CRS, affine transform and bounds so predictions can be mapped back.
    A chip with no valid pixel raises, or with ``drop_nodata_chips`` is dropped when the dataset is
    built (one scan of every chip, done once).
    """

    def __init__(
        self,
        scene_paths: Sequence[str | Path],
        size: int = 64,
        overlap: int = 0,
        bands: Sequence[int] | None = None,
        transform: Transform | None = None,
        drop_nodata_chips: bool = False,
        skip_bad_files: bool = False,
    ) -> None:
        super().__init__()
        self.bands = bands
        self.transform = transform
        self.skip_bad_files = skip_bad_files
        self.chips: list[tuple[Path, Window]] = []
        if not scene_paths:
            raise ValueError("SceneChipDataset needs at least one scene")
        for path in map(Path, scene_paths):
            try:
                width, height, _ = raster_shape(path)
            except RasterReadError as error:
                if not skip_bad_files:
                    raise
                self.bad_files.add(str(path))
                warnings.warn(
                    f"skipped unreadable scene {error} ({len(self.bad_files)} of "
                    f"{len(scene_paths)} scenes skipped)",
                    BadFileWarning,
                    stacklevel=2,
                )
                continue
            windows = chip_windows(width, height, size, overlap)
            if drop_nodata_chips:
                windows = [w for w in windows if read_raster(path, bands, w).valid_mask.any()]
            self.chips.extend((path, window) for window in windows)
        if not self.chips:
            raise RasterReadError(Path(scene_paths[0]), "no readable chip with valid pixels")

    def __len__(self) -> int:
        return len(self.chips)

    def _read_item(self, index: int) -> dict[str, Any]:
        path, window = self.chips[index]
        sample: RasterSample = read_raster(path, self.bands, window)
        if not sample.valid_mask.any():
            raise RasterReadError(
                path,
                f"chip at column {window.col_off}, row {window.row_off} ({window.width}x"
                f"{window.height} px) is entirely nodata; use drop_nodata_chips=True to skip it",
            )
        return {
            "image": apply_transform(self.transform, sample.array),
            "valid_fraction": sample.valid_fraction,
            "crs": sample.crs,
            "transform": sample.transform,
            "bounds": sample.bounds,
            "path": str(path),
        }
