"""Questions to the semantic experts (``SemanticExpertsSystem`` with ``task: vqa``): the plugin
hooks behind ``domainvlm eval vqa``, ``domainvlm ask`` and ``POST /v1/vqa`` for remote sensing.

The questions are RSVQA's (``<root>/rsvqa`` of the sample, or an RSVQA-LR/HR folder itself); the
answers are classes of the head, trained with cross-entropy, so a softmax over them is the
model's distribution over its answer vocabulary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domainvlm.core.errors import CheckpointError, DomainVLMError
from domainvlm.core.registry import VQAData
from domainvlm.core.vqa import rank_by_softmax
from domainvlm.domains.remote_sensing.rsvqa import RSVQADataset

RSVQA_FOLDER = "rsvqa"
BATCH = 16
"""Questions per forward pass."""


def vqa_data(root: Path, split: str = "test") -> VQAData:
    """RSVQA questions of ``split``; the majority answer is the training split's most frequent."""
    root = Path(root)
    folder = root / RSVQA_FOLDER if (root / RSVQA_FOLDER).is_dir() else root
    questions = RSVQADataset(folder, split)
    train = questions if split == "train" else RSVQADataset(folder, "train")
    majority = Counter(answer for _, _, answer, _ in train.questions).most_common(1)[0][0]
    return VQAData(
        paths=list(questions.paths),
        questions=[question for _, question, _, _ in questions.questions],
        answers=[answer for _, _, answer, _ in questions.questions],
        answer_types=[kind for *_, kind in questions.questions],
        majority_answer=majority,
    )


def rank_answers(
    system: Any,
    paths: Sequence[Path],
    questions: Sequence[str],
    top_k: int = 5,
    frame: int | None = None,
) -> list[list[tuple[str, float]]]:
    """Each question's ``top_k`` answers with their softmax probabilities."""
    from domainvlm.domains.remote_sensing.system import SemanticExpertsSystem, raster_loader

    if not isinstance(system, SemanticExpertsSystem) or system.hparams.task != "vqa":
        kind = type(system).__name__
        if isinstance(system, SemanticExpertsSystem):
            kind += f" with task={system.hparams.task!r}"
        raise CheckpointError(
            f"the checkpoint holds a {kind}: questions need a SemanticExpertsSystem trained with "
            "task: vqa (configs/remote_sensing/semantic_experts_vqa.yaml)"
        )
    if frame:
        raise DomainVLMError(f"frame {frame} requested, but remote-sensing images have no frames")
    system.eval()
    return rank_by_softmax(
        lambda images, batch: system(images.to(system.device), batch)[0],
        raster_loader(system.preprocessing),
        paths,
        questions,
        system.hparams.classes,
        top_k,
        BATCH,
    )


def answer_questions(
    system: Any, paths: Sequence[Path], questions: Sequence[str], batch_size: int = 32
) -> list[str]:
    """The most likely answer to each question."""
    return [ranking[0][0] for ranking in rank_answers(system, paths, questions, 1)]
