"""The one interface zero-shot classification, retrieval and knowledge bases use to embed things.

Every trained system (and any plain open_clip model) is wrapped as an ``Encoder`` so that the
zero-shot API, the evaluation commands, the HTTP service and ``kb build`` never depend on a domain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class Encoder:
    """Embeds images and texts into one L2-normalised joint space.

    ``image_fn`` takes a preprocessed batch ``[B, C, H, W]``; ``text_fn`` takes raw strings (it owns
    tokenisation). ``load_image`` turns a file path into one preprocessed ``[C, H, W]`` tensor.
    ``score_fn`` optionally replaces cosine scoring (for example an ITM head); it receives images
    and a list of texts and returns logits ``[B, len(texts)]``. ``device`` is where the modules
    live: inputs go there and results come back on the CPU, so callers never track devices.
    """

    name: str
    image_fn: Callable[[Tensor], Tensor]
    text_fn: Callable[[Sequence[str]], Tensor]
    load_image: Callable[[str | Path], Tensor]
    modules: Sequence[torch.nn.Module]
    preprocessing: dict = field(default_factory=dict)
    score_fn: Callable[[Tensor, Sequence[str]], Tensor] | None = None
    device: str = "cpu"

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        embedding = self.image_fn(images.to(self.device)).float()
        return torch.nn.functional.normalize(embedding, dim=-1).cpu()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        return torch.nn.functional.normalize(self.text_fn(list(texts)).float(), dim=-1).cpu()

    @torch.no_grad()
    def score(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        """``score_fn`` logits ``[B, len(texts)]`` on the CPU."""
        if self.score_fn is None:
            raise ValueError(f"encoder {self.name!r} has no score_fn")
        return self.score_fn(images.to(self.device), list(texts)).float().cpu()

    def identity(self) -> dict:
        """What a knowledge base records: ``sha256``, a hash of the weights (parameter names and
        values) and the preprocessing, is the identity; ``name`` is provenance only.

        Two encoders embed alike exactly when their hashes agree, wherever their files lie: a
        checkpoint copied to another folder or machine keeps its identity, and any changed
        weight or preprocessing setting changes it. ``name`` (for a checkpoint its absolute
        path) is recorded so ``kb search`` can rebuild the encoder, but never compared.
        """
        digest = hashlib.sha256()
        for module in self.modules:
            for key, tensor in sorted(module.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(json.dumps(self.preprocessing, sort_keys=True, default=str).encode())
        return {"name": self.name, "sha256": digest.hexdigest()}
