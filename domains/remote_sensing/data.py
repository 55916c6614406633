"""What every remote-sensing dataset shares: class-name normalisation and reading that can skip a
few bad files with a counted warning (``AnnotationError`` is core's, re-exported for the readers).

The datasets themselves (``captions``, ``scenes``, ``rsvqa``) return dicts with the image as an
HWC array in the file's dtype (or whatever ``transform`` makes of it) and text as plain strings:
the DataModule owns augmentation and normalisation, the model owns tokenisation. The same classes
read the real datasets and ``sample.py``'s synthetic one.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from domainvlm.core.errors import AnnotationError
from domainvlm.domains.remote_sensing.rasters import RasterReadError
from torch.utils.data import Dataset

Transform = Callable[[np.ndarray], Any]


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


class SkippingDataset(Dataset):
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


def drop_missing(
    paths: Sequence[Path], skip_bad_files: bool, source: Path, what: str
) -> list[bool]:
    """Which of ``paths`` exist; missing ones are an error unless skipping (one counted warning)."""
    present = [path.is_file() for path in paths]
    missing = [path for path, ok in zip(paths, present) if not ok]
    if missing and not skip_bad_files:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise AnnotationError(
            source,
            f"{what} {missing[0]} does not exist{more}; to train without the missing files, "
            "--data.skip_bad_files true (data.skip_bad_files in a config) skips them with a "
            "counted warning",
        )
    if missing:
        warnings.warn(
            f"{source}: skipped {len(missing)} of {len(paths)} {what}s that do not exist "
            f"(first: {missing[0]})",
            BadFileWarning,
            stacklevel=3,
        )
    return present


def apply_transform(transform: Transform | None, array: np.ndarray) -> Any:
    return array if transform is None else transform(array)


def load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise AnnotationError(path, f"{what} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(path, f"{what} is not valid JSON: {error}") from error
