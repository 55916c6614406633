"""``domainvlm eval closure``: COMICS and ComicsPAP accuracy beside the random baseline.

    domainvlm eval closure --checkpoint C --data ROOT --task text_cloze|visual_cloze|
        char_coherence|sequence_filling|visual_closure|text_closure|caption_relevance|all
        [--benchmark comics|comicspap] [--fold test_easy|test_hard|all] [--table]

``ROOT`` is a COMICS root (``raw_panel_images/`` + ``folds/``), a folder of ComicsPAP records, or a
folder holding ``comics/`` and ``comicspap/`` (the sample). ``char_coherence`` is both a COMICS
and a ComicsPAP task: ``--benchmark`` picks one (default COMICS where ``ROOT`` has COMICS folds,
else ComicsPAP). Every instance goes through the
one API, ``ComicsCLIP.score``; the table follows the published COMICS table (tasks × folds as
columns, models as rows, the paper's NC models for reference).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from domainvlm.core.errors import DomainVLMError
from domainvlm.domains.comics.closure_data import COMICS_TASKS, COMICSPAP_TASKS, ClosureInstance

COMICS_FOLDS = ("test_easy", "test_hard")
PUBLISHED = {
    # Iyyer et al. 2017, NC models (accuracy %): text cloze easy/hard, visual cloze easy/hard,
    # character coherence.
    "published text-only": (63.4, 52.9, 55.9, 48.4, 68.2),
    "published image-only": (51.7, 49.4, 85.7, 63.2, 70.9),
    "published image+text": (68.6, 61.0, 81.3, 59.1, 69.3),
}
PUBLISHED_COLUMNS = (
    ("text_cloze", "test_easy"),
    ("text_cloze", "test_hard"),
    ("visual_cloze", "test_easy"),
    ("visual_cloze", "test_hard"),
    ("char_coherence", "test_easy"),
)


class ClosureTaskError(DomainVLMError, ValueError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", default="all", choices=("all", *dict.fromkeys((*COMICS_TASKS, *COMICSPAP_TASKS)))
    )
    parser.add_argument(
        "--benchmark",
        choices=("comics", "comicspap"),
        help="only this benchmark's tasks (task all), or which char_coherence (default COMICS "
        "where the data has COMICS folds)",
    )
    parser.add_argument("--fold", default="all", help="COMICS fold: test_easy, test_hard or all")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad rows with a warning")


def planned(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(benchmark, task, fold) triples the arguments ask for."""
    root = Path(args.data)
    from domainvlm.domains.comics.books import dataset_roots
    from domainvlm.domains.comics.comicspap import records_files

    has_comics = "comics" in dataset_roots(root)
    has_pap = bool(records_files(root))

    def folds(task: str) -> tuple[str, ...]:
        if args.fold != "all":
            return (args.fold,)
        return ("test_easy",) if task == "char_coherence" else COMICS_FOLDS  # COMICS has one

    plan = []
    if args.task == "all":
        if has_comics and args.benchmark in (None, "comics"):
            plan += [("comics", t, f) for t in COMICS_TASKS for f in folds(t)]
        if has_pap and args.benchmark in (None, "comicspap"):
            plan += [("comicspap", t, args.split) for t in COMICSPAP_TASKS]
    elif (
        args.task in COMICS_TASKS
        and (args.benchmark or ("comics" if has_comics or not has_pap else "comicspap")) == "comics"
    ):
        plan += [("comics", args.task, f) for f in folds(args.task)]
    else:
        plan.append(("comicspap", args.task, args.split))
    if not plan:
        raise ClosureTaskError(f"{root}: holds neither COMICS folds nor ComicsPAP records")
    return plan


def read_instances(
    root: Path, benchmark: str, task: str, fold: str, skip: bool
) -> list[ClosureInstance]:
    from domainvlm.domains.comics.books import dataset_roots
    from domainvlm.domains.comics.comics_folds import fold_path, read_fold
    from domainvlm.domains.comics.comicspap import read_comicspap
    from domainvlm.domains.comics.pages import BadInput

    bad = BadInput(skip)
    if benchmark == "comicspap":
        return read_comicspap(root, task, fold, bad)
    comics_root = dataset_roots(root).get("comics", root)
    if task == "char_coherence" and not fold_path(comics_root, task, fold).is_file():
        fold = "test_easy"  # COMICS has one character-coherence fold
    return read_fold(comics_root, task, fold, bad)


def accuracy(system, instances: list[ClosureInstance]) -> dict:
    """Accuracy of ``system.score`` and the random baseline (mean of 1/|options|)."""
    correct = 0
    for instance in instances:
        logits = system.score(
            instance.context_images,
            instance.options,
            instance.context_texts,
            mask_index=instance.mask_index,
            option_kind=instance.option_kind,
            target_image=instance.target_image,
            target_text=instance.target_text,
        )
        correct += int(int(logits.argmax()) == instance.answer)
    count = len(instances)
    return {
        "num_samples": count,
        "accuracy": correct / count if count else 0.0,
        "random": sum(i.chance for i in instances) / count if count else 0.0,
    }


def run(args: argparse.Namespace) -> dict:
    import torch
    from domainvlm.core.checkpoint import load_system
    from domainvlm.core.encoder_loader import resolve_device

    system = load_system(args.checkpoint).to(resolve_device(args.device))
    if not hasattr(system, "score"):
        raise ClosureTaskError(
            f"checkpoint {args.checkpoint!r} has no closure scorer (not a comics system)"
        )
    rows = []
    with torch.no_grad():
        for benchmark, task, fold in planned(args):
            instances = read_instances(Path(args.data), benchmark, task, fold, args.skip_bad)
            if not instances:
                continue
            rows.append(
                {"benchmark": benchmark, "task": task, "fold": fold, **accuracy(system, instances)}
            )
    return {"task": "closure", "results": rows}


def format_table(result: dict) -> str:
    """COMICS rows as in the paper (models × task/fold columns), then ComicsPAP per task."""
    lines = ["closure accuracy (percent)"]
    comics = {(r["task"], r["fold"]): r for r in result["results"] if r["benchmark"] == "comics"}
    if comics:
        columns = [c for c in PUBLISHED_COLUMNS if c in comics] + [
            c for c in comics if c not in PUBLISHED_COLUMNS
        ]
        names = [f"{task} {fold.removeprefix('test_')}" for task, fold in columns]
        lines.append(" ".join([f"{'COMICS':<22}", *(f"{n:>18}" for n in names)]))
        lines.append(
            " ".join([f"{'n':<22}", *(f"{comics[c]['num_samples']:>18}" for c in columns)])
        )
        for label, key in (("random", "random"), ("this checkpoint", "accuracy")):
            lines.append(
                " ".join([f"{label:<22}", *(f"{100 * comics[c][key]:>18.1f}" for c in columns)])
            )
        for label, values in PUBLISHED.items():
            published = dict(zip(PUBLISHED_COLUMNS, values))
            cells = (f"{published[c]:>18.1f}" if c in published else f"{'':>18}" for c in columns)
            lines.append(" ".join([f"{label:<22}", *cells]))
    pap = [r for r in result["results"] if r["benchmark"] == "comicspap"]
    if pap:
        lines.append(" ".join([f"{'ComicsPAP':<22}", *(f"{r['task']:>18}" for r in pap)]))
        lines.append(" ".join([f"{'n':<22}", *(f"{r['num_samples']:>18}" for r in pap)]))
        for label, key in (("random", "random"), ("this checkpoint", "accuracy")):
            lines.append(" ".join([f"{label:<22}", *(f"{100 * r[key]:>18.1f}" for r in pap)]))
    return "\n".join(lines)
