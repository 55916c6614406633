"""Medical DataModules: image-caption pairs for M3AE pretraining, VQA-RAD / SLAKE for fine-tuning.

Images go through ``dicom.image_reader`` (DICOM windowed to uint8, PNG/JPEG as is) and are kept
with three channels: grayscale is repeated, which keeps the colour figures of ROCO and SLAKE
and lets a CLIP-initialised ViT (the paper's image tower) read the input unchanged. Validation
uses the dataset's validation split when it has one and its test split otherwise (VQA-RAD and the
offline sample ship none), as M3AE does for VQA-RAD.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from domainvlm.core.datamodule import BaseDataModule
from domainvlm.core.errors import DataRootError
from domainvlm.core.transforms import ImageTransform
from domainvlm.domains.medical.dicom import image_reader
from domainvlm.domains.medical.text import (
    AnnotationError,
    VQAItem,
    answer_vocabulary,
    normalize_answer,
    read_roco_captions,
    read_vqa_splits,
)
from torch.utils.data import Dataset

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""M3AE's image tower starts from CLIP ViT-B/16, so inputs are normalised as CLIP's were."""

ROCO_SPLIT_DIRS = {"train": ("train",), "val": ("validation", "val"), "test": ("test",)}
ROCO_SUBFOLDERS = ("", "radiology")
"""The sample keeps ``<split>/captions.txt``; the ROCO release ``<split>/radiology/captions.txt``."""

Transform = Callable[[np.ndarray], Any]


class CachedImages:
    """Decoded uint8 images by path; VQA asks several questions per image, so decode once."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._images: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        if not self.enabled:
            return image_reader(path)
        if path not in self._images:
            self._images[path] = image_reader(path)
        return self._images[path]


class ImageTextDataset(Dataset):
    """``{"image", "text"}`` items from (image path, caption) pairs."""

    def __init__(
        self, pairs: list[tuple[Path, str]], transform: Transform, cache_images: bool = False
    ) -> None:
        self.pairs = pairs
        self.transform = transform
        self.read = CachedImages(cache_images)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, caption = self.pairs[index]
        return {"image": self.transform(self.read(path)), "text": caption}


class VQADataset(Dataset):
    """``{"image", "question", "answer_index", "answer_type"}``; index -1 = not in the vocabulary.

    An answer outside the training vocabulary cannot be predicted, so it counts as wrong rather
    than being dropped: accuracy stays comparable with published figures.
    """

    def __init__(
        self,
        items: list[VQAItem],
        vocabulary: list[str],
        transform: Transform,
        cache_images: bool = False,
    ) -> None:
        self.items = items
        self.vocabulary = vocabulary
        self.answer_index = {answer: index for index, answer in enumerate(vocabulary)}
        self.transform = transform
        self.read = CachedImages(cache_images)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        return {
            "image": self.transform(self.read(Path(item.image))),
            "question": item.question,
            "answer_index": self.answer_index.get(normalize_answer(item.answer), -1),
            "answer_type": item.answer_type,
        }


def roco_pairs(root: Path, split: str) -> list[tuple[Path, str]]:
    """(image, caption) pairs of one split of a ROCO-layout folder (the release or the sample)."""
    return [(path, caption) for _, path, caption in roco_cases(root, split)]


def roco_cases(root: Path, split: str) -> list[tuple[str, Path, str]]:
    """(ID, image, caption) of one split of a ROCO-layout folder.

    Images are found through ``dlinks.txt`` when it is present (the release names images
    ``<PMC id>_<figure file>``), else as ``<ID>.<any suffix>`` in the split's ``images/`` folder or
    in ``<root>/images/``.
    """
    captions_file = _captions_file(root, split)
    captions = read_roco_captions(captions_file)
    folder = captions_file.parent
    by_stem = _index_images([folder / "images", root / "images"])
    release_names = _dlinks_names(folder / "dlinks.txt")
    cases = []
    for image_id, caption in captions.items():
        path = folder / "images" / release_names[image_id] if image_id in release_names else None
        path = path if path is not None and path.is_file() else by_stem.get(image_id)
        if path is None:
            raise AnnotationError(
                captions_file,
                f"no image for ID {image_id!r} in {folder / 'images'} or {root / 'images'}",
            )
        cases.append((image_id, path, caption))
    return cases


def _captions_file(root: Path, split: str) -> Path:
    tried = []
    for split_dir in ROCO_SPLIT_DIRS[split]:
        for subfolder in ROCO_SUBFOLDERS:
            candidate = root / split_dir / subfolder / "captions.txt"
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
    if split == "val":
        return _captions_file(root, "test")
    raise DataRootError(f"no {split} captions in {root}: tried {', '.join(tried)}")


def _index_images(folders: list[Path]) -> dict[str, Path]:
    """File stem → path; the first folder wins."""
    found: dict[str, Path] = {}
    for folder in reversed(folders):
        if folder.is_dir():
            found.update({path.stem: path for path in folder.iterdir() if path.is_file()})
    return found


def _dlinks_names(path: Path) -> dict[str, str]:
    """ROCO ``dlinks.txt``: ``ID<TAB>wget ... <archive>.tar.gz<TAB>figure file`` per line."""
    if not path.is_file():
        return {}
    names = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        words = parts[1].split() if len(parts) >= 3 else []
        archive = next((word for word in words if word.endswith(".tar.gz")), None)
        if archive is None:
            raise AnnotationError(path, f"line {number}: expected 'ID<TAB>link<TAB>file name'")
        pmc_id = archive.rsplit("/", 1)[-1].removesuffix(".tar.gz")
        names[parts[0].strip()] = f"{pmc_id}_{parts[-1].strip()}"
    return names


class MedicalDataModule(BaseDataModule):
    """The image pipeline shared by pretraining and VQA."""

    domain = "medical"

    def __init__(
        self,
        root: str = "data/samples/medical",
        image_size: int = 64,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        scale: tuple[float, float] = (0.8, 1.0),
        hflip: bool = False,
        cache_images: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: dataset directory (the offline sample, ROCO, VQA-RAD or SLAKE).
            image_size: model input side.
            mean: per-channel mean of ``pixel / 255`` (default CLIP's).
            std: per-channel std (default CLIP's).
            scale: area range of training random resized crops.
            hflip: random horizontal flips in training. Off by default: reports and questions
                name the patient side, which a flip would contradict.
            cache_images: keep decoded images in memory (small datasets; repeated questions).
        """
        super().__init__(root=root, **kwargs)
        self.image_size = image_size
        self.mean = list(mean or CLIP_MEAN)
        self.std = list(std or CLIP_STD)
        self.scale = tuple(scale)
        self.hflip = hflip
        self.cache_images = cache_images

    def preprocessing(self) -> dict:
        return {
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
            "max_pixel_value": 255.0,
        }

    def image_transform(self, split: str) -> ImageTransform:
        return ImageTransform(
            self.image_size,
            self.mean,
            self.std,
            train=split == "train",
            scale=self.scale,
            ratio=(0.9, 1.1),
            hflip=self.hflip,
            seed=self.seed,
        )


class MedicalPretrainDataModule(MedicalDataModule):
    """Image-caption pairs in the ROCO layout (the release or the offline sample)."""

    dataset_hint = "ROCO (<split>/radiology/captions.txt + images/) or the medical sample"

    def build_dataset(self, split: str) -> Dataset:
        pairs = roco_pairs(self.root, split)
        return ImageTextDataset(pairs, self.image_transform(split), self.cache_images)


class MedicalVQADataModule(MedicalDataModule):
    """VQA-RAD or SLAKE (English) as classification over the training answers."""

    dataset_hint = "VQA-RAD (trainset.json, testset.json, images/) or SLAKE (train.json, imgs/)"

    def __init__(
        self,
        root: str = "data/samples/medical",
        format: Literal["vqa_rad", "slake"] = "vqa_rad",
        min_answer_count: int = 1,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            root: dataset directory.
            format: ``vqa_rad`` (also the offline sample) or ``slake``.
            min_answer_count: answers seen fewer times in training are left out of the vocabulary.
        """
        super().__init__(root=root, **kwargs)
        if format not in ("vqa_rad", "slake"):
            raise ValueError(f"format must be 'vqa_rad' or 'slake', got {format!r}")
        self.format = format
        self.min_answer_count = min_answer_count
        self._splits: dict[str, list[VQAItem]] | None = None

    def items(self, split: str) -> list[VQAItem]:
        if self._splits is None:
            self.check_root()
            self._splits = read_vqa_splits(self.root, self.format)
        return self._splits.get(split) or self._splits["test"]

    def classes(self) -> list[str]:
        """The answer vocabulary of the training split, most frequent first."""
        return answer_vocabulary(self.items("train"), self.min_answer_count)

    def build_dataset(self, split: str) -> Dataset:
        return VQADataset(
            self.items(split), self.classes(), self.image_transform(split), self.cache_images
        )

    def majority_baseline(self, split: str = "test") -> dict[str, float]:
        """Accuracy of always giving the most frequent training answer (overall, open, closed)."""
        majority = self.classes()[0]
        correct: Counter[str] = Counter()
        total: Counter[str] = Counter()
        for item in self.items(split):
            hit = normalize_answer(item.answer) == majority
            for key in ("overall", item.answer_type):
                correct[key] += hit
                total[key] += 1
        return {key: correct[key] / total[key] for key in total}
