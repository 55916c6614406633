"""Small file helpers shared by every package: atomic writes and paths that cannot escape a root."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from domainvlm.core.errors import FileError


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Write to a temp file beside ``path`` and rename it over ``path`` only on success.

    A crash mid-write leaves the previous file (or no file) in place, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, sort_keys=True)


def atomic_save(path: str | Path, save: Callable[[IO], None]) -> None:
    """Run ``save(handle)`` (for example ``torch.save``) against a binary temp file, then rename."""
    with atomic_open(path, "wb") as handle:
        save(handle)


def resolve_within(root: str | Path, relative: str | Path) -> Path:
    """Join a path taken from a manifest or annotation file onto ``root``, refusing escapes.

    Annotation files are user data: ``../../etc/passwd`` or an absolute path must not read files
    outside the dataset directory.
    """
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise ValueError(f"path {str(relative)!r} escapes the dataset root {str(root)!r}")
    return candidate


def check_output_folder(path: str | Path) -> Path:
    """Refuse an output folder that cannot be created, up front and without creating anything, so
    a command that fails later leaves no empty folder behind."""
    path = Path(path)
    ancestor = path.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise FileError(
            path, f"cannot create this output folder ({ancestor} is not a writable folder)"
        )
    return path
