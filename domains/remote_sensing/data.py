"""Remote-sensing datasets in the public on-disk formats: caption sets, scene folders, chips, RSVQA.

Datasets return dicts with the image as an HWC array in the file's dtype (or whatever ``transform``
makes of it) and text as plain strings: the DataModule owns augmentation and normalisation, the
model owns tokenisation. The same classes read the real datasets and ``sample.py``'s synthetic one.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from core.errors import DomainVLMError
from core.io import resolve_within
from domains.remote_sensing.io import (
    IMAGE_SUFFIXES,
    RasterReadError,
    RasterSample,
    chip_windows,
    raster_shape,
    read_raster,
)

Transform = Callable[[np.ndarray], Any]

DEFAULT_LANG = "en"
KARPATHY_SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
"""COCO's Karpathy split adds "restval" images to training; RS caption sets use the other three."""
RSVQA_TYPES = {"comp": "comparison"}
"""RSVQA files say "comp"; everything downstream uses the full word."""


class AnnotationError(DomainVLMError, ValueError):
    """An annotation or split file that is missing or does not follow its dataset's format."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BadFileWarning(UserWarning):
    """A file was skipped because ``skip_bad_files`` is on; the message carries the running count."""


# -- class names ---------------------------------------------------------------------------------

RUN_TOGETHER_NAMES = {
    "annualcrop": "annual crop",
    "bareland": "bare land",
    "baseballdiamond": "baseball diamond",
    "baseballfield": "baseball field",
    "denseresidential": "dense residential",
    "footballfield": "football field",
    "golfcourse": "golf course",
    "herbaceousvegetation": "herbaceous vegetation",
    "mediumresidential": "medium residential",
    "mobilehomepark": "mobile home park",
    "parkinglot": "parking lot",
    "permanentcrop": "permanent crop",
    "railwaystation": "railway station",
    "sealake": "sea lake",
    "sparseresidential": "sparse residential",
    "storagetanks": "storage tanks",
    "tenniscourt": "tennis court",
}
"""All-lowercase folder names (UCM, RSICD file prefixes) that no casing rule can split."""


def normalise_class_name(name: str) -> str:
    """Folder name -> the words a text prompt needs: ``RailwayStation``, ``railwaystation``,
    ``railway_station`` -> ``railway station``."""
    compact = re.sub(r"[^0-9a-z]", "", name.lower())
    if compact in RUN_TOGETHER_NAMES:
        return RUN_TOGETHER_NAMES[compact]
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(re.split(r"[\s_\-]+", spaced.strip())).lower()


# -- shared reading with optional skipping of bad files ------------------------------------------


class _SkippingDataset(Dataset):
    """Reads one item; with ``skip_bad_files`` an unreadable file is replaced by the next item.

    Real datasets ship a few corrupt files; one should not stop a long run, but each skip is
    counted and warned about so it cannot go unnoticed.
    """

    skip_bad_files: bool = False

    def __init__(self) -> None:
        self.bad_files: set[str] = set()

    def _read_item(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        for offset in range(len(self)):
            try:
                return self._read_item((index + offset) % len(self))
            except RasterReadError as error:
                if not self.skip_bad_files:
                    raise
                self.bad_files.add(str(error.path))
                warnings.warn(
                    f"skipped unreadable file {error} ({len(self.bad_files)} bad file(s) "
                    "skipped so far in this process)",
                    BadFileWarning,
                    stacklevel=2,
                )
                last_error = error
        raise RasterReadError(last_error.path, "this and every other file are unreadable")


def _drop_missing(
    paths: Sequence[Path], skip_bad_files: bool, source: Path, what: str
) -> list[bool]:
    """Which of ``paths`` exist; missing ones are an error unless skipping (one counted warning)."""
    present = [path.is_file() for path in paths]
    missing = [path for path, ok in zip(paths, present) if not ok]
    if missing and not skip_bad_files:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise AnnotationError(source, f"{what} {missing[0]} does not exist{more}")
    if missing:
        warnings.warn(
            f"{source}: skipped {len(missing)} of {len(paths)} {what}s that do not exist "
            f"(first: {missing[0]})",
            BadFileWarning,
            stacklevel=3,
        )
    return present


def _apply(transform: Transform | None, array: np.ndarray) -> Any:
    return array if transform is None else transform(array)


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise AnnotationError(path, f"{what} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(path, f"{what} is not valid JSON: {error}") from error


# -- caption sets (Karpathy JSON) ----------------------------------------------------------------


@dataclass
class CaptionedImage:
    filename: str
    split: str
    captions: list[tuple[str, str]]
    """(text, language) pairs."""


def _parse_karpathy(path: Path, default_lang: str, need_split: bool) -> dict[str, CaptionedImage]:
    raw = _load_json(path, "caption file")
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
            f"expected exactly one Karpathy caption file, found {found}; pass annotation=",
        )
    return main[0]


def _extra_of(stem: str, stems: set[str]) -> bool:
    match = re.fullmatch(r"(.+)_([a-z]{2})", stem)
    return bool(match) and match.group(1) in stems


class CaptionDataset(_SkippingDataset):
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
    ) -> None:
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
        selected = [image for image in images.values() if image.split in wanted]
        if not selected:
            found = sorted({image.split for image in images.values()})
            raise AnnotationError(self.annotation, f"no images in split {split!r}; splits: {found}")
        if languages is not None:
            keep = set(languages)
            for image in selected:
                image.captions = [c for c in image.captions if c[1] in keep]
        selected = [image for image in selected if image.captions]
        if not selected:
            which = f" in languages {sorted(languages)}" if languages is not None else ""
            raise AnnotationError(self.annotation, f"no {split!r} captions{which}")
        paths = [resolve_within(self.image_dir, image.filename) for image in selected]
        present = _drop_missing(paths, skip_bad_files, self.annotation, "image")
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
            "image": _apply(self.transform, sample.array),
            "text": text,
            "lang": lang,
            "index": index,
        }


# -- scene classification folders ----------------------------------------------------------------


def _hash_split(relative: str, fractions: Sequence[float]) -> str:
    """A split that depends on the file's path only: stable when files are added or removed."""
    position = int.from_bytes(hashlib.sha1(relative.encode()).digest()[:8], "big") / 2**64
    train, val = fractions[0], fractions[0] + fractions[1]
    return "train" if position < train else "val" if position < val else "test"


class SceneFolderDataset(_SkippingDataset):
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
        return {"image": _apply(self.transform, sample.array), "label": label, "path": str(path)}


# -- large scenes cut into chips ------------------------------------------------------------------


class SceneChipDataset(_SkippingDataset):
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
            "image": _apply(self.transform, sample.array),
            "valid_fraction": sample.valid_fraction,
            "crs": sample.crs,
            "transform": sample.transform,
            "bounds": sample.bounds,
            "path": str(path),
        }


# -- RSVQA ----------------------------------------------------------------------------------------


def _rsvqa_file(root: Path, split: str, kind: str) -> Path:
    """``LR_split_<split>_<kind>.json`` (RSVQA-LR/HR as distributed) or ``<split>_<kind>.json``."""
    for candidate in (
        root / f"{split}_{kind}.json",
        *sorted(root.glob(f"*_split_{split}_{kind}.json")),
    ):
        if candidate.is_file():
            return candidate
    raise AnnotationError(
        root / f"LR_split_{split}_{kind}.json",
        f"RSVQA {kind} file for split {split!r} does not exist (also looked for {split}_{kind}.json)",
    )


def _rsvqa_entries(path: Path, key: str) -> dict[int, dict]:
    raw = _load_json(path, f"RSVQA {key} file")
    entries = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise AnnotationError(path, f"expected an object with a {key!r} list")
    try:
        return {int(e["id"]): e for e in entries if e.get("active", True)}
    except (KeyError, TypeError, ValueError) as error:
        raise AnnotationError(path, f"a {key} entry has no integer 'id': {error}") from error


class RSVQADataset(_SkippingDataset):
    """RSVQA (Lobry et al. 2020): questions, answers and images JSON plus ``Images_LR/<id>.tif``.

    Question types: presence, comparison, count, rural_urban. Inactive entries are skipped, as
    the authors' loaders do. Pass the training set's ``answer_vocabulary`` to evaluation splits so
    ``answer_index`` means the same class everywhere (-1 for an answer outside it).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        bands: Sequence[int] | None = None,
        image_dir: str | Path = "Images_LR",
        answer_vocabulary: Sequence[str] | None = None,
        skip_bad_files: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.bands = bands
        self.transform = transform
        self.skip_bad_files = skip_bad_files
        questions_file = _rsvqa_file(self.root, split, "questions")
        answers = _rsvqa_entries(_rsvqa_file(self.root, split, "answers"), "answers")
        active_images = _rsvqa_entries(_rsvqa_file(self.root, split, "images"), "images")
        rows = []
        for question in _rsvqa_entries(questions_file, "questions").values():
            try:
                if int(question["img_id"]) not in active_images:
                    continue
                answer = answers[int(question["answers_ids"][0])]["answer"]
                kind = RSVQA_TYPES.get(question["type"], question["type"])
                rows.append((int(question["img_id"]), question["question"], str(answer), kind))
            except (KeyError, IndexError, TypeError, ValueError) as error:
                raise AnnotationError(
                    questions_file, f"question {question.get('id')}: bad or dangling field {error}"
                ) from error
        paths = [resolve_within(self.root / image_dir, f"{img_id}.tif") for img_id, *_ in rows]
        present = _drop_missing(paths, skip_bad_files, questions_file, "image")
        self.questions = [row for row, ok in zip(rows, present) if ok]
        self.paths = [path for path, ok in zip(paths, present) if ok]
        if not self.questions:
            raise AnnotationError(questions_file, f"no active questions in split {split!r}")
        self.answer_vocabulary = (
            list(answer_vocabulary)
            if answer_vocabulary is not None
            else sorted({answer for _, _, answer, _ in self.questions})
        )
        self._answer_index = {answer: i for i, answer in enumerate(self.answer_vocabulary)}

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def types(self) -> list[str]:
        return sorted({kind for *_, kind in self.questions})

    def _read_item(self, index: int) -> dict[str, Any]:
        _, question, answer, kind = self.questions[index]
        sample = read_raster(self.paths[index], self.bands)
        return {
            "image": _apply(self.transform, sample.array),
            "question": question,
            "answer": answer,
            "answer_index": self._answer_index.get(answer, -1),
            "type": kind,
        }
