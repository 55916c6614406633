"""Start part of a new model from another run's checkpoint (the ``init_from`` option).

Fine-tuning configs name a pretraining run's checkpoint; only the weights under one prefix
(``backbone.``, ``model.``) are taken, and the hyperparameters that decide what those weights mean
(tokenizer, tower config, ...) must be equal, checked before loading so a mismatch reads as one line
instead of a list of missing keys. Size differences are caught by the strict load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from domainvlm.core.checkpoint import read_checkpoint
from domainvlm.core.errors import CheckpointError
from domainvlm.core.system import CHECKPOINT_KEY
from torch import nn


def _same(name: str, value: Any) -> Any:
    return value


def load_init_from(
    path: str | Path,
    module: nn.Module,
    prefix: str,
    must_match: Mapping[str, Any],
    compare_as: Callable[[str, Any], Any] = _same,
) -> None:
    """Load the weights under ``prefix`` of the domainvlm checkpoint ``path`` into ``module``.

    Args:
        path: the checkpoint (read with ``weights_only=True``).
        module: receives the weights, strictly (every key, every size).
        prefix: the module's attribute path in the checkpoint's system, with a trailing dot.
        must_match: hyperparameter name → this config's value; a checkpoint trained with another
            value is refused. Names the checkpoint does not record are not checked.
        compare_as: ``(name, value)`` → what is compared, for values with parts that may differ
            (a weights file named beside an architecture).
    """
    checkpoint = read_checkpoint(path)
    source = checkpoint.get(CHECKPOINT_KEY, {}).get("init_args", {})
    for key, value in must_match.items():
        if key in source and compare_as(key, source[key]) != compare_as(key, value):
            raise CheckpointError(
                f"init_from {str(path)!r} was trained with {key}={source[key]!r}, but this config "
                f"says {key}={value!r}; make them equal"
            )
    state = {
        key.removeprefix(prefix): value
        for key, value in checkpoint.get("state_dict", {}).items()
        if key.startswith(prefix)
    }
    if not state:
        raise CheckpointError(
            f"init_from {str(path)!r} holds no weights under {prefix!r}: not a checkpoint of the "
            "system this config starts from"
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"init_from {str(path)!r} does not fit this {prefix.rstrip('.')} (sizes differ?): "
            f"{str(exc).splitlines()[0]}"
        ) from exc
