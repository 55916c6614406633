"""Visual question answering for ``domainvlm eval vqa``, ``domainvlm ask`` and ``POST /v1/vqa``,
for any domain that answers.

A domain takes part through two plugin hooks: ``vqa_data(root, split)`` reads its questions
(``VQAData``) and ``answer_questions(system, paths, questions, batch_size)`` asks a trained system.
Accuracy is exact match on the domain's normalised answers, overall and per answer type (medical
VQA reports open and closed questions separately), printed beside the majority-answer baseline:
always giving the most frequent training answer already scores about half of VQA-RAD's closed
questions, so a model is worth only its accuracy above that.

Asking (``ask_questions``) uses a third hook, ``rank_answers``, for each answer's probability; a
domain with only ``answer_questions`` answers without one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from domainvlm.core.errors import DomainVLMError
from domainvlm.core.registry import DomainPlugin, VQAData


class VQAEvaluationError(DomainVLMError, ValueError):
    pass


def vqa_accuracy(
    predicted: Sequence[str], answers: Sequence[str], answer_types: Sequence[str]
) -> dict[str, float]:
    """Exact-match accuracy: ``overall``, then one entry per answer type (empty types skipped)."""
    if not len(predicted) == len(answers) == len(answer_types) or not answers:
        raise VQAEvaluationError(
            f"need as many predictions as answers and answer types, and at least one: got "
            f"{len(predicted)}, {len(answers)} and {len(answer_types)}"
        )
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for guess, answer, kind in zip(predicted, answers, answer_types):
        for key in ("overall", kind) if kind else ("overall",):
            correct[key] += guess == answer
            total[key] += 1
    return {key: correct[key] / total[key] for key in total}


def evaluate_vqa(
    system: Any, plugin: DomainPlugin | None, root: Any, split: str, batch_size: int
) -> dict:
    """The system's accuracy on a dataset root's split, and the majority answer's."""
    if plugin is None or plugin.vqa_data is None or plugin.answer_questions is None:
        name = f"domain {plugin.name!r}" if plugin is not None else "this checkpoint's domain"
        raise VQAEvaluationError(
            f"eval vqa needs a domain whose plugin reads questions and asks its systems "
            f"(vqa_data and answer_questions hooks); {name} has none. Pass --domain for a "
            "domain that answers questions (medical)."
        )
    data: VQAData = plugin.vqa_data(root, split)
    if not data.questions:
        raise VQAEvaluationError(f"{root}: the {split!r} split holds no questions")
    predicted = plugin.answer_questions(system, data.paths, data.questions, batch_size)
    majority = [data.majority_answer] * len(data.answers)
    return {
        "task": "vqa",
        "domain": plugin.name,
        "split": split,
        "num_questions": len(data.questions),
        "accuracy": vqa_accuracy(predicted, data.answers, data.answer_types),
        "majority_answer": data.majority_answer,
        "majority_accuracy": vqa_accuracy(majority, data.answers, data.answer_types),
    }


def format_vqa_table(result: dict) -> str:
    """Rows: the model and the majority answer; columns: overall and each answer type."""
    columns = list(result["accuracy"])
    rows = {
        "model": result["accuracy"],
        f"majority answer {result['majority_answer']!r}": result["majority_accuracy"],
    }
    width = max(len(name) for name in rows)
    lines = [
        f"vqa accuracy (percent), {result['split']} split, {result['num_questions']} questions",
        " ".join([f"{'':<{width}}", *(f"{column:>8}" for column in columns)]),
    ]
    for name, accuracy in rows.items():
        cells = (f"{100 * accuracy[c]:>8.1f}" if c in accuracy else f"{'-':>8}" for c in columns)
        lines.append(" ".join([f"{name:<{width}}", *cells]))
    return "\n".join(lines)


def ask_questions(
    system: Any,
    plugin: DomainPlugin | None,
    paths: Sequence[Any],
    questions: Sequence[str],
    top_k: int = 5,
    frame: int | None = None,
) -> list[dict]:
    """One ``{"answer", "probability", "top_k": [{"answer", "probability"}, ...]}`` per
    question (question i about ``paths[i]``), through the domain's hooks."""
    if plugin is None or (plugin.rank_answers is None and plugin.answer_questions is None):
        name = f"domain {plugin.name!r}" if plugin is not None else "this checkpoint's domain"
        raise VQAEvaluationError(
            f"{name} does not answer questions (no rank_answers or answer_questions hook); "
            "questions need a checkpoint of a VQA system (medical: configs/medical/tiny_vqa.yaml "
            "or vqa_rad.yaml), or --domain for the domain that reads it"
        )
    if top_k < 1:
        raise VQAEvaluationError(f"top_k must be at least 1, got {top_k}")
    if plugin.rank_answers is None:
        if frame:
            raise VQAEvaluationError(f"domain {plugin.name!r} cannot pick a frame of a file")
        answers = plugin.answer_questions(system, list(paths), list(questions), 16)
        ranked = [[(answer, None)] for answer in answers]
    else:
        ranked = plugin.rank_answers(system, list(paths), list(questions), top_k, frame)
    return [
        {
            "answer": ranking[0][0],
            "probability": ranking[0][1],
            "top_k": [{"answer": a, "probability": p} for a, p in ranking],
        }
        for ranking in ranked
    ]


def rank_by_softmax(
    logits_fn: Callable[[Any, list[str]], Any],
    load_image: Callable[[Path], Any],
    paths: Sequence[Path],
    questions: Sequence[str],
    classes: Sequence[str],
    top_k: int,
    batch_size: int = 16,
) -> list[list[tuple[str, float]]]:
    """Each question's ``top_k`` answers with their softmax probabilities over ``classes``.

    ``logits_fn(images, questions)`` returns answer logits ``[B, len(classes)]``: the one step in
    which a domain's ``rank_answers`` hook differs from another's.
    """
    import torch

    ranked = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            batch = slice(start, start + batch_size)
            images = torch.stack([load_image(path) for path in paths[batch]])
            logits = logits_fn(images, list(questions[batch]))
            top = logits.float().softmax(-1).topk(min(top_k, len(classes)), dim=-1)
            for values, indices in zip(top.values.tolist(), top.indices.tolist()):
                ranked.append([(classes[i], p) for i, p in zip(indices, values)])
    return ranked
