"""The grounding system: a speaker pair scorer and a reading-order pair scorer, trained together.

``L = BCE(speaker pairs) + λ_order·BCE(order pairs)``: each (text, character) pair of an annotated
page is labelled 1 when the character says the text; each ordered pair (a, b) of a page's panels
and of its texts 1 when a is read before b. Both scorers are plain MLPs on geometry features
(``speakers.SpeakerScorer``, ``order.OrderScorer``); ``load_grounding`` returns them from a
checkpoint for ``associate_speakers`` and ``order_boxes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from domainvlm.core.errors import CheckpointError
from domainvlm.core.system import BaseSystem
from domainvlm.domains.comics.order import OrderScorer
from domainvlm.domains.comics.speakers import SpeakerScorer
from torch import Tensor


class GroundingSystem(BaseSystem):
    def __init__(
        self,
        speaker_hidden: int = 64,
        order_hidden: int = 64,
        order_weight: float = 1.0,
        threshold: float = 0.4,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            speaker_hidden: width of the speaker scorer's hidden layers.
            order_hidden: width of the order scorer's hidden layers.
            order_weight: λ_order.
            threshold: association threshold stored with the model (the probability a text's
                best character must reach to be linked).
        """
        super().__init__(**kwargs)
        self.speaker_scorer = SpeakerScorer(hidden=speaker_hidden)
        self.order_scorer = OrderScorer(hidden=order_hidden)

    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        loss = torch.zeros((), device=self.device)
        if len(batch["speaker_y"]):
            logits = self.speaker_scorer(batch["speaker_x"])
            losses["speaker"] = F.binary_cross_entropy_with_logits(logits, batch["speaker_y"])
            losses["speaker_pair_accuracy"] = _accuracy(logits, batch["speaker_y"])
            loss = loss + losses["speaker"]
        if len(batch["order_y"]):
            logits = self.order_scorer(batch["order_x"], batch["order_swapped"])
            losses["order"] = F.binary_cross_entropy_with_logits(logits, batch["order_y"])
            losses["order_pair_accuracy"] = _accuracy(logits, batch["order_y"])
            loss = loss + self.hparams.order_weight * losses["order"]
        losses["loss"] = loss
        return losses


def _accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return ((logits > 0).float() == labels).float().mean().detach()


def load_grounding_system(checkpoint: str | Path) -> GroundingSystem:
    """A grounding checkpoint's system, in eval mode on CPU (``torch.load(weights_only=True)``)."""
    from domainvlm.core.checkpoint import load_system

    system = load_system(checkpoint)
    if not isinstance(system, GroundingSystem):
        raise CheckpointError(
            f"checkpoint {str(checkpoint)!r} holds a {type(system).__name__}, not a comics "
            "grounding system (train one with configs/comics/grounding.yaml)"
        )
    return system


def load_grounding(checkpoint: str | Path) -> tuple[SpeakerScorer, OrderScorer]:
    """The (speaker scorer, order scorer) of a grounding checkpoint, for ``associate_speakers``
    and ``order_boxes``."""
    system = load_grounding_system(checkpoint)
    return system.speaker_scorer, system.order_scorer
