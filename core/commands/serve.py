"""Serve zero-shot classification and knowledge-base search over HTTP (FastAPI + uvicorn).

    domainvlm serve --checkpoint C [--kb NAME=DIR ...] [--host 127.0.0.1] [--port 8000] [--token T]

Endpoints: POST /v1/zeroshot (multipart: image, classes), POST /v1/search (multipart: kb, text or
image, k, filter), POST /v1/vqa (multipart: image, question, top_k, frame; for a checkpoint whose
domain answers questions, e.g. a medical VQA checkpoint), GET /v1/health, OpenAPI docs at /docs.
It listens on 127.0.0.1 unless told otherwise. With a token (--token or the DOMAINVLM_TOKEN
environment variable, which keeps it out of the process list) every request needs the header
"Authorization: Bearer <token>", except GET /v1/health (which then answers only
{"status": "ok"}, for load balancers) and the API description (/openapi.json, /docs, /redoc),
which holds no data.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domainvlm.core.commands import (
    add_device_argument,
    add_input_arguments,
    add_speed_arguments,
    input_adjustment,
    speed_options,
)
from domainvlm.core.errors import DomainVLMError

if TYPE_CHECKING:
    from domainvlm.core.service import Answerer

# torch, open_clip, faiss and fastapi are imported inside the functions: the CLI imports every
# command module to build its parser, and `domainvlm --help` should not take seconds.

HELP = "serve zero-shot classification, knowledge-base search and VQA over HTTP"

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeError(DomainVLMError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint or openclip:/hf-hub: spec")
    parser.add_argument(
        "--kb", action="append", default=[], metavar="NAME=DIR", help="serve a knowledge base"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8000)
    add_device_argument(parser)
    add_input_arguments(parser)
    add_speed_arguments(parser)
    parser.add_argument("--token", default=os.environ.get("DOMAINVLM_TOKEN"), help="bearer token")
    parser.add_argument("--max-upload-mb", type=float, help="request body cap (default 20 MiB)")
    parser.add_argument("--max-pixels", type=int, help="image pixel cap (default 40 million)")
    parser.add_argument("--max-classes", type=int, help="class-list cap (default 1000)")
    parser.add_argument(
        "--allow-encoder-mismatch",
        action="store_true",
        help="serve knowledge bases built with a different encoder",
    )


def parse_knowledge_bases(items: list[str]) -> dict[str, Path]:
    bases = {}
    for item in items:
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            raise ServeError(f"--kb {item!r} is not NAME=DIR")
        if name in bases:
            raise ServeError(f"--kb name {name!r} is given twice")
        bases[name] = Path(directory)
    return bases


def question_answerer(system: Any) -> Answerer | None:
    """``ask_questions`` bound to the checkpoint's system when its domain answers questions."""
    from domainvlm.core.commands.evaluate import resolve_domain
    from domainvlm.core.vqa import ask_questions

    if system is None:
        return None
    plugin = resolve_domain(None, type(system).__module__)
    if plugin is None or (plugin.rank_answers is None and plugin.answer_questions is None):
        return None

    def answer(paths: list[str], questions: list[str], top_k: int, frame: int | None) -> list:
        return ask_questions(system, plugin, paths, questions, top_k, frame)

    return answer


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from domainvlm.core.encoder_loader import load_encoder_and_system
    from domainvlm.core.service import ServiceLimits, create_app
    from domainvlm.retrieval_db import KnowledgeBase, KnowledgeBaseError

    encoder, system = load_encoder_and_system(
        args.checkpoint, args.device, input_adjustment(args), **speed_options(args)
    )
    limits = ServiceLimits(
        **{
            name: value
            for name, value in (
                ("max_upload_bytes", args.max_upload_mb and int(args.max_upload_mb * 2**20)),
                ("max_pixels", args.max_pixels),
                ("max_classes", args.max_classes),
            )
            if value is not None
        }
    )
    try:
        knowledge_bases = {
            name: KnowledgeBase.load(directory)
            for name, directory in parse_knowledge_bases(args.kb).items()
        }
        app = create_app(
            encoder,
            knowledge_bases,
            args.token,
            limits,
            args.allow_encoder_mismatch,
            question_answerer(system),
        )
    except KnowledgeBaseError as exc:
        raise ServeError(f"cannot serve the knowledge bases: {exc}") from exc
    if args.host not in LOOPBACK and not args.token:
        print(
            f"domainvlm: warning: serving on {args.host} without a token; anyone who can reach "
            "this port can use the service",
            file=sys.stderr,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
