"""Chips/s of windowed chip reads from a tiled GeoTIFF vs reading the whole scene for every chip.

Writes a synthetic tiled, deflate-compressed 4-band uint16 scene (like a Sentinel-2 10 m stack)
to a temp dir, then times both strategies in one run and prints one JSON line.

    python benchmarks/rs_loader.py [--scene 2048] [--chip 64] [--whole-reads 6]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from domainvlm.domains.remote_sensing.rasters import chip_windows, read_raster
from rasterio.transform import from_origin


def write_scene(path: Path, side: int, block: int) -> None:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:side, 0:side]
    smooth = 2000 + 800 * np.sin(rows / 37.0) * np.cos(cols / 53.0)
    bands = [smooth * (1 + 0.2 * b) + rng.normal(0, 40, (side, side)) for b in range(4)]
    data = np.clip(np.stack(bands), 1, 65535).astype(np.uint16)
    with rasterio.open(
        path, "w", driver="GTiff", width=side, height=side, count=4, dtype="uint16",
        crs="EPSG:32631", transform=from_origin(440_000, 5_420_000, 10, 10), nodata=0,
        tiled=True, blockxsize=block, blockysize=block, compress="deflate", predictor=2,
    ) as dst:  # fmt: skip
        dst.write(data)


def chips_per_second(read_chip, windows) -> float:
    start = time.perf_counter()
    for window in windows:
        read_chip(window)
    return len(windows) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=int, default=2048, help="scene side in pixels")
    parser.add_argument("--chip", type=int, default=64, help="chip side in pixels")
    parser.add_argument("--block", type=int, default=256, help="GeoTIFF tile side")
    parser.add_argument("--whole-reads", type=int, default=6, help="chips timed the slow way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.tif"
        write_scene(path, args.scene, args.block)
        windows = chip_windows(args.scene, args.scene, args.chip)
        read_raster(path, window=windows[0])  # warm the file cache and GDAL driver
        windowed = chips_per_second(lambda w: read_raster(path, window=w), windows)

        def whole_scene_then_slice(window) -> np.ndarray:
            array = read_raster(path).array
            return array[window.toslices()]

        spread = windows[:: max(1, len(windows) // args.whole_reads)][: args.whole_reads]
        whole = chips_per_second(whole_scene_then_slice, spread)
        size_mb = path.stat().st_size / 2**20
    print(
        json.dumps(
            {
                "benchmark": "rs_loader",
                "scene_px": args.scene,
                "bands": 4,
                "dtype": "uint16",
                "tile_px": args.block,
                "compress": "deflate",
                "file_mb": round(size_mb, 1),
                "chip_px": args.chip,
                "chips_windowed": len(windows),
                "chips_whole_scene": len(spread),
                "windowed_chips_per_s": round(windowed, 1),
                "whole_scene_chips_per_s": round(whole, 2),
                "speedup": round(windowed / whole, 1),
                "machine": f"{platform.machine()} {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
