"""The character clustering and naming thresholds ``eval characters`` chooses on the val books,
saved for ``comics predict``, so the tuned cuts reach prediction without copying numbers.

    domainvlm eval characters --checkpoint C --data D --write-thresholds T.json
    domainvlm comics predict --pages P --out O --checkpoint C --thresholds T.json

The file is a JSON object: ``cluster_threshold`` (the cosine-distance cut), ``name_threshold``
(the least cosine similarity to a bank name), and for the record how each was chosen
(``cluster_threshold_from``, ``name_threshold_from``), the resolved ``checkpoint`` they were chosen
for and the ``data`` root. Predict takes each threshold from its flag, else the file, else the
default (0.5), and says which; it warns when the file was written for another checkpoint (the
cuts belong to one embedding space).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from domainvlm.core.errors import FileError
from domainvlm.core.files import atomic_write_json

DEFAULT_CLUSTER_THRESHOLD = 0.5
DEFAULT_NAME_THRESHOLD = 0.5


class ThresholdsFileError(FileError):
    """A thresholds file that is missing or not what ``--write-thresholds`` writes."""


@dataclass(frozen=True)
class CharacterThresholds:
    """The cuts ``comics predict`` clusters and names characters with, and where each came from."""

    cluster: float = DEFAULT_CLUSTER_THRESHOLD
    name: float = DEFAULT_NAME_THRESHOLD
    cluster_from: str = "default"
    name_from: str = "default"

    def describe(self, naming: bool = True) -> str:
        """One line for the user; the naming cut only where names are given (``naming``)."""
        line = f"character clusters cut at cosine distance {self.cluster:g} ({self.cluster_from})"
        return line + (
            f", names at similarity >= {self.name:g} ({self.name_from})" if naming else ""
        )


def checkpoint_key(checkpoint: str | Path) -> str:
    """The checkpoint as recorded and compared: resolved when it is a file."""
    path = Path(checkpoint)
    return str(path.resolve()) if path.is_file() else str(checkpoint)


def write_thresholds(
    path: Path,
    cluster: tuple[float, str],
    name: tuple[float, str],
    checkpoint: str | Path,
    data: Path,
) -> None:
    """``cluster`` and ``name``: (threshold, how it was chosen), e.g. "chosen on the val books"."""
    atomic_write_json(
        path,
        {
            "cluster_threshold": cluster[0],
            "cluster_threshold_from": cluster[1],
            "name_threshold": name[0],
            "name_threshold_from": name[1],
            "checkpoint": checkpoint_key(checkpoint),
            "data": str(Path(data).resolve()),
        },
    )


def read_thresholds(path: Path) -> dict:
    """The file's fields, both thresholds checked to be finite numbers."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ThresholdsFileError(path, "no such thresholds file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ThresholdsFileError(path, f"not a readable JSON thresholds file: {exc}") from exc
    if not isinstance(record, dict):
        raise ThresholdsFileError(path, "a thresholds file is a JSON object")
    for key in ("cluster_threshold", "name_threshold"):
        value = record.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ThresholdsFileError(
                path,
                f"{key!r} must be a finite number, got {value!r} (the file "
                "`domainvlm eval characters --write-thresholds` writes)",
            )
    return record


def resolve_thresholds(
    cluster: float | None, name: float | None, path: Path | None
) -> tuple[CharacterThresholds, str | None]:
    """Each threshold from its flag (not ``None``), else the file at ``path``, else the default;
    and the checkpoint the file's thresholds in use were chosen for (else ``None``)."""
    record = read_thresholds(path) if path is not None else {}
    chosen = {}
    for key, flag, default in (
        ("cluster", cluster, DEFAULT_CLUSTER_THRESHOLD),
        ("name", name, DEFAULT_NAME_THRESHOLD),
    ):
        if flag is not None:
            chosen[key], chosen[f"{key}_from"] = float(flag), f"--{key}-threshold"
        elif path is not None:
            chosen[key] = float(record[f"{key}_threshold"])
            how = record.get(f"{key}_threshold_from")
            chosen[f"{key}_from"] = f"{path}: {how}" if isinstance(how, str) else str(path)
        else:
            chosen[key], chosen[f"{key}_from"] = default, "default"
    tuned_for = record.get("checkpoint") if None in (cluster, name) else None
    return CharacterThresholds(**chosen), tuned_for if isinstance(tuned_for, str) else None
