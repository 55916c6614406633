"""Panel crops per second through the comics loader, cut from page images (no pre-cropping).

Writes the comics sample to a temp dir (or reads --data), then times ``PanelSequenceDataset``
items (each: a window of panels, negatives and character crops, all cut from JPEG pages and
transformed) and plain panel crops (``panel_tensor`` on ``page.jpg#xywh=``), first with a cold page
cache and then warm. With ``--checkpoint`` it also measures character search on the held-out books:
for every body crop, the share of its 5 nearest other crops (image embeddings) showing the same
character, beside the share a random pick would get.

Full-page prediction (``domainvlm comics predict``) is timed on the held-out pages, outputs
included (JSON, COCO, transcripts, pictures): once from the annotations alone, once with a
detector and grounding scorers (``--detector``/``--grounding``, or untrained ones of the shipped
configs' shapes: the same computation, not the same boxes), plus ``--checkpoint``'s character
clustering when given. Wall and CPU seconds per run. Prints one JSON line.

    python benchmarks/comics.py [--data DIR] [--size demo] [--items 200] [--checkpoint C]
        [--detector C] [--grounding C]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from argparse import Namespace
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
from domainvlm.domains.comics.books import load_books  # noqa: E402
from domainvlm.domains.comics.datamodule import ComicsDataModule, panel_address, panel_tensor  # noqa: E402
from domainvlm.domains.comics.pages import _page_pixels  # noqa: E402
from domainvlm.domains.comics.sample import write_sample  # noqa: E402


def crops_per_second(root: Path, items: int) -> dict:
    data = ComicsDataModule(root=str(root))
    dataset = data.dataset("train")
    transform = data.transform(train=False)
    addresses = [
        panel_address(page, panel)
        for book in load_books(root, "train")
        for page, panel in book.panels()
    ]
    panel_tensor(addresses[0], transform)  # first-call setup (imports, resize kernels) untimed
    result = {}
    for cache in ("cold", "warm"):
        if cache == "cold":
            _page_pixels.cache_clear()
        start = time.perf_counter()
        for address in addresses:
            panel_tensor(address, transform)
        result[f"panel_crops_per_s_{cache}"] = round(
            len(addresses) / (time.perf_counter() - start), 1
        )
    _page_pixels.cache_clear()
    count = min(items, len(dataset))
    start = time.perf_counter()
    crops = 0
    for index in range(count):
        item = dataset[index]
        crops += len(item["panels"]) + len(item["negatives"]) + len(item["characters"])
    elapsed = time.perf_counter() - start
    result |= {
        "panels": len(addresses),
        "items": count,
        "items_per_s": round(count / elapsed, 1),
        "crops_per_s_in_items": round(crops / elapsed, 1),
    }
    return result


def character_precision(root: Path, checkpoint: str, k: int = 5) -> dict:
    from domainvlm.core.encoder_loader import load_encoder
    from domainvlm.core.retrieval import embed_images
    from domainvlm.domains.comics.pages import crop_address

    crops, labels = [], []
    for book in load_books(root, "test"):
        for page, panel in book.panels():
            for person in panel.characters:
                if person.part == "body":
                    crops.append(crop_address(page.image, person.box))
                    labels.append(person.character)
    embedded = embed_images(load_encoder(checkpoint), crops)
    similarity = embedded @ embedded.T
    similarity.fill_diagonal_(float("-inf"))
    nearest = similarity.topk(k, dim=1).indices.tolist()
    same = [sum(labels[j] == labels[i] for j in row) / k for i, row in enumerate(nearest)]
    chance = [(labels.count(label) - 1) / (len(labels) - 1) for label in labels]
    return {
        "character_crops": len(crops),
        f"character_precision_at_{k}": round(sum(same) / len(same), 4),
        "character_precision_random": round(sum(chance) / len(chance), 4),
    }


def untrained_checkpoints(folder: Path) -> tuple[Path, Path]:
    """A detector and a grounding checkpoint of the shipped configs' shapes, untrained."""
    from domainvlm.domains.comics.detection_system import PageDetectionSystem
    from domainvlm.domains.comics.grounding_system import GroundingSystem

    paths = []
    for name, system in (("detector", PageDetectionSystem()), ("grounding", GroundingSystem())):
        checkpoint = {"state_dict": system.state_dict()}
        system.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, folder / f"{name}.ckpt")
        paths.append(folder / f"{name}.ckpt")
    return paths[0], paths[1]


def prediction_pages_per_second(root: Path, args: argparse.Namespace, folder: Path) -> dict:
    """Pages per second of ``comics predict`` on the held-out pages, outputs written."""
    from domainvlm.domains.comics.predict import load_models, predict_folder
    from domainvlm.domains.comics.predict_inputs import find_pages
    from domainvlm.domains.comics.predict_outputs import write_outputs

    sources = find_pages(root, split="test")
    untrained = untrained_checkpoints(folder)
    models_run = {
        "detector": args.detector or untrained[0],
        "grounding": args.grounding or untrained[1],
        "checkpoint": args.checkpoint,
    }
    result: dict = {
        "predict_pages": len(sources),
        "predict_untrained": [k for k in ("detector", "grounding") if getattr(args, k) is None],
    }
    for label, chosen in (("annotations", {}), ("models", models_run)):
        options = {"detector": None, "grounding": None, "checkpoint": None, "bank": None}
        options |= {"association_threshold": 0.4, "cluster_threshold": None, "name_threshold": None}
        options |= {"thresholds": None}
        models = load_models(Namespace(**(options | chosen), device="cpu"))
        predict_folder(sources[:1], models, progress=False)  # first-call setup untimed
        wall, cpu = time.perf_counter(), time.process_time()
        predictions = predict_folder(sources, models, progress=False)
        write_outputs(predictions, folder / label, root, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        result[f"predict_{label}"] = {
            "pages_per_s": round(len(sources) / wall, 2),
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "sources": predictions[0].sources,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset root (default: write the sample)")
    parser.add_argument("--size", default="demo", choices=("small", "demo"))
    parser.add_argument("--items", type=int, default=200, help="training items timed")
    parser.add_argument("--checkpoint", help="also measure character search with this checkpoint")
    parser.add_argument(
        "--detector", type=Path, help="detector checkpoint for full-page prediction"
    )
    parser.add_argument("--grounding", type=Path, help="grounding checkpoint for prediction")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or write_sample(Path(tmp) / "comics", size=args.size)
        result = crops_per_second(root, args.items)
        if args.checkpoint:
            result |= character_precision(root, args.checkpoint)
        result |= prediction_pages_per_second(root, args, Path(tmp))
    print(
        json.dumps(
            {
                "benchmark": "comics_loader",
                **result,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "load_average_1m": round(os.getloadavg()[0], 2),
                "torch_threads": torch.get_num_threads(),
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
