"""Rebuild a trained system from its checkpoint alone, safely.

Checkpoints are read with ``weights_only=True``: a checkpoint is data, and loading one must never run
code from the file. The class to build is named in the checkpoint and must be a ``BaseSystem``.
Resuming (``fit/validate/test --ckpt_path``) goes through ``WeightsOnlyCheckpointIO`` for the same
reason: torch 2.4 and 2.5, which ``pyproject.toml`` allows, default to ``weights_only=False``.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from domainvlm.core.errors import CheckpointError
from domainvlm.core.system import CHECKPOINT_FORMAT, CHECKPOINT_KEY, BaseSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

MapLocation = str | torch.device | Callable | dict | None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    with open(path, "rb") as handle:
        return _load_weights_only(handle, str(path), "cpu")


# What torch.load raises for a file that is not a checkpoint or needs unpickling to load.
UNREADABLE = (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError)


def unreadable(name: str, exc: BaseException) -> CheckpointError:
    """The one-line error for a checkpoint that ``torch.load(weights_only=True)`` refused."""
    message = str(exc)
    refused = re.search(r"WeightsUnpickler error: (.*?)(?: Please use |\n|$)", message)
    if refused:
        return CheckpointError(
            f"checkpoint {name!r} holds pickled objects that loading would have to run as code, "
            f"refused: only weights_only=True checkpoints are read ({refused.group(1).strip()})"
        )
    reason = message.splitlines()[0] if message else type(exc).__name__
    return CheckpointError(
        f"checkpoint {name!r} is corrupt or not a PyTorch checkpoint that loads with "
        f"weights_only=True ({reason})"
    )


def _load_weights_only(handle: IO[bytes], name: str, map_location: MapLocation) -> dict[str, Any]:
    try:
        checkpoint = torch.load(handle, map_location=map_location, weights_only=True)
    except UNREADABLE as exc:
        raise unreadable(name, exc) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {name!r} holds a {type(checkpoint).__name__}")
    return checkpoint


class WeightsOnlyCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, except that loading never unpickles code (local or fsspec paths).

    Lightning passes its ``weights_only`` argument through to ``torch.load``; left at ``None`` it
    means torch's default, which is ``False`` before torch 2.6. This class ignores the argument.
    """

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: MapLocation = "cpu",
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        filesystem = get_filesystem(path)
        if not filesystem.exists(path):
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
        with filesystem.open(path, "rb") as handle:
            return _load_weights_only(handle, str(path), map_location)


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
    if info["init_args"].get("peft") is not None:
        from domainvlm.core.adapters import complete_state

        system.configure_model()  # loads peft.base and injects the adapters
        state = complete_state(system, info, state, str(path))
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
