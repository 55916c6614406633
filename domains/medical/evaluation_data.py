"""What ``domainvlm eval`` needs from a medical dataset root: organ-labelled and reported images,
and questions for ``eval vqa`` with the hook that asks an ``M3AEVQASystem``.

Zero-shot labels come from the VQA annotations, which name each image's region (VQA-RAD
``image_organ``, SLAKE ``location``), so the same code serves the offline sample, VQA-RAD and
SLAKE. Retrieval pairs each image with its report (or its caption), as the knowledge base does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domainvlm.core.errors import CheckpointError, DataRootError
from domainvlm.core.registry import RetrievalData, VQAData, ZeroShotData
from domainvlm.domains.medical.knowledge import read_cases
from domainvlm.domains.medical.templates import templates
from domainvlm.domains.medical.text import (
    VQAItem,
    answer_vocabulary,
    detect_vqa_format,
    normalize_answer,
    read_vqa_splits,
)

RANKING_BATCH = 16
"""Questions per forward pass of ``rank_answers`` (a few at a time from the CLI or service)."""

ORGAN_NAMES = {"CHEST": "chest", "HEAD": "brain", "ABD": "abdomen"}
"""VQA-RAD's image_organ values as class names (its HEAD images are brain CT and MRI)."""


def organ_name(organ: str) -> str:
    """A class name for an annotation's region: ``ABD`` → abdomen, SLAKE ``Chest_lung`` → chest lung."""
    return ORGAN_NAMES.get(organ.upper(), organ.replace("_", " ").lower())


def zeroshot_data(root: Path, split: str = "test", lang: str = "en") -> ZeroShotData:
    """Each image of the split once, labelled with its region; classes are those of all splits."""
    splits = read_vqa_splits(root, detect_vqa_format(root))
    if split not in splits:
        raise DataRootError(f"{root}: no {split!r} split; it has {', '.join(splits)}")
    classnames = sorted({organ_name(item.organ) for items in splits.values() for item in items})
    labels = _image_labels(splits[split], classnames, Path(root))
    return ZeroShotData(
        paths=[Path(image) for image in labels],
        labels=list(labels.values()),
        classnames=classnames,
        templates=templates(lang),
    )


def retrieval_data(root: Path, split: str = "test") -> RetrievalData:
    """One text per image: its report (impression, then findings) or, without one, its caption."""
    cases = read_cases(root, split)
    return RetrievalData(
        paths=[case.image for case in cases],
        captions=[case.text for case in cases],
        image_index=list(range(len(cases))),
        languages=[""] * len(cases),
    )


def vqa_data(root: Path, split: str = "test") -> VQAData:
    """The split's questions (VQA-RAD, SLAKE or the sample) with normalised answers; the majority
    answer is the most frequent training answer, the first class of a fine-tuned head."""
    splits = read_vqa_splits(root, detect_vqa_format(root))
    if split not in splits:
        raise DataRootError(f"{root}: no {split!r} split; it has {', '.join(splits)}")
    items = splits[split]
    return VQAData(
        paths=[Path(item.image) for item in items],
        questions=[item.question for item in items],
        answers=[normalize_answer(item.answer) for item in items],
        answer_types=[item.answer_type for item in items],
        majority_answer=answer_vocabulary(splits["train"])[0],
    )


def answer_questions(
    system: Any, paths: Sequence[Path], questions: Sequence[str], batch_size: int = 32
) -> list[str]:
    """An ``M3AEVQASystem``'s answers, each image read with its training preprocessing."""
    import torch
    from domainvlm.domains.medical.system import M3AEVQASystem

    if not isinstance(system, M3AEVQASystem):
        raise CheckpointError(
            f"the checkpoint holds a {type(system).__name__}, not an M3AEVQASystem: eval vqa needs "
            "a VQA fine-tuned checkpoint (e.g. from configs/medical/tiny_vqa.yaml)"
        )
    load_image = system.image_loader()
    system.eval()
    answers: list[str] = []
    for start in range(0, len(paths), batch_size):
        images = torch.stack([load_image(path) for path in paths[start : start + batch_size]])
        answers += system.answer(images, questions[start : start + batch_size])
    return answers


def rank_answers(
    system: Any,
    paths: Sequence[Path],
    questions: Sequence[str],
    top_k: int = 5,
    frame: int | None = None,
) -> list[list[tuple[str, float]]]:
    """An ``M3AEVQASystem``'s ``top_k`` answers per question with their probabilities: a softmax
    over the head's answer vocabulary (the head is trained with per-answer BCE, so the sigmoid of
    one logit is not a distribution; the softmax ranks the same and sums to 1)."""
    from domainvlm.core.vqa import rank_by_softmax

    _check_vqa_system(system)
    system.eval()
    return rank_by_softmax(
        lambda images, batch: system(images.to(system.device), batch),
        system.image_loader(frame or 0),
        paths,
        questions,
        system.hparams.classes,
        top_k,
        RANKING_BATCH,
    )


def _check_vqa_system(system: Any) -> None:
    from domainvlm.domains.medical.system import M3AEVQASystem

    if not isinstance(system, M3AEVQASystem):
        raise CheckpointError(
            f"the checkpoint holds a {type(system).__name__}, not an M3AEVQASystem: questions "
            "need a VQA fine-tuned checkpoint (e.g. from configs/medical/tiny_vqa.yaml)"
        )


def _image_labels(items: list[VQAItem], classnames: list[str], root: Path) -> dict[str, int]:
    labels: dict[str, int] = {}
    for item in items:
        if not item.organ:
            raise DataRootError(f"{root}: question {item.qid!r} names no organ for {item.image}")
        label = classnames.index(organ_name(item.organ))
        if labels.setdefault(item.image, label) != label:
            raise DataRootError(f"{root}: {item.image} is labelled with two different organs")
    return labels
