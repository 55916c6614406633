"""``domainvlm eval speakers|characters|order``: comics grounding on held-out pages, each metric
beside its chance level and its baseline.

    domainvlm eval speakers --checkpoint GROUNDING --data ROOT [--threshold T] [--no-pixels]
    domainvlm eval order --checkpoint GROUNDING --data ROOT
    domainvlm eval characters --checkpoint COMICS_CLIP --data ROOT [--threshold T]
        [--name-threshold T] [--bank DIR|JSON] [--bank-crops K] [--leave-out N]
        [--write-thresholds FILE]

``speakers``: precision / recall / F1 of (text, character) links (``speakers`` module) for the
learned scorer, the nearest-character baseline and a random speaker among the page's characters.
``order``: exact-page accuracy and mean Kendall τ of panels and of texts per page, learned vs the
rule, beside a random permutation. ``characters``: each held-out book's crops are clustered on
their own (re-identification across its pages), scored by AMI (random labels ≈ 0, and measured
with the predicted labels shuffled; beside it the same clustering of raw 8×8 colour thumbnails,
a no-learning baseline); crops are named from a bank (by default the first K crops of
each character in the training books, leaving out the last N names alphabetically, whose crops
must be called "other"), scored by accuracy beside always answering "other" and a uniform guess.
Thresholds not given are chosen on the ``val`` books (the best of a grid), else 0.5;
``--write-thresholds FILE`` saves the two for ``comics predict --thresholds FILE``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from domainvlm.core.errors import DomainVLMError

GRID = [round(0.05 * i, 2) for i in range(1, 20)]


class GroundingEvaluationError(DomainVLMError, ValueError):
    pass


def add_speaker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold", type=float, help="association threshold (default: the checkpoint's)"
    )
    parser.add_argument(
        "--no-pixels", action="store_true", help="boxes only (no balloon-tail features)"
    )
    add_jitter_argument(parser)


def add_jitter_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        help="move each box side by up to this fraction of its size (seeded), as a detector would",
    )


def add_order_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-bad", action="store_true", help="skip bad pages with a warning")
    add_jitter_argument(parser)


def add_character_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, help="clustering cut (cosine distance)")
    parser.add_argument("--name-threshold", type=float, help="naming: least cosine similarity")
    parser.add_argument(
        "--bank", type=Path, help="character bank: folder <name>/*.png or JSON list"
    )
    parser.add_argument(
        "--bank-crops", type=int, default=3, help="crops per name in the default bank"
    )
    parser.add_argument(
        "--leave-out", type=int, default=2, help="names left out of the default bank"
    )
    parser.add_argument(
        "--write-thresholds",
        type=Path,
        metavar="FILE",
        help="write the cut and naming thresholds used (chosen on the val books unless given) "
        "to this JSON file, for `domainvlm comics predict --thresholds FILE`",
    )


# -- speakers ------------------------------------------------------------------------------------


def run_speakers(args: argparse.Namespace) -> dict:
    import random

    from domainvlm.domains.comics import speakers as sp
    from domainvlm.domains.comics.books import load_books
    from domainvlm.domains.comics.grounding_data import jitter_boxes
    from domainvlm.domains.comics.grounding_system import load_grounding_system
    from domainvlm.domains.comics.pages import read_crop

    system = load_grounding_system(args.checkpoint)
    scorer = system.speaker_scorer
    threshold = args.threshold if args.threshold is not None else float(system.hparams.threshold)
    counts = {"learned": [0, 0, 0], "nearest": [0, 0, 0], "random": [0.0, 0, 0]}
    pages = texts_seen = 0
    rng = random.Random(0)
    for book in load_books(args.data, args.split):
        for page in book.pages:
            if not any(t.speaker is not None for t, _ in sp.page_texts(page)):
                continue  # no speaker annotation on this page
            texts, characters, panels = sp.page_inputs(page)
            gold = sp.annotated_links(page)  # indexes: jittered boxes keep their places
            texts, characters, panels = (
                jitter_boxes(boxes, args.jitter, rng) for boxes in (texts, characters, panels)
            )
            image = None if args.no_pixels else read_crop(page.image)
            predictions = {
                "learned": sp.associate_speakers(
                    texts, characters, image, scorer, threshold, panels
                ),
                "nearest": sp.associate_speakers(texts, characters),
            }
            for name, links in predictions.items():
                _add(counts[name], sp.count_links(links, gold))
            _add(counts["random"], sp.chance_counts(len(texts), len(characters), len(gold)))
            pages += 1
            texts_seen += len(texts)
    if not pages:
        raise GroundingEvaluationError(f"{args.data}: no {args.split!r} page has speaker links")
    result = {"task": "speakers", "split": args.split, "pages": pages, "texts": texts_seen}
    result["annotated_links"] = counts["learned"][2]
    result["threshold"] = threshold
    result["jitter"] = args.jitter
    for name, (hits, predicted, annotated) in counts.items():
        result[name] = sp.link_metrics(hits, predicted, annotated)
    return result


def _add(total: list, counts: tuple) -> None:
    for i, value in enumerate(counts):
        total[i] += value


def format_speakers(result: dict) -> str:
    lines = [
        f"speaker association, {result['pages']} pages, {result['annotated_links']} links "
        f"(threshold {result['threshold']:.2f}, box jitter {result.get('jitter', 0.0):g})",
        f"{'':24}{'precision':>10}{'recall':>10}{'F1':>10}",
    ]
    for name, label in (
        ("learned", "learned scorer"),
        ("nearest", "nearest character"),
        ("random", "random (chance)"),
    ):
        row = result[name]
        lines.append(
            f"{label:24}{100 * row['precision']:10.1f}{100 * row['recall']:10.1f}{100 * row['f1']:10.1f}"
        )
    return "\n".join(lines)


# -- order ---------------------------------------------------------------------------------------


def run_order(args: argparse.Namespace) -> dict:
    import random

    from domainvlm.domains.comics.books import load_books
    from domainvlm.domains.comics.grounding_data import jitter_boxes
    from domainvlm.domains.comics.grounding_system import load_grounding
    from domainvlm.domains.comics.order import (
        annotated_orders,
        chance_levels,
        kendall_tau,
        order_boxes,
    )
    from domainvlm.domains.comics.pages import BadInput

    _, scorer = load_grounding(args.checkpoint)
    listed = annotated_orders(args.data)
    result: dict = {"task": "order", "split": args.split, "jitter": args.jitter}
    rng = random.Random(0)
    scores = {kind: {"learned": [], "rule": []} for kind in ("panels", "texts")}
    sizes: dict[str, list[int]] = {"panels": [], "texts": []}
    for book in load_books(args.data, args.split, skip_bad=BadInput(args.skip_bad)):
        for page in book.pages:
            for kind, boxes in listed.get(page.image.resolve(), {}).items():
                if len(boxes) < 2:
                    continue
                truth = list(range(len(boxes)))
                boxes = jitter_boxes(boxes, args.jitter, rng)
                sizes[kind].append(len(boxes))
                for name, model in (("learned", scorer), ("rule", None)):
                    order = order_boxes(boxes, book.direction, model)
                    scores[kind][name].append((order == truth, kendall_tau(order, truth)))
    if not sizes["panels"] and not sizes["texts"]:
        raise GroundingEvaluationError(f"{args.data}: no {args.split!r} page lists two boxes")
    for kind, by_model in scores.items():
        if not sizes[kind]:
            continue
        row: dict = {"pages": len(sizes[kind]), "random": chance_levels(sizes[kind])}
        for name, values in by_model.items():
            row[name] = {
                "exact": sum(e for e, _ in values) / len(values),
                "kendall_tau": sum(t for _, t in values) / len(values),
            }
        result[kind] = row
    return result


def format_order(result: dict) -> str:
    lines = [
        f"reading order ({result['split']} pages, box jitter {result.get('jitter', 0.0):g})",
        f"{'':22}{'exact %':>10}{'Kendall τ':>11}",
    ]
    for kind in ("panels", "texts"):
        if kind not in result:
            continue
        row = result[kind]
        lines.append(f"{kind} ({row['pages']} pages)")
        for name, label in (
            ("learned", "learned"),
            ("rule", "rule"),
            ("random", "random (chance)"),
        ):
            values = row[name]
            lines.append(f"  {label:20}{100 * values['exact']:10.1f}{values['kendall_tau']:11.3f}")
    return "\n".join(lines)


# -- characters ----------------------------------------------------------------------------------


def run_characters(args: argparse.Namespace) -> dict:
    import numpy as np
    from domainvlm.core.checkpoint import load_system
    from domainvlm.core.encoder_loader import resolve_device
    from domainvlm.domains.comics import characters as ch
    from domainvlm.domains.comics.books import load_books
    from domainvlm.domains.comics.pages import read_splits

    system = load_system(args.checkpoint).to(resolve_device(args.device))
    try:
        system.encoder()
    except NotImplementedError as exc:
        raise GroundingEvaluationError(
            f"checkpoint {args.checkpoint!r} holds a {type(system).__name__}, which has no image "
            "embedding: eval characters needs a comics CLIP checkpoint (configs/comics/tiny.yaml)"
        ) from exc

    def embedded_books(split: str) -> tuple[list, list]:
        """(title, CLIP embeddings, names) and (title, thumbnail vectors, names) per book."""
        clip, pixels = [], []
        for book in load_books(args.data, split):
            crops = ch.book_crops(book)
            if len(crops) >= 2:
                addresses, names = [c[0] for c in crops], [c[2] for c in crops]
                clip.append((book.title, ch.embed_crops(system, addresses, args.batch_size), names))
                pixels.append((book.title, ch.thumbnail_embeddings(addresses), names))
        return clip, pixels

    held_out, held_out_pixels = embedded_books(args.split)
    if not held_out:
        raise GroundingEvaluationError(f"{args.data}: no {args.split!r} book has character boxes")
    has_val = args.split != "val" and read_splits(Path(args.data))
    tuning, tuning_pixels = embedded_books("val") if has_val else ([], [])
    untuned = [flag for flag in ("threshold", "name_threshold") if getattr(args, flag) is None]
    if args.write_thresholds is not None and untuned and not tuning:
        raise GroundingEvaluationError(
            f"--write-thresholds {args.write_thresholds}: no val books of {args.data} (besides "
            f"the {args.split!r} books evaluated) to choose "
            f"{' and '.join('--' + flag.replace('_', '-') for flag in untuned)} on; give them"
        )
    bank_names, bank_vectors, left_out = _bank(args, system, ch, load_books)

    def ami(books: list, threshold: float) -> list[float]:
        return [
            ch.adjusted_mutual_information(names, ch.cluster_characters(v, threshold))
            for _, v, names in books
        ]

    def naming(books: list, threshold: float, name_threshold: float) -> tuple[int, int]:
        right = total = 0
        for _, vectors, names in books:
            labels = ch.cluster_characters(vectors, threshold)
            guessed = ch.name_clusters(vectors, labels, bank_vectors, bank_names, name_threshold)
            truth = [n if n in bank_names else ch.OTHER for n in names]
            right += sum(g == t for g, t in zip(guessed, truth))
            total += len(names)
        return right, total

    threshold = args.threshold
    if threshold is None:
        threshold = max(GRID, key=lambda t: np.mean(ami(tuning, t))) if tuning else 0.5
    pixel_threshold = (
        max(GRID, key=lambda t: np.mean(ami(tuning_pixels, t))) if tuning_pixels else threshold
    )
    name_threshold = args.name_threshold
    if name_threshold is None:
        name_threshold = max(GRID, key=lambda t: naming(tuning, threshold, t)[0]) if tuning else 0.5
    scores = ami(held_out, threshold)
    rng = np.random.default_rng(0)
    shuffled = [
        ch.adjusted_mutual_information(names, rng.permutation(ch.cluster_characters(v, threshold)))
        for _, v, names in held_out
    ]
    right, total = naming(held_out, threshold, name_threshold)
    truth = [n if n in bank_names else ch.OTHER for _, _, names in held_out for n in names]
    if args.write_thresholds is not None:
        from domainvlm.domains.comics.character_thresholds import write_thresholds

        given, tuned = "given to eval characters", f"chosen on the val books of {args.data}"
        write_thresholds(
            args.write_thresholds,
            (threshold, given if args.threshold is not None else tuned),
            (name_threshold, given if args.name_threshold is not None else tuned),
            args.checkpoint,
            args.data,
        )
    return {
        "task": "characters",
        "split": args.split,
        "books": len(held_out),
        "crops": sum(len(names) for _, _, names in held_out),
        "threshold": threshold,
        "name_threshold": name_threshold,
        "thresholds_from": ", ".join(
            f"{what} {'given' if given is not None else 'from val books' if tuning else 'default'}"
            for what, given in (("cut", args.threshold), ("naming", args.name_threshold))
        ),
        "ami": float(np.mean(scores)),
        "ami_per_book": {title: s for (title, _, _), s in zip(held_out, scores)},
        "ami_shuffled": float(np.mean(shuffled)),
        "ami_chance": 0.0,
        "ami_pixels": float(np.mean(ami(held_out_pixels, pixel_threshold))),
        "pixels_threshold": pixel_threshold,
        "bank_names": sorted(set(bank_names)),
        "left_out": left_out,
        "naming_accuracy": right / total,
        "naming_always_other": sum(t == ch.OTHER for t in truth) / len(truth),
        "naming_uniform": 1 / (len(set(bank_names)) + 1),
        "thresholds_file": str(args.write_thresholds) if args.write_thresholds else None,
    }


def _bank(args, system, ch, load_books) -> tuple[list[str], object, list[str]]:
    """(names, unit embeddings, names left out) of the given bank or the training books' one."""
    if args.bank is not None:
        entries = ch.load_bank(args.bank)
        left_out: list[str] = []
    else:
        per_name: dict[str, list[str]] = {}
        for book in load_books(args.data, "train"):
            for address, _, name in ch.book_crops(book):
                if len(per_name.setdefault(name, [])) < args.bank_crops:
                    per_name[name].append(address)
        if not per_name:
            raise GroundingEvaluationError(
                f"{args.data}: no training book has character boxes for a bank"
            )
        names = sorted(per_name)
        left_out = (
            names[len(names) - min(args.leave_out, len(names) - 1) :] if args.leave_out else []
        )
        entries = [(n, a) for n in names if n not in left_out for a in per_name[n]]
    vectors = ch.embed_crops(system, [a for _, a in entries], args.batch_size)
    return [n for n, _ in entries], vectors, left_out


def format_characters(result: dict) -> str:
    return "\n".join(
        [
            f"character clustering, {result['books']} books, {result['crops']} crops "
            f"(cut {result['threshold']:.2f}, {result['thresholds_from']})",
            f"  AMI {result['ami']:.3f}   shuffled labels {result['ami_shuffled']:.3f}   chance 0   "
            f"raw-pixel thumbnails {result['ami_pixels']:.3f} (cut {result['pixels_threshold']:.2f})",
            f"naming from a bank of {len(result['bank_names'])} names "
            f"(left out: {', '.join(result['left_out']) or 'none'}; least similarity "
            f"{result['name_threshold']:.2f})",
            f"  accuracy {100 * result['naming_accuracy']:.1f} %   always 'other' "
            f"{100 * result['naming_always_other']:.1f} %   uniform guess "
            f"{100 * result['naming_uniform']:.1f} %",
            *(
                [f"thresholds written to {result['thresholds_file']} (comics predict --thresholds)"]
                if result.get("thresholds_file")
                else []
            ),
        ]
    )
