"""RSVQA-LR/HR question sets: questions, answers and images in their three JSON files per split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

RSVQA_TYPES = {"comp": "comparison"}
"""RSVQA files say "comp"; everything downstream uses the full word."""


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
    raw = load_json(path, f"RSVQA {key} file")
    entries = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise AnnotationError(path, f"expected an object with a {key!r} list")
    try:
        return {int(e["id"]): e for e in entries if e.get("active", True)}
    except (KeyError, TypeError, ValueError) as error:
        raise AnnotationError(path, f"a {key} entry has no integer 'id': {error}") from error


class RSVQADataset(SkippingDataset):
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
        present = drop_missing(paths, skip_bad_files, questions_file, "image")
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
            "image": apply_transform(self.transform, sample.array),
            "question": question,
            "answer": answer,
            "answer_index": self._answer_index.get(answer, -1),
            "type": kind,
        }
