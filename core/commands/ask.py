"""Ask a trained visual-question-answering system about images.

    domainvlm ask --checkpoint C --question "is there a fracture?" scan.dcm [more images]
    domainvlm ask --checkpoint C --question "..." --frame 3 cine.dcm     (0-based DICOM frame)

Prints one JSON line per image and question: the answer, its probability (a softmax over the
system's fixed answer vocabulary, so it reads as the model's confidence among the answers it
knows, not as a calibrated clinical probability) and the --top-k best answers. Works for any
domain whose plugin answers questions (medical: a checkpoint of configs/medical/tiny_vqa.yaml,
vqa_rad.yaml or slake.yaml); the domain is found from the checkpoint, or named with --domain.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from domainvlm.core.commands import add_device_argument

HELP = "answer a question about an image with a trained VQA checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a VQA system's checkpoint")
    parser.add_argument(
        "--question", action="append", required=True, help="the question (repeat for several)"
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--top-k", type=int, default=5, help="answers listed per question")
    parser.add_argument(
        "--frame", type=int, help="0-based frame of a multi-frame DICOM (default: the first)"
    )
    parser.add_argument("--domain", help="domain of the checkpoint (default: from its system)")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from domainvlm.core.checkpoint import load_system
    from domainvlm.core.commands.evaluate import resolve_domain
    from domainvlm.core.encoder_loader import resolve_device
    from domainvlm.core.vqa import ask_questions

    system = load_system(args.checkpoint).to(resolve_device(args.device))
    plugin = resolve_domain(args.domain, type(system).__module__)
    pairs = [(image, question) for image in args.images for question in args.question]
    answers = ask_questions(
        system,
        plugin,
        [image for image, _ in pairs],
        [question for _, question in pairs],
        args.top_k,
        args.frame,
    )
    for (image, question), answer in zip(pairs, answers):
        row = {"image": str(image), "question": question, **answer}
        print(json.dumps(row, ensure_ascii=False))
    return 0
