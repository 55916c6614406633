"""Build, search and inspect FAISS knowledge bases (retrieval_db) through any encoder.

    domainvlm kb build --domain remote_sensing --checkpoint C --out DIR
    domainvlm kb build --domain medical --data ROOT --checkpoint C --out DIR
    domainvlm kb build --jsonl items.jsonl --checkpoint C --out DIR
    domainvlm kb search DIR --text "a harbour with boats" -k 5 --filter level=object
    domainvlm kb search DIR --image scene.tif -k 5
    domainvlm kb info DIR

The recall a build records is measured with held-out queries of the kind users send: a JSONL
file of them (--recall-queries), else the domain's own (e.g. concept names in the prompt templates
for remote sensing, scans for radiology reports), else held-out stored vectors; the manifest's
`recall.query_kind` says which (text, image or stored).

A JSONL line holds "text" or "image" (a path relative to the file) plus any metadata. The knowledge
base records which encoder made its vectors (the hash of its weights and preprocessing, plus the
spec it was loaded from as provenance); `kb search` rebuilds that encoder from the recorded spec
unless --checkpoint is given, accepts any copy of the same weights, and refuses a different encoder
unless --allow-encoder-mismatch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from domainvlm.core.commands import (
    add_device_argument,
    add_input_arguments,
    add_speed_arguments,
    input_adjustment,
    speed_options,
)
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.files import resolve_within
from domainvlm.core.registry import get_domain

if TYPE_CHECKING:
    import numpy as np
    from domainvlm.core.encoder import Encoder
    from domainvlm.retrieval_db import Manifest

# torch, open_clip, faiss and fastapi are imported inside the functions: the CLI imports every
# command module to build its parser, and `domainvlm --help` should not take seconds.

HELP = "build, search and inspect knowledge bases"


class KnowledgeBaseCommandError(DomainVLMError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="embed a domain's knowledge source or a JSONL file")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--domain", help="use this domain's knowledge source")
    source.add_argument("--jsonl", type=Path, help='lines of {"text"|"image": ..., metadata...}')
    build.add_argument(
        "--data", type=Path, help="dataset root, for a domain whose knowledge is its data's texts"
    )
    build.add_argument("--checkpoint", required=True, help="checkpoint or openclip:/hf-hub: spec")
    build.add_argument("--out", required=True, type=Path, help="knowledge-base directory")
    build.add_argument("--batch-size", type=int, default=64)
    add_device_argument(build)
    add_input_arguments(build)
    add_speed_arguments(build)
    build.add_argument("--index-factory", help="force a FAISS factory string (default: by size)")
    build.add_argument(
        "--recall-queries",
        type=Path,
        help='JSONL of held-out queries of the kind users will send ({"text"|"image": ...}, all '
        "one kind): they tune the index and measure the recall recorded (default: the domain's "
        "own queries when it has them, else held-out stored vectors)",
    )

    search = actions.add_parser("search", help="print the best matches as JSON lines")
    search.add_argument("directory", type=Path)
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query")
    query.add_argument("--image", help="image query (any format an installed domain reads)")
    search.add_argument("-k", type=int, default=5, help="number of results")
    search.add_argument(
        "--filter", action="append", default=[], help="key=value (repeat a key for any-of)"
    )
    search.add_argument("--checkpoint", help="encoder to use instead of the manifest's")
    add_device_argument(search)
    search.add_argument(
        "--allow-encoder-mismatch",
        action="store_true",
        help="search even if the encoder differs from the one that built the knowledge base",
    )

    info = actions.add_parser("info", help="print the manifest: size, index, recall, encoder")
    info.add_argument("directory", type=Path)


def run(args: argparse.Namespace) -> int:
    from domainvlm.retrieval_db import KnowledgeBaseError

    try:
        return {"build": build, "search": search, "info": info}[args.action](args)
    except KnowledgeBaseError as exc:
        raise KnowledgeBaseCommandError(str(exc)) from exc


def build(args: argparse.Namespace) -> int:
    from domainvlm.core.encoder_loader import load_encoder
    from domainvlm.retrieval_db import KnowledgeBase

    if args.data is not None and not args.domain:
        raise KnowledgeBaseCommandError("--data names a domain's dataset: use it with --domain")
    records = domain_records(args.domain, args.data) if args.domain else read_jsonl(args.jsonl)
    queries = recall_query_records(args)
    encoder = load_encoder(
        args.checkpoint, args.device, input_adjustment(args), **speed_options(args)
    )
    vectors = embed_records(encoder, records, args.jsonl, args.batch_size, args.data)
    recall_options = {}
    if queries is not None:
        recall_options = {
            "recall_queries": embed_records(
                encoder, queries, args.recall_queries, args.batch_size, args.data
            ),
            "recall_query_kind": "image" if "image" in queries[0] else "text",
        }
    knowledge_base = KnowledgeBase.from_vectors(
        vectors,
        records,
        encoder=encoder.identity(),
        index_factory=args.index_factory,
        **recall_options,
    )
    manifest = knowledge_base.save(args.out)
    if encoder.name.startswith("openclip:") and encoder.name.count(":") == 1:
        print(
            f"domainvlm: warning: {encoder.name!r} has random weights, so `kb search` cannot "
            "rebuild it from the manifest; save the weights and build with "
            f"{encoder.name}:<weights file>, or search with --checkpoint",
            file=sys.stderr,
        )
    summary = {"out": str(args.out), "count": manifest.count, "index": manifest.index.factory}
    summary |= {"recall": manifest.recall.value, "recall_queries": manifest.recall.query_kind}
    summary |= {"encoder": manifest.encoder["name"]}
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def domain_records(name: str, data: Path | None) -> list[dict]:
    """The domain's fixed knowledge, or the knowledge it reads from the dataset at ``data``."""
    plugin = get_domain(name)
    if data is not None:
        if plugin.knowledge_from_data is None:
            raise KnowledgeBaseCommandError(
                f"domain {plugin.name!r} builds its knowledge base from no dataset; drop --data"
            )
        return plugin.knowledge_from_data(data)
    if plugin.knowledge_source is not None:
        return plugin.knowledge_source()
    if plugin.knowledge_from_data is not None:
        raise KnowledgeBaseCommandError(
            f"domain {plugin.name!r} builds its knowledge base from a dataset's texts: pass "
            "--data ROOT (its dataset root, e.g. the folder `domainvlm sample-data` wrote)"
        )
    raise KnowledgeBaseCommandError(f"domain {plugin.name!r} has no knowledge source")


def recall_query_records(args: argparse.Namespace) -> list[dict] | None:
    """Held-out queries for the recall a build records: ``--recall-queries``, else the domain's
    ``knowledge_queries`` (``None``: held-out stored vectors stand in). A seeded sample of at
    most as many as the index tunes and measures with, so no more are embedded."""
    import random

    from domainvlm.retrieval_db.index import TUNING_QUERIES

    if args.recall_queries is not None:
        queries, where = read_jsonl(args.recall_queries), str(args.recall_queries)
    elif args.domain and get_domain(args.domain).knowledge_queries is not None:
        queries = get_domain(args.domain).knowledge_queries(args.data)
        where = f"domain {args.domain!r}'s knowledge queries"
    else:
        return None
    kinds = {"image" if "image" in query else "text" for query in queries}
    if len(kinds) != 1 or len(queries) < 2:
        raise KnowledgeBaseCommandError(
            f"{where}: recall queries must be at least 2, all texts or all images (the recall "
            f"is recorded for one kind of query); got {len(queries)} of kinds {sorted(kinds)}"
        )
    if len(queries) > 2 * TUNING_QUERIES:
        queries = random.Random(0).sample(queries, 2 * TUNING_QUERIES)
    return queries


def read_jsonl(path: Path) -> list[dict]:
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseCommandError(f"cannot read {str(path)!r}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KnowledgeBaseCommandError(f"{path}:{number}: not valid JSON: {exc}") from exc
        if not isinstance(record, dict) or ("text" in record) == ("image" in record):
            raise KnowledgeBaseCommandError(
                f"{path}:{number}: each line must be a JSON object with exactly one of 'text' "
                "and 'image', plus any metadata"
            )
        records.append(record)
    if not records:
        raise KnowledgeBaseCommandError(f"{str(path)!r} holds no records")
    return records


def embed_records(
    encoder: Encoder,
    records: list[dict],
    jsonl: Path | None,
    batch_size: int,
    data: Path | None = None,
) -> np.ndarray:
    """Texts and images embedded in their own batches, returned in record order.

    Image paths are relative to the JSONL file, or to the dataset root ``data`` for domain records.
    """
    import numpy as np
    from domainvlm.core.retrieval import embed_images, embed_texts

    vectors: list[np.ndarray | None] = [None] * len(records)
    texts = [i for i, record in enumerate(records) if "image" not in record]
    images = [i for i, record in enumerate(records) if "image" in record]
    if texts:
        if not all(isinstance(records[i].get("text"), str) for i in texts):
            raise KnowledgeBaseCommandError("every knowledge record needs a 'text' string")
        embedded = embed_texts(encoder, [records[i]["text"] for i in texts], batch_size)
        for i, row in zip(texts, embedded.numpy()):
            vectors[i] = row
    if images:
        base = jsonl.parent if jsonl is not None else data if data is not None else Path.cwd()
        try:
            paths = [resolve_within(base, records[i]["image"]) for i in images]
        except (TypeError, ValueError) as exc:
            raise KnowledgeBaseCommandError(
                f"bad image path in {str(jsonl or data)!r}: {exc}"
            ) from exc
        for i, row in zip(images, embed_images(encoder, paths, batch_size).numpy()):
            vectors[i] = row
    return np.stack(vectors)


def search(args: argparse.Namespace) -> int:
    from domainvlm.core.encoder_loader import load_encoder
    from domainvlm.core.retrieval import KnowledgeBaseSearch, hit_to_dict, parse_filters
    from domainvlm.retrieval_db import EncoderMismatchError, KnowledgeBase, read_manifest

    manifest = read_manifest(args.directory)
    encoder = (
        load_encoder(args.checkpoint, args.device)
        if args.checkpoint
        else manifest_encoder(manifest, args.device)
    )
    knowledge_base = KnowledgeBase.load(args.directory)
    try:
        searcher = KnowledgeBaseSearch(encoder, knowledge_base, args.allow_encoder_mismatch)
    except EncoderMismatchError as exc:
        raise KnowledgeBaseCommandError(f"{exc} (--allow-encoder-mismatch)") from exc
    where = parse_filters(args.filter)
    if args.text is not None:
        hits = searcher.search_text(args.text, args.k, where)
    else:
        hits = searcher.search_image(args.image, args.k, where)
    for rank, hit in enumerate(hits, start=1):
        print(json.dumps(hit_to_dict(hit, rank), ensure_ascii=False))
    return 0


def manifest_encoder(manifest: Manifest, device: str = "cpu") -> Encoder:
    from domainvlm.core.encoder_loader import load_encoder

    name = manifest.encoder["name"]
    try:
        return load_encoder(name, device)
    except (DomainVLMError, ValueError, OSError) as exc:
        raise KnowledgeBaseCommandError(
            f"cannot rebuild the knowledge base's encoder {name!r} here ({exc}); pass "
            "--checkpoint: any copy of the same weights is accepted (sha256 "
            f"{manifest.encoder['sha256'][:12]}…)"
        ) from exc


def info(args: argparse.Namespace) -> int:
    from domainvlm.retrieval_db import read_manifest

    manifest = read_manifest(args.directory)
    print(json.dumps(dataclasses.asdict(manifest), ensure_ascii=False, indent=2, sort_keys=True))
    return 0
