"""``domainvlm comics predict``: LoCU layer 2 on a folder of pages, the outputs comics users get
from Magi, written per page and for the whole set.

    domainvlm comics predict --pages DIR_OR_DATA_ROOT --out OUT [--detector C] [--grounding C]
        [--checkpoint CLIP_C] [--bank DIR] [--thresholds FILE] [--direction ltr|rtl] [--split test]

``--pages`` is a folder of page images (``*.jpg``, ``*.png``, ...; each subfolder of pages is one
more book), or a comics dataset root (Manga109, CoMix, or the sample) whose annotations then
supply what no model is given for. Each part is predicted when its model is given, else read
from the annotations, else left to a rule; every page's JSON says which (``sources``):

- boxes (panels, texts, characters, faces, balloons): ``--detector``, else the annotations (a
  plain folder of pages then needs ``--detector``);
- speakers: ``--grounding``'s speaker scorer, else the annotated links, else the rule baseline;
- reading order: ``--grounding``'s order scorer, else the rule (rows, then ``--direction``);
- character clusters, across all pages of a book (a chapter), not per page: ``--checkpoint``'s
  image embeddings of the character crops, else the annotated identities; names come from
  ``--bank`` (example crops per name, "other" when nothing fits) or the annotations; the
  cluster and naming cuts come from their flags, else ``--thresholds`` (the file ``eval
  characters --write-thresholds`` writes), else 0.5, and the command says which (on stderr and
  in the summary's ``character_thresholds``);
- text: the annotation's transcription (a detected text box takes the text of the annotated box
  it overlaps by IoU >= 0.5); no OCR engine is used, so other texts read ``[text N]`` (N: the
  text's index on the page).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from domainvlm.core.errors import CheckpointError, DomainVLMError
from domainvlm.core.files import check_output_folder
from domainvlm.domains.comics.books import PAGE_FORMATS, dataset_roots, load_books
from domainvlm.domains.comics.character_thresholds import (
    DEFAULT_CLUSTER_THRESHOLD,
    DEFAULT_NAME_THRESHOLD,
    CharacterThresholds,
    checkpoint_key,
    resolve_thresholds,
)
from domainvlm.domains.comics.pages import (
    Box,
    Direction,
    crop_address,
    overlap_fraction,
    reading_order,
    split_crop,
)
from domainvlm.domains.comics.predict_inputs import (
    CLASSES,
    PageSource,
    PredictInputError,
    annotated_boxes,
    find_pages,
    read_page,
    text_contents,
)

HELP = "detect, ground and transcribe a folder of comic pages (Magi-like JSON, COCO, pictures)"


@dataclass
class PagePrediction:
    source: PageSource
    width: int
    height: int
    boxes: dict[str, list[Box]]
    scores: dict[str, list[float]]
    texts: list[str]
    associations: list[tuple[int, int]]
    panel_order: list[int]
    text_order: list[int]
    sources: dict[str, str]
    identities: list[str] = field(default_factory=list)
    """Annotated character id of each character (annotation boxes only)."""
    embeddings: Any = None
    """``[characters, D]`` image embeddings of the character crops (with ``--checkpoint``)."""
    cluster_labels: list[int] | None = None
    character_names: list[str] | None = None


@dataclass
class Models:
    """What the options load; ``None`` where the option was not given."""

    detector: Any = None
    speaker_scorer: Any = None
    order_scorer: Any = None
    encoder: Any = None
    bank: tuple[Any, list[str]] | None = None
    association_threshold: float = 0.4
    thresholds: CharacterThresholds = field(default_factory=CharacterThresholds)
    """The cluster and naming cuts, each with where it came from (flag, file or default)."""


# -- order ---------------------------------------------------------------------------------------


def order_boxes(boxes: list[Box], direction: Direction, scorer: Any = None) -> list[int]:
    """The learned order with a scorer (``--grounding``), else the rule."""
    if scorer is None or len(boxes) < 2:
        return reading_order(boxes, direction)
    from domainvlm.domains.comics.order import order_boxes as learned_order

    return [int(i) for i in learned_order(boxes, direction, scorer=scorer)]


def text_reading_order(
    texts: list[Box], panels: list[Box], panel_order: list[int], direction: Direction, scorer: Any
) -> list[int]:
    """Texts panel by panel in the panels' reading order, each panel's texts in their own order;
    texts outside every panel (gutter captions) come last."""
    groups: dict[int, list[int]] = defaultdict(list)
    for t, box in enumerate(texts):
        overlaps = [overlap_fraction(box, panel) for panel in panels]
        best = int(np.argmax(overlaps)) if overlaps and max(overlaps) > 0 else -1
        groups[best].append(t)
    order = []
    for p in [*panel_order, -1]:
        members = groups.get(p, [])
        order += [members[i] for i in order_boxes([texts[m] for m in members], direction, scorer)]
    return order


# -- one page ------------------------------------------------------------------------------------


def predict_page(source: PageSource, models: Models) -> PagePrediction:
    """Boxes, speakers, order and text of one page (characters are embedded and clustered later,
    across its book)."""
    image = read_page(source)
    height, width = image.shape[:2]
    sources: dict[str, str] = {}
    identities: list[str] = []
    links: list[tuple] = []
    if models.detector is not None:
        boxes: dict[str, list[Box]] = {name: [] for name in CLASSES}
        scores: dict[str, list[float]] = {name: [] for name in CLASSES}
        for detection in models.detector.detect(image):
            if detection.label in boxes:
                boxes[detection.label].append(tuple(float(v) for v in detection.box))
                scores[detection.label].append(float(detection.score))
        sources["boxes"] = "detector"
    elif source.annotation is not None:
        boxes, identities, links = annotated_boxes(source)
        scores = {name: [1.0] * len(found) for name, found in boxes.items()}
        sources["boxes"] = "annotation"
    else:
        raise PredictInputError(
            source.image, "this page has no annotation: give --detector to find its boxes"
        )
    if models.speaker_scorer is None and sources["boxes"] == "annotation" and links:
        sources["speakers"] = "annotation"
    else:
        from domainvlm.domains.comics.speakers import associate_speakers

        links = associate_speakers(
            boxes["text"],
            boxes["character"],
            image=image,
            scorer=models.speaker_scorer,
            threshold=models.association_threshold,
            panels=boxes["panel"],
        )
        sources["speakers"] = "grounding" if models.speaker_scorer is not None else "rule"
    panel_order = order_boxes(boxes["panel"], source.direction, models.order_scorer)
    text_order = text_reading_order(
        boxes["text"], boxes["panel"], panel_order, source.direction, models.order_scorer
    )
    sources["order"] = "grounding" if models.order_scorer is not None else "rule"
    texts, sources["text"] = text_contents(boxes["text"], source.annotation)
    return PagePrediction(
        source, width, height, boxes, scores, texts, [tuple(link) for link in links],
        panel_order, text_order, sources, identities,
    )  # fmt: skip


# -- characters across a book --------------------------------------------------------------------


def cluster_books(predictions: list[PagePrediction], models: Models) -> None:
    """Character cluster labels and names, across all pages of each book (chapter), so the same
    character keeps its label from page to page."""
    books: dict[str, list[PagePrediction]] = defaultdict(list)
    for prediction in predictions:
        books[prediction.source.book].append(prediction)
    for pages in books.values():
        if models.encoder is not None:
            _cluster_embeddings(pages, models)
        elif all(p.sources["boxes"] == "annotation" for p in pages):
            _cluster_identities(pages)
        else:
            for page in pages:
                page.sources["clusters"] = "none (give --checkpoint to cluster characters)"
                page.sources["names"] = "none (give --checkpoint and --bank)"


def _cluster_identities(pages: list[PagePrediction]) -> None:
    labels: dict[str, int] = {}
    for page in pages:
        page.cluster_labels = [labels.setdefault(who, len(labels)) for who in page.identities]
        page.character_names = [page.source.names.get(who) or who for who in page.identities]
        page.sources["clusters"] = page.sources["names"] = "annotation"


def _cluster_embeddings(pages: list[PagePrediction], models: Models) -> None:
    from domainvlm.domains.comics.characters import cluster_characters, name_clusters

    counts = [len(page.boxes["character"]) for page in pages]
    embedded = [page.embeddings for page in pages if page.embeddings is not None]
    labels: list[int] = []
    names: list[str] | None = None
    if embedded:
        embeddings = np.concatenate(embedded)
        labels = [int(v) for v in cluster_characters(embeddings, models.thresholds.cluster)]
        if models.bank is not None:
            bank, bank_names = models.bank
            names = name_clusters(
                embeddings, np.array(labels), bank, bank_names, models.thresholds.name
            )
    start = 0
    for page, count in zip(pages, counts):
        page.cluster_labels = labels[start : start + count]
        page.character_names = names[start : start + count] if names is not None else None
        page.sources["clusters"] = "checkpoint"
        page.sources["names"] = "bank" if models.bank is not None else "none (give --bank)"
        start += count


# -- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pages",
        type=Path,
        required=True,
        help="folder of page images (each subfolder of pages one more book), or a Manga109 / "
        "CoMix dataset root (its annotations fill in what no model is given for)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--detector", type=Path, help="detector checkpoint (boxes)")
    parser.add_argument(
        "--grounding", type=Path, help="grounding checkpoint (speaker and reading-order scorers)"
    )
    parser.add_argument(
        "--checkpoint", help="comics CLIP checkpoint: character crops embedded for clustering"
    )
    parser.add_argument(
        "--bank",
        type=Path,
        help="character bank (needs --checkpoint): a folder <name>/*.png of example crops, a "
        "JSON list of {name, image}, or an annotated dataset root (its books' named characters, "
        "the predicted pages left out)",
    )
    parser.add_argument(
        "--direction",
        choices=("ltr", "rtl"),
        help="reading direction (default: the book's own; ltr for plain folders)",
    )
    parser.add_argument("--split", help="of a dataset root, only this split's books (e.g. test)")
    parser.add_argument(
        "--association-threshold",
        type=float,
        default=0.4,
        help="least speaker score for a text-character link (Magi's 0.4)",
    )
    parser.add_argument(
        "--cluster-threshold",
        type=float,
        help="cosine distance (1 - cos) below which character groups merge into one cluster "
        f"(default: --thresholds' value, else {DEFAULT_CLUSTER_THRESHOLD})",
    )
    parser.add_argument(
        "--name-threshold",
        type=float,
        help="least cosine similarity of a cluster to a --bank name, else it is named 'other' "
        f"(default: --thresholds' value, else {DEFAULT_NAME_THRESHOLD})",
    )
    parser.add_argument(
        "--thresholds",
        type=Path,
        metavar="FILE",
        help="the cluster and naming thresholds `domainvlm eval characters --write-thresholds "
        "FILE` chose on the val books for --checkpoint (the flags above win)",
    )
    parser.add_argument("--device", default="cpu", help="where --checkpoint runs (cpu, cuda)")


def _checkpoint(path: Path, option: str, load: Any) -> Any:
    """``load(path)``, any failure reported as the named file not being that checkpoint."""
    if not path.is_file():
        raise PredictInputError(path, f"{option}: no such checkpoint file")
    try:
        return load(path)
    except DomainVLMError:
        raise
    except Exception as exc:  # torch.load and the state dicts fail in many types
        raise CheckpointError(f"{path}: not a usable {option} checkpoint: {exc}") from exc


def load_models(args: argparse.Namespace) -> Models:
    if args.bank is not None and args.checkpoint is None:
        raise PredictInputError(args.bank, "--bank names clusters of --checkpoint's embeddings")
    if args.thresholds is not None and args.checkpoint is None:
        raise PredictInputError(
            args.thresholds, "--thresholds cut the clusters of --checkpoint's embeddings"
        )
    thresholds, tuned_for = resolve_thresholds(
        args.cluster_threshold, args.name_threshold, args.thresholds
    )
    if tuned_for is not None and checkpoint_key(args.checkpoint) != tuned_for:
        print(
            f"comics predict: warning: {args.thresholds} holds thresholds chosen for {tuned_for}, "
            f"not for --checkpoint {args.checkpoint}: they may not suit its embeddings",
            file=sys.stderr,
        )
    models = Models(association_threshold=args.association_threshold, thresholds=thresholds)
    if args.detector is not None:
        from domainvlm.domains.comics.detection import PageDetector

        load = PageDetector.from_checkpoint
        models.detector = _checkpoint(args.detector, "--detector", lambda p: load(p, args.device))
    if args.grounding is not None:
        from domainvlm.domains.comics.grounding_system import load_grounding

        scorers = _checkpoint(args.grounding, "--grounding", load_grounding)
        models.speaker_scorer, models.order_scorer = scorers
    if args.checkpoint is not None:
        from domainvlm.core.encoder_loader import load_encoder_and_system

        models.encoder, system = load_encoder_and_system(args.checkpoint, args.device)
        if not type(system).__module__.startswith(__package__ + "."):
            raise CheckpointError(
                f"{args.checkpoint}: --checkpoint must be a comics checkpoint (its encoder reads "
                f"character crops of pages), not {type(system).__name__ if system else 'a spec'}"
            )
    if args.bank is not None:
        from domainvlm.core.retrieval import embed_images

        names, images = zip(*bank_entries(args.bank, args.pages, args.split))
        models.bank = (embed_images(models.encoder, list(images)).numpy(), list(names))
    return models


def bank_entries(bank: Path, pages: Path, split: str | None, per_name: int = 3) -> list:
    """(name, image or crop address) of a bank folder or JSON; or, for a dataset root, the first
    ``per_name`` crops of each named character in its books, minus those being predicted (an
    annotated chapter names the characters of a new one)."""
    from domainvlm.domains.comics.characters import book_crops, load_bank

    if not (bank.is_dir() and dataset_roots(bank).keys() & set(PAGE_FORMATS)):
        return load_bank(bank)
    predicted = (
        {s.image.resolve() for s in find_pages(pages, split=split)} if pages.is_dir() else set()
    )
    entries: list[tuple[str, str]] = []
    for book in load_books(bank):
        for address, _, name in book_crops(book):
            image = split_crop(address)[0].resolve()
            if image not in predicted and sum(n == name for n, _ in entries) < per_name:
                entries.append((name, address))
    if not entries:
        raise PredictInputError(bank, "no annotated character outside the predicted pages")
    return entries


def predict_folder(
    sources: list[PageSource], models: Models, progress: bool = True
) -> list[PagePrediction]:
    """Every page predicted, then its characters clustered across its book."""
    from tqdm import tqdm

    predictions = [
        predict_page(source, models)
        for source in tqdm(sources, desc="pages", unit="page", disable=not progress)
    ]
    if models.encoder is not None:
        embed_characters(predictions, models.encoder)
    cluster_books(predictions, models)
    return predictions


def embed_characters(predictions: list[PagePrediction], encoder: Any, batch_size: int = 64) -> None:
    """Every character crop of the set embedded in batches (pages hold few characters each)."""
    from domainvlm.core.retrieval import embed_images

    crops = [crop_address(p.source.image, box) for p in predictions for box in p.boxes["character"]]
    if not crops:
        return
    embedded = embed_images(encoder, crops, batch_size).numpy()
    start = 0
    for prediction in predictions:
        count = len(prediction.boxes["character"])
        if count:
            prediction.embeddings = embedded[start : start + count]
        start += count


def run(args: argparse.Namespace) -> int:
    import json

    from domainvlm.domains.comics.predict_outputs import write_outputs

    out = check_output_folder(args.out)
    sources = find_pages(args.pages, args.direction, args.split)
    models = load_models(args)
    if models.encoder is not None:
        line = models.thresholds.describe(naming=models.bank is not None)
        print(f"comics predict: {line}", file=sys.stderr)
    predictions = predict_folder(sources, models)
    summary = write_outputs(predictions, out, args.pages)
    if models.encoder is not None:
        summary["character_thresholds"] = asdict(models.thresholds)
    print(json.dumps(summary, ensure_ascii=False))
    return 0
