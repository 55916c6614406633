"""Print VQA accuracy (overall / open / closed) of checkpoints beside the majority-answer baseline.

    python -m domainvlm.domains.medical.vqa_report --data data/samples/medical \
        runs/medical/tiny_vqa/checkpoints/last.ckpt [more.ckpt ...] [--format slake] [--json]

The baseline always answers the most frequent training answer: a VQA model is only worth its
accuracy above it (on VQA-RAD-style data "no" alone gets about half of the closed questions).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from domainvlm.core.checkpoint import load_system
from domainvlm.core.errors import DomainVLMError
from domainvlm.domains.medical.datamodule import MedicalVQADataModule
from domainvlm.domains.medical.system import M3AEVQASystem
from domainvlm.domains.medical.text import VQAItem, normalize_answer

ANSWER_TYPES = ("overall", "open", "closed")


def vqa_accuracy(
    system: M3AEVQASystem, items: Sequence[VQAItem], batch_size: int = 64
) -> dict[str, float]:
    """Accuracy per answer type; an answer outside the model's vocabulary counts as wrong."""
    load_image = system.image_loader()
    system.eval()
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        images = torch.stack([load_image(item.image) for item in chunk])
        answers = system.answer(images, [item.question for item in chunk])
        for item, answer in zip(chunk, answers):
            for key in ("overall", item.answer_type):
                correct[key] += answer == normalize_answer(item.answer)
                total[key] += 1
    return {key: correct[key] / total[key] for key in ANSWER_TYPES if total[key]}


def format_rows(rows: dict[str, dict[str, float]]) -> str:
    width = max(len(name) for name in rows)
    lines = [f"{'':<{width}} " + " ".join(f"{key:>8}" for key in ANSWER_TYPES)]
    for name, accuracy in rows.items():
        cells = (
            f"{100 * accuracy[key]:>8.1f}" if key in accuracy else f"{'-':>8}"
            for key in ANSWER_TYPES
        )
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m domainvlm.domains.medical.vqa_report", description=__doc__
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, help="M3AEVQASystem checkpoints")
    parser.add_argument("--data", required=True, help="VQA-RAD / SLAKE root or the medical sample")
    parser.add_argument("--format", default="vqa_rad", choices=("vqa_rad", "slake"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    datamodule = MedicalVQADataModule(root=args.data, format=args.format)
    rows = {}
    try:
        items = datamodule.items(args.split)
        for path in args.checkpoints:
            system = load_system(path)
            if not isinstance(system, M3AEVQASystem):
                parser.error(f"{path} holds a {type(system).__name__}, not an M3AEVQASystem")
            rows[str(path)] = vqa_accuracy(system, items)
    except DomainVLMError as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    majority = f"majority answer ({datamodule.classes()[0]!r})"
    rows[majority] = datamodule.majority_baseline(args.split)
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"VQA accuracy (percent), {args.split} split of {args.data}, {len(items)} questions")
        print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
