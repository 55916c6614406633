"""Turning caller input (texts or image paths through an encoder, or arrays) into clean vectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm


def encode_in_batches(
    items: list[str],
    encode: Callable[[list[str]], Any],
    batch_size: int,
    progress: bool,
    description: str,
) -> np.ndarray:
    """Stack ``encode(batch)`` outputs (NumPy arrays, or anything ``np.asarray`` accepts, such as
    CPU tensors) into one float32 array ``[len(items), dim]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not items:
        raise ValueError(f"{description}: nothing to encode (empty input)")
    parts: list[np.ndarray] = []
    starts = range(0, len(items), batch_size)
    for number, start in enumerate(
        tqdm(starts, desc=description, unit="batch", disable=not progress)
    ):
        batch = items[start : start + batch_size]
        output = np.asarray(encode(batch), dtype=np.float32)
        if output.ndim != 2 or output.shape[0] != len(batch):
            raise ValueError(
                f"{description}: encoder returned shape {output.shape} for batch {number} of "
                f"{len(batch)} items; expected [{len(batch)}, dim]"
            )
        if parts and output.shape[1] != parts[0].shape[1]:
            raise ValueError(
                f"{description}: encoder returned dimension {output.shape[1]} for batch {number}, "
                f"{parts[0].shape[1]} before"
            )
        parts.append(output)
    return np.concatenate(parts)


def prepare_vectors(vectors: Any, metric: str, dimension: int | None, what: str) -> np.ndarray:
    """Float32, C-contiguous, 2-D, finite; L2-normalised for the cosine metric."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1 and dimension is not None and array.shape[0] == dimension:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [n, dim], got shape {array.shape}")
    if dimension is not None and array.shape[1] != dimension:
        raise ValueError(
            f"{what} have dimension {array.shape[1]}, the knowledge base has {dimension}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    if metric == "cosine":
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        if (norms == 0).any():
            row = int(np.flatnonzero(norms[:, 0] == 0)[0])
            raise ValueError(f"{what}: row {row} is all zeros and has no direction (cosine)")
        array = array / norms
    return np.ascontiguousarray(array)
