"""ComicsPAP ("pick a panel") records saved as JSON or JSON Lines.

A record is ``{sample_id, context: [images], options: [images], index, solution_index, split,
task_type, previous_panel_caption}``: ``index`` is the masked position in the sequence of
``len(context) + 1`` panels, ``options[solution_index]`` fills it. Images are paths relative to the
records file (or ``{"path": ...}``). Tasks: sequence_filling, char_coherence, visual_closure,
text_closure, caption_relevance; ``previous_panel_caption`` (caption relevance) is the text of the
panel before the masked one. Accuracy; the random baseline is the mean of 1/|options|.

Parquet files (the Hugging Face release) need pyarrow, which this package does not install; save
the records as JSON (paths to image files) to read them here.
"""

from __future__ import annotations

import json
from pathlib import Path

from domainvlm.core.files import resolve_within
from domainvlm.domains.comics.closure_data import COMICSPAP_TASKS, ClosureInstance
from domainvlm.domains.comics.pages import BadInput, ComicsDataError

RECORD_FILES = ("*.json", "*.jsonl")


def records_files(root: Path) -> list[Path]:
    folder = root / "comicspap" if (root / "comicspap").is_dir() else root
    return sorted(p for pattern in RECORD_FILES for p in folder.glob(pattern) if p.is_file())


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line or position, record) pairs from a JSON list or a JSON Lines file."""
    if path.suffix == ".parquet":
        raise ComicsDataError(
            path, "reading Parquet needs pyarrow (pip install pyarrow); or save the records as JSON"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ComicsDataError(path, f"cannot read: {exc}") from exc
    if path.suffix == ".jsonl":
        records = []
        for line, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                try:
                    records.append((line, json.loads(raw)))
                except json.JSONDecodeError as exc:
                    raise ComicsDataError(path, f"line {line}: not valid JSON: {exc}") from exc
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ComicsDataError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ComicsDataError(path, "expected a JSON list of ComicsPAP records")
    return list(enumerate(data))


def read_comicspap(
    root: str | Path, task: str, split: str = "test", skip_bad: BadInput | None = None
) -> list[ClosureInstance]:
    """Instances of one ComicsPAP task and split from every records file under ``root``."""
    if task not in COMICSPAP_TASKS:
        raise ValueError(f"unknown ComicsPAP task {task!r}; tasks: {', '.join(COMICSPAP_TASKS)}")
    root = Path(root)
    files = records_files(root)
    if not files:
        raise ComicsDataError(root, "holds no ComicsPAP records (*.json, *.jsonl, or comicspap/)")
    bad = skip_bad or BadInput()
    instances = []
    for path in files:
        for where, record in read_records(path):
            if not isinstance(record, dict):
                raise ComicsDataError(path, f"record {where} is not an object")
            if record.get("task_type") != task or record.get("split", split) != split:
                continue
            try:
                instances.append(_instance(path, where, record))
            except ComicsDataError as error:
                bad.report(error)
    return instances


def _image(path: Path, where: int, value: object) -> str:
    relative = value.get("path") if isinstance(value, dict) else value
    if not isinstance(relative, str):
        raise ComicsDataError(path, f"record {where}: an image is not a path string")
    try:
        image = resolve_within(path.parent, relative)
    except ValueError as exc:
        raise ComicsDataError(path, f"record {where}: {exc}") from exc
    if not image.is_file():
        raise ComicsDataError(path, f"record {where}: image {relative!r} is missing")
    return str(image)


def _instance(path: Path, where: int, record: dict) -> ClosureInstance:
    try:
        context = [_image(path, where, image) for image in record["context"]]
        options = [_image(path, where, image) for image in record["options"]]
        index, answer = int(record["index"]), int(record["solution_index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ComicsDataError(path, f"record {where}: missing or bad field ({exc})") from exc
    if not 0 <= answer < len(options) or not 0 <= index <= len(context):
        raise ComicsDataError(path, f"record {where}: index or solution_index out of range")
    caption = str(record.get("previous_panel_caption") or "").strip()
    texts = None
    if caption and index > 0:
        texts = [""] * len(context)
        texts[index - 1] = caption
    return ClosureInstance(
        task=str(record["task_type"]),
        context_images=context,
        options=options,
        option_kind="image",
        answer=answer,
        context_texts=texts,
        mask_index=None if index == len(context) else index,
        id=str(record.get("sample_id", where)),
    )
