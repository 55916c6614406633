"""Panel crops per second through the comics loader, cut from page images (no pre-cropping).

Writes the comics sample to a temp dir (or reads --data), then times ``PanelSequenceDataset``
items (each: a window of panels, negatives and character crops, all cut from JPEG pages and
transformed) and plain panel crops (``panel_tensor`` on ``page.jpg#xywh=``), first with a cold page
cache and then warm. Prints one JSON line.

    python benchmarks/comics.py [--data DIR] [--size demo] [--items 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset root (default: write the sample)")
    parser.add_argument("--size", default="demo", choices=("small", "demo"))
    parser.add_argument("--items", type=int, default=200, help="training items timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or write_sample(Path(tmp) / "comics", size=args.size)
        result = crops_per_second(root, args.items)
    print(
        json.dumps(
            {
                "benchmark": "comics_loader",
                **result,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
