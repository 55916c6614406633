"""Rebuild a trained system from its checkpoint alone, safely.

Checkpoints are read with ``weights_only=True``: a checkpoint is data, and loading one must never run
code from the file. The class to build is named in the checkpoint and must be a ``BaseSystem``.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from domainvlm.core.errors import CheckpointError
from domainvlm.core.system import CHECKPOINT_FORMAT, CHECKPOINT_KEY, BaseSystem


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a PyTorch checkpoint that loads with "
            f"weights_only=True ({reason})"
        ) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}")
    return checkpoint


def load_system(path: str | Path, strict: bool = True) -> BaseSystem:
    """The trained system in eval mode on CPU, with the preprocessing it was trained with."""
    checkpoint = read_checkpoint(path)
    info = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(info, dict) or "class_path" not in info:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was not written by a domainvlm system (no {CHECKPOINT_KEY!r} "
            "entry); for a plain open_clip model use its model name and pretrained tag instead"
        )
    if info.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {info.get('format')!r}; this domainvlm reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    cls = _system_class(info["class_path"], path)
    try:
        system = cls(**info["init_args"])
    except TypeError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match {info['class_path']} in this version: {exc}"
        ) from exc
    state = checkpoint.get("state_dict", {})
    try:
        system.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} weights do not fit {info['class_path']}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    return system.eval()


def _system_class(class_path: str, path: Path) -> type[BaseSystem]:
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} needs {class_path}, which is not installed ({exc})"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseSystem)):
        raise CheckpointError(
            f"checkpoint {str(path)!r} names {class_path}, not a domainvlm system"
        )
    return cls
