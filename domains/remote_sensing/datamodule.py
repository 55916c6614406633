"""Remote-sensing DataModules: caption sets for RS-M-CLIP, with multi-crop views for distillation."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from core.datamodule import BaseDataModule
from core.transforms import ImageTransform, MultiCrop
from domains.remote_sensing.data import CaptionDataset
from domains.remote_sensing.io import band_statistics

STATS_FILE = ".domainvlm_band_stats.json"


class RSCaptionDataModule(BaseDataModule):
    """Karpathy-style caption sets (RSICD, RSITMD, UCM/Sydney/NWPU-Captions, the offline sample).

    Per-band normalisation comes from the training images' statistics (computed once, cached in
    ``root``) unless ``mean``/``std`` are given, e.g. a pretrained model's RGB statistics.
    """

    domain = "remote_sensing"
    dataset_hint = "a Karpathy-style caption set (RSICD, RSITMD, UCM-Captions, ...)"

    def __init__(
        self,
        root: str = "data/samples/remote_sensing",
        annotation: str | None = None,
        image_dir: str = "images",
        languages: list[str] | None = None,
        bands: list[int] | None = None,
        image_size: int = 64,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        max_pixel_value: float = 1.0,
        multicrop: bool = True,
        n_global_crops: int = 2,
        n_local_crops: int = 4,
        local_size: int = 32,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
        skip_bad_files: bool = False,
        **kwargs,
    ) -> None:
        """
        Args:
            root: dataset directory holding the caption JSON and the image folder.
            annotation: caption JSON relative to root (default: the single ``dataset*.json``).
            image_dir: image folder relative to root.
            languages: caption languages to use (default: all present).
            bands: 1-based raster bands in model channel order (default: all bands of the file).
            image_size: model input side (global crops and evaluation).
            mean: per-band mean in units of ``pixel / max_pixel_value`` (default: dataset statistics).
            std: per-band std, same units (default: dataset statistics).
            max_pixel_value: divisor of raw pixels (255 for 8-bit; 1 with dataset statistics).
            multicrop: give training items global + local crops (for self-distillation).
            n_global_crops: global crops per image.
            n_local_crops: local crops per image.
            local_size: local crop side in pixels.
            global_scale: area range of global crops.
            local_scale: area range of local crops.
            hflip: random horizontal flips in training.
            vflip: random vertical flips in training (overhead imagery has no "up").
            rot90: random 90° rotations in training. Turn flips and rotations off when captions
                name positions ("in the upper left"), or they contradict the image.
            skip_bad_files: skip unreadable images with a counted warning instead of failing.
        """
        super().__init__(root=root, **kwargs)
        self.annotation = annotation
        self.image_dir = image_dir
        self.languages = languages
        self.bands = bands
        self.image_size = image_size
        self.mean, self.std = mean, std
        self.max_pixel_value = max_pixel_value
        self.multicrop = multicrop
        self.n_global_crops, self.n_local_crops = n_global_crops, n_local_crops
        self.local_size = local_size
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.flips = {"hflip": hflip, "vflip": vflip, "rot90": rot90}
        self.skip_bad_files = skip_bad_files

    def _dataset(self, split: str, transform=None) -> CaptionDataset:
        return CaptionDataset(
            self.root,
            split,
            annotation=self.annotation,
            image_dir=self.image_dir,
            languages=self.languages,
            bands=self.bands,
            transform=transform,
            skip_bad_files=self.skip_bad_files,
            seed=self.seed,
        )

    def normalisation(self) -> tuple[list[float], list[float]]:
        if self.mean is None or self.std is None:
            self.check_root()
            paths = self._dataset("train").paths
            stats = band_statistics(paths, self.bands, Path(self.root) / STATS_FILE)
            self.mean = [float(v) / self.max_pixel_value for v in stats.mean]
            self.std = [float(v) / self.max_pixel_value for v in stats.std]
        return self.mean, self.std

    def preprocessing(self) -> dict:
        mean, std = self.normalisation()
        return {
            "image_size": self.image_size,
            "mean": mean,
            "std": std,
            "bands": self.bands,
            "max_pixel_value": self.max_pixel_value,
            "n_global_crops": self.n_global_crops,
        }

    def build_dataset(self, split: str) -> Dataset:
        mean, std = self.normalisation()
        common = dict(
            mean=mean, std=std, max_pixel_value=self.max_pixel_value, seed=self.seed, **self.flips
        )
        if split == "train" and self.multicrop:
            transform = MultiCrop(
                self.image_size,
                self.local_size,
                n_global=self.n_global_crops,
                n_local=self.n_local_crops,
                global_scale=self.global_scale,
                local_scale=self.local_scale,
                **common,
            )
        else:
            transform = ImageTransform(self.image_size, train=split == "train", **common)
        return self._dataset(split, transform)
