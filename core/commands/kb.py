"""Build, search and inspect FAISS knowledge bases (retrieval_db) through any encoder.

    domainvlm kb build --domain remote_sensing --checkpoint C --out DIR
    domainvlm kb build --domain medical --data ROOT --checkpoint C --out DIR
    domainvlm kb build --jsonl items.jsonl --checkpoint C --out DIR
    domainvlm kb search DIR --text "a harbour with boats" -k 5 --filter level=object
    domainvlm kb search DIR --image scene.tif -k 5
    domainvlm kb info DIR
    domainvlm kb add DIR --jsonl more.jsonl
    domainvlm kb delete DIR --id 3 --id 7        (or --filter source=old)
    domainvlm kb reembed DIR --checkpoint NEW [--image-root R] [--out NEWDIR]

`kb build` refuses a directory that already holds a knowledge base (or any other files) unless
--overwrite. `kb add` embeds with the knowledge base's own encoder (rebuilt from the manifest, or
--checkpoint, which must be the same weights); added items are searchable at once and the index is
re-chosen for the new size (`compact`). `kb delete` removes items by id (as `kb search` prints
them) or by filter. `kb reembed` embeds every remaining item again with a retrained encoder, so a
base survives a retrain with the items added since its build; its ids are renumbered 0..n-1 in
their old order.

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
from domainvlm.core.files import check_output_folder, resolve_within
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
    build.add_argument(
        "--overwrite", action="store_true", help="replace a knowledge base already in --out"
    )
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

    add = actions.add_parser("add", help="embed more items into an existing knowledge base")
    add.add_argument("directory", type=Path)
    add.add_argument(
        "--jsonl", required=True, type=Path, help='lines of {"text"|"image": ..., metadata...}'
    )
    add.add_argument("--checkpoint", help="the base's encoder, if the manifest's cannot be loaded")
    add.add_argument("--batch-size", type=int, default=64)
    add_device_argument(add)

    delete = actions.add_parser("delete", help="remove items by id or by metadata filter")
    delete.add_argument("directory", type=Path)
    delete.add_argument("--id", type=int, action="append", default=[], help="an id (repeat)")
    delete.add_argument(
        "--filter", action="append", default=[], help="key=value: delete every matching item"
    )

    reembed = actions.add_parser(
        "reembed", help="embed every item again with a retrained (or another) encoder"
    )
    reembed.add_argument("directory", type=Path)
    reembed.add_argument("--checkpoint", required=True, help="the new encoder")
    reembed.add_argument(
        "--image-root",
        type=Path,
        help="folder the items' relative image paths start from (the JSONL file's folder or the "
        "dataset root the base was built from); needed when the base holds images",
    )
    reembed.add_argument("--out", type=Path, help="write here instead of replacing the base")
    reembed.add_argument("--batch-size", type=int, default=64)
    add_device_argument(reembed)


def run(args: argparse.Namespace) -> int:
    from domainvlm.retrieval_db import KnowledgeBaseError

    try:
        actions = {"build": build, "search": search, "info": info}
        actions |= {"add": add, "delete": delete, "reembed": reembed}
        return actions[args.action](args)
    except KnowledgeBaseError as exc:
        raise KnowledgeBaseCommandError(str(exc)) from exc


def build(args: argparse.Namespace) -> int:
    from domainvlm.core.encoder_loader import load_encoder
    from domainvlm.retrieval_db import KnowledgeBase

    if args.data is not None and not args.domain:
        raise KnowledgeBaseCommandError("--data names a domain's dataset: use it with --domain")
    check_output_directory(args.out, args.overwrite)
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


def check_output_directory(out: Path, overwrite: bool) -> None:
    """Nothing is lost by a build: an existing base (or a folder of other files) is kept unless
    the user says ``--overwrite``; a folder of other files is never mixed with a base."""
    from domainvlm.retrieval_db.manifest import MANIFEST_NAME

    if out.exists() and not out.is_dir():
        raise KnowledgeBaseCommandError(f"--out {str(out)!r} is a file, not a directory")
    if (out / MANIFEST_NAME).is_file():
        if not overwrite:
            raise KnowledgeBaseCommandError(
                f"{str(out)!r} already holds a knowledge base; pass --overwrite to replace it, "
                "`kb add` to add items to it, or another --out"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise KnowledgeBaseCommandError(
            f"{str(out)!r} is not empty and holds no knowledge base; pick an empty or new --out"
        )
    check_output_folder(out)


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
    from domainvlm.core.retrieval import (
        KnowledgeBaseSearch,
        check_filters,
        hit_to_dict,
        parse_filters,
    )
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
    if where:
        check_filters(where, knowledge_base)
    if args.text is not None:
        hits = searcher.search_text(args.text, args.k, where)
    else:
        hits = searcher.search_image(args.image, args.k, where)
    for rank, hit in enumerate(hits, start=1):
        print(json.dumps(hit_to_dict(hit, rank), ensure_ascii=False))
    if not hits:
        print(
            f"domainvlm: warning: no item matches {' '.join(args.filter)} in "
            f"{str(args.directory)!r} ({len(knowledge_base)} items)",
            file=sys.stderr,
        )
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


def add(args: argparse.Namespace) -> int:
    from domainvlm.core.encoder_loader import load_encoder
    from domainvlm.retrieval_db import EncoderMismatchError, KnowledgeBase, read_manifest

    manifest = read_manifest(args.directory)
    records = read_jsonl(args.jsonl)
    encoder = (
        load_encoder(args.checkpoint, args.device)
        if args.checkpoint
        else manifest_encoder(manifest, args.device)
    )
    knowledge_base = KnowledgeBase.load(args.directory, mmap=False)
    vectors = embed_records(encoder, records, args.jsonl, args.batch_size)
    try:
        ids = knowledge_base.add(vectors, records, encoder=encoder.identity())
    except EncoderMismatchError as exc:
        raise KnowledgeBaseCommandError(
            f"{exc} To move the base to a retrained encoder, run `kb reembed` first."
        ) from exc
    knowledge_base.compact()
    saved = knowledge_base.save(args.directory)
    summary = {"added": len(ids), "first_id": int(ids[0]), "last_id": int(ids[-1])}
    print(json.dumps(summary | {"count": saved.count, "index": saved.index.factory}))
    return 0


def delete(args: argparse.Namespace) -> int:
    from domainvlm.core.retrieval import check_filters, parse_filters
    from domainvlm.retrieval_db import KnowledgeBase

    if bool(args.id) == bool(args.filter):
        raise KnowledgeBaseCommandError("kb delete needs --id ... or --filter ..., not both")
    knowledge_base = KnowledgeBase.load(args.directory, mmap=False)
    ids = list(args.id)
    if args.filter:
        where = parse_filters(args.filter)
        check_filters(where, knowledge_base)
        ids = knowledge_base.matching_ids(where).tolist()
    unknown = sorted(set(ids) - set(knowledge_base.ids().tolist()))
    if args.id and unknown:
        raise KnowledgeBaseCommandError(
            f"{str(args.directory)!r} has no item with id {', '.join(map(str, unknown))} "
            f"(ids are those `kb search` prints; {len(knowledge_base)} items)"
        )
    removed = knowledge_base.delete(ids)
    if removed:
        knowledge_base.compact()
    saved = knowledge_base.save(args.directory)
    print(json.dumps({"deleted": removed, "count": saved.count, "index": saved.index.factory}))
    return 0


def reembed(args: argparse.Namespace) -> int:
    """Every live record embedded again with ``--checkpoint``: a fresh index, recall re-measured."""
    from domainvlm.core.encoder_loader import load_encoder
    from domainvlm.retrieval_db import KnowledgeBase, read_manifest

    old = KnowledgeBase.load(args.directory, mmap=False)
    manifest = read_manifest(args.directory)
    records = old.get(old.ids().tolist())
    if not records:
        raise KnowledgeBaseCommandError(f"{str(args.directory)!r} holds no items to re-embed")
    if any("image" in record for record in records) and args.image_root is None:
        raise KnowledgeBaseCommandError(
            f"{str(args.directory)!r} holds images stored by relative path: pass --image-root "
            "(the folder of the JSONL file, or the dataset root, the base was built from)"
        )
    if not all("image" in record or "text" in record for record in records):
        raise KnowledgeBaseCommandError(
            f"{str(args.directory)!r} holds items with neither 'text' nor 'image' (built from "
            "vectors in Python): they cannot be embedded again from the command line"
        )
    encoder = load_encoder(args.checkpoint, args.device)
    vectors = embed_records(encoder, records, None, args.batch_size, args.image_root)
    options = {"index_factory": manifest.index.factory} if manifest.index.forced else {}
    knowledge_base = KnowledgeBase.from_vectors(
        vectors, records, encoder=encoder.identity(), metric=manifest.metric, **options
    )
    saved = knowledge_base.save(args.out or args.directory)
    summary = {"out": str(args.out or args.directory), "count": saved.count}
    summary |= {"index": saved.index.factory, "recall": saved.recall.value}
    print(json.dumps(summary | {"encoder": saved.encoder["name"]}))
    return 0
