"""Evaluate zero-shot classification or image-text retrieval (CLIP_benchmark metric names).

    domainvlm eval zeroshot --checkpoint C --data D [--lang xx|all] [--confusion-matrix cm.png]
    domainvlm eval retrieval --checkpoint C --data D [--table] [--rerank N] [--grid grid.png]
    domainvlm eval vqa --checkpoint C --data D [--table]
    domainvlm eval zeroshot --config configs/remote_sensing/eval/remoteclip.yaml --data D

An eval config is a YAML file of these options (checkpoint, domain, lang, templates, ...), keys
spelt as in Python (batch_size); jsonargparse reads it as it reads fit configs, checking types and
refusing unknown keys. Flags given after --config override it.

--data is a domain dataset root (sample data or your copy of the real dataset; its held-out split
is used) when the domain is known from --domain or from the checkpoint's system. Otherwise, for
zeroshot it is a class-folder dataset (<root>/<class>/<images>, or <root>/<split>/<class>/...),
and for retrieval a JSONL file with one {"image": ..., "caption": ..., "lang": ...} per line
(image paths relative to the file). vqa needs a domain whose plugin answers questions (its
vqa_data and answer_questions hooks; medical: VQA-RAD or SLAKE roots and the sample) and a
checkpoint of a system that answers. Prints one JSON object; --out also writes it to a file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from domainvlm.core.commands import (
    add_device_argument,
    add_input_arguments,
    add_speed_arguments,
    input_adjustment,
    speed_options,
)
from domainvlm.core.commands.config_file import LoadConfig
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.files import atomic_write_json, resolve_within
from domainvlm.core.registry import (
    ENTRY_POINT_GROUP,
    DomainPlugin,
    RetrievalData,
    ZeroShotData,
    broken_domains,
    get_domain,
    load_domains,
)

if TYPE_CHECKING:
    from domainvlm.core.encoder import Encoder
    from torch import Tensor

# torch, open_clip, faiss and fastapi are imported inside the functions: the CLI imports every
# command module to build its parser, and `domainvlm --help` should not take seconds.

HELP = "evaluate zero-shot classification or retrieval on a dataset"

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy")


class EvaluationDataError(DomainVLMError, ValueError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    zeroshot = tasks.add_parser("zeroshot", help="top-1/top-5 accuracy, mean per-class recall")
    retrieval = tasks.add_parser("retrieval", help="image/text recall@1,5,10 and their mean (mR)")
    vqa = tasks.add_parser(
        "vqa", help="question answering accuracy, overall and per answer type, beside the majority"
    )
    for task in (zeroshot, retrieval, vqa):
        add_shared_arguments(task)
        task.add_argument("--domain", help="domain of --data (default: the checkpoint's domain)")
    for task in (zeroshot, retrieval):
        add_input_arguments(task)
        add_speed_arguments(task)
    retrieval.add_argument(
        "--rerank",
        type=int,
        default=0,
        metavar="N",
        help="also report recall with each query's top N re-ranked by the encoder's own pair "
        "scorer (an ITM head; medical checkpoints have one)",
    )
    retrieval.add_argument(
        "--grid",
        type=Path,
        help="write a PNG: text queries spread over the set, each with its top images "
        "(framed green when right, red when wrong; re-ranked order with --rerank)",
    )
    retrieval.add_argument("--grid-queries", type=int, default=8, help="rows of --grid")
    zeroshot.add_argument(
        "--lang",
        default="en",
        help="language of class names and templates, or 'all' for each language of the domain",
    )
    zeroshot.add_argument("--templates", help="templates file (overrides the dataset's templates)")
    zeroshot.add_argument(
        "--class-folders",
        action="store_true",
        help="read --data as class folders even for a domain",
    )
    zeroshot.add_argument("--confusion-matrix", type=Path, help="write a confusion-matrix PNG")
    add_domain_evaluations(tasks)


def add_shared_arguments(task: argparse.ArgumentParser) -> None:
    """The options of every eval task, the domains' own included."""
    task.add_argument(
        "--config", action=LoadConfig, help="YAML file of these options (flags after it win)"
    )
    task.add_argument("--checkpoint", help="checkpoint or openclip:/hf-hub: spec (required)")
    task.add_argument("--data", type=Path, help="dataset root or file (required)")
    task.add_argument("--split", default="test", help="split of a domain dataset root")
    task.add_argument("--batch-size", type=int, default=32)
    add_device_argument(task)
    task.add_argument("--out", type=Path, help="also write the JSON result to this file")
    task.add_argument(
        "--table", action="store_true", help="print a table (per language where there are several)"
    )


def add_domain_evaluations(tasks: argparse._SubParsersAction) -> None:
    """Each installed domain's own eval tasks (``DomainPlugin.evaluations``), with the shared
    options; a name already taken is left to its first owner."""
    for plugin in load_domains().values():
        for name, evaluation in plugin.evaluations.items():
            if name in tasks.choices:
                continue
            task = tasks.add_parser(name, help=f"{evaluation.help} ({plugin.name})")
            add_shared_arguments(task)
            evaluation.add_arguments(task)
            task.set_defaults(domain_evaluation=(plugin.name, name))


def run(args: argparse.Namespace) -> int:
    for required in ("checkpoint", "data"):
        if not getattr(args, required):
            raise EvaluationDataError(f"eval {args.task} needs --{required} (or it in --config)")
    args.data = Path(args.data)
    if getattr(args, "domain_evaluation", None):
        return run_domain_evaluation(args)

    result = evaluate_vqa_checkpoint(args) if args.task == "vqa" else evaluate_encoder(args)
    if args.out:
        atomic_write_json(args.out, result)
    print(format_table(result) if args.table else json.dumps(result, ensure_ascii=False))
    return 0


def evaluate_encoder(args: argparse.Namespace) -> dict:
    """Zero-shot classification or retrieval with the checkpoint's (or spec's) encoder."""
    from domainvlm.core.encoder_loader import load_encoder_and_system

    encoder, system = load_encoder_and_system(
        args.checkpoint, args.device, input_adjustment(args), **speed_options(args)
    )
    plugin = resolve_domain(args.domain, type(system).__module__ if system is not None else None)
    if args.task == "zeroshot" and args.lang == "all":
        return evaluate_zeroshot_all_languages(args, encoder, plugin)
    if args.task == "zeroshot":
        return evaluate_zeroshot(args, encoder, plugin)
    return evaluate_retrieval(args, encoder, plugin)


def evaluate_vqa_checkpoint(args: argparse.Namespace) -> dict:
    """A trained system's answers, asked and scored through its domain's VQA hooks."""
    from domainvlm.core.checkpoint import load_system
    from domainvlm.core.encoder_loader import resolve_device
    from domainvlm.core.vqa import evaluate_vqa

    system = load_system(args.checkpoint).to(resolve_device(args.device))
    plugin = resolve_domain(args.domain, type(system).__module__)
    return evaluate_vqa(system, plugin, args.data, args.split, args.batch_size)


def run_domain_evaluation(args: argparse.Namespace) -> int:
    domain, name = args.domain_evaluation
    evaluation = get_domain(domain).evaluations[name]
    result = evaluation.run(args)
    if args.out:
        atomic_write_json(args.out, result)
    table = args.table and evaluation.format_table is not None
    print(evaluation.format_table(result) if table else json.dumps(result, ensure_ascii=False))
    return 0


def evaluate_zeroshot_all_languages(
    args: argparse.Namespace, encoder: Encoder, plugin: DomainPlugin | None
) -> dict:
    languages = plugin.languages if plugin is not None else ("en",)
    per_language = {}
    for lang in languages:
        options = {**vars(args), "lang": lang}
        if args.confusion_matrix:
            path = Path(args.confusion_matrix)
            options["confusion_matrix"] = path.with_name(f"{path.stem}_{lang}{path.suffix}")
        result = evaluate_zeroshot(argparse.Namespace(**options), encoder, plugin)
        per_language[lang] = {k: v for k, v in result.items() if k not in ("task", "lang", "split")}
    return {
        "task": "zeroshot",
        "lang": "all",
        "split": result["split"],
        "per_language": per_language,
    }


def format_table(result: dict) -> str:
    """Rows of languages (or one row), columns of metrics, as a fixed-width text table."""
    if result["task"] == "vqa":
        from domainvlm.core.vqa import format_vqa_table

        return format_vqa_table(result)
    rows = result.get("per_language") or {result.get("lang", "all"): result}
    if "per_language" in result and result["task"] == "retrieval":
        rows = {"all": result, **result["per_language"]}
    if "reranked" in result:
        rows = {**rows, "rerank": result["reranked"]}
    columns = [
        key
        for key, value in next(iter(rows.values())).items()
        if isinstance(value, float) and key not in ("num_classes", "num_samples")
    ]
    lines = [" ".join([f"{'lang':<6}", *columns])]
    for lang, metrics in rows.items():
        cells = (f"{100 * metrics[column]:>{len(column)}.1f}" for column in columns)
        lines.append(" ".join([f"{lang:<6}", *cells]))
    written = [
        f"{name}: {metrics[name]}"
        for metrics in (result, *result.get("per_language", {}).values())
        for name in ("confusion_matrix", "grid")
        if name in metrics
    ]
    return "\n".join([f"{result['task']} (percent)", *lines, *written])


def resolve_domain(name: str | None, system_module: str | None) -> DomainPlugin | None:
    """``--domain``, else the installed plugin whose package holds the checkpoint's system class."""
    if name:
        return get_domain(name)
    if system_module is None:
        return None
    matches = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        package = _package_of(entry.module)
        if system_module == package or system_module.startswith(package + "."):
            matches.append((len(package), entry))
    if not matches:
        return None
    entry = max(matches, key=lambda match: match[0])[1]
    broken = broken_domains().get(entry.name)
    if broken is not None:
        raise broken.load_error()
    plugin = entry.load()
    return load_domains().get(plugin.name, plugin)


def _package_of(module: str) -> str:
    spec = importlib.util.find_spec(module)
    is_package = spec is not None and spec.submodule_search_locations is not None
    return module if is_package else module.rpartition(".")[0] or module


def evaluate_zeroshot(
    args: argparse.Namespace, encoder: Encoder, plugin: DomainPlugin | None
) -> dict:
    from domainvlm.core.metrics import confusion_matrix, grouped_metrics, zeroshot_metrics
    from domainvlm.core.plots import confusion_matrix_png
    from domainvlm.core.zeroshot import ZeroShotClassifier, load_templates

    if plugin is not None and plugin.zeroshot_data is not None and not args.class_folders:
        if args.lang not in plugin.languages:
            raise EvaluationDataError(
                f"domain {plugin.name!r} has no {args.lang!r} class names; it offers "
                f"{', '.join(plugin.languages)}"
            )
        data, scored = plugin.zeroshot_data(args.data, args.split, args.lang), args.split
    else:
        data, scored = class_folder_data(args.data, args.split, args.lang)
    if args.templates:
        data.templates = load_templates(args.templates, args.lang)
    if not data.paths:
        raise EvaluationDataError(f"dataset {str(args.data)!r} has no images")
    if len(data.classnames) < 2:
        named = f" ({data.classnames[0]!r})" if data.classnames else ""
        raise EvaluationDataError(
            f"{str(args.data)!r} gives {len(data.classnames)} class{named}: zero-shot "
            "classification needs at least two classes to choose between. eval zeroshot expects "
            "class folders (<root>/<class>/<images>, or <root>/<split>/<class>/...) or a domain's "
            "scene-class root; a caption set is scored with `eval retrieval`"
        )
    classifier = ZeroShotClassifier(encoder, batch_size=args.batch_size)
    logits = classifier.logits(data.paths, data.classnames, data.templates)
    result = {"task": "zeroshot", "lang": args.lang, "split": scored}
    result |= zeroshot_metrics(logits, data.labels)
    if data.groups is not None:
        result |= grouped_metrics(logits.argmax(dim=1), data.labels, data.groups)
    if data.protocol:
        result["protocol"] = data.protocol
    if args.confusion_matrix:
        matrix = confusion_matrix(logits.argmax(dim=1), data.labels, len(data.classnames))
        result["confusion_matrix"] = str(
            confusion_matrix_png(matrix, data.classnames, args.confusion_matrix)
        )
    return result


SPLIT_LISTS = ("train", "val", "validation", "test")
"""``<root>/<name>.txt`` files recognised as split lists beside class folders."""


def class_folder_data(root: Path, split: str, lang: str) -> tuple[ZeroShotData, str]:
    """``<root>[/<split>]/<class>/<image>``; folder names are the class names (``_`` → space).

    A ``<root>/<split>.txt`` list (one image per line: a path relative to ``root``, a file name
    or a stem, as EuroSAT's lists) selects the split's images. Returns the data and a note of
    which images were scored, for the result.
    """
    from domainvlm.core.images import domain_readers
    from domainvlm.core.zeroshot import templates_for

    if not root.is_dir():
        raise EvaluationDataError(f"dataset root {str(root)!r} is not a directory")
    base = root / split if (root / split).is_dir() else root
    suffixes = tuple(PIL_SUFFIXES) + tuple(domain_readers())
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for label, folder in enumerate(folders):
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes)
        )
        paths += images
        labels += [label] * len(images)
    if len(folders) < 2 or not paths:
        raise EvaluationDataError(
            f"{str(base)!r} is not a class-folder dataset: it needs at least two class folders "
            f"holding images ({', '.join(PIL_SUFFIXES)} or a domain format). For a domain "
            "dataset root, pass --domain."
        )
    scored = f"{split} (folder {split}/)" if base != root else "all images"
    if base == root:
        paths, labels, scored = _listed_split(root, split, paths, labels)
    classnames = [folder.name.replace("_", " ") for folder in folders]
    return ZeroShotData(paths, labels, classnames, list(templates_for(lang))), scored


def _listed_split(
    root: Path, split: str, paths: list[Path], labels: list[int]
) -> tuple[list[Path], list[int], str]:
    """The images ``<root>/<split>.txt`` names; every image when the root has no split lists."""
    listing = root / f"{split}.txt"
    lists = [name for name in SPLIT_LISTS if (root / f"{name}.txt").is_file()]
    if not listing.is_file():
        if lists:
            raise EvaluationDataError(
                f"{str(root)!r} has split lists ({', '.join(f'{n}.txt' for n in lists)}) but no "
                f"{split}.txt: pass --split {' or --split '.join(lists)}"
            )
        return paths, labels, f"all images (no {split}/ folder or {split}.txt list)"
    keys: dict[str, int] = {}
    for i, path in enumerate(paths):
        for key in (path.relative_to(root).as_posix(), path.name, path.stem):
            keys.setdefault(key, i)
    lines = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()]
    chosen, missing = [], []
    for line in filter(None, lines):
        index = keys.get(line, keys.get(Path(line).name, keys.get(Path(line).stem)))
        if index is None:
            missing.append(line)
        else:
            chosen.append(index)
    if missing:
        raise EvaluationDataError(
            f"{str(listing)!r} lists {len(missing)} image(s) not found in the class folders of "
            f"{str(root)!r}: {', '.join(missing[:3])}"
        )
    return [paths[i] for i in chosen], [labels[i] for i in chosen], f"{split} (list {split}.txt)"


def evaluate_retrieval(
    args: argparse.Namespace, encoder: Encoder, plugin: DomainPlugin | None
) -> dict:
    from domainvlm.core.metrics import RECALL_AT, ranking_metrics, retrieval_metrics
    from domainvlm.core.retrieval import embed_images, embed_texts, rerank

    if plugin is not None and plugin.retrieval_data is not None:
        data = plugin.retrieval_data(args.data, args.split)
    elif args.data.is_file():
        data = jsonl_retrieval_data(args.data)
    else:
        raise EvaluationDataError(
            f"{str(args.data)!r} is neither a JSONL caption file nor the root of a domain with "
            "retrieval data; pass --domain for a domain dataset root"
        )
    if args.rerank and encoder.score_fn is None:
        raise EvaluationDataError(
            f"--rerank needs an encoder that scores image-text pairs itself (an ITM head); "
            f"{encoder.name!r} only embeds"
        )
    image_emb = embed_images(encoder, data.paths, args.batch_size)
    text_emb = embed_texts(encoder, data.captions, args.batch_size)
    result: dict = {"task": "retrieval", "num_images": len(data.paths)}
    result["num_texts"] = len(data.captions)
    result |= retrieval_metrics(image_emb, text_emb, data.image_index)
    languages = sorted({lang for lang in data.languages if lang})
    if languages:
        result["per_language"] = {}
        for lang in languages:
            rows = [i for i, caption_lang in enumerate(data.languages) if caption_lang == lang]
            owners = [data.image_index[i] for i in rows]
            result["per_language"][lang] = retrieval_metrics(image_emb, text_emb[rows], owners)
    if args.rerank:
        rankings = rerank(
            encoder,
            data.paths,
            data.captions,
            image_emb,
            text_emb,
            args.rerank,
            depth=max(RECALL_AT),
            batch_size=args.batch_size,
        )
        result["reranked"] = {"shortlist": args.rerank}
        result["reranked"] |= ranking_metrics(*rankings, data.image_index)
    if args.grid:
        images_per_text = rankings[0] if args.rerank else None
        result["grid"] = str(
            retrieval_grid(args, encoder, data, image_emb, text_emb, images_per_text)
        )
    return result


def retrieval_grid(
    args: argparse.Namespace,
    encoder: Encoder,
    data: RetrievalData,
    image_emb: Tensor,
    text_emb: Tensor,
    images_per_text: Tensor | None,
) -> Path:
    """Queries evenly spaced over the captions (so several images and languages show up)."""
    from domainvlm.core.plots import preview_rgb, retrieval_grid_png

    if args.grid_queries < 1:
        raise EvaluationDataError(f"--grid-queries must be at least 1, got {args.grid_queries}")
    count = min(args.grid_queries, len(data.captions))
    rows = sorted({round(i * (len(data.captions) - 1) / max(count - 1, 1)) for i in range(count)})
    columns = min(5, len(data.paths))
    mean, std = encoder.preprocessing.get("mean"), encoder.preprocessing.get("std")
    if images_per_text is None:
        images_per_text = (text_emb[rows] @ image_emb.T).topk(columns, dim=1).indices
    else:
        images_per_text = images_per_text[rows]
    return retrieval_grid_png(
        [data.captions[row] for row in rows],
        images_per_text[:, :columns].tolist(),
        [{data.image_index[row]} for row in rows],
        lambda index: preview_rgb(encoder.load_image(data.paths[index]), mean, std),
        args.grid,
    )


def jsonl_retrieval_data(path: Path) -> RetrievalData:
    """One caption per line; lines naming the same image share it."""
    images: dict[Path, int] = {}
    captions, owners, languages = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image = resolve_within(path.parent, row["image"])
            caption = row["caption"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise EvaluationDataError(
                f"{str(path)}:{number}: need a JSON object with 'image' (a path inside "
                f"{str(path.parent)!r}) and 'caption': {exc}"
            ) from exc
        captions.append(str(caption))
        owners.append(images.setdefault(image, len(images)))
        languages.append(str(row.get("lang", "")))
    if not captions:
        raise EvaluationDataError(f"{str(path)!r} holds no captions")
    return RetrievalData(list(images), captions, owners, languages)
