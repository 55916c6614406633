"""Classify images zero-shot: one JSON line per image with its label and top-k probabilities.

The encoder is a domainvlm checkpoint or an open_clip model:
    domainvlm zeroshot --checkpoint run/last.ckpt --classes "forest,river,airport" a.tif b.png
    domainvlm zeroshot --checkpoint openclip:ViT-B-32:laion2b_s34b_b79k --classes "cat,dog" x.jpg
Video frames are addressed as clip.mp4#t=SECONDS or clip.mp4#frame=N. An image that cannot be
read, or that does not fit the checkpoint's training data (another band count or pixel type: see
--bands and --rescale), gets a JSON line with an "error" field and the exit status becomes 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from domainvlm.core.commands import (
    add_device_argument,
    add_input_arguments,
    add_speed_arguments,
    input_adjustment,
    speed_options,
)

# torch, open_clip, faiss and fastapi are imported inside the functions: the CLI imports every
# command module to build its parser, and `domainvlm --help` should not take seconds.

HELP = "classify images zero-shot against class names"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint path, openclip:<model>[:<tag or file>], hf-hub:<id> or local-dir:<dir>",
    )
    parser.add_argument("--classes", required=True, help='comma-separated class names: "a,b,c"')
    parser.add_argument(
        "--templates",
        help="templates file: JSON list, JSON {lang: [...]} (picked by --lang) or one per line; "
        "{} or {c} is replaced by the class name",
    )
    parser.add_argument(
        "--lang", default="en", help="template language (built-in set, or key of a JSON file)"
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per image")
    parser.add_argument("--batch-size", type=int, default=32)
    add_device_argument(parser)
    add_input_arguments(parser)
    add_speed_arguments(parser)
    parser.add_argument(
        "images", nargs="+", help="image files (any format an installed domain reads)"
    )


def parse_classes(text: str) -> list[str]:
    classes = [name.strip() for name in text.split(",") if name.strip()]
    if not classes:
        raise ValueError(f"--classes {text!r} holds no class names")
    return classes


def run(args: argparse.Namespace) -> int:
    import torch
    from domainvlm.core.commands.evaluate import resolve_domain
    from domainvlm.core.encoder_loader import load_encoder_and_system
    from domainvlm.core.errors import DomainVLMError
    from domainvlm.core.zeroshot import ZeroShotClassifier, load_templates, templates_for

    classes = parse_classes(args.classes)
    encoder, system = load_encoder_and_system(
        args.checkpoint, args.device, input_adjustment(args), **speed_options(args)
    )
    plugin = resolve_domain(None, type(system).__module__ if system is not None else None)
    if args.templates:
        templates = load_templates(args.templates, args.lang)
    elif plugin is not None and plugin.templates is not None:
        templates = plugin.templates(args.lang)
    else:
        templates = templates_for(args.lang)
    classifier = ZeroShotClassifier(encoder, batch_size=args.batch_size)
    failed = False
    for start in range(0, len(args.images), args.batch_size):
        chunk = args.images[start : start + args.batch_size]
        loaded, lines = [], {}
        for path in chunk:
            try:
                loaded.append((path, classifier.encoder.load_image(path)))
            except (DomainVLMError, OSError, ValueError) as exc:
                lines[path] = {"image": path, "error": str(exc)}
                failed = True
        if loaded:
            batch = torch.stack([tensor for _, tensor in loaded])
            predictions = classifier.predict(batch, classes, templates, top_k=args.top_k)
            for (path, _), prediction in zip(loaded, predictions):
                lines[path] = {"image": path, **prediction.to_dict()}
        for path in chunk:
            print(json.dumps(lines[path], ensure_ascii=False))
    sys.stdout.flush()
    return 1 if failed else 0
