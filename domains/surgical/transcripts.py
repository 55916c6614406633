"""Narration transcripts in the SVL layout (SurgVLP/HecVL/PeskaVLP) and as SRT/WebVTT subtitles.

SVL layout, per video id::

    videos/<id>.mp4
    aws_narration_texts/<id>.csv        start,end,text   (first ASR system: the anchors)
    whisper_narration_texts/<id>.csv    start,end,text   (second ASR system: the positive bags)
    keystep_texts/<id>.csv              start,end,step,text
    abstract_texts/<id>.csv             text (one row)
    splits/{train_narration,train_keystep,train_abstract,val}.csv   one column video_path

Times are seconds. Whisper itself writes ``.srt`` / ``.vtt``: any transcript path may be one of
those instead of a CSV, so a user can pretrain on their own lecture videos.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from domainvlm.domains.surgical.video import SurgicalDataError

TRANSCRIPT_DIRS = ("aws_narration_texts", "whisper_narration_texts")
KEYSTEP_DIR = "keystep_texts"
ABSTRACT_DIR = "abstract_texts"
SPLITS_DIR = "splits"
TRANSCRIPT_SUFFIXES = (".csv", ".srt", ".vtt")
TIME_TOLERANCE = 1.0
"""Seconds a transcript may run past the video's end (ASR timestamps round up)."""


@dataclass(frozen=True)
class Sentence:
    start: float
    end: float
    text: str
    step: int | None = None
    """Keystep index (keystep files only)."""


def read_transcript(path: str | Path, duration: float | None = None) -> list[Sentence]:
    """Sentences of a ``start,end,text`` CSV, an SRT or a WebVTT file, in time order, checked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SurgicalDataError(path, f"cannot read transcript ({exc})") from exc
    suffix = path.suffix.lower()
    if suffix == ".csv":
        sentences = _csv_sentences(path, text)
    elif suffix in (".srt", ".vtt"):
        sentences = _subtitle_sentences(path, text)
    else:
        raise SurgicalDataError(path, f"transcripts are {', '.join(TRANSCRIPT_SUFFIXES)} files")
    if not sentences:
        raise SurgicalDataError(path, "transcript holds no sentences")
    check_times(path, sentences, duration)
    return sorted(sentences, key=lambda s: (s.start, s.end))


def check_times(path: Path, sentences: list[Sentence], duration: float | None) -> None:
    for number, sentence in enumerate(sentences, start=1):
        if sentence.start < 0 or sentence.end < sentence.start:
            raise SurgicalDataError(
                path,
                f"sentence {number} has end < start or a negative time "
                f"({sentence.start:.2f}-{sentence.end:.2f}s)",
            )
        if duration is not None and sentence.end > duration + TIME_TOLERANCE:
            raise SurgicalDataError(
                path,
                f"sentence {number} ends at {sentence.end:.2f}s, past the video's end "
                f"({duration:.2f}s)",
            )


def _csv_sentences(path: Path, text: str) -> list[Sentence]:
    rows = list(csv.DictReader(text.splitlines()))
    needed = {"start", "end", "text"}
    if not rows or not needed <= set(rows[0]):
        raise SurgicalDataError(path, "needs a header with columns start,end,text")
    sentences = []
    for number, row in enumerate(rows, start=2):
        try:
            step = int(row["step"]) if row.get("step") not in (None, "") else None
            sentences.append(
                Sentence(float(row["start"]), float(row["end"]), row["text"].strip(), step)
            )
        except (TypeError, ValueError) as exc:
            raise SurgicalDataError(path, f"line {number}: bad start/end/step ({exc})") from exc
    return [s for s in sentences if s.text]


TIMESTAMP = re.compile(
    r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})\s*-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
)


def _seconds(hours: str | None, minutes: str, seconds: str, fraction: str) -> float:
    return (
        int(hours or 0) * 3600
        + int(minutes) * 60
        + int(seconds)
        + int(fraction.ljust(3, "0")) / 1000
    )


def _subtitle_sentences(path: Path, text: str) -> list[Sentence]:
    """Cues of SRT (numbered, ``,`` milliseconds) or WebVTT (``WEBVTT`` header, ``.``); tags dropped."""
    if path.suffix.lower() == ".vtt" and not text.lstrip().startswith("WEBVTT"):
        raise SurgicalDataError(path, "a WebVTT file starts with 'WEBVTT'")
    sentences = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [line.strip() for line in block.strip().splitlines()]
        for index, line in enumerate(lines):
            match = TIMESTAMP.search(line)
            if match:
                start = _seconds(*match.groups()[:4])
                end = _seconds(*match.groups()[4:])
                words = re.sub(r"<[^>]+>", "", " ".join(lines[index + 1 :])).strip()
                if words:
                    sentences.append(Sentence(start, end, words))
                break
    if not sentences and text.strip() and text.strip() != "WEBVTT":
        raise SurgicalDataError(path, "no 'start --> end' cue lines found")
    return sentences


def find_transcript(root: Path, folder: str, video_id: str) -> Path:
    """``<root>/<folder>/<id>.csv`` or its ``.srt`` / ``.vtt`` twin."""
    for suffix in TRANSCRIPT_SUFFIXES:
        candidate = root / folder / f"{video_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise SurgicalDataError(
        root / folder / f"{video_id}.csv",
        f"missing transcript (also tried .srt, .vtt) for {video_id}",
    )


def read_keysteps(path: str | Path, duration: float | None = None) -> list[Sentence]:
    """``start,end,step,text`` rows of one video (HecVL/PeskaVLP phase-level texts)."""
    return read_transcript(path, duration)


def read_abstract(path: str | Path) -> str:
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise SurgicalDataError(path, f"cannot read abstract ({exc})") from exc
    if not rows or "text" not in rows[0] or not rows[0]["text"].strip():
        raise SurgicalDataError(path, "an abstract file needs a 'text' column and one row")
    return rows[0]["text"].strip()


def read_split(path: str | Path) -> list[str]:
    """Video ids of a split file (one ``video_path`` column; ids are the file stems)."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise SurgicalDataError(path, f"cannot read split file ({exc})") from exc
    if rows and "video_path" not in rows[0]:
        raise SurgicalDataError(path, "a split file needs a 'video_path' column")
    return [Path(row["video_path"].strip()).stem for row in rows if row["video_path"].strip()]


def split_ids(root: Path, split: str) -> list[str]:
    """``train`` reads ``splits/train_narration.csv``; other names read ``splits/<name>.csv``."""
    name = "train_narration" if split == "train" else split
    path = root / SPLITS_DIR / f"{name}.csv"
    if not path.is_file():
        raise SurgicalDataError(path, f"missing split file for split {split!r}")
    return read_split(path)
