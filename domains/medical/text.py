"""Readers for the public medical image-text formats: ROCO, MedICaT, radiology reports, VQA-RAD and
SLAKE. Each returns plain Python records so that datasets, vocabularies and knowledge bases share
one parsing of the files, and every malformed row is reported with its file and line or row.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from domainvlm.core.errors import AnnotationError, DataRootError
from domainvlm.core.files import resolve_within

AnswerType = Literal["open", "closed"]

REPORT_SECTIONS = (
    "findings",
    "impression",
    "indication",
    "history",
    "clinical history",
    "comparison",
    "technique",
    "examination",
    "exam",
    "reason for exam",
    "reason for examination",
    "clinical information",
    "clinical indication",
    "procedure",
    "recommendation",
    "recommendations",
    "conclusion",
    "conclusions",
    "wet read",
    "notification",
    "addendum",
)
"""Headings that start a section, in any case. Others (``LUNGS:`` inside findings) stay text."""

_SECTION_ALIASES = {
    "finding": "findings",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
}
_HEADING = re.compile(r"^[ \t]*([A-Za-z][A-Za-z /&]{0,40}?)[ \t]*:", re.MULTILINE)
_ID_LIKE = re.compile(r"^[A-Za-z]+_\d+\s")
_TRAILING_PUNCTUATION = ".,;:!?"


@dataclass(frozen=True)
class VQAItem:
    """One question about one image, in the shape shared by VQA-RAD and SLAKE."""

    image: str
    question: str
    answer: str
    answer_type: AnswerType
    qid: str = ""
    question_type: str = ""
    organ: str = ""
    """The imaged region as the file names it (VQA-RAD ``image_organ``, SLAKE ``location``)."""


@dataclass(frozen=True)
class VQAFormat:
    """Where one VQA release keeps what a ``VQAItem`` holds: its files, folders and JSON keys."""

    split_files: dict[str, str]
    """Annotation file per split; a missing ``val`` file is allowed (VQA-RAD ships train and test)."""
    image_dir: str
    image_key: str
    question_type_key: str
    organ_key: str
    language_key: str | None = None
    """Rows whose value under this key is not ``en`` are skipped (SLAKE mixes English and Chinese)."""


VQA_FORMATS: dict[str, VQAFormat] = {
    # The MEVF/M3AE release of VQA-RAD.
    "vqa_rad": VQAFormat(
        split_files={"train": "trainset.json", "val": "valset.json", "test": "testset.json"},
        image_dir="images",
        image_key="image_name",
        question_type_key="question_type",
        organ_key="image_organ",
    ),
    "slake": VQAFormat(
        split_files={"train": "train.json", "val": "validate.json", "test": "test.json"},
        image_dir="imgs",
        image_key="img_name",
        question_type_key="content_type",
        organ_key="location",
        language_key="q_lang",
    ),
}


@dataclass(frozen=True)
class MedicatFigure:
    """One MedICaT figure: ``image`` is the file name under ``release/figures/``."""

    image: str
    caption: str
    references: tuple[str, ...]
    radiology: bool


def read_roco_captions(path: str | Path) -> dict[str, str]:
    """ROCO ``captions.txt``: ``ID<TAB>caption`` per line.

    A line without a tab continues the previous caption (some captions contain line breaks),
    unless it starts like an ID, which means its tab is missing.
    """
    path = Path(path)
    captions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    last_id: str | None = None
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            if last_id is None or _ID_LIKE.match(line):
                raise AnnotationError(path, f"line {number}: expected 'ID<TAB>caption'")
            captions[last_id] = f"{captions[last_id]} {_squash(line)}".strip()
            continue
        image_id, caption = (part.strip() for part in line.split("\t", 1))
        if not image_id or " " in image_id:
            raise AnnotationError(path, f"line {number}: invalid image ID {image_id!r}")
        if image_id in captions:
            raise AnnotationError(
                path,
                f"line {number}: duplicate ID {image_id!r} (first on line {first_line[image_id]})",
            )
        captions[image_id], first_line[image_id], last_id = _squash(caption), number, image_id
    for image_id, caption in captions.items():
        if not caption:
            raise AnnotationError(
                path, f"line {first_line[image_id]}: empty caption for {image_id!r}"
            )
    return captions


def read_medicat_jsonl(path: str | Path, radiology_only: bool = False) -> list[MedicatFigure]:
    """MedICaT ``s2_full_figures_oa_nonroco_combined_medical_top4_public.jsonl``."""
    path = Path(path)
    figures = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnnotationError(path, f"line {number}: invalid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise AnnotationError(path, f"line {number}: expected a JSON object")
        missing = [key for key in ("pdf_hash", "fig_uri", "s2_caption") if not row.get(key)]
        if missing:
            raise AnnotationError(path, f"line {number}: missing {', '.join(missing)}")
        radiology = bool(row.get("radiology", False))
        if radiology_only and not radiology:
            continue
        references = tuple(_squash(text) for text in row.get("s2orc_references") or [] if text)
        figures.append(
            MedicatFigure(
                image=f"{row['pdf_hash']}_{row['fig_uri']}",
                caption=_squash(row["s2_caption"]),
                references=references,
                radiology=radiology,
            )
        )
    return figures


def split_report_sections(text: str) -> dict[str, str]:
    """Split a radiology report into its headed sections (``FINDINGS:``, ``IMPRESSION:``, ...).

    Keys are lower-case headings; ``findings`` and ``impression`` are always present. A report
    with no heading at all is treated as findings: free-text reports describe what is seen.
    """
    headings = [
        match
        for match in _HEADING.finditer(text)
        if _squash(match.group(1).lower()) in REPORT_SECTIONS
    ]
    sections: dict[str, str] = {"findings": "", "impression": ""}
    if not headings:
        sections["findings"] = _squash(text)
        return sections
    for index, match in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        name = _squash(match.group(1).lower())
        key = _SECTION_ALIASES.get(name, name)
        body = _squash(text[match.end() : end])
        sections[key] = f"{sections.get(key, '')} {body}".strip()
    return sections


def read_report(path: str | Path) -> dict[str, str]:
    return split_report_sections(_read_text(Path(path)))


def read_vqa(path: str | Path, dataset: str) -> list[VQAItem]:
    """One annotation file of a ``VQA_FORMATS`` dataset (``vqa_rad`` or ``slake``)."""
    path, form = Path(path), vqa_format(dataset)
    required = (form.image_key, "question", "answer", "answer_type")
    if form.language_key:
        required += (form.language_key,)
    items = []
    for row_number, row in enumerate(_read_json_list(path)):
        _require(path, row_number, row, required)
        if form.language_key and row[form.language_key] != "en":
            continue
        items.append(
            VQAItem(
                image=str(row[form.image_key]),
                question=_squash(str(row["question"])),
                answer=str(row["answer"]).strip(),
                answer_type=_answer_type(path, row_number, row["answer_type"]),
                qid=str(row.get("qid", "")),
                question_type=str(row.get(form.question_type_key, "")),
                organ=str(row.get(form.organ_key, "")).strip(),
            )
        )
    return items


def read_vqa_splits(root: str | Path, dataset: str) -> dict[str, list[VQAItem]]:
    """All splits of a VQA-RAD or SLAKE folder, with ``image`` resolved under its image folder."""
    root, form = Path(root), vqa_format(dataset)
    image_root = root / form.image_dir
    splits: dict[str, list[VQAItem]] = {}
    for split, name in form.split_files.items():
        path = root / name
        if not path.is_file():
            if split == "val":
                continue
            raise DataRootError(f"{path}: {dataset} {split} annotations not found")
        splits[split] = [
            replace(item, image=str(_image_path(path, image_root, item.image)))
            for item in read_vqa(path, dataset)
        ]
    return splits


def vqa_format(dataset: str) -> VQAFormat:
    if dataset not in VQA_FORMATS:
        raise ValueError(f"dataset must be one of {sorted(VQA_FORMATS)}, got {dataset!r}")
    return VQA_FORMATS[dataset]


def detect_vqa_format(root: str | Path) -> str:
    """The ``VQA_FORMATS`` key whose test annotations are in ``root``."""
    for name, form in VQA_FORMATS.items():
        if (Path(root) / form.split_files["test"]).is_file():
            return name
    expected = " or ".join(form.split_files["test"] for form in VQA_FORMATS.values())
    raise DataRootError(f"{root}: no VQA-RAD or SLAKE test annotations ({expected}) here")


def normalize_answer(answer: Any) -> str:
    """Lower-case, single-spaced, without trailing punctuation: 'Yes.' and 'yes' are one class."""
    return _squash(str(answer).lower()).rstrip(_TRAILING_PUNCTUATION).strip()


def answer_vocabulary(items: Iterable[VQAItem], min_count: int = 1) -> list[str]:
    """Normalised answers seen at least ``min_count`` times, most frequent first, ties by name."""
    counts = Counter(normalize_answer(item.answer) for item in items)
    kept = [answer for answer, count in counts.items() if count >= min_count and answer]
    return sorted(kept, key=lambda answer: (-counts[answer], answer))


def _image_path(annotations: Path, image_root: Path, name: str) -> Path:
    try:
        return resolve_within(image_root, name)
    except ValueError as exc:
        raise AnnotationError(annotations, str(exc)) from exc


def _answer_type(path: Path, row_number: int, value: Any) -> AnswerType:
    answer_type = str(value).strip().lower()
    if answer_type not in ("open", "closed"):
        raise AnnotationError(
            path, f"row {row_number}: answer_type must be OPEN or CLOSED, got {value!r}"
        )
    return answer_type  # type: ignore[return-value]


def _require(path: Path, row_number: int, row: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(row, dict):
        raise AnnotationError(path, f"row {row_number}: expected a JSON object")
    missing = [key for key in keys if row.get(key) is None]
    if missing:
        raise AnnotationError(path, f"row {row_number}: missing {', '.join(missing)}")


def _read_json_list(path: Path) -> list[Any]:
    try:
        rows = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise AnnotationError(path, f"line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(rows, list):
        raise AnnotationError(path, "expected a JSON list of question objects")
    return rows


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataRootError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, f"not UTF-8 text (byte {exc.start})") from exc


def _squash(text: str) -> str:
    return " ".join(text.split())
