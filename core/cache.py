"""Where domainvlm keeps what it can recompute (band statistics): never in the user's dataset.

Datasets are often read-only or shared between users, so a cache written beside the images fails
or surprises. The directory is ``$DOMAINVLM_CACHE_DIR`` when set, else
``$XDG_CACHE_HOME/domainvlm``, else ``~/.cache/domainvlm``; deleting it only costs recomputation.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV = "DOMAINVLM_CACHE_DIR"


def cache_directory() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "domainvlm"


def cache_file(kind: str, name: str, source: str | Path) -> Path:
    """``<cache>/<kind>/<name>-<hash of source's absolute path>.json``: one file per dataset."""
    digest = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:16]
    return cache_directory() / kind / f"{name}-{digest}.json"
