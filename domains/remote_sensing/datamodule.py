"""Remote-sensing DataModules: caption sets (RS-M-CLIP), scene folders and RSVQA (semantic experts).

All share one raster pipeline: a configurable band list in model channel order, per-band
normalisation from the training images' statistics (computed once and cached in domainvlm's cache
directory, never in the dataset: ``domainvlm.core.cache``) unless
``mean``/``std`` are given, and overhead-imagery augmentation.
"""

from __future__ import annotations

from pathlib import Path

from domainvlm.core.cache import cache_file
from domainvlm.core.datamodule import BaseDataModule
from domainvlm.core.transforms import ImageTransform, MultiCrop
from domainvlm.domains.remote_sensing.captions import CaptionDataset
from domainvlm.domains.remote_sensing.rasters import band_statistics, raster_info
from domainvlm.domains.remote_sensing.rsvqa import RSVQADataset
from domainvlm.domains.remote_sensing.scenes import SceneFolderDataset
from torch.utils.data import Dataset


class RasterDataModule(BaseDataModule):
    domain = "remote_sensing"

    def __init__(
        self,
        root: str = "data/samples/remote_sensing",
        bands: list[int] | None = None,
        image_size: int = 64,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        max_pixel_value: float = 1.0,
        scale: tuple[float, float] = (0.5, 1.0),
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
        skip_bad_files: bool = False,
        **kwargs,
    ) -> None:
        """
        Args:
            root: dataset directory.
            bands: 1-based raster bands in model channel order (default: every band of the file).
            image_size: model input side.
            mean: per-band mean in units of ``pixel / max_pixel_value`` (default: dataset statistics).
            std: per-band std, same units (default: dataset statistics).
            max_pixel_value: divisor of raw pixels (255 for 8-bit; 1 with dataset statistics).
            scale: area range of training random resized crops.
            hflip: random horizontal flips in training.
            vflip: random vertical flips in training (overhead imagery has no "up").
            rot90: random 90° rotations in training. Turn flips and rotations off when captions
                or questions name positions ("in the upper left"), or they contradict the image.
            skip_bad_files: skip unreadable images with a counted warning instead of failing.
        """
        super().__init__(root=root, **kwargs)
        self.bands = bands
        self.image_size = image_size
        self.mean, self.std = mean, std
        self.max_pixel_value = max_pixel_value
        self.scale = tuple(scale)
        self.flips = {"hflip": hflip, "vflip": vflip, "rot90": rot90}
        self.skip_bad_files = skip_bad_files

    def train_image_paths(self) -> list[Path]:
        raise NotImplementedError

    def normalisation(self) -> tuple[list[float], list[float]]:
        if self.mean is None or self.std is None:
            self.check_root()
            stats = band_statistics(
                self.train_image_paths(),
                self.bands,
                # one file per DataModule kind: caption, scene and VQA splits cover other files
                cache_file("band_statistics", type(self).__name__, self.root),
            )
            self.mean = [float(v) / self.max_pixel_value for v in stats.mean]
            self.std = [float(v) / self.max_pixel_value for v in stats.std]
        return self.mean, self.std

    def preprocessing(self) -> dict:
        """Also the band count and pixel type of the training files (from the first one's
        header), so inference can refuse files of another sensor or bit depth."""
        mean, std = self.normalisation()
        paths = self.train_image_paths()
        info = raster_info(paths[0]) if paths else None
        return {
            "image_size": self.image_size,
            "mean": mean,
            "std": std,
            "bands": self.bands,
            "max_pixel_value": self.max_pixel_value,
            "file_bands": info.bands if info else None,
            "file_dtype": info.dtype if info else None,
        }

    def transform_settings(self) -> dict:
        mean, std = self.normalisation()
        return dict(
            mean=mean, std=std, max_pixel_value=self.max_pixel_value, seed=self.seed, **self.flips
        )

    def image_transform(self, split: str) -> ImageTransform:
        train = split == "train"
        return ImageTransform(
            self.image_size, train=train, scale=self.scale, **self.transform_settings()
        )


class RSCaptionDataModule(RasterDataModule):
    """Karpathy-style caption sets (RSICD, RSITMD, UCM/Sydney/NWPU-Captions, the offline sample)."""

    dataset_hint = "a Karpathy-style caption set (RSICD, RSITMD, UCM-Captions, ...)"

    def __init__(
        self,
        root: str = "data/samples/remote_sensing",
        annotation: str | None = None,
        image_dir: str = "images",
        languages: list[str] | None = None,
        multicrop: bool = True,
        n_global_crops: int = 2,
        n_local_crops: int = 4,
        local_size: int = 32,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        photometric: bool = False,
        val_fraction: float = 0.0,
        **kwargs,
    ) -> None:
        """
        Args:
            root: dataset directory holding the caption JSON and the image folder.
            annotation: caption JSON relative to root (default: the single ``dataset*.json``).
            image_dir: image folder relative to root.
            languages: caption languages to use (default: all present).
            multicrop: give training items global + local crops (for self-distillation).
            n_global_crops: global crops per image (the teacher's views).
            n_local_crops: local crops per image.
            local_size: local crop side in pixels.
            global_scale: area range of global crops.
            local_scale: area range of local crops.
            photometric: DINO's colour jitter, grayscale, blur and solarisation on the crops
                (``core.transforms.DINO_PHOTOMETRIC``). RGB only, with ``max_pixel_value`` the
                white level: on multispectral bands they are undefined or would distort the
                spectral signatures the model has to learn.
            val_fraction: for caption sets without a ``val`` split (RSITMD, train + restval):
                the fraction of training images held out for validation (by a hash of the file
                name, so the same on every run); 0 reads the file's own ``val`` split.
        """
        super().__init__(root=root, **kwargs)
        self.annotation = annotation
        self.image_dir = image_dir
        self.languages = languages
        self.multicrop = multicrop
        self.n_global_crops, self.n_local_crops = n_global_crops, n_local_crops
        self.local_size = local_size
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.photometric = photometric
        self.val_fraction = val_fraction

    def _captions(self, split: str, transform=None) -> CaptionDataset:
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
            val_fraction=self.val_fraction,
        )

    def train_image_paths(self) -> list[Path]:
        return self._captions("train").paths

    def preprocessing(self) -> dict:
        return {**super().preprocessing(), "n_global_crops": self.n_global_crops}

    def build_dataset(self, split: str) -> Dataset:
        if split != "train" or not self.multicrop:
            return self._captions(split, self.image_transform(split))
        transform = MultiCrop(
            self.image_size,
            self.local_size,
            n_global=self.n_global_crops,
            n_local=self.n_local_crops,
            global_scale=self.global_scale,
            local_scale=self.local_scale,
            photometric=self.photometric,
            **self.transform_settings(),
        )
        return self._captions(split, transform)


class RSSceneDataModule(RasterDataModule):
    """Scene classification from class folders (EuroSAT, RESISC45, AID, UCM, the sample)."""

    dataset_hint = "a class-folder scene set (EuroSAT, RESISC45, AID, UCM)"

    def __init__(
        self,
        root: str = "data/samples/remote_sensing",
        folder: str = "scene_classes",
        shots_per_class: int | None = None,
        **kwargs,
    ) -> None:
        """
        Args:
            root: dataset directory.
            folder: class-folder directory relative to root ("" for root itself).
            shots_per_class: keep only this many training images per class (few-shot).
        """
        super().__init__(root=root, **kwargs)
        self.folder = folder
        self.shots_per_class = shots_per_class

    def _scenes(self, split: str, transform=None) -> SceneFolderDataset:
        dataset = SceneFolderDataset(
            self.root / self.folder,
            split,
            bands=self.bands,
            transform=transform,
            skip_bad_files=self.skip_bad_files,
        )
        if split == "train" and self.shots_per_class is not None:
            taken: dict[int, int] = {}
            kept = []
            for path, label in dataset.samples:
                if taken.get(label, 0) < self.shots_per_class:
                    taken[label] = taken.get(label, 0) + 1
                    kept.append((path, label))
            dataset.samples = kept
        return dataset

    def classes(self) -> list[str]:
        return self._scenes("train").classes

    def train_image_paths(self) -> list[Path]:
        return [path for path, _ in self._scenes("train").samples]

    def build_dataset(self, split: str) -> Dataset:
        return self._scenes(split, self.image_transform(split))


class RSVQADataModule(RasterDataModule):
    """RSVQA-style visual question answering (presence, comparison, count, rural/urban)."""

    dataset_hint = "an RSVQA dataset (RSVQA-LR/HR JSON + images)"

    def __init__(self, root: str = "data/samples/remote_sensing", folder: str = "rsvqa", **kwargs):
        """
        Args:
            root: dataset directory.
            folder: RSVQA directory relative to root ("" for root itself).
        """
        super().__init__(root=root, **kwargs)
        self.folder = folder

    def _questions(self, split: str, transform=None) -> RSVQADataset:
        vocabulary = None if split == "train" else self.classes()
        return RSVQADataset(
            self.root / self.folder,
            split,
            transform=transform,
            bands=self.bands,
            answer_vocabulary=vocabulary,
            skip_bad_files=self.skip_bad_files,
        )

    def classes(self) -> list[str]:
        """The answer vocabulary of the training split."""
        return self._questions("train").answer_vocabulary

    def train_image_paths(self) -> list[Path]:
        return sorted(set(self._questions("train").paths))

    def build_dataset(self, split: str) -> Dataset:
        return self._questions(split, self.image_transform(split))
