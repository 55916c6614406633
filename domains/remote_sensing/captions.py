"""Caption sets in the Karpathy-style JSON of RSICD, RSITMD, UCM-Captions, Sydney and NWPU, with
extra per-language caption files merged by image."""

from __future__ import annotations

import hashlib
import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from domainvlm.core.files import resolve_within
from domainvlm.domains.remote_sensing.data import (
    AnnotationError,
    SkippingDataset,
    Transform,
    apply_transform,
    drop_missing,
    load_json,
)
from domainvlm.domains.remote_sensing.rasters import read_raster

DEFAULT_LANG = "en"
KARPATHY_SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
"""COCO's Karpathy split adds "restval" images to training; RS caption sets use the other three."""
CAPTION_KEYS = ("captions", "caption", "texts", "sentence", "descriptions")
"""Keys other caption files use instead of ``sentences``, recognised to say so."""


@dataclass
class CaptionedImage:
    filename: str
    split: str
    captions: list[tuple[str, str]]
    """(text, language) pairs."""


def _parse_karpathy(path: Path, default_lang: str, need_split: bool) -> dict[str, CaptionedImage]:
    raw = load_json(path, "caption file")
    images = raw.get("images") if isinstance(raw, dict) else None
    if not isinstance(images, list):
        raise AnnotationError(
            path, "not Karpathy-style caption JSON: expected an object with an 'images' list"
        )
    parsed: dict[str, CaptionedImage] = {}
    for number, entry in enumerate(images):
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise AnnotationError(path, f"image #{number} has no 'filename' string")
        filename = (
            f"{entry['filepath']}/{entry['filename']}"
            if entry.get("filepath")
            else entry["filename"]
        )
        if need_split and not isinstance(entry.get("split"), str):
            raise AnnotationError(
                path,
                f"image #{number} ({filename}) has no 'split'; caption JSON must assign every "
                "image to train/val/test",
            )
        if "sentences" not in entry:
            other = sorted(key for key in entry if key in CAPTION_KEYS)
            named = f"'{other[0]}'" if other else "no 'sentences'"
            raise AnnotationError(
                path,
                f"image {filename} has {named} where Karpathy caption JSON has 'sentences' "
                '(a list of {"raw": "a caption"}); rename the key in the file',
            )
        captions = []
        for sentence in entry.get("sentences") or []:
            text = sentence.get("raw") if isinstance(sentence, dict) else None
            if not text and isinstance(sentence, dict) and sentence.get("tokens"):
                text = " ".join(sentence["tokens"])
            if not isinstance(text, str) or not text.strip():
                raise AnnotationError(path, f"image {filename}: a sentence has no 'raw' text")
            captions.append((text.strip(), sentence.get("lang") or default_lang))
        parsed[filename] = CaptionedImage(filename, entry.get("split", ""), captions)
    return parsed


def _split_images(
    images: list[CaptionedImage], split: str, wanted: Sequence[str], val_fraction: float, path: Path
) -> list[CaptionedImage]:
    if not 0 <= val_fraction < 1:
        raise AnnotationError(path, f"val_fraction must be in [0, 1), got {val_fraction}")
    if not val_fraction or split not in ("train", "val"):
        return [image for image in images if image.split in wanted]
    if any(image.split == "val" for image in images):
        raise AnnotationError(
            path,
            "val_fraction holds out part of train for a set without a 'val' split, but this "
            "caption file has one; drop val_fraction",
        )
    train = [image for image in images if image.split in KARPATHY_SPLITS["train"]]
    held_out = [_hash_fraction(image.filename) < val_fraction for image in train]
    return [image for image, out in zip(train, held_out) if out == (split == "val")]


def _hash_fraction(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 16**8


def _image_dir_hint(root: Path, image_dir: Path, paths: list[Path]) -> str:
    """Every image is missing: the image folder is wrong, so look for the one that holds them."""
    first = paths[0].relative_to(image_dir)
    found = sorted(
        candidate.relative_to(root).as_posix()
        for candidate in [root, *root.glob("*"), *root.glob("*/*")]
        if candidate.is_dir() and (candidate / first).is_file()
    )
    where = f"; {first} is in {found[0]!r}: pass --data.image_dir {found[0]}" if found else ""
    return (
        f"none of the {len(paths)} images is in the image folder {str(image_dir)!r} (first: "
        f"{first}); point --data.image_dir (data.image_dir in a config, relative to the root) "
        f"at the folder that holds them{where}"
    )


def find_caption_file(root: str | Path) -> Path:
    """The one ``dataset_*.json`` in ``root`` that is not a per-language extra of another."""
    root = Path(root)
    candidates = sorted(root.glob("dataset_*.json"))
    names = {path.stem for path in candidates}
    main = [p for p in candidates if not _extra_of(p.stem, names)]
    if len(main) != 1:
        found = ", ".join(p.name for p in main) or "none"
        raise AnnotationError(
            root / "dataset_*.json",
            f"expected exactly one Karpathy caption file, found {found}; name yours with "
            "--data.annotation FILE (data.annotation in a config), relative to the root",
        )
    return main[0]


def _extra_of(stem: str, stems: set[str]) -> bool:
    match = re.fullmatch(r"(.+)_([a-z]{2})", stem)
    return bool(match) and match.group(1) in stems


class CaptionDataset(SkippingDataset):
    """Karpathy-style caption sets (RSICD, RSITMD, UCM-/Sydney-/NWPU-Captions) in any languages.

    Sentences may carry ``lang`` (default English). Files beside the annotation named
    ``<stem>_<lang>.json`` (``dataset_rsicd_pt.json``) add captions to images of the same filename.
    Each ``__getitem__`` draws one caption uniformly; the draw depends only on (seed, epoch, index),
    so it is identical across worker counts, and ``set_epoch`` reaches persistent workers because
    the epoch lives in shared memory.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        annotation: str | Path | None = None,
        image_dir: str | Path = "images",
        languages: Sequence[str] | None = None,
        bands: Sequence[int] | None = None,
        transform: Transform | None = None,
        skip_bad_files: bool = False,
        seed: int = 0,
        val_fraction: float = 0.0,
    ) -> None:
        """``val_fraction``: for sets without a ``val`` split (RSITMD; train + restval), hold out
        this fraction of the training images as ``val``, chosen by a hash of each file name (the
        same images on every run and machine)."""
        super().__init__()
        self.root = Path(root)
        self.annotation = self.root / annotation if annotation else find_caption_file(self.root)
        self.image_dir = self.root / image_dir
        self.split = split
        self.bands = bands
        self.transform = transform
        self.skip_bad_files = skip_bad_files
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

        images = _parse_karpathy(self.annotation, DEFAULT_LANG, need_split=True)
        for extra, lang in self._extra_files():
            unmatched = 0
            for filename, translated in _parse_karpathy(extra, lang, need_split=False).items():
                if filename in images:
                    images[filename].captions.extend(translated.captions)
                else:
                    unmatched += 1
            if unmatched:
                warnings.warn(
                    f"{extra}: {unmatched} image(s) are not in {self.annotation.name}; ignored",
                    stacklevel=2,
                )
        wanted = KARPATHY_SPLITS.get(split, (split,))
        selected = _split_images(
            list(images.values()), split, wanted, val_fraction, self.annotation
        )
        if not selected:
            found = sorted({image.split for image in images.values()})
            hint = (
                "; for a set without one, hold out part of train with --data.val_fraction 0.1"
                if split == "val"
                else ""
            )
            raise AnnotationError(
                self.annotation, f"no images in split {split!r}; splits: {found}{hint}"
            )
        if languages is not None:
            keep = set(languages)
            for image in selected:
                image.captions = [c for c in image.captions if c[1] in keep]
        selected = [image for image in selected if image.captions]
        if not selected:
            which = f" in languages {sorted(languages)}" if languages is not None else ""
            raise AnnotationError(self.annotation, f"no {split!r} captions{which}")
        paths = [resolve_within(self.image_dir, image.filename) for image in selected]
        if not any(path.is_file() for path in paths):
            raise AnnotationError(
                self.annotation, _image_dir_hint(self.root, self.image_dir, paths)
            )
        present = drop_missing(paths, skip_bad_files, self.annotation, "image")
        self.images = [image for image, ok in zip(selected, present) if ok]
        self.paths = [path for path, ok in zip(paths, present) if ok]

    def _extra_files(self) -> list[tuple[Path, str]]:
        stem = self.annotation.stem
        extras = []
        for path in sorted(self.annotation.parent.glob(f"{stem}_*.json")):
            match = re.fullmatch(re.escape(stem) + r"_([a-z]{2})", path.stem)
            if match:
                extras.append((path, match.group(1)))
        return extras

    def __len__(self) -> int:
        return len(self.images)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    @property
    def languages(self) -> list[str]:
        return sorted({lang for image in self.images for _, lang in image.captions})

    def captions(self, index: int) -> list[tuple[str, str]]:
        """Every (text, language) of one image: the positives for retrieval evaluation."""
        return list(self.images[index].captions)

    def _read_item(self, index: int) -> dict[str, Any]:
        sample = read_raster(self.paths[index], self.bands)
        draw = random.Random(f"{self.seed}:{self.epoch}:{index}")
        text, lang = draw.choice(self.images[index].captions)
        return {
            "image": apply_transform(self.transform, sample.array),
            "text": text,
            "lang": lang,
            "index": index,
        }
