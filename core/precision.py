"""Inference precision: run an ``Encoder``'s towers under bf16 autocast (CPU or GPU).

bf16 keeps fp32's exponent range, so no loss scaling is needed and embeddings stay within about
1e-2 cosine of fp32; CPUs with AVX-512 BF16 or AMX and every recent GPU run its matmuls faster.
Training uses Lightning's own switch (``--trainer.precision bf16-mixed``); this covers ``eval``,
``zeroshot``, ``kb build`` and ``serve``, which never build a Trainer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from domainvlm.core.encoder import Encoder
from domainvlm.core.errors import DomainVLMError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class PrecisionError(DomainVLMError, ValueError):
    pass


def autocast_dtype(precision: str) -> torch.dtype | None:
    """``fp32`` → ``None`` (no autocast), ``bf16`` → ``torch.bfloat16``; anything else is refused."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def autocast_encoder(encoder: Encoder, precision: str) -> Encoder:
    """Wrap the encoder's image, text and score functions in autocast; ``fp32`` changes nothing.

    The results are still returned as fp32 by ``Encoder`` (it calls ``.float()``), so callers and
    knowledge bases never see bf16 tensors.
    """
    dtype = autocast_dtype(precision)
    if dtype is None:
        return encoder
    device_type = torch.device(encoder.device).type
    encoder.image_fn = _autocast(encoder.image_fn, device_type, dtype)
    encoder.text_fn = _autocast(encoder.text_fn, device_type, dtype)
    if encoder.score_fn is not None:
        encoder.score_fn = _autocast(encoder.score_fn, device_type, dtype)
    return encoder


def _autocast(function: Callable[..., Any], device_type: str, dtype: torch.dtype) -> Callable:
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=dtype):
            return function(*args, **kwargs)

    return run
