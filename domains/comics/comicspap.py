"""ComicsPAP ("pick a panel") records: the Hugging Face release's Parquet shards, or JSON.

A record is ``{sample_id, context: [images], options: [images], index, solution_index, split,
task_type, previous_panel_caption}``: ``index`` is the masked position in the sequence of
``len(context) + 1`` panels, ``options[solution_index]`` fills it. Tasks: sequence_filling,
char_coherence, visual_closure, text_closure, caption_relevance; ``previous_panel_caption``
(caption relevance) is the text of the panel before the masked one. Accuracy; the random baseline
is the mean of 1/|options|.

Where records are found, under ``ROOT`` (or ``ROOT/comicspap/``):

- Parquet as released: one folder per task holding ``<split>-00000-of-0000N.parquet`` shards
  (``char_coherence/test-00000-of-00003.parquet``), or Parquet files at the top. Images are
  embedded as ``{"bytes", "path"}`` structs (the ``datasets`` Image feature); a struct with no
  bytes names a file relative to the shard. Shards of another task folder or split prefix are not
  opened; rows are read a few at a time.
- JSON (a list) or JSON Lines: images as paths relative to the file, or ``{"path": ...}``.

Embedded images are written once, named by their SHA-256, under the domainvlm cache
(``comicspap-images/``, see ``core.cache``) with a suffix no reader claims, and decoded through
``core.images.read_image``: Pillow limited to its listed formats and the pixel cap, whatever the
embedded ``path`` says, so an embedded file never picks another decoder. An image that does not
decode is reported with its shard and row when the shard is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from domainvlm.core.cache import cache_directory
from domainvlm.core.errors import ImageReadError
from domainvlm.core.files import atomic_open, resolve_within
from domainvlm.core.images import read_image
from domainvlm.domains.comics.closure_data import COMICSPAP_TASKS, ClosureInstance
from domainvlm.domains.comics.pages import BadInput, ComicsDataError

if TYPE_CHECKING:
    import pyarrow as pa

RECORD_FILES = ("*.json", "*.jsonl", "*.parquet", "*/*.parquet")
SHARD = re.compile(r"^(?P<split>[A-Za-z]+)-\d+-of-\d+\.parquet$")
"""A release shard's name, ``<split>-00000-of-00003.parquet``."""
EMBEDDED_SUFFIX = ".comicspap-image"
"""Suffix of extracted embedded images: registered by no domain reader, so Pillow decodes them."""
ROWS_PER_BATCH = 16
"""Parquet rows decoded at once (a release shard holds hundreds of rows of embedded pages)."""


def records_files(root: Path) -> list[Path]:
    folder = root / "comicspap" if (root / "comicspap").is_dir() else root
    return sorted(p for pattern in RECORD_FILES for p in folder.glob(pattern) if p.is_file())


def _may_hold(path: Path, task: str, split: str) -> bool:
    """False for a release shard of another task folder or split (not worth opening)."""
    if path.suffix != ".parquet":
        return True
    if path.parent.name in COMICSPAP_TASKS and path.parent.name != task:
        return False
    shard = SHARD.match(path.name)
    return shard is None or shard["split"] == split


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line or position, record) pairs from a JSON list or a JSON Lines file (Parquet files go
    through ``read_parquet``, which extracts their images)."""
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
        if not _may_hold(path, task, split):
            continue
        rows = (
            read_parquet(path, task, split, bad)
            if path.suffix == ".parquet"
            else read_records(path)
        )
        unit = "row" if path.suffix == ".parquet" else "record"
        for number, record in rows:
            where = f"{unit} {number}"
            if not isinstance(record, dict):
                raise ComicsDataError(path, f"{where} is not an object")
            if record.get("task_type") != task or record.get("split", split) != split:
                continue
            try:
                instances.append(_instance(path, where, record))
            except ComicsDataError as error:
                bad.report(error)
    return instances


def read_parquet(
    path: Path, task: str | None = None, split: str | None = None, bad: BadInput | None = None
) -> Iterator[tuple[int, dict]]:
    """(row, record) pairs of a Parquet file, embedded images extracted to files (their paths
    replace the structs); rows of another ``task``/``split`` are passed over undecoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = bad or BadInput()
    try:
        shard = pq.ParquetFile(path)
        batches = shard.iter_batches(batch_size=ROWS_PER_BATCH)
        row = 0
        for batch in batches:
            for record in batch.to_pylist():
                wanted = (task is None or record.get("task_type") == task) and (
                    split is None or record.get("split", split) == split
                )
                if wanted:
                    try:
                        yield row, _extracted(path, row, record)
                    except ComicsDataError as error:
                        bad.report(error)
                row += 1
    except (OSError, pa.ArrowException) as exc:
        raise ComicsDataError(path, f"not a readable Parquet file: {exc}") from exc


def _extracted(path: Path, row: int, record: dict) -> dict:
    """The record with each embedded image replaced by the path of its extracted file."""
    out = dict(record)
    for key in ("context", "options"):
        images = record.get(key)
        if not isinstance(images, list):
            raise ComicsDataError(path, f"row {row}: {key!r} is not a list of images")
        out[key] = [_embedded(path, row, f"{key}[{i}]", image) for i, image in enumerate(images)]
    return out


class _Extracted(str):
    """The path of an embedded image written to the cache (a JSON record cannot make one)."""


def _embedded(path: Path, row: int, what: str, image: object) -> object:
    if not isinstance(image, dict) or not ({"bytes", "path"} & set(image)):
        raise ComicsDataError(path, f"row {row}: {what} is not an image struct {{bytes, path}}")
    data = image.get("bytes")
    if data is None:
        return image  # a file named by ``path``, resolved like a JSON record's
    if not isinstance(data, bytes) or not data:
        raise ComicsDataError(path, f"row {row}: {what} has empty or non-binary bytes")
    digest = hashlib.sha256(data).hexdigest()
    file = cache_directory() / "comicspap-images" / digest[:2] / f"{digest}{EMBEDDED_SUFFIX}"
    if not file.is_file():
        with atomic_open(file, "wb") as handle:
            handle.write(data)
        try:
            read_image(file)
        except ImageReadError as exc:
            file.unlink(missing_ok=True)
            raise ComicsDataError(
                path, f"row {row}: {what} is not a decodable image: {exc.problem}"
            ) from exc
    return _Extracted(file)


def _image(path: Path, where: str, value: object) -> str:
    if isinstance(value, _Extracted):
        return str(value)  # checked when it was extracted
    relative = value.get("path") if isinstance(value, dict) else value
    if not isinstance(relative, str):
        raise ComicsDataError(path, f"{where}: an image is not a path string")
    try:
        image = resolve_within(path.parent, relative)
    except ValueError as exc:
        raise ComicsDataError(path, f"{where}: {exc}") from exc
    if not image.is_file():
        raise ComicsDataError(path, f"{where}: image {relative!r} is missing")
    return str(image)


def _instance(path: Path, where: str, record: dict) -> ClosureInstance:
    try:
        context = [_image(path, where, image) for image in record["context"]]
        options = [_image(path, where, image) for image in record["options"]]
        index, answer = int(record["index"]), int(record["solution_index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ComicsDataError(path, f"{where}: missing or bad field ({exc})") from exc
    if not 0 <= answer < len(options) or not 0 <= index <= len(context):
        raise ComicsDataError(path, f"{where}: index or solution_index out of range")
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


def release_schema() -> pa.Schema:
    """The columns of the released ComicsPAP Parquet files, images embedded as ``{bytes, path}``."""
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.schema(
        [
            ("sample_id", pa.string()),
            ("context", pa.list_(image)),
            ("options", pa.list_(image)),
            ("index", pa.int32()),
            ("solution_index", pa.int32()),
            ("split", pa.string()),
            ("task_type", pa.string()),
            ("previous_panel_caption", pa.string()),
        ]
    )


def write_parquet(records: list[dict], images: Path, out: Path) -> list[Path]:
    """Records (image paths relative to ``images``) as the release lays them out: one folder per
    task, ``<split>-00000-of-00001.parquet``, every image embedded as ``{bytes, path}``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = release_schema()

    def embed(relative: str) -> dict:
        return {"bytes": (images / relative).read_bytes(), "path": Path(relative).name}

    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        row = {
            **record,
            "context": [embed(i) for i in record["context"]],
            "options": [embed(i) for i in record["options"]],
        }
        groups.setdefault((record["task_type"], record["split"]), []).append(row)
    written = []
    for (task, split), rows in sorted(groups.items()):
        path = out / task / f"{split}-00000-of-00001.parquet"
        table = pa.Table.from_pylist(rows, schema=schema)
        with atomic_open(path, "wb") as handle:
            pq.write_table(table, handle)
        written.append(path)
    return written
