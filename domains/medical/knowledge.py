"""Reports of a dataset root as knowledge-base records and as the texts of report retrieval.

A radiology knowledge base is the dataset's own reports: ``kb build --domain medical --data ROOT``
embeds them, and ``kb search --image scan.dcm`` finds the reports of similar prior images. The
layout is ROCO's (``<split>/captions.txt`` plus images) with, where the dataset has them, reports
in ``reports/<ID>.txt`` (the offline sample); ROCO itself has captions only, which then stand in.

Privacy: a record holds the report's FINDINGS and IMPRESSION only (INDICATION and HISTORY are
where free text tends to carry patient details), and of the DICOM header only ``RECORD_TAGS``,
a subset of the reader's technical whitelist. Report text is otherwise taken as the dataset ships
it (public datasets are de-identified).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domainvlm.core.errors import DataRootError
from domainvlm.domains.medical.datamodule import roco_cases
from domainvlm.domains.medical.dicom import DICOM_SUFFIXES, read_dicom_meta
from domainvlm.domains.medical.text import read_report

REPORTS_DIR = "reports"
RECORD_TAGS = ("Modality", "BodyPartExamined")
"""The DICOM tags a record may carry: technical, and a subset of the reader's ``SAFE_TAGS``."""
KNOWLEDGE_SPLITS = ("train", "test", "val")
"""Test before val: a dataset without a val split reads its test split for val (skipped)."""


@dataclass(frozen=True)
class Case:
    """One image with its caption and, when the dataset has one, its report's two sections."""

    id: str
    split: str
    image: Path
    caption: str
    findings: str = ""
    impression: str = ""

    @property
    def text(self) -> str:
        """What is embedded and retrieved: the report, impression first so that its summary
        survives a short text context (M3AE: 64 tokens), or the caption without a report."""
        report = " ".join(part for part in (self.impression, self.findings) if part)
        return report or self.caption


def read_cases(root: str | Path, split: str) -> list[Case]:
    """The cases of one split, each with its report when ``reports/<ID>.txt`` exists."""
    root = Path(root)
    cases = []
    for image_id, image, caption in roco_cases(root, split):
        report = root / REPORTS_DIR / f"{image_id}.txt"
        sections = read_report(report) if report.is_file() else {}
        cases.append(
            Case(
                id=image_id,
                split=split,
                image=image,
                caption=caption,
                findings=sections.get("findings", ""),
                impression=sections.get("impression", ""),
            )
        )
    return cases


def report_records(root: str | Path) -> list[dict[str, Any]]:
    """One record per image of every split (``kb build --domain medical --data ROOT``).

    ``image_file`` (relative to the root) rather than ``image``: a record with an ``image`` key
    would be embedded as an image. ``split`` lets a search keep to prior cases
    (``--filter split=train``).
    """
    root = Path(root)
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for split in KNOWLEDGE_SPLITS:
        try:
            cases = read_cases(root, split)
        except DataRootError:
            continue
        for case in cases:
            if case.id in seen:
                continue
            seen.add(case.id)
            record: dict[str, Any] = {
                "id": case.id,
                "text": case.text,
                "split": case.split,
                "image_file": case.image.relative_to(root).as_posix(),
                "caption": case.caption,
                "findings": case.findings,
                "impression": case.impression,
            }
            if case.image.suffix.lower() in DICOM_SUFFIXES:
                meta = read_dicom_meta(case.image)
                record |= {tag: meta[tag] for tag in RECORD_TAGS if tag in meta}
            records.append(record)
    if not records:
        raise DataRootError(
            f"{root}: no captions.txt in any split ({', '.join(KNOWLEDGE_SPLITS)}); expected a "
            "ROCO-layout folder or `domainvlm sample-data medical --out DIR`"
        )
    return records


def image_queries(root: str | Path | None) -> list[dict[str, Any]]:
    """The dataset's images as the queries of a report base (``kb search --image scan.dcm``):
    another modality than the stored reports, so the recall ``kb build`` records is the one an
    image search gets. Paths are relative to ``root``, as record ``image_file`` is."""
    if root is None:
        raise DataRootError("the medical knowledge queries are a dataset's images: pass --data")
    root = Path(root)
    queries, seen = [], set()
    for split in KNOWLEDGE_SPLITS:
        try:
            cases = read_cases(root, split)
        except DataRootError:
            continue
        for case in cases:
            if case.id not in seen:
                seen.add(case.id)
                queries.append({"image": case.image.relative_to(root).as_posix()})
    return queries
